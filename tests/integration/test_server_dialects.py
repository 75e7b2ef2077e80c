"""Self-hosted dialects through the standard ``openai`` client, against payloads
faithful to vLLM's protocol code.

vLLM needs a GPU, so its server is played by an ``httpx2.MockTransport`` behind a real
``openai.OpenAI(base_url=...)``, answering with the shapes of
``vllm/entrypoints/openai/chat_completion/protocol.py``, ``completion/protocol.py``,
``serve/engine/protocol.py`` (``UsageInfo`` with
``completion_tokens_details.reasoning_tokens``), ``GET /v1/models`` (``ModelCard``,
``owned_by="vllm"``) and ``/tokenize`` (``TokenizeCompletionRequest`` -> ``{"count",
"max_model_len", "tokens"}``). The llama-server dialect is exercised for real in
``local_engine/``; its ``n`` fan-out is checked here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx2
import openai
import pytest

import tcc_plugin
from tcc_plugin.forcing import budget_forcing
from tcc_plugin.gpu_time import InFlightMeter, SharedGpuHourPrice
from tcc_plugin.integrations.server_dialect import DialectError
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
    """Answers like a vLLM server (or, with ``owner="llamacpp"``, a llama-server);
    records every request body by path."""

    def __init__(self, owner: str = "vllm") -> None:
        self.owner = owner
        self.routes: dict[str, Callable[[dict[str, Any]], httpx2.Response]] = {}
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.tokens_per_char = 0.25  # /tokenize: one token per four characters

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [b for p, b in self.seen if p == path]

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content or b"{}")
        self.seen.append((request.url.path, body))
        if request.url.path == "/v1/models":
            card = {"id": MODEL, "object": "model", "created": 1, "owned_by": self.owner}
            return httpx2.Response(200, json={"object": "list", "data": [card]})
        if request.url.path == "/tokenize":
            text = body.get("prompt", body.get("content", ""))
            count = max(1, int(len(text) * self.tokens_per_char))
            return httpx2.Response(
                200, json={"count": count, "max_model_len": 40960, "tokens": list(range(count))}
            )
        if request.url.path not in self.routes:
            return httpx2.Response(404, json={"detail": "Not Found"})
        return self.routes[request.url.path](body)

    async def ahandler(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        return self.handler(request)


def openai_client(mock: VLLMServer, base: str = BASE, **options: Any) -> openai.OpenAI:
    http = httpx2.Client(transport=httpx2.MockTransport(mock.handler))
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", http_client=http)
    return tcc_plugin.instrument(client, **options)


@pytest.fixture
def server() -> VLLMServer:
    return VLLMServer()


@pytest.fixture
def client(server: VLLMServer) -> openai.OpenAI:
    return openai_client(server, server="vllm", gpu_price=36)


QUESTION = [{"role": "user", "content": "2+2?"}]


def test_reported_reasoning_tokens_are_taken_as_reported(
    server: VLLMServer, client: openai.OpenAI, telemetry: Any
) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response([chat_choice(0, "4", "2 plus 2 is 4.")], usage_info(12, 30, 21)),
    )
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=64)  # type: ignore[arg-type]
    message: Any = response.choices[0].message
    assert message.reasoning == "2 plus 2 is 4."
    assert response.usage is not None and response.usage.completion_tokens == 30
    assert server.bodies("/tokenize") == []  # vLLM reported them: nothing to count
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 21
    assert span.attributes["gen_ai.provider.name"] == "vllm"
    assert span.attributes["tcc.server.dialect"] == "vllm"
    assert span.attributes["tcc.cost.usd"] > 0  # priced by GPU time


def test_unreported_reasoning_is_counted_through_tokenize(
    server: VLLMServer, client: openai.OpenAI, telemetry: Any
) -> None:
    thought = "Two and two make four, checked twice."  # 37 chars -> 9 tokens
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response(
            [chat_choice(0, "4", thought, key="reasoning_content")], usage_info(12, 15)
        ),
    )
    response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=64)  # type: ignore[arg-type]
    # the exact count is written into the response the caller gets
    assert response.usage is not None and response.usage.completion_tokens_details is not None
    assert response.usage.completion_tokens_details.reasoning_tokens == 9
    assert server.bodies("/tokenize") == [
        {"model": MODEL, "prompt": thought, "add_special_tokens": False}
    ]
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 9
    assert span.attributes["gen_ai.usage.output_tokens"] == 15


class FlakyTokenize:
    """Wraps a server: its /tokenize drops the connection ``drops`` times, then answers
    with ``status`` (200: the real answer)."""

    def __init__(self, server: VLLMServer, drops: int, status: int = 200) -> None:
        self.server, self.drops, self.status, self.tried = server, drops, status, 0

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/tokenize":
            self.tried += 1
            if self.tried <= self.drops:
                raise httpx2.RemoteProtocolError("Server disconnected without sending a response.")
            if self.status != 200:
                return httpx2.Response(self.status, json={"error": "tokenizer busy"})
        return self.server.handler(request)


def test_a_dropped_tokenize_connection_is_retried(server: VLLMServer, telemetry: Any) -> None:
    thought = "Two and two make four, checked twice."  # 37 chars -> 9 tokens
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response(
            [chat_choice(0, "4", thought, key="reasoning_content")], usage_info(12, 15)
        ),
    )
    flaky = FlakyTokenize(server, drops=1)  # a stale keep-alive connection, once
    http = httpx2.Client(transport=httpx2.MockTransport(flaky.handler))
    client = tcc_plugin.instrument(
        openai.OpenAI(base_url=BASE + "/v1", api_key="none", http_client=http), server="vllm"
    )
    client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=64)  # type: ignore[arg-type]
    assert flaky.tried == 2
    assert telemetry.span(f"chat {MODEL}").attributes["gen_ai.usage.reasoning.output_tokens"] == 9


@pytest.mark.parametrize("drops, status", [(3, 200), (0, 503)])
def test_a_failed_tokenize_counts_the_whole_output_as_reasoning(
    server: VLLMServer, telemetry: Any, caplog: pytest.LogCaptureFixture, drops: int, status: int
) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response(
            [chat_choice(0, "4", "Two and two.", key="reasoning_content")], usage_info(12, 15)
        ),
    )
    flaky = FlakyTokenize(server, drops=drops, status=status)
    http = httpx2.Client(transport=httpx2.MockTransport(flaky.handler))
    client = tcc_plugin.instrument(
        openai.OpenAI(base_url=BASE + "/v1", api_key="none", http_client=http), server="vllm"
    )
    with tcc_plugin.budget(reasoning_tokens=100) as b:
        response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=64)  # type: ignore[arg-type]
    # the call succeeds; the reasoning cap is charged the upper bound: all 15 output tokens
    assert response.choices[0].message.content == "4"
    assert b.spent.reasoning_tokens == 15 and b.spent.output_tokens == 15
    assert telemetry.span(f"chat {MODEL}").attributes["gen_ai.usage.reasoning.output_tokens"] == 15
    assert "/tokenize failed" in caplog.text and "upper bound" in caplog.text
    assert flaky.tried == 3  # tried once and retried twice (both are retryable for the SDK)


def test_the_dialect_is_detected_once_per_server(telemetry: Any) -> None:
    server = VLLMServer()
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "4", "four")], usage_info(5, 3, 1))
    )
    base = "http://127.0.0.1:8101"
    first = openai_client(server, base)  # no server=: detected from GET /v1/models
    second = openai_client(server, base)
    for client in (first, second, first):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert len(server.bodies("/v1/models")) == 1
    spans = telemetry.spans(f"chat {MODEL}")
    assert [s.attributes["gen_ai.provider.name"] for s in spans] == ["vllm"] * 3


def test_a_declared_dialect_that_the_server_does_not_speak_fails_clearly() -> None:
    other = VLLMServer(owner="organization-owner")  # e.g. another OpenAI-compatible API
    client = openai_client(other, "http://127.0.0.1:8102", server="vllm")
    with pytest.raises(DialectError, match="owned_by organization-owner"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert other.bodies("/v1/chat/completions") == []


def test_an_undetected_server_is_plain_openai(telemetry: Any) -> None:
    other = VLLMServer(owner="organization-owner")
    other.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "4", None)], usage_info(5, 3))
    )
    client = openai_client(other, "http://127.0.0.1:8103")
    client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert telemetry.span(f"chat {MODEL}").attributes["gen_ai.provider.name"] == "openai"


def test_a_hosted_api_by_its_public_https_name_is_never_probed(telemetry: Any) -> None:
    hosted = VLLMServer(owner="deepseek")
    hosted.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "4", None)], usage_info(5, 3))
    )
    client = openai_client(hosted, "https://api.deepseek.com")
    client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert hosted.bodies("/v1/models") == []  # one request: the call itself
    assert telemetry.span(f"chat {MODEL}").attributes["gen_ai.provider.name"] == "openai"


@pytest.mark.parametrize(
    ("base_url", "probed"),
    [
        ("http://gpu-box.internal/v1", True),
        ("https://vllm.example.com:8443/v1", True),
        ("https://10.0.0.7/v1", True),
        ("https://gpu-box/v1", True),
        ("https://api.together.xyz/v1", False),
        ("https://api.openai.com/v1", False),
        ("https://x.openai.azure.com/openai", False),
    ],
)
def test_which_base_urls_are_asked_for_their_dialect(base_url: str, probed: bool) -> None:
    from tcc_plugin.integrations.openai_server import may_be_self_hosted

    assert may_be_self_hosted(base_url) is probed


def test_a_server_that_is_down_at_the_first_call_is_detected_at_the_next(
    telemetry: Any,
) -> None:
    server = VLLMServer()
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "4", "four")], usage_info(5, 3, 1))
    )
    up = [False]

    def handler(request: httpx2.Request) -> httpx2.Response:
        if not up[0]:
            raise httpx2.ConnectError("connection refused")
        return server.handler(request)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    client = tcc_plugin.instrument(
        openai.OpenAI(
            base_url="http://127.0.0.1:8105/v1", api_key="none", http_client=http, max_retries=0
        )
    )
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    up[0] = True
    client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)  # type: ignore[arg-type]
    assert len(server.bodies("/v1/models")) == 1  # asked again once it answered
    last = telemetry.spans(f"chat {MODEL}")[-1]
    assert last.attributes["gen_ai.provider.name"] == "vllm"


def test_bad_server_options_are_refused() -> None:
    with pytest.raises(ValueError, match=r"server must be one of vllm, llama\.cpp"):
        openai_client(VLLMServer(), server="tgi")
    with pytest.raises(ValueError, match="gpu_price must be a finite USD amount"):
        openai_client(VLLMServer(), server="vllm", gpu_price=-1)
    hosted = openai.OpenAI(api_key="sk-test")
    with pytest.raises(ValueError, match="this client calls OpenAI"):
        tcc_plugin.instrument(hosted, gpu_price=2)


def test_vllm_only_fields_are_sent_through_extra_body(
    server: VLLMServer, client: openai.OpenAI
) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200,
        json=chat_response(
            [chat_choice(0, "a", "x"), chat_choice(1, "b", "y")], usage_info(10, 40, 12)
        ),
    )
    response = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=100,
        n=2,
        stop=["\n\n"],
        seed=7,
        extra_body={"stop_token_ids": [151645], "thinking_token_budget": 64},
    )
    body = server.bodies("/v1/chat/completions")[0]
    assert body["n"] == 2  # vLLM sums completion tokens over choices itself: no fan-out
    assert body["stop_token_ids"] == [151645]
    assert body["thinking_token_budget"] == 64
    assert [c.message.content for c in response.choices] == ["a", "b"]


def test_a_reasoning_budget_clamps_thinking_token_budget(
    server: VLLMServer, client: openai.OpenAI, telemetry: Any
) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "a", "x")], usage_info(10, 20, 15))
    )
    with tcc_plugin.budget(reasoning_tokens=50, policy="clamp"):
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,  # type: ignore[arg-type]
            max_tokens=500,
            extra_body={"thinking_token_budget": 400},
        )
    body = server.bodies("/v1/chat/completions")[0]
    assert body["thinking_token_budget"] == 50
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["tcc.budget.clamped.reasoning_tokens"] == 50


def test_a_neutral_thinking_budget_becomes_thinking_token_budget(server: VLLMServer) -> None:
    server.routes["/v1/chat/completions"] = lambda body: httpx2.Response(
        200, json=chat_response([chat_choice(0, "a", "x")], usage_info(10, 20, 15))
    )
    client = openai_client(server, server="vllm")
    with tcc_plugin.thinking(256):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=500)  # type: ignore[arg-type]
    assert server.bodies("/v1/chat/completions")[0]["thinking_token_budget"] == 256


def test_raw_continuation_of_a_forcing_phase_is_reasoning(
    server: VLLMServer, client: openai.OpenAI, telemetry: Any
) -> None:
    answers = iter(
        [
            completion_response([("so the sum is 4.", "stop", "</think>")], usage_info(30, 8)),
            completion_response([(" 4", "stop", None)], usage_info(45, 2)),
        ]
    )
    server.routes["/v1/completions"] = lambda body: httpx2.Response(200, json=next(answers))
    with tcc_plugin.budget(reasoning_tokens=100) as scope:
        result = budget_forcing(
            client, "<think>\n", model=MODEL, max_thinking_tokens=16, options={"temperature": 0}
        )
    assert result.answer == " 4"
    assert [p.usage for p in result.phases] == [
        Usage(input=30, output=8, reasoning=8),
        Usage(input=45, output=2),
    ]
    assert scope.spent.reasoning_tokens == 8
    first, second = server.bodies("/v1/completions")
    assert first == {
        "model": MODEL,
        "prompt": "<think>\n",
        "max_tokens": 16,
        "stop": ["</think>"],
        "temperature": 0,
    }
    assert second["prompt"] == "<think>\nso the sum is 4.</think>\nFinal Answer:"
    calls = telemetry.spans(f"text_completion {MODEL}")
    assert [s.attributes["tcc.forcing.phase"] for s in calls] == ["think", "answer"]
    assert calls[0].attributes["gen_ai.usage.reasoning.output_tokens"] == 8
    assert all(s.attributes["gen_ai.provider.name"] == "vllm" for s in calls)


def test_stream_reasoning_deltas_and_usage(
    server: VLLMServer, client: openai.OpenAI, telemetry: Any
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
    stream = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=32,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        got = list(stream)
    body = server.bodies("/v1/chat/completions")[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert got[-1].choices == []
    # reasoning counted through /tokenize: "Two twos." (9 chars -> 2) + "Four" (1)
    final_usage: Any = got[-1].usage
    assert final_usage.completion_tokens_details.reasoning_tokens == 3
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["gen_ai.usage.output_tokens"] == 14
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 3
    assert span.attributes["gen_ai.request.stream"] is True


def test_a_server_that_omits_usage_is_charged_its_reservation(
    server: VLLMServer, client: openai.OpenAI, telemetry: Any
) -> None:
    body = chat_response([chat_choice(0, "4", "four")], usage_info(1, 1))
    del body["usage"]
    server.routes["/v1/chat/completions"] = lambda _: httpx2.Response(200, json=body)
    with tcc_plugin.budget(output_tokens=1000) as scope:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=40)  # type: ignore[arg-type]
    assert scope.spent.output_tokens == 40
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["tcc.usage.estimated"] is True
    assert span.attributes["tcc.usage.missing"] is True


def test_server_errors_are_retried_per_the_policy(
    server: VLLMServer, client: openai.OpenAI
) -> None:
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
    with tcc_plugin.RetryPolicy(sleep=slept.append):
        response = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]
    assert response.choices[0].message.content == "ok"
    assert len(server.bodies("/v1/chat/completions")) == 2


def test_a_client_error_is_raised_with_its_message(
    server: VLLMServer, client: openai.OpenAI
) -> None:
    server.routes["/v1/completions"] = lambda body: httpx2.Response(
        400, json={"error": {"message": "prompt too long", "type": "BadRequestError", "code": 400}}
    )
    with pytest.raises(openai.BadRequestError, match="prompt too long") as info:
        client.completions.create(model=MODEL, prompt="x", max_tokens=4)
    assert info.value.status_code == 400


def test_llama_server_n_is_sent_as_single_choice_requests(telemetry: Any) -> None:
    server = VLLMServer(owner="llamacpp")
    texts = iter(["a", "b", "c"])

    def answer(body: dict[str, Any]) -> httpx2.Response:
        # llama-server: one choice per request, its own completion tokens
        choice = chat_choice(0, next(texts), "think")
        return httpx2.Response(200, json=chat_response([choice], usage_info(10, 5)))

    server.routes["/v1/chat/completions"] = answer
    client = openai_client(server, "http://127.0.0.1:8104", server="llama.cpp", gpu_price=1)
    response = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=5,
        n=3,
        seed=11,
    )
    bodies = server.bodies("/v1/chat/completions")
    assert sorted(b["seed"] for b in bodies) == [11, 12, 13]
    assert all("n" not in b for b in bodies)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert sorted(c.message.content or "" for c in response.choices) == ["a", "b", "c"]
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (10, 15)
    span = telemetry.span(f"chat {MODEL}")
    assert span.attributes["gen_ai.provider.name"] == "llama.cpp"
    assert span.attributes["gen_ai.usage.output_tokens"] == 15
    # "think" -> 1 token per choice, counted with llama-server's /tokenize
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == 3
    assert server.bodies("/tokenize")[0] == {
        "content": "think",
        "add_special": False,
        "parse_special": True,
    }


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


async def test_the_async_client_speaks_the_same_dialect(server: VLLMServer, telemetry: Any) -> None:
    chunks = [
        stream_chunk([delta(0, reasoning="okay")], None),
        stream_chunk([delta(0, content="4")], None),
        stream_chunk([], usage_info(7, 3)),
    ]
    answers = iter(
        [
            httpx2.Response(
                200, json=chat_response([chat_choice(0, "4", "sum")], usage_info(7, 5, 2))
            ),
            httpx2.Response(
                200, content=sse(chunks), headers={"content-type": "text/event-stream"}
            ),
        ]
    )
    server.routes["/v1/chat/completions"] = lambda body: next(answers)
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(server.ahandler))
    client = tcc_plugin.instrument(
        openai.AsyncOpenAI(base_url=BASE + "/v1", api_key="none", http_client=http),
        server="vllm",
        gpu_price=1,
    )
    response = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=16)  # type: ignore[arg-type]
    assert response.usage is not None and response.usage.completion_tokens == 5
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
    )
    got = [chunk async for chunk in stream]
    assert got[-1].choices[0].delta.content == "4"  # the usage chunk was not asked for
    first, second = telemetry.spans(f"chat {MODEL}")
    assert first.attributes["gen_ai.usage.reasoning.output_tokens"] == 2
    assert second.attributes["gen_ai.usage.reasoning.output_tokens"] == 1  # "okay" -> 1
    assert second.attributes["gen_ai.usage.output_tokens"] == 3
    assert {s.attributes["gen_ai.provider.name"] for s in (first, second)} == {"vllm"}
    assert all(s.attributes["tcc.cost.usd"] > 0 for s in (first, second))
