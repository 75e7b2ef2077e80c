"""The retry layer's decisions and its place in the lifecycle (no real sleeping)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

import pytest
import tenacity
from opentelemetry.trace import StatusCode

from tcc_plugin import BudgetExceeded, budget, llm_call
from tcc_plugin.adapter import Adapter, CallInfo, Clamp, ErrorInfo, ResponseInfo
from tcc_plugin.lifecycle import run
from tcc_plugin.readers import StreamAccumulator
from tcc_plugin.retry import (
    RetriesExhausted,
    RetryEvent,
    RetryPolicy,
    active_retry_policy,
    classify_error,
    parse_retry_after,
)
from tcc_plugin.usage import Usage

from ..conftest import Telemetry


class FakeResponse:
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.headers = headers or {}


class HTTPStatusError(Exception):
    """Shaped like the SDKs' APIStatusError: ``status_code`` and ``response.headers``."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = FakeResponse(status, headers)


class ReadTimeout(Exception):
    """Named like httpx's: classified by name along the MRO."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def policy(clock: Clock, **kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("jitter", 0)
    return RetryPolicy(sleep=clock.sleep, async_sleep=clock.async_sleep, clock=clock, **kwargs)


OK_BODY = {"model": "o3", "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


# -- parsing and classification ----------------------------------------------------------
def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "Sun, 29 Nov 2026 12:00:30 GMT"}, now=now) == 30.0
    assert parse_retry_after({"retry-after": "Sun, 29 Nov 2026 11:00:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("error", "retryable", "reason", "status"),
    [
        (HTTPStatusError(429, {"retry-after": "3"}), True, "rate_limit", 429),
        (HTTPStatusError(529), True, "overloaded", 529),
        (HTTPStatusError(503), True, "server", 503),
        (HTTPStatusError(408), True, "request_timeout", 408),
        (HTTPStatusError(409), True, "conflict", 409),
        (HTTPStatusError(400), False, "client", 400),
        (HTTPStatusError(401), False, "client", 401),
        (TimeoutError(), True, "timeout", None),
        (ReadTimeout(), True, "timeout", None),
        (ConnectionResetError(), True, "connection", None),
        (json.JSONDecodeError("Unterminated string", '{"id": "chat', 7), False, "malformed", None),
    ],
)
def test_generic_classification(
    error: BaseException, retryable: bool, reason: str, status: int | None
) -> None:
    info = classify_error(error)
    assert info is not None
    assert (info.retryable, info.reason, info.status) == (retryable, reason, status)


def test_unknown_errors_are_not_classified() -> None:
    assert classify_error(ValueError("bad")) is None


# -- decisions ---------------------------------------------------------------------------
def test_exponential_backoff_then_stop() -> None:
    clock = Clock()
    p = policy(clock, max_attempts=4, initial_wait=0.5, max_wait=1.5)
    err = HTTPStatusError(500)
    info = classify_error(err)
    waits = [p.decide(n, clock(), err, info).wait for n in (1, 2, 3)]
    assert waits == [0.5, 1.0, 1.5]  # doubling, capped at max_wait
    last = p.decide(4, clock(), err, info)
    assert not last.retry and last.exhausted


def test_retry_after_is_honoured_and_capped() -> None:
    clock = Clock()
    p = policy(clock, max_retry_after=10)
    soon = HTTPStatusError(429, {"retry-after": "4"})
    late = HTTPStatusError(429, {"retry-after": "99"})
    assert p.decide(1, clock(), soon, classify_error(soon)).wait == 4
    assert p.decide(1, clock(), late, classify_error(late)).wait == 10


def test_never_waits_past_the_deadline() -> None:
    clock = Clock()
    p = policy(clock)
    err = HTTPStatusError(429, {"retry-after": "30"})
    decision = p.decide(1, clock(), err, classify_error(err), time_left=12.0)
    assert not decision.retry and decision.exhausted
    assert "deadline" in decision.reason


def test_budget_errors_and_cancellation_are_never_retried() -> None:
    clock = Clock()
    p = policy(clock, retry_if=lambda e, i: True)
    refusal = BudgetExceeded("calls", limit_value=1, spent=1)
    assert not p.decide(1, clock(), refusal, None).retry
    assert not p.decide(1, clock(), asyncio.CancelledError(), None).retry


def test_tenacity_strategies_compose() -> None:
    clock = Clock()
    p = policy(
        clock,
        stop=tenacity.stop_after_attempt(10) | tenacity.stop_after_delay(5),
        wait=tenacity.wait_fixed(2),
    )
    err = HTTPStatusError(503)
    assert p.decide(1, clock(), err, classify_error(err)).wait == 2
    clock.now += 6  # past stop_after_delay(5)
    assert not p.decide(2, 1000.0, err, classify_error(err)).retry


def test_policy_as_a_scope_nests() -> None:
    outer, inner = RetryPolicy(), RetryPolicy()
    assert active_retry_policy() is None
    with outer:
        with inner:
            assert active_retry_policy() is inner
        assert active_retry_policy() is outer
    assert active_retry_policy() is None


# -- in the lifecycle --------------------------------------------------------------------
def test_429_then_success_waits_retry_after_and_charges_once(telemetry: Telemetry) -> None:
    clock = Clock()
    events: list[RetryEvent] = []
    failures = [HTTPStatusError(429, {"retry-after": "2"}), HTTPStatusError(529)]

    @llm_call(
        model="o3",
        provider="openai",
        max_output_tokens=100,
        retry=policy(clock, before_sleep=events.append),
    )
    def ask() -> dict[str, Any]:
        if failures:
            raise failures.pop(0)
        return OK_BODY

    with budget(calls=5, output_tokens=1000) as b:
        assert ask() == OK_BODY
    assert clock.sleeps == [2.0, 1.0]  # Retry-After, then backoff 0.5 * 2**1
    assert [e.attempt for e in events] == [1, 2]
    assert b.spent.calls == 1 and b.spent.output_tokens == 5 and b.reserved.is_zero()
    span = telemetry.span("chat o3")
    assert span.attributes is not None and span.attributes["tcc.retry.attempts"] == 3
    retry_events = [e for e in span.events if e.name == "tcc.retry.attempt"]
    assert [dict(e.attributes or {}).get("http.response.status_code") for e in retry_events] == [
        429,
        529,
    ]
    assert [dict(e.attributes or {}).get("tcc.retry.wait_s") for e in retry_events] == [2.0, 1.0]


def test_gives_up_with_a_precise_chained_error(telemetry: Telemetry) -> None:
    clock = Clock()
    sent = []

    @llm_call(
        model="o3", provider="openai", max_output_tokens=10, retry=policy(clock, max_attempts=3)
    )
    def ask() -> dict[str, Any]:
        sent.append(1)
        raise HTTPStatusError(500)

    with budget(calls=5) as b, pytest.raises(RetriesExhausted) as exc:
        ask()
    assert len(sent) == 3 and exc.value.attempts == 3
    assert isinstance(exc.value.__cause__, HTTPStatusError)
    assert "gave up after 3 attempts" in str(exc.value)
    assert b.spent.calls == 1 and b.reserved.is_zero()
    span = telemetry.span("chat o3")
    assert span.status.status_code is StatusCode.ERROR
    decisions = [
        dict(e.attributes or {})["tcc.retry.decision"]
        for e in span.events
        if e.name == "tcc.retry.attempt"
    ]
    assert decisions == ["retry", "retry", "give_up"]


def test_non_retryable_error_is_raised_as_is() -> None:
    clock = Clock()

    @llm_call(model="o3", provider="openai", retry=policy(clock))
    def ask() -> dict[str, Any]:
        raise HTTPStatusError(400)

    with pytest.raises(HTTPStatusError):
        ask()
    assert clock.sleeps == []


def test_retry_refused_by_the_budget_raises_budget_exceeded() -> None:
    clock = Clock()
    sent = []

    @llm_call(model="o3", provider="openai", max_output_tokens=10)
    def other() -> dict[str, Any]:
        return {"usage": {"prompt_tokens": 0, "completion_tokens": 10}}

    # While the first attempt waits, a concurrent call spends what it needs.
    @llm_call(
        model="o3",
        provider="openai",
        max_output_tokens=10,
        retry=policy(clock, before_sleep=lambda event: other()),
    )
    def ask() -> dict[str, Any]:
        sent.append(1)
        raise HTTPStatusError(503)

    with budget(output_tokens=15) as b, pytest.raises(BudgetExceeded) as exc:
        ask()
    assert len(sent) == 1
    assert exc.value.limit == "output_tokens" and exc.value.spent == 10 and exc.value.needed == 10
    assert isinstance(exc.value.__context__, HTTPStatusError)
    assert b.reserved.is_zero() and b.spent.calls == 2  # `other`, and `ask` counted once


def test_deadline_stops_retrying_before_waiting(telemetry: Telemetry) -> None:
    clock = Clock()

    @llm_call(model="o3", provider="openai", retry=policy(clock))
    def ask() -> dict[str, Any]:
        raise HTTPStatusError(429, {"retry-after": "30"})

    from tcc_plugin import Budget

    with Budget(deadline=10, clock=clock), pytest.raises(RetriesExhausted) as exc:
        ask()
    assert clock.sleeps == []
    assert "deadline" in exc.value.reason


async def test_async_retries_use_the_async_sleep() -> None:
    clock = Clock()
    failures = [TimeoutError("read timed out")]

    @llm_call(model="o3", provider="openai", retry=policy(clock))
    async def ask() -> dict[str, Any]:
        await asyncio.sleep(0)
        if failures:
            raise failures.pop()
        return OK_BODY

    with RetryPolicy():  # the explicit policy wins over the scope's
        assert await ask() == OK_BODY
    assert clock.sleeps == [0.5]


class SdkAdapter(Adapter[dict[str, Any], dict[str, Any]]):
    """A provider adapter with its own retry knob and classification."""

    def __init__(self) -> None:
        self.sdk_retries_seen: list[int] = []

    def describe(self, request: dict[str, Any]) -> CallInfo:
        return CallInfo(model="o3", provider="openai", max_output_tokens=request["max_tokens"])

    def clamp(self, request: dict[str, Any], clamp: Clamp) -> dict[str, Any]:
        return {**request, "max_tokens": clamp.max_output_tokens}

    def read_response(self, response: dict[str, Any]) -> ResponseInfo:
        return ResponseInfo(usage=Usage(input=1, output=1))

    def stream_reader(self, request: dict[str, Any]) -> StreamAccumulator:
        return StreamAccumulator()

    def classify_error(self, error: BaseException) -> ErrorInfo | None:
        if isinstance(error, KeyError):  # this SDK's "overloaded"
            return ErrorInfo(True, "overloaded", 529, retry_after=0.25)
        return None

    def without_provider_retries(self, request: dict[str, Any]) -> dict[str, Any]:
        return {**request, "max_retries": 0}


def test_adapter_classification_and_sdk_retries_off() -> None:
    clock = Clock()
    adapter = SdkAdapter()
    sent: list[dict[str, Any]] = []

    def send(request: dict[str, Any]) -> dict[str, Any]:
        sent.append(request)
        if len(sent) == 1:
            raise KeyError("overloaded")
        return {}

    with budget(output_tokens=50, policy="clamp"):
        run(adapter, {"max_tokens": 80, "max_retries": 2}, send, retry=policy(clock))
    assert clock.sleeps == [0.25]
    assert [r["max_retries"] for r in sent] == [0, 0]
    assert [r["max_tokens"] for r in sent] == [50, 50]  # re-reserved and re-clamped each attempt


def test_without_a_policy_sdk_retries_stay_on() -> None:
    sent: list[dict[str, Any]] = []
    run(SdkAdapter(), {"max_tokens": 8, "max_retries": 2}, lambda r: sent.append(r) or {})
    assert sent[0]["max_retries"] == 2
