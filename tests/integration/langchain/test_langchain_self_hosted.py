"""LangChain's ``ChatOpenAI(base_url=...)`` pointed at a self-hosted server (vLLM,
llama-server) played by an ``httpx2.MockTransport`` with the servers' payloads."""

from __future__ import annotations

from typing import Any

import httpx2
import langchain_openai
import pytest
from langchain_core.messages import HumanMessage

import tcc_plugin
from tcc_plugin.integrations.langchain import TCCCallbackHandler

from ..test_server_dialects import (
    MODEL,
    VLLMServer,
    chat_choice,
    chat_response,
    usage_info,
)


def chat_model(server: VLLMServer, base: str) -> Any:
    return langchain_openai.ChatOpenAI(
        model=MODEL,
        base_url=base + "/v1",
        api_key="none",  # type: ignore[arg-type]
        max_tokens=64,
        http_client=httpx2.Client(transport=httpx2.MockTransport(server.handler)),
        http_async_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server.ahandler)),
    )


def test_an_instrumented_chat_openai_gets_exact_reasoning_and_gpu_cost(telemetry: Any) -> None:
    server = VLLMServer(owner="llamacpp")
    thought = "Six sevens are forty-two."  # 25 chars -> 6 tokens (/tokenize)
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response(
            [chat_choice(0, "42", thought, key="reasoning_content")], usage_info(14, 20)
        ),
    )
    llm = tcc_plugin.instrument(
        chat_model(server, "http://127.0.0.1:8201"), gpu_price=3.6
    )  # detected: owned_by "llamacpp"
    reply = llm.invoke([HumanMessage("6*7?")])
    # the exact count reaches LangChain's own usage
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_token_details"]["reasoning"] == 6
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["gen_ai.provider.name"] == "llama.cpp"
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 6
    assert span.attributes["gen_ai.usage.output_tokens"] == 20
    assert span.attributes["tcc.cost.usd"] > 0
    from tcc_plugin.integrations.openai import uninstrument

    uninstrument(llm)  # both SDK clients: later calls are not recorded
    llm.invoke([HumanMessage("6*7?")])
    assert len(telemetry.spans(f"chat {MODEL}")) == 1


async def test_the_async_path_of_an_instrumented_chat_openai(telemetry: Any) -> None:
    server = VLLMServer()
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "42", "six sevens")], usage_info(9, 12, 4))
    )
    llm = tcc_plugin.instrument(
        chat_model(server, "http://127.0.0.1:8202"), server="vllm", gpu_price=1
    )
    with tcc_plugin.budget(reasoning_tokens=100, policy="clamp"):
        reply = await llm.ainvoke(
            [HumanMessage("6*7?")], max_tokens=1000, extra_body={"thinking_token_budget": 500}
        )
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_token_details"]["reasoning"] == 4
    assert server.bodies("/v1/chat/completions")[0]["thinking_token_budget"] == 100
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["gen_ai.provider.name"] == "vllm"


def test_the_handler_names_a_detected_server(telemetry: Any) -> None:
    server = VLLMServer()
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "42", "six sevens")], usage_info(9, 12, 4))
    )
    base = "http://127.0.0.1:8203"
    # an instrumented client of the same server detects it once for the process
    tcc_plugin.instrument(chat_model(server, base)).invoke([HumanMessage("warm up")])
    plain = chat_model(server, base)  # not instrumented: the handler records its calls
    plain.invoke([HumanMessage("6*7?")], config={"callbacks": [TCCCallbackHandler()]})
    warm, handled = telemetry.spans(f"chat {MODEL}")
    assert "tcc.langchain.run_id" not in warm.attributes
    assert "tcc.langchain.run_id" in handled.attributes
    assert handled.attributes["gen_ai.provider.name"] == "vllm"
    assert handled.attributes["tcc.server.dialect"] == "vllm"
    assert handled.attributes["gen_ai.usage.reasoning.output_tokens"] == 4  # vLLM's count
    assert len(server.bodies("/v1/models")) == 1


def test_a_chat_openai_of_openai_itself_is_refused_a_gpu_price() -> None:
    llm = langchain_openai.ChatOpenAI(model="gpt-4o", api_key="sk-test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="this client calls OpenAI"):
        tcc_plugin.instrument(llm, gpu_price=2)
