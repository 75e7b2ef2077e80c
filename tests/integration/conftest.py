"""Real OpenAI and Anthropic SDK clients whose HTTP is answered by ``httpx2.MockTransport``.

Payloads follow each provider's documented schema (field names checked against the
installed SDKs' types): non-stream JSON bodies, SSE streams (OpenAI ``data:`` lines
ending in ``[DONE]``; Responses and Anthropic named ``event:`` lines), and error
bodies with their headers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

httpx2 = pytest.importorskip("httpx2")

Answer = Any  # an httpx2.Response, or a callable(request) -> httpx2.Response


@dataclass
class MockAPI:
    """Answers requests in order from ``answers`` and keeps every request it saw."""

    answers: list[Answer] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)

    def queue(self, *answers: Answer) -> MockAPI:
        self.answers.extend(answers)
        return self

    def handler(self, request: Any) -> Any:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self.answers.pop(0)
        return answer(request) if callable(answer) else answer

    def body(self, i: int = -1) -> dict[str, Any]:
        """The JSON body of request ``i``."""
        data: dict[str, Any] = json.loads(self.requests[i].content)
        return data

    @property
    def count(self) -> int:
        return len(self.requests)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    return httpx2.Response(status, json=body, headers=headers or {})


def sse_lines(events: Iterable[tuple[str | None, Any]]) -> list[bytes]:
    """SSE frames: ``(event name or None, data)``; data ``"[DONE]"`` is sent verbatim."""
    frames = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        head = f"event: {name}\n" if name else ""
        frames.append(f"{head}data: {text}\n\n".encode())
    return frames


def sse_response(
    events: Iterable[tuple[str | None, Any]],
    *,
    fail_after: int | None = None,
    asynchronous: bool = False,
) -> Any:
    """A ``text/event-stream`` response; ``fail_after`` frames, the connection drops."""
    frames = sse_lines(events)

    def chunks() -> Iterator[bytes]:
        for i, frame in enumerate(frames):
            if fail_after is not None and i == fail_after:
                raise httpx2.ReadError("connection reset by peer")
            yield frame

    async def achunks() -> AsyncIterator[bytes]:
        for chunk in chunks():
            yield chunk

    return httpx2.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=achunks() if asynchronous else chunks(),
    )


# -- OpenAI payloads ---------------------------------------------------------------------
def chat_usage(
    prompt: int, completion: int, *, cached: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(
    usage: dict[str, Any] | None,
    *,
    model: str = "o3-2025-04-16",
    contents: Iterable[str] = ("4",),
    finish: str = "stop",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish,
            }
            for i, text in enumerate(contents)
        ],
        "service_tier": "default",
        "system_fingerprint": None,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chat_chunks(
    texts: Iterable[str], usage: dict[str, Any] | None, *, model: str = "o3-2025-04-16", n: int = 1
) -> list[tuple[str | None, Any]]:
    """The SSE events of a streamed chat completion (the usage chunk when ``usage``)."""
    base = {
        "id": "chatcmpl-stream-1",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": model,
        "system_fingerprint": None,
        "service_tier": "default",
    }
    events: list[tuple[str | None, Any]] = []
    for index in range(n):
        delta = {"role": "assistant", "content": "", "refusal": None}
        events.append(
            (
                None,
                {
                    **base,
                    "choices": [
                        {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
                    ],
                    "usage": None,
                },
            )
        )
    for text in texts:
        for index in range(n):
            events.append(
                (
                    None,
                    {
                        **base,
                        "choices": [
                            {
                                "index": index,
                                "delta": {"content": text},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                        "usage": None,
                    },
                )
            )
    for index in range(n):
        events.append(
            (
                None,
                {
                    **base,
                    "choices": [
                        {"index": index, "delta": {}, "logprobs": None, "finish_reason": "stop"}
                    ],
                    "usage": None,
                },
            )
        )
    if usage is not None:
        events.append((None, {**base, "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    return events


def responses_usage(inp: int, out: int, *, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": inp + out,
    }


def response_object(
    usage: dict[str, Any] | None,
    *,
    model: str = "gpt-5-2025-08-07",
    status: str = "completed",
    text: str = "4",
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if status == "completed":
        output = [
            {"id": "rs_1", "type": "reasoning", "summary": []},
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            },
        ]
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def response_events(
    usage: dict[str, Any], *, model: str = "gpt-5-2025-08-07", text: str = "4"
) -> list[tuple[str | None, Any]]:
    """The documented event sequence of a streamed response with a reasoning item and a
    message; usage arrives in ``response.completed``."""
    created = response_object(None, model=model, status="in_progress")
    done = response_object(usage, model=model, text=text)
    reasoning, message = done["output"]
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    sequence: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": created}),
        ("response.in_progress", {"response": created}),
        ("response.output_item.added", {"output_index": 0, "item": reasoning}),
        ("response.output_item.done", {"output_index": 0, "item": reasoning}),
        (
            "response.output_item.added",
            {"output_index": 1, "item": {**message, "status": "in_progress", "content": []}},
        ),
        (
            "response.content_part.added",
            {"item_id": "msg_1", "output_index": 1, "content_index": 0, "part": part},
        ),
        (
            "response.output_text.delta",
            {
                "item_id": "msg_1",
                "output_index": 1,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        ),
        (
            "response.output_text.done",
            {
                "item_id": "msg_1",
                "output_index": 1,
                "content_index": 0,
                "text": text,
                "logprobs": [],
            },
        ),
        (
            "response.content_part.done",
            {
                "item_id": "msg_1",
                "output_index": 1,
                "content_index": 0,
                "part": {**part, "text": text},
            },
        ),
        ("response.output_item.done", {"output_index": 1, "item": message}),
        ("response.completed", {"response": done}),
    ]
    return [
        (name, {"type": name, "sequence_number": i, **data})
        for i, (name, data) in enumerate(sequence)
    ]


def completion_object(
    usage: dict[str, Any] | None, *, n: int = 1, model: str = "gpt-3.5-turbo-instruct"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        "object": "text_completion",
        "created": 1589478378,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "text": f"\n\nThis is test {i}",
                "index": i,
                "logprobs": None,
                "finish_reason": "length",
            }
            for i in range(n)
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def openai_error(status: int, message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# -- Anthropic payloads ------------------------------------------------------------------
def anthropic_usage(
    inp: int,
    out: int,
    *,
    read: int = 0,
    write_5m: int = 0,
    write_1h: int = 0,
    thinking: int | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": inp,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        },
        "output_tokens": out,
        "service_tier": "standard",
    }
    if thinking is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return usage


def anthropic_message(
    usage: dict[str, Any],
    *,
    model: str = "claude-sonnet-4-5-20250929",
    thinking: bool = True,
    text: str = "4",
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if thinking:
        content.append(
            {
                "type": "thinking",
                "thinking": "2 plus 2 is 4.",
                "signature": "EqQBCgIYAhIM1gbcDa9GJwZA",
            }
        )
    content.append({"type": "text", "text": text})
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_events(
    start_usage: dict[str, Any],
    final_usage: dict[str, Any],
    *,
    model: str = "claude-sonnet-4-5-20250929",
    text: str = "4",
) -> list[tuple[str | None, Any]]:
    """A streamed message with a thinking block and a text block. ``message_delta``
    carries the cumulative usage (it has no ``cache_creation`` breakdown)."""
    message = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    delta_usage = {
        k: v for k, v in final_usage.items() if k not in ("cache_creation", "service_tier")
    }
    return [
        ("message_start", {"type": "message_start", "message": message}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "2 plus 2 is 4."},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "text_delta", "text": text},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": delta_usage,
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def anthropic_error(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


# -- clients -----------------------------------------------------------------------------
@pytest.fixture
def api() -> MockAPI:
    return MockAPI()


@pytest.fixture
def openai_client(api: MockAPI) -> Any:
    openai = pytest.importorskip("openai")
    return openai.OpenAI(
        api_key="sk-test", http_client=httpx2.Client(transport=httpx2.MockTransport(api.handler))
    )


@pytest.fixture
def async_openai_client(api: MockAPI) -> Any:
    openai = pytest.importorskip("openai")
    return openai.AsyncOpenAI(
        api_key="sk-test",
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(api.handler)),
    )


@pytest.fixture
def anthropic_client(api: MockAPI) -> Any:
    anthropic = pytest.importorskip("anthropic")
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(api.handler)),
    )


@pytest.fixture
def async_anthropic_client(api: MockAPI) -> Any:
    anthropic = pytest.importorskip("anthropic")
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-test",
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(api.handler)),
    )


@pytest.fixture
def no_sleep() -> Callable[[float], None]:
    """A sleep that records what it was asked to wait, and never waits."""
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)

    sleep.waits = waits  # type: ignore[attr-defined]
    return sleep
