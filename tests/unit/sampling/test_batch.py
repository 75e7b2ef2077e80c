"""Batch sample sources in the group plan: a wave is one draw of k candidates."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tcc_plugin import budget, llm_call
from tcc_plugin.budget import Demand
from tcc_plugin.sampling import (
    BatchSizeError,
    aself_consistency,
    batched,
    best_of_n,
    launch_all,
    launch_waves,
    self_consistency,
    stop_unbeatable,
)

from ...conftest import Telemetry
from .conftest import chat_body


class Draws:
    """Answers in order across draws; records each draw's k."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.sizes: list[int] = []

    def __call__(self, k: int) -> list[str]:
        start = sum(self.sizes)
        self.sizes.append(k)
        return [f"the answer is {a}" for a in self.answers[start : start + k]]


def test_waves_are_drawn_as_batches_and_voted_per_sample(telemetry: Telemetry) -> None:
    draws = Draws(["3", "3", "4", "3", "3", "3", "3", "3"])
    result = self_consistency(batched(draws), n=8, launch=launch_waves(4), stop=None)
    assert draws.sizes == [4, 4]
    assert (result.launched, result.completed, result.answer) == (8, 8, "3")
    assert dict(result.counts) == {"3": 7, "4": 1}
    group = dict(telemetry.span("self_consistency").attributes or {})
    assert group["tcc.sampling.launched"] == 8


def test_the_adaptive_launch_sizes_batches_and_the_stop_rule_saves_the_rest() -> None:
    draws = Draws(["5"] * 16)
    result = self_consistency(batched(draws), n=16, stop=stop_unbeatable())
    # unanimous: the first wave is the 9 votes that make 5 unbeatable out of 16
    assert draws.sizes == [9]
    assert (result.launched, result.stopped_early, result.answer) == (9, True, "5")


def test_max_batch_caps_a_draw() -> None:
    draws = Draws(["1"] * 5)
    self_consistency(batched(draws, max_batch=2), n=5, launch=launch_all(), stop=None)
    assert draws.sizes == [2, 2, 1]


def test_a_batch_of_the_wrong_size_fails_its_samples_clearly() -> None:
    with pytest.raises(BatchSizeError, match="asked for 3 samples and returned 2"):
        self_consistency(batched(lambda k: ["1"] * (k - 1)), n=3, launch=launch_all())
    with pytest.raises(BatchSizeError, match="not a sequence"):
        self_consistency(batched(lambda k: "1"), n=2, launch=launch_all())


def test_a_failing_draw_fails_every_sample_of_its_batch() -> None:
    calls = []

    def draw(k: int) -> list[str]:
        calls.append(k)
        if len(calls) == 1:
            raise RuntimeError("server down")
        return ["2"] * k

    result = self_consistency(batched(draw), n=4, launch=launch_waves(2), stop=None)
    assert (result.failed, result.completed) == (2, 2)
    assert all(isinstance(c.error, RuntimeError) for c in result.candidates[:2])


def test_bad_sources_are_refused() -> None:
    async def adraw(k: int) -> list[str]:
        return ["1"] * k

    with pytest.raises(TypeError, match="use aself_consistency"):
        self_consistency(batched(adraw), n=2)
    with pytest.raises(TypeError, match="give n"):
        self_consistency(batched(lambda k: ["1"] * k))
    with pytest.raises(ValueError, match="max_batch"):
        batched(lambda k: [], max_batch=0)


def test_per_sample_admits_a_batch_as_k_worst_cases() -> None:
    sizes: list[int] = []

    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    def ask(k: int) -> dict[str, Any]:
        sizes.append(k)
        return chat_body("7", completion=10 * k)  # one call, k choices

    def draw(k: int) -> list[Any]:
        body = ask(k)
        return [body] * k

    per_sample = Demand(input_tokens=0, max_output_tokens=100)
    # room for 3 worst cases (300 of 350): the first wave of 4 cannot be admitted whole
    with budget(output_tokens=350) as b:
        result = best_of_n(
            batched(draw, max_batch=3), n=4, verifier=lambda c: 1.0, per_sample=per_sample,
            launch=launch_all(),
        )  # fmt: skip
        assert b.reserved.is_zero()
    assert sizes[0] == 3 and result.completed == sum(sizes)
    assert b.spent.output_tokens == 10 * sum(sizes)


async def test_async_batches_run_concurrently() -> None:
    both = asyncio.Event()
    running = 0

    async def draw(k: int) -> list[str]:
        nonlocal running
        running += 1
        if running == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 30)
        return ["8"] * k

    result = await aself_consistency(
        batched(draw, max_batch=2), n=4, launch=launch_all(), stop=None
    )
    assert (result.completed, result.answer) == (4, "8")


def test_a_batch_shrinks_to_what_the_budget_can_pay_for() -> None:
    sizes: list[int] = []

    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    def ask(k: int) -> dict[str, Any]:
        sizes.append(k)
        return chat_body("7", completion=100 * k)  # every choice uses its whole cap

    per_sample = Demand(input_tokens=0, max_output_tokens=100)
    with budget(output_tokens=250) as b:  # two worst cases fit, not the wave of four
        result = best_of_n(
            batched(lambda k: [ask(k)] * k), n=4, verifier=lambda c: 1.0,
            per_sample=per_sample, launch=launch_all(),
        )  # fmt: skip
    assert sizes == [2]  # then 50 left: not one more sample fits
    assert (result.completed, result.budget_limited) == (2, True)
    assert b.spent.output_tokens == 200 and b.reserved.is_zero()
