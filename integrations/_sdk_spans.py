"""The Anthropic SDK's own OpenTelemetry spans, for an instrumented client.

The SDK (from 0.70 on) records a span per API call, with ``gen_ai.usage.*`` on it.
Ours, the lifecycle's span around it, carries usage too: a backend that sums usage over
spans would count each call twice. :func:`sdk_spans` sets the client's public
``open_telemetry`` option: traces off (the default), or kept with a tracer provider
whose spans drop ``gen_ai.usage.*`` (the opt-out). The client's other settings (trace
context propagation, content mode, its own tracer provider) are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

__all__ = ["UsageFreeTracerProvider", "sdk_spans"]

logger = logging.getLogger("tcc_plugin.integrations.anthropic")

_USAGE_PREFIX = "gen_ai.usage."


def _clean(attributes: Mapping[str, AttributeValue] | None) -> dict[str, AttributeValue] | None:
    if attributes is None:
        return None
    return {k: v for k, v in attributes.items() if not k.startswith(_USAGE_PREFIX)}


class _UsageFreeSpan(Span):
    """A span that ignores ``gen_ai.usage.*`` attributes; all else goes to ``inner``."""

    def __init__(self, inner: Span) -> None:
        self._inner = inner

    def end(self, end_time: int | None = None) -> None:
        self._inner.end(end_time)

    def get_span_context(self) -> Any:
        return self._inner.get_span_context()

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        self._inner.set_attributes(_clean(attributes) or {})

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if not key.startswith(_USAGE_PREFIX):
            self._inner.set_attribute(key, value)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        self._inner.add_event(name, attributes, timestamp)

    def add_link(self, context: Any, attributes: Any = None) -> None:
        self._inner.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self._inner.update_name(name)

    def is_recording(self) -> bool:
        return self._inner.is_recording()

    def set_status(self, status: Any, description: str | None = None) -> None:
        self._inner.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._inner.record_exception(exception, attributes, timestamp, escaped)


class _UsageFreeTracer(Tracer):
    def __init__(self, inner: Tracer) -> None:
        self._inner = inner

    def start_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        span = self._inner.start_span(
            name,
            context,
            kind,
            _clean(attributes),
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        return _UsageFreeSpan(span)

    @contextmanager  # the SDK uses start_span; this is for completeness
    def start_as_current_span(  # type: ignore[override]  # same behaviour, plain generator CM
        self, name: str, *args: Any, **kwargs: Any
    ) -> Iterator[Span]:
        end_on_exit = kwargs.pop("end_on_exit", True)
        span = self.start_span(name, *args, **kwargs)
        with trace.use_span(span, end_on_exit=end_on_exit) as current:
            yield current


class UsageFreeTracerProvider(TracerProvider):
    """The tracer provider ``inner`` (the global one when ``None``, looked up at each
    use), whose spans drop ``gen_ai.usage.*`` attributes."""

    def __init__(self, inner: TracerProvider | None = None) -> None:
        self._inner = inner

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        provider = self._inner if self._inner is not None else trace.get_tracer_provider()
        return _UsageFreeTracer(provider.get_tracer(*args, **kwargs))


def sdk_spans(client: Any, *, keep: bool) -> None:
    """Turn the SDK's span of each API call of ``client`` off, or (``keep``) keep it
    without usage, through the client's ``open_telemetry`` option. A no-op for an SDK
    that records no spans; a warning when it cannot be set on this client."""
    current = getattr(client, "open_telemetry", None)
    if not isinstance(current, Mapping):
        return  # an SDK release without its own spans
    traces = dict(current.get("traces") or {})
    option: dict[str, Any] = {**current, "traces": traces}
    if keep:
        provider = current.get("tracer_provider")
        if not isinstance(provider, UsageFreeTracerProvider):
            option["tracer_provider"] = UsageFreeTracerProvider(provider)
    else:
        traces["enabled"] = False
    setter = getattr(client, "_set_open_telemetry", None)
    if not callable(setter):
        logger.warning(
            "tcc_plugin could not turn the Anthropic SDK's own spans off for %s: each call "
            "may be recorded twice; construct the client with open_telemetry=False",
            type(client).__qualname__,
        )
        return
    # The option's own setter, which the SDK's with_options() calls on the copy it makes:
    # instrument() works in place, so the caller's client is the one to change.
    setter(option)
