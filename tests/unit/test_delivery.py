"""GuardedBatchProcessor: every span accounted for, nothing raised, shutdown bounded.

Each test builds its own (non-global) tracer provider around the processor under test,
with exporters that fail, raise or hang on purpose.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from tcc_plugin.exporters import JsonLinesSpanExporter, read_spans
from tcc_plugin.telemetry import delivery
from tcc_plugin.telemetry.delivery import GuardedBatchProcessor, SpanDeliveryStats


class Failing(SpanExporter):
    def __init__(self) -> None:
        self.batches = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches += 1
        return SpanExportResult.FAILURE


class Raising(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionError("collector gone")


class Hanging(SpanExporter):
    """Blocks in export until released or shut down (a collector that never answers)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.shutdown_called = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        return SpanExportResult.SUCCESS if not self.shutdown_called else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.shutdown_called = True
        self.release.set()  # like the OTLP exporters: shutdown interrupts a retry wait


class Flaky(SpanExporter):
    """Fails until ``healthy`` is set."""

    def __init__(self) -> None:
        self.healthy = False
        self.delivered: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not self.healthy:
            return SpanExportResult.FAILURE
        self.delivered.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS


def emit(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("test")
    for i in range(count):
        with tracer.start_as_current_span(f"call {i}"):
            pass


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    yield tracer_provider
    tracer_provider.shutdown()


def test_a_healthy_exporter_delivers_everything(provider: TracerProvider) -> None:
    sink = InMemorySpanExporter()
    processor = GuardedBatchProcessor(sink, "memory")
    provider.add_span_processor(processor)
    emit(provider, 25)
    assert processor.force_flush()
    assert processor.stats == SpanDeliveryStats("memory", exported=25)
    processor.shutdown()
    assert len(sink.get_finished_spans()) == 25
    assert processor.stats.dropped == 0


def test_failed_exports_are_counted_not_raised(provider: TracerProvider) -> None:
    failing = Failing()
    processor = GuardedBatchProcessor(failing, "otlp-http")
    provider.add_span_processor(processor)
    emit(provider, 10)
    assert processor.force_flush() is False
    stats = processor.stats
    assert (stats.exported, stats.export_failed, stats.dropped, stats.queued) == (0, 10, 10, 0)
    # Shutdown after a failure gives the backlog up at once instead of retrying it.
    emit(provider, 5)
    before = failing.batches
    started = time.monotonic()
    processor.shutdown()
    assert time.monotonic() - started < 2
    assert failing.batches == before
    assert processor.stats.dropped == 15 and processor.stats.shutdown == 5


def test_an_exporter_that_raises_is_contained(provider: TracerProvider) -> None:
    processor = GuardedBatchProcessor(Raising(), "otlp-grpc")
    provider.add_span_processor(processor)
    emit(provider, 3)  # nothing reaches the caller
    assert processor.force_flush() is False
    assert processor.stats.export_failed == 3


def test_a_full_queue_drops_the_new_spans_and_counts_them(provider: TracerProvider) -> None:
    hanging = Hanging()
    processor = GuardedBatchProcessor(hanging, "otlp-http", max_queue_size=4)
    provider.add_span_processor(processor)
    emit(provider, 4)  # a full batch: the worker takes it and hangs in export
    assert hanging.entered.wait(10)
    emit(provider, 10)  # 4 fit in the queue, 6 do not
    stats = processor.stats
    assert (stats.queue_full, stats.queued) == (6, 8)
    hanging.release.set()
    assert processor.force_flush()
    assert processor.stats == SpanDeliveryStats("otlp-http", exported=8, queue_full=6)


def test_a_hung_export_does_not_hold_shutdown_past_its_bound(
    provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "SHUTDOWN_TIMEOUT_S", 0.3)
    hanging = Hanging()
    processor = GuardedBatchProcessor(hanging, "otlp-http", max_queue_size=4)
    provider.add_span_processor(processor)
    emit(provider, 4)
    assert hanging.entered.wait(10)
    emit(provider, 3)
    started = time.monotonic()
    processor.shutdown()
    assert time.monotonic() - started < 0.3 + 1.0 + 0.5
    assert hanging.shutdown_called  # told to stop retrying
    stats = processor.stats
    assert stats.exported == 0 and stats.dropped == 7 and stats.queued == 0


def test_a_recovering_exporter_delivers_again(provider: TracerProvider) -> None:
    flaky = Flaky()
    processor = GuardedBatchProcessor(flaky, "otlp-http")
    provider.add_span_processor(processor)
    emit(provider, 3)
    assert processor.force_flush() is False
    flaky.healthy = True
    emit(provider, 2)
    assert processor.force_flush() is True
    assert processor.stats == SpanDeliveryStats("otlp-http", exported=2, export_failed=3)
    assert flaky.delivered == ["call 0", "call 1"]


def test_unsampled_spans_are_not_counted() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    processor = GuardedBatchProcessor(Failing(), "otlp-http")
    provider.add_span_processor(processor)
    emit(provider, 5)
    provider.shutdown()
    assert processor.stats.dropped == 0


def test_dropped_spans_feed_the_metric(provider: TracerProvider) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    counter = meters.get_meter("tcc_plugin").create_counter(delivery.METRIC_DROPPED_SPANS)
    original = delivery._dropped_counter
    delivery._dropped_counter = counter  # the global meter provider is the test session's
    try:
        processor = GuardedBatchProcessor(Failing(), "otlp-grpc")
        provider.add_span_processor(processor)
        emit(provider, 4)
        processor.force_flush()
    finally:
        delivery._dropped_counter = original
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        point
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == delivery.METRIC_DROPPED_SPANS
        for point in metric.data.data_points
    ]
    assert [(dict(p.attributes or {}), p.value) for p in points] == [
        ({"tcc.exporter": "otlp-grpc", "error.type": "export_failed"}, 4)
    ]
    meters.shutdown()


def test_bad_batch_settings_fall_back_to_the_defaults(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "lots")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "-1")
    processor = GuardedBatchProcessor(InMemorySpanExporter(), "jsonl")
    provider.add_span_processor(processor)
    emit(provider, 1)
    assert processor.force_flush()
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")  # smaller than the default batch
    small = GuardedBatchProcessor(InMemorySpanExporter(), "jsonl")
    small.shutdown()


# -- the JSON-lines path: the callers write when the worker falls behind -----------------------
_RUNS = itertools.count()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    threads=st.integers(1, 4),
    per_thread=st.integers(1, 400),
    max_queue=st.integers(2, 64),
)
def test_a_local_exporter_loses_no_span_whatever_the_queue(
    tmp_path: Path, threads: int, per_thread: int, max_queue: int
) -> None:
    """Callers outpacing the worker (a queue of a few spans) fill the file, never drop."""
    path = tmp_path / f"spans-{next(_RUNS)}.jsonl"  # hypothesis may repeat an example
    provider = TracerProvider(shutdown_on_exit=False)
    processor = GuardedBatchProcessor(
        JsonLinesSpanExporter(path), "jsonl", max_queue_size=max_queue, caller_exports=True
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")

    def produce(worker: int) -> None:
        for i in range(per_thread):
            tracer.start_span(f"{worker}:{i}").end()

    pool = [threading.Thread(target=produce, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    processor.shutdown()
    names = [record["name"] for record in read_spans(path)]
    assert processor.stats == SpanDeliveryStats("jsonl", exported=threads * per_thread)
    assert sorted(names) == sorted(f"{w}:{i}" for w in range(threads) for i in range(per_thread))
    for w in range(threads):  # each thread's spans in the order it ended them
        mine = [int(n.split(":")[1]) for n in names if n.startswith(f"{w}:")]
        assert mine == sorted(mine)
    provider.shutdown()


def test_a_network_exporter_that_is_down_is_not_waited_for(provider: TracerProvider) -> None:
    """Callers yield to the worker only while the backend answers."""
    failing = Failing()
    processor = GuardedBatchProcessor(failing, "otlp-http", max_queue_size=8)
    provider.add_span_processor(processor)
    emit(provider, 8)
    assert processor.force_flush() is False  # the backend is down: known from now on
    assert not processor.exporter.healthy
    emit(provider, 100)  # dropped and counted, nobody waits
    processor.force_flush()
    stats = processor.stats
    assert (stats.exported, stats.dropped, stats.queued) == (0, 108, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_delivers_its_own_spans(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider(shutdown_on_exit=False)
    processor = GuardedBatchProcessor(JsonLinesSpanExporter(path), "jsonl")
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    tracer.start_span("before the fork").end()  # queued in the parent
    pid = os.fork()
    if pid == 0:  # the child: a worker of its own, none of the parent's queue
        tracer.start_span("in the child").end()
        delivered = processor.force_flush() and processor.stats.exported == 1
        os._exit(0 if delivered else 1)
    _, status = os.waitpid(pid, 0)
    processor.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(r["name"] for r in read_spans(path)) == ["before the fork", "in the child"]
    assert processor.stats == SpanDeliveryStats("jsonl", exported=1)
    provider.shutdown()
