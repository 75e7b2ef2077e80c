"""Span delivery that never holds the application up, and counts what it drops.

:class:`GuardedBatchProcessor` is the OpenTelemetry SDK's ``BatchSpanProcessor`` with
three additions:

* every span handed to it is accounted for: exported, or dropped because the export
  failed (collector down, disk full), the queue was full, or it was still queued when
  the processor shut down; :attr:`stats` has the counts, and each dropped span also
  adds to the ``tcc.telemetry.dropped_spans`` counter (attributes ``tcc.exporter`` and
  ``error.type``), except spans still queued when a shutdown gave up (the metrics
  pipeline is going down too);
* a full queue drops the *new* span at the cost of a counter increment, without the
  SDK's per-span warning;
* shutdown is bounded: once an export has failed, the backlog is dropped (and counted)
  instead of being retried against a collector that is not there, and a flush still
  running after :data:`SHUTDOWN_TIMEOUT_S` is cut short — the SDK alone would block the
  application's exit for up to 30 s.

Calls only ever pay for the queue append; exporting happens on the processor's thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from opentelemetry import metrics as metrics_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from tcc_plugin.telemetry import names

__all__ = [
    "METRIC_DROPPED_SPANS",
    "SHUTDOWN_TIMEOUT_S",
    "CountingSpanExporter",
    "GuardedBatchProcessor",
    "SpanDeliveryStats",
]

_LOG = logging.getLogger("tcc_plugin.telemetry")

METRIC_DROPPED_SPANS: Final = "tcc.telemetry.dropped_spans"
EXPORTER_ATTRIBUTE: Final = "tcc.exporter"
#: Seconds shutdown lets the last flush run before it gives the backlog up.
SHUTDOWN_TIMEOUT_S: Final = 5.0
_DEFAULT_MAX_QUEUE = 2048
_DEFAULT_MAX_BATCH = 512

_REASON_FAILED = "export_failed"
_REASON_QUEUE_FULL = "queue_full"
_REASON_SHUTDOWN = "shutdown"

_dropped_counter = metrics_api.get_meter(names.INSTRUMENTATION_NAME).create_counter(
    METRIC_DROPPED_SPANS,
    unit="{span}",
    description="Spans an exporter never delivered (export failed, queue full, or shutdown).",
)


@dataclass(frozen=True, slots=True)
class SpanDeliveryStats:
    """What one exporter did with the spans it was given (a snapshot).

    ``exported``: delivered. Dropped, by reason: ``export_failed`` (the backend refused
    them or could not be reached, after the exporter's own retries), ``queue_full`` (the
    exporter fell behind by ``OTEL_BSP_MAX_QUEUE_SIZE`` spans) and ``shutdown`` (not yet
    delivered when the processor shut down). ``queued``: waiting or being exported now.
    """

    exporter: str
    exported: int = 0
    export_failed: int = 0
    queue_full: int = 0
    shutdown: int = 0
    queued: int = 0

    @property
    def dropped(self) -> int:
        """Spans that never reached the backend."""
        return self.export_failed + self.queue_full + self.shutdown


class _Counts:
    """Counters shared by a processor and its exporter, under one lock."""

    def __init__(self, exporter: str) -> None:
        self.exporter = exporter
        self.lock = threading.Lock()
        self.accepted = 0  # put in the queue
        self.handed = 0  # taken from the queue by an export
        self.in_flight = 0  # in an export that has not returned yet
        self.exported = 0
        self.export_failed = 0
        self.queue_full = 0
        self.shutdown = 0
        self.closed = False  # the processor shut down: what is not delivered yet is lost

    def drop(self, reason: str, count: int) -> None:
        if count <= 0:
            return
        try:
            _dropped_counter.add(
                count, {EXPORTER_ATTRIBUTE: self.exporter, names.ERROR_TYPE: reason}
            )
        except Exception:  # pragma: no cover - a metrics SDK failure must not spread
            _LOG.debug("cannot count dropped spans", exc_info=True)

    def snapshot(self) -> SpanDeliveryStats:
        with self.lock:
            queued = max(self.accepted - self.handed, 0) + self.in_flight
            return SpanDeliveryStats(
                exporter=self.exporter,
                exported=self.exported,
                export_failed=self.export_failed,
                queue_full=self.queue_full,
                shutdown=self.shutdown + (queued if self.closed else 0),
                queued=0 if self.closed else queued,
            )


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter: counts exported and failed spans, never raises, and can be
    told to give up (:meth:`abandon`) so that a dead backend is not retried at exit."""

    def __init__(self, inner: SpanExporter, name: str, counts: _Counts | None = None) -> None:
        self.inner = inner
        self.counts = counts if counts is not None else _Counts(name)
        self._abandoned = False
        self.closing = False
        self._shut_down = False
        self._last_failed = False
        self._warned = False

    @property
    def failing(self) -> bool:
        """Whether the last export failed."""
        return self._last_failed

    def abandon(self) -> None:
        """Fail every later export at once, and interrupt the running one's retries."""
        self._abandoned = True
        self._shutdown_inner()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        counts = self.counts
        give_up = self._abandoned or (self.closing and self._last_failed)
        with counts.lock:
            counts.handed += count
            if give_up:
                counts.shutdown += count
            else:
                counts.in_flight += count
        if give_up:
            # Shutting down with the backend gone: drop the backlog now, don't retry it.
            counts.drop(_REASON_SHUTDOWN, count)
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:
            _LOG.warning(
                "the %s span exporter raised (spans dropped)", counts.exporter, exc_info=True
            )
            result = SpanExportResult.FAILURE
        ok = result is SpanExportResult.SUCCESS
        with counts.lock:
            counts.in_flight -= count
            if ok:
                counts.exported += count
            else:
                counts.export_failed += count
        if not ok:
            counts.drop(_REASON_FAILED, count)
            if not self._warned and not self._abandoned:
                self._warned = True
                _LOG.warning(
                    "the %s span exporter failed; its spans are dropped and counted until it "
                    "recovers (TelemetryHandle.dropped_spans)",
                    counts.exporter,
                )
        elif self._last_failed:
            _LOG.info("the %s span exporter delivers again", counts.exporter)
        self._last_failed = not ok
        return result

    def _shutdown_inner(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        try:
            self.inner.shutdown()
        except Exception:
            _LOG.warning(
                "shutting down the %s exporter failed", self.counts.exporter, exc_info=True
            )

    def shutdown(self) -> None:
        self._shutdown_inner()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self.inner.force_flush(timeout_millis)
        except Exception:
            _LOG.warning("flushing the %s exporter failed", self.counts.exporter, exc_info=True)
            return False


def _env_size(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        _LOG.warning("%s=%r is not a positive integer; using %d", name, raw, default)
        return default
    return value


class GuardedBatchProcessor(SpanProcessor):
    """A ``BatchSpanProcessor`` that counts what it drops and shuts down in bounded time.

    ``name`` labels the counts (e.g. ``"otlp-http"``). The batch settings come from the
    standard ``OTEL_BSP_*`` variables.
    """

    def __init__(
        self, exporter: SpanExporter, name: str, *, max_queue_size: int | None = None
    ) -> None:
        self._max_queue = (
            max_queue_size
            if max_queue_size is not None
            else _env_size("OTEL_BSP_MAX_QUEUE_SIZE", _DEFAULT_MAX_QUEUE)
        )
        batch = _env_size("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _DEFAULT_MAX_BATCH)
        self._counts = _Counts(name)
        self.exporter = CountingSpanExporter(exporter, name, self._counts)
        self._inner = BatchSpanProcessor(
            self.exporter,
            max_queue_size=self._max_queue,
            max_export_batch_size=min(batch, self._max_queue),
        )
        self._closed = False

    @property
    def name(self) -> str:
        """The label of this processor's exporter."""
        return self._counts.exporter

    @property
    def stats(self) -> SpanDeliveryStats:
        """What happened to the spans so far."""
        return self._counts.snapshot()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        self._inner._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled or self._closed:
            return
        counts = self._counts
        with counts.lock:
            # Kept below the SDK queue's bound, so the SDK never drops (it drops the
            # oldest span and logs): here the newest is dropped, and counted.
            full = counts.accepted - counts.handed >= self._max_queue
            if full:
                counts.queue_full += 1
            else:
                counts.accepted += 1
        if full:
            counts.drop(_REASON_QUEUE_FULL, 1)
            return
        self._inner.on_end(span)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        started = time.monotonic()
        exporter = self.exporter
        exporter.closing = True
        if exporter.failing:
            exporter.abandon()
        try:
            # On a thread of its own, so that a flush stuck on a dead or hung collector
            # can be cut short. Python 3.12+ refuses new threads at interpreter exit:
            # then it runs here, and a failed export still drops the rest at once.
            flusher = threading.Thread(
                target=self._inner.shutdown, name="tcc-span-shutdown", daemon=True
            )
            flusher.start()
        except RuntimeError:
            self._inner.shutdown()  # type: ignore[no-untyped-call]
        else:
            flusher.join(SHUTDOWN_TIMEOUT_S)
            if flusher.is_alive():
                exporter.abandon()
                flusher.join(1.0)
        with self._counts.lock:
            self._counts.closed = True
        stats = self._counts.snapshot()
        if stats.dropped:
            _LOG.warning(
                "the %s exporter dropped %d span(s) (export failed %d, queue full %d, at "
                "shutdown %d); shut down in %.1f s",
                stats.exporter,
                stats.dropped,
                stats.export_failed,
                stats.queue_full,
                stats.shutdown,
                time.monotonic() - started,
            )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._closed:
            return False
        flushed = self._inner.force_flush(timeout_millis)
        return bool(flushed) and not self.exporter.failing
