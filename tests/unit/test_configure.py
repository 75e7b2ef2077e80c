"""configure(): exporter setup through the global OpenTelemetry providers.

The global providers can be set once per process, so every case that installs them runs
in a fresh interpreter and is judged by what it prints and the files it writes. Only
argument errors, which fail before any global state is touched, run in this process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tcc_plugin import exporters
from tcc_plugin.telemetry import names
from tcc_plugin.telemetry.configure import configure as configure_fn

read_spans, read_metrics = exporters.read_spans, exporters.read_metrics

PRELUDE = """
import json, logging, os, sys
from pathlib import Path
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from tcc_plugin.telemetry import names
from tcc_plugin.telemetry.configure import configure

class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []
    def emit(self, record):
        self.messages.append((record.levelname, record.getMessage()))

LOGS = _Collect()
logging.getLogger("tcc_plugin.telemetry").addHandler(LOGS)
logging.getLogger("tcc_plugin.telemetry").setLevel(logging.DEBUG)

def emit(**result):
    print("RESULT " + json.dumps(result, default=str), flush=True)

def sdk_traces():
    return isinstance(trace.get_tracer_provider(), SdkTracerProvider)

def sdk_metrics():
    return isinstance(metrics.get_meter_provider(), SdkMeterProvider)
"""


def run(
    code: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run ``code`` after PRELUDE in a fresh interpreter; return what it ``emit``-ted."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not a measurement
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, proc.stdout + proc.stderr
    return json.loads(results[-1].removeprefix("RESULT ")), proc


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _metric(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    matching = [r for r in records if r["name"] == name]
    assert matching, f"no {name} in {[r['name'] for r in records]}"
    return matching[-1]


# -- the default: JSON lines ----------------------------------------------------------------
def test_default_writes_spans_and_metrics_to_jsonl(tmp_path: Path) -> None:
    result, _ = run(
        """
        # Created before configure(), as the recorder does at import: a proxy instrument.
        early = metrics.get_meter("tcc_plugin").create_histogram(
            names.METRIC_OPERATION_DURATION,
            explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
        )
        handle = configure(path="out/t.jsonl", service_name="svc")
        tracer = trace.get_tracer("tcc_plugin")
        with tracer.start_as_current_span("group"):
            with tracer.start_as_current_span("call", attributes={names.REQUEST_MODEL: "m"}):
                pass
        tokens = metrics.get_meter("tcc_plugin").create_histogram(
            names.METRIC_TOKEN_USAGE,
            explicit_bucket_boundaries_advisory=list(names.TOKEN_USAGE_BUCKETS),
        )
        tokens.record(300, {names.TOKEN_TYPE: "output"})
        early.record(0.5)
        emit(
            flushed=handle.force_flush(),
            traces_path=handle.traces_path,
            metrics_path=handle.metrics_path,
            trace_exporters=handle.trace_exporters,
            metric_exporters=handle.metric_exporters,
            sdk=[sdk_traces(), sdk_metrics()],
            same=[handle.tracer_provider is trace.get_tracer_provider(),
                  handle.meter_provider is metrics.get_meter_provider()],
        )
        """,
        tmp_path,
    )
    traces, metrics_file = tmp_path / "out" / "t.jsonl", tmp_path / "out" / "t.metrics.jsonl"
    assert result == {
        "flushed": True,
        "traces_path": str(traces),
        "metrics_path": str(metrics_file),
        "trace_exporters": ["jsonl"],
        "metric_exporters": ["jsonl"],
        "sdk": [True, True],
        "same": [True, True],
    }
    call, group = read_spans(traces)
    assert (call["name"], group["name"]) == ("call", "group")
    assert call["parent_span_id"] == group["span_id"]
    assert call["attributes"] == {names.REQUEST_MODEL: "m"}
    assert call["resource"]["service.name"] == "svc"
    assert call["scope"]["name"] == "tcc_plugin"

    records = list(read_metrics(metrics_file))
    tokens = _metric(records, names.METRIC_TOKEN_USAGE)
    assert tokens["explicit_bounds"] == list(names.TOKEN_USAGE_BUCKETS)
    assert tokens["count"] == 1 and tokens["sum"] == 300
    assert tokens["attributes"] == {names.TOKEN_TYPE: "output"}
    duration = _metric(records, names.METRIC_OPERATION_DURATION)
    assert duration["explicit_bounds"] == list(names.DURATION_BUCKETS)
    assert duration["count"] == 1


@pytest.mark.parametrize(
    ("env", "traces_written", "metrics_written"),
    [
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}, False, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False, True),
        ({"OTEL_METRICS_EXPORTER": "none"}, True, False),
    ],
)
def test_env_none_exports_nothing_for_that_signal(
    tmp_path: Path, env: dict[str, str], traces_written: bool, metrics_written: bool
) -> None:
    result, _ = run(
        """
        handle = configure(path="t.jsonl")
        trace.get_tracer("t").start_span("s").end()
        metrics.get_meter("t").create_counter("c").add(1)
        handle.force_flush()
        emit(traces=handle.trace_exporters, metrics=handle.metric_exporters,
             sdk=[sdk_traces(), sdk_metrics()])
        """,
        tmp_path,
        env,
    )
    assert result["traces"] == (["jsonl"] if traces_written else [])
    assert result["metrics"] == (["jsonl"] if metrics_written else [])
    # Nothing to export: the global provider is left for someone else to set.
    assert result["sdk"] == [traces_written, metrics_written]
    assert (tmp_path / "t.jsonl").exists() is traces_written
    assert (tmp_path / "t.metrics.jsonl").exists() is metrics_written


def test_env_exporter_list_and_unknown_names(tmp_path: Path) -> None:
    result, proc = run(
        """
        handle = configure(path="t.jsonl")
        trace.get_tracer("t").start_span("hello-console").end()
        handle.force_flush()
        emit(traces=handle.trace_exporters, metrics=handle.metric_exporters, logs=LOGS.messages)
        """,
        tmp_path,
        {"OTEL_TRACES_EXPORTER": "console, jsonl,bogus", "OTEL_METRICS_EXPORTER": "none"},
    )
    assert result["traces"] == ["console", "jsonl"]
    assert result["metrics"] == []
    assert any(level == "WARNING" and "bogus" in msg for level, msg in result["logs"])
    assert '"name": "hello-console"' in proc.stdout
    assert [s["name"] for s in read_spans(tmp_path / "t.jsonl")] == ["hello-console"]


def test_sdk_disabled_is_a_no_op(tmp_path: Path) -> None:
    result, _ = run(
        """
        handle = configure(path="t.jsonl", capture_content=True)
        trace.get_tracer("t").start_span("s").end()
        emit(enabled=handle.enabled, flushed=handle.force_flush(),
             traces=handle.trace_exporters, sdk=[sdk_traces(), sdk_metrics()],
             capture=os.environ.get(names.CAPTURE_CONTENT_ENV))
        handle.shutdown()
        """,
        tmp_path,
        {"OTEL_SDK_DISABLED": "TRUE"},
    )
    assert result == {
        "enabled": False,
        "flushed": True,
        "traces": [],
        "sdk": [False, False],
        "capture": None,
    }
    assert list(tmp_path.iterdir()) == []


# -- resource -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("argument", "expected"), [(None, "env-svc"), ("arg-svc", "arg-svc")])
def test_resource_honours_otel_service_name_and_attributes(
    tmp_path: Path, argument: str | None, expected: str
) -> None:
    run(
        f"""
        handle = configure(path="t.jsonl", metrics=False, service_name={argument!r})
        trace.get_tracer("t").start_span("s").end()
        handle.force_flush()
        emit()
        """,
        tmp_path,
        {
            "OTEL_SERVICE_NAME": "env-svc",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=ci,team=ml",
        },
    )
    (span,) = read_spans(tmp_path / "t.jsonl")
    assert span["resource"]["service.name"] == expected
    assert span["resource"]["deployment.environment.name"] == "ci"
    assert span["resource"]["team"] == "ml"


# -- an application that set up OpenTelemetry itself -------------------------------------------
def test_joins_an_existing_sdk_tracer_provider(tmp_path: Path) -> None:
    result, _ = run(
        """
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        app_spans = InMemorySpanExporter()
        app_tp = SdkTracerProvider(resource=Resource.create({"service.name": "app"}))
        app_tp.add_span_processor(SimpleSpanProcessor(app_spans))
        trace.set_tracer_provider(app_tp)
        app_reader = InMemoryMetricReader()
        app_mp = SdkMeterProvider(metric_readers=[app_reader])
        metrics.set_meter_provider(app_mp)

        handle = configure(path="t.jsonl", service_name="ignored")
        trace.get_tracer("tcc_plugin").start_span("call").end()
        metrics.get_meter("tcc_plugin").create_counter("tcc.c").add(1)
        handle.force_flush()
        data = app_reader.get_metrics_data()
        app_metric_names = [m.name for rm in data.resource_metrics
                            for sm in rm.scope_metrics for m in sm.metrics]
        emit(
            joined=handle.tracer_provider is app_tp,
            meter_is_app=handle.meter_provider is app_mp,
            app_spans=[s.name for s in app_spans.get_finished_spans()],
            app_metrics=app_metric_names,
            traces=handle.trace_exporters,
            metrics=handle.metric_exporters,
            metrics_path=handle.metrics_path,
            logs=LOGS.messages,
        )
        """,
        tmp_path,
    )
    assert result["joined"] is True and result["meter_is_app"] is True
    assert result["app_spans"] == ["call"]
    assert "tcc.c" in result["app_metrics"]
    assert result["traces"] == ["jsonl"] and result["metrics"] == []
    assert result["metrics_path"] is None
    (span,) = read_spans(tmp_path / "t.jsonl")
    assert span["name"] == "call"
    assert span["resource"]["service.name"] == "app"
    warnings = " ".join(msg for level, msg in result["logs"] if level == "WARNING")
    assert "MeterProvider" in warnings and "service.name" in warnings
    assert not (tmp_path / "t.metrics.jsonl").exists()


# -- calling configure() again --------------------------------------------------------------------
def test_second_call_replaces_the_first(tmp_path: Path) -> None:
    result, _ = run(
        """
        tracer = trace.get_tracer("t")
        counter = metrics.get_meter("t").create_counter("c")
        first = configure(path="a.jsonl")
        tracer.start_span("one").end()
        counter.add(1)
        second = configure(path="b.jsonl")
        tracer.start_span("two").end()
        counter.add(10)
        flushed = second.force_flush()
        first.shutdown()  # already replaced: harmless
        third = configure(exporter="console", path="c.jsonl", metrics=True)
        tracer.start_span("three").end()
        third.shutdown()
        third.shutdown()
        emit(flushed=flushed, stale_flush=first.force_flush(),
             third_metrics=third.metric_exporters, logs=LOGS.messages)
        """,
        tmp_path,
    )
    assert result["flushed"] is True and result["stale_flush"] is False
    assert [s["name"] for s in read_spans(tmp_path / "a.jsonl")] == ["one"]
    assert [s["name"] for s in read_spans(tmp_path / "b.jsonl")] == ["two"]
    assert not (tmp_path / "c.jsonl").exists()
    # Metrics are cumulative: a.metrics got the total when it was replaced, b after.
    assert [r["value"] for r in read_metrics(tmp_path / "a.metrics.jsonl")] == [1]
    assert [r["value"] for r in read_metrics(tmp_path / "b.metrics.jsonl")][-1] == 11
    # The meter provider took its readers from the first call: a new kind is refused aloud.
    assert result["third_metrics"] == []
    assert any(
        level == "WARNING" and "'console'" in msg and "cannot be added" in msg
        for level, msg in result["logs"]
    )


def test_extra_span_processor_and_metric_reader(tmp_path: Path) -> None:
    result, _ = run(
        """
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
        handle = configure(
            "none", span_processor=SimpleSpanProcessor(spans), metric_readers=[reader]
        )
        trace.get_tracer("t").start_span("kept").end()
        metrics.get_meter("t").create_counter("c").add(2)
        data = reader.get_metrics_data()
        points = [p.value for rm in data.resource_metrics for sm in rm.scope_metrics
                  for m in sm.metrics for p in m.data.data_points]
        handle.shutdown()
        trace.get_tracer("t").start_span("after-shutdown").end()
        emit(spans=[s.name for s in spans.get_finished_spans()], points=points,
             traces=handle.trace_exporters, metrics=handle.metric_exporters)
        """,
        tmp_path,
    )
    assert result == {"spans": ["kept"], "points": [2], "traces": [], "metrics": []}
    assert list(tmp_path.iterdir()) == []


def test_capture_content_sets_the_process_env(tmp_path: Path) -> None:
    result, _ = run(
        """
        seen = [os.environ.get(names.CAPTURE_CONTENT_ENV)]
        for value in (True, None, False, None):
            configure("none", capture_content=value, metrics=False)
            seen.append(os.environ.get(names.CAPTURE_CONTENT_ENV))
        emit(seen=seen)
        """,
        tmp_path,
    )
    assert result["seen"] == [None, "true", "true", "false", "false"]


# -- OTLP -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("exporter", ["otlp-http", "otlp-grpc"])
def test_a_dead_collector_does_not_block_the_caller(tmp_path: Path, exporter: str) -> None:
    port = free_port()
    result, _ = run(
        f"""
        handle = configure(
            {exporter!r}, endpoint="http://127.0.0.1:{port}", timeout=0.5
        )
        span = trace.get_tracer("t").start_span("call")
        span.end()
        metrics.get_meter("t").create_counter("c").add(1)
        ended = span.end_time is not None
        flushed = handle.force_flush()
        handle.shutdown()
        emit(ended=ended, flushed=isinstance(flushed, bool),
             traces=handle.trace_exporters, metrics=handle.metric_exporters)
        """,
        tmp_path,
    )
    assert result == {
        "ended": True,
        "flushed": True,
        "traces": [exporter],
        "metrics": [exporter],
    }


def test_otlp_protocol_endpoint_and_timeout_from_env(tmp_path: Path) -> None:
    port = free_port()
    result, _ = run(
        """
        handle = configure("otlp")
        trace.get_tracer("t").start_span("call").end()
        emit(flushed=isinstance(handle.force_flush(), bool), traces=handle.trace_exporters,
             metrics=handle.metric_exporters)
        """,
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "0.5",
        },
    )
    assert result == {"flushed": True, "traces": ["otlp-grpc"], "metrics": ["otlp-http"]}


@pytest.mark.parametrize("suffix", ["", "/", "/v1/traces"])
def test_otlp_http_reaches_a_local_collector(tmp_path: Path, suffix: str) -> None:
    result, _ = run(
        f"""
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen = []

        class Collector(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen.append([self.path, self.headers.get("x-tenant"),
                             self.headers.get("Content-Type")])
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{{server.server_port}}{suffix}"
        handle = configure("otlp", endpoint=endpoint, headers={{"x-tenant": "t1"}})
        trace.get_tracer("t").start_span("call").end()
        metrics.get_meter("t").create_counter("c").add(1)
        handle.force_flush()
        handle.shutdown()
        server.shutdown()
        emit(seen=sorted(seen), logs=LOGS.messages)
        """,
        tmp_path,
    )
    paths = {path for path, _, _ in result["seen"]}
    assert paths == {"/v1/traces", "/v1/metrics"}
    assert all(tenant == "t1" for _, tenant, _ in result["seen"])
    assert all(ctype == "application/x-protobuf" for _, _, ctype in result["seen"])


# -- imports ------------------------------------------------------------------------------------
def test_configure_is_public_and_importing_it_stays_light(tmp_path: Path) -> None:
    result, _ = run(
        """
        heavy = lambda: sorted(m for m in sys.modules if m.startswith(
            ("grpc", "opentelemetry.exporter", "requests", "openai", "anthropic", "langchain")))
        # The PRELUDE imported the setup module; drop it to watch the lazy path load it.
        for m in [m for m in sys.modules if m.startswith("tcc_plugin")]:
            del sys.modules[m]
        import tcc_plugin, tcc_plugin.telemetry
        lazy = "tcc_plugin.telemetry.configure" not in sys.modules
        public = [tcc_plugin.configure is sys.modules["tcc_plugin.telemetry.configure"].configure,
                  tcc_plugin.TelemetryHandle is tcc_plugin.telemetry.TelemetryHandle]
        emit(heavy=heavy(), lazy=lazy, public=public)
        """,
        tmp_path,
    )
    assert result == {"heavy": [], "lazy": True, "public": [True, True]}


# -- argument errors (raised before any global state changes, so in-process) -----------------------
def test_unknown_exporter_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown exporter 'zipkin'"):
        configure_fn(["jsonl", "zipkin"])


def test_unsupported_protocol_is_an_error() -> None:
    with pytest.raises(ValueError, match="http/json"):
        configure_fn("otlp", protocol="http/json")


@pytest.mark.parametrize("interval", [0, -5.0])
def test_export_interval_must_be_positive(interval: float) -> None:
    with pytest.raises(ValueError, match="export_interval_ms"):
        configure_fn(export_interval_ms=interval)


def test_spans_and_metrics_cannot_share_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="share one file"):
        configure_fn(path=tmp_path / "x.jsonl", metrics_path=tmp_path / "x.jsonl")


@pytest.mark.parametrize(
    ("exporter", "missing"),
    [
        ("otlp-http", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
        ("otlp-grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
        ("otlp-http", "opentelemetry.exporter.otlp.proto.http.metric_exporter"),
    ],
)
def test_missing_otlp_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, exporter: str, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ImportError, match=r"pip install 'tcc-plugin\[otlp\]'"):
        configure_fn(exporter, endpoint="http://127.0.0.1:9")


# -- backend conventions ----------------------------------------------------------------------
def test_conventions_from_the_environment_reach_the_file(tmp_path: Path) -> None:
    result, _ = run(
        """
        import tcc_plugin
        from tcc_plugin.telemetry import conventions
        handle = configure(path="t.jsonl", metrics=False)

        @tcc_plugin.llm_call(model="o3", provider="openai")
        def ask(max_tokens=100):
            return {"id": "c", "object": "chat.completion", "model": "o3",
                    "choices": [{"index": 0, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 50,
                              "completion_tokens_details": {"reasoning_tokens": 30}}}

        ask()
        during = conventions.active()
        handle.shutdown()
        emit(during=during, handle=handle.conventions, after=conventions.active())
        """,
        tmp_path,
        env={"TCC_CONVENTIONS": "openinference, langfuse"},
    )
    assert result == {
        "during": ["openinference", "langfuse"],
        "handle": ["openinference", "langfuse"],
        "after": [],  # a shut-down configuration leaves no convention behind
    }
    [span] = list(read_spans(tmp_path / "t.jsonl"))
    a = span["attributes"]
    assert a["llm.token_count.completion_details.reasoning"] == 30
    assert a["llm.token_count.total"] == 150
    assert json.loads(a["langfuse.observation.usage_details"]) == {
        "input": 100,
        "output": 20,
        "output_reasoning": 30,
        "total": 150,
    }
    assert a["langfuse.observation.cost_details"] == json.dumps({"total": a["tcc.cost.usd"]})
