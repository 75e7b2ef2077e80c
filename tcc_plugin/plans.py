"""One driver for the plans written as generators ("decisions as a generator").

A plan is a generator that yields the steps it needs carried out (a request to send,
a text to count, a phase to run) and receives each step's result; its return value is
the outcome. :func:`drive` runs a plan with a sync step function, :func:`adrive` with
an async one, so a plan's logic is written once for both (as httpx's auth flows and
tenacity's retry loop do). An exception a step raises is thrown into the plan, which
may handle it (and go on) or let it propagate; ``catch`` widens that to, e.g., every
``BaseException`` for a plan that must undo what it holds even when cancelled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

__all__ = ["Plan", "adrive", "drive"]

StepT = TypeVar("StepT")
ResultT = TypeVar("ResultT")
OutcomeT = TypeVar("OutcomeT")

Plan = Generator[StepT, ResultT, OutcomeT]
"""A plan yielding steps of type ``StepT``, receiving ``ResultT``, returning ``OutcomeT``."""


def drive(
    plan: Generator[StepT, ResultT, OutcomeT],
    step: Callable[[StepT], ResultT],
    *,
    catch: type[BaseException] = Exception,
) -> OutcomeT:
    """Run ``plan`` to its end, carrying out each step with ``step``."""
    try:
        request = next(plan)
        while True:
            try:
                result = step(request)
            except catch as exc:
                request = plan.throw(exc)
            else:
                request = plan.send(result)
    except StopIteration as done:
        outcome: OutcomeT = done.value
        return outcome
    finally:
        plan.close()


async def adrive(
    plan: Generator[StepT, ResultT, OutcomeT],
    step: Callable[[StepT], Awaitable[ResultT]],
    *,
    catch: type[BaseException] = Exception,
) -> OutcomeT:
    """The async twin of :func:`drive` (each step awaited)."""
    try:
        request = next(plan)
        while True:
            try:
                result = await step(request)
            except catch as exc:
                request = plan.throw(exc)
            else:
                request = plan.send(result)
    except StopIteration as done:
        outcome: OutcomeT = done.value
        return outcome
    finally:
        plan.close()
