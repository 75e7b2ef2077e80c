"""A call cancelled in flight is charged an honest estimate, never zero.

Real OpenAI and Anthropic async clients whose HTTP is an ``httpx2.MockTransport``; the
samples to cancel are answered by a handler that never answers (it awaits an event no
one sets; cancelling the task cancels it). The charges are read back from the budget,
the group's result and the spans.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from tcc_plugin import budget
from tcc_plugin.sampling import (
    aself_consistency,
    current_sample,
    launch_all,
    stop_after_completed,
)

from ..conftest import Telemetry
from .conftest import anthropic_message, anthropic_usage, chat_chunks, chat_completion, chat_usage

httpx2 = pytest.importorskip("httpx2")
openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("tcc_plugin.integrations.openai")
pytest.importorskip("tcc_plugin.integrations.anthropic")
from tcc_plugin.instrument import instrument  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 6 x 7? End with 'Final Answer: N'."}]
MAX_TOKENS = 400
O3_IN, O3_OUT = Decimal(2), Decimal(8)  # USD per million tokens (reasoning billed as output)
GUARD = 30.0


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def index() -> int:
    ctx = current_sample()
    assert ctx is not None
    return ctx.index


def o3_cost(inp: int, out: int) -> float:
    return float((inp * O3_IN + out * O3_OUT) / 10**6)


async def test_cancelled_openai_samples_are_charged_their_reservation(
    telemetry: Telemetry,
) -> None:
    never = asyncio.Event()
    hung = asyncio.Event()

    async def handler(request: Any) -> Any:
        body = json.loads(request.content)
        if body["seed"] >= 2:
            if body["seed"] == 3:
                hung.set()
            await never.wait()  # never answers: the group cancels it
        await asyncio.wait_for(hung.wait(), GUARD)  # both hung requests are out
        return httpx2.Response(200, json=chat_completion(chat_usage(25, 60, reasoning=40)))

    client = instrument(
        openai.AsyncOpenAI(
            api_key="sk-test",
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
        )
    )

    async def sample() -> Any:
        return await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=MAX_TOKENS, seed=index()
        )

    async with budget(usd="1.00", name="question") as b:
        result = await aself_consistency(
            sample, n=4, stop=stop_after_completed(2), launch=launch_all()
        )
        assert b.reserved.is_zero() and b.in_flight == 0
    assert (result.completed, result.cancelled) == (2, 2)

    calls = [s for s in telemetry.spans() if attrs(s).get("gen_ai.request.model") == "o3"]
    estimated = [attrs(s) for s in calls if attrs(s).get("tcc.usage.estimated")]
    answered = [attrs(s) for s in calls if "tcc.usage.estimated" not in attrs(s)]
    assert len(estimated) == 2 and len(answered) == 2
    for a in estimated:  # not streamed: the reservation, i.e. the worst case
        assert a["error.type"] == "CancelledError"
        assert a["gen_ai.usage.output_tokens"] == MAX_TOKENS
        assert a["gen_ai.usage.reasoning.output_tokens"] == MAX_TOKENS
        assert a["gen_ai.usage.input_tokens"] > 0  # the request's input bound
        assert a["tcc.cost.usd"] == pytest.approx(
            o3_cost(a["gen_ai.usage.input_tokens"], MAX_TOKENS)
        )
    estimate_in = sum(a["gen_ai.usage.input_tokens"] for a in estimated)
    # the budget holds exactly what the spans say: two answers, two estimates
    assert b.spent.output_tokens == 2 * 60 + 2 * MAX_TOKENS
    assert b.spent.total_tokens == 2 * 85 + estimate_in + 2 * MAX_TOKENS
    assert b.spent.calls == 4 and result.spent == b.spent
    assert result.cancelled_spent.output_tokens == 2 * MAX_TOKENS
    assert result.cancelled_spent.calls == 2
    group = attrs(telemetry.span("self_consistency"))
    assert group["tcc.sampling.cancelled"] == 2
    assert group["tcc.sampling.cancelled.usage.output_tokens"] == 2 * MAX_TOKENS
    assert group["tcc.sampling.cancelled.usage.total_tokens"] == estimate_in + 2 * MAX_TOKENS
    assert group["tcc.sampling.cancelled.cost.usd"] == pytest.approx(
        float(result.cancelled_spent.usd)
    )
    assert float(result.cancelled_spent.usd) == pytest.approx(
        sum(a["tcc.cost.usd"] for a in estimated)
    )


async def test_a_cancelled_stream_is_charged_the_chunks_it_streamed(
    telemetry: Telemetry,
) -> None:
    never = asyncio.Event()
    streamed = asyncio.Event()
    frames = [
        f"data: {json.dumps(data)}\n\n".encode()
        for _, data in chat_chunks(["6 x 7", " is"], None)[:3]  # role chunk + two texts
    ]

    async def hanging_stream() -> Any:
        for frame in frames:
            yield frame
        streamed.set()
        await never.wait()  # the rest never comes

    async def handler(request: Any) -> Any:
        body = json.loads(request.content)
        if body["seed"] == 1:
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, content=hanging_stream()
            )
        await asyncio.wait_for(streamed.wait(), GUARD)
        return httpx2.Response(200, json=chat_completion(chat_usage(25, 60)))

    client = instrument(
        openai.AsyncOpenAI(
            api_key="sk-test",
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
        )
    )

    async def sample() -> Any:
        if index() == 0:
            return await client.chat.completions.create(
                model="o3", messages=QUESTION, max_completion_tokens=MAX_TOKENS, seed=0
            )
        stream = await client.chat.completions.create(
            model="o3",
            messages=QUESTION,
            max_completion_tokens=MAX_TOKENS,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text

    async with budget(output_tokens=10_000) as b:
        result = await aself_consistency(
            sample, n=2, stop=stop_after_completed(1), launch=launch_all()
        )
    assert (result.completed, result.cancelled) == (1, 1)
    assert b.reserved.is_zero() and b.in_flight == 0
    stream_span = next(s for s in telemetry.spans() if attrs(s).get("gen_ai.request.stream"))
    a = attrs(stream_span)
    assert a["tcc.usage.estimated"] is True
    assert a["gen_ai.usage.output_tokens"] == 3  # one token per chunk received
    assert b.spent.output_tokens == 60 + 3
    assert result.cancelled_spent.output_tokens == 3


async def test_a_cancelled_anthropic_call_outside_sampling_is_not_free(
    telemetry: Telemetry,
) -> None:
    never = asyncio.Event()
    sent = asyncio.Event()

    async def handler(request: Any) -> Any:
        sent.set()
        await never.wait()
        return httpx2.Response(200, json=anthropic_message(anthropic_usage(10, 5)))

    client = instrument(
        anthropic.AsyncAnthropic(
            api_key="sk-ant-test",
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
        )
    )
    async with budget(output_tokens=5000, name="single") as b:
        task = asyncio.ensure_future(
            client.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=1024,
                messages=[{"role": "user", "content": "2 + 2?"}],
            )
        )
        await asyncio.wait_for(sent.wait(), GUARD)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b.reserved.is_zero() and b.in_flight == 0
    assert b.spent.output_tokens == 1024 and b.spent.calls == 1
    a = attrs(telemetry.span("chat claude-sonnet-4-5"))
    assert a["tcc.usage.estimated"] is True and a["error.type"] == "CancelledError"
    assert a["gen_ai.usage.output_tokens"] == 1024
    assert a["tcc.budget.spent.output_tokens"] == 1024
