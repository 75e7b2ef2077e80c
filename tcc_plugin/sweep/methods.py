"""One question answered by one cell: the method run on the target, the reply checked.

Each method reuses the core: a single call, :func:`~tcc_plugin.budget_forcing`,
:func:`~tcc_plugin.best_of_n` with a verifier, :func:`~tcc_plugin.self_consistency`
with the cell's stop rule. What it all cost is read from a ledger opened for this one
answer (a :class:`~tcc_plugin.Budget` without limits nested in the sweep's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tcc_plugin.budget import Budget, Charge
from tcc_plugin.forcing import ForcingResult, budget_forcing
from tcc_plugin.sampling.api import best_of_n, self_consistency
from tcc_plugin.sampling.code_verifier import code_verifier
from tcc_plugin.sampling.verifiers import VerifierLike
from tcc_plugin.sweep.checkers import Check, Checker
from tcc_plugin.sweep.evalset import Question
from tcc_plugin.sweep.grid import Cell, parse_stop
from tcc_plugin.sweep.target import Target

__all__ = ["Answered", "VerifierFor", "answer", "sample_seed", "verifier_for"]

VerifierFor = Callable[[Question], VerifierLike]
"""Builds best-of-N's verifier for a question."""


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a sampling cell run with ``seed``."""
    return seed * 1009 + index


def verifier_for(spec: str | VerifierFor | None) -> VerifierFor | None:
    """Best-of-N's verifier: ``"code"`` (the question's tests), a function of the
    question, or ``None`` (no best-of-N possible)."""
    if spec is None or callable(spec):
        return spec
    if spec == "code":
        return lambda q: code_verifier(q.tests)
    raise ValueError(f"unknown verifier {spec!r}: give 'code' or a function question -> verifier")


@dataclass(frozen=True, slots=True)
class Answered:
    """The outcome of one (cell, question, seed): the reply, its check, the spend."""

    reply: Any
    check: Check | None
    spent: Charge
    latency_s: float
    error: BaseException | None
    extra: dict[str, Any]


def _forcing_text(result: ForcingResult) -> str:
    # a small model often answers inside its thought: give the checker both
    return f"{result.thinking}\n{result.answer}" if not result.answer.strip() else result.answer


def _run(
    target: Target, cell: Cell, question: Question, seed: int, verifier: VerifierFor | None,
    checker: Checker,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    knobs: dict[str, Any] = {"thinking_budget": cell.thinking_budget}
    if cell.method == "single":
        return target.call(question.question, seed=seed, **knobs), {}
    if cell.method == "forcing":
        assert target.continuer is not None and target.forcing_prompt is not None
        assert isinstance(cell.thinking_budget, int)
        result = budget_forcing(
            target.continuer,
            target.forcing_prompt(question.question),
            min_thinking_tokens=cell.min_thinking_tokens or 0,
            max_thinking_tokens=cell.thinking_budget,
            **dict(target.forcing_options),
        )
        extra = {"waits_appended": result.waits_appended, "forced_end": result.forced_end,
                 "thinking_tokens": result.thinking_tokens}  # fmt: skip
        return _forcing_text(result), extra
    assert cell.n is not None
    samples = [
        (lambda i=i: target.call(question.question, seed=sample_seed(seed, i), **knobs))
        for i in range(cell.n)
    ]
    name = f"sweep {cell.method}"
    if cell.method == "best_of_n":
        assert verifier is not None
        bon = best_of_n(
            samples, cell.n, verifier=verifier(question), stop=parse_stop(cell.stop), name=name
        )
        group = bon
    else:
        stop = parse_stop(cell.stop)
        kwargs: dict[str, Any] = {} if stop is None else {"stop": stop}
        group = self_consistency(samples, cell.n, extract=checker.extractor(), name=name, **kwargs)
    extra = {"launched": group.launched, "stopped_early": group.stopped_early}
    if group.winner is None:
        first = next((c.error for c in group.candidates if c.error is not None), None)
        cause = "" if first is None else f"; first error: {type(first).__name__}: {first}"
        raise LookupError(
            f"no winner among {group.launched} samples ({group.completed} completed, "
            f"{group.failed} failed, {group.refused} refused{cause})"
        ) from first
    return group.value, extra


def answer(
    target: Target,
    cell: Cell,
    question: Question,
    seed: int,
    checker: Checker,
    verifier: VerifierFor | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> Answered:
    """Answer ``question`` with ``cell`` on ``target`` and check the reply. Errors
    (including a budget's refusal) are returned, not raised: the spend so far is kept."""
    ledger = Budget(name=f"sweep {cell.id} {question.id} seed={seed}")
    start = clock()
    reply: Any = None
    extra: dict[str, Any] = {}
    error: BaseException | None = None
    check: Check | None = None
    with ledger:
        try:
            reply, extra = _run(target, cell, question, seed, verifier, checker)
        except Exception as exc:
            error = exc
    latency = clock() - start
    if error is None:
        try:
            check = checker.check(reply, question)
        except Exception as exc:
            error = exc
    return Answered(reply, check, ledger.spent, latency, error, extra)
