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


# -- Anthropic: the SDK's own span is off, ours is the one span with usage ------------------
CLAUDE = "claude-sonnet-4-5-20250929"
# 50 uncached in, 2,000 cache read, 300 written for 5 minutes; 700 out, 600 of it thinking.
CLAUDE_USAGE = {
    "input_tokens": 50,
    "cache_creation_input_tokens": 300,
    "cache_read_input_tokens": 2000,
    "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 700,
    "output_tokens_details": {"thinking_tokens": 600},
    "service_tier": "standard",
}
# claude-sonnet-4-5: $3 in, $0.30 cache read, $3.75 5-minute write, $15 out (per million)
CLAUDE_COST = (
    Decimal(50) * 3 + Decimal(2000) * Decimal("0.3") + Decimal(300) * Decimal("3.75") + 700 * 15
) / 10**6
REQUEST_ID = {"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def _one_claude_span(telemetry: Telemetry) -> None:
    [span] = telemetry.spans()  # no SDK span beside ours
    a = attrs(span)
    assert a["gen_ai.usage.input_tokens"] == 2350 and a["gen_ai.usage.output_tokens"] == 700
    assert a["gen_ai.usage.reasoning.output_tokens"] == 600
    assert a["anthropic.request.id"] == REQUEST_ID["request-id"]
    assert a["tcc.cost.usd"] == pytest.approx(float(CLAUDE_COST))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_anthropic_sync_one_span_one_charge(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    from .conftest import anthropic_message

    client = instrument(anthropic_client)
    api.queue(json_response(anthropic_message(CLAUDE_USAGE, model=CLAUDE), headers=REQUEST_ID))
    with budget(calls=1, usd=1) as b:
        client.messages.create(model=CLAUDE, max_tokens=1024, messages=QUESTION)
    assert b.spent.calls == 1 and b.spent.usd == CLAUDE_COST == Decimal("0.012375")
    _one_claude_span(telemetry)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_anthropic_async_one_span_one_charge(
    async_anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    from .conftest import anthropic_message

    client = instrument(async_anthropic_client)
    api.queue(json_response(anthropic_message(CLAUDE_USAGE, model=CLAUDE), headers=REQUEST_ID))
    async with budget(calls=1, usd=1) as b:
        await client.messages.create(model=CLAUDE, max_tokens=1024, messages=QUESTION)
    assert b.spent.calls == 1 and b.spent.usd == CLAUDE_COST
    _one_claude_span(telemetry)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_anthropic_stream_one_span_one_charge(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    import httpx2

    from .conftest import anthropic_events

    start = {**CLAUDE_USAGE, "output_tokens": 1}
    events = anthropic_events(start, CLAUDE_USAGE, model=CLAUDE)
    stream = sse_response(events)
    api.queue(httpx2.Response(200, headers={**stream.headers, **REQUEST_ID}, content=stream.stream))
    client = instrument(anthropic_client)
    request = {"model": CLAUDE, "max_tokens": 1024, "messages": QUESTION}
    with budget(calls=1, usd=1) as b, client.messages.stream(**request) as s:
        assert s.get_final_text() == "4"
    assert b.spent.calls == 1 and b.spent.usd == CLAUDE_COST and b.reserved.is_zero()
    _one_claude_span(telemetry)
