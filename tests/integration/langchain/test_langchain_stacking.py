"""LangChain over an instrumented client: the handler and the client see one provider
call; the client's call charges and carries usage, the handler's is its parent."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

import tcc_plugin
from tcc_plugin import BudgetExceeded, budget, llm_call
from tcc_plugin.instrument import instrument
from tcc_plugin.integrations.langchain import TCCCallbackHandler, use_handler, with_budget

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


def usage_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [s for s in telemetry.spans() if "gen_ai.usage.input_tokens" in (s.attributes or {})]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def instrumented_openai(api: MockAPI) -> Any:
    model = make_openai(api)
    instrument(model.root_client)
    instrument(model.root_async_client)
    return model


def test_handler_over_an_instrumented_client_charges_once(
    openai_api: MockAPI, telemetry: Telemetry
) -> None:
    openai_api.queue(json_response(chat_completion(chat_usage(30, 200, reasoning=150))))
    model = instrumented_openai(openai_api)
    with budget(calls=1, usd=1) as b:
        model.invoke("2+2?", config={"callbacks": [TCCCallbackHandler()]})
        with pytest.raises(BudgetExceeded):
            model.invoke("again", config={"callbacks": [TCCCallbackHandler()]})
    assert openai_api.count == 1
    assert b.spent.calls == 1 and b.spent.usd == o3_cost(30, 200) and b.reserved.is_zero()
    [provider] = usage_spans(telemetry)
    assert attrs(provider)["gen_ai.usage.reasoning.output_tokens"] == 150
    [handler] = [s for s in telemetry.spans() if attrs(s).get("tcc.budget.outcome") == "delegated"]
    assert attrs(handler)["tcc.call.nested_calls"] == 1 and "tcc.cost.usd" not in attrs(handler)
    assert provider.parent is not None and provider.parent.span_id == handler.context.span_id


def test_handler_budget_argument_is_charged_by_the_client_call(
    openai_api: MockAPI, telemetry: Telemetry
) -> None:
    openai_api.queue(json_response(chat_completion(chat_usage(30, 200))))
    model_budget = tcc_plugin.Budget(calls=1)
    model = instrumented_openai(openai_api)
    with budget(calls=10) as outer:
        model.invoke("2+2?", config={"callbacks": [TCCCallbackHandler(budget=model_budget)]})
    assert model_budget.spent.calls == 1 and outer.spent.calls == 1
    assert model_budget.spent.output_tokens == 200 and model_budget.reserved.is_zero()


def test_streamed_handler_over_an_instrumented_client_charges_once(
    openai_api: MockAPI, telemetry: Telemetry
) -> None:
    openai_api.queue(sse_response(chat_chunks(["4"], chat_usage(30, 200, reasoning=150))))
    model = make_openai(openai_api, stream_usage=True)
    instrument(model.root_client)
    with budget(calls=1) as b, use_handler():
        text = "".join(str(chunk.content) for chunk in model.stream("2+2?"))
    assert text == "4"
    assert b.spent.calls == 1 and b.spent.output_tokens == 200 and b.reserved.is_zero()
    assert len(usage_spans(telemetry)) == 1


async def test_budget_runnable_over_an_instrumented_async_client(
    openai_api: MockAPI, telemetry: Telemetry
) -> None:
    openai_api.queue(json_response(chat_completion(chat_usage(30, 200))))
    model = instrumented_openai(openai_api)
    shared = tcc_plugin.Budget(calls=1)
    runnable = with_budget(model, shared)
    await runnable.ainvoke("2+2?")
    assert shared.spent.calls == 1 and shared.spent.usd == o3_cost(30, 200)
    assert shared.reserved.is_zero()
    assert len(usage_spans(telemetry)) == 1


def test_llm_call_over_handler_over_instrumented_anthropic(
    anthropic_api: MockAPI, telemetry: Telemetry
) -> None:
    usage = anthropic_usage(40, 120, read=1000, write_5m=200)
    anthropic_api.queue(json_response(anthropic_message(usage, model="claude-haiku-4-5")))
    model = make_anthropic(anthropic_api)
    instrument(model._client)

    @llm_call(model="claude-haiku-4-5", provider="anthropic")
    def ask(question: str) -> Any:
        return model.invoke(question)

    with budget(calls=1, usd=1) as b, use_handler():
        ask("2+2?")
    cost = haiku_cost(40, 120, read=1000, write_5m=200)
    assert b.spent.calls == 1 and b.spent.usd == cost and b.reserved.is_zero()
    [provider] = usage_spans(telemetry)
    assert attrs(provider)["gen_ai.usage.cache_creation.input_tokens"] == 200
    delegated = [s for s in telemetry.spans() if attrs(s).get("tcc.budget.outcome") == "delegated"]
    assert len(delegated) == 2  # the decorated function and the LangChain call


@pytest.mark.filterwarnings("ignore:Unexpected type for token usage")  # langchain-openai
def test_one_generate_of_several_message_lists_over_an_instrumented_client(
    openai_api: MockAPI, telemetry: Telemetry
) -> None:
    from langchain_core.messages import HumanMessage

    openai_api.queue(
        json_response(chat_completion(chat_usage(30, 200))),
        json_response(chat_completion(chat_usage(40, 100))),
    )
    model = instrumented_openai(openai_api)
    with budget(calls=2) as b:
        model.generate([[HumanMessage("a")], [HumanMessage("b")]], callbacks=[TCCCallbackHandler()])
    assert b.spent.calls == 2 and b.spent.total_tokens == 230 + 140 and b.reserved.is_zero()
    assert len(usage_spans(telemetry)) == 2
    delegated = [s for s in telemetry.spans() if attrs(s).get("tcc.budget.outcome") == "delegated"]
    assert len(delegated) == 2  # each LangChain call handed its reservation to one client call


@pytest.mark.filterwarnings("ignore:Unexpected type for token usage")  # langchain-openai
async def test_async_generate_of_several_message_lists_over_an_instrumented_client(
    openai_api: MockAPI, telemetry: Telemetry
) -> None:
    from langchain_core.messages import HumanMessage

    openai_api.queue(*(json_response(chat_completion(chat_usage(30, 200))) for _ in range(3)))
    model = instrumented_openai(openai_api)
    async with budget(calls=3) as b:
        await model.agenerate([[HumanMessage(x)] for x in "abc"], callbacks=[TCCCallbackHandler()])
    assert b.spent.calls == 3 and b.spent.output_tokens == 600 and b.reserved.is_zero()
    assert len(usage_spans(telemetry)) == 3
