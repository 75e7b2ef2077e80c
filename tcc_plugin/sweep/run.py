"""``sweep(...)``: every cell of a grid answers every question, resumably, under one budget.

The decisions (what to run, what is done, what no longer fits) are made here once;
answers run on worker threads, ``concurrency`` at a time, each in a copy of the
sweep's context (its span and its :class:`~tcc_plugin.Budget`). Everything that can be
checked without a call is checked before the first one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from opentelemetry import trace

from tcc_plugin.budget import Budget, Charge, active_budgets
from tcc_plugin.errors import BudgetExceeded
from tcc_plugin.sweep import telemetry as t
from tcc_plugin.sweep.analysis import Analysis, analyze
from tcc_plugin.sweep.checkers import Checker, CheckerLike, as_checker
from tcc_plugin.sweep.evalset import EvalSet, Question, as_evalset
from tcc_plugin.sweep.grid import Cell, Method, grid, thinking_tokens
from tcc_plugin.sweep.methods import Answered, VerifierFor, answer, verifier_for
from tcc_plugin.sweep.store import ResultsStore
from tcc_plugin.sweep.target import Target, function_target, missing_knobs

__all__ = [
    "SweepBudgetError",
    "SweepConfigError",
    "SweepProgress",
    "SweepResult",
    "asweep",
    "sweep",
]

_FORCING_MAX_WAITS = 8  # budget_forcing's default


class SweepConfigError(ValueError):
    """A sweep that cannot run as configured (found before any call)."""


class SweepBudgetError(SweepConfigError):
    """The sweep's budget cannot pay for even one cell (found before any call)."""


@dataclass(frozen=True, slots=True)
class SweepProgress:
    """Where a sweep stands, given to ``on_progress`` after every answer and refusal:
    answers ``done`` of ``total`` (``reused`` of them from the results file), the
    calls made and USD spent by this run, the cap, the cells refused so far (id ->
    reason), and the row just recorded (``None`` for a refusal)."""

    done: int
    total: int
    reused: int
    calls: int
    spent_usd: Decimal
    usd_cap: Decimal | None
    refused: dict[str, str]
    row: dict[str, Any] | None
    message: str | None = None


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: its rows (the grid's cells, from this run and earlier ones),
    how many were answered now and ``reused``, the cells ``refused`` for lack of budget
    (id -> reason), what this run ``spent``, and the ``analysis``."""

    name: str
    path: Path
    rows: list[dict[str, Any]]
    answered: int
    reused: int
    refused: dict[str, str]
    spent: Charge
    analysis: Analysis | None
    skipped_lines: tuple[str, ...] = field(default_factory=tuple)


def _worst_calls(cell: Cell, target: Target) -> int:
    if cell.method == "forcing":
        waits = target.forcing_options.get("max_waits")
        return int(waits if waits is not None else _FORCING_MAX_WAITS) + 2
    return cell.samples


def _demand(cell: Cell, target: Target) -> dict[str, int]:
    """One question's worst case in the dimensions known ahead."""
    need = {"calls": _worst_calls(cell, target)}
    output = target.max_output_tokens(cell)
    if output is not None:
        need["output_tokens"] = output
    return need


def _short(limits: dict[str, int | Decimal], need: dict[str, Any]) -> str | None:
    for key, amount in need.items():
        left = limits.get(key)
        if left is not None and amount > left:
            if key == "usd":
                return f"needs up to ${amount:.6f} (its dearest question so far), ${left:.6f} left"
            return f"needs up to {amount} {key.replace('_', ' ')}, {left} left"
    return None


def _preflight(
    questions: EvalSet, target: Target, cells: Sequence[Cell], checker: Checker,
    verifier: VerifierFor | None, budget: Budget,
) -> None:  # fmt: skip
    if checker.needs_tests:
        lacking = [q.id for q in questions if not q.tests]
        if lacking:
            raise SweepConfigError(
                f"checker {checker.name!r} needs 'tests' on every question; "
                f"missing on {', '.join(lacking[:5])}"
            )
    problems = []
    for cell in cells:
        missing = missing_knobs(target, cell)
        if missing:
            problems.append(f"{cell.id}: target {target.name} does not accept {'; '.join(missing)}")
        if cell.method == "best_of_n" and verifier is None:
            problems.append(f"{cell.id}: best_of_n needs a verifier ('code' or a function)")
    if problems:
        raise SweepConfigError("the grid cannot run on this target:\n  " + "\n  ".join(problems))
    chain = [b for b in active_budgets() if b is not budget] + [budget]
    shortfalls = []
    for cell in cells:
        per_question = _demand(cell, target)
        whole = {k: v * len(questions) for k, v in per_question.items()}
        short = next(((b, s) for b in chain if (s := _short(b.remaining(), whole))), None)
        if short is None:
            return
        shortfalls.append(f"{cell.id} {short[1]} in {short[0]!r}")
    raise SweepBudgetError(
        f"the budget cannot pay for a single cell of {len(questions)} questions: "
        + "; ".join(shortfalls)
    )


def _row(
    name: str, target: Target, cell: Cell, q: Question, seed: int, done: Answered
) -> dict[str, Any]:
    spent = done.spent
    error = done.error
    refused = isinstance(error, BudgetExceeded)
    return {
        "sweep": name,
        "cell_id": cell.id,
        "cell": cell.as_dict(),
        "question_id": q.id,
        "seed": seed,
        "question": q.question,
        "expected": q.answer,
        "answer": None if done.check is None else done.check.answer,
        "correct": done.check is not None and done.check.correct,
        "score": 0.0 if done.check is None else done.check.score,
        "cost_usd": float(spent.usd) if spent.usd > 0 else None,
        "input_tokens": spent.total_tokens - spent.output_tokens,
        "output_tokens": spent.output_tokens,
        # a raw-prompt backend may not report thinking as reasoning: forcing knows it
        "reasoning_tokens": max(spent.reasoning_tokens, int(done.extra.get("thinking_tokens", 0))),
        "latency_s": round(done.latency_s, 6),
        "calls": spent.calls,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "refused": refused,
        "target": target.name,
        "meta": dict(q.meta),
        "detail": done.extra,
    }


def sweep(
    evalset: EvalSet | Iterable[Any],
    target: Target | Callable[..., Any],
    *,
    methods: Sequence[Method] = ("single",),
    budgets: Sequence[int | str | None] = (None,),
    n: Sequence[int] = (4,),
    stop: Sequence[str | None] = (None,),
    min_thinking_tokens: int | None = None,
    cells: Sequence[Cell] | None = None,
    seeds: int | Sequence[int] = 1,
    checker: CheckerLike | None = None,
    judge: Callable[[str], Any] | None = None,
    verifier: str | VerifierFor | None = None,
    results: str | Path = "sweep-results.jsonl",
    name: str | None = None,
    budget: Budget | None = None,
    usd: float | str | Decimal | None = None,
    output_tokens: int | None = None,
    calls: int | None = None,
    concurrency: int = 4,
    on_progress: Callable[[SweepProgress], None] | None = None,
    alpha: float = 0.05,
    max_usd_per_question: float | None = None,
    max_p95_seconds: float | None = None,
    min_accuracy: float | None = None,
) -> SweepResult:
    """Run every cell of the grid on every question (and seed), skipping what the
    ``results`` file already holds, and analyse the results.

    The grid is ``cells``, or methods x ``budgets`` (x ``n`` x ``stop`` for sampling).
    ``target`` is a :class:`Target` or a function ``fn(question, *, thinking_budget,
    seed)``. ``checker`` scores replies (``exact``, ``numeric``, ``code``, ``judge`` with
    ``judge=``, or a function; default ``code`` when every question has tests, else
    ``numeric``); ``verifier`` is best-of-N's (``"code"``, default when
    every question has tests). The whole sweep runs under ``budget`` (else one made of
    ``usd`` / ``output_tokens`` / ``calls``); a cell whose next question no longer fits
    is refused (see :attr:`SweepResult.refused`). Bad configuration raises
    :class:`SweepConfigError` before any call.
    """
    questions = as_evalset(evalset)
    tgt = target if isinstance(target, Target) else function_target(target)
    if checker is None:  # code tasks by their tests, the rest by their numeric answer
        checker = "code" if all(q.tests for q in questions) else "numeric"
    check = as_checker(checker, judge=judge)
    grid_cells = list(dict.fromkeys(cells)) if cells is not None else grid(
        methods=methods, budgets=budgets, n=n, stop=stop, min_thinking_tokens=min_thinking_tokens
    )  # fmt: skip
    if not grid_cells:
        raise SweepConfigError("the grid is empty: give at least one cell")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise SweepConfigError("no seeds: give seeds >= 1")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise SweepConfigError(f"concurrency must be a positive int, got {concurrency!r}")
    if verifier is None and all(q.tests for q in questions):
        verifier = "code"
    verify = verifier_for(verifier)
    scope = budget or Budget(usd=usd, output_tokens=output_tokens, calls=calls, name="sweep")
    _preflight(questions, tgt, grid_cells, check, verify, scope)
    label = name or f"{questions.name}@{tgt.name}"
    store = ResultsStore(results)

    def cost_key(cell: Cell) -> tuple[int, int, int, str]:
        # cheapest first, so a budget that runs out refuses the dearest cells
        need = _demand(cell, tgt)
        thought = thinking_tokens(cell.thinking_budget) or 0
        return (need.get("output_tokens", 0), thought * cell.samples, need["calls"], cell.id)

    ordered = sorted(grid_cells, key=cost_key)
    jobs = [(c, q, s) for c in ordered for s in seed_list for q in questions]
    todo = [j for j in jobs if not store.done((label, j[0].id, j[1].id, j[2]))]
    reused = len(jobs) - len(todo)
    runner = _Runner(label, tgt, check, verify, scope, store, concurrency, on_progress)
    span = t.start_sweep_span({
        t.NAME: label, t.TARGET: tgt.name, t.CELLS: len(grid_cells),
        t.QUESTIONS: len(questions), t.SEEDS: len(seed_list), t.REUSED: reused,
    })  # fmt: skip
    error: BaseException | None = None
    try:
        with scope, trace.use_span(span, end_on_exit=False) if span else nullcontext():
            runner.run(todo, len(jobs), reused)
    except BaseException as exc:
        error = exc
        raise
    finally:
        t.end_span(span, {t.ANSWERED: runner.answered,
                          t.REFUSED_CELLS: sorted(runner.refused)}, error)  # fmt: skip
    wanted = {c.id for c in grid_cells}
    rows = [r for r in store if r["sweep"] == label and r["cell_id"] in wanted]
    analysis: Analysis | None = None
    if any(not r.get("refused") for r in rows):
        analysis = analyze(rows, alpha=alpha, max_usd_per_question=max_usd_per_question,
                           max_p95_seconds=max_p95_seconds, min_accuracy=min_accuracy,
                           sweep=label)  # fmt: skip
    return SweepResult(
        name=label, path=store.path, rows=rows, answered=runner.answered, reused=reused,
        refused=dict(runner.refused), spent=runner.spent, analysis=analysis,
        skipped_lines=tuple(str(b) for b in questions.skipped),
    )  # fmt: skip


class _Runner:
    """Launches answers while they fit, records them as they finish."""

    def __init__(
        self, name: str, target: Target, checker: Checker, verifier: VerifierFor | None,
        scope: Budget, store: ResultsStore, concurrency: int,
        on_progress: Callable[[SweepProgress], None] | None,
    ) -> None:  # fmt: skip
        self.name, self.target, self.checker, self.verifier = name, target, checker, verifier
        self.scope, self.store, self.concurrency = scope, store, concurrency
        self.on_progress = on_progress
        self.refused: dict[str, str] = {}
        self.answered = 0
        self.spent = Charge()
        self.done = 0
        self.total = 0
        self.reused = 0
        self.max_cost: dict[str, Decimal] = {}

    def _fits(self, cell: Cell) -> str | None:
        """Why ``cell``'s next question no longer fits the budget (``None``: it fits)."""
        need: dict[str, Any] = dict(_demand(cell, self.target))
        if cell.id in self.max_cost:  # the cost of one question is known only once seen
            need["usd"] = self.max_cost[cell.id]
        for scope in active_budgets():  # the sweep's and every budget around it
            short = _short(scope.remaining(), need)
            left = scope.time_left()
            if short is None and left is not None and left <= 0:
                short = "the deadline has passed"
            if short is not None:
                return short if scope is self.scope else f"{short} in {scope!r}"
        return None

    def _refuse(self, cell: Cell, reason: str) -> None:
        if cell.id not in self.refused:
            self.refused[cell.id] = reason
            self._report(None, f"cell {cell.id} refused: {reason}")

    def _report(self, row: dict[str, Any] | None, message: str | None = None) -> None:
        if self.on_progress is None:
            return
        cap = self.scope.limits.get("usd")
        self.on_progress(SweepProgress(
            self.done, self.total, self.reused, self.spent.calls, self.spent.usd,
            cap if isinstance(cap, Decimal) else None, dict(self.refused), row, message,
        ))  # fmt: skip

    def _answer(self, cell: Cell, q: Question, seed: int) -> dict[str, Any]:
        span = t.start_answer_span({
            t.CELL_ID: cell.id, t.METHOD: cell.method, t.N: cell.n, t.QUESTION_ID: q.id,
            t.SEED: seed, t.THINKING_BUDGET: None if cell.thinking_budget is None
            else str(cell.thinking_budget),
        })  # fmt: skip
        with trace.use_span(span, end_on_exit=False) if span else nullcontext():
            done = answer(self.target, cell, q, seed, self.checker, self.verifier)
        row = _row(self.name, self.target, cell, q, seed, done)
        t.end_span(span, {
            t.CORRECT: row["correct"], t.SCORE: row["score"], t.COST_USD: row["cost_usd"],
            t.OUTPUT_TOKENS: row["output_tokens"], t.REASONING_TOKENS: row["reasoning_tokens"],
            t.CALLS: row["calls"],
        }, done.error)  # fmt: skip
        return row

    def run(self, todo: list[tuple[Cell, Question, int]], total: int, reused: int) -> None:
        self.total, self.reused, self.done = total, reused, reused
        pending = list(reversed(todo))
        with cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="tcc-sweep") as pool:
            running: dict[cf.Future[dict[str, Any]], Cell] = {}
            while pending or running:
                while pending and len(running) < self.concurrency:
                    cell, q, seed = pending.pop()
                    if cell.id in self.refused:
                        continue
                    short = self._fits(cell)
                    if short is not None:
                        self._refuse(cell, short)
                        continue
                    ctx = contextvars.copy_context()
                    running[pool.submit(ctx.run, self._answer, cell, q, seed)] = cell
                if not running:
                    break
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    cell = running.pop(future)
                    self._record(cell, future.result())

    def _record(self, cell: Cell, row: dict[str, Any]) -> None:
        self.store.append(row)
        usd = Decimal(str(row["cost_usd"] or 0))
        self.spent = self.spent + Charge(
            total_tokens=row["input_tokens"] + row["output_tokens"],
            output_tokens=row["output_tokens"], reasoning_tokens=row["reasoning_tokens"],
            usd=usd, calls=row["calls"],
        )  # fmt: skip
        self.max_cost[cell.id] = max(self.max_cost.get(cell.id, Decimal(0)), usd)
        if row["refused"]:
            self._refuse(cell, row["error"])
        else:
            self.answered += 1
            self.done += 1
        self._report(row)


async def asweep(
    evalset: EvalSet | Iterable[Any], target: Target | Callable[..., Any], **options: Any
) -> SweepResult:
    """:func:`sweep` from async code: it runs on a worker thread, in a copy of this
    context (its budgets and span), so the event loop is not blocked. Targets remain
    sync callables (the sweep calls them from its own worker threads)."""
    return await asyncio.to_thread(sweep, evalset, target, **options)
