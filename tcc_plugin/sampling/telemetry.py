"""The span of a sampling group: ``tcc.sampling.*`` attributes and one event per sample.

The group's span is the parent of every call its samples and verifiers make. The
winning *answer* is content: it is recorded only under the standard opt-in
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``); its index, score and votes
always are. Like all tcc telemetry, nothing here ever raises into the caller.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Final

from opentelemetry.trace import Span, SpanKind

from tcc_plugin.adapter import AttributeValue
from tcc_plugin.sampling._stats import latency_summary
from tcc_plugin.sampling.result import Candidate, SamplingResult
from tcc_plugin.telemetry import names, recorder

__all__ = [
    "CALLS",
    "CANCELLED",
    "CANCELLED_CALLS",
    "CANCELLED_COST_USD",
    "CANCELLED_OUTPUT_TOKENS",
    "CANCELLED_TOTAL_TOKENS",
    "COMPLETED",
    "CONCURRENCY",
    "COST_USD",
    "FAILED",
    "LAUNCH",
    "LAUNCHED",
    "METHOD",
    "REFUSED",
    "REQUESTED",
    "SAMPLE_EVENT",
    "STOPPED_EARLY",
    "VOTE_MARGIN",
    "WINNER_INDEX",
]

_P = names.SAMPLING_PREFIX
METHOD: Final = _P + "method"
REQUESTED: Final = _P + "requested"
CONCURRENCY: Final = _P + "concurrency"
LAUNCHED: Final = _P + "launched"
COMPLETED: Final = _P + "completed"
FAILED: Final = _P + "failed"
REFUSED: Final = _P + "refused"
CANCELLED: Final = _P + "cancelled"
CANCELLED_TOTAL_TOKENS: Final = _P + "cancelled.usage.total_tokens"
CANCELLED_OUTPUT_TOKENS: Final = _P + "cancelled.usage.output_tokens"
CANCELLED_CALLS: Final = _P + "cancelled.calls"
CANCELLED_COST_USD: Final = _P + "cancelled.cost.usd"
LAUNCH: Final = _P + "launch"
ABSTAINED: Final = _P + "abstained"
STOPPED_EARLY: Final = _P + "stopped_early"
STOP_REASON: Final = _P + "stop_reason"
STOP_RULE: Final = _P + "stop_rule"
BUDGET_LIMITED: Final = _P + "budget_limited"
WINNER_INDEX: Final = _P + "winner.index"
WINNER_SCORE: Final = _P + "winner.score"
WINNER_VOTES: Final = _P + "winner.votes"
WINNER_ANSWER: Final = _P + "winner.answer"
VOTE_MARGIN: Final = _P + "vote.margin"
VOTE_DISTINCT: Final = _P + "vote.distinct"
LATENCY_PREFIX: Final = _P + "latency."  # min, median, max, stdev (seconds)
TOTAL_TOKENS: Final = _P + "usage.total_tokens"
OUTPUT_TOKENS: Final = _P + "usage.output_tokens"
REASONING_TOKENS: Final = _P + "usage.reasoning_tokens"
CALLS: Final = _P + "calls"
COST_USD: Final = _P + "cost.usd"
SAMPLE_EVENT: Final = _P + "sample"
SAMPLE_INDEX: Final = _P + "sample.index"
SAMPLE_STATUS: Final = _P + "sample.status"
SAMPLE_LATENCY: Final = _P + "sample.latency"
SAMPLE_SCORE: Final = _P + "sample.score"
SAMPLE_ANSWER: Final = _P + "sample.answer"


@recorder.never_raises
def start_group_span(name: str, method: str, requested: int, concurrency: int) -> Span:
    """Start (without activating) a group's span."""
    return recorder.tracer().start_span(
        name,
        kind=SpanKind.INTERNAL,
        attributes={METHOD: method, REQUESTED: requested, CONCURRENCY: concurrency},
    )


def activated(span: Span | None) -> AbstractContextManager[Any]:
    """A context in which ``span`` is current, so calls made in it become its children."""
    return recorder.activated(span)


@recorder.never_raises
def record_sample(span: Span | None, candidate: Candidate[Any]) -> None:
    """One event per finished (or cancelled) sample."""
    if span is None or not span.is_recording():
        return
    attrs: dict[str, AttributeValue] = {
        SAMPLE_INDEX: candidate.index,
        SAMPLE_STATUS: candidate.status,
    }
    if candidate.latency is not None:
        attrs[SAMPLE_LATENCY] = candidate.latency
    if candidate.score is not None:
        attrs[SAMPLE_SCORE] = candidate.score
    if candidate.error is not None:
        attrs[names.ERROR_TYPE] = type(candidate.error).__qualname__
    if candidate.answer is not None and recorder.capture_content():
        attrs[SAMPLE_ANSWER] = candidate.answer
    span.add_event(SAMPLE_EVENT, attrs)


@recorder.never_raises
def end_group_span(
    span: Span | None, result: SamplingResult[Any] | None, error: BaseException | None = None
) -> None:
    """Put the group's outcome on its span and end it."""
    if span is None:
        return
    if result is not None and span.is_recording():
        span.set_attributes(_result_attributes(result))
    recorder.end_span(span, error)


def _result_attributes(result: SamplingResult[Any]) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        LAUNCHED: result.launched,
        COMPLETED: result.completed,
        FAILED: result.failed,
        REFUSED: result.refused,
        CANCELLED: result.cancelled,
        ABSTAINED: result.abstained,
        STOPPED_EARLY: result.stopped_early,
        STOP_REASON: result.stop_reason,
        BUDGET_LIMITED: result.budget_limited,
        TOTAL_TOKENS: result.spent.total_tokens,
        OUTPUT_TOKENS: result.spent.output_tokens,
        REASONING_TOKENS: result.spent.reasoning_tokens,
        CALLS: result.spent.calls,
    }
    if result.stop_rule is not None:
        attrs[STOP_RULE] = result.stop_rule
    scoring_failed = sum(1 for c in result.candidates if c.ok and c.error is not None)
    if scoring_failed:
        attrs[names.SAMPLING_PREFIX + "scoring_failed"] = scoring_failed
    if result.launch is not None:
        attrs[LAUNCH] = result.launch
    if result.cancelled:
        cancelled = result.cancelled_spent
        attrs[CANCELLED_TOTAL_TOKENS] = cancelled.total_tokens
        attrs[CANCELLED_OUTPUT_TOKENS] = cancelled.output_tokens
        attrs[CANCELLED_CALLS] = cancelled.calls
        attrs[CANCELLED_COST_USD] = float(cancelled.usd)
    if result.spent.usd > 0:
        attrs[COST_USD] = float(result.spent.usd)
    if result.votes:
        attrs[VOTE_DISTINCT] = len(result.votes)
    if result.margin is not None:
        attrs[VOTE_MARGIN] = result.margin
    winner = result.winner
    if winner is not None:
        attrs[WINNER_INDEX] = winner.index
        if winner.score is not None:
            attrs[WINNER_SCORE] = winner.score
        if result.answer is not None:
            if result.answer in result.votes:
                attrs[WINNER_VOTES] = result.votes[result.answer]
            if recorder.capture_content():
                attrs[WINNER_ANSWER] = result.answer
    latencies = [c.latency for c in result.candidates if c.ok and c.latency is not None]
    for key, value in latency_summary(latencies).items():
        attrs[LATENCY_PREFIX + key] = value
    return attrs
