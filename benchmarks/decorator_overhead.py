"""Added wall time per @llm_call call, against the bare function.

Each variant runs in its own process (OpenTelemetry's global providers are set once per
process). The SDK variants set a tracer provider and a meter provider (an in-memory
reader, never collected), so spans and metrics are both recorded. Prints the median
added microseconds per call and the ratio to the bare call.

    python benchmarks/decorator_overhead.py [--calls 20000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap

VARIANTS = {
    "bare function": "none",
    "@llm_call, no OTel SDK (no-op tracer)": "noop",
    "@llm_call, SDK, no exporter": "sdk",
    "@llm_call, SDK, JSONL exporter": "jsonl",
    "@llm_call, SDK, JSONL exporter, inside a budget": "jsonl+budget",
}

WORKER = textwrap.dedent(
    """
    import json, sys, time, statistics
    mode, calls, repeats, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    BODY = {"id": "c", "object": "chat.completion", "model": "o3",
            "choices": [{"index": 0, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 600,
                      "prompt_tokens_details": {"cached_tokens": 400},
                      "completion_tokens_details": {"reasoning_tokens": 500}}}
    def call(question, max_tokens=2000):
        return BODY
    provider = None
    if mode in ("sdk", "jsonl", "jsonl+budget"):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        provider = TracerProvider()
        if mode.startswith("jsonl"):
            from tcc_plugin.exporters.jsonl import JsonLinesSpanExporter
            provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(path)))
        trace.set_tracer_provider(provider)
        # Metrics are aggregated in-process whatever the exporter: a reader that is
        # never collected measures the per-call cost without an export.
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    fn = call
    if mode != "none":
        import tcc_plugin
        fn = tcc_plugin.llm_call(model="o3", provider="openai")(call)
    import contextlib
    scope = contextlib.nullcontext()
    if mode.endswith("budget"):
        import tcc_plugin
        scope = tcc_plugin.budget(usd=10**9, calls=10**9)
    per_call = []
    with scope:
        for _ in range(200):
            fn("warm-up")
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(calls):
                fn("2+2?")
            per_call.append((time.perf_counter() - t) / calls * 1e6)
    if provider is not None:
        provider.shutdown()
    print(json.dumps({"median_us": statistics.median(per_call)}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, mode in VARIANTS.items():
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    mode,
                    str(args.calls),
                    str(args.repeats),
                    f"{tmp}/{mode}.jsonl",
                ],
                capture_output=True,
                text=True,
                cwd=tmp,
            )
            if out.returncode != 0:
                raise SystemExit(f"variant {label!r} failed:\n{out.stderr}")
            results[label] = json.loads(out.stdout.strip().splitlines()[-1])["median_us"]
    bare = results["bare function"]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"@llm_call overhead ({args.calls} calls x {args.repeats}, median)")
        for col in ("variant", "us / call", "added us / call", "x bare"):
            table.add_column(col, justify="right" if col != "variant" else "left")
        for label, us in results.items():
            table.add_row(label, f"{us:.2f}", f"{us - bare:.2f}", f"{us / bare:.1f}")
        Console().print(table)
    except ImportError:
        for label, us in results.items():
            print(f"{label:50s} {us:9.2f} us/call  added {us - bare:9.2f} us  x{us / bare:.1f}")


if __name__ == "__main__":
    main()
