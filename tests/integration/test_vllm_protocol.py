"""The vLLM dialect against payloads faithful to vLLM's protocol code.

vLLM needs a GPU, so its server is played by an ``httpx2.MockTransport`` answering with
the shapes of ``vllm/entrypoints/openai/chat_completion/protocol.py``,
``completion/protocol.py``, ``serve/engine/protocol.py`` (``UsageInfo`` with
``completion_tokens_details.reasoning_tokens``) and the ``/tokenize`` endpoint
(``TokenizeCompletionRequest`` / ``TokenizeChatRequest`` -> ``{"count", "max_model_len",
"tokens"}``). The llama-server dialect is exercised for real in ``engine/``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx2
import pytest

import tcc_plugin
from tcc_plugin.gpu_time import InFlightMeter, SharedGpuHourPrice
from tcc_plugin.integrations.vllm import AsyncVLLMClient, ServerError, VLLMClient
from tcc_plugin.usage import Usage

MODEL = "Qwen/Qwen3-0.6B"
BASE = "http://127.0.0.1:8000"


def usage_info(prompt: int, completion: int, reasoning: int | None = None) -> dict[str, Any]:
    """vLLM ``UsageInfo`` (``completion_tokens_details`` only when reported)."""
    block: dict[str, Any] = {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
    }
    if reasoning is not None:
        block["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return block


def chat_response(
    choices: list[dict[str, Any]], usage: dict[str, Any], model: str = MODEL
) -> dict[str, Any]:
    """vLLM ``ChatCompletionResponse``."""
    return {
        "id": "chatcmpl-3f1a",
        "object": "chat.completion",
        "created": 1_760_000_000,
        "model": model,
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


def chat_choice(
    index: int, content: str, reasoning: str | None, *, key: str = "reasoning"
) -> dict[str, Any]:
    """vLLM ``ChatCompletionResponseChoice`` (``key``: ``reasoning`` now,
    ``reasoning_content`` in vLLM before the rename)."""
    message: dict[str, Any] = {"role": "assistant", "content": content, key: reasoning}
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": None,
        "token_ids": None,
    }


def completion_response(texts: list[tuple[str, str, Any]], usage: dict[str, Any]) -> dict[str, Any]:
    """vLLM ``CompletionResponse``: (text, finish_reason, stop_reason) per choice."""
    return {
        "id": "cmpl-77e0",
        "object": "text_completion",
        "created": 1_760_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": i,
                "text": text,
                "logprobs": None,
                "finish_reason": reason,
                "stop_reason": stop,
                "prompt_logprobs": None,
            }
            for i, (text, reason, stop) in enumerate(texts)
        ],
        "usage": usage,
    }


def stream_chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    """vLLM ``ChatCompletionStreamResponse``."""
    chunk: dict[str, Any] = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": MODEL,
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def delta(index: int, **fields: Any) -> dict[str, Any]:
    return {"index": index, "delta": fields, "logprobs": None, "finish_reason": None}


def sse(chunks: list[dict[str, Any]]) -> bytes:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return body.encode()


class VLLMServer:
    """Answers like a vLLM server; records every request body by path."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[dict[str, Any]], httpx2.Response]] = {}
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.tokens_per_char = 0.25  # /tokenize: one token per four characters

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [b for p, b in self.seen if p == path]

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content or b"{}")
        self.seen.append((request.url.path, body))
        if request.url.path == "/tokenize":
            text = body.get("prompt")
            if text is None:  # TokenizeChatRequest
                text = "".join(m["content"] for m in body["messages"]) + "<gen>"
            count = max(1, int(len(text) * self.tokens_per_char))
            return httpx2.Response(
                200, json={"count": count, "max_model_len": 40960, "tokens": list(range(count))}
            )
        return self.routes[request.url.path](body)

    async def ahandler(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return self.handler(request)


@pytest.fixture
def server() -> VLLMServer:
    return VLLMServer()


@pytest.fixture
def client(server: VLLMServer) -> Iterator[VLLMClient]:
    http = httpx2.Client(transport=httpx2.MockTransport(server.handler))
    with VLLMClient(BASE, MODEL, dialect="vllm", gpu_price=36, http_client=http) as c:
        yield c


def test_reported_reasoning_tokens_are_taken_as_reported(
    server: VLLMServer, client: VLLMClient, telemetry: Any
) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response([chat_choice(0, "4", "2 plus 2 is 4.")], usage_info(12, 30, 21)),
    )
    response = client.chat([{"role": "user", "content": "2+2?"}], max_tokens=64)
    assert response.reasoning == "2 plus 2 is 4."
    assert response.usage == Usage(input=12, output=30, reasoning=21)
    # vLLM reported them: no /tokenize of the reasoning (only the input count)
    assert [b for b in server.bodies("/tokenize") if "prompt" in b] == []
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 21
    assert span.attributes["gen_ai.provider.name"] == "vllm"
    assert span.attributes["tcc.cost.usd"] > 0  # priced by GPU time


def test_unreported_reasoning_is_counted_through_tokenize(
    server: VLLMServer, client: VLLMClient
) -> None:
    thought = "Two and two make four, checked twice."  # 37 chars -> 9 tokens
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response(
            [chat_choice(0, "4", thought, key="reasoning_content")], usage_info(12, 15)
        ),
    )
    response = client.chat([{"role": "user", "content": "2+2?"}], max_tokens=64)
    assert response.usage.reasoning == 9
    assert {"model": MODEL, "prompt": thought, "add_special_tokens": False} in server.bodies(
        "/tokenize"
    )


def test_input_is_counted_with_vllms_chat_tokenize(server: VLLMServer, client: VLLMClient) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "hi", None)], usage_info(5, 2))
    )
    messages = [{"role": "user", "content": "hello there"}]
    client.chat(messages, max_tokens=8)
    assert server.bodies("/tokenize")[0] == {
        "model": MODEL,
        "messages": messages,
        "add_generation_prompt": True,
    }


def test_vllm_only_fields_are_sent_natively(server: VLLMServer, client: VLLMClient) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response(
            [chat_choice(0, "a", "x"), chat_choice(1, "b", "y")], usage_info(10, 40, 12)
        ),
    )
    response = client.chat(
        [{"role": "user", "content": "q"}],
        max_tokens=100,
        n=2,
        stop=["\n\n"],
        stop_token_ids=[151645],
        thinking_token_budget=64,
        seed=7,
    )
    body = server.bodies("/v1/chat/completions")[0]
    assert body["n"] == 2  # vLLM sums completion tokens over choices itself: no fan-out
    assert body["stop"] == ["\n\n"]
    assert body["stop_token_ids"] == [151645]
    assert body["thinking_token_budget"] == 64
    assert response.texts == ["a", "b"]
    assert response.usage.output == 40


def test_a_reasoning_budget_clamps_thinking_token_budget(
    server: VLLMServer, client: VLLMClient, telemetry: Any
) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "a", "x")], usage_info(10, 20, 15))
    )
    with tcc_plugin.budget(reasoning_tokens=50, policy="clamp"):
        client.chat([{"role": "user", "content": "q"}], max_tokens=500, thinking_token_budget=400)
    body = server.bodies("/v1/chat/completions")[0]
    assert body["thinking_token_budget"] == 50
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["tcc.budget.clamped.reasoning_tokens"] == 50


def test_raw_continuation_marked_as_reasoning(server: VLLMServer, client: VLLMClient) -> None:
    server.routes["/v1/completions"] = lambda body: httpx2.Response(
        200,
        json=completion_response([("so the sum is 4.", "stop", "</think>")], usage_info(30, 8)),
    )
    response = client.complete(
        "<think>\n", max_tokens=16, stop=["</think>"], reasoning=True, temperature=0.0
    )
    assert response.choices[0].stop_reason == "</think>"
    assert response.usage == Usage(input=30, output=8, reasoning=8)
    body = server.bodies("/v1/completions")[0]
    assert body == {
        "model": MODEL,
        "max_tokens": 16,
        "stop": ["</think>"],
        "temperature": 0.0,
        "prompt": "<think>\n",
    }
    assert server.bodies("/tokenize")[0] == {
        "model": MODEL,
        "prompt": "<think>\n",
        "add_special_tokens": True,
    }


def test_stream_reasoning_deltas_and_usage(
    server: VLLMServer, client: VLLMClient, telemetry: Any
) -> None:
    chunks = [
        stream_chunk([delta(0, role="assistant", content=""), delta(1, role="assistant")], None),
        stream_chunk([delta(0, reasoning="Two "), delta(1, reasoning="Four")], None),
        stream_chunk([delta(0, reasoning="twos."), delta(1, content="4")], None),
        stream_chunk([delta(0, content="4")], None),
        stream_chunk([], usage_info(9, 14)),  # include_usage: summed over the choices
    ]
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, content=sse(chunks), headers={"content-type": "text/event-stream"}
    )
    with client.chat_stream([{"role": "user", "content": "2+2?"}], max_tokens=32, n=2) as stream:
        got = list(stream)
    body = server.bodies("/v1/chat/completions")[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert got[-1]["choices"] == []
    # reasoning counted through /tokenize: "Two twos." (9 chars -> 2) + "Four" (1)
    assert got[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 3}
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["gen_ai.usage.output_tokens"] == 14
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 3
    assert span.attributes["gen_ai.request.stream"] is True


def test_server_errors_are_retried_per_the_policy(server: VLLMServer, client: VLLMClient) -> None:
    busy = {"error": {"message": "busy", "code": 429}}
    ok = chat_response([chat_choice(0, "ok", None)], usage_info(3, 1))
    answers = iter(
        [
            httpx2.Response(429, json=busy, headers={"retry-after": "0"}),
            httpx2.Response(200, json=ok),
        ]
    )
    server.routes["/v1/chat/completions"] = lambda body: next(answers)
    slept: list[float] = []
    policy = tcc_plugin.RetryPolicy(sleep=slept.append)
    with policy:
        response = client.chat([{"role": "user", "content": "q"}], max_tokens=4)
    assert response.text == "ok"
    assert len(server.bodies("/v1/chat/completions")) == 2


def test_a_client_error_is_raised_with_its_message(server: VLLMServer, client: VLLMClient) -> None:
    server.routes["/v1/completions"] = lambda body: httpx2.Response(
        400, json={"error": {"message": "prompt too long", "type": "BadRequestError", "code": 400}}
    )
    with pytest.raises(ServerError, match="prompt too long") as info:
        client.complete("x", max_tokens=4)
    assert info.value.status_code == 400


def test_the_in_flight_meter_shares_gpu_time() -> None:
    now = [0.0]
    meter = InFlightMeter(clock=lambda: now[0])
    meter.begin()  # A starts at 0
    now[0] = 10.0
    meter.begin()  # B starts at 10
    now[0] = 20.0
    meter.end()  # one of them ends at 20
    now[0] = 30.0
    meter.end()
    # A: 10 s alone + 10 s shared by two = 15 s; B: 10 s shared + 10 s alone = 15 s
    assert meter.shared_seconds(0.0, 20.0) == pytest.approx(15.0)
    assert meter.shared_seconds(10.0, 30.0) == pytest.approx(15.0)
    price = SharedGpuHourPrice(Decimal(3600), meter, clock=lambda: now[0])
    # a call that ended now (30) after 20 s: 15 s of a $1/s server
    assert price.cost(Usage(), seconds=20.0) == pytest.approx(Decimal(15))
    assert price.cost(Usage(), seconds=20.0, share=4) == pytest.approx(Decimal(5))
    assert price.worst_case(Usage()) is None


async def test_the_async_client_speaks_the_same_dialect(server: VLLMServer) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "4", "sum")], usage_info(7, 5, 2))
    )
    chunks = [
        stream_chunk([delta(0, reasoning="ok")], None),
        stream_chunk([delta(0, content="4")], None),
        stream_chunk([], usage_info(7, 3, 1)),
    ]
    server.routes["/v1/completions"] = lambda body: httpx2.Response(
        200, content=sse(chunks), headers={"content-type": "text/event-stream"}
    )
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(server.ahandler))
    async with AsyncVLLMClient(BASE, MODEL, gpu_price=1, http_client=http) as aclient:
        response = await aclient.chat([{"role": "user", "content": "2+2?"}], max_tokens=16)
        assert response.usage == Usage(input=7, output=5, reasoning=2)
        stream = await aclient.complete_stream("2+2=", max_tokens=8)
        got = [chunk async for chunk in stream]
    assert got[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 1}
