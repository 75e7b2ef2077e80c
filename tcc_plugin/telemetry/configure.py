"""One-line OpenTelemetry setup: :func:`configure`.

Spans and metrics always go through the *global* OpenTelemetry providers, so an
application that already set up OpenTelemetry keeps receiving them. The global providers
can be set only once per process; configure() therefore installs (or joins) them once and
afterwards only swaps the exporters it feeds, which is what makes a second call replace
the first instead of adding to it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from opentelemetry import metrics as metrics_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from tcc_plugin.exporters.jsonl import JsonLinesMetricExporter, JsonLinesSpanExporter
from tcc_plugin.telemetry import names
from tcc_plugin.telemetry.delivery import GuardedBatchProcessor, SpanDeliveryStats

__all__ = ["DEFAULT_EXPORT_TIMEOUT_S", "DEFAULT_PATH", "EXPORTERS", "TelemetryHandle", "configure"]

_LOG = logging.getLogger("tcc_plugin.telemetry")

DEFAULT_PATH = "tcc-traces.jsonl"
#: Seconds an OTLP export may take, retries included, unless set explicitly or by the
#: exporters' own ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_TIMEOUT`` variables.
DEFAULT_EXPORT_TIMEOUT_S = 10.0
#: Exporter names ``configure`` and ``OTEL_{TRACES,METRICS}_EXPORTER`` accept.
EXPORTERS = ("jsonl", "console", "otlp", "otlp-http", "otlp-grpc", "none")

_ALIASES = {"otlp_proto_http": "otlp-http", "otlp_proto_grpc": "otlp-grpc"}
_INSTALL_HINT = "pip install 'tcc-plugin[otlp]'"
_SIGNAL_PATHS = {"traces": "v1/traces", "metrics": "v1/metrics"}


# -- the processor and exporter seats that outlive a configure() call --------------------
class _SpanHub(SpanProcessor):
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
            _shutdown_quietly(processor)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return _flush_all(self._processors, timeout_millis)


class _MetricSeat(MetricExporter):
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


class _Seated(NamedTuple):
    """One metric exporter a configure() call put into a seat."""

    name: str
    reader: PeriodicExportingMetricReader
    seat: _MetricSeat
    exporter: MetricExporter


class _State:
    """What configure() installed in this process."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.current: TelemetryHandle | None = None
        self.own_tracer_provider: SdkTracerProvider | None = None
        self.hub: _SpanHub | None = None
        self.hub_provider: SdkTracerProvider | None = None
        self.own_meter_provider: SdkMeterProvider | None = None
        self.seats: dict[str, tuple[PeriodicExportingMetricReader, _MetricSeat]] = {}


_STATE = _State()


# -- the handle --------------------------------------------------------------------------
class TelemetryHandle:
    """What :func:`configure` set up; flush it, or shut it down when the app ends.

    Attributes: ``tracer_provider`` and ``meter_provider`` (the global ones spans and
    metrics go through), ``trace_exporters`` and ``metric_exporters`` (names actually
    attached, e.g. ``("jsonl",)``), ``traces_path`` and ``metrics_path`` (the JSON-lines
    files, or ``None``), ``enabled`` (``False`` under ``OTEL_SDK_DISABLED``).
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
        _hub: _SpanHub | None = None,
        _processors: Sequence[SpanProcessor] = (),
        _seats: Sequence[_Seated] = (),
        _readers: Sequence[MetricReader] = (),
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.enabled = enabled
        self.trace_exporters = trace_exporters
        self.metric_exporters = metric_exporters
        self.traces_path = traces_path
        self.metrics_path = metrics_path
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
        ok = _flush_all(self._processors, timeout_millis)
        for reader in (*(seated.reader for seated in self._seats), *self._readers):
            try:
                ok = reader.force_flush(timeout_millis=timeout_millis) and ok
            except Exception:
                _LOG.warning("flushing metrics failed", exc_info=True)
                ok = False
        return ok

    def shutdown(self) -> None:
        """Flush, then stop and detach the exporters this call added. Idempotent."""
        with _STATE.lock:
            if self._shut_down:
                return
            self._shut_down = True
            if self._hub is not None:
                self._hub.remove(self._processors)
            for processor in self._processors:
                _shutdown_quietly(processor)
            for seated in self._seats:
                try:
                    seated.reader.force_flush()
                except Exception:
                    _LOG.warning("flushing metrics failed", exc_info=True)
                if seated.seat.inner is seated.exporter:
                    seated.seat.swap(None)
                _shutdown_quietly(seated.exporter)
            if _STATE.current is self:
                _STATE.current = None

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

    ``OTEL_SDK_DISABLED=true`` makes this a no-op. When the application already installed
    an SDK tracer provider, the exporters are added to it; an application's SDK meter
    provider cannot take readers later, so then metrics flow to it alone.

    Raises:
        ValueError: an unknown exporter or protocol name, or a non-positive interval.
        ImportError: OTLP was asked for without the ``otlp`` extra installed.
    """
    if _env_true("OTEL_SDK_DISABLED"):
        with _STATE.lock:
            if _STATE.current is not None:
                _STATE.current.shutdown()
        return TelemetryHandle(
            tracer_provider=trace.get_tracer_provider(),
            meter_provider=metrics_api.get_meter_provider(),
            enabled=False,
        )

    if export_interval_ms is not None and not export_interval_ms > 0:
        raise ValueError(f"export_interval_ms must be positive, not {export_interval_ms!r}")
    trace_names = _resolve_names(exporter, "traces", protocol)
    metric_names = _resolve_names(exporter, "metrics", protocol) if metrics else []
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
                (name, _span_exporter(name, traces_file, endpoint, headers, timeout))
            )
        for name in metric_names:
            metric_exporters.append(
                (name, _metric_exporter(name, metrics_file, endpoint, headers, timeout))
            )
    except BaseException:
        for _, span_exporter in span_exporters:
            _shutdown_quietly(span_exporter)
        for _, metric_exporter in metric_exporters:
            _shutdown_quietly(metric_exporter)
        raise

    with _STATE.lock:
        if _STATE.current is not None:
            _STATE.current.shutdown()
        if capture_content is not None:
            os.environ[names.CAPTURE_CONTENT_ENV] = "true" if capture_content else "false"
        resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})

        own = [_processor_for(name, exp) for name, exp in span_exporters]
        processors = [*own, span_processor] if span_processor is not None else own
        tracer_provider, hub = _install_spans(processors, resource, service_name)
        if hub is None:
            for processor in own:
                _shutdown_quietly(processor)
            processors = []

        meter_provider, seats, readers = _install_metrics(
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
            _hub=hub,
            _processors=processors,
            _seats=seats,
            _readers=readers,
        )
        _STATE.current = handle
        return handle


# -- installing ----------------------------------------------------------------------------
def _install_spans(
    processors: Sequence[SpanProcessor], resource: Resource, service_name: str | None
) -> tuple[trace.TracerProvider, _SpanHub | None]:
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
        _STATE.own_tracer_provider = provider

    if _STATE.hub is None or _STATE.hub_provider is not provider:
        _STATE.hub = _SpanHub()
        _STATE.hub_provider = provider
        provider.add_span_processor(_STATE.hub)
    _STATE.hub.add(processors)
    return provider, _STATE.hub


def _install_metrics(
    exporters: Sequence[tuple[str, MetricExporter]],
    readers: Sequence[MetricReader],
    resource: Resource,
    export_interval_ms: float | None,
) -> tuple[metrics_api.MeterProvider, list[_Seated], list[MetricReader]]:
    current = metrics_api.get_meter_provider()
    if current is _STATE.own_meter_provider:
        return current, _fill_seats(exporters), _late_readers(readers)

    if isinstance(current, SdkMeterProvider):
        if exporters or readers:
            _LOG.warning(
                "the application already set an SDK MeterProvider, which cannot take more"
                " readers: tcc metrics go to its exporters, tcc's metric exporters are not added"
            )
        for _, exporter in exporters:
            _shutdown_quietly(exporter)
        return current, [], []
    if not exporters and not readers:
        return current, [], []

    seated = []
    for name, exporter in exporters:
        seat = _MetricSeat(exporter)
        reader = PeriodicExportingMetricReader(seat, export_interval_ms)
        seated.append(_Seated(name, reader, seat, exporter))
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
    _STATE.own_meter_provider = provider
    _STATE.seats = {s.name: (s.reader, s.seat) for s in seated}
    return provider, seated, list(readers)


def _fill_seats(exporters: Sequence[tuple[str, MetricExporter]]) -> list[_Seated]:
    filled = []
    for name, exporter in exporters:
        if name not in _STATE.seats:
            _LOG.warning(
                "metric exporter %r cannot be added after the first configure() of the process"
                " created the meter provider (with %s); restart to change it",
                name,
                ", ".join(_STATE.seats) or "no exporter",
            )
            _shutdown_quietly(exporter)
            continue
        reader, seat = _STATE.seats[name]
        previous = seat.swap(exporter)
        if previous is not None:
            _shutdown_quietly(previous)
        filled.append(_Seated(name, reader, seat, exporter))
    return filled


def _late_readers(readers: Sequence[MetricReader]) -> list[MetricReader]:
    if readers:
        _LOG.warning(
            "metric_readers can join only the meter provider the first configure() of the"
            " process creates; %d reader(s) not attached",
            len(readers),
        )
    return []


# -- exporters -------------------------------------------------------------------------------
def _resolve_names(
    exporter: str | Sequence[str] | None, signal: str, protocol: str | None
) -> list[str]:
    """Exporter names for one signal, OTLP resolved to its transport, deduplicated."""
    explicit = exporter is not None
    if exporter is None:
        env = f"OTEL_{signal.upper()}_EXPORTER"
        raw = [os.environ.get(env, "").strip() or "jsonl"]
    else:
        raw = [exporter] if isinstance(exporter, str) else list(exporter)
    resolved: list[str] = []
    for item in raw:
        for part in item.split(","):
            given = part.strip()
            name = _ALIASES.get(given.lower(), given.lower())
            if not name:
                continue
            if name not in EXPORTERS:
                message = f"unknown exporter {given!r}; expected one of {', '.join(EXPORTERS)}"
                if explicit:
                    raise ValueError(message)
                # The OpenTelemetry spec: a bad environment value is warned about, not fatal.
                _LOG.warning("OTEL_%s_EXPORTER: %s", signal.upper(), message)
                continue
            if name == "otlp":
                name = _otlp_transport(protocol, signal)
            if name != "none" and name not in resolved:
                resolved.append(name)
    return resolved


def _otlp_transport(protocol: str | None, signal: str) -> str:
    if protocol is not None:
        value, source = protocol, "protocol"
    else:
        source = f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"
        value = os.environ.get(source, "")
        if not value.strip():
            source = "OTEL_EXPORTER_OTLP_PROTOCOL"
            value = os.environ.get(source, "") or "http/protobuf"
    value = value.strip().lower()
    if value == "grpc":
        return "otlp-grpc"
    if value == "http/protobuf":
        return "otlp-http"
    message = f"{source}={value!r} is not supported; use 'http/protobuf' or 'grpc'"
    if protocol is not None:
        raise ValueError(message)
    _LOG.warning("%s; using http/protobuf", message)
    return "otlp-http"


def _otlp_kwargs(
    transport: str,
    signal: str,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> dict[str, Any]:
    # Only what was given explicitly: otherwise the exporters read their OTEL_* variables.
    kwargs: dict[str, Any] = {}
    if endpoint is not None:
        kwargs["endpoint"] = _signal_url(endpoint, signal) if transport == "otlp-http" else endpoint
    if headers is not None:
        kwargs["headers"] = dict(headers)
    if timeout is not None:
        kwargs["timeout"] = timeout
    elif not any(
        os.environ.get(var)
        for var in ("OTEL_EXPORTER_OTLP_TIMEOUT", f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT")
    ):
        kwargs["timeout"] = DEFAULT_EXPORT_TIMEOUT_S
    return kwargs


def _signal_url(endpoint: str, signal: str) -> str:
    """``endpoint`` is a base URL, like ``OTEL_EXPORTER_OTLP_ENDPOINT``: add the signal path."""
    base = endpoint.rstrip("/")
    for known in _SIGNAL_PATHS.values():
        base = base.removesuffix("/" + known)
    return f"{base}/{_SIGNAL_PATHS[signal]}"


def _span_exporter(
    name: str,
    path: Path,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> SpanExporter:
    if name == "jsonl":
        return JsonLinesSpanExporter(path)
    if name == "console":
        return ConsoleSpanExporter()
    kwargs = _otlp_kwargs(name, "traces", endpoint, headers, timeout)
    try:
        if name == "otlp-grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )

            return GrpcSpanExporter(**kwargs)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter(**kwargs)
    except ImportError as exc:
        raise ImportError(f"the {name} exporter needs the otlp extra: {_INSTALL_HINT}") from exc


def _metric_exporter(
    name: str,
    path: Path,
    endpoint: str | None,
    headers: Mapping[str, str] | None,
    timeout: float | None,
) -> MetricExporter:
    if name == "jsonl":
        return JsonLinesMetricExporter(path)
    if name == "console":
        return ConsoleMetricExporter()
    kwargs = _otlp_kwargs(name, "metrics", endpoint, headers, timeout)
    try:
        if name == "otlp-grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetricExporter,
            )

            return GrpcMetricExporter(**kwargs)
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        return HttpMetricExporter(**kwargs)
    except ImportError as exc:
        raise ImportError(f"the {name} exporter needs the otlp extra: {_INSTALL_HINT}") from exc


def _processor_for(name: str, exporter: SpanExporter) -> SpanProcessor:
    # Console output is for a person watching; everything else is batched off the
    # caller's thread so a slow disk or a dead collector never delays a call, and what
    # could not be delivered is counted (TelemetryHandle.dropped_spans).
    if name == "console":
        return SimpleSpanProcessor(exporter)
    return GuardedBatchProcessor(exporter, name)


# -- small helpers -------------------------------------------------------------------------
def _metrics_path_for(traces: Path) -> Path:
    return traces.with_name(f"{traces.stem}.metrics.jsonl")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _flush_all(processors: Sequence[SpanProcessor], timeout_millis: int) -> bool:
    ok = True
    for processor in processors:
        try:
            ok = processor.force_flush(timeout_millis) and ok
        except Exception:
            _LOG.warning("flushing spans failed", exc_info=True)
            ok = False
    return ok


def _shutdown_quietly(component: SpanProcessor | SpanExporter | MetricExporter) -> None:
    try:
        component.shutdown()
    except Exception:
        _LOG.warning("shutting down %r failed", component, exc_info=True)
