"""A collector that is down or hung: calls are not slowed, nothing reaches the caller,
every span is counted, and the application still exits promptly.

The real OTLP exporters (HTTP and gRPC) run in a fresh interpreter each (OpenTelemetry's
global providers are set once per process), configured by tcc_plugin.configure().
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcc_plugin.telemetry.delivery import SHUTDOWN_TIMEOUT_S

APP = textwrap.dedent(
    """
    import json, logging, sys, time
    logging.disable(logging.CRITICAL)
    from opentelemetry.sdk.trace import SpanProcessor
    import tcc_plugin

    exporter, endpoint, calls, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    @tcc_plugin.llm_call(model="o3", provider="openai")
    def ask(question, max_tokens=2000):
        return {"model": "o3", "choices": [{"index": 0, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 600,
                          "completion_tokens_details": {"reasoning_tokens": 500}}}

    def timed():
        errors, clock = 0, time.perf_counter
        for _ in range(100):
            ask("warm-up")
        start = clock()
        for _ in range(calls):
            try:
                ask("2+2?")
            except Exception:
                errors += 1
        return (clock() - start) / calls, errors

    # The same calls with the SDK recording spans and nothing exporting them...
    baseline = tcc_plugin.configure("none", span_processor=SpanProcessor(), metrics=False)
    base_per_call, _ = timed()
    baseline.shutdown()
    # ... then exporting to the collector under test.
    handle = tcc_plugin.configure(exporter, endpoint=endpoint, metrics=False)
    per_call, errors = timed()
    result = {"added_ms": (per_call - base_per_call) * 1e3, "errors": errors}
    if mode == "shutdown":
        start = time.perf_counter()
        handle.shutdown()
        result["shutdown_s"] = time.perf_counter() - start
        stats = handle.span_delivery()[exporter]
        result.update(exported=stats.exported, dropped=stats.dropped,
                      handle_dropped=handle.dropped_spans, queued=stats.queued)
    print("RESULT " + json.dumps(result), flush=True)
    # mode "exit": leave it to the SDK's atexit shutdown
    """
)

CALLS = 1000
SPANS = CALLS + 100  # with the warm-up calls


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def hung_collector() -> Iterator[int]:
    """A loopback port whose connections the kernel accepts and nobody ever answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock.getsockname()[1]
    sock.close()


def run_app(
    tmp_path: Path, exporter: str, endpoint: str, mode: str = "shutdown"
) -> tuple[dict[str, Any], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", APP, exporter, endpoint, str(CALLS), mode],
        cwd=tmp_path,  # not the repository (its tcc_plugin/ would shadow the install)
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard
        check=False,
    )
    wall = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1].removeprefix("RESULT ")), wall


@pytest.mark.parametrize("exporter", ["otlp-http", "otlp-grpc"])
def test_collector_down(tmp_path: Path, exporter: str) -> None:
    result, _ = run_app(tmp_path, exporter, f"http://127.0.0.1:{free_port()}")
    assert result["errors"] == 0
    # Exporting happens off the caller's thread: a dead collector adds (much) less than
    # 1 ms per call (benchmarks/exporter_down.py measures it: a few microseconds).
    assert result["added_ms"] < 1.0
    assert result["exported"] == 0
    assert result["dropped"] == result["handle_dropped"] == SPANS
    assert result["queued"] == 0
    assert result["shutdown_s"] < SHUTDOWN_TIMEOUT_S + 2


def test_collector_hung(tmp_path: Path, hung_collector: int) -> None:
    result, _ = run_app(tmp_path, "otlp-http", f"http://127.0.0.1:{hung_collector}")
    assert result["errors"] == 0
    assert result["added_ms"] < 1.0
    assert result["dropped"] == SPANS
    # The SDK alone would wait 30 s for the export thread at shutdown.
    assert result["shutdown_s"] < SHUTDOWN_TIMEOUT_S + 2


def test_the_application_exits_promptly_with_the_collector_down(
    tmp_path: Path, hung_collector: int
) -> None:
    # No handle.shutdown(): the SDK's own exit hook shuts the exporters down.
    result, wall = run_app(tmp_path, "otlp-http", f"http://127.0.0.1:{hung_collector}", "exit")
    assert result["errors"] == 0
    assert wall < SHUTDOWN_TIMEOUT_S + 15  # interpreter start-up and imports included
