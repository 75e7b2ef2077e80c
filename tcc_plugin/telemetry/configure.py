"""One-line OpenTelemetry setup: :func:`configure` and the handle it returns.

Spans and metrics always go through the *global* OpenTelemetry providers, so an
application that already set up OpenTelemetry keeps receiving them. The global providers
can be set only once per process; configure() therefore installs (or joins) them once and
afterwards only swaps the exporters it feeds, which is what makes a second call replace
the first instead of adding to it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from opentelemetry import metrics as metrics_api
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

from tcc_plugin.exporters.selection import (
    DEFAULT_EXPORT_TIMEOUT_S,
    EXPORTERS,
    metric_exporter,
    resolve_names,
    span_exporter,
    span_processor_for,
)
from tcc_plugin.telemetry import conventions as _conventions
from tcc_plugin.telemetry import names
from tcc_plugin.telemetry.delivery import GuardedBatchProcessor, SpanDeliveryStats
from tcc_plugin.telemetry.providers import (
    STATE,
    Seated,
    SpanHub,
    flush_all,
    install_metrics,
    install_spans,
    shutdown_quietly,
)

__all__ = ["DEFAULT_EXPORT_TIMEOUT_S", "DEFAULT_PATH", "EXPORTERS", "TelemetryHandle", "configure"]

_LOG = logging.getLogger("tcc_plugin.telemetry")

DEFAULT_PATH = "tcc-traces.jsonl"


# -- the handle --------------------------------------------------------------------------
class TelemetryHandle:
    """What :func:`configure` set up; flush it, or shut it down when the app ends.

    Attributes: ``tracer_provider`` and ``meter_provider`` (the global ones spans and
    metrics go through), ``trace_exporters`` and ``metric_exporters`` (names actually
    attached, e.g. ``("jsonl",)``), ``traces_path`` and ``metrics_path`` (the JSON-lines
    files, or ``None``), ``conventions`` (e.g. ``("openinference",)``), ``enabled``
    (``False`` under ``OTEL_SDK_DISABLED``).
    :attr:`dropped_spans` and :meth:`span_delivery` count the spans the exporters could
    not deliver: a collector that is down never slows or breaks a call.

    The global providers stay installed after :meth:`shutdown` (OpenTelemetry allows
    setting them once per process); only the exporters this call added stop. The SDK
    providers also flush and shut down at interpreter exit on their own. Made by
    :func:`configure`, not constructed directly.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider,
        meter_provider: metrics_api.MeterProvider,
        enabled: bool = True,
        trace_exporters: tuple[str, ...] = (),
        metric_exporters: tuple[str, ...] = (),
        traces_path: Path | None = None,
        metrics_path: Path | None = None,
        conventions: tuple[str, ...] = (),
        _hub: SpanHub | None = None,
        _processors: Sequence[SpanProcessor] = (),
        _seats: Sequence[Seated] = (),
        _readers: Sequence[MetricReader] = (),
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.enabled = enabled
        self.trace_exporters = trace_exporters
        self.metric_exporters = metric_exporters
        self.traces_path = traces_path
        self.metrics_path = metrics_path
        self.conventions = conventions
        self._hub = _hub
        self._processors = tuple(_processors)
        self._seats = tuple(_seats)
        self._readers = tuple(_readers)
        self._shut_down = False

    def __repr__(self) -> str:
        return (
            f"TelemetryHandle(enabled={self.enabled}, trace_exporters={self.trace_exporters},"
            f" metric_exporters={self.metric_exporters})"
        )

    def span_delivery(self) -> dict[str, SpanDeliveryStats]:
        """Per span exporter (``"jsonl"``, ``"otlp-http"``...), how many spans it exported
        and how many it dropped: the export failed (collector down, disk full), its queue
        was full, or they were still queued at shutdown. Console output is not counted."""
        return {
            processor.name: processor.stats
            for processor in self._processors
            if isinstance(processor, GuardedBatchProcessor)
        }

    @property
    def dropped_spans(self) -> int:
        """Spans that this configuration's exporters could not deliver, summed over them.
        They are also counted by the ``tcc.telemetry.dropped_spans`` metric, except those
        still queued when a shutdown gave up on the exporter."""
        return sum(stats.dropped for stats in self.span_delivery().values())

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is buffered now; ``False`` if something could not. Never raises.

        Waits for the exports, so for a collector that is down up to the export timeout.
        """
        if self._shut_down:
            return False
        ok = flush_all(self._processors, timeout_millis)
        for reader in (*(seated.reader for seated in self._seats), *self._readers):
            try:
                ok = reader.force_flush(timeout_millis=timeout_millis) and ok
            except Exception:
                _LOG.warning("flushing metrics failed", exc_info=True)
                ok = False
        return ok

    def shutdown(self) -> None:
        """Flush, then stop and detach the exporters this call added. Idempotent."""
        with STATE.lock:
            if self._shut_down:
                return
            self._shut_down = True
            if self._hub is not None:
                self._hub.remove(self._processors)
            for processor in self._processors:
                shutdown_quietly(processor)
            for seated in self._seats:
                try:
                    seated.reader.force_flush()
                except Exception:
                    _LOG.warning("flushing metrics failed", exc_info=True)
                if seated.seat.inner is seated.exporter:
                    seated.seat.swap(None)
                shutdown_quietly(seated.exporter)
            if STATE.current is self:
                STATE.current = None
                _conventions.activate(())

    def __enter__(self) -> TelemetryHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()


# -- configure ----------------------------------------------------------------------------
def configure(
    exporter: str | Sequence[str] | None = None,
    *,
    path: str | os.PathLike[str] = DEFAULT_PATH,
    metrics_path: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    protocol: str | None = None,
    timeout: float | None = None,
    service_name: str | None = None,
    metrics: bool = True,
    capture_content: bool | None = None,
    span_processor: SpanProcessor | None = None,
    metric_readers: Sequence[MetricReader] = (),
    export_interval_ms: float | None = None,
    conventions: str | Sequence[str] | None = None,
) -> TelemetryHandle:
    """Send tcc spans and metrics somewhere, in one line; replaces any earlier call.

    Args:
        exporter: ``"jsonl"`` (a local file, the default), ``"console"``, ``"otlp"``
            (protocol from ``protocol`` or ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL``,
            default http/protobuf), ``"otlp-http"``, ``"otlp-grpc"`` or ``"none"``; a
            sequence or comma-separated string for several. ``None`` reads
            ``OTEL_TRACES_EXPORTER`` and ``OTEL_METRICS_EXPORTER``, each defaulting to jsonl.
        path: the JSON-lines span file.
        metrics_path: the JSON-lines metrics file; default ``<path stem>.metrics.jsonl``
            next to ``path``.
        endpoint: OTLP base URL (``http://host:4318`` or ``http://host:4317``); when
            ``None`` the OTLP exporters read ``OTEL_EXPORTER_OTLP_*ENDPOINT`` themselves.
        headers: OTLP headers; when ``None``, ``OTEL_EXPORTER_OTLP_*HEADERS`` apply.
        protocol: ``"http/protobuf"`` or ``"grpc"`` for ``exporter="otlp"``.
        timeout: seconds an OTLP export may take; default the exporters' timeout
            variables, else ``DEFAULT_EXPORT_TIMEOUT_S``.
        service_name: ``service.name`` of the resource (else ``OTEL_SERVICE_NAME``);
            ``OTEL_RESOURCE_ATTRIBUTES`` is merged in.
        metrics: also export metrics through the chosen exporters.
        capture_content: set ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` for
            this process; ``None`` leaves it as it is.
        span_processor: one more processor to feed (for example an in-memory exporter).
        metric_readers: more metric readers; they can join only the meter provider that
            the first configure() of the process creates.
        export_interval_ms: how often metrics are exported (else ``OTEL_METRIC_EXPORT_INTERVAL``).
        conventions: attribute names of backends that read their own, added to each tcc
            span beside the GenAI ones: ``"openinference"`` (Phoenix, Arize),
            ``"langfuse"``; a sequence or comma-separated string. ``None`` reads
            ``TCC_CONVENTIONS``; default none.

    ``OTEL_SDK_DISABLED=true`` makes this a no-op. When the application already installed
    an SDK tracer provider, the exporters are added to it; an application's SDK meter
    provider cannot take readers later, so then metrics flow to it alone.

    Raises:
        ValueError: an unknown exporter, protocol or convention name (the message lists
            the valid ones), or a non-positive interval.
        ImportError: OTLP was asked for without the ``otlp`` extra installed.
    """
    if _env_true("OTEL_SDK_DISABLED"):
        with STATE.lock:
            if STATE.current is not None:
                STATE.current.shutdown()
        return TelemetryHandle(
            tracer_provider=trace.get_tracer_provider(),
            meter_provider=metrics_api.get_meter_provider(),
            enabled=False,
        )

    if export_interval_ms is not None and not export_interval_ms > 0:
        raise ValueError(f"export_interval_ms must be positive, not {export_interval_ms!r}")
    chosen_conventions = _conventions.resolve(conventions)
    trace_names = resolve_names(exporter, "traces", protocol)
    metric_names = resolve_names(exporter, "metrics", protocol) if metrics else []
    # Absolute now: a later chdir in the app must not move the files.
    traces_file = Path(path).expanduser().absolute()
    metrics_file = (
        Path(metrics_path).expanduser().absolute()
        if metrics_path is not None
        else _metrics_path_for(traces_file)
    )
    if "jsonl" in trace_names and "jsonl" in metric_names and traces_file == metrics_file:
        raise ValueError(f"spans and metrics cannot share one file: {traces_file}")

    # Build every exporter before touching global state: a missing extra leaves the
    # earlier configuration in place.
    span_exporters: list[tuple[str, SpanExporter]] = []
    metric_exporters: list[tuple[str, MetricExporter]] = []
    try:
        for name in trace_names:
            span_exporters.append(
                (name, span_exporter(name, traces_file, endpoint, headers, timeout))
            )
        for name in metric_names:
            metric_exporters.append(
                (name, metric_exporter(name, metrics_file, endpoint, headers, timeout))
            )
    except BaseException:
        for _, built_span in span_exporters:
            shutdown_quietly(built_span)
        for _, built_metric in metric_exporters:
            shutdown_quietly(built_metric)
        raise

    with STATE.lock:
        if STATE.current is not None:
            STATE.current.shutdown()
        _conventions.activate(chosen_conventions)
        if capture_content is not None:
            os.environ[names.CAPTURE_CONTENT_ENV] = "true" if capture_content else "false"
        resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})

        own = [span_processor_for(name, exp) for name, exp in span_exporters]
        processors = [*own, span_processor] if span_processor is not None else own
        tracer_provider, hub = install_spans(processors, resource, service_name)
        if hub is None:
            for processor in own:
                shutdown_quietly(processor)
            processors = []

        meter_provider, seats, readers = install_metrics(
            metric_exporters, metric_readers, resource, export_interval_ms
        )
        metric_names_attached = tuple(seated.name for seated in seats)
        handle = TelemetryHandle(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            trace_exporters=tuple(name for name, _ in span_exporters) if hub is not None else (),
            metric_exporters=metric_names_attached,
            traces_path=traces_file if hub is not None and "jsonl" in trace_names else None,
            metrics_path=metrics_file if "jsonl" in metric_names_attached else None,
            conventions=chosen_conventions,
            _hub=hub,
            _processors=processors,
            _seats=seats,
            _readers=readers,
        )
        STATE.current = handle
        return handle


# -- small helpers -------------------------------------------------------------------------
def _metrics_path_for(traces: Path) -> Path:
    return traces.with_name(f"{traces.stem}.metrics.jsonl")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"
