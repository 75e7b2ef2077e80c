"""The processor and exporter seats that outlive a ``configure()`` call.

OpenTelemetry lets the global tracer and meter providers be set once per process.
``configure()`` installs (or joins) them once, with a span hub and one metric seat per
exporter kind, and afterwards only swaps what the hub feeds and what the seats hold:
that is what makes a second ``configure()`` replace the first instead of adding to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry import metrics as metrics_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

if TYPE_CHECKING:
    from tcc_plugin.telemetry.configure import TelemetryHandle

__all__ = [
    "STATE",
    "MetricSeat",
    "Seated",
    "SpanHub",
    "flush_all",
    "install_metrics",
    "install_spans",
    "shutdown_quietly",
]

_LOG = logging.getLogger("tcc_plugin.telemetry")


class SpanHub(SpanProcessor):
    """Added once to a tracer provider; configure() swaps the processors it feeds."""

    def __init__(self) -> None:
        self._processors: tuple[SpanProcessor, ...] = ()
        self._lock = threading.Lock()

    def add(self, processors: Sequence[SpanProcessor]) -> None:
        with self._lock:
            self._processors += tuple(processors)

    def remove(self, processors: Sequence[SpanProcessor]) -> None:
        with self._lock:
            self._processors = tuple(p for p in self._processors if p not in processors)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        for processor in self._processors:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception:
                _LOG.exception("span processor %r failed on start", processor)

    def _on_ending(self, span: Span) -> None:
        for processor in self._processors:
            try:
                processor._on_ending(span)
            except Exception:
                _LOG.exception("span processor %r failed on ending", processor)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self._processors:
            try:
                processor.on_end(span)
            except Exception:
                _LOG.exception("span processor %r failed on end", processor)

    def shutdown(self) -> None:
        with self._lock:
            processors, self._processors = self._processors, ()
        for processor in processors:
            shutdown_quietly(processor)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return flush_all(self._processors, timeout_millis)


class MetricSeat(MetricExporter):
    """The exporter of a periodic reader that stays on the meter provider for good.

    A MeterProvider takes its readers at construction only, so configure() keeps one
    reader per exporter kind and swaps the exporter inside it.
    """

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner: MetricExporter | None = inner

    @property
    def inner(self) -> MetricExporter | None:
        return self._inner

    def swap(self, inner: MetricExporter | None) -> MetricExporter | None:
        previous, self._inner = self._inner, inner
        return previous

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        inner = self._inner
        if inner is None:
            return MetricExportResult.SUCCESS
        return inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        inner = self._inner
        return inner.force_flush(timeout_millis=timeout_millis) if inner is not None else True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        inner = self.swap(None)
        if inner is not None:
            inner.shutdown(timeout_millis=timeout_millis)


class Seated(NamedTuple):
    """One metric exporter a configure() call put into a seat."""

    name: str
    reader: PeriodicExportingMetricReader
    seat: MetricSeat
    exporter: MetricExporter


class _State:
    """What configure() installed in this process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.current: TelemetryHandle | None = None
        self.own_tracer_provider: SdkTracerProvider | None = None
        self.hub: SpanHub | None = None
        self.hub_provider: SdkTracerProvider | None = None
        self.own_meter_provider: SdkMeterProvider | None = None
        self.seats: dict[str, tuple[PeriodicExportingMetricReader, MetricSeat]] = {}


STATE = _State()


# -- installing ----------------------------------------------------------------------------
def install_spans(
    processors: Sequence[SpanProcessor], resource: Resource, service_name: str | None
) -> tuple[trace.TracerProvider, SpanHub | None]:
    current = trace.get_tracer_provider()
    if isinstance(current, SdkTracerProvider):
        provider = current
        if service_name and provider.resource.attributes.get(SERVICE_NAME) != service_name:
            _LOG.warning(
                "the tracer provider is already set up; its service.name %r is kept, not %r",
                provider.resource.attributes.get(SERVICE_NAME),
                service_name,
            )
    elif not processors:
        return current, None
    else:
        provider = SdkTracerProvider(resource=resource)
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            _LOG.warning(
                "the global tracer provider is a %s, not the OpenTelemetry SDK's: tcc spans"
                " go to it and tcc's span exporters are not attached",
                type(current).__name__,
            )
            provider.shutdown()
            return trace.get_tracer_provider(), None
        STATE.own_tracer_provider = provider

    if STATE.hub is None or STATE.hub_provider is not provider:
        STATE.hub = SpanHub()
        STATE.hub_provider = provider
        provider.add_span_processor(STATE.hub)
    STATE.hub.add(processors)
    return provider, STATE.hub


def install_metrics(
    exporters: Sequence[tuple[str, MetricExporter]],
    readers: Sequence[MetricReader],
    resource: Resource,
    export_interval_ms: float | None,
) -> tuple[metrics_api.MeterProvider, list[Seated], list[MetricReader]]:
    current = metrics_api.get_meter_provider()
    if current is STATE.own_meter_provider:
        return current, _fill_seats(exporters), _late_readers(readers)

    if isinstance(current, SdkMeterProvider):
        if exporters or readers:
            _LOG.warning(
                "the application already set an SDK MeterProvider, which cannot take more"
                " readers: tcc metrics go to its exporters, tcc's metric exporters are not added"
            )
        for _, exporter in exporters:
            shutdown_quietly(exporter)
        return current, [], []
    if not exporters and not readers:
        return current, [], []

    seated = []
    for name, exporter in exporters:
        seat = MetricSeat(exporter)
        reader = PeriodicExportingMetricReader(seat, export_interval_ms)
        seated.append(Seated(name, reader, seat, exporter))
    provider = SdkMeterProvider(
        metric_readers=[*(s.reader for s in seated), *readers], resource=resource
    )
    metrics_api.set_meter_provider(provider)
    if metrics_api.get_meter_provider() is not provider:
        _LOG.warning(
            "the global meter provider is a %s, not the OpenTelemetry SDK's: tcc metrics go"
            " to it and tcc's metric exporters are not attached",
            type(current).__name__,
        )
        provider.shutdown()
        return metrics_api.get_meter_provider(), [], []
    STATE.own_meter_provider = provider
    STATE.seats = {s.name: (s.reader, s.seat) for s in seated}
    return provider, seated, list(readers)


def _fill_seats(exporters: Sequence[tuple[str, MetricExporter]]) -> list[Seated]:
    filled = []
    for name, exporter in exporters:
        if name not in STATE.seats:
            _LOG.warning(
                "metric exporter %r cannot be added after the first configure() of the process"
                " created the meter provider (with %s); restart to change it",
                name,
                ", ".join(STATE.seats) or "no exporter",
            )
            shutdown_quietly(exporter)
            continue
        reader, seat = STATE.seats[name]
        previous = seat.swap(exporter)
        if previous is not None:
            shutdown_quietly(previous)
        filled.append(Seated(name, reader, seat, exporter))
    return filled


def _late_readers(readers: Sequence[MetricReader]) -> list[MetricReader]:
    if readers:
        _LOG.warning(
            "metric_readers can join only the meter provider the first configure() of the"
            " process creates; %d reader(s) not attached",
            len(readers),
        )
    return []


def flush_all(processors: Sequence[SpanProcessor], timeout_millis: int) -> bool:
    ok = True
    for processor in processors:
        try:
            ok = processor.force_flush(timeout_millis) and ok
        except Exception:
            _LOG.warning("flushing spans failed", exc_info=True)
            ok = False
    return ok


def shutdown_quietly(component: SpanProcessor | SpanExporter | MetricExporter) -> None:
    try:
        component.shutdown()
    except Exception:
        _LOG.warning("shutting down %r failed", component, exc_info=True)
