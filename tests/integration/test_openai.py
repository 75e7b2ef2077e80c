"""The OpenAI SDK, instrumented: exact usage and cost, budgets that rewrite the HTTP body,
streams settled however they end, errors classified for retries. Every figure is
computed by hand in the test."""

from __future__ import annotations

import asyncio
import gc
import warnings
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import tcc_plugin
from tcc_plugin import BudgetExceeded, PriceUnknown, RetryPolicy, budget
from tcc_plugin.instrument import instrument, thinking
from tcc_plugin.pricing import UnknownModelWarning

from ..conftest import Telemetry
from .conftest import (
    MockAPI,
    chat_chunks,
    chat_completion,
    chat_usage,
    completion_object,
    json_response,
    openai_error,
    response_events,
    response_object,
    responses_usage,
    sse_response,
)

openai = pytest.importorskip("openai")
oai = pytest.importorskip("tcc_plugin.integrations.openai")

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
# The input estimate of QUESTION: 3 (request) + 3 (one message) + "user" (4 bytes) +
# "What is 2+2?" (12 bytes): a byte count bounds a token count.
QUESTION_ESTIMATE = 22


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def usd(*terms: tuple[int, str]) -> Decimal:
    """Sum of tokens x USD-per-million-tokens."""
    return sum((Decimal(n) * Decimal(p) for n, p in terms), Decimal(0)) / 10**6


# o3: $2 input, $0.50 cached input, $8 output (reasoning billed as output).
def o3_cost(prompt: int, completion: int, cached: int) -> Decimal:
    return usd((prompt - cached, "2"), (cached, "0.5"), (completion, "8"))


# -- chat completions --------------------------------------------------------------------
def test_chat_usage_cost_and_span_are_exact(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    assert client is openai_client
    in_flight: list[int] = []

    def answer(request: Any) -> Any:
        in_flight.append(b.reserved.total_tokens)  # the worst case, held while in flight
        return json_response(chat_completion(chat_usage(1200, 900, cached=1024, reasoning=768)))

    api.queue(answer)
    with budget(usd="0.05", name="agent") as b:
        reply = client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=2000, temperature=1
        )

    assert reply.choices[0].message.content == "4"
    assert in_flight == [QUESTION_ESTIMATE + 2000]
    # the body went out as the caller wrote it
    assert api.body() == {
        "model": "o3",
        "messages": QUESTION,
        "max_completion_tokens": 2000,
        "temperature": 1,
    }
    cost = o3_cost(1200, 900, cached=1024)
    assert cost == Decimal("0.008064")  # (176 x 2 + 1024 x 0.5 + 900 x 8) / 1e6
    assert b.spent.usd == cost
    assert b.spent.total_tokens == 2100  # reasoning is inside the 900, not added
    assert b.spent.output_tokens == 900 and b.spent.reasoning_tokens == 768
    assert b.reserved.is_zero() and b.in_flight == 0

    span = telemetry.span("chat o3")
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "o3"
    assert a["gen_ai.request.max_tokens"] == 2000
    assert a["gen_ai.request.temperature"] == 1
    assert a["gen_ai.response.model"] == "o3-2025-04-16"
    assert a["gen_ai.response.id"] == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == 1200
    assert a["gen_ai.usage.output_tokens"] == 900
    assert a["gen_ai.usage.reasoning.output_tokens"] == 768
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1024
    # OpenAI does not report cache writes: not reported is not zero (no attribute)
    assert "gen_ai.usage.cache_creation.input_tokens" not in a
    assert a["tcc.usage.unreported"] == ("cache_write",)
    assert a["server.address"] == "api.openai.com" and a["server.port"] == 443
    assert a["tcc.cost.usd"] == pytest.approx(0.008064)
    assert a["tcc.budget.outcome"] == "ok"
    assert a["tcc.budget.name"] == "agent"
    assert a["tcc.budget.reserved.output_tokens"] == 2000
    assert "gen_ai.request.stream" not in a
    assert span.status.status_code is StatusCode.UNSET


def test_metrics_record_tokens_duration_cost_and_reasoning_exactly(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    # A response model no other test uses: the reader's points are cumulative.
    model = "o3-metrics-probe"
    client = instrument(openai_client)
    for prompt, completion, cached, reasoning in ((1200, 900, 1024, 768), (300, 50, 0, 20)):
        usage = chat_usage(prompt, completion, cached=cached, reasoning=reasoning)
        api.queue(json_response(chat_completion(usage, model=model)))
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=2000)

    def points(name: str) -> list[Any]:
        return [
            p
            for p in telemetry.metric_points(name)
            if p.attributes.get("gen_ai.response.model") == model
        ]

    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "o3",
        "gen_ai.response.model": model,
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    tokens = {p.attributes["gen_ai.token.type"]: p for p in points("gen_ai.client.token.usage")}
    assert dict(tokens["input"].attributes) == {**common, "gen_ai.token.type": "input"}
    assert (tokens["input"].count, tokens["input"].sum) == (2, 1500)
    assert (tokens["output"].count, tokens["output"].sum) == (2, 950)
    (duration,) = points("gen_ai.client.operation.duration")
    assert duration.count == 2 and dict(duration.attributes) == common
    # Sums of the calls, not a point per call: observable counters over running totals.
    (cost,) = points("tcc.client.cost")
    expected = o3_cost(1200, 900, 1024) + o3_cost(300, 50, 0)
    assert expected == Decimal("0.008064") + Decimal("0.001")
    assert cost.value == pytest.approx(float(expected), abs=1e-12)
    assert dict(cost.attributes) == common
    (reasoning,) = points("tcc.client.reasoning_tokens")
    assert reasoning.value == 788 and dict(reasoning.attributes) == common


def test_chat_n_choices_reserve_n_times_and_clamp_per_choice(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(
        json_response(
            chat_completion(
                chat_usage(30, 200, reasoning=0),
                model="gpt-4o-mini-2024-07-18",
                contents=["4", "four", "IV"],
            )
        )
    )
    with budget(output_tokens=240, policy="clamp") as b:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=QUESTION, n=3, max_completion_tokens=100
        )
    assert len(reply.choices) == 3
    # 3 x 100 > 240: each choice is clamped to 240 // 3 = 80 tokens
    assert api.body()["max_completion_tokens"] == 80 and api.body()["n"] == 3
    assert b.spent.output_tokens == 200
    a = attrs(telemetry.span("chat gpt-4o-mini"))
    assert a["gen_ai.request.choice.count"] == 3
    assert a["gen_ai.response.finish_reasons"] == ("stop", "stop", "stop")
    assert a["tcc.budget.outcome"] == "clamped"
    assert a["tcc.budget.clamped.max_tokens"] == 80
    # gpt-4o-mini: $0.15 input, $0.60 output
    assert a["tcc.cost.usd"] == pytest.approx(float(usd((30, "0.15"), (200, "0.6"))))


def test_usd_clamp_rewrites_max_completion_tokens_to_what_the_budget_pays(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(json_response(chat_completion(chat_usage(20, 1000, reasoning=900))))
    with budget(usd="0.01", policy="clamp") as b:
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=4000)
    # worst case of n output tokens: 22 input x $2 + n x $8 per million <= $0.01
    # -> n <= (10000 - 44) / 8 = 1244.5 -> 1244
    assert api.body()["max_completion_tokens"] == 1244
    assert attrs(telemetry.span("chat o3"))["tcc.budget.clamped.max_tokens"] == 1244
    assert b.spent.usd == o3_cost(20, 1000, cached=0)


def test_clamp_keeps_the_cap_field_the_caller_used_or_adds_one(
    openai_client: Any, api: MockAPI
) -> None:
    client = instrument(openai_client)
    body = chat_completion(chat_usage(20, 10), model="gpt-4o-2024-08-06")
    api.queue(json_response(body), json_response(body))
    with budget(total_tokens=1000, policy="clamp"):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_tokens=5000)
        # no cap set: gpt-4o's maximum (16,384) is the worst case, clamped to what is left:
        # 1000 - (22 + 10 settled by the first call + 22 estimated input) = 946
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    first, second = api.body(0), api.body(1)
    assert first["max_tokens"] == 1000 - QUESTION_ESTIMATE and "max_completion_tokens" not in first
    assert second["max_completion_tokens"] == 1000 - 30 - QUESTION_ESTIMATE
    assert "max_tokens" not in second


def test_worst_case_without_a_cap_is_the_models_maximum_output(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(json_response(chat_completion(chat_usage(10, 5), model="gpt-5-2025-08-07")))
    with budget(output_tokens=200_000) as b:
        client.chat.completions.create(model="gpt-5", messages=QUESTION)
    assert attrs(telemetry.span("chat gpt-5"))["tcc.budget.reserved.output_tokens"] == 128_000
    # the request set no cap: the assumed maximum is ours, not the request's
    assert attrs(telemetry.span("chat gpt-5"))["tcc.request.assumed_max_tokens"] == 128_000
    assert "gen_ai.request.max_tokens" not in attrs(telemetry.span("chat gpt-5"))
    assert b.spent.output_tokens == 5
    # in "raise" mode, a budget smaller than that maximum refuses the uncapped call
    with budget(output_tokens=100_000), pytest.raises(BudgetExceeded) as refused:
        client.chat.completions.create(model="gpt-5", messages=QUESTION)
    assert refused.value.needed == 128_000
    assert api.count == 1


def test_a_refused_call_sends_no_request(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    with budget(output_tokens=100, name="tight") as b, pytest.raises(BudgetExceeded) as exc:
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=500)
    assert api.count == 0
    assert exc.value.limit == "output_tokens" and exc.value.needed == 500
    assert b.spent.is_zero() and b.reserved.is_zero()
    span = telemetry.span("chat o3")
    assert attrs(span)["tcc.budget.outcome"] == "refused"
    assert attrs(span)["tcc.budget.limit_hit"] == "output_tokens"
    assert span.status.status_code is StatusCode.ERROR


def test_a_response_without_usage_is_flagged_and_charged_its_reservation(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(json_response(chat_completion(None)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with budget(total_tokens=10_000) as b:
            client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=300)
    assert b.spent.total_tokens == QUESTION_ESTIMATE + 300 and b.spent.output_tokens == 300
    assert attrs(telemetry.span("chat o3"))["tcc.usage.missing"] is True


def test_an_unknown_model_records_no_cost_and_cannot_spend_dollars(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(json_response(chat_completion(chat_usage(3, 4), model="house-model-x")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.chat.completions.create(model="house-model-x", messages=QUESTION, max_tokens=10)
    assert any(issubclass(w.category, UnknownModelWarning) for w in caught)
    a = attrs(telemetry.span("chat house-model-x"))
    assert "tcc.cost.usd" not in a and a["gen_ai.usage.output_tokens"] == 4
    with budget(usd=1), pytest.raises(PriceUnknown):
        client.chat.completions.create(model="house-model-x", messages=QUESTION, max_tokens=10)
    assert api.count == 1


def test_a_price_book_given_to_instrument_prices_the_calls(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    book = tcc_plugin.PriceBook(use_genai_prices=False)
    book.override("house-model-y", tcc_plugin.TokenPrice.per_million(input=1, output=3))
    client = instrument(openai_client, price_book=book)
    api.queue(json_response(chat_completion(chat_usage(1000, 2000), model="house-model-y")))
    with budget(usd=1) as b:
        client.chat.completions.create(model="house-model-y", messages=QUESTION, max_tokens=2000)
    assert b.spent.usd == Decimal("0.007")  # 1000 x $1 + 2000 x $3 per million


# -- streams -----------------------------------------------------------------------------
def test_stream_asks_for_usage_and_hides_the_extra_chunk(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    usage = chat_usage(1200, 900, cached=1024, reasoning=768)
    api.queue(sse_response(chat_chunks(["2 + 2", " = 4"], usage)))
    with budget(usd=1) as b:
        stream = client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=2000, stream=True
        )
        chunks = list(stream)
    assert api.body()["stream_options"] == {"include_usage": True}
    # role, two deltas, finish: the usage-only chunk the caller did not ask for is hidden
    assert len(chunks) == 4
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "2 + 2 = 4"
    assert b.spent.usd == o3_cost(1200, 900, cached=1024)
    assert b.spent.reasoning_tokens == 768 and b.reserved.is_zero()
    a = attrs(telemetry.span("chat o3"))
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.usage.reasoning.output_tokens"] == 768
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.time_to_first_chunk"] > 0


def test_stream_keeps_the_usage_chunk_when_the_caller_asked_for_it(
    openai_client: Any, api: MockAPI
) -> None:
    client = instrument(openai_client)
    api.queue(sse_response(chat_chunks(["4"], chat_usage(10, 5))))
    with budget(total_tokens=10_000) as b:
        with client.chat.completions.create(
            model="o3",
            messages=QUESTION,
            max_completion_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        ) as stream:
            chunks = list(stream)
        assert stream.response.status_code == 200  # the SDK stream's attributes pass through
    assert api.body()["stream_options"] == {"include_usage": True}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert b.spent.total_tokens == 15


def test_stream_with_n_choices(openai_client: Any, api: MockAPI, telemetry: Telemetry) -> None:
    client = instrument(openai_client)
    api.queue(sse_response(chat_chunks(["4"], chat_usage(10, 6), n=2)))
    with budget(output_tokens=1000) as b:
        chunks = list(
            client.chat.completions.create(
                model="o3", messages=QUESTION, n=2, max_completion_tokens=100, stream=True
            )
        )
    assert {c.choices[0].index for c in chunks} == {0, 1}
    assert b.spent.output_tokens == 6
    a = attrs(telemetry.span("chat o3"))
    assert a["tcc.budget.reserved.output_tokens"] == 200
    assert a["gen_ai.response.finish_reasons"] == ("stop", "stop")


def test_stream_closed_half_read_settles_its_reservation(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(sse_response(chat_chunks(["2", "+", "2"], chat_usage(10, 5))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with budget(output_tokens=10_000) as b:
            stream = client.chat.completions.create(
                model="o3", messages=QUESTION, max_completion_tokens=500, stream=True
            )
            next(stream)
            assert b.reserved.output_tokens == 500
            stream.close()
    assert b.reserved.is_zero() and b.in_flight == 0
    assert b.spent.output_tokens == 500  # no usage was read: the worst case is charged
    a = attrs(telemetry.span("chat o3"))
    assert a["tcc.stream.abandoned"] is True and a["tcc.usage.missing"] is True
    assert stream.response.is_closed


def test_stream_dropped_half_read_settles_when_collected(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(sse_response(chat_chunks(["2", "+", "2"], chat_usage(10, 5))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with budget(output_tokens=10_000) as b:
            stream = client.chat.completions.create(
                model="o3", messages=QUESTION, max_completion_tokens=500, stream=True
            )
            for _ in stream:
                break
            del stream
            gc.collect()
            assert b.in_flight == 0
    assert b.spent.output_tokens == 500
    assert attrs(telemetry.span("chat o3"))["tcc.stream.abandoned"] is True


def test_stream_that_breaks_mid_way_fails_the_call(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(sse_response(chat_chunks(["2", "+", "2"], chat_usage(10, 5)), fail_after=2))
    with budget(calls=5, output_tokens=10_000) as b:
        stream = client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=500, stream=True
        )
        with pytest.raises(openai.APIConnectionError):
            list(stream)
    # Chunks arrived but the usage chunk did not: the reservation is charged.
    assert b.reserved.is_zero() and b.spent.calls == 1 and b.spent.output_tokens == 500
    span = telemetry.span("chat o3")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "APIConnectionError"


def test_the_sdk_stream_helper_goes_through_the_lifecycle(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(
        sse_response(
            chat_chunks(["2 + 2", " = 4"], chat_usage(1200, 900, cached=1024, reasoning=768))
        )
    )
    with (
        budget(usd=1) as b,
        client.chat.completions.stream(
            model="o3", messages=QUESTION, max_completion_tokens=2000
        ) as stream,
    ):
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "2 + 2 = 4"
    assert b.spent.usd == o3_cost(1200, 900, cached=1024)
    assert api.body()["stream_options"] == {"include_usage": True}
    assert telemetry.span("chat o3").attributes["gen_ai.usage.output_tokens"] == 900  # type: ignore[index]


def test_parse_is_instrumented(openai_client: Any, api: MockAPI, telemetry: Telemetry) -> None:
    client = instrument(openai_client)
    body = chat_completion(chat_usage(40, 8), model="gpt-4o-2024-08-06")
    body["choices"][0]["message"]["content"] = '{"answer": 4}'
    api.queue(json_response(body))
    with budget(output_tokens=1000) as b:
        parsed = client.chat.completions.parse(
            model="gpt-4o",
            messages=QUESTION,
            max_completion_tokens=100,
            response_format={"type": "json_object"},
        )
    assert parsed.choices[0].message.content == '{"answer": 4}'
    assert b.spent.output_tokens == 8
    assert telemetry.span("chat gpt-4o")


# -- the Responses API -------------------------------------------------------------------
# gpt-5: $1.25 input, $0.125 cached input, $10 output
def gpt5_cost(inp: int, out: int, cached: int) -> Decimal:
    return usd((inp - cached, "1.25"), (cached, "0.125"), (out, "10"))


def test_responses_usage_and_reasoning_effort_from_the_thinking_budget(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client, thinking="low")
    api.queue(json_response(response_object(responses_usage(500, 300, cached=100, reasoning=256))))
    with budget(usd=5) as b:
        reply = client.responses.create(
            model="gpt-5",
            input="What is 2+2?",
            instructions="Answer briefly.",
            max_output_tokens=1000,
            reasoning={"summary": "auto"},
        )
    assert reply.output_text == "4"
    assert api.body()["reasoning"] == {"summary": "auto", "effort": "low"}
    cost = gpt5_cost(500, 300, cached=100)
    assert cost == Decimal("0.0035125")
    assert b.spent.usd == cost and b.spent.reasoning_tokens == 256
    a = attrs(telemetry.span("chat gpt-5"))
    assert a["gen_ai.usage.input_tokens"] == 500
    assert a["gen_ai.usage.cache_read.input_tokens"] == 100
    assert a["gen_ai.usage.reasoning.output_tokens"] == 256
    assert a["gen_ai.response.finish_reasons"] == ("completed",)
    assert a["gen_ai.request.max_tokens"] == 1000
    assert a["tcc.request.reasoning.effort"] == "low"


def test_responses_stream_reads_usage_from_response_completed(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(sse_response(response_events(responses_usage(500, 300, cached=100, reasoning=256))))
    with budget(usd=5) as b:
        events = list(
            client.responses.create(
                model="gpt-5", input="What is 2+2?", max_output_tokens=1000, stream=True
            )
        )
    assert [e.type for e in events][-1] == "response.completed"
    assert "stream_options" not in api.body()
    assert b.spent.usd == gpt5_cost(500, 300, cached=100)
    assert attrs(telemetry.span("chat gpt-5"))["gen_ai.response.id"].startswith("resp_")


def test_responses_stream_helper(openai_client: Any, api: MockAPI) -> None:
    client = instrument(openai_client)
    api.queue(sse_response(response_events(responses_usage(50, 30, reasoning=20))))
    with (
        budget(output_tokens=1000) as b,
        client.responses.stream(
            model="gpt-5", input="What is 2+2?", max_output_tokens=100
        ) as stream,
    ):
        final = stream.get_final_response()
    assert final.usage is not None and final.usage.output_tokens == 30
    assert b.spent.output_tokens == 30 and b.spent.reasoning_tokens == 20


def test_responses_clamp_below_the_apis_minimum_is_refused(
    openai_client: Any, api: MockAPI
) -> None:
    client = instrument(openai_client)
    with budget(output_tokens=10, policy="clamp"), pytest.raises(BudgetExceeded):
        client.responses.create(model="gpt-5", input="hi", max_output_tokens=100)
    assert api.count == 0  # the Responses API rejects max_output_tokens below 16


def test_responses_without_a_cap_reserve_the_models_maximum(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(json_response(response_object(responses_usage(5, 5))))
    with budget(output_tokens=300, policy="clamp"):
        client.responses.create(model="gpt-5", input="hi")
    assert api.body()["max_output_tokens"] == 300
    # the request set no cap: the assumed maximum is ours, not the request's
    assert attrs(telemetry.span("chat gpt-5"))["tcc.request.assumed_max_tokens"] == 128_000
    assert "gen_ai.request.max_tokens" not in attrs(telemetry.span("chat gpt-5"))


# -- legacy completions ------------------------------------------------------------------
def test_legacy_completions_reserve_best_of_and_the_default_cap(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(
        json_response(completion_object(chat_usage(5, 100), n=2)),
        json_response(completion_object(chat_usage(5, 16))),
    )
    with budget(output_tokens=1000) as b:
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Say this is a test",
            n=2,
            best_of=3,
            max_tokens=50,
        )
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    first, second = telemetry.spans("text_completion gpt-3.5-turbo-instruct")
    assert attrs(first)["tcc.budget.reserved.output_tokens"] == 150  # best_of 3 x 50
    assert attrs(first)["gen_ai.operation.name"] == "text_completion"
    assert attrs(first)["gen_ai.response.finish_reasons"] == ("length", "length")
    # gpt-3.5-turbo-instruct: $1.50 input, $2 output
    assert attrs(first)["tcc.cost.usd"] == pytest.approx(float(usd((5, "1.5"), (100, "2"))))
    assert attrs(second)["tcc.budget.reserved.output_tokens"] == 16  # the API's default max_tokens
    assert b.spent.output_tokens == 116


def test_legacy_completion_stream(openai_client: Any, api: MockAPI) -> None:
    base = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "gpt-3.5-turbo-instruct",
    }
    events: list[tuple[str | None, Any]] = [
        (
            None,
            {
                **base,
                "choices": [{"text": "This", "index": 0, "logprobs": None, "finish_reason": None}],
            },
        ),
        (
            None,
            {
                **base,
                "choices": [
                    {"text": " is", "index": 0, "logprobs": None, "finish_reason": "length"}
                ],
            },
        ),
        (None, {**base, "choices": [], "usage": chat_usage(5, 2)}),
        (None, "[DONE]"),
    ]
    client = instrument(openai_client)
    api.queue(sse_response(events))
    with budget(total_tokens=1000) as b:
        chunks = list(
            client.completions.create(
                model="gpt-3.5-turbo-instruct", prompt="Say", max_tokens=2, stream=True
            )
        )
    assert [c.choices[0].text for c in chunks] == ["This", " is"]
    assert api.body()["stream_options"] == {"include_usage": True}
    assert b.spent.total_tokens == 7


# -- thinking ----------------------------------------------------------------------------
def test_thinking_budget_maps_to_reasoning_effort_on_reasoning_models_only(
    openai_client: Any, api: MockAPI
) -> None:
    client = instrument(openai_client, thinking=9000)  # >= medium's 8192 tokens
    for _ in range(5):
        api.queue(json_response(chat_completion(chat_usage(10, 5))))
    client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    client.chat.completions.create(model="gpt-4o", messages=QUESTION, max_completion_tokens=10)
    client.chat.completions.create(
        model="o3", messages=QUESTION, max_completion_tokens=10, reasoning_effort="minimal"
    )
    with thinking("high"):
        client.chat.completions.create(model="o4-mini", messages=QUESTION, max_completion_tokens=10)
    with thinking(None):
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    efforts = [api.body(i).get("reasoning_effort") for i in range(5)]
    assert efforts == ["medium", None, "minimal", "high", None]


def test_an_invalid_thinking_budget_is_a_value_error(openai_client: Any) -> None:
    with pytest.raises(ValueError, match="thinking budget"):
        instrument(openai_client, thinking="extreme")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        thinking(-1).__enter__()


# -- errors and retries ------------------------------------------------------------------
def test_rate_limit_error_is_classified_with_its_retry_after(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client.with_options(max_retries=0))
    api.queue(
        json_response(
            openai_error(429, "Rate limit reached for o3", "requests", "rate_limit_exceeded"),
            429,
            {"retry-after-ms": "1500", "x-request-id": "req_1"},
        )
    )
    with budget(calls=3, output_tokens=1000) as b, pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=100)
    info = oai.classify_error(exc.value)
    assert (info.retryable, info.reason, info.status, info.retry_after) == (
        True,
        "rate_limit",
        429,
        1.5,
    )
    assert b.spent.calls == 1 and b.spent.output_tokens == 0 and b.reserved.is_zero()
    span = telemetry.span("chat o3")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "RateLimitError"


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (
            429,
            {"retry-after": "7"},
            openai_error(429, "quota", "insufficient_quota", "insufficient_quota"),
            (False, "rate_limit", None),
        ),
        (500, {}, openai_error(500, "oops", "server_error"), (True, "server", None)),
        (
            503,
            {"x-should-retry": "false"},
            openai_error(503, "down", "server_error"),
            (False, "server", None),
        ),
        (408, {}, openai_error(408, "timeout", "timeout"), (True, "request_timeout", None)),
        (409, {"retry-after": "2"}, openai_error(409, "lock", "conflict"), (True, "conflict", 2.0)),
        (
            400,
            {"x-should-retry": "true"},
            openai_error(400, "bad", "invalid_request_error"),
            (True, "client", None),
        ),
        (
            401,
            {},
            openai_error(401, "key", "invalid_request_error", "invalid_api_key"),
            (False, "client", None),
        ),
    ],
)
def test_status_errors_are_classified(
    openai_client: Any,
    api: MockAPI,
    status: int,
    headers: dict[str, str],
    body: Any,
    expected: tuple[Any, ...],
) -> None:
    client = instrument(openai_client.with_options(max_retries=0))
    api.queue(json_response(body, status, headers))
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    info = oai.classify_error(exc.value)
    assert (info.retryable, info.reason, info.retry_after) == expected
    assert info.status == status


def test_timeouts_and_connection_errors_are_retryable(openai_client: Any, api: MockAPI) -> None:
    import httpx2

    client = instrument(openai_client.with_options(max_retries=0))

    def timeout(request: Any) -> Any:
        raise httpx2.ReadTimeout("slow", request=request)

    def reset(request: Any) -> Any:
        raise httpx2.ConnectError("refused", request=request)

    api.queue(timeout, reset)
    with pytest.raises(openai.APITimeoutError) as slow:
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    with pytest.raises(openai.APIConnectionError) as refused:
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    assert oai.classify_error(slow.value).reason == "timeout"
    assert oai.classify_error(refused.value).reason == "connection"
    assert oai.classify_error(ValueError("not the SDK's")) is None


def test_our_retry_policy_turns_the_sdks_retries_off(
    openai_client: Any, api: MockAPI, telemetry: Telemetry, no_sleep: Any
) -> None:
    assert openai_client.max_retries == 2  # the SDK would retry a 429 twice on its own
    client = instrument(openai_client, retry=RetryPolicy(max_attempts=3, sleep=no_sleep))
    api.queue(
        json_response(
            openai_error(429, "slow down", "requests", "rate_limit_exceeded"),
            429,
            {"retry-after-ms": "200"},
        ),
        json_response(chat_completion(chat_usage(10, 5))),
    )
    with budget(calls=1) as b:
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    assert api.count == 2  # one HTTP request per attempt: the SDK did not retry
    assert [r.headers["x-stainless-retry-count"] for r in api.requests] == ["0", "0"]
    assert no_sleep.waits == [0.2]  # retry-after-ms honoured
    assert b.spent.calls == 1 and b.spent.output_tokens == 5
    assert attrs(telemetry.span("chat o3"))["tcc.retry.attempts"] == 2


# -- the client ----------------------------------------------------------------------------
def test_copies_made_with_with_options_are_instrumented(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(json_response(chat_completion(chat_usage(10, 5))))
    with budget(output_tokens=100) as b:
        client.with_options(timeout=5).chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=10
        )
    assert b.spent.output_tokens == 5
    assert len(telemetry.spans("chat o3")) == 1


def test_resources_created_before_instrumenting_are_covered(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    completions = openai_client.chat.completions  # taken before instrument()
    raw = openai_client.chat.completions.with_raw_response
    instrument(openai_client)
    api.queue(
        json_response(chat_completion(chat_usage(10, 5))),
        json_response(chat_completion(chat_usage(10, 6))),
    )
    with budget(output_tokens=100) as b:
        completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
        response = raw.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    assert response.headers["content-type"] == "application/json"
    assert response.parse().usage.completion_tokens == 6
    assert b.spent.output_tokens == 11  # the raw response's usage is read too
    assert len(telemetry.spans("chat o3")) == 2


def test_uninstrument_and_other_endpoints_pass_through(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    embedding = {"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093]}
    api.queue(
        json_response(
            {
                "object": "list",
                "data": [embedding],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
        )
    )
    client.embeddings.create(model="text-embedding-3-small", input="hi", encoding_format="float")
    assert telemetry.spans() == []  # not an LLM generation endpoint
    oai.uninstrument(client)
    api.queue(json_response(chat_completion(chat_usage(10, 5))))
    with budget(output_tokens=1) as b:  # would refuse if instrumented
        client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    assert b.spent.is_zero() and telemetry.spans() == []


def test_instrument_is_idempotent_and_dispatches_by_type(
    openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(instrument(openai_client))
    api.queue(json_response(chat_completion(chat_usage(10, 5))))
    client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    assert len(telemetry.spans("chat o3")) == 1
    with pytest.raises(TypeError, match=r"openai\.OpenAI"):
        instrument(object())


def test_content_is_captured_only_on_opt_in(
    openai_client: Any, api: MockAPI, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = instrument(openai_client)
    api.queue(
        json_response(chat_completion(chat_usage(10, 5))),
        json_response(chat_completion(chat_usage(10, 5))),
    )
    client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    client.chat.completions.create(model="o3", messages=QUESTION, max_completion_tokens=10)
    first, second = telemetry.spans("chat o3")
    assert "gen_ai.input.messages" not in attrs(first) and "2+2" not in str(attrs(first))
    assert "What is 2+2?" in attrs(second)["gen_ai.input.messages"]
    assert '"content": "4"' in attrs(second)["gen_ai.output.messages"]


# -- async ---------------------------------------------------------------------------------
async def test_async_chat_and_stream(
    async_openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(async_openai_client)
    api.queue(
        json_response(chat_completion(chat_usage(1200, 900, cached=1024, reasoning=768))),
        sse_response(chat_chunks(["4"], chat_usage(10, 5)), asynchronous=True),
    )
    async with budget(usd=1) as b:
        reply = await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=2000
        )
        stream = await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=50, stream=True
        )
        chunks = [c async for c in stream]
    assert reply.usage.completion_tokens == 900
    assert all(c.choices for c in chunks) and len(chunks) == 3
    assert b.spent.usd == o3_cost(1200, 900, cached=1024) + o3_cost(10, 5, cached=0)
    assert b.reserved.is_zero()
    assert len(telemetry.spans("chat o3")) == 2


async def test_async_calls_share_a_budget_under_concurrency(
    async_openai_client: Any, api: MockAPI
) -> None:
    client = instrument(async_openai_client)
    for _ in range(3):
        api.queue(json_response(chat_completion(chat_usage(10, 40))))
    async with budget(output_tokens=250) as b:
        # three 100-token worst cases do not fit 250 together: the third is refused
        results = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model="o3", messages=QUESTION, max_completion_tokens=100
                )
                for _ in range(3)
            ),
            return_exceptions=True,
        )
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(refused) == 1 and api.count == 2
    assert b.spent.output_tokens == 80 and b.reserved.is_zero()


async def test_async_stream_closed_early_and_stream_helper(
    async_openai_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    client = instrument(async_openai_client)
    api.queue(
        sse_response(chat_chunks(["2", "+", "2"], chat_usage(10, 5)), asynchronous=True),
        sse_response(chat_chunks(["4"], chat_usage(10, 5)), asynchronous=True),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        async with budget(output_tokens=10_000) as b:
            stream = await client.chat.completions.create(
                model="o3", messages=QUESTION, max_completion_tokens=500, stream=True
            )
            await stream.__anext__()
            await stream.close()
            assert b.in_flight == 0 and b.spent.output_tokens == 500
            async with client.chat.completions.stream(
                model="o3", messages=QUESTION, max_completion_tokens=50
            ) as helper:
                final = await helper.get_final_completion()
    assert final.choices[0].message.content == "4"
    assert b.spent.output_tokens == 505 and b.reserved.is_zero()


async def test_async_responses(async_openai_client: Any, api: MockAPI) -> None:
    client = instrument(async_openai_client)
    api.queue(
        json_response(response_object(responses_usage(500, 300, cached=100, reasoning=256))),
        sse_response(response_events(responses_usage(50, 30)), asynchronous=True),
    )
    async with budget(usd=5) as b:
        await client.responses.create(model="gpt-5", input="hi", max_output_tokens=1000)
        async for _ in await client.responses.create(
            model="gpt-5", input="hi", max_output_tokens=100, stream=True
        ):
            pass
    assert b.spent.usd == gpt5_cost(500, 300, cached=100) + gpt5_cost(50, 30, cached=0)
