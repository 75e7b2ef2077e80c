"""Sampling groups as asyncio tasks: cancellation releases reservations."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tcc_plugin import budget, llm_call
from tcc_plugin.budget import Demand
from tcc_plugin.sampling import (
    abest_of_n,
    aself_consistency,
    current_sample,
    launch_all,
    llm_judge,
    stop_after_completed,
    stop_confident,
    stop_on_score,
)

from ...conftest import Telemetry
from .conftest import chat_body, index

GUARD = 30.0


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_async_group_span_and_concurrency(telemetry: Telemetry) -> None:
    everyone_in = asyncio.Event()
    running = 0

    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    async def ask() -> dict[str, Any]:
        nonlocal running
        running += 1
        if running == 6:
            everyone_in.set()
        await asyncio.wait_for(everyone_in.wait(), GUARD)  # all six run at once
        return chat_body(f"answer {index() % 2 or 8}")

    async with budget(output_tokens=10_000) as b:
        result = await aself_consistency(ask, n=6, concurrency=6, stop=None)
    assert result.answer == "8" and result.counts == {"8": 3, "1": 3}
    assert result.spent == b.spent and b.spent.calls == 6
    group = telemetry.span("self_consistency")
    assert group.context is not None
    calls = telemetry.spans("chat o3")
    assert len(calls) == 6
    assert all(c.parent is not None and c.parent.span_id == group.context.span_id for c in calls)


async def test_stopping_cancels_in_flight_calls_and_releases_their_reservations(
    telemetry: Telemetry,
) -> None:
    hung = asyncio.Event()
    waiting = 0

    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    async def ask() -> dict[str, Any]:
        nonlocal waiting
        if index() >= 4:
            waiting += 1
            if waiting == 2:
                hung.set()
            await asyncio.sleep(3600)  # never answers: must be cancelled
        else:
            await asyncio.wait_for(hung.wait(), GUARD)  # the slow ones are in flight
        return chat_body("answer 5", completion=20)

    async with budget(output_tokens=10_000, calls=100) as b:
        result = await aself_consistency(
            ask, n=6, concurrency=6, stop=stop_confident(0.95), launch=launch_all()
        )
        # by the time the group returns, the cancelled calls have settled
        assert b.reserved.is_zero() and b.in_flight == 0
    assert result.answer == "5" and result.stop_reason == "rule" and result.stopped_early
    assert (result.completed, result.cancelled) == (4, 2)
    # the four answers' tokens, and each cancelled call's worst case (never zero)
    assert b.spent.output_tokens == 4 * 20 + 2 * 100
    assert b.spent.calls == 6  # a cancelled attempt still counts as a call
    assert result.spent == b.spent
    assert result.cancelled_spent.output_tokens == 200 and result.cancelled_spent.calls == 2
    cancelled = [s for s in telemetry.spans("chat o3") if s.status.status_code is StatusCode.ERROR]
    assert len(cancelled) == 2
    assert all(attrs(s)["error.type"] == "CancelledError" for s in cancelled)
    assert all(attrs(s)["tcc.usage.estimated"] is True for s in cancelled)
    assert all(attrs(s)["gen_ai.usage.output_tokens"] == 100 for s in cancelled)
    group = attrs(telemetry.span("self_consistency"))
    assert group["tcc.sampling.cancelled"] == 2
    assert group["tcc.sampling.cancelled.usage.output_tokens"] == 200
    assert group["tcc.sampling.cancelled.calls"] == 2


async def test_cancellation_settles_per_sample_reservations() -> None:
    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    async def ask() -> dict[str, Any]:
        if index() > 0:
            await asyncio.sleep(3600)
        return chat_body("7")

    async with budget(output_tokens=1000) as b:
        result = await aself_consistency(
            ask,
            n=5,
            concurrency=5,
            per_sample=Demand(max_output_tokens=100),
            stop=stop_after_completed(1),
            launch=launch_all(),
        )
    assert result.cancelled == 4 and b.reserved.is_zero() and b.in_flight == 0
    assert b.spent.output_tokens == 20 + 4 * 100 and b.spent.calls == 5


async def test_lambdas_around_coroutines_work() -> None:
    async def ask(q: str) -> str:
        await asyncio.sleep(0)
        return f"{q}: 12"

    result = await aself_consistency(lambda: ask("q"), n=3, stop=None)
    assert result.answer == "12" and result.completed == 3


async def test_a_sync_sample_runs_on_the_loop_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def sync_sample() -> str:
        return "4"

    with caplog.at_level(logging.WARNING, logger="tcc_plugin.sampling"):
        result = await aself_consistency(sync_sample, n=2, stop=None)
    assert result.answer == "4"
    assert "synchronous" in caplog.text


async def test_best_of_n_with_async_verifier_and_judge(telemetry: Telemetry) -> None:
    async def score(c: Any) -> float:
        await asyncio.sleep(0)
        return 1.0 if "3" in c.value else 0.1

    result = await abest_of_n(lambda: _answer(["1", "3", "2"]), n=3, verifier=score)
    assert result.value == "x = 3" and result.score == 1.0

    @llm_call(model="o3-mini", provider="openai", max_output_tokens=10)
    async def judge(prompt: str) -> dict[str, Any]:
        return chat_body("Score: 10/10" if "x = 3" in prompt else "Score: 3/10")

    async with budget(calls=100) as b:
        judged = await abest_of_n(
            lambda: _answer(["1", "3", "2"]), n=3, verifier=llm_judge(judge, question="?")
        )
    assert judged.scores == (0.3, 1.0, 0.3) and b.spent.calls == 3


async def _answer(values: list[str]) -> str:
    await asyncio.sleep(0)
    return f"x = {values[index()]}"


async def test_verification_is_cancelled_with_its_sample() -> None:
    judge_started = asyncio.Event()

    async def slow_judge(c: Any) -> float:
        if c.index == 1:
            judge_started.set()
            await asyncio.sleep(3600)
        else:
            await asyncio.wait_for(judge_started.wait(), GUARD)
        return 1.0

    result = await abest_of_n(
        lambda: _answer(["1", "2"]),
        n=2,
        verifier=slow_judge,
        stop=stop_on_score(1.0),
        launch=launch_all(),
    )
    assert result.completed == 1 and result.cancelled == 1


async def test_timeout_cancels_what_is_still_running() -> None:
    async def sample() -> str:
        if index() == 1:
            await asyncio.sleep(3600)
        return "9"

    result = await aself_consistency(sample, n=2, stop=None, timeout=0.05)
    assert result.stop_reason == "timeout" and result.cancelled == 1 and result.answer == "9"


async def test_cancelling_the_group_cancels_every_sample(telemetry: Telemetry) -> None:
    started = asyncio.Event()

    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    async def ask() -> dict[str, Any]:
        started.set()
        await asyncio.sleep(3600)
        return chat_body("1")

    async with budget(output_tokens=1000) as b:
        group = asyncio.ensure_future(aself_consistency(ask, n=3, concurrency=3))
        await asyncio.wait_for(started.wait(), GUARD)
        assert b.reserved.output_tokens > 0
        group.cancel()
        with pytest.raises(asyncio.CancelledError):
            await group
        assert b.reserved.is_zero() and b.in_flight == 0
    span = telemetry.span("self_consistency")
    assert span.status.status_code is StatusCode.ERROR


async def test_current_sample_inside_async_samples() -> None:
    seen: list[int] = []

    async def sample() -> str:
        ctx = current_sample()
        assert ctx is not None and not ctx.cancelled
        seen.append(ctx.index)
        return "1"

    await aself_consistency(sample, n=4, stop=None)
    assert sorted(seen) == [0, 1, 2, 3]


async def test_async_failures_raise_when_nothing_completes() -> None:
    async def sample() -> str:
        raise TimeoutError("provider timed out")

    with pytest.raises(TimeoutError):
        await aself_consistency(sample, n=2)
