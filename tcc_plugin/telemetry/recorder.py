"""Spans and metrics of calls, through the global OpenTelemetry API providers.

Whatever an application configured (or :func:`tcc_plugin.configure`) receives them.
Every function here swallows and logs its own errors: telemetry never raises into the
caller.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import traceback
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar

from opentelemetry import context, metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tcc_plugin.adapter import AttributeValue, CallInfo, ResponseInfo
from tcc_plugin.telemetry import conventions, names
from tcc_plugin.telemetry.cleaning import clean_attributes, clean_text
from tcc_plugin.telemetry.totals import Totals
from tcc_plugin.usage import Usage

__all__ = [
    "activated",
    "add_event",
    "capture_content",
    "end_span",
    "estimated_attributes",
    "never_raises",
    "record_call_metrics",
    "record_response",
    "set_attributes",
    "start_call_span",
    "tracer",
]

logger = logging.getLogger("tcc_plugin.telemetry")

P = ParamSpec("P")
R = TypeVar("R")


def never_raises(fn: Callable[P, R | None]) -> Callable[P, R | None]:
    """Run ``fn``; log and swallow anything it raises (returning ``None``)."""

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return fn(*args, **kwargs)
        except Exception:
            logger.warning("tcc_plugin telemetry error in %s (ignored)", fn.__name__, exc_info=True)
            return None

    return guarded


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tcc-plugin")
    except Exception:
        return "0"


_VERSION = _version()
# Proxies until a provider is set, then they forward to it: safe to create at import.
_tracer = trace.get_tracer(names.INSTRUMENTATION_NAME, _VERSION)
_meter = metrics.get_meter(names.INSTRUMENTATION_NAME, _VERSION)
_token_usage = _meter.create_histogram(
    names.METRIC_TOKEN_USAGE,
    unit="{token}",
    description="Number of input and output tokens used.",
    explicit_bucket_boundaries_advisory=list(names.TOKEN_USAGE_BUCKETS),
)
_duration = _meter.create_histogram(
    names.METRIC_OPERATION_DURATION,
    unit="s",
    description="GenAI operation duration.",
    explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
)
_time_to_first_chunk = _meter.create_histogram(
    names.METRIC_TIME_TO_FIRST_CHUNK,
    unit="s",
    description="Time to receive the first chunk of a streamed response.",
    explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
)
# Per-call sums tcc-plugin adds to the GenAI histograms: running totals reported at
# collection by observable counters (see telemetry.totals for why not a Counter).
_totals = Totals(("cost", "reasoning_tokens"))
_cost = _meter.create_observable_counter(
    names.METRIC_COST,
    callbacks=[_totals.callback("cost", as_float=True)],
    unit="USD",
    description="Cost of calls in USD.",
)
_reasoning_tokens = _meter.create_observable_counter(
    names.METRIC_REASONING_TOKENS,
    callbacks=[_totals.callback("reasoning_tokens")],
    unit="{token}",
    description="Reasoning (thinking) tokens of calls; a part of their output tokens.",
)
_refusals = _meter.create_counter(
    names.METRIC_BUDGET_REFUSALS, unit="{call}", description="Calls refused by a budget."
)


def tracer() -> trace.Tracer:
    """The tracer tcc-plugin records with."""
    return _tracer


def capture_content() -> bool:
    """Whether prompt and completion content may be recorded (opt-in, standard env var)."""
    return os.environ.get(names.CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


def _base_attributes(info: CallInfo) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {names.OPERATION_NAME: info.operation}
    if info.provider:
        attrs[names.PROVIDER_NAME] = info.provider
    if info.model:
        attrs[names.REQUEST_MODEL] = info.model
    if info.server_address:
        attrs[names.SERVER_ADDRESS] = info.server_address
    if info.server_port is not None:
        attrs[names.SERVER_PORT] = info.server_port
    return attrs


def _metric_attributes(info: CallInfo, response: ResponseInfo | None) -> dict[str, AttributeValue]:
    attrs = _base_attributes(info)
    if response is not None and response.response_model:
        attrs[names.RESPONSE_MODEL] = response.response_model
    return attrs


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


@never_raises
def start_call_span(info: CallInfo, name: str | None = None, *, capture: bool) -> Span:
    """Start (without activating) the span of one call; with its input messages if
    ``capture`` (the call's reading of :func:`capture_content`)."""
    attrs = _base_attributes(info)
    if info.max_output_tokens is not None:
        key = (
            names.REQUEST_ASSUMED_MAX_TOKENS
            if info.max_output_assumed
            else names.REQUEST_MAX_TOKENS
        )
        attrs[key] = info.max_output_tokens
    if info.choices != 1:
        attrs[names.REQUEST_CHOICE_COUNT] = info.choices
    if info.stream:
        attrs[names.REQUEST_STREAM] = True
    attrs.update(info.attributes)
    if capture and info.input_messages is not None:
        attrs[names.INPUT_MESSAGES] = _json(info.input_messages)
    span_name = name or (f"{info.operation} {info.model}" if info.model else info.operation)
    return _tracer.start_span(
        clean_text(span_name), kind=SpanKind.CLIENT, attributes=clean_attributes(attrs)
    )


_USAGE_ATTRIBUTE = {
    "reasoning": names.USAGE_REASONING_OUTPUT_TOKENS,
    "cached_input": names.USAGE_CACHE_READ_INPUT_TOKENS,
    "cache_write": names.USAGE_CACHE_CREATION_INPUT_TOKENS,
}


def usage_attributes(usage: Usage, unreported: Collection[str] = ()) -> dict[str, AttributeValue]:
    """The semantic-convention usage attributes of ``usage``; none for the
    ``unreported`` fields (not reported is not zero)."""
    attrs: dict[str, AttributeValue] = {
        names.USAGE_INPUT_TOKENS: usage.input,
        names.USAGE_OUTPUT_TOKENS: usage.output,
        names.USAGE_REASONING_OUTPUT_TOKENS: usage.reasoning,
        names.USAGE_CACHE_READ_INPUT_TOKENS: usage.cached_input,
        names.USAGE_CACHE_CREATION_INPUT_TOKENS: usage.cache_write,
    }
    if usage.cache_write_1h:
        attrs[names.USAGE_CACHE_CREATION_1H_INPUT_TOKENS] = usage.cache_write_1h
    for name in unreported:
        attribute = _USAGE_ATTRIBUTE.get(name)
        if attribute is not None:
            del attrs[attribute]
    return attrs


def estimated_attributes(fields: Collection[str] = ()) -> dict[str, AttributeValue]:
    """The attributes that flag a call's usage as an estimate (``fields``: the
    :class:`Usage` fields estimated; empty when the whole usage is)."""
    attrs: dict[str, AttributeValue] = {names.USAGE_ESTIMATED: True}
    if fields:
        attrs[names.USAGE_ESTIMATED_FIELDS] = tuple(sorted(fields))
    return attrs


@never_raises
def record_response(
    span: Span | None,
    response: ResponseInfo | None,
    usage: Usage | None,
    cost: Decimal | None,
    *,
    time_to_first_chunk: float | None = None,
    extra: Mapping[str, AttributeValue] | None = None,
    checked: Mapping[str, AttributeValue] | None = None,
    capture: bool,
) -> None:
    """Put what the response said (usage, model, finish reasons, cost) on ``span``;
    its output messages too if ``capture`` (the call's reading of
    :func:`capture_content`). ``extra`` attributes are cleaned with the rest
    (:func:`~tcc_plugin.telemetry.cleaning.clean_attributes`); ``checked`` ones are
    valid as they are (ints, bools, finite floats: a budget's figures) and skip it."""
    if span is None or not span.is_recording():
        return
    attrs: dict[str, AttributeValue] = {}
    if response is not None:
        if response.response_model:
            attrs[names.RESPONSE_MODEL] = response.response_model
        if response.response_id:
            attrs[names.RESPONSE_ID] = response.response_id
        if response.finish_reasons:
            attrs[names.RESPONSE_FINISH_REASONS] = tuple(response.finish_reasons)
        attrs.update(response.attributes)
        if capture and response.output_messages is not None:
            attrs[names.OUTPUT_MESSAGES] = _json(response.output_messages)
    if usage is not None:
        unreported = response.unreported if response is not None else ()
        attrs.update(usage_attributes(usage, unreported))
        if unreported:
            attrs[names.USAGE_UNREPORTED] = tuple(sorted(unreported))
        if response is not None and response.estimated:
            attrs.update(estimated_attributes(response.estimated))
    if cost is not None:
        attrs[names.COST_USD] = float(cost)
    if time_to_first_chunk is not None:
        attrs[names.RESPONSE_TIME_TO_FIRST_CHUNK] = time_to_first_chunk
    if extra:
        attrs.update(extra)
    cleaned = clean_attributes(attrs)
    if checked:
        cleaned.update(checked)
    span.set_attributes(cleaned)


@never_raises
def set_attributes(span: Span | None, attributes: Mapping[str, AttributeValue]) -> None:
    """Set ``attributes`` on ``span`` (a no-op on a span that is not recording)."""
    if span is not None and span.is_recording():
        span.set_attributes(clean_attributes(attributes))


def activated(span: Span | None) -> AbstractContextManager[Any]:
    """A context in which ``span`` is current, so spans started in it nest under it.

    Exceptions passing through are not recorded on ``span``: a failed attempt may be
    retried and a failed sample does not fail its group; whoever ends the span records
    the error that ended it (:func:`end_span`)."""
    if span is None:
        return nullcontext()
    return _Activated(span)


class _Activated:
    """``trace.use_span(span, end_on_exit=False, record_exception=False, ...)`` as a
    plain class: the generator-based context manager costs a few microseconds a call."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *exc_info: object) -> None:
        context.detach(self._token)  # type: ignore[arg-type]  # logs, never raises


@never_raises
def add_event(span: Span | None, name: str, attributes: Mapping[str, AttributeValue]) -> None:
    """Add an event to ``span``."""
    if span is not None and span.is_recording():
        span.add_event(name, clean_attributes(attributes))


@never_raises
def _add_conventions(span: Span) -> None:
    # Guarded on its own: a failure here must not keep the span from ending.
    attributes = getattr(span, "attributes", None)  # the SDK's spans have them
    if attributes:
        span.set_attributes(conventions.attributes_for(attributes))


@never_raises
def end_span(span: Span | None, error: BaseException | None = None) -> None:
    """End ``span``, with an error status when ``error`` is given."""
    if span is None:
        return
    if conventions.enabled() and span.is_recording():
        _add_conventions(span)
    if error is not None and span.is_recording():
        span.set_attribute(names.ERROR_TYPE, type(error).__qualname__)
        message = str(error)
        clean_message = clean_text(message)
        if clean_message is message:
            span.record_exception(error)
        else:  # its text would fail the export of the whole batch
            stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            span.record_exception(
                error,
                attributes={
                    "exception.message": clean_message,
                    "exception.stacktrace": clean_text(stack),
                },
            )
        description = clean_text(str(error), 500) or type(error).__name__
        span.set_status(Status(StatusCode.ERROR, description))
    span.end()


@never_raises
def record_call_metrics(
    info: CallInfo,
    response: ResponseInfo | None,
    usage: Usage | None,
    cost: Decimal | None,
    duration: float,
    *,
    error: BaseException | None = None,
    time_to_first_chunk: float | None = None,
    refused: bool = False,
) -> None:
    """Record the GenAI client metrics (and ours) of one finished call."""
    attrs = _metric_attributes(info, response)
    if refused:
        _refusals.add(1, attrs)
        return
    if error is not None:
        attrs[names.ERROR_TYPE] = type(error).__qualname__
    _duration.record(duration, attrs)
    if time_to_first_chunk is not None:
        _time_to_first_chunk.record(time_to_first_chunk, attrs)
    if usage is not None:
        _token_usage.record(usage.input, {**attrs, names.TOKEN_TYPE: "input"})
        _token_usage.record(usage.output, {**attrs, names.TOKEN_TYPE: "output"})
    if cost is not None and not cost.is_finite():
        cost = None  # a NaN would poison the running total for good; the span says so
    if usage is not None or cost is not None:
        _totals.add(attrs, cost or 0, usage.reasoning if usage is not None else 0)
