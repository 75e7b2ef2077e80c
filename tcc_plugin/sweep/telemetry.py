"""The sweep's spans: one ``sweep`` span, and under it one span per answered question
(``tcc.sweep.*``) parenting the calls the answer made. Never raises into the sweep."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from tcc_plugin.adapter import AttributeValue
from tcc_plugin.telemetry import names, recorder

__all__ = ["ANSWER_SPAN", "SWEEP_SPAN", "end_span", "start_answer_span", "start_sweep_span"]

_P = names.SWEEP_PREFIX
NAME: Final = _P + "name"
TARGET: Final = _P + "target"
CELLS: Final = _P + "cells"
QUESTIONS: Final = _P + "questions"
SEEDS: Final = _P + "seeds"
ANSWERED: Final = _P + "answered"
REUSED: Final = _P + "reused"
REFUSED_CELLS: Final = _P + "refused_cells"
CELL_ID: Final = _P + "cell.id"
METHOD: Final = _P + "cell.method"
THINKING_BUDGET: Final = _P + "cell.thinking_budget"
N: Final = _P + "cell.n"
QUESTION_ID: Final = _P + "question.id"
SEED: Final = _P + "seed"
CORRECT: Final = _P + "correct"
SCORE: Final = _P + "score"
COST_USD: Final = _P + "cost.usd"
OUTPUT_TOKENS: Final = _P + "usage.output_tokens"
REASONING_TOKENS: Final = _P + "usage.reasoning_tokens"
CALLS: Final = _P + "calls"
SWEEP_SPAN: Final = "sweep"
ANSWER_SPAN: Final = "sweep.answer"


def _clean(attrs: Mapping[str, Any]) -> dict[str, AttributeValue]:
    return {k: v for k, v in attrs.items() if v is not None}


@recorder.never_raises
def start_sweep_span(attrs: Mapping[str, Any]) -> Span:
    return recorder.tracer().start_span(
        SWEEP_SPAN, kind=SpanKind.INTERNAL, attributes=_clean(attrs)
    )


@recorder.never_raises
def start_answer_span(attrs: Mapping[str, Any]) -> Span:
    return recorder.tracer().start_span(
        ANSWER_SPAN, kind=SpanKind.INTERNAL, attributes=_clean(attrs)
    )


@recorder.never_raises
def end_span(span: Span | None, attrs: Mapping[str, Any], error: BaseException | None) -> None:
    if span is None:
        return
    span.set_attributes(_clean(attrs))
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()
