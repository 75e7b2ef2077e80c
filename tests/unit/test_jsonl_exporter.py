"""The JSON-lines exporters, driven by SDK providers built here (never the global ones)."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

# ``from tcc_plugin import ...``: ruff sees the mapped ``tcc_plugin.exporters`` as first-party.
from tcc_plugin import exporters
from tcc_plugin.telemetry import names

JsonLinesSpanExporter = exporters.JsonLinesSpanExporter
JsonLinesMetricExporter = exporters.JsonLinesMetricExporter
read_spans = exporters.read_spans
read_metrics = exporters.read_metrics

LOGGER = "tcc_plugin.telemetry"


@pytest.fixture
def provider_and_file(
    tmp_path: Path,
) -> Iterator[tuple[TracerProvider, Path, InMemorySpanExporter]]:
    path = tmp_path / "nested" / "dir" / "spans.jsonl"
    provider = TracerProvider(resource=Resource.create({"service.name": "svc-under-test"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield provider, path, memory
    provider.shutdown()


def _hex(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def _expected(span: ReadableSpan) -> dict[str, Any]:
    assert span.context is not None and span.start_time is not None and span.end_time is not None
    return {
        "name": span.name,
        "trace_id": _hex(span.context.trace_id, 32),
        "span_id": _hex(span.context.span_id, 16),
        "parent_span_id": _hex(span.parent.span_id, 16) if span.parent else None,
        "kind": span.kind.name,
        "start_time_ns": span.start_time,
        "end_time_ns": span.end_time,
        "duration_s": (span.end_time - span.start_time) / 1e9,
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": {
            k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()
        },
        "events": [
            {"name": e.name, "timestamp_ns": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ],
        "links": [
            {
                "trace_id": _hex(link.context.trace_id, 32),
                "span_id": _hex(link.context.span_id, 16),
                "attributes": dict(link.attributes or {}),
            }
            for link in span.links
        ],
        "resource": dict(span.resource.attributes),
        "scope": {"name": "tests.scope", "version": "1.2.3", "schema_url": ""},
    }


def test_each_span_is_one_exact_json_line(
    provider_and_file: tuple[TracerProvider, Path, InMemorySpanExporter],
) -> None:
    provider, path, memory = provider_and_file
    tracer = provider.get_tracer("tests.scope", "1.2.3")
    with tracer.start_as_current_span("group", kind=SpanKind.INTERNAL) as parent:
        parent.set_attribute(names.SAMPLING_PREFIX + "n", 4)
        with tracer.start_as_current_span(
            "chat gpt-x",
            kind=SpanKind.CLIENT,
            attributes={
                names.REQUEST_MODEL: "gpt-x",
                names.RESPONSE_FINISH_REASONS: ("stop", "length"),
                names.USAGE_REASONING_OUTPUT_TOKENS: 1234,
                names.COST_USD: 0.0125,
                names.REQUEST_STREAM: True,
            },
            links=[Link(parent.get_span_context(), {"why": "sibling"})],
        ) as child:
            child.add_event("tcc.retry", {names.RETRY_ATTEMPTS: 2, "error.type": "429"})
            child.set_status(Status(StatusCode.ERROR, "rate limited"))

    records = list(read_spans(path))
    finished = memory.get_finished_spans()
    assert [r["name"] for r in records] == ["chat gpt-x", "group"]
    assert records == [_expected(span) for span in finished]

    child_rec, parent_rec = records
    # Spelled out as well, so the format cannot drift together with the helper above.
    assert child_rec["parent_span_id"] == parent_rec["span_id"]
    assert child_rec["trace_id"] == parent_rec["trace_id"]
    assert len(child_rec["trace_id"]) == 32 and len(child_rec["span_id"]) == 16
    assert parent_rec["parent_span_id"] is None
    assert child_rec["kind"] == "CLIENT"
    assert child_rec["status"] == {"code": "ERROR", "description": "rate limited"}
    assert child_rec["attributes"] == {
        "gen_ai.request.model": "gpt-x",
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "gen_ai.usage.reasoning.output_tokens": 1234,
        "tcc.cost.usd": 0.0125,
        "gen_ai.request.stream": True,
    }
    assert [(e["name"], e["attributes"]) for e in child_rec["events"]] == [
        ("tcc.retry", {"tcc.retry.attempts": 2, "error.type": "429"})
    ]
    assert child_rec["links"][0]["span_id"] == parent_rec["span_id"]
    assert child_rec["resource"]["service.name"] == "svc-under-test"
    assert child_rec["duration_s"] >= 0


def test_lines_are_compact_utf8_json(
    provider_and_file: tuple[TracerProvider, Path, InMemorySpanExporter],
) -> None:
    provider, path, _ = provider_and_file
    provider.get_tracer("t").start_span("naïve ✓", attributes={"q": "¿qué?"}).end()
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 1
    assert "naïve ✓" in text and "¿qué?" in text
    assert json.loads(text)["attributes"] == {"q": "¿qué?"}


def test_appends_across_exporters_and_batches(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    for round_ in range(2):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(path)))
        tracer = provider.get_tracer("t")
        for i in range(3):
            tracer.start_span(f"r{round_}-s{i}").end()
        assert provider.force_flush()
        provider.shutdown()
    assert [r["name"] for r in read_spans(path)] == [
        f"r{r}-s{i}" for r in range(2) for i in range(3)
    ]


def test_concurrent_exports_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("t")
    big = "x" * 20_000  # larger than one write buffer

    def work(worker: int) -> None:
        for i in range(25):
            tracer.start_span(f"w{worker}-{i}", attributes={"blob": big}).end()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 200
    assert {json.loads(line)["name"] for line in lines} == {
        f"w{w}-{i}" for w in range(8) for i in range(25)
    }


def test_unwritable_path_fails_logs_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "is-a-directory"
    path.mkdir()
    exporter = JsonLinesSpanExporter(path)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("lost")
    span.end()
    assert isinstance(span, ReadableSpan)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert exporter.export([span]) is SpanExportResult.FAILURE
        assert exporter.export([span]) is SpanExportResult.FAILURE
    errors = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0].getMessage()

    caplog.clear()
    path.rmdir()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert exporter.export([span]) is SpanExportResult.SUCCESS
    assert any("again" in r.getMessage() for r in caplog.records if r.name == LOGGER)
    assert [r["name"] for r in read_spans(path)] == ["lost"]


def test_unencodable_value_is_written_as_text(tmp_path: Path) -> None:
    # Attributes are validated by the SDK, but an exporter must survive odd spans anyway.
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("t").start_span("odd").end()
    (span,) = memory.get_finished_spans()
    span._attributes = {"path": Path("/x")}  # type: ignore[dict-item]
    exporter = JsonLinesSpanExporter(tmp_path / "odd.jsonl")
    assert exporter.export([span]) is SpanExportResult.SUCCESS
    assert next(read_spans(exporter.path))["attributes"] == {"path": "/x"}


def test_shutdown_refuses_later_batches(tmp_path: Path) -> None:
    exporter = JsonLinesSpanExporter(tmp_path / "s.jsonl")
    exporter.shutdown()
    assert exporter.export([]) is SpanExportResult.FAILURE
    assert exporter.force_flush() is True


def test_relative_path_is_fixed_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exporter = JsonLinesSpanExporter("rel.jsonl")
    assert exporter.path == tmp_path / "rel.jsonl"


def test_read_spans_skips_blank_and_torn_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"name": "a"}\n\n{"name": "b"}\n{"name": "tor', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [r["name"] for r in read_spans(path)] == ["a", "b"]
    assert any(":3:" in r.getMessage() or ":4:" in r.getMessage() for r in caplog.records)


def test_package_reexports() -> None:
    assert exporters.JsonLinesSpanExporter is exporters.jsonl.JsonLinesSpanExporter
    assert exporters.JsonLinesMetricExporter is exporters.jsonl.JsonLinesMetricExporter
    assert exporters.read_spans is exporters.jsonl.read_spans
    assert exporters.read_metrics is exporters.jsonl.read_metrics
    assert sorted(exporters.__all__) == [
        "JsonLinesMetricExporter",
        "JsonLinesSpanExporter",
        "read_metrics",
        "read_spans",
    ]


# -- metrics ---------------------------------------------------------------------------------
def _meter_provider(path: Path, **kwargs: Any) -> MeterProvider:
    reader = PeriodicExportingMetricReader(
        JsonLinesMetricExporter(path), export_interval_millis=math.inf
    )
    return MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "m"}), **kwargs
    )


def test_metric_points_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "m" / "metrics.jsonl"
    provider = _meter_provider(path)
    meter = provider.get_meter("tests.meter", "0.1")
    tokens = meter.create_histogram(
        names.METRIC_TOKEN_USAGE,
        unit="{token}",
        explicit_bucket_boundaries_advisory=list(names.TOKEN_USAGE_BUCKETS),
    )
    cost = meter.create_counter(names.METRIC_COST, unit="USD")
    in_flight = meter.create_up_down_counter("tcc.in_flight")
    meter.create_observable_gauge(
        "tcc.gauge", callbacks=[lambda _o: [Observation(7, {"k": ("a", "b")})]]
    )

    tokens.record(100, {names.TOKEN_TYPE: "input"})
    tokens.record(3000, {names.TOKEN_TYPE: "input"})
    tokens.record(5, {names.TOKEN_TYPE: "output"})
    cost.add(0.5, {names.REQUEST_MODEL: "m1"})
    in_flight.add(2)
    in_flight.add(-1)
    assert provider.force_flush()

    records = list(read_metrics(path))
    by_key = {(r["name"], json.dumps(r["attributes"], sort_keys=True)): r for r in records}
    assert len(by_key) == len(records) == 5

    hist = by_key[(names.METRIC_TOKEN_USAGE, '{"gen_ai.token.type": "input"}')]
    assert hist["type"] == "histogram" and hist["temporality"] == "CUMULATIVE"
    assert hist["unit"] == "{token}"
    assert hist["explicit_bounds"] == list(names.TOKEN_USAGE_BUCKETS)
    assert hist["count"] == 2 and hist["sum"] == 3100
    assert hist["min"] == 100 and hist["max"] == 3000
    expected_buckets = [0] * (len(names.TOKEN_USAGE_BUCKETS) + 1)
    expected_buckets[4] = 1  # (64, 256]
    expected_buckets[6] = 1  # (1024, 4096]
    assert hist["bucket_counts"] == expected_buckets
    assert hist["resource"]["service.name"] == "m"
    assert hist["scope"] == {"name": "tests.meter", "version": "0.1", "schema_url": ""}

    total = by_key[(names.METRIC_COST, '{"gen_ai.request.model": "m1"}')]
    assert total["type"] == "sum" and total["is_monotonic"] is True and total["value"] == 0.5
    assert by_key[("tcc.in_flight", "{}")]["value"] == 1
    gauge = by_key[("tcc.gauge", '{"k": ["a", "b"]}')]
    assert gauge["type"] == "gauge" and gauge["value"] == 7
    provider.shutdown()


def test_metrics_are_cumulative_across_exports(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    provider = _meter_provider(path)
    counter = provider.get_meter("t").create_counter("c")
    counter.add(2)
    provider.force_flush()
    counter.add(3)
    provider.force_flush()
    assert [r["value"] for r in read_metrics(path)] == [2, 5]
    provider.shutdown()


def test_exponential_histogram_points(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    provider = _meter_provider(
        path, views=[View(instrument_name="h", aggregation=ExponentialBucketHistogramAggregation())]
    )
    hist = provider.get_meter("t").create_histogram("h")
    for value in (1.0, 2.0, 4.0):
        hist.record(value)
    provider.force_flush()
    (record,) = read_metrics(path)
    assert record["type"] == "exponential_histogram"
    assert record["count"] == 3 and record["sum"] == 7.0
    assert record["min"] == 1.0 and record["max"] == 4.0
    assert sum(record["positive"]["bucket_counts"]) == 3
    assert set(record) >= {"scale", "zero_count", "negative"}
    provider.shutdown()


def test_metric_exporter_failure_is_reported_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("t").create_counter("c").add(1)
    data = reader.get_metrics_data()
    assert data is not None
    path = tmp_path / "dir"
    path.mkdir()
    exporter = JsonLinesMetricExporter(path)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert exporter.export(data) is MetricExportResult.FAILURE
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.ERROR]
    path.rmdir()
    assert exporter.export(data) is MetricExportResult.SUCCESS
    exporter.shutdown()
    assert exporter.export(data) is MetricExportResult.FAILURE
    provider.shutdown()


def test_metric_exporter_prefers_cumulative() -> None:
    exporter = JsonLinesMetricExporter("unused.jsonl")
    temporalities = exporter._preferred_temporality
    assert temporalities
    assert {t.name for t in temporalities.values()} == {"CUMULATIVE"}
