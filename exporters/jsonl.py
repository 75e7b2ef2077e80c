"""JSON-lines file exporters: the embedded default, no collector needed.

Each finished span is one line of ``JsonLinesSpanExporter``'s file::

    {"name", "trace_id", "span_id", "parent_span_id", "kind", "start_time_ns",
     "end_time_ns", "duration_s", "status": {"code", "description"}, "attributes",
     "events": [{"name", "timestamp_ns", "attributes"}],
     "links": [{"trace_id", "span_id", "attributes"}],
     "resource", "scope": {"name", "version", "schema_url"}}

Ids are lower-case hex (32 digits for traces, 16 for spans); ``parent_span_id`` is
``null`` for a root span. Sequence attributes are JSON lists.

Each metric data point is one line of ``JsonLinesMetricExporter``'s file::

    {"name", "description", "unit", "type", "temporality", "attributes",
     "start_time_ns", "time_ns", "resource", "scope", ...value fields}

where the value fields are ``value`` (sums and gauges, plus ``is_monotonic`` for sums),
``count``/``sum``/``bucket_counts``/``explicit_bounds``/``min``/``max`` (histograms) or
``count``/``sum``/``scale``/``zero_count``/``positive``/``negative``/``min``/``max``
(exponential histograms). Temporality is cumulative: each export repeats every point
with its running total, so the last line for a (name, attributes, resource) is current.

Both exporters append, are thread-safe, write each batch with one ``write`` and never
raise out of ``export``: a failed write is logged on ``tcc_plugin.telemetry`` and
reported as a failure.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import Attributes

__all__ = [
    "JsonLinesMetricExporter",
    "JsonLinesSpanExporter",
    "metric_to_dicts",
    "read_metrics",
    "read_spans",
    "span_to_dict",
]

_LOG = logging.getLogger("tcc_plugin.telemetry")

PathLike: TypeAlias = "str | os.PathLike[str]"

_CUMULATIVE: dict[type, AggregationTemporality] = {
    kind: AggregationTemporality.CUMULATIVE
    for kind in (
        Counter,
        UpDownCounter,
        Histogram,
        ObservableCounter,
        ObservableUpDownCounter,
        ObservableGauge,
    )
}


# -- conversion ---------------------------------------------------------------------------
def _attributes(attributes: Attributes | Mapping[str, Any]) -> dict[str, Any]:
    if not attributes:
        return {}
    return {
        key: list(value) if isinstance(value, (tuple, list)) else value
        for key, value in attributes.items()
    }


def _scope(scope: InstrumentationScope | None) -> dict[str, Any] | None:
    if scope is None:
        return None
    return {"name": scope.name, "version": scope.version, "schema_url": scope.schema_url}


def _resource(resource: Resource | None) -> dict[str, Any]:
    return _attributes(resource.attributes) if resource is not None else {}


def span_to_dict(span: ReadableSpan) -> dict[str, Any]:
    """Return the JSON-ready record of one finished span (the format of the file)."""
    context = span.context
    start, end = span.start_time, span.end_time
    return {
        "name": span.name,
        "trace_id": format(context.trace_id, "032x") if context is not None else None,
        "span_id": format(context.span_id, "016x") if context is not None else None,
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
        "kind": span.kind.name,
        "start_time_ns": start,
        "end_time_ns": end,
        "duration_s": (end - start) / 1e9 if start is not None and end is not None else None,
        "status": {"code": span.status.status_code.name, "description": span.status.description},
        "attributes": _attributes(span.attributes),
        "events": [
            {
                "name": event.name,
                "timestamp_ns": event.timestamp,
                "attributes": _attributes(event.attributes),
            }
            for event in span.events
        ],
        "links": [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
                "attributes": _attributes(link.attributes),
            }
            for link in span.links
        ],
        "resource": _resource(span.resource),
        "scope": _scope(span.instrumentation_scope),
    }


def _point_fields(point: object) -> dict[str, Any]:
    if isinstance(point, NumberDataPoint):
        return {"value": point.value}
    if isinstance(point, HistogramDataPoint):
        return {
            "count": point.count,
            "sum": point.sum,
            "bucket_counts": list(point.bucket_counts),
            "explicit_bounds": list(point.explicit_bounds),
            "min": point.min,
            "max": point.max,
        }
    if isinstance(point, ExponentialHistogramDataPoint):
        return {
            "count": point.count,
            "sum": point.sum,
            "scale": point.scale,
            "zero_count": point.zero_count,
            "positive": {
                "offset": point.positive.offset,
                "bucket_counts": list(point.positive.bucket_counts),
            },
            "negative": {
                "offset": point.negative.offset,
                "bucket_counts": list(point.negative.bucket_counts),
            },
            "min": point.min,
            "max": point.max,
        }
    return {}


def metric_to_dicts(
    metric: Metric,
    resource: Resource | None = None,
    scope: InstrumentationScope | None = None,
) -> list[dict[str, Any]]:
    """Return one JSON-ready record per data point of ``metric`` (the format of the file)."""
    data = metric.data
    kind: str
    extra: dict[str, Any] = {}
    if isinstance(data, Sum):
        kind = "sum"
        extra["is_monotonic"] = data.is_monotonic
    elif isinstance(data, Gauge):
        kind = "gauge"
    elif isinstance(data, HistogramData):
        kind = "histogram"
    elif isinstance(data, ExponentialHistogram):
        kind = "exponential_histogram"
    else:  # pragma: no cover - a data type newer than this exporter
        kind = type(data).__name__.lower()
    temporality = getattr(data, "aggregation_temporality", None)
    records = []
    for point in data.data_points:
        record: dict[str, Any] = {
            "name": metric.name,
            "description": metric.description,
            "unit": metric.unit,
            "type": kind,
            "temporality": temporality.name if temporality is not None else None,
            "attributes": _attributes(point.attributes),
            "start_time_ns": getattr(point, "start_time_unix_nano", None),
            "time_ns": point.time_unix_nano,
        }
        record.update(extra)
        record.update(_point_fields(point))
        record["resource"] = _resource(resource)
        record["scope"] = _scope(scope)
        records.append(record)
    return records


def _dumps(record: Mapping[str, Any]) -> str:
    # default=str: an exporter must never fail on a value it does not know how to encode.
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)


# -- the file -------------------------------------------------------------------------------
class _AppendOnlyFile:
    """Appends batches of lines to a file; reports failures once until it recovers."""

    def __init__(self, path: PathLike, what: str) -> None:
        # Absolute now: a later chdir in the app must not move the file.
        self.path = Path(path).expanduser().absolute()
        self._what = what
        self._lock = threading.Lock()
        self._failing = False

    def append(self, lines: Sequence[str]) -> bool:
        if not lines:
            return True
        text = "\n".join(lines) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Opened per batch so a rotated or deleted file is recreated, not lost.
                with self.path.open("a", encoding="utf-8", errors="replace") as handle:
                    handle.write(text)
            except OSError as exc:
                self._report(f"cannot write {self._what} to {self.path}: {exc}")
                return False
            if self._failing:
                self._failing = False
                _LOG.info("writing %s to %s again", self._what, self.path)
            return True

    def _report(self, message: str) -> None:
        # A full disk fails every batch: say it once, not every few seconds.
        if self._failing:
            _LOG.debug("%s", message)
        else:
            self._failing = True
            _LOG.error("%s", message)


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per finished span to ``path`` (see the module docstring)."""

    def __init__(self, path: PathLike) -> None:
        self._file = _AppendOnlyFile(path, "spans")
        self._shutdown = False

    @property
    def path(self) -> Path:
        """The file spans are appended to."""
        return self._file.path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write ``spans``; never raises."""
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            lines = [_dumps(span_to_dict(span)) for span in spans]
        except Exception:
            _LOG.exception("cannot encode spans for %s", self.path)
            return SpanExportResult.FAILURE
        ok = self._file.append(lines)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Refuse further batches (every batch is already on disk)."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered: each batch is written and closed by ``export``."""
        return True


class JsonLinesMetricExporter(MetricExporter):
    """Appends one JSON object per metric data point to ``path``; cumulative temporality."""

    def __init__(self, path: PathLike) -> None:
        super().__init__(preferred_temporality=dict(_CUMULATIVE))
        self._file = _AppendOnlyFile(path, "metrics")
        self._shutdown = False

    @property
    def path(self) -> Path:
        """The file metric points are appended to."""
        return self._file.path

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        """Write every data point of ``metrics_data``; never raises."""
        if self._shutdown:
            return MetricExportResult.FAILURE
        try:
            lines = [
                _dumps(record)
                for resource_metrics in metrics_data.resource_metrics
                for scope_metrics in resource_metrics.scope_metrics
                for metric in scope_metrics.metrics
                for record in metric_to_dicts(
                    metric, resource_metrics.resource, scope_metrics.scope
                )
            ]
        except Exception:
            _LOG.exception("cannot encode metrics for %s", self.path)
            return MetricExportResult.FAILURE
        ok = self._file.append(lines)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Nothing is buffered: each batch is written and closed by ``export``."""
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Refuse further batches."""
        self._shutdown = True


# -- reading back ---------------------------------------------------------------------------
def _read(path: PathLike) -> Iterator[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # A process killed mid-write leaves a torn last line; the rest is good.
                _LOG.warning("%s:%d: skipping a line that is not JSON", path, number)
                continue
            if isinstance(record, dict):
                yield record


def read_spans(path: PathLike) -> Iterator[dict[str, Any]]:
    """Yield the span records of a file written by ``JsonLinesSpanExporter``, in order."""
    return _read(path)


def read_metrics(path: PathLike) -> Iterator[dict[str, Any]]:
    """Yield the data-point records of a file written by ``JsonLinesMetricExporter``."""
    return _read(path)
