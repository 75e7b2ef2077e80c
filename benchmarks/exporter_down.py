"""What a collector that is down costs the calls: added time per call, and dropped spans.

Each variant runs in its own process (OpenTelemetry's global providers are set once per
process), configured with ``tcc_plugin.configure(...)`` and timing every call of an
``@llm_call`` function that returns a canned OpenAI-shaped response:

* ``healthy``: OTLP to a loopback collector stand-in that accepts every export
  (HTTP: a tiny server answering 200; gRPC: a real ``TraceService`` server);
* ``refused``: OTLP to a loopback port nobody listens on (collector down);
* ``hung``: OTLP/HTTP to a socket that accepts connections and never answers.

Prints, per variant, the mean, p99 and max wall time per call, the mean added against
the healthy collector of the same protocol (target: < 1 ms), the spans exported and
dropped (``TelemetryHandle.dropped_spans``), whether any exception reached the caller,
and how long ``shutdown()`` took.

    python benchmarks/exporter_down.py [--calls 5000] [--repeats 5] [--processes 3] [--json]

Each variant runs in ``--processes`` separate processes, interleaved with the other
variants so that a burst of load elsewhere on the machine hits them all alike; the
figures are those of the process with the median mean.
"""

from __future__ import annotations

import argparse
import http.server
import json
import socket
import subprocess
import sys
import textwrap
import threading
from concurrent import futures
from typing import Any

WORKER = textwrap.dedent(
    """
    import json, logging, sys, time
    logging.disable(logging.CRITICAL)  # the exporters' own error logs are not measured
    import tcc_plugin

    exporter, endpoint = sys.argv[1], sys.argv[2]
    calls, repeats = int(sys.argv[3]), int(sys.argv[4])
    if exporter == "none":  # the SDK records spans, nothing exports them
        from opentelemetry.sdk.trace import SpanProcessor
        handle = tcc_plugin.configure("none", span_processor=SpanProcessor(), metrics=False)
    else:
        handle = tcc_plugin.configure(exporter, endpoint=endpoint, metrics=False, timeout=10)
    BODY = {"id": "c", "object": "chat.completion", "model": "o3",
            "choices": [{"index": 0, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 600,
                      "prompt_tokens_details": {"cached_tokens": 400},
                      "completion_tokens_details": {"reasoning_tokens": 500}}}

    @tcc_plugin.llm_call(model="o3", provider="openai")
    def ask(question, max_tokens=2000):
        return BODY

    errors = 0
    for _ in range(200):
        ask("warm-up")
    per_call = []
    clock = time.perf_counter
    for _ in range(repeats):
        for _ in range(calls):
            start = clock()
            try:
                ask("2+2?")
            except Exception:
                errors += 1
            per_call.append(clock() - start)
        time.sleep(0.2)  # let the exporter thread run between rounds, as in an app
    start = clock()
    handle.shutdown()
    shutdown_s = clock() - start
    delivery = {
        name: {"exported": s.exported, "dropped": s.dropped, "export_failed": s.export_failed,
               "queue_full": s.queue_full, "shutdown": s.shutdown}
        for name, s in handle.span_delivery().items()
    }
    per_call.sort()
    n = len(per_call)
    print(json.dumps({
        "mean_us": sum(per_call) / n * 1e6,
        "p50_us": per_call[n // 2] * 1e6,
        "p99_us": per_call[min(n - 1, int(n * 0.99))] * 1e6,
        "max_us": per_call[-1] * 1e6,
        "calls": n,
        "errors": errors,
        "dropped": handle.dropped_spans,
        "delivery": delivery,
        "shutdown_s": shutdown_s,
    }))
    """
)


class _Sink(http.server.BaseHTTPRequestHandler):
    """A collector stand-in: reads each OTLP/HTTP export and answers 200."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _grpc_sink() -> tuple[Any, int]:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )

    class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _run(exporter: str, endpoint: str, calls: int, repeats: int) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, exporter, endpoint, str(calls), str(repeats)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{exporter} {endpoint} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per process")
    parser.add_argument("--processes", type=int, default=3, help="processes per variant")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    http_sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=http_sink.serve_forever, daemon=True).start()
    grpc_server, grpc_port = _grpc_sink()
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)  # accepted by the kernel, never answered
    closed = _free_port()

    variants = {
        "no exporter": ("none", ""),
        "otlp-http healthy": ("otlp-http", f"http://127.0.0.1:{http_sink.server_address[1]}"),
        "otlp-http refused": ("otlp-http", f"http://127.0.0.1:{closed}"),
        "otlp-http hung": ("otlp-http", f"http://127.0.0.1:{blackhole.getsockname()[1]}"),
        "otlp-grpc healthy": ("otlp-grpc", f"http://127.0.0.1:{grpc_port}"),
        "otlp-grpc refused": ("otlp-grpc", f"http://127.0.0.1:{closed}"),
    }
    results: dict[str, dict[str, Any]] = {}
    try:
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
        for _ in range(args.processes):
            for label, (exporter, endpoint) in variants.items():
                runs[label].append(_run(exporter, endpoint, args.calls, args.repeats))
        for label, done in runs.items():
            done.sort(key=lambda r: r["mean_us"])
            results[label] = done[len(done) // 2]
            results[label]["dropped_every_span"] = all(
                r["dropped"] == r["calls"] + 200 for r in done
            )
            results[label]["errors"] = sum(r["errors"] for r in done)
            results[label]["max_shutdown_s"] = max(r["shutdown_s"] for r in done)
    finally:
        http_sink.shutdown()
        grpc_server.stop(0)
        blackhole.close()

    baseline = results["no exporter"]["mean_us"]
    for label, result in results.items():
        healthy = results.get(label.split()[0] + " healthy", results["no exporter"])
        result["added_us"] = result["mean_us"] - healthy["mean_us"]
        result["added_vs_no_exporter_us"] = result["mean_us"] - baseline
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{args.calls * args.repeats} calls per variant; wall time per call in microseconds;"
        " added: mean minus the mean with a healthy collector of the same protocol,"
        " and minus the mean with no exporter (target: < 1000 us)\n"
    )
    header = (
        f"{'variant':<19}{'mean':>8}{'p99':>8}{'max':>9}{'added':>8}{'vs none':>9}"
        f"{'exported':>10}{'dropped':>9}{'errors':>8}{'shutdown':>10}"
        "   (median process; errors: all processes; shutdown: the slowest)"
    )
    print(header)
    for label, r in results.items():
        exported = sum(d["exported"] for d in r["delivery"].values())
        print(
            f"{label:<19}{r['mean_us']:>8.1f}{r['p99_us']:>8.1f}{r['max_us']:>9.1f}"
            f"{r['added_us']:>8.1f}{r['added_vs_no_exporter_us']:>9.1f}{exported:>10}"
            f"{r['dropped']:>9}{r['errors']:>8}{r['max_shutdown_s']:>9.2f}s"
        )
    down = {k: r for k, r in results.items() if "healthy" not in k and k != "no exporter"}
    worst = max(max(r["added_us"], r["added_vs_no_exporter_us"]) for r in down.values())
    counted = all(r["dropped_every_span"] for r in down.values())
    print(f"\nworst added time per call with the collector down: {worst:.1f} us")
    print(f"every span counted as dropped with the collector down: {'yes' if counted else 'NO'}")


if __name__ == "__main__":
    main()
