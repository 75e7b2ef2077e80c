"""The span of a routing decision: ``tcc.route.*``, the chosen route's calls as children.

Like all tcc telemetry, nothing here raises into the caller.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.trace import Span, SpanKind

from tcc_plugin.adapter import AttributeValue
from tcc_plugin.routing.route import Attempt, RouteResult
from tcc_plugin.telemetry import recorder

__all__ = [
    "ROUTE_DIFFICULTY",
    "ROUTE_ESCALATIONS",
    "ROUTE_KIND",
    "ROUTE_NAME",
    "ROUTE_REASON",
    "ROUTE_SKIPPED",
]

_P: Final = "tcc.route."
ROUTE_KIND: Final = _P + "kind"  # "router" or "cascade"
ROUTE_ROUTER: Final = _P + "router"
ROUTE_NAME: Final = _P + "name"
ROUTE_DIFFICULTY: Final = _P + "difficulty"
ROUTE_ESCALATIONS: Final = _P + "escalations"
ROUTE_REASON: Final = _P + "reason"
ROUTE_SKIPPED: Final = _P + "skipped"
ROUTE_ESTIMATOR: Final = _P + "estimator"
ROUTE_ESTIMATOR_ERROR: Final = _P + "estimator.error"
ATTEMPT_EVENT: Final = _P + "attempt"


@recorder.never_raises
def start_route_span(kind: str, name: str, estimator: str | None) -> Span:
    attributes: dict[str, AttributeValue] = {ROUTE_KIND: kind, ROUTE_ROUTER: name}
    if estimator is not None:
        attributes[ROUTE_ESTIMATOR] = estimator
    return recorder.tracer().start_span(
        f"route {name}", kind=SpanKind.INTERNAL, attributes=attributes
    )


@recorder.never_raises
def record_attempt(span: Span | None, attempt: Attempt) -> None:
    attributes: dict[str, AttributeValue] = {ROUTE_NAME: attempt.route}
    if attempt.error is not None:
        attributes["error.type"] = type(attempt.error).__qualname__
    if attempt.accepted is not None:
        attributes[_P + "accepted"] = attempt.accepted
    if attempt.confidence is not None:
        attributes[_P + "confidence"] = attempt.confidence
    if attempt.detail:
        attributes[_P + "detail"] = attempt.detail[:200]
    recorder.add_event(span, ATTEMPT_EVENT, attributes)


@recorder.never_raises
def record_result(span: Span | None, result: RouteResult) -> None:
    attributes: dict[str, AttributeValue] = {
        ROUTE_NAME: result.route,
        ROUTE_ESCALATIONS: result.escalations,
        ROUTE_REASON: result.reason[:500],
    }
    if result.difficulty is not None:
        attributes[ROUTE_DIFFICULTY] = result.difficulty
    if result.skipped:
        attributes[ROUTE_SKIPPED] = result.skipped
    recorder.set_attributes(span, attributes)


@recorder.never_raises
def record_estimator_error(span: Span | None, error: BaseException) -> None:
    recorder.set_attributes(
        span, {ROUTE_ESTIMATOR_ERROR: f"{type(error).__qualname__}: {error}"[:300]}
    )
