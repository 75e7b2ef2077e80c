"""N concurrent samples against a loopback server with a fixed latency: wall time of the
group divided by one call's. Target: <= 1.15 at N = 16.

A local HTTP server, in its own process as a remote API would be, answers OpenAI chat
completions after a fixed delay (default 200 ms). Real ``openai`` clients (sync and
async), instrumented by tcc-plugin, talk to it over loopback; spans go to an
OpenTelemetry SDK pipeline. For each driver it times one call, then a group of N
samples with ``concurrency=N`` (medians of the repeats), and prints the ratio.
Baseline rows make the same N calls without the sampling machinery (a thread pool /
``asyncio.gather``), over plain clients (what the SDK and Python cost by themselves)
and over instrumented ones (what per-call budgets, pricing and spans add).

    python benchmarks/sampling_parallel.py [--n 16] [--latency 0.2] [--repeats 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

BODY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_760_000_000,
    "model": "o3-2025-04-16",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Final Answer: 42", "refusal": None},
        }
    ],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 120,
        "total_tokens": 150,
        "completion_tokens_details": {"reasoning_tokens": 100},
    },
}
QUESTION = [{"role": "user", "content": "What is 6 x 7?"}]


def serve(latency: float) -> None:
    """Run the server in this process until killed; print its port first.

    One asyncio loop, minimal HTTP/1.1 with keep-alive: each request is answered
    ``latency`` seconds after it arrived, whatever else is in flight."""
    payload = json.dumps(BODY).encode()
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in header.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                await asyncio.sleep(latency)
                writer.write(head + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(main())


def start_server(latency: float) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.latency)
        return 0

    import openai
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from tcc_plugin import budget
    from tcc_plugin.instrument import instrument
    from tcc_plugin.sampling import aself_consistency, self_consistency

    class Discard(SpanExporter):
        """Exports spans nowhere (a collector's cost is not ours to measure), keeping
        nothing in memory."""

        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)

    server, port = start_server(args.latency)
    base = f"http://127.0.0.1:{port}/v1"
    plain = openai.OpenAI(base_url=base, api_key="sk-local", max_retries=0)
    aplain = openai.AsyncOpenAI(base_url=base, api_key="sk-local", max_retries=0)
    client = instrument(openai.OpenAI(base_url=base, api_key="sk-local", max_retries=0))
    aclient = instrument(openai.AsyncOpenAI(base_url=base, api_key="sk-local", max_retries=0))
    pool = ThreadPoolExecutor(args.n)

    def bare() -> Any:
        return plain.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=1000
        )

    async def abare() -> Any:
        return await aplain.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=1000
        )

    def bare_group() -> None:
        list(pool.map(lambda _: bare(), range(args.n)))

    async def abare_group() -> None:
        await asyncio.gather(*(abare() for _ in range(args.n)))

    def one() -> Any:
        return client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=1000
        )

    async def aone() -> Any:
        return await aclient.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=1000
        )

    def group() -> None:
        with budget(usd=10):
            result = self_consistency(one, n=args.n, concurrency=args.n, stop=None)
        assert result.completed == args.n

    async def agroup() -> None:
        async with budget(usd=10):
            result = await aself_consistency(aone, n=args.n, concurrency=args.n, stop=None)
        assert result.completed == args.n

    loop = asyncio.new_event_loop()
    run = loop.run_until_complete

    def instrumented_group() -> None:
        with budget(usd=10):
            list(pool.map(lambda _: one(), range(args.n)))

    async def ainstrumented_group() -> None:
        async with budget(usd=10):
            await asyncio.gather(*(aone() for _ in range(args.n)))

    variants = [
        ("plain client, thread pool", bare, bare_group),
        ("plain client, gather", lambda: run(abare()), lambda: run(abare_group())),
        ("tcc client, thread pool", one, instrumented_group),
        ("tcc client, gather", lambda: run(aone()), lambda: run(ainstrumented_group())),
        ("self_consistency (threads)", one, group),
        ("aself_consistency (tasks)", lambda: run(aone()), lambda: run(agroup())),
    ]
    singles: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    groups: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    for _, single, many in variants:  # warm up: connections open, imports done
        single()
        many()
    for _ in range(args.repeats):  # interleaved, so every variant sees the same machine
        for label, single, many in variants:
            singles[label].append(timed(single))
            groups[label].append(timed(many))
    rows = []
    for label, _, _ in variants:
        t1, tn = statistics.median(singles[label]), statistics.median(groups[label])
        rows.append((label, t1, tn, tn / t1))
    loop.close()
    pool.shutdown()
    server.kill()
    server.wait()
    provider.shutdown()

    print(f"N = {args.n} samples, concurrency {args.n}, server latency {args.latency * 1e3:.0f} ms")
    print(f"{'driver':<30} {'one call':>10} {'group of N':>11} {'ratio':>7}")
    for label, t1, tn, ratio in rows:
        print(f"{label:<30} {t1 * 1e3:>8.1f}ms {tn * 1e3:>9.1f}ms {ratio:>7.3f}")
    worst = max(r[3] for r in rows[4:])
    print(f"target <= 1.15: {'met' if worst <= 1.15 else 'MISSED'} (worst ratio {worst:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
