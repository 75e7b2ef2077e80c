"""RouterRunnable and CascadeRunnable over real ChatOpenAI / ChatAnthropic models: the
chosen route's model call is a child of the routing span, charged once, and streams."""

from __future__ import annotations

from typing import Any

from langchain_core.output_parsers import StrOutputParser
from opentelemetry.sdk.trace import ReadableSpan

from tcc_plugin import budget
from tcc_plugin.integrations.langchain import CascadeRunnable, RouterRunnable
from tcc_plugin.routing import Route, Router, accept_when, cascade
from tcc_plugin.routing.telemetry import ROUTE_ESCALATIONS, ROUTE_NAME

from ...conftest import Telemetry
from ..conftest import (
    MockAPI,
    anthropic_message,
    anthropic_usage,
    chat_chunks,
    chat_completion,
    chat_usage,
    json_response,
    sse_response,
)
from .conftest import haiku_cost, make_anthropic, make_openai, o3_cost


def child_of(span: ReadableSpan, parent: ReadableSpan) -> bool:
    return span.parent is not None and span.parent.span_id == parent.context.span_id


def routes(openai_api: MockAPI, anthropic_api: MockAPI, **openai_kw: Any) -> list[Route]:
    cheap = make_anthropic(anthropic_api, max_tokens=256) | StrOutputParser()
    think = make_openai(openai_api, **openai_kw) | StrOutputParser()
    return [Route("cheap", cheap, up_to=0.5), Route("think", think)]


def test_the_router_runnable_runs_the_chosen_chain_under_its_span(
    telemetry: Telemetry, openai_api: MockAPI, anthropic_api: MockAPI
) -> None:
    openai_api.queue(
        json_response(chat_completion(chat_usage(20, 300, reasoning=280), contents=["1729"]))
    )
    anthropic_api.queue(json_response(anthropic_message(anthropic_usage(12, 3), text="4")))
    hard = {"What is 2+2?": 0.1}.get
    runnable = RouterRunnable(
        router=Router(routes(openai_api, anthropic_api), lambda q: hard(q) or 0.9, name="qa")
    )
    with budget(usd="0.1") as b:
        assert runnable.invoke("What is 2+2?") == "4"
        assert runnable.invoke("Taxicab number?") == "1729"
    assert b.spent.usd == haiku_cost(12, 3) + o3_cost(20, 300)
    assert b.spent.calls == 2
    decisions = telemetry.spans("route qa")
    assert [s.attributes[ROUTE_NAME] for s in decisions] == ["cheap", "think"]
    haiku, o3 = telemetry.span("chat claude-haiku-4-5"), telemetry.span("chat o3")
    assert child_of(haiku, decisions[0]) and child_of(o3, decisions[1])


def test_the_router_runnable_streams_the_chosen_route(
    telemetry: Telemetry, openai_api: MockAPI, anthropic_api: MockAPI
) -> None:
    openai_api.queue(sse_response(chat_chunks(["17", "29"], chat_usage(20, 90, reasoning=80))))
    runnable = RouterRunnable(
        router=Router(routes(openai_api, anthropic_api, stream_usage=True), lambda q: 0.9)
    )
    with budget(usd="0.1") as b:
        chunks = list(runnable.stream("Taxicab number?"))
    assert "".join(chunks) == "1729" and len(chunks) >= 2
    assert b.spent.usd == o3_cost(20, 90) and b.spent.reasoning_tokens == 80
    decision = telemetry.span("route router")
    assert decision.attributes[ROUTE_NAME] == "think"
    assert child_of(telemetry.span("chat o3"), decision)


async def test_the_cascade_runnable_escalates_asynchronously(
    telemetry: Telemetry, openai_api: MockAPI, anthropic_api: MockAPI
) -> None:
    anthropic_api.queue(json_response(anthropic_message(anthropic_usage(12, 3), text="maybe 5")))
    openai_api.queue(
        json_response(chat_completion(chat_usage(20, 60, reasoning=50), contents=["4"]))
    )
    flow = CascadeRunnable(
        cascade=cascade(routes(openai_api, anthropic_api), accept_when(lambda a: "maybe" not in a)),
        output="result",
    )
    with budget(usd="0.1") as b:
        result = await flow.ainvoke("What is 2+2?")
    assert (result.route, result.answer, result.escalations) == ("think", "4", 1)
    assert b.spent.usd == haiku_cost(12, 3) + o3_cost(20, 60)
    span = telemetry.span("route cascade")
    assert span.attributes[ROUTE_ESCALATIONS] == 1
    assert child_of(telemetry.span("chat o3"), span)
