"""Fault injection over real SDK clients: what the retry layer does, request by request.

Each case asserts the HTTP requests sent, the waits chosen (sleep and clock injected:
nothing really waits), the budget ledger's exact totals and the span's retry events.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest

from tcc_plugin import Budget, RetriesExhausted, RetryPolicy, budget, instrument

from ..conftest import Telemetry
from .conftest import (
    MockAPI,
    anthropic_error,
    anthropic_message,
    anthropic_usage,
    chat_chunks,
    chat_completion,
    chat_usage,
    json_response,
    openai_error,
    sse_response,
)

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


class FakeTime:
    """An injected clock whose time moves only when the policy sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def policy(self, **kwargs: Any) -> RetryPolicy:
        kwargs.setdefault("jitter", 0)  # deterministic backoff: 0.5, 1, 2, ...
        return RetryPolicy(
            sleep=self.sleep, async_sleep=self.async_sleep, clock=self.clock, **kwargs
        )


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def retry_events(telemetry: Telemetry, name: str) -> list[dict[str, Any]]:
    span = telemetry.span(name)
    return [dict(e.attributes or {}) for e in span.events if e.name == "tcc.retry.attempt"]


def o3_cost(prompt: int, completion: int) -> Decimal:
    return (prompt * Decimal(2) + completion * Decimal(8)) / 10**6  # o3: $2 in, $8 out


def ask(client: Any, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model="o3", messages=QUESTION, max_completion_tokens=100, **kwargs
    )


def test_429_with_retry_after_then_200(
    openai_client: Any, api: MockAPI, telemetry: Telemetry, fake_time: FakeTime
) -> None:
    client = instrument(openai_client, retry=fake_time.policy())
    api.queue(
        json_response(
            openai_error(429, "Rate limit reached", "requests", "rate_limit_exceeded"),
            429,
            {"retry-after": "3"},
        ),
        json_response(chat_completion(chat_usage(20, 40, reasoning=30))),
    )
    with budget(usd=1, calls=5) as b:
        ask(client)
    assert api.count == 2
    assert fake_time.waits == [3.0]
    assert b.spent.calls == 1 and b.spent.output_tokens == 40 and b.spent.reasoning_tokens == 30
    assert b.spent.usd == o3_cost(20, 40)
    assert b.reserved.is_zero()
    events = retry_events(telemetry, "chat o3")
    assert [(e["tcc.retry.attempt_number"], e["http.response.status_code"]) for e in events] == [
        (1, 429)
    ]
    assert events[0]["tcc.retry.wait_s"] == 3.0
    assert events[0]["error.type"] == "RateLimitError"


def test_anthropic_529_twice_then_200(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry, fake_time: FakeTime
) -> None:
    client = instrument(anthropic_client, retry=fake_time.policy(max_attempts=3))
    overloaded = json_response(anthropic_error("overloaded_error", "Overloaded"), 529)
    usage = anthropic_usage(100, 300, read=1000, thinking=200)
    api.queue(overloaded, overloaded, json_response(anthropic_message(usage)))
    with budget(calls=2, output_tokens=1024) as b:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=1024, messages=QUESTION)
    assert api.count == 3
    assert fake_time.waits == [0.5, 1.0]
    # Sonnet 4.5: $3 input, $0.30 cache read, $15 output per million tokens.
    expected = (100 * Decimal(3) + 1000 * Decimal("0.3") + 300 * Decimal(15)) / 10**6
    assert b.spent.usd == expected
    assert b.spent.total_tokens == 1100 + 300 and b.spent.calls == 1
    assert b.reserved.is_zero()
    events = retry_events(telemetry, "chat claude-sonnet-4-5")
    assert [e["http.response.status_code"] for e in events] == [529, 529]
    assert [e["tcc.retry.reason"] for e in events] == ["overloaded", "overloaded"]
    span = telemetry.span("chat claude-sonnet-4-5")
    assert span.status.is_ok and (span.attributes or {})["tcc.retry.attempts"] == 3


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (
            lambda request: (_ for _ in ()).throw(httpx2.ReadTimeout("timed out", request=request)),
            "APITimeoutError",
        ),
        (
            lambda request: (_ for _ in ()).throw(
                httpx2.ReadError("connection reset by peer", request=request)
            ),
            "APIConnectionError",
        ),
    ],
    ids=["timeout", "connection-reset"],
)
def test_timeout_and_connection_reset_are_retried(
    openai_client: Any,
    api: MockAPI,
    telemetry: Telemetry,
    fake_time: FakeTime,
    fault: Any,
    error_type: str,
) -> None:
    client = instrument(openai_client, retry=fake_time.policy())
    api.queue(fault, json_response(chat_completion(chat_usage(10, 5))))
    with budget(calls=1) as b:
        ask(client)
    assert api.count == 2 and fake_time.waits == [0.5]
    assert b.spent.calls == 1 and b.spent.usd == o3_cost(10, 5)
    assert [e["error.type"] for e in retry_events(telemetry, "chat o3")] == [error_type]


def test_500_forever_gives_up_after_n_attempts(
    openai_client: Any, api: MockAPI, telemetry: Telemetry, fake_time: FakeTime
) -> None:
    client = instrument(openai_client, retry=fake_time.policy(max_attempts=4))
    api.queue(*[json_response(openai_error(500, "boom", "server_error"), 500)] * 4)
    with budget(calls=3) as b, pytest.raises(RetriesExhausted) as exc:
        ask(client)
    assert api.count == 4
    assert fake_time.waits == [0.5, 1.0, 2.0]
    assert exc.value.attempts == 4
    assert isinstance(exc.value.__cause__, openai.InternalServerError)
    assert "gave up after 4 attempts" in str(exc.value)
    assert b.spent.calls == 1 and b.spent.total_tokens == 0 and b.spent.usd == 0
    assert b.reserved.is_zero()
    events = retry_events(telemetry, "chat o3")
    assert [e["tcc.retry.decision"] for e in events] == ["retry"] * 3 + ["give_up"]
    span = telemetry.span("chat o3")
    assert not span.status.is_ok
    assert (span.attributes or {})["error.type"] == "InternalServerError"


def test_200_with_malformed_json_is_not_retried(
    openai_client: Any, api: MockAPI, telemetry: Telemetry, fake_time: FakeTime
) -> None:
    client = instrument(openai_client, retry=fake_time.policy())
    api.queue(
        httpx2.Response(200, headers={"content-type": "application/json"}, content=b'{"id": "chat')
    )
    with budget(calls=3) as b, pytest.raises(json.JSONDecodeError):
        ask(client)
    assert api.count == 1 and fake_time.waits == []
    assert b.spent.calls == 1 and b.reserved.is_zero()
    events = retry_events(telemetry, "chat o3")
    assert [(e["tcc.retry.decision"], e["tcc.retry.error_kind"]) for e in events] == [
        ("give_up", "malformed")
    ]


def test_stream_cut_mid_way_is_not_retried_and_charged_its_worst_case(
    openai_client: Any, api: MockAPI, telemetry: Telemetry, fake_time: FakeTime
) -> None:
    client = instrument(openai_client, retry=fake_time.policy())
    events = chat_chunks(["The", " answer", " is", " 4"], chat_usage(10, 60, reasoning=50))
    api.queue(sse_response(events, fail_after=2))
    received = []
    with budget(output_tokens=1000) as b:
        stream = ask(client, stream=True)
        with pytest.raises(openai.APIConnectionError):
            for chunk in stream:
                received.append(chunk)
    assert received  # chunks reached the caller before the cut: no transparent retry
    assert api.count == 1 and fake_time.waits == []
    # The provider generated tokens, how many is unknown: the reservation is charged.
    assert b.spent.output_tokens == 100 and b.spent.calls == 1 and b.reserved.is_zero()
    span = telemetry.span("chat o3")
    assert not span.status.is_ok
    assert (span.attributes or {})["tcc.usage.missing"] is True


def test_retry_after_longer_than_the_deadline_fails_fast(
    openai_client: Any, api: MockAPI, telemetry: Telemetry, fake_time: FakeTime
) -> None:
    client = instrument(openai_client, retry=fake_time.policy())
    api.queue(
        json_response(
            openai_error(429, "Rate limit reached", "tokens", "rate_limit_exceeded"),
            429,
            {"retry-after": "30"},
        )
    )
    with Budget(deadline=10, clock=fake_time.clock) as b, pytest.raises(RetriesExhausted) as exc:
        ask(client)
    assert api.count == 1 and fake_time.waits == []
    assert "deadline" in exc.value.reason and "10s left" in exc.value.reason
    assert isinstance(exc.value.__cause__, openai.RateLimitError)
    assert b.spent.calls == 1 and b.reserved.is_zero()


async def test_async_anthropic_529_then_200(
    async_anthropic_client: Any, api: MockAPI, telemetry: Telemetry, fake_time: FakeTime
) -> None:
    client = instrument(async_anthropic_client, retry=fake_time.policy())
    api.queue(
        json_response(anthropic_error("overloaded_error", "Overloaded"), 529),
        json_response(anthropic_message(anthropic_usage(10, 20, thinking=15))),
    )
    async with budget(calls=1) as b:
        await asyncio.wait_for(
            client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=QUESTION),
            timeout=30,
        )
    assert api.count == 2 and fake_time.waits == [0.5]
    assert b.spent.calls == 1 and b.spent.reasoning_tokens == 15 and b.reserved.is_zero()
