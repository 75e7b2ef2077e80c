"""Spans kept under sustained load: spans written / spans produced, and µs added per call.

A real ``openai.OpenAI`` client, instrumented (``tcc_plugin.instrument``), its HTTP
answered in-process by ``httpx2.MockTransport`` with a chat completion carrying reasoning
and cached tokens, is called at a paced rate (1,000 and 5,000 calls/s) and flat out
(``max``) for ``--seconds`` each, with the pipeline ``tcc_plugin.configure(...)`` sets up:

* ``jsonl``: the embedded default, a JSON-lines file (spans written = lines in it);
* ``otlp-live``: OTLP/HTTP to a live collector (the rotel collector installed by
  ``scripts/phoenix.sh``, started on a loopback port; spans written = spans the
  collector acknowledged, ``TelemetryHandle.span_delivery()``);
* ``otlp-dead``: OTLP/HTTP to a loopback port nobody listens on (spans written = 0;
  what matters is the added time, and that every lost span is counted as dropped);
* ``jsonl-sdk``: the same file exporter behind the OpenTelemetry SDK's stock
  ``BatchSpanProcessor`` (the peer baseline);
* ``baseline``: the same calls with spans recorded but not exported (a no-op processor);
  the added time of every other variant is against it, measured in the same round.

Each (variant, rate) runs in a process of its own (OpenTelemetry's global providers are
set once per process); ``--rounds`` rounds interleave the variants so that load from
elsewhere on the machine falls on all alike. Printed: medians over rounds, with the
spread (min-max) of the added time. A paced rate the process cannot reach is reported
with the rate it reached.

``--driver tracer`` makes the same span (the same 16 attributes) with the tracer directly
instead of through the client, so that 5,000 calls/s is reachable on a loaded machine and
only the span pipeline is measured.

    python benchmarks/span_throughput.py [--seconds 3] [--rounds 3] [--rates 1000,5000,max]
                                         [--driver client|tracer] [--variants ...]

Needs: openai, httpx2, the otlp extra; for ``otlp-live`` the rotel collector from
``scripts/phoenix.sh`` (skipped with a note when it is not installed).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import json, logging, sys, time
    logging.disable(logging.CRITICAL)  # the exporters' own error logs are not measured
    import httpx2, openai
    import tcc_plugin

    variant, endpoint, path = sys.argv[1], sys.argv[2], sys.argv[3]
    rate, seconds, driver = float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
    if variant == "baseline":
        from opentelemetry.sdk.trace import SpanProcessor
        handle = tcc_plugin.configure("none", span_processor=SpanProcessor(), metrics=False)
    elif variant == "jsonl":
        handle = tcc_plugin.configure("jsonl", path=path, metrics=False)
    elif variant == "jsonl-sdk":  # the SDK's own BatchSpanProcessor, same exporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from tcc_plugin.exporters import JsonLinesSpanExporter
        handle = tcc_plugin.configure(
            "none", span_processor=BatchSpanProcessor(JsonLinesSpanExporter(path)),
            metrics=False)
    else:
        handle = tcc_plugin.configure("otlp-http", endpoint=endpoint, metrics=False, timeout=10)
    BODY = {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1741570283,
        "model": "o3-2025-04-16", "service_tier": "default", "system_fingerprint": None,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": "4", "refusal": None,
                                 "annotations": []}}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 900, "total_tokens": 2100,
                  "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 768, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0,
                                                "rejected_prediction_tokens": 0}},
    }
    CONTENT = json.dumps(BODY).encode()
    HEADERS = {"content-type": "application/json"}
    client = openai.OpenAI(
        api_key="sk-bench", max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(
            lambda request: httpx2.Response(200, headers=HEADERS, content=CONTENT))),
    )
    tcc_plugin.instrument(client)
    messages = [{"role": "user", "content": "What is 2+2?"}]

    def call():
        client.chat.completions.create(model="o3", messages=messages, max_completion_tokens=2000)

    if driver == "tracer":  # the same span, without the client: only the pipeline is timed
        from opentelemetry import trace
        tracer = trace.get_tracer("tcc_plugin")
        START = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                 "gen_ai.request.model": "o3", "server.address": "api.openai.com",
                 "server.port": 443, "gen_ai.request.max_tokens": 2000}
        END = {"gen_ai.response.model": "o3-2025-04-16", "gen_ai.response.id": "chatcmpl-bench",
               "gen_ai.response.finish_reasons": ("stop",), "gen_ai.usage.input_tokens": 1200,
               "gen_ai.usage.output_tokens": 900, "gen_ai.usage.reasoning.output_tokens": 768,
               "gen_ai.usage.cache_read.input_tokens": 1024,
               "gen_ai.usage.cache_creation.input_tokens": 0, "tcc.cost.usd": 0.008064,
               "tcc.budget.outcome": "unbudgeted"}

        def call():
            span = tracer.start_span("chat o3", kind=trace.SpanKind.CLIENT, attributes=START)
            span.set_attributes(END)
            span.end()

    for _ in range(200):
        call()
    clock = time.perf_counter
    in_calls = 0.0
    made = 0
    errors = 0
    started = clock()
    while True:
        now = clock()
        elapsed = now - started
        if elapsed >= seconds:
            break
        if rate > 0 and made >= elapsed * rate:
            time.sleep(min(0.002, made / rate - elapsed))  # ahead of schedule: idle
            continue
        t0 = clock()
        try:
            call()
        except Exception:
            errors += 1
        in_calls += clock() - t0
        made += 1
    wall = clock() - started
    t0 = clock()
    handle.shutdown()
    shutdown_s = clock() - t0
    produced = made + 200
    delivery = {name: {"exported": s.exported, "dropped": s.dropped, "queue_full": s.queue_full,
                       "export_failed": s.export_failed, "shutdown": s.shutdown}
                for name, s in handle.span_delivery().items()}
    if variant.startswith("jsonl"):
        with open(path, "rb") as f:
            written = sum(1 for _ in f)
    else:
        written = sum(d["exported"] for d in delivery.values())
    print(json.dumps({
        "produced": produced, "written": written, "dropped": handle.dropped_spans,
        "per_call_us": in_calls / made * 1e6, "achieved": made / wall,
        "errors": errors, "shutdown_s": shutdown_s, "delivery": delivery,
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _rotel_binary() -> Path | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = Path(os.environ.get("TCC_PHOENIX_VENV") or cache / "tcc-plugin" / "phoenix-venv")
    found = sorted((venv / "lib").glob("python*/site-packages/rotel/rotel-agent"))
    return found[0] if found else None


def _start_rotel(binary: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A real collector: OTLP/HTTP in, spans discarded (the blackhole exporter)."""
    http_port, grpc_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            str(binary), "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
            "--exporter", "blackhole",
            "--pid-file", str(workdir / "rotel.pid"),
            "--log-file", str(workdir / "rotel.log"),
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", http_port)) == 0:
                return proc, http_port
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("rotel-agent did not start")


def _run(
    variant: str, endpoint: str, rate: float, seconds: float, driver: str, tmp: Path
) -> dict[str, Any]:
    path = tmp / f"{variant}-{rate}-{time.monotonic_ns()}.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [
            *(sys.executable, "-c", WORKER, variant, endpoint, str(path)),
            *(str(rate), str(seconds), driver),
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rates", default="1000,5000,max")
    parser.add_argument("--variants", default="jsonl,jsonl-sdk,otlp-live,otlp-dead")
    parser.add_argument(
        "--driver",
        choices=("client", "tracer"),
        default="client",
        help="client: instrumented OpenAI calls; tracer: the same span made directly, so"
        " that the rate is reachable on a loaded machine and only the pipeline is timed",
    )
    parser.add_argument("--json", action="store_true", help="print the raw results too")
    args = parser.parse_args()
    rates = [0.0 if r == "max" else float(r) for r in args.rates.split(",")]
    variants = ["baseline", *args.variants.split(",")]

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        endpoints = {
            "baseline": "",
            "jsonl": "",
            "jsonl-sdk": "",
            "otlp-dead": f"http://127.0.0.1:{_free_port()}",
        }
        if "otlp-live" in variants:
            binary = _rotel_binary()
            if binary is None:
                print("otlp-live skipped: run scripts/phoenix.sh to install the rotel collector")
                variants.remove("otlp-live")
            else:
                proc, port = _start_rotel(binary, tmp)
                stack.callback(proc.wait, 10)
                stack.callback(proc.terminate)
                endpoints["otlp-live"] = f"http://127.0.0.1:{port}"

        results: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for rate in rates:
                for variant in variants:
                    result = _run(variant, endpoints[variant], rate, args.seconds, args.driver, tmp)
                    results.setdefault((variant, rate), []).append(result)

    if args.json:
        print(json.dumps({f"{v}@{r}": rs for (v, r), rs in results.items()}, indent=1))
    print(
        f"driver {args.driver}; {args.rounds} round(s) of {args.seconds:g} s per (variant, rate);"
        " medians, spread; written/produced: the worst round"
    )
    header = (
        f"{'variant':<10} {'target/s':>8} {'reached/s':>9} {'written/produced':>22}"
        f" {'dropped':>8} {'µs/call':>8} {'added µs (min..max)':>22} {'shutdown s':>10}"
    )
    print(header)
    for rate in rates:
        base = results[("baseline", rate)]
        base_us = [r["per_call_us"] for r in base if "error" not in r]
        for variant in variants:
            runs = [r for r in results[(variant, rate)] if "error" not in r]
            if not runs:
                print(f"{variant:<10} failed: {results[(variant, rate)][0]['error'][-500:]}")
                continue
            added = [r["per_call_us"] - b for r, b in zip(runs, base_us, strict=False)]
            produced = int(statistics.median(r["produced"] for r in runs))
            written = int(statistics.median(r["written"] for r in runs))
            ratio = min(r["written"] / r["produced"] for r in runs)
            print(
                f"{variant:<10} {'max' if rate == 0 else int(rate):>8}"
                f" {statistics.median(r['achieved'] for r in runs):>9.0f}"
                f" {written:>8}/{produced:<7} {ratio:>5.1%}"
                f" {int(statistics.median(r['dropped'] for r in runs)):>8}"
                f" {statistics.median(r['per_call_us'] for r in runs):>8.1f}"
                + (
                    f" {statistics.median(added):>8.1f} ({min(added):.1f}..{max(added):.1f})"
                    if variant != "baseline"
                    else f" {'':>22}"
                )
                + f" {statistics.median(r['shutdown_s'] for r in runs):>10.2f}"
            )


if __name__ == "__main__":
    main()
