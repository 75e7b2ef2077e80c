"""The Anthropic SDK, instrumented: cache reads and 5-minute / 1-hour writes priced
apart, thinking tokens read, thinking budgets mapped per model, clamps in the HTTP body,
streams (raw and the ``messages.stream()`` helper) settled however they end."""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tcc_plugin import BudgetExceeded, RetryPolicy, budget
from tcc_plugin.instrument import instrument, thinking

from ..conftest import SPANS, Telemetry
from .conftest import (
    MockAPI,
    anthropic_error,
    anthropic_events,
    anthropic_message,
    anthropic_usage,
    json_response,
    sse_response,
)

anthropic = pytest.importorskip("anthropic")
ant = pytest.importorskip("tcc_plugin.integrations.anthropic")

# claude-sonnet-4-5 is deprecated in this SDK release (a DeprecationWarning per call).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = "claude-sonnet-4-5-20250929"
QUESTION = [{"role": "user", "content": "What is 2+2?"}]
# 50 uncached input tokens, 2,000 read from the cache, 300 written to it (200 for five
# minutes, 100 for an hour); 700 output tokens of which 600 were thinking.
USAGE = anthropic_usage(50, 700, read=2000, write_5m=200, write_1h=100, thinking=600)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def usd(*terms: tuple[int, str]) -> Decimal:
    return sum((Decimal(n) * Decimal(p) for n, p in terms), Decimal(0)) / 10**6


# claude-sonnet-4-5 under 200k input tokens: $3 input, $0.30 cache read, $3.75 5-minute
# cache write, $6 1-hour cache write, $15 output (thinking billed as output).
SONNET_COST = usd((50, "3"), (2000, "0.3"), (200, "3.75"), (100, "6"), (700, "15"))


def test_cache_reads_and_writes_and_thinking_are_exact(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    api.queue(json_response(anthropic_message(USAGE)))
    with budget(usd="0.50", name="agent") as b:
        message = client.messages.create(
            model=MODEL,
            max_tokens=16000,
            thinking={"type": "enabled", "budget_tokens": 10000},
            system="Be brief.",
            messages=QUESTION,
        )
    assert message.content[-1].text == "4"
    assert api.body()["thinking"] == {"type": "enabled", "budget_tokens": 10000}
    assert api.body()["max_tokens"] == 16000
    assert Decimal("0.0126") == SONNET_COST  # 150 + 600 + 750 + 600 + 10,500 micro-dollars
    assert b.spent.usd == SONNET_COST
    assert b.spent.total_tokens == 2350 + 700  # input counts cache reads and writes
    assert b.spent.reasoning_tokens == 600 and b.spent.output_tokens == 700
    assert b.reserved.is_zero()
    span = telemetry.span(f"chat {MODEL}")
    a = attrs(span)
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.max_tokens"] == 16000
    assert a["gen_ai.response.model"] == MODEL
    assert a["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert a["gen_ai.usage.input_tokens"] == 2350
    assert a["gen_ai.usage.cache_read.input_tokens"] == 2000
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 300
    assert a["tcc.usage.cache_creation_1h.input_tokens"] == 100
    assert a["gen_ai.usage.output_tokens"] == 700
    assert a["gen_ai.usage.reasoning.output_tokens"] == 600
    assert a["tcc.request.reasoning.budget_tokens"] == 10000
    assert a["tcc.request.thinking"] == "enabled"
    assert a["tcc.cost.usd"] == pytest.approx(0.0126)
    assert a["server.address"] == "api.anthropic.com"
    # one provider call, one span: the SDK's own span is off for an instrumented client
    assert [s.name for s in telemetry.spans()] == [span.name]


def test_stream_reads_usage_from_message_start_and_message_delta(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    start = anthropic_usage(50, 1, read=2000, write_5m=200, write_1h=100)
    api.queue(sse_response(anthropic_events(start, USAGE)))
    with budget(usd="0.50") as b:
        events = list(
            client.messages.create(
                model=MODEL,
                max_tokens=16000,
                thinking={"type": "enabled", "budget_tokens": 10000},
                messages=QUESTION,
                stream=True,
            )
        )
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert b.spent.usd == SONNET_COST
    a = attrs(telemetry.span(f"chat {MODEL}"))
    assert a["gen_ai.usage.input_tokens"] == 2350
    assert a["tcc.usage.cache_creation_1h.input_tokens"] == 100
    assert a["gen_ai.usage.reasoning.output_tokens"] == 600
    assert a["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert a["gen_ai.request.stream"] is True


def test_the_messages_stream_helper_and_get_final_message(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    start = anthropic_usage(50, 1, read=2000, write_5m=200, write_1h=100)
    api.queue(
        sse_response(anthropic_events(start, USAGE)), sse_response(anthropic_events(start, USAGE))
    )
    with budget(usd="0.50") as b:
        with client.messages.stream(model=MODEL, max_tokens=16000, messages=QUESTION) as stream:
            final = stream.get_final_message()  # consumed inside the SDK helper
        with client.messages.stream(model=MODEL, max_tokens=16000, messages=QUESTION) as stream:
            text = "".join(stream.text_stream)
    assert final.usage.output_tokens == 700 and final.content[-1].text == "4"
    assert text == "4"
    assert b.spent.usd == 2 * SONNET_COST and b.reserved.is_zero()
    assert len(telemetry.spans(f"chat {MODEL}")) == 2


def test_stream_closed_half_read_is_charged_its_reservation(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    start = anthropic_usage(50, 1, read=2000, write_5m=200, write_1h=100)
    api.queue(sse_response(anthropic_events(start, USAGE)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with budget(output_tokens=100_000) as b:
            with client.messages.stream(model=MODEL, max_tokens=4000, messages=QUESTION) as stream:
                for event in stream:
                    if event.type == "content_block_start":
                        break  # message_start's counts are provisional: not charged as final
            assert b.in_flight == 0
    assert b.spent.output_tokens == 4000 and b.reserved.is_zero()
    a = attrs(telemetry.span(f"chat {MODEL}"))
    assert a["tcc.stream.abandoned"] is True and a["tcc.usage.missing"] is True


def test_error_event_inside_a_stream_is_classified_and_settled(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    start = anthropic_usage(50, 1)
    events = [
        *anthropic_events(start, USAGE)[:4],
        ("error", anthropic_error("overloaded_error", "Overloaded")),
    ]
    api.queue(sse_response(events))
    with budget(calls=5, output_tokens=100_000) as b:
        stream = client.messages.create(
            model=MODEL, max_tokens=4000, messages=QUESTION, stream=True
        )
        with pytest.raises(anthropic.APIStatusError) as exc:
            list(stream)
    info = ant.classify_error(exc.value)
    assert (info.retryable, info.reason, info.status) == (True, "overloaded", 529)
    # The stream broke after chunks arrived and before the final usage: the reservation
    # (max_tokens) is charged rather than nothing.
    assert b.reserved.is_zero() and b.spent.calls == 1 and b.spent.output_tokens == 4000
    span = telemetry.span(f"chat {MODEL}")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["tcc.usage.missing"] is True


@pytest.mark.parametrize(
    ("status", "kind", "headers", "expected"),
    [
        (529, "overloaded_error", {"retry-after": "3"}, (True, "overloaded", 3.0)),
        (
            429,
            "rate_limit_error",
            {"retry-after": "12", "anthropic-ratelimit-requests-remaining": "0"},
            (True, "rate_limit", 12.0),
        ),
        (500, "api_error", {}, (True, "server", None)),
        (504, "timeout_error", {}, (True, "server", None)),
        (400, "invalid_request_error", {}, (False, "client", None)),
        (413, "request_too_large", {}, (False, "client", None)),
    ],
)
def test_status_errors_are_classified(
    anthropic_client: Any,
    api: MockAPI,
    status: int,
    kind: str,
    headers: dict[str, str],
    expected: tuple[Any, ...],
) -> None:
    client = instrument(anthropic_client.with_options(max_retries=0))
    api.queue(
        json_response(anthropic_error(kind, "no"), status, {"request-id": "req_1", **headers})
    )
    with pytest.raises(anthropic.APIStatusError) as exc:
        client.messages.create(model=MODEL, max_tokens=100, messages=QUESTION)
    info = ant.classify_error(exc.value)
    assert (info.retryable, info.reason, info.retry_after) == expected
    assert info.status == status


def test_overloaded_is_retried_by_our_policy_not_the_sdk(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry, no_sleep: Any
) -> None:
    client = instrument(anthropic_client, retry=RetryPolicy(max_attempts=3, sleep=no_sleep))
    api.queue(
        json_response(anthropic_error("overloaded_error", "Overloaded"), 529, {"retry-after": "2"}),
        json_response(anthropic_message(USAGE)),
    )
    with budget(usd=1) as b:
        client.messages.create(model=MODEL, max_tokens=16000, messages=QUESTION)
    assert api.count == 2 and no_sleep.waits == [2.0]
    assert b.spent.usd == SONNET_COST and b.spent.calls == 1
    assert attrs(telemetry.span(f"chat {MODEL}"))["tcc.retry.attempts"] == 2


# -- budgets and thinking ----------------------------------------------------------------
def test_clamp_rewrites_max_tokens_and_scales_the_thinking_budget(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    api.queue(json_response(anthropic_message(USAGE)), json_response(anthropic_message(USAGE)))
    with budget(output_tokens=5000 + 1500, policy="clamp") as b:
        client.messages.create(
            model=MODEL,
            max_tokens=16000,
            thinking={"type": "enabled", "budget_tokens": 10000},
            messages=QUESTION,
        )
        assert b.spent.output_tokens == 700
        # 5,800 left: max_tokens 5,800, thinking keeps its 10/16 share: 3,625
        client.messages.create(
            model=MODEL,
            max_tokens=16000,
            thinking={"type": "enabled", "budget_tokens": 10000},
            messages=QUESTION,
        )
    first, second = api.body(0), api.body(1)
    assert first["max_tokens"] == 6500 and first["thinking"]["budget_tokens"] == 4062
    assert second["max_tokens"] == 5800 and second["thinking"]["budget_tokens"] == 3625
    spans = telemetry.spans(f"chat {MODEL}")
    assert attrs(spans[0])["tcc.budget.clamped.max_tokens"] == 6500


def test_clamp_below_the_thinking_minimum_turns_thinking_off(
    anthropic_client: Any, api: MockAPI
) -> None:
    client = instrument(anthropic_client)
    api.queue(json_response(anthropic_message(anthropic_usage(10, 300), thinking=False)))
    with budget(output_tokens=1500, policy="clamp"):
        client.messages.create(
            model=MODEL,
            max_tokens=16000,
            thinking={"type": "enabled", "budget_tokens": 10000},
            messages=QUESTION,
        )
    # 1,500 x 10/16 = 937 thinking tokens: below the API's 1,024 minimum
    assert api.body()["max_tokens"] == 1500
    assert api.body()["thinking"] == {"type": "disabled"}


def test_a_reasoning_tokens_limit_clamps_the_thinking_budget(
    anthropic_client: Any, api: MockAPI
) -> None:
    client = instrument(anthropic_client)
    api.queue(json_response(anthropic_message(USAGE)))
    with budget(reasoning_tokens=3000, policy="clamp"):
        client.messages.create(
            model=MODEL,
            max_tokens=16000,
            thinking={"type": "enabled", "budget_tokens": 10000},
            messages=QUESTION,
        )
    assert api.body()["thinking"]["budget_tokens"] == 3000


def test_refused_call_sends_nothing(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    with budget(usd="0.001"), pytest.raises(BudgetExceeded) as exc:
        client.messages.create(model=MODEL, max_tokens=16000, messages=QUESTION)
    assert exc.value.limit == "usd" and api.count == 0
    assert attrs(telemetry.span(f"chat {MODEL}"))["tcc.budget.outcome"] == "refused"


def test_neutral_thinking_maps_to_budget_tokens_or_adaptive_effort_per_model(
    anthropic_client: Any, api: MockAPI
) -> None:
    client = instrument(anthropic_client, thinking=5000)
    for _ in range(7):
        api.queue(json_response(anthropic_message(anthropic_usage(10, 20))))
    client.messages.create(model=MODEL, max_tokens=16000, messages=QUESTION)
    with thinking("high"):
        client.messages.create(model=MODEL, max_tokens=8000, messages=QUESTION)
        client.messages.create(model="claude-opus-4-7", max_tokens=8000, messages=QUESTION)
    client.messages.create(model="claude-opus-4-6", max_tokens=8000, messages=QUESTION)
    # what thinking forbids, or a model without it, or an explicit knob: left alone
    client.messages.create(
        model=MODEL, max_tokens=8000, messages=QUESTION, extra_body={"temperature": 0.2}
    )
    client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=8000, messages=QUESTION)
    client.messages.create(
        model="claude-opus-4-7",
        max_tokens=8000,
        messages=QUESTION,
        thinking={"type": "adaptive"},
        output_config={"effort": "max"},
    )
    bodies = [api.body(i) for i in range(7)]
    assert bodies[0]["thinking"] == {"type": "enabled", "budget_tokens": 5000}
    # "high" is 16,384 tokens, at most three quarters of max_tokens: 6,000
    assert bodies[1]["thinking"] == {"type": "enabled", "budget_tokens": 6000}
    assert bodies[2]["thinking"] == {"type": "adaptive"}
    assert bodies[2]["output_config"] == {"effort": "high"}
    # 5,000 tokens on an adaptive model: the largest level it reaches, low (2,048)
    assert bodies[3]["thinking"] == {"type": "adaptive"}
    assert bodies[3]["output_config"] == {"effort": "low"}
    assert "thinking" not in bodies[4] and "thinking" not in bodies[5]
    assert bodies[6]["output_config"] == {"effort": "max"}


async def test_async_create_stream_and_helper(
    async_anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(async_anthropic_client)
    start = anthropic_usage(50, 1, read=2000, write_5m=200, write_1h=100)
    api.queue(
        json_response(anthropic_message(USAGE)),
        sse_response(anthropic_events(start, USAGE), asynchronous=True),
        sse_response(anthropic_events(start, USAGE), asynchronous=True),
    )
    async with budget(usd=1) as b:
        await client.messages.create(model=MODEL, max_tokens=16000, messages=QUESTION)
        stream = await client.messages.create(
            model=MODEL, max_tokens=16000, messages=QUESTION, stream=True
        )
        async for _ in stream:
            pass
        async with client.messages.stream(
            model=MODEL, max_tokens=16000, messages=QUESTION
        ) as helper:
            final = await helper.get_final_message()
    assert final.usage.output_tokens == 700
    assert b.spent.usd == 3 * SONNET_COST and b.reserved.is_zero()
    assert len(telemetry.spans(f"chat {MODEL}")) == 3


def test_beta_messages_and_copies_are_instrumented(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    api.queue(json_response(anthropic_message(USAGE)), json_response(anthropic_message(USAGE)))
    with budget(usd=1) as b:
        client.beta.messages.create(model=MODEL, max_tokens=16000, messages=QUESTION)
        client.with_options(timeout=30).messages.create(
            model=MODEL, max_tokens=16000, messages=QUESTION
        )
    assert b.spent.usd == 2 * SONNET_COST
    assert len(telemetry.spans(f"chat {MODEL}")) == 2


def test_count_tokens_is_not_a_generation(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    api.queue(json_response({"input_tokens": 14}))
    assert client.messages.count_tokens(model=MODEL, messages=QUESTION).input_tokens == 14
    assert not [s for s in telemetry.spans() if s.name.startswith("chat ")]


def test_one_span_with_usage_the_sdks_own_span_only_on_request(
    api: MockAPI, telemetry: Telemetry
) -> None:
    import httpx2

    def client(**options: Any) -> Any:
        return anthropic.Anthropic(
            api_key="sk-ant-test",
            http_client=httpx2.Client(transport=httpx2.MockTransport(api.handler)),
            **options,
        )

    headers = {"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
    api.queue(json_response(anthropic_message(USAGE), headers=headers))
    instrument(client()).messages.create(model=MODEL, max_tokens=1024, messages=QUESTION)
    ours = telemetry.span(f"chat {MODEL}")  # the only span: the SDK's is off
    assert attrs(ours)["anthropic.request.id"] == "req_011CSHoEeqs5C35K2UUqR7Fy"
    assert attrs(ours)["gen_ai.response.id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert attrs(ours)["server.address"] == "api.anthropic.com"
    assert attrs(ours)["server.port"] == 443
    assert attrs(ours)["gen_ai.usage.input_tokens"] == 50 + 2000 + 300

    # The opt-out keeps the SDK's span, nested under ours, with usage on ours only.
    SPANS.clear()
    api.queue(json_response(anthropic_message(USAGE), headers=headers))
    kept = instrument(client(), provider_spans=True)
    kept.messages.create(model=MODEL, max_tokens=1024, messages=QUESTION)
    ours = telemetry.span(f"chat {MODEL}")
    (sdk,) = [s for s in telemetry.spans() if s.instrumentation_scope.name != "tcc_plugin"]
    assert sdk.parent is not None and sdk.parent.span_id == ours.context.span_id
    assert attrs(sdk)["anthropic.request.id"] == "req_011CSHoEeqs5C35K2UUqR7Fy"
    assert not [k for k in attrs(sdk) if k.startswith("gen_ai.usage.")]
    assert attrs(ours)["gen_ai.usage.output_tokens"] == 700

    # A copy made with with_options() keeps the choice.
    SPANS.clear()
    api.queue(json_response(anthropic_message(USAGE)))
    instrument(client()).with_options(timeout=5).messages.create(
        model=MODEL, max_tokens=1024, messages=QUESTION
    )
    assert [s.instrumentation_scope.name for s in telemetry.spans()] == ["tcc_plugin"]


def test_a_failed_call_records_the_error_type_and_request_id(
    anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(anthropic_client)
    api.queue(
        json_response(
            anthropic_error("invalid_request_error", "max_tokens: too large"),
            status=400,
            headers={"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
        )
    )
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=1024, messages=QUESTION)
    span = telemetry.span(f"chat {MODEL}")
    assert attrs(span)["error.type"] == "BadRequestError"
    assert attrs(span)["anthropic.request.id"] == "req_011CSHoEeqs5C35K2UUqR7Fy"
    assert span.status.status_code is StatusCode.ERROR
