"""Time tcc-plugin adds to a streamed OpenAI chat call, per stream and per chunk.

A real ``openai.OpenAI`` client streams a chat completion of ``--chunks`` content chunks,
a finish chunk and the usage chunk (``stream_options.include_usage``), answered
in-process by ``httpx2.MockTransport``; spans go to an ``InMemorySpanExporter`` and
metrics to an ``InMemoryMetricReader``. The process times ``--repeats`` pairs of
batches, instrumented (``tcc_plugin.instrument``) then bare (``uninstrument``), each the
fastest of ``--streams`` streams, and prints the median added time per stream and per
chunk against the bare stream.

    python benchmarks/stream_overhead.py [--chunks 200] [--streams 5] [--repeats 15]

Needs: openai, httpx2, opentelemetry-sdk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def _body(chunks: int) -> bytes:
    def chunk(**fields: Any) -> dict[str, Any]:
        head = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1}
        return {**head, "model": "o3-2025-04-16", **fields}

    events = [
        chunk(choices=[{"index": 0, "delta": {"content": "x"}, "finish_reason": None}])
        for _ in range(chunks)
    ]
    events.append(chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": chunks,
        "total_tokens": chunks + 10,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    events.append(chunk(choices=[], usage=usage))
    frames = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
    return frames + b"data: [DONE]\n\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    import httpx2
    import openai
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import tcc_plugin
    from tcc_plugin.integrations.openai import uninstrument

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

    body = _body(args.chunks)
    headers = {"content-type": "text/event-stream"}
    client = openai.OpenAI(
        api_key="sk-bench",
        max_retries=0,
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(
                lambda _: httpx2.Response(200, headers=headers, content=body)
            )
        ),
    )
    messages = [{"role": "user", "content": "Count."}]

    def one_stream() -> float:
        start = time.perf_counter()
        stream = client.chat.completions.create(
            model="o3", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
        return (time.perf_counter() - start) * 1e6

    def fastest() -> float:
        return min(one_stream() for _ in range(args.streams))

    fastest()
    bare, added = [], []
    for _ in range(args.repeats):
        tcc_plugin.instrument(client)
        instrumented = fastest()
        uninstrument(client)
        plain = fastest()
        bare.append(plain)
        added.append(instrumented - plain)
        spans.clear()
    chunks = args.chunks + 2
    per_stream = statistics.median(added)
    print(
        f"stream of {chunks} chunks: bare {statistics.median(bare):.0f} us; tcc-plugin adds "
        f"{per_stream:.0f} us per stream ({per_stream / chunks:.2f} us per chunk, "
        f"{per_stream / statistics.median(bare):.1%})"
    )


if __name__ == "__main__":
    main()
