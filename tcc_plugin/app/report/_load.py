"""From span records (the JSON-lines file format) to calls and sampling groups.

A *call* is one provider call, whatever the layers that saw it. A span with
``gen_ai.operation.name`` is one, unless

- it is *delegated* (``tcc.budget.outcome="delegated"``): an ``@llm_call`` function or a
  LangChain call whose provider call was made, charged and recorded by a call below it;
- it is ours and another of our GenAI spans that is not delegated lies below it (a
  wrapper around LLM calls, or a trace written before delegation existed);
- it is another instrumentation's span below one of our calls (the Anthropic SDK's own
  span of the same HTTP call): the call is counted once, from our span, which has the
  price, the cache writes and the budget outcome.

A *sampling group* is a span with ``tcc.sampling.*`` attributes; its calls are the call
spans below it. A *routing decision* is a span with ``tcc.route.kind`` (a router's or a
cascade's); its calls are the call spans below it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tcc_plugin.telemetry import names

__all__ = ["CallRecord", "RoutingRecord", "SamplingRecord", "Spans", "classify"]

_ROUTE: Final = "tcc.route."

_SPAN_KEY = tuple[str, str]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One LLM call, as its span recorded it."""

    trace_id: str
    span_id: str
    name: str
    provider: str
    model: str
    operation: str
    start_time_ns: int
    duration_s: float
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    has_usage: bool
    cost_usd: float | None
    time_to_first_chunk_s: float | None
    retries: int
    budget_outcome: str | None
    error: str | None

    @property
    def refused(self) -> bool:
        """Refused by a budget before it was sent (no latency, no tokens)."""
        return self.budget_outcome == names.OUTCOME_REFUSED


@dataclass(frozen=True, slots=True)
class SamplingRecord:
    """One sampling group (best-of-N, self-consistency): its parent span. ``name`` is
    its method (``tcc.sampling.method``), else the span's name."""

    trace_id: str
    span_id: str
    name: str
    requested: int | None
    launched: int | None
    completed: int | None
    cancelled: int | None
    stopped_early: bool
    calls: int
    cost_usd: float
    priced_calls: int


@dataclass(frozen=True, slots=True)
class RoutingRecord:
    """One routing decision (a router's or a cascade's span) and the calls below it."""

    trace_id: str
    span_id: str
    kind: str
    router: str
    route: str
    escalations: int
    skipped: int
    calls: int
    cost_usd: float
    failed: bool


@dataclass(frozen=True, slots=True)
class Spans:
    """What a trace file holds, split into calls, sampling groups and routing decisions."""

    spans: int
    traces: int
    calls: tuple[CallRecord, ...]
    sampling: tuple[SamplingRecord, ...]
    routing: tuple[RoutingRecord, ...] = ()


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _duration(record: Mapping[str, Any]) -> float:
    given = _float(record.get("duration_s"))
    if given is not None:
        return given
    start, end = _int(record.get("start_time_ns")), _int(record.get("end_time_ns"))
    if start is not None and end is not None:
        return max(end - start, 0) / 1e9
    return 0.0


def _retries(attrs: Mapping[str, Any], events: Any) -> int:
    attempts = _int(attrs.get(names.RETRY_ATTEMPTS)) or 1
    retried = 0
    if isinstance(events, list):
        for event in events:
            if isinstance(event, dict) and event.get("name") == names.RETRY_EVENT:
                event_attrs = event.get("attributes") or {}
                if event_attrs.get(names.RETRY_DECISION, "retry") == "retry":
                    retried += 1
    return max(attempts - 1, retried, 0)


def _call(record: Mapping[str, Any]) -> CallRecord:
    attrs: Mapping[str, Any] = record.get("attributes") or {}
    status = record.get("status") or {}
    has_usage = any(key in attrs for key in (names.USAGE_INPUT_TOKENS, names.USAGE_OUTPUT_TOKENS))
    # ``error.type`` marks a call that ended in an error (GenAI conventions). An ERROR
    # status alone, on a call that got its usage, is an attempt that failed before a
    # retry succeeded.
    error = _str(attrs.get(names.ERROR_TYPE))
    if error is None and isinstance(status, dict) and status.get("code") == "ERROR":
        error = None if has_usage else _str(status.get("description")) or "error"
    model = (
        _str(attrs.get(names.REQUEST_MODEL)) or _str(attrs.get(names.RESPONSE_MODEL)) or "(unknown)"
    )
    return CallRecord(
        trace_id=str(record.get("trace_id") or ""),
        span_id=str(record.get("span_id") or ""),
        name=str(record.get("name") or ""),
        provider=_str(attrs.get(names.PROVIDER_NAME)) or "",
        model=model,
        operation=_str(attrs.get(names.OPERATION_NAME)) or "",
        start_time_ns=_int(record.get("start_time_ns")) or 0,
        duration_s=_duration(record),
        input_tokens=_int(attrs.get(names.USAGE_INPUT_TOKENS)) or 0,
        cached_input_tokens=_int(attrs.get(names.USAGE_CACHE_READ_INPUT_TOKENS)) or 0,
        cache_write_tokens=_int(attrs.get(names.USAGE_CACHE_CREATION_INPUT_TOKENS)) or 0,
        output_tokens=_int(attrs.get(names.USAGE_OUTPUT_TOKENS)) or 0,
        reasoning_tokens=_int(attrs.get(names.USAGE_REASONING_OUTPUT_TOKENS)) or 0,
        has_usage=has_usage,
        cost_usd=_float(attrs.get(names.COST_USD)),
        time_to_first_chunk_s=_float(attrs.get(names.RESPONSE_TIME_TO_FIRST_CHUNK)),
        retries=_retries(attrs, record.get("events")),
        budget_outcome=_str(attrs.get(names.BUDGET_OUTCOME)),
        error=error,
    )


def _sampling_attr(attrs: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = _int(attrs.get(names.SAMPLING_PREFIX + key))
        if value is not None:
            return value
    return None


def _is_sampling(attrs: Mapping[str, Any]) -> bool:
    return any(key.startswith(names.SAMPLING_PREFIX) for key in attrs)


def classify(records: Iterable[Mapping[str, Any]]) -> Spans:
    """Split span records into provider calls (see the module docstring) and sampling
    groups."""
    spans: dict[_SPAN_KEY, Mapping[str, Any]] = {}
    parents: dict[_SPAN_KEY, _SPAN_KEY] = {}
    for record in records:
        trace_id, span_id = record.get("trace_id"), record.get("span_id")
        if not isinstance(trace_id, str) or not isinstance(span_id, str):
            continue
        key = (trace_id, span_id)
        spans[key] = record
        parent = record.get("parent_span_id")
        if isinstance(parent, str) and parent:
            parents[key] = (trace_id, parent)

    def is_genai(key: _SPAN_KEY) -> bool:
        attrs = spans[key].get("attributes") or {}
        return names.OPERATION_NAME in attrs

    def is_ours(key: _SPAN_KEY) -> bool:
        record = spans[key]
        scope = record.get("scope")
        if isinstance(scope, Mapping) and isinstance(scope.get("name"), str):
            return bool(scope["name"] == names.INSTRUMENTATION_NAME)
        attrs = record.get("attributes") or {}  # a record without its scope
        return any(str(k).startswith("tcc.") for k in attrs)

    def delegated(key: _SPAN_KEY) -> bool:
        attrs = spans[key].get("attributes") or {}
        return attrs.get(names.BUDGET_OUTCOME) == names.OUTCOME_DELEGATED

    def ancestors(key: _SPAN_KEY) -> Iterable[_SPAN_KEY]:
        seen = {key}
        while key in parents:
            key = parents[key]
            if key in seen or key not in spans:  # a cycle, or a parent not in the file
                return
            seen.add(key)
            yield key

    genai = {k for k in spans if is_genai(k)}
    ours = {k for k in genai if is_ours(k)}
    provider_calls = {k for k in ours if not delegated(k)}
    has_call_below: set[_SPAN_KEY] = set()
    for key in provider_calls:
        has_call_below.update(ancestors(key))
    counted = {k for k in provider_calls if k not in has_call_below}
    # Another instrumentation's GenAI span counts only where none of ours saw the call
    # (not below one of our spans, nor around one of our calls), innermost only.
    foreign = {k for k in genai - ours if not any(a in ours for a in ancestors(k))}
    foreign_parents: set[_SPAN_KEY] = set()
    for key in foreign:
        foreign_parents.update(ancestors(key))
    counted |= {k for k in foreign if k not in foreign_parents and k not in has_call_below}
    call_keys = [k for k in spans if k in counted]
    calls = {key: _call(spans[key]) for key in call_keys}

    group_keys = [
        k for k in spans if k not in calls and _is_sampling(spans[k].get("attributes") or {})
    ]
    below: dict[_SPAN_KEY, list[CallRecord]] = {k: [] for k in group_keys}
    for key, call in calls.items():
        for ancestor in ancestors(key):
            if ancestor in below:
                below[ancestor].append(call)
    groups = []
    for key in group_keys:
        attrs = spans[key].get("attributes") or {}
        members = below[key]
        priced = [c.cost_usd for c in members if c.cost_usd is not None]
        groups.append(
            SamplingRecord(
                trace_id=key[0],
                span_id=key[1],
                name=_str(attrs.get(names.SAMPLING_PREFIX + "method"))
                or str(spans[key].get("name") or ""),
                requested=_sampling_attr(attrs, "requested", "n"),
                launched=_sampling_attr(attrs, "launched"),
                completed=_sampling_attr(attrs, "completed"),
                cancelled=_sampling_attr(attrs, "cancelled"),
                stopped_early=_truthy(attrs.get(names.SAMPLING_PREFIX + "stopped_early")),
                calls=len(members),
                cost_usd=sum(priced),
                priced_calls=len(priced),
            )
        )
    route_keys = [k for k in spans if _ROUTE + "kind" in (spans[k].get("attributes") or {})]
    routed: dict[_SPAN_KEY, list[CallRecord]] = {k: [] for k in route_keys}
    for key, call in calls.items():
        for ancestor in ancestors(key):
            if ancestor in routed:
                routed[ancestor].append(call)
    decisions = [_routing(key, spans[key], routed[key]) for key in route_keys]
    ordered = sorted(calls.values(), key=lambda c: c.start_time_ns)
    return Spans(
        spans=len(spans),
        traces=len({k[0] for k in spans}),
        calls=tuple(ordered),
        sampling=tuple(groups),
        routing=tuple(decisions),
    )


def _routing(key: _SPAN_KEY, record: Mapping[str, Any], calls: list[CallRecord]) -> RoutingRecord:
    attrs: Mapping[str, Any] = record.get("attributes") or {}
    skipped = attrs.get(_ROUTE + "skipped")
    status = record.get("status") or {}
    return RoutingRecord(
        trace_id=key[0],
        span_id=key[1],
        kind=_str(attrs.get(_ROUTE + "kind")) or "router",
        router=_str(attrs.get(_ROUTE + "router")) or str(record.get("name") or ""),
        route=_str(attrs.get(_ROUTE + "name")) or "(none)",
        escalations=_int(attrs.get(_ROUTE + "escalations")) or 0,
        skipped=len(skipped) if isinstance(skipped, list) else 0,
        calls=len(calls),
        cost_usd=sum(c.cost_usd for c in calls if c.cost_usd is not None),
        failed=isinstance(status, dict) and status.get("code") == "ERROR",
    )
