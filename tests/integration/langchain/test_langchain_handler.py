"""TCCCallbackHandler on real ChatOpenAI and ChatAnthropic: usage, cost, refusals before
any HTTP request, invoke / batch / async / stream, and spans under the caller's span.
Every figure is computed by hand."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import tcc_plugin
from tcc_plugin import BudgetExceeded, PriceUnknown, budget
from tcc_plugin.integrations.langchain import TCCCallbackHandler, use_handler

from ...conftest import Telemetry
from ..conftest import (
    MockAPI,
    anthropic_events,
    anthropic_message,
    anthropic_usage,
    chat_chunks,
    chat_completion,
    chat_usage,
    completion_object,
    json_response,
    openai_error,
    sse_response,
)
from .conftest import haiku_cost, make_anthropic, make_openai, o3_cost


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def handler_config(handler: TCCCallbackHandler | None = None) -> dict[str, Any]:
    return {"callbacks": [handler or TCCCallbackHandler()]}


# -- usage and cost ----------------------------------------------------------------------
def test_openai_reasoning_and_cache_tokens_priced_once(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    openai_api.queue(
        json_response(chat_completion(chat_usage(1200, 700, cached=1000, reasoning=640)))
    )
    model = make_openai(openai_api)
    with budget(usd="0.10", name="agent") as b:
        reply = model.invoke("What is 2+2?", config=handler_config())
    assert reply.content == "4"

    cost = o3_cost(1200, 700, cached=1000)
    assert cost == Decimal("0.0065")  # (200 x $2 + 1000 x $0.50 + 700 x $8) / 1M
    assert b.spent.usd == cost
    assert (b.spent.total_tokens, b.spent.output_tokens, b.spent.reasoning_tokens) == (
        1900,
        700,
        640,
    )
    assert b.spent.calls == 1 and b.reserved.is_zero() and b.in_flight == 0
    span = telemetry.span("chat o3")
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "o3"
    assert a["gen_ai.request.max_tokens"] == 1000
    assert a["gen_ai.response.model"] == "o3-2025-04-16"
    assert a["gen_ai.response.id"] == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == 1200
    assert a["gen_ai.usage.output_tokens"] == 700
    assert a["gen_ai.usage.reasoning.output_tokens"] == 640
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert a["tcc.cost.usd"] == pytest.approx(float(cost))
    assert a["tcc.budget.outcome"] == "ok"
    assert a["tcc.budget.name"] == "agent"
    assert a["tcc.budget.reserved.output_tokens"] == 1000
    assert a["tcc.langchain.run_id"]
    assert span.status.status_code is StatusCode.UNSET
    assert openai_api.body()["max_completion_tokens"] == 1000


def test_anthropic_cache_and_thinking_tokens_not_double_counted(
    telemetry: Telemetry, anthropic_api: MockAPI
) -> None:
    usage = anthropic_usage(20, 300, read=4000, write_5m=100, write_1h=200, thinking=250)
    anthropic_api.queue(json_response(anthropic_message(usage, model="claude-haiku-4-5-20251001")))
    model = make_anthropic(
        anthropic_api, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    with budget(total_tokens=100_000) as b:
        reply = model.invoke([HumanMessage("What is 2+2?")], config=handler_config())
    # langchain-anthropic folds the cache reads and writes into input_tokens already.
    assert reply.usage_metadata["input_tokens"] == 20 + 4000 + 100 + 200
    a = attrs(telemetry.span("chat claude-haiku-4-5"))
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.max_tokens"] == 2048
    assert a["gen_ai.usage.input_tokens"] == 4320
    assert a["gen_ai.usage.cache_read.input_tokens"] == 4000
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 300
    assert a["tcc.usage.cache_creation_1h.input_tokens"] == 200
    assert a["gen_ai.usage.output_tokens"] == 300
    assert a["gen_ai.usage.reasoning.output_tokens"] == 250
    cost = haiku_cost(20, 300, read=4000, write_5m=100, write_1h=200)
    assert cost == Decimal("0.002445")  # (20 + 400 + 125 + 400 + 1500) / 1M
    assert a["tcc.cost.usd"] == pytest.approx(float(cost))
    assert b.spent.total_tokens == 4620 and b.spent.reasoning_tokens == 250
    assert anthropic_api.body()["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_openai_n_choices_counted_once(telemetry: Telemetry, openai_api: MockAPI) -> None:
    body = chat_completion(chat_usage(50, 90, reasoning=60), contents=("4", "four", "4"))
    openai_api.queue(json_response(body))
    model = make_openai(openai_api, n=3, max_tokens=100)
    with budget(output_tokens=300) as b:  # 3 choices x 100 fit exactly
        result = model.generate([[HumanMessage("2+2?")]], callbacks=[TCCCallbackHandler()])
    assert len(result.generations[0]) == 3
    assert b.spent.output_tokens == 90 and b.spent.total_tokens == 140
    a = attrs(telemetry.span("chat o3"))
    assert a["gen_ai.request.choice.count"] == 3
    assert a["gen_ai.response.finish_reasons"] == ("stop", "stop", "stop")
    assert a["gen_ai.usage.output_tokens"] == 90
    assert a["tcc.cost.usd"] == pytest.approx(float(o3_cost(50, 90)))


def test_legacy_completions_llm(telemetry: Telemetry, openai_api: MockAPI) -> None:
    import httpx2
    from langchain_openai import OpenAI

    openai_api.queue(json_response(completion_object(chat_usage(12, 30))))
    llm = OpenAI(
        model="gpt-3.5-turbo-instruct",
        api_key="sk-test",
        max_tokens=64,
        http_client=httpx2.Client(transport=httpx2.MockTransport(openai_api.handler)),
    )
    with budget(calls=1) as b:
        text = llm.invoke("Say this is a test", config=handler_config())
    assert "This is test 0" in text
    span = telemetry.span("text_completion gpt-3.5-turbo-instruct")
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "text_completion"
    assert a["gen_ai.request.max_tokens"] == 64
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 30)
    assert b.spent.total_tokens == 42 and b.spent.calls == 1


# -- refusals before any HTTP request ------------------------------------------------------
def test_refused_before_any_http_request(telemetry: Telemetry, openai_api: MockAPI) -> None:
    model = make_openai(openai_api, max_tokens=500)
    with budget(output_tokens=499, name="tight") as b, pytest.raises(BudgetExceeded) as refused:
        model.invoke("2+2?", config=handler_config())
    assert openai_api.count == 0
    assert (refused.value.limit, refused.value.needed, refused.value.budget_name) == (
        "output_tokens",
        500,
        "tight",
    )
    assert b.spent.is_zero() and b.in_flight == 0
    span = telemetry.span("chat o3")
    assert attrs(span)["tcc.budget.outcome"] == "refused"
    assert attrs(span)["tcc.budget.limit_hit"] == "output_tokens"
    assert span.status.status_code is StatusCode.ERROR


def test_clamp_policy_refuses_since_a_callback_cannot_shrink_the_request(
    openai_api: MockAPI,
) -> None:
    model = make_openai(openai_api, max_tokens=500)
    with budget(output_tokens=200, policy="clamp"), pytest.raises(BudgetExceeded):
        model.invoke("2+2?", config=handler_config())
    assert openai_api.count == 0


def test_unknown_price_under_a_usd_cap_is_refused(openai_api: MockAPI) -> None:
    model = make_openai(openai_api, model="in-house-model-7")
    with budget(usd=1), pytest.raises(PriceUnknown):
        model.invoke("2+2?", config=handler_config())
    assert openai_api.count == 0


def test_without_an_output_cap_calls_are_exact_and_tokens_checked_after(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    openai_api.queue(json_response(chat_completion(chat_usage(10, 600))))
    model = make_openai(openai_api, max_tokens=None)
    with budget(output_tokens=500) as b:
        model.invoke("2+2?", config=handler_config())  # nothing to reserve: it runs
        assert b.spent.output_tokens == 600  # and is charged what it used
        with pytest.raises(BudgetExceeded):
            model.invoke("2+2?", config=handler_config())  # the cap is spent: refused
    assert openai_api.count == 1
    assert "gen_ai.request.max_tokens" not in attrs(telemetry.spans("chat o3")[0])
    # With a default worst case, the first call is reserved and refused up front.
    handler = TCCCallbackHandler(default_max_output_tokens=4096)
    with budget(output_tokens=500), pytest.raises(BudgetExceeded):
        model.invoke("2+2?", config=handler_config(handler))
    assert openai_api.count == 1


def test_a_refused_message_list_releases_the_ones_before_it(openai_api: MockAPI) -> None:
    model = make_openai(openai_api, max_tokens=100)
    with budget(calls=1) as b, pytest.raises(BudgetExceeded):
        model.generate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[TCCCallbackHandler()])
    assert openai_api.count == 0
    assert b.in_flight == 0 and b.reserved.is_zero()


def test_handler_budget_argument_charges_that_budget_too(openai_api: MockAPI) -> None:
    openai_api.queue(json_response(chat_completion(chat_usage(10, 20))))
    model_budget = tcc_plugin.Budget(calls=1)
    model = make_openai(openai_api, callbacks=[TCCCallbackHandler(budget=model_budget)])
    with budget(calls=10) as outer:
        model.invoke("2+2?")
        with pytest.raises(BudgetExceeded) as refused:
            model.invoke("2+2?")
    assert refused.value.limit == "calls"
    assert model_budget.spent.calls == 1 and outer.spent.calls == 1
    assert openai_api.count == 1


# -- errors, cancellation ------------------------------------------------------------------
def test_provider_error_settles_and_marks_span(telemetry: Telemetry, openai_api: MockAPI) -> None:
    openai_api.queue(
        json_response(openai_error(400, "bad request", "invalid_request_error"), status=400)
    )
    model = make_openai(openai_api)
    with budget(calls=5, output_tokens=5000) as b, pytest.raises(Exception) as raised:
        model.invoke("2+2?", config=handler_config())
    import openai

    assert isinstance(raised.value, openai.BadRequestError)
    assert b.spent.calls == 1 and b.spent.output_tokens == 0 and b.reserved.is_zero()
    span = telemetry.span("chat o3")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == type(raised.value).__qualname__


async def test_cancelled_async_call_releases_its_reservation(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    arrived = asyncio.Event()

    async def slow(request: Any) -> Any:
        arrived.set()
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    openai_api.queue(slow)
    model = make_openai(openai_api)
    with budget(output_tokens=5000) as b:
        # BaseChatModel.agenerate reports no error for a cancelled call: the handler
        # ends it when the task it began in is cancelled.
        task = asyncio.ensure_future(model.ainvoke("2+2?", config=handler_config()))
        await arrived.wait()
        assert b.in_flight == 1 and b.reserved.output_tokens == 1000
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # released, and charged an honest estimate (its reservation: max_tokens=1000)
    assert b.in_flight == 0 and b.reserved.is_zero() and b.spent.output_tokens == 1000
    span = telemetry.span("chat o3")
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["tcc.usage.estimated"] is True


# -- concurrency: batch (threads) and asyncio ------------------------------------------------
def test_batch_threads_share_the_budget_and_nest_under_the_caller_span(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    def answer(request: Any) -> Any:
        # Hold every answer until the two calls that cannot fit were refused: all five
        # are in flight together, and the cap holds with nothing settled yet.
        deadline = time.monotonic() + 10
        while len(refusals()) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        return json_response(chat_completion(chat_usage(10, 100)))

    def refusals() -> list[ReadableSpan]:
        return [s for s in telemetry.spans() if attrs(s).get("tcc.budget.outcome") == "refused"]

    openai_api.queue(answer, answer, answer)
    model = make_openai(openai_api, max_tokens=200)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("agent") as agent, budget(output_tokens=600) as b:
        # 5 calls of worst case 200 each: 3 fit at once, and none can slip past the cap
        # while the first ones are in flight.
        results = model.batch(
            ["a", "b", "c", "d", "e"],
            config={"callbacks": [TCCCallbackHandler()], "max_concurrency": 5},
            return_exceptions=True,
        )
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(refused) == 2 and openai_api.count == 3
    assert b.spent.output_tokens == 300 and b.spent.calls == 3 and b.in_flight == 0
    spans = telemetry.spans("chat o3")
    assert len(spans) == 5
    for span in spans:
        assert span.parent is not None and span.parent.span_id == agent.get_span_context().span_id
        assert span.context.trace_id == agent.get_span_context().trace_id
    outcomes = sorted(attrs(s)["tcc.budget.outcome"] for s in spans)
    assert outcomes == ["ok", "ok", "ok", "refused", "refused"]


async def test_async_gather_holds_a_call_cap(telemetry: Telemetry, openai_api: MockAPI) -> None:
    gate = asyncio.Event()
    all_in = asyncio.Event()

    async def answer(request: Any) -> Any:
        if openai_api.count == 3:
            all_in.set()
        await gate.wait()
        return json_response(chat_completion(chat_usage(10, 20)))

    openai_api.queue(answer, answer, answer)
    model = make_openai(openai_api)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("agent") as agent, budget(calls=3) as b:
        tasks = [asyncio.ensure_future(model.ainvoke(q, config=handler_config())) for q in "abcde"]
        await all_in.wait()  # three calls in flight, two refused: the cap held
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 2
    assert openai_api.count == 3 and b.spent.calls == 3
    for span in telemetry.spans("chat o3"):
        assert span.parent is not None and span.parent.span_id == agent.get_span_context().span_id


def test_two_handlers_on_one_run_count_it_once(openai_api: MockAPI) -> None:
    openai_api.queue(json_response(chat_completion(chat_usage(10, 20))))
    model = make_openai(openai_api, callbacks=[TCCCallbackHandler()])
    with budget(calls=5) as b:
        model.invoke("2+2?", config=handler_config())
    assert b.spent.calls == 1 and b.spent.total_tokens == 30


def test_use_handler_attaches_to_every_call_of_a_block(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    openai_api.queue(*[json_response(chat_completion(chat_usage(10, 20))) for _ in range(3)])
    model = make_openai(openai_api)
    with use_handler(), budget(calls=3) as b:
        model.invoke("a")
        model.batch(["b", "c"])
    assert b.spent.calls == 3 and len(telemetry.spans("chat o3")) == 3
    openai_api.queue(json_response(chat_completion(chat_usage(10, 20))))
    model.invoke("outside")  # no handler any more: not traced
    assert len(telemetry.spans("chat o3")) == 3


# -- streams -------------------------------------------------------------------------------
def test_openai_stream_usage(telemetry: Telemetry, openai_api: MockAPI) -> None:
    openai_api.queue(
        sse_response(chat_chunks(["2", "+2", " is 4"], chat_usage(30, 90, reasoning=80)))
    )
    model = make_openai(openai_api, stream_usage=True)
    with budget(usd="0.01") as b:
        chunks = list(model.stream("2+2?", config=handler_config()))
    assert "".join(str(c.content) for c in chunks) == "2+2 is 4"
    assert openai_api.body()["stream_options"] == {"include_usage": True}
    assert b.spent.usd == o3_cost(30, 90) and b.spent.reasoning_tokens == 80
    a = attrs(telemetry.span("chat o3"))
    assert a["gen_ai.usage.output_tokens"] == 90
    assert a["gen_ai.usage.reasoning.output_tokens"] == 80
    assert a["gen_ai.response.time_to_first_chunk"] >= 0
    assert a["gen_ai.response.finish_reasons"] == ("stop",)


async def test_openai_astream_usage(telemetry: Telemetry, openai_api: MockAPI) -> None:
    openai_api.queue(
        sse_response(chat_chunks(["4"], chat_usage(30, 90, reasoning=80)), asynchronous=True)
    )
    model = make_openai(openai_api, stream_usage=True)
    with budget(usd="0.01") as b:
        chunks = [c async for c in model.astream("2+2?", config=handler_config())]
    assert "".join(str(c.content) for c in chunks) == "4"
    assert b.spent.usd == o3_cost(30, 90) and b.spent.total_tokens == 120


def test_anthropic_stream_usage_merged_once(telemetry: Telemetry, anthropic_api: MockAPI) -> None:
    start = anthropic_usage(20, 1, read=4000, write_5m=100)
    final = anthropic_usage(20, 180, read=4000, write_5m=100, thinking=120)
    anthropic_api.queue(
        sse_response(anthropic_events(start, final, model="claude-haiku-4-5-20251001"))
    )
    model = make_anthropic(
        anthropic_api, thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048
    )
    with budget(usd="0.05") as b:
        text = "".join(str(c.text) for c in model.stream("2+2?", config=handler_config()))
    assert "4" in text
    a = attrs(telemetry.span("chat claude-haiku-4-5"))
    assert a["gen_ai.usage.input_tokens"] == 4120
    assert a["gen_ai.usage.cache_read.input_tokens"] == 4000
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 100
    assert a["gen_ai.usage.output_tokens"] == 180
    assert a["gen_ai.usage.reasoning.output_tokens"] == 120
    assert b.spent.usd == haiku_cost(20, 180, read=4000, write_5m=100)


def test_stream_closed_half_read_settles(telemetry: Telemetry, openai_api: MockAPI) -> None:
    openai_api.queue(sse_response(chat_chunks(["a", "b", "c", "d"], chat_usage(30, 90))))
    model = make_openai(openai_api, stream_usage=True)
    with budget(output_tokens=5000) as b:
        stream = model.stream("go", config=handler_config())
        next(stream)
        stream.close()
        assert b.in_flight == 0
    # Closed before the usage chunk: nothing read, so the reservation is charged.
    assert b.spent.output_tokens == 1000
    a = attrs(telemetry.span("chat o3"))
    assert a["tcc.stream.abandoned"] is True and a["tcc.usage.missing"] is True


def test_a_stream_broken_mid_way_ends_the_call(telemetry: Telemetry, openai_api: MockAPI) -> None:
    import openai

    events = chat_chunks(["a", "b"], chat_usage(30, 90))
    openai_api.queue(sse_response(events, fail_after=3))  # dropped before the usage chunk
    model = make_openai(openai_api, stream_usage=True, max_retries=0)
    with budget(output_tokens=5000) as b, pytest.raises(openai.APIConnectionError):
        list(model.stream("go", config=handler_config()))
    # Chunks arrived, the usage chunk did not: the reservation (the model's 100,000-token
    # o3 cap) is charged, never under-charged.
    assert b.in_flight == 0 and b.spent.calls == 1
    span = telemetry.span("chat o3")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["tcc.usage.missing"] is True
    assert b.spent.output_tokens == attrs(span)["tcc.budget.reserved.output_tokens"]


def test_request_body_is_untouched(openai_api: MockAPI) -> None:
    openai_api.queue(json_response(chat_completion(chat_usage(1, 1))))
    model = make_openai(openai_api, max_tokens=77, temperature=0.2)
    with budget(output_tokens=100):
        model.invoke("hi", config=handler_config())
    body = json.loads(openai_api.requests[0].content)
    assert body == {
        "model": "o3",
        "stream": False,
        "messages": [{"content": "hi", "role": "user"}],
        "max_completion_tokens": 77,
        "temperature": 0.2,
    }


def test_a_bound_max_tokens_is_the_worst_case(telemetry: Telemetry, openai_api: MockAPI) -> None:
    openai_api.queue(json_response(chat_completion(chat_usage(5, 20))))
    model = make_openai(openai_api, max_tokens=None).bind(max_tokens=300)
    with budget(output_tokens=299), pytest.raises(BudgetExceeded):
        model.invoke("2+2?", config=handler_config())
    with budget(output_tokens=300) as b:
        model.invoke("2+2?", config=handler_config())
    assert openai_api.count == 1 and b.spent.output_tokens == 20
    assert attrs(telemetry.spans("chat o3")[-1])["gen_ai.request.max_tokens"] == 300


def test_generate_of_several_lists_stopped_by_an_error_ends_every_call(
    openai_api: MockAPI,
) -> None:
    openai_api.queue(
        json_response(chat_completion(chat_usage(10, 20))),
        json_response(openai_error(500, "oops", "server_error"), status=500),
    )
    model = make_openai(openai_api, max_tokens=100, max_retries=0)
    lists = [[HumanMessage("a")], [HumanMessage("b")], [HumanMessage("c")]]
    with budget(output_tokens=1000) as b, pytest.raises(Exception, match="oops"):
        model.generate(lists, callbacks=[TCCCallbackHandler()])
    # The first was answered but LangChain drops its result: charged its reservation.
    # The third was never sent: only counted.
    assert openai_api.count == 2 and b.in_flight == 0
    assert b.spent.calls == 3 and b.spent.output_tokens == 100


async def test_agenerate_of_several_lists_reports_every_call(openai_api: MockAPI) -> None:
    openai_api.queue(
        json_response(chat_completion(chat_usage(10, 20))),
        json_response(openai_error(500, "oops", "server_error"), status=500),
    )
    model = make_openai(openai_api, max_tokens=100, max_retries=0)
    with budget(output_tokens=1000) as b, pytest.raises(Exception, match="oops"):
        await model.agenerate(
            [[HumanMessage("a")], [HumanMessage("b")]], callbacks=[TCCCallbackHandler()]
        )
    assert b.in_flight == 0 and b.spent.calls == 2 and b.spent.output_tokens == 20
