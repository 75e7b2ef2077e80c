"""Stacked layers, one provider call: exactly one charge and one span with usage.

The rule under test (docs/core.md, "Stacked layers"): the innermost lifecycle call, the
one that sees the provider's response, charges the budgets and carries ``gen_ai.usage.*``;
an enclosing call (``@llm_call``, the LangChain handler) hands it its reservation and
stays a parent span, ``tcc.budget.outcome="delegated"``, without usage.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from tcc_plugin import BudgetExceeded, RetryPolicy, best_of_n, budget, llm_call
from tcc_plugin.instrument import instrument

from ..conftest import Telemetry
from .conftest import (
    MockAPI,
    chat_chunks,
    chat_completion,
    chat_usage,
    json_response,
    openai_error,
    sse_response,
)

pytest.importorskip("openai")

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
# o3: $2 per million input tokens, $8 per million output tokens (reasoning is output).
O3_COST = (Decimal(120) * 2 + Decimal(300) * 8) / 10**6  # 120 in, 300 out: $0.00264


def usage_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [s for s in telemetry.spans() if "gen_ai.usage.input_tokens" in (s.attributes or {})]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def answer() -> Any:
    return json_response(chat_completion(chat_usage(120, 300, reasoning=200)))


def test_llm_call_over_an_instrumented_client_charges_once(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)

    @llm_call(model="o3", provider="openai")
    def ask(question: str, max_completion_tokens: int = 4000) -> Any:
        return client.chat.completions.create(
            model="o3",
            messages=[{"role": "user", "content": question}],
            max_completion_tokens=max_completion_tokens,
        )

    api.queue(answer())
    with budget(calls=1, usd=1) as b:
        assert ask("2+2?").choices[0].message.content == "4"
        with pytest.raises(BudgetExceeded) as refused:
            ask("again?")
    assert refused.value.limit == "calls"
    assert api.count == 1  # the refused call sent nothing
    assert b.spent.calls == 1 and b.spent.usd == O3_COST == Decimal("0.00264")
    assert b.spent.total_tokens == 420 and b.spent.reasoning_tokens == 200
    assert b.reserved.is_zero() and b.in_flight == 0
    [provider] = usage_spans(telemetry)
    assert attrs(provider)["gen_ai.usage.output_tokens"] == 300
    assert attrs(provider)["tcc.cost.usd"] == pytest.approx(0.00264)
    outer = [s for s in telemetry.spans("chat o3") if s is not provider and s.status.is_ok]
    [parent] = [s for s in outer if attrs(s).get("tcc.budget.outcome") == "delegated"]
    assert attrs(parent)["tcc.call.nested_calls"] == 1
    assert "tcc.cost.usd" not in attrs(parent)
    assert provider.parent is not None and provider.parent.span_id == parent.context.span_id


async def test_async_llm_call_over_an_instrumented_async_client_charges_once(
    async_openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(async_openai_client)

    @llm_call(model="o3", provider="openai")
    async def ask(max_completion_tokens: int = 4000) -> Any:
        return await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=max_completion_tokens
        )

    api.queue(answer())
    async with budget(calls=1) as b:
        await ask()
    assert b.spent.calls == 1 and b.spent.output_tokens == 300 and b.reserved.is_zero()
    assert len(usage_spans(telemetry)) == 1


def test_a_decorated_generator_over_an_instrumented_stream_charges_once(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)

    @llm_call(model="o3", provider="openai")
    def chunks(max_completion_tokens: int = 4000) -> Any:
        stream = client.chat.completions.create(
            model="o3",
            messages=QUESTION,
            max_completion_tokens=max_completion_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        yield from stream

    api.queue(sse_response(chat_chunks(["2", "+2=4"], chat_usage(120, 300, reasoning=200))))
    with budget(calls=1, usd=1) as b:
        text = "".join(c.choices[0].delta.content or "" for c in chunks() if c.choices)
    assert text == "2+2=4"
    assert b.spent.calls == 1 and b.spent.usd == O3_COST and b.reserved.is_zero()
    [provider] = usage_spans(telemetry)
    assert attrs(provider)["gen_ai.usage.input_tokens"] == 120


def test_two_provider_calls_in_one_function_are_two_calls(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)

    @llm_call(model="o3", provider="openai", max_output_tokens=1000)
    def plan_then_solve() -> Any:
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=1000)
        return client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=1000
        )

    api.queue(answer(), answer())
    with budget(calls=2) as b:
        plan_then_solve()
    assert b.spent.calls == 2 and b.spent.output_tokens == 600 and b.reserved.is_zero()
    assert len(usage_spans(telemetry)) == 2
    with budget(calls=1) as tight, pytest.raises(BudgetExceeded):
        api.queue(answer())
        plan_then_solve()
    assert tight.spent.calls == 1 and tight.reserved.is_zero()  # the second was refused


def test_an_inner_retry_is_the_same_call(
    openai_client: Any, api: MockAPI, telemetry: Telemetry, no_sleep: Any
) -> None:
    client = instrument(openai_client, retry=RetryPolicy(max_attempts=3, sleep=no_sleep))

    @llm_call(model="o3", provider="openai")
    def ask(max_completion_tokens: int = 4000) -> Any:
        return client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=max_completion_tokens
        )

    api.queue(
        json_response(openai_error(503, "busy", "server_error"), status=503),
        answer(),
    )
    with budget(calls=1) as b:
        ask()
    assert api.count == 2 and b.spent.calls == 1 and b.spent.output_tokens == 300
    assert len(usage_spans(telemetry)) == 1


def test_best_of_n_over_stacked_calls_counts_provider_calls(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)

    @llm_call(model="o3", provider="openai")
    def ask(max_completion_tokens: int = 4000) -> str:
        response = client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=max_completion_tokens
        )
        return str(response.choices[0].message.content)

    api.queue(*(answer() for _ in range(4)))
    with budget(calls=4, usd=1) as b:
        result = best_of_n(ask, n=4, verifier=lambda text: 1.0, concurrency=2)
    assert result.value == "4"
    assert b.spent.calls == 4 and b.spent.usd == 4 * O3_COST and b.reserved.is_zero()
    assert len(usage_spans(telemetry)) == 4
