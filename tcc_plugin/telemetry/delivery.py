"""Span delivery that never holds the application up, and counts what it drops.

:class:`GuardedBatchProcessor` batches spans to an exporter on a worker thread, like the
OpenTelemetry SDK's ``BatchSpanProcessor``, and adds:

* every span handed to it is accounted for: exported, or dropped because the export
  failed (collector down, disk full), the queue was full, or it was still queued when
  the processor shut down; :attr:`stats` has the counts, each dropped span also adds to
  the ``tcc.telemetry.dropped_spans`` counter (attributes ``tcc.exporter`` and
  ``error.type``), except spans still queued when a shutdown gave up (the metrics
  pipeline is going down too), and the first drop of each kind is logged;
* a full queue drops the *new* span at the cost of a counter increment;
* for a local exporter (the JSON-lines file) the caller writes a batch itself when the
  worker falls behind, so a load that starves the worker thread of CPU loses nothing;
* shutdown is bounded: once an export has failed, the backlog is dropped (and counted)
  instead of being retried against a collector that is not there, and a flush still
  running after :data:`SHUTDOWN_TIMEOUT_S` is cut short — the SDK alone would block the
  application's exit for up to 30 s.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from opentelemetry import metrics as metrics_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

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
_DEFAULT_DELAY_MS = 5000
#: An export running longer than this means a slow or hung backend: callers stop
#: giving the worker time to catch up (that would make a dead collector cost them).
_STUCK_AFTER_S = 1.0
#: How long a caller lets the worker run when the queue is three quarters full.
_YIELD_S = 0.0005

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
        self._export_started: float | None = None

    @property
    def failing(self) -> bool:
        """Whether the last export failed."""
        return self._last_failed

    @property
    def healthy(self) -> bool:
        """The last export succeeded and the running one (if any) is not stuck: the
        backend is there, so waiting for it is worth a caller's while."""
        started = self._export_started
        return not self._last_failed and (
            started is None or time.monotonic() - started < _STUCK_AFTER_S
        )

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
        self._export_started = time.monotonic()
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
        self._export_started = None
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
    """Batches spans to an exporter off the caller's path, counts what it drops, and shuts
    down in bounded time.

    ``name`` labels the counts (e.g. ``"otlp-http"``). The batch settings come from the
    standard ``OTEL_BSP_*`` variables (``MAX_QUEUE_SIZE``, ``MAX_EXPORT_BATCH_SIZE``,
    ``SCHEDULE_DELAY``). A worker thread exports a batch as soon as one is full.

    A caller that finds the worker a batch behind helps it. With ``caller_exports``
    (for an exporter whose export is local and bounded: a file) it writes one batch
    itself, and when the queue is full waits for the exporter (up to a second) rather
    than drop the span: the record holds under a load that starves the worker of CPU
    time, at the price of an occasional call paying for one batch. Otherwise (a network
    exporter) it only yields the interpreter to the worker, and only while the backend
    answers (the last export succeeded, the running one is younger than a second): a
    collector that is down or hung costs calls nothing.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        name: str,
        *,
        max_queue_size: int | None = None,
        caller_exports: bool = False,
    ) -> None:
        self._max_queue = (
            max_queue_size
            if max_queue_size is not None
            else _env_size("OTEL_BSP_MAX_QUEUE_SIZE", _DEFAULT_MAX_QUEUE)
        )
        self._batch = min(
            _env_size("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _DEFAULT_MAX_BATCH), self._max_queue
        )
        self._delay_s = _env_size("OTEL_BSP_SCHEDULE_DELAY", _DEFAULT_DELAY_MS) / 1000
        self._caller_exports = caller_exports
        # The caller helps once the worker is this far behind: it had a batch to take
        # and did not get to it.
        self._help_at = min(2 * self._batch, self._max_queue)
        self._press_at = max(self._max_queue * 3 // 4, self._help_at)
        self._counts = _Counts(name)
        self.exporter = CountingSpanExporter(exporter, name, self._counts)
        self._queue: deque[ReadableSpan] = deque()
        self._export_lock = threading.Lock()  # one export at a time, batches in order
        self._wake = threading.Event()
        self._closed = False
        self._warned_full = False
        self._worker = self._start_worker()
        if hasattr(os, "register_at_fork"):
            # A forked child has no worker thread: start its own (as the SDK does), and
            # leave the parent's queue to the parent.
            reinit = weakref.WeakMethod(self._at_fork_reinit)
            os.register_at_fork(after_in_child=lambda: (method := reinit()) and method())

    def _start_worker(self) -> threading.Thread:
        worker = threading.Thread(
            target=self._work, name=f"tcc-span-export-{self.name}", daemon=True
        )
        worker.start()
        return worker

    def _at_fork_reinit(self) -> None:
        self._counts.lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._wake = threading.Event()
        with self._counts.lock:
            self._counts.handed += len(self._queue)
            self._queue.clear()
        if not self._closed:
            self._worker = self._start_worker()

    @property
    def name(self) -> str:
        """The label of this processor's exporter."""
        return self._counts.exporter

    @property
    def stats(self) -> SpanDeliveryStats:
        """What happened to the spans so far."""
        return self._counts.snapshot()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled or self._closed:
            return
        queue = self._queue
        if len(queue) >= self._help_at:
            self._help(len(queue))
        counts = self._counts
        while True:
            with counts.lock:
                full = len(queue) >= self._max_queue
                if not full:
                    counts.accepted += 1
                    queue.append(span)
                    if len(queue) >= self._batch:
                        self._wake.set()
                    return
            # Full. A local exporter makes room (other callers may fill it again
            # before this one gets the lock back: hence the loop); otherwise, or if the
            # exporter stays busy for a second, the span is dropped.
            if not (self._caller_exports and self._export_batch(timeout=1.0)):
                break
        with counts.lock:
            counts.queue_full += 1
        counts.drop(_REASON_QUEUE_FULL, 1)
        if not self._warned_full:
            self._warned_full = True
            _LOG.warning(
                "the %s span exporter fell %d spans behind: new spans are dropped and "
                "counted (TelemetryHandle.dropped_spans, %s); OTEL_BSP_MAX_QUEUE_SIZE "
                "sets the bound",
                counts.exporter,
                self._max_queue,
                METRIC_DROPPED_SPANS,
            )

    def _help(self, queued: int) -> None:
        """The worker is behind: starved of CPU by the callers, or the backend is slow."""
        if self._caller_exports:
            # A local exporter: write a batch here, and when the queue is full wait for
            # the exporter rather than lose the span.
            self._export_batch(timeout=1.0 if queued >= self._max_queue else 0.0)
        elif self.exporter.healthy:
            # A network exporter must never hold a caller up on the backend, but a
            # healthy one falls behind only for want of CPU time (the GIL): hand the
            # worker the interpreter, briefly when the queue is close to full.
            time.sleep(_YIELD_S if queued >= self._press_at else 0)

    def _take(self) -> list[ReadableSpan]:
        counts = self._counts
        with counts.lock:
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(self._batch, len(queue)))]
        return batch

    def _export_batch(self, timeout: float) -> bool:
        """Export one batch if the exporter is free within ``timeout`` seconds (-1: wait
        as long as it takes); ``False`` if it was not."""
        if not self._export_lock.acquire(timeout=timeout):
            return False
        try:
            batch = self._take()
            if batch:
                self.exporter.export(batch)  # counts, and never raises
        finally:
            self._export_lock.release()
        return True

    def _drain(self, deadline: float | None = None) -> bool:
        """Export everything queued now; ``False`` if ``deadline`` passed first."""
        while self._queue:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._export_batch(timeout=left):
                    return False
            else:
                self._export_batch(timeout=-1)
        # An export the caller is running may still hold spans: wait for it.
        timeout = -1.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._export_lock.acquire(timeout=timeout):
            return False
        self._export_lock.release()
        return True

    def _work(self) -> None:
        while not self._closed:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            if self._closed:
                return
            try:
                self._drain()
            except Exception:  # pragma: no cover - the exporter wrapper never raises
                _LOG.exception("the %s span exporter's worker failed", self.name)

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        started = time.monotonic()
        exporter = self.exporter
        exporter.closing = True
        if exporter.failing:
            exporter.abandon()
        try:
            # On a thread of its own, so that a flush stuck on a dead or hung collector
            # can be cut short. Python 3.12+ refuses new threads at interpreter exit:
            # then it runs here, and a failed export still drops the rest at once.
            flusher = threading.Thread(target=self._drain, name="tcc-span-shutdown", daemon=True)
            flusher.start()
        except RuntimeError:
            self._drain()
        else:
            flusher.join(SHUTDOWN_TIMEOUT_S)
            if flusher.is_alive():
                exporter.abandon()
                flusher.join(1.0)
        exporter.shutdown()
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
        flushed = self._drain(time.monotonic() + timeout_millis / 1000)
        return flushed and not self.exporter.failing
