"""The one driver of generator plans, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Generator

import pytest

from tcc_plugin.plans import adrive, drive


def doubling(n: int) -> Generator[int, int, list[int]]:
    """Asks for each of 1..n doubled; a step that fails with ValueError is noted as -1."""
    got = []
    for i in range(1, n + 1):
        try:
            got.append((yield i))
        except ValueError:
            got.append(-1)
    return got


def step(i: int) -> int:
    if i == 2:
        raise ValueError("two")
    return 2 * i


async def astep(i: int) -> int:
    await asyncio.sleep(0)
    return step(i)


def test_drive_runs_a_plan_and_throws_step_errors_into_it() -> None:
    assert drive(doubling(3), step) == [2, -1, 6]
    assert drive(doubling(0), step) == []


def test_adrive_is_the_same_with_an_async_step() -> None:
    assert asyncio.run(adrive(doubling(3), astep)) == [2, -1, 6]


def test_an_error_the_plan_does_not_handle_propagates_and_closes_it() -> None:
    closed = []

    def plan() -> Generator[int, int, int]:
        try:
            yield 2
        finally:
            closed.append(True)
        return 0  # pragma: no cover

    with pytest.raises(ValueError, match="two"):
        drive(plan(), step)
    assert closed == [True]
