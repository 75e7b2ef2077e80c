"""@llm_call through the whole lifecycle: spans, metrics, budgets, streams, errors."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import tcc_plugin
from tcc_plugin import BudgetExceeded, PriceUnknown, Usage, budget, llm_call
from tcc_plugin.pricing import UnknownModelWarning

from ..conftest import Telemetry


def chat_body(prompt: int, completion: int, reasoning: int = 0, cached: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-7",
        "object": "chat.completion",
        "model": "o3-2025-04-16",
        "choices": [{"index": 0, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


# o3: $2 input, $0.50 cached, $8 output per million tokens.
def o3_cost(prompt: int, completion: int, cached: int = 0) -> Decimal:
    return (
        (prompt - cached) * Decimal(2) + cached * Decimal("0.5") + completion * Decimal(8)
    ) / 10**6


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_sync_call_span_has_usage_cost_and_budget(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai")
    def ask(question: str, max_tokens: int = 2000) -> dict[str, Any]:
        return chat_body(1000, 600, reasoning=500, cached=400)

    with budget(usd="0.05", name="agent") as b:
        assert ask("2+2?")["id"] == "chatcmpl-7"

    cost = o3_cost(1000, 600, cached=400)
    assert cost == Decimal("0.0062")
    assert b.spent.usd == cost
    assert b.spent.total_tokens == 1600 and b.spent.reasoning_tokens == 500 and b.spent.calls == 1
    span = telemetry.span("chat o3")
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "o3"
    assert a["gen_ai.request.max_tokens"] == 2000
    assert a["gen_ai.response.model"] == "o3-2025-04-16"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == 1000
    assert a["gen_ai.usage.output_tokens"] == 600
    assert a["gen_ai.usage.reasoning.output_tokens"] == 500
    assert a["gen_ai.usage.cache_read.input_tokens"] == 400
    assert a["tcc.cost.usd"] == pytest.approx(0.0062)
    assert a["tcc.budget.outcome"] == "ok"
    assert a["tcc.budget.name"] == "agent"
    assert a["tcc.budget.reserved.output_tokens"] == 2000
    assert a["tcc.budget.spent.usd"] == pytest.approx(0.0062)
    assert a["tcc.budget.remaining.usd"] == pytest.approx(0.05 - 0.0062)
    assert span.status.status_code is StatusCode.UNSET


def test_metrics_use_semconv_names_and_buckets(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai")
    def ask(max_tokens: int = 10) -> dict[str, Any]:
        return chat_body(123, 7, reasoning=5)

    def sums() -> dict[tuple[Any, ...], float]:
        # Metrics are cumulative over the session: compare each attribute set's sum
        # before and after this one call.
        return {
            tuple(sorted(p.attributes.items())): p.sum
            for p in telemetry.metric_points("gen_ai.client.token.usage")
            if p.attributes.get("gen_ai.request.model") == "o3"
        }

    before = sums()
    ask()
    grown = {key: total - before.get(key, 0) for key, total in sums().items()}
    by_type = {dict(key)["gen_ai.token.type"]: delta for key, delta in grown.items() if delta}
    assert by_type == {"input": 123, "output": 7}
    points = telemetry.metric_points("gen_ai.client.token.usage")
    assert list(points[0].explicit_bounds)[:4] == [1, 4, 16, 64]
    durations = telemetry.metric_points("gen_ai.client.operation.duration")
    assert durations and list(durations[0].explicit_bounds)[:3] == [0.01, 0.02, 0.04]
    assert telemetry.metric_points("tcc.client.cost")


async def test_async_call(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai")
    async def ask(max_tokens: int = 100) -> dict[str, Any]:
        await asyncio.sleep(0)
        return chat_body(10, 20)

    async with budget(output_tokens=1000) as b:
        await asyncio.gather(ask(), ask(), ask())
    assert b.spent.output_tokens == 60 and b.spent.calls == 3
    assert b.reserved.is_zero()
    assert len(telemetry.spans("chat o3")) == 3


def test_clamp_rewrites_the_max_tokens_argument(telemetry: Telemetry) -> None:
    seen: list[int] = []

    @llm_call(model="o3", provider="openai")
    def ask(max_completion_tokens: int = 4000) -> dict[str, Any]:
        seen.append(max_completion_tokens)
        return chat_body(100, max_completion_tokens)

    with budget(total_tokens=1000, policy="clamp"):
        ask()  # input estimate unknown: 1000 - 0 = 1000 fit
        with pytest.raises(BudgetExceeded) as refused:
            ask()
    assert seen == [1000]
    assert refused.value.limit == "total_tokens"
    spans = telemetry.spans("chat o3")
    assert attrs(spans[0])["tcc.budget.outcome"] == "clamped"
    assert attrs(spans[0])["tcc.budget.clamped.max_tokens"] == 1000
    assert attrs(spans[1])["tcc.budget.outcome"] == "refused"
    assert spans[1].status.status_code is StatusCode.ERROR


def test_refused_call_never_runs_and_says_why() -> None:
    ran = []

    @llm_call(model="o3", provider="openai", max_output_tokens=500)
    def ask() -> dict[str, Any]:
        ran.append(1)
        return chat_body(1, 1)

    with budget(output_tokens=499, name="tight"), pytest.raises(BudgetExceeded) as exc:
        ask()
    assert ran == []
    err = exc.value
    assert (err.limit, err.limit_value, err.spent, err.needed, err.budget_name) == (
        "output_tokens",
        499,
        0,
        500,
        "tight",
    )
    assert "output_tokens limit 499" in str(err)


def test_exception_settles_and_marks_span(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai", max_output_tokens=50)
    def ask() -> dict[str, Any]:
        raise ConnectionError("reset by peer")

    with budget(calls=5, output_tokens=100) as b, pytest.raises(ConnectionError):
        ask()
    assert b.reserved.is_zero() and b.in_flight == 0
    assert b.spent.calls == 1 and b.spent.output_tokens == 0
    span = telemetry.span("chat o3")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "ConnectionError"


def test_response_without_usage_is_charged_its_reservation(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai", max_output_tokens=300, input_tokens=50)
    def ask() -> str:
        return "an answer with no usage attached"

    with budget(total_tokens=10_000) as b:
        ask()
    assert b.spent.total_tokens == 350 and b.spent.output_tokens == 300
    assert attrs(telemetry.span("chat o3"))["tcc.usage.missing"] is True


def test_unknown_model_without_usd_cap_records_no_cost(telemetry: Telemetry) -> None:
    @llm_call(model="unreleased-model-9", provider="acme")
    def ask() -> dict[str, Any]:
        return {
            "model": "unreleased-model-9",
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        }

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ask()
        ask()
    a = attrs(telemetry.spans()[0])
    assert "tcc.cost.usd" not in a
    assert a["gen_ai.usage.output_tokens"] == 4
    assert sum(issubclass(w.category, UnknownModelWarning) for w in caught) == 1


def test_unknown_model_under_usd_cap_is_refused_clearly() -> None:
    @llm_call(model="unreleased-model-10", max_output_tokens=10)
    def ask() -> dict[str, Any]:
        raise AssertionError("must not run")

    with budget(usd=1), pytest.raises(PriceUnknown, match="set_price"):
        ask()


def test_set_price_prices_a_custom_model() -> None:
    tcc_plugin.set_price("house-model-1", input=1, output=2, provider="house")

    @llm_call(model="house-model-1", provider="house", max_output_tokens=10)
    def ask() -> Usage:
        return Usage(input=1_000_000, output=10)

    with budget(usd=5) as b:
        ask()
    assert b.spent.usd == Decimal("1.00002")


def test_user_extractor() -> None:
    @llm_call(model="o3", provider="openai", usage=lambda r: {"input": r[0], "output": r[1]})
    def ask() -> tuple[int, int]:
        return (7, 9)

    with budget() as b:
        ask()
    assert b.spent.total_tokens == 16


def test_generator_stream(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    def stream() -> Iterator[dict[str, Any]]:
        yield {"id": "s", "model": "o3", "choices": [{"index": 0, "delta": {"content": "a"}}]}
        yield {
            "id": "s",
            "model": "o3",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        yield {"id": "s", "model": "o3", "choices": [], "usage": chat_body(40, 30, 20)["usage"]}

    with budget(output_tokens=1000) as b:
        chunks = list(stream())
    assert len(chunks) == 3
    assert b.spent.output_tokens == 30 and b.reserved.is_zero()
    a = attrs(telemetry.span("chat o3"))
    assert a["gen_ai.usage.reasoning.output_tokens"] == 20
    # declared on the decorator, not set by the request: what the reservation assumed
    assert a["tcc.request.assumed_max_tokens"] == 100 and "gen_ai.request.max_tokens" not in a
    assert "gen_ai.response.time_to_first_chunk" in a


def test_generator_abandoned_half_read_is_charged_its_reservation(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai", max_output_tokens=100, input_tokens=5)
    def stream() -> Iterator[str]:
        yield "a"
        yield "b"
        raise AssertionError("never read this far")

    with budget(output_tokens=1000) as b:
        gen = stream()
        assert next(gen) == "a"
        gen.close()
    assert b.reserved.is_zero() and b.in_flight == 0
    assert b.spent.output_tokens == 100
    a = attrs(telemetry.span("chat o3"))
    assert a["tcc.stream.abandoned"] is True and a["tcc.usage.missing"] is True


async def test_async_generator_stream_error_mid_way(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    async def stream() -> AsyncIterator[dict[str, Any]]:
        yield {"id": "s", "choices": [{"index": 0, "delta": {"content": "a"}}]}
        raise TimeoutError("stream cut")

    async with budget(calls=3) as b:
        with pytest.raises(TimeoutError):
            async for _ in stream():
                pass
    assert b.spent.calls == 1 and b.reserved.is_zero()
    span = telemetry.span("chat o3")
    assert span.status.status_code is StatusCode.ERROR


async def test_cancelled_task_releases_its_reservation() -> None:
    started = asyncio.Event()

    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    async def ask() -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    async with budget(output_tokens=150) as b:
        task = asyncio.create_task(ask())
        await started.wait()
        assert b.reserved.output_tokens == 100
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # released, and charged an honest estimate (its reservation), never zero
    assert b.reserved.is_zero() and b.spent.output_tokens == 100 and b.spent.calls == 1


def test_content_is_recorded_only_on_opt_in(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tcc_plugin.adapter import Adapter, CallInfo, Clamp, ResponseInfo
    from tcc_plugin.lifecycle import run
    from tcc_plugin.readers import StreamAccumulator

    class EchoAdapter(Adapter[str, Any]):
        def describe(self, request: str) -> CallInfo:
            return CallInfo(
                model="o3", provider="openai", input_messages=[{"role": "user", "content": request}]
            )

        def clamp(self, request: str, clamp: Clamp) -> str:
            return request

        def read_response(self, response: str) -> ResponseInfo:
            return ResponseInfo(usage=Usage(input=1, output=1), output_messages=[response])

        def stream_reader(self, request: str) -> StreamAccumulator:
            return StreamAccumulator()

    run(EchoAdapter(), "secret prompt", lambda r: "secret answer")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    run(EchoAdapter(), "shared prompt", lambda r: "shared answer")
    first, second = telemetry.spans("chat o3")
    assert "gen_ai.input.messages" not in attrs(first)
    assert "secret" not in str(attrs(first))
    assert "shared prompt" in attrs(second)["gen_ai.input.messages"]
    assert "shared answer" in attrs(second)["gen_ai.output.messages"]


def test_telemetry_errors_never_reach_the_caller(telemetry: Telemetry) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import SpanProcessor

    class Exploding(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            raise RuntimeError("exporter bug")

    provider: Any = trace.get_tracer_provider()
    multi = provider._active_span_processor
    before = multi._span_processors
    multi._span_processors = (*before, Exploding())
    try:

        @llm_call(model="o3", provider="openai")
        def ask() -> dict[str, Any]:
            return chat_body(1, 1)

        with budget(calls=2) as b:
            assert ask()["id"] == "chatcmpl-7"
        assert b.spent.calls == 1
    finally:
        multi._span_processors = before


def test_decorator_without_arguments_and_function_model_arg(telemetry: Telemetry) -> None:
    @llm_call
    def ask(model: str, max_tokens: int) -> dict[str, Any]:
        return chat_body(1, 1)

    ask("o3", 5)
    a = attrs(telemetry.span("chat o3"))
    assert a["gen_ai.request.model"] == "o3" and a["gen_ai.request.max_tokens"] == 5


def test_decorator_budget_argument_nests_in_the_caller() -> None:
    inner = tcc_plugin.Budget(calls=1, name="per-step")

    @llm_call(model="o3", provider="openai", budget=inner)
    def ask() -> dict[str, Any]:
        return chat_body(1, 1)

    with budget(calls=10) as outer:
        ask()
        with pytest.raises(BudgetExceeded) as exc:
            ask()
    assert exc.value.budget_name == "per-step"
    assert outer.spent.calls == 1
