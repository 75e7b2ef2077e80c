"""``Router`` and ``cascade``: the public objects, and the thin drivers that carry out
their plans (:mod:`tcc_plugin.routing.plan`) synchronously or on an event loop."""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from typing import Any

from tcc_plugin.budget import active_budgets
from tcc_plugin.plans import adrive, drive
from tcc_plugin.routing.accept import AcceptLike, AcceptRule, as_accept_rule
from tcc_plugin.routing.estimators import DifficultyEstimator, EstimatorLike, as_estimator
from tcc_plugin.routing.plan import (
    Answer,
    Estimate,
    Judge,
    Plan,
    Step,
    cascade_plan,
    router_plan,
)
from tcc_plugin.routing.route import _ESCALATION, Route, RouteResult
from tcc_plugin.routing.telemetry import (
    record_attempt,
    record_estimator_error,
    record_result,
    start_route_span,
)
from tcc_plugin.telemetry import recorder

__all__ = ["Cascade", "RouteInProgress", "Router", "cascade"]

logger = logging.getLogger("tcc_plugin")


def _check_routes(routes: Sequence[Route], what: str) -> tuple[Route, ...]:
    routes = tuple(routes)
    if not routes:
        raise ValueError(f"a {what} needs at least one route")
    for route in routes:
        if not isinstance(route, Route):
            raise TypeError(f"a {what}'s routes are Route objects; got {type(route).__qualname__}")
    names = [r.name for r in routes]
    if len(set(names)) != len(names):
        raise ValueError(f"route names must be unique; got {names}")
    return routes


class _Driven:
    """Runs a plan: the sync driver calls each step, the async one awaits it."""

    kind: str
    name: str
    estimator_name: str | None = None

    def _estimator_label(self) -> str:
        return self.estimator_name or "none"

    def _plan(self) -> Plan:
        raise NotImplementedError

    def _sync_step(self, step: Step, value: Any) -> Any:
        raise NotImplementedError

    async def _async_step(self, step: Step, value: Any) -> Any:
        raise NotImplementedError

    def run(self, value: Any) -> RouteResult:
        """Route ``value`` and return what was decided and answered."""
        span = start_route_span(self.kind, self.name, self.estimator_name)

        def step(current: Step) -> Any:
            try:
                return self._sync_step(current, value)
            except Exception as exc:
                self._note_failure(span, current, exc)
                raise

        try:
            with recorder.activated(span):
                result: RouteResult = drive(self._plan(), step)
        except BaseException as exc:
            recorder.end_span(span, exc)
            raise
        self._finish(span, result)
        recorder.end_span(span)
        return result

    async def arun(self, value: Any) -> RouteResult:
        """Route ``value`` without blocking the event loop."""
        span = start_route_span(self.kind, self.name, self.estimator_name)

        async def step(current: Step) -> Any:
            try:
                return await self._async_step(current, value)
            except Exception as exc:
                self._note_failure(span, current, exc)
                raise

        try:
            with recorder.activated(span):
                result: RouteResult = await adrive(self._plan(), step)
        except BaseException as exc:
            recorder.end_span(span, exc)
            raise
        self._finish(span, result)
        recorder.end_span(span)
        return result

    def __call__(self, value: Any) -> Any:
        """Route ``value`` and return the answer."""
        return self.run(value).answer

    async def acall(self, value: Any) -> Any:
        """Route ``value`` asynchronously and return the answer."""
        return (await self.arun(value)).answer

    @staticmethod
    def _note_failure(span: Any, step: Step, exc: BaseException) -> None:
        if isinstance(step, Estimate):
            record_estimator_error(span, exc)
            logger.warning(
                "tcc_plugin: difficulty estimator failed: %s: %s", type(exc).__name__, exc
            )

    @staticmethod
    def _finish(span: Any, result: RouteResult) -> None:
        if span is None or not span.is_recording():
            return
        for attempt in result.attempts:
            record_attempt(span, attempt)
        record_result(span, result)


class Router(_Driven):
    """Send each input down one route, chosen by its difficulty.

    ``routes`` go from cheapest to dearest; each route's ``up_to`` is the highest
    difficulty it takes (the last one takes the rest). ``estimator`` reads an input's
    difficulty (:class:`~tcc_plugin.routing.heuristic_difficulty`,
    :class:`~tcc_plugin.routing.self_assessed`,
    :class:`~tcc_plugin.routing.LearnedDifficulty` or a function). A route the active
    budgets cannot pay for (its ``expected`` cost, or ``expected_seconds`` past a
    deadline) is skipped for the nearest cheaper one. When the estimator fails, the
    ``fallback`` route (a name; default: none, the error is raised) answers and the span
    records why. Each decision is a span ``route NAME`` with ``tcc.route.*``; the chosen
    route's calls are its children.
    """

    kind = "router"

    def __init__(
        self,
        routes: Sequence[Route],
        estimator: EstimatorLike,
        *,
        fallback: str | None = None,
        name: str = "router",
    ) -> None:
        self.routes = _check_routes(routes, "router")
        self.estimator: DifficultyEstimator = as_estimator(estimator)
        self.estimator_name: str = getattr(self.estimator, "name", type(self.estimator).__name__)
        bounds = [r.up_to for r in self.routes[:-1]]
        if any(b is None for b in bounds):
            raise ValueError("every route but the last needs up_to (the difficulty it takes)")
        if bounds != sorted(bounds):  # type: ignore[type-var]
            raise ValueError(
                f"routes go from easiest to hardest: up_to must not decrease; got {bounds}"
            )
        self.fallback: Route | None = None
        if fallback is not None:
            by_name = {r.name: r for r in self.routes}
            if fallback not in by_name:
                raise ValueError(f"fallback {fallback!r} is not one of the routes {list(by_name)}")
            self.fallback = by_name[fallback]
        self.name = name

    def _plan(self) -> Plan:
        return router_plan(self.routes, self.fallback, self._estimator_label(), active_budgets())

    def _sync_step(self, step: Step, value: Any) -> Any:
        if isinstance(step, Estimate):
            return self.estimator.estimate(value)
        if isinstance(step, Answer):
            return step.route.call(value)
        raise AssertionError(step)  # pragma: no cover

    async def _async_step(self, step: Step, value: Any) -> Any:
        if isinstance(step, Estimate):
            return await self.estimator.aestimate(value)
        if isinstance(step, Answer):
            return await step.route.acall(value)
        raise AssertionError(step)  # pragma: no cover

    def begin(self, value: Any) -> RouteInProgress:
        """Decide ``value``'s route without answering yet: for callers that run the route
        themselves (a stream). Finish with :meth:`RouteInProgress.finish` or ``fail``."""
        span = start_route_span(self.kind, self.name, self.estimator_name)
        plan = self._plan()
        try:
            with recorder.activated(span):
                route = drive(_until_answer(plan, span), self.estimator.estimate_step(value))
        except BaseException as exc:
            recorder.end_span(span, exc)
            raise
        return RouteInProgress(span, plan, route)

    async def abegin(self, value: Any) -> RouteInProgress:
        """The async twin of :meth:`begin`."""
        span = start_route_span(self.kind, self.name, self.estimator_name)
        plan = self._plan()
        try:
            with recorder.activated(span):
                route = await adrive(
                    _until_answer(plan, span), self.estimator.aestimate_step(value)
                )
        except BaseException as exc:
            recorder.end_span(span, exc)
            raise
        return RouteInProgress(span, plan, route)

    def __repr__(self) -> str:
        return f"Router({[r.name for r in self.routes]}, estimator={self.estimator_name})"


def _until_answer(plan: Plan, span: Any) -> Generator[Step, Any, Route]:
    """Run ``plan``'s estimate steps (yielded to the driver) up to its answer step; the
    route to answer with is returned and ``plan`` is left waiting for the answer."""
    step = next(plan)
    while isinstance(step, Estimate):
        try:
            outcome = yield step
        except Exception as exc:
            _Driven._note_failure(span, step, exc)
            step = plan.throw(exc)
        else:
            step = plan.send(outcome)
    if not isinstance(step, Answer):  # pragma: no cover - a router plan answers next
        raise AssertionError(step)
    return step.route


class RouteInProgress:
    """A routing decision whose route the caller runs itself (see :meth:`Router.begin`):
    ``route`` is the chosen one; run it inside :meth:`activated` so its calls nest
    under the routing span, then :meth:`finish` with the answer or :meth:`fail`."""

    def __init__(self, span: Any, plan: Plan, route: Route) -> None:
        self.span = span
        self.route = route
        self._plan = plan
        self._done = False

    def activated(self) -> Any:
        return recorder.activated(self.span)

    def finish(self, answer: Any) -> RouteResult:
        if self._done:
            raise RuntimeError("this routing decision is already finished")
        self._done = True
        try:
            self._plan.send(answer)
        except StopIteration as done:
            result: RouteResult = done.value
            _Driven._finish(self.span, result)
            recorder.end_span(self.span)
            return result
        raise AssertionError("a router plan answers once")  # pragma: no cover

    def fail(self, error: BaseException) -> None:
        if not self._done:
            self._done = True
            self._plan.close()
            recorder.end_span(self.span, error)


class Cascade(_Driven):
    """Try routes in order; stop at the first answer ``accept`` trusts.

    With ``carry=True`` a route escalated to sees the earlier attempts through
    :func:`tcc_plugin.routing.escalation`. Routes the budgets cannot pay for are skipped
    (but the last is always tried). When every route fails, the last route's error is
    raised, chained to the earlier ones."""

    kind = "cascade"

    def __init__(
        self,
        routes: Sequence[Route],
        accept: AcceptLike,
        *,
        carry: bool = False,
        name: str = "cascade",
    ) -> None:
        self.routes = _check_routes(routes, "cascade")
        self.accept: AcceptRule = as_accept_rule(accept)
        self.carry = carry
        self.name = name

    def _plan(self) -> Plan:
        return cascade_plan(self.routes, self.carry, active_budgets())

    def _sync_step(self, step: Step, value: Any) -> Any:
        if isinstance(step, Answer):
            token = _ESCALATION.set(step.carry)
            try:
                return step.route.call(value)
            finally:
                _ESCALATION.reset(token)
        if isinstance(step, Judge):
            return self.accept.judge(step.answer)
        raise AssertionError(step)  # pragma: no cover

    async def _async_step(self, step: Step, value: Any) -> Any:
        if isinstance(step, Answer):
            token = _ESCALATION.set(step.carry)
            try:
                return await step.route.acall(value)
            finally:
                _ESCALATION.reset(token)
        if isinstance(step, Judge):
            return await self.accept.ajudge(step.answer)
        raise AssertionError(step)  # pragma: no cover

    def __repr__(self) -> str:
        return f"cascade({[r.name for r in self.routes]})"


def cascade(
    routes: Sequence[Route], accept: AcceptLike, *, carry: bool = False, name: str = "cascade"
) -> Cascade:
    """A :class:`Cascade` over ``routes`` (cheapest first) with acceptance rule ``accept``."""
    return Cascade(routes, accept, carry=carry, name=name)
