"""Which exporters ``configure()`` builds: names, OTLP transport and endpoints.

Resolves the names given to :func:`tcc_plugin.configure` (or the standard
``OTEL_{TRACES,METRICS}_EXPORTER`` variables) to exporters, and puts each span exporter
behind the processor that delivers its spans. Imports the OTLP exporters only when asked
for, with an install hint for the ``otlp`` extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter

from tcc_plugin.exporters.jsonl import JsonLinesMetricExporter, JsonLinesSpanExporter
from tcc_plugin.telemetry.delivery import GuardedBatchProcessor

__all__ = [
    "DEFAULT_EXPORT_TIMEOUT_S",
    "EXPORTERS",
    "metric_exporter",
    "resolve_names",
    "span_exporter",
    "span_processor_for",
]

_LOG = logging.getLogger("tcc_plugin.telemetry")

#: Seconds an OTLP export may take, retries included, unless set explicitly or by the
#: exporters' own ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_TIMEOUT`` variables.
DEFAULT_EXPORT_TIMEOUT_S = 10.0
#: Exporter names ``configure`` and ``OTEL_{TRACES,METRICS}_EXPORTER`` accept.
EXPORTERS = ("jsonl", "console", "otlp", "otlp-http", "otlp-grpc", "none")

_ALIASES = {"otlp_proto_http": "otlp-http", "otlp_proto_grpc": "otlp-grpc"}
_INSTALL_HINT = "pip install 'tcc-plugin[otlp]'"
_SIGNAL_PATHS = {"traces": "v1/traces", "metrics": "v1/metrics"}


def resolve_names(
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


def span_exporter(
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


def metric_exporter(
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


def span_processor_for(name: str, exporter: SpanExporter) -> SpanProcessor:
    # Console output is for a person watching; everything else is batched off the
    # caller's thread so a slow disk or a dead collector never delays a call, and what
    # could not be delivered is counted (TelemetryHandle.dropped_spans).
    # The JSON-lines file is local and its writes are bounded: when the worker thread falls
    # behind, the caller writes a batch rather than let the queue overflow.
    if name == "console":
        return SimpleSpanProcessor(exporter)
    return GuardedBatchProcessor(exporter, name, caller_exports=name == "jsonl")
