"""``ObservedStream.cancel()``: a sync stream given up because its result is no longer
wanted is charged as a cancelled call (one output token per chunk read), through a real
instrumented ``openai.OpenAI`` whose HTTP is an ``httpx2.MockTransport``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai

import tcc_plugin

from ..conftest import Telemetry

CHUNK = {
    "id": "chatcmpl-c",
    "object": "chat.completion.chunk",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
}


def events() -> Iterator[bytes]:
    for i in range(100):
        chunk = {**CHUNK, "choices": [{"index": 0, "delta": {"content": f"{i} "}}]}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def test_a_cancelled_sync_stream_is_charged_the_chunks_it_read(telemetry: Telemetry) -> None:
    sent = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return httpx2.Response(200, content=events(), headers={"content-type": "text/event-stream"})

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    client = tcc_plugin.instrument(openai.OpenAI(api_key="sk-test", http_client=http))
    with tcc_plugin.budget(output_tokens=1_000) as b:
        stream: Any = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "count"}],
            max_tokens=500,
            stream=True,
            stream_options={"include_usage": True},
        )
        read = [next(stream) for _ in range(3)]
        stream.cancel()
        stream.close()  # idempotent: the call is already ended
    assert len(read) == 3
    assert b.spent.output_tokens == 3  # one token per chunk read, not the 500 reserved
    assert b.spent.calls == 1 and b.reserved.is_zero()
    attributes = dict(telemetry.span("chat gpt-4o-mini").attributes or {})
    assert attributes["tcc.usage.estimated"] is True
    assert attributes["error.type"] == "CancelledError"
    assert attributes["gen_ai.usage.output_tokens"] == 3
