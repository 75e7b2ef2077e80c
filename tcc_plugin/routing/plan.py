"""Every routing decision, written once as a generator; sync and async drivers run it.

A plan yields the steps that need I/O (*estimate the difficulty*, *answer with a
route*, *judge an answer*) and receives their results (or has their errors thrown
into it); it decides which route, in what order, when to escalate and what to record.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from tcc_plugin.budget import Budget
from tcc_plugin.routing.accept import Judgement
from tcc_plugin.routing.route import Attempt, Route, RouteResult, fits

__all__ = ["Answer", "Estimate", "Judge", "Plan", "RoutingError", "cascade_plan", "router_plan"]


class RoutingError(Exception):
    """A router could not decide (its estimator failed and it has no fallback route)."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """Step: read the input's difficulty."""


@dataclass(frozen=True, slots=True)
class Answer:
    """Step: answer the input with ``route`` (``carry``: earlier attempts to expose)."""

    route: Route
    carry: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True)
class Judge:
    """Step: judge ``answer`` with the cascade's acceptance rule."""

    answer: Any


Step = Estimate | Answer | Judge
Plan = Generator[Step, Any, RouteResult]


def _time_left(budgets: tuple[Budget, ...]) -> float | None:
    lefts = [t for t in (b.time_left() for b in budgets) if t is not None]
    return min(lefts) if lefts else None


def _pick(
    routes: Sequence[Route], preferred: int, budgets: tuple[Budget, ...]
) -> tuple[Route, list[str], list[str]]:
    """The preferred route if the budgets can pay for it, else the nearest cheaper one,
    else the nearest dearer one; the cheapest when none fits (its calls then meet the
    budget's own refusal)."""
    order = [preferred, *range(preferred - 1, -1, -1), *range(preferred + 1, len(routes))]
    time_left = _time_left(budgets)
    skipped: list[str] = []
    notes: list[str] = []
    for index in order:
        ok, why = fits(routes[index], budgets, time_left)
        if ok:
            if why:
                notes.append(why)
            return routes[index], skipped, notes
        skipped.append(routes[index].name)
        notes.append(why)
    notes.append(f"no route fits the budgets: {routes[0].name}, the cheapest, is tried")
    return routes[0], skipped, notes


def router_plan(
    routes: Sequence[Route], fallback: Route | None, estimator: str, budgets: tuple[Budget, ...]
) -> Plan:
    """Estimate, choose the first route whose ``up_to`` covers the difficulty (budgets
    permitting), answer with it."""
    difficulty: float | None = None
    try:
        raw = yield Estimate()
        difficulty = float(raw)
        if not math.isfinite(difficulty) or not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1]; estimator {estimator} gave {raw!r}")
    except Exception as exc:
        if fallback is None:
            raise RoutingError(
                f"estimator {estimator} failed ({type(exc).__name__}: {exc}) and the router "
                "has no fallback route"
            ) from exc
        difficulty = None
        preferred = list(routes).index(fallback)
        reason = f"estimator {estimator} failed ({type(exc).__name__}); fallback {fallback.name}"
    else:
        preferred = next(
            (i for i, r in enumerate(routes) if r.up_to is None or difficulty <= r.up_to),
            len(routes) - 1,
        )
        bound = routes[preferred].up_to
        reason = f"difficulty {difficulty:.2f} -> {routes[preferred].name}" + (
            f" (up to {bound:g})" if bound is not None else ""
        )
    chosen, skipped, notes = _pick(routes, preferred, budgets)
    if notes:
        reason = "; ".join([reason, *notes])
    answer = yield Answer(chosen)
    return RouteResult(
        answer=answer,
        route=chosen.name,
        reason=reason,
        difficulty=difficulty,
        skipped=tuple(skipped),
        attempts=(Attempt(chosen.name, answer),),
    )


def _chain(errors: list[BaseException]) -> BaseException:
    """The last error, chained (``__cause__``) to the earlier ones, oldest first."""
    for earlier, later in itertools.pairwise(errors):
        if later.__cause__ is None and later is not earlier:
            later.__cause__ = earlier
    return errors[-1]


def cascade_plan(routes: Sequence[Route], carry: bool, budgets: tuple[Budget, ...]) -> Plan:
    """Try routes in order; stop at the first answer the acceptance rule trusts (the
    last route's answer is taken as it is). Routes the budgets cannot pay for are
    skipped, except the last."""
    attempts: list[Attempt] = []
    skipped: list[str] = []
    notes: list[str] = []
    errors: list[BaseException] = []
    for position, route in enumerate(routes):
        last = position == len(routes) - 1
        ok, why = fits(route, budgets, _time_left(budgets))
        if why:
            notes.append(why)
        if not ok and not last:
            skipped.append(route.name)
            continue
        try:
            answer = yield Answer(route, tuple(attempts) if carry else ())
        except Exception as exc:
            attempts.append(Attempt(route.name, error=exc, detail=f"raised {type(exc).__name__}"))
            errors.append(exc)
            if last:
                raise _chain(errors)  # noqa: B904 - _chain links it to the earlier errors
            continue
        if last:
            attempts.append(Attempt(route.name, answer, detail="last route"))
            why_here = "accepted by none before" if len(attempts) > 1 else "only route"
            break
        try:
            judgement: Judgement = yield Judge(answer)
        except Exception as exc:
            judgement = Judgement(
                False, None, f"acceptance rule raised {type(exc).__name__}: {exc}"
            )
        attempts.append(
            Attempt(
                route.name, answer, None, judgement.accepted, judgement.confidence, judgement.detail
            )
        )
        if judgement.accepted:
            why_here = f"accepted ({judgement.detail})" if judgement.detail else "accepted"
            break
    tried = [a for a in attempts if a.error is None]
    reason = f"{tried[-1].route}: {why_here}"
    if notes:
        reason = "; ".join([reason, *notes])
    return RouteResult(
        answer=tried[-1].answer,
        route=tried[-1].route,
        reason=reason,
        escalations=len(attempts) - 1,
        skipped=tuple(skipped),
        attempts=tuple(attempts),
    )
