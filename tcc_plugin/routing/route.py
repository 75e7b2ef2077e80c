"""A route: one way to answer an input, with what it is expected to cost."""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tcc_plugin.budget import Budget, Charge

__all__ = ["Attempt", "Route", "RouteResult", "escalation", "fits"]


@dataclass(frozen=True, slots=True)
class Route:
    """A named way to answer an input: ``answer(input)`` returns the answer.

    ``answer`` is any callable (sync or async): an instrumented client call, a
    ``@llm_call`` function, a :func:`tcc_plugin.best_of_n` / ``self_consistency`` group,
    a budget-forcing run, or an object with ``invoke``/``ainvoke`` (a LangChain
    runnable). ``expected`` is what one input costs on this route (tokens, USD, calls:
    what budgets are checked against before it runs) and ``expected_seconds`` how long
    it takes; ``up_to`` is the highest difficulty (0 to 1) a :class:`Router` sends here
    (``None``: any).
    """

    name: str
    answer: Any
    expected: Charge | None = None
    expected_seconds: float | None = None
    up_to: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a route needs a name")
        if not (callable(self.answer) or hasattr(self.answer, "invoke")):
            raise TypeError(
                f"route {self.name!r}: answer must be a callable or have invoke(); "
                f"got {type(self.answer).__qualname__}"
            )
        if self.up_to is not None and not 0.0 <= self.up_to <= 1.0:
            raise ValueError(f"route {self.name!r}: up_to is a difficulty in [0, 1]")
        if self.expected_seconds is not None and self.expected_seconds < 0:
            raise ValueError(f"route {self.name!r}: expected_seconds must be >= 0")

    @property
    def expected_usd(self) -> Decimal | None:
        return None if self.expected is None else self.expected.usd

    def call(self, value: Any) -> Any:
        """Answer ``value`` synchronously."""
        target = self.answer
        if hasattr(target, "invoke") and not inspect.isfunction(target):
            return target.invoke(value)
        result = target(value)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise TypeError(f"route {self.name!r} is async: use the async twin (arun / ainvoke)")
        return result

    async def acall(self, value: Any) -> Any:
        """Answer ``value`` without blocking the event loop."""
        target = self.answer
        if hasattr(target, "ainvoke") and not inspect.isfunction(target):
            return await target.ainvoke(value)
        result = target(value)
        if inspect.isawaitable(result):
            return await result
        return result


@dataclass(frozen=True, slots=True)
class Attempt:
    """One route tried for an input: its answer (or error) and the acceptance verdict."""

    route: str
    answer: Any = None
    error: BaseException | None = None
    accepted: bool | None = None
    confidence: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RouteResult:
    """What routing an input did: the answer, the route that gave it and why.

    ``difficulty`` is the estimator's reading (``None`` for a cascade or when it
    failed); ``escalations`` how many routes were tried after the first; ``skipped``
    the routes the budgets could not pay for; ``attempts`` every route tried, in order.
    """

    answer: Any
    route: str
    reason: str
    difficulty: float | None = None
    escalations: int = 0
    skipped: tuple[str, ...] = ()
    attempts: tuple[Attempt, ...] = field(default=())


_ESCALATION: contextvars.ContextVar[tuple[Attempt, ...]] = contextvars.ContextVar(
    "tcc_plugin_escalation", default=()
)


def escalation() -> tuple[Attempt, ...]:
    """Inside a route a cascade escalated to (with ``carry=True``): the earlier routes'
    attempts, their answers and verdicts, oldest first. Empty elsewhere."""
    return _ESCALATION.get()


def fits(route: Route, budgets: tuple[Budget, ...], time_left: float | None) -> tuple[bool, str]:
    """Whether ``budgets`` can pay for ``route`` now, and the reason when not.

    A budget in ``clamp`` mode pays for a route whose token or USD need exceeds what is
    left (its calls will be clamped), but never for one over its call count; a route
    whose expected time exceeds the deadline does not fit."""
    seconds = route.expected_seconds
    if seconds is not None and time_left is not None and seconds > time_left:
        return False, (
            f"{route.name} needs ~{seconds:.1f} s, "
            f"{max(time_left, 0.0):.1f} s left before the deadline"
        )
    if route.expected is None:
        return True, ""
    clamped = ""
    for b in budgets:
        left = b.remaining()
        for limit, rest in left.items():
            need = route.expected.get(limit)
            if need and need > rest:
                where = f"budget {b.name!r}" if b.name else "the budget"
                shown = _amount(limit, need), _amount(limit, rest)
                if b.policy == "clamp" and limit != "calls" and rest > 0:
                    clamped = f"{route.name} clamped: needs {shown[0]}, {where} has {shown[1]}"
                    continue
                return False, f"{route.name} skipped: needs {shown[0]}, {where} has {shown[1]} left"
    return True, clamped


def _amount(limit: str, value: int | Decimal) -> str:
    if limit == "usd":
        return f"${Decimal(value):.4g}"
    return f"{value} {limit.replace('_', ' ')}"


Answerer = Callable[[Any], Any]
