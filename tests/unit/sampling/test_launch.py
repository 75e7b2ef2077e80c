"""Launch policies: how many samples are in flight, the votes stop rules need, bad
input, and (property test) launch/cancel interleavings keep the ledger exact."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcc_plugin import budget, llm_call
from tcc_plugin.sampling import (
    LaunchPolicyError,
    SamplingState,
    aself_consistency,
    launch_adaptive,
    launch_all,
    launch_sequential,
    launch_waves,
    self_consistency,
    stop_after_completed,
    stop_confident,
    stop_never,
    stop_on_score,
    stop_unbeatable,
)

from .conftest import Scripted, chat_body, index


def state(
    ranking: tuple[tuple[str, float], ...] = (),
    *,
    n: int = 16,
    completed: int = 0,
    in_flight: int = 0,
    failed: int = 0,
) -> SamplingState:
    launched = completed + failed + in_flight
    return SamplingState(
        requested=n,
        launched=launched,
        completed=completed,
        failed=failed,
        in_flight=in_flight,
        pending=n - launched,
        ranking=ranking,
        abstained=completed - int(sum(v for _, v in ranking)),
        best_score=None,
        max_weight=1.0,
        elapsed=0.0,
    )


# -- votes needed -------------------------------------------------------------------------
def test_unbeatable_needs_a_majority_of_what_remains() -> None:
    rule = stop_unbeatable()
    assert rule.votes_needed(state()) == 9  # 9 > 16 - 9
    # 3-1 with 12 to come: k more for the leader win once 3 + k - 1 > 12 - k, k = 6
    assert rule.votes_needed(state((("a", 3), ("b", 1)), completed=4)) == 6
    assert rule.votes_needed(state((("a", 9),), completed=9)) == 0
    # samples in flight count among those that may still vote
    assert rule.votes_needed(state((("a", 3), ("b", 1)), completed=4, in_flight=4)) == 6


def test_confident_needs_fewer_than_unbeatable_and_combinations_take_min_and_max() -> None:
    confident = stop_confident(0.95)  # Beta: four unanimous votes stop
    assert confident.votes_needed(state()) == 4
    assert confident.votes_needed(state((("a", 2),), completed=2)) == 2
    either = confident | stop_unbeatable()
    both = confident & stop_unbeatable()
    assert either.votes_needed(state()) == 4 and both.votes_needed(state()) == 9
    assert stop_never().votes_needed(state()) is None
    assert (stop_never() | stop_unbeatable()).votes_needed(state()) == 9
    assert (stop_never() & stop_unbeatable()).votes_needed(state()) is None
    assert stop_on_score(1.0).votes_needed(state()) == 1
    assert stop_after_completed(5).votes_needed(state(completed=2, ranking=(("a", 2),))) == 3


def test_a_rule_that_cannot_fire_needs_none() -> None:
    unbounded = replace(state((("a", 2.5),), completed=2), max_weight=None)
    assert stop_unbeatable().votes_needed(unbounded) is None  # weights without a bound
    assert stop_confident(0.99).votes_needed(state((("a", 1), ("b", 1)), n=3, completed=2)) is None


# -- policies -----------------------------------------------------------------------------
def test_policies_say_how_many_to_have_in_flight() -> None:
    s = state((("a", 2), ("b", 1)), completed=3, in_flight=2)
    assert launch_all()(s, 3) == 16
    assert launch_sequential()(s, 3) == 1
    assert launch_waves(4)(s, 3) == 2  # a wave is still in flight: wait for it
    assert launch_waves(4)(state(completed=4, ranking=(("a", 4),)), 3) == 4
    assert launch_adaptive(growth=0)(s, 3) == 3
    assert launch_adaptive(growth=0.5)(s, 3) == 5  # one dissenting vote: ceil(3 * 1.5)
    assert launch_adaptive()(s, None) == 16  # nothing can stop the group: launch it all
    assert launch_adaptive(growth=10)(s, 3) == 16  # never more than n
    assert (launch_sequential() | launch_waves(4))(state(), 9) == 4
    assert (launch_all() & launch_adaptive(min_wave=2))(state(), 1) == 2
    assert repr(launch_adaptive() | launch_waves(2)) == (
        "launch_adaptive(growth=0.25, min_wave=1) | launch_waves(2)"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: launch_waves(0), "size must be a positive int"),
        (lambda: launch_adaptive(growth=-1), "growth must be finite"),
        (lambda: launch_adaptive(min_wave=0), "min_wave must be a positive int"),
    ],
)
def test_bad_policy_arguments_are_refused(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_launch_that_is_not_a_policy_is_refused_before_anything_runs() -> None:
    calls: list[int] = []
    with pytest.raises(TypeError, match="self_consistency: launch must be"):
        self_consistency(lambda: calls.append(1) or "1", n=3, launch="all")  # type: ignore[arg-type]
    assert calls == []


def test_a_policy_that_raises_fails_the_group_before_any_sample() -> None:
    calls: list[int] = []

    def broken(s: SamplingState, needed: int | None) -> int:
        raise ZeroDivisionError("oops")

    with pytest.raises(LaunchPolicyError, match=r"launch policy .*broken.* raised") as info:
        self_consistency(lambda: calls.append(1) or "1", n=3, launch=broken)
    assert isinstance(info.value.__cause__, ZeroDivisionError) and calls == []


def test_a_policy_that_returns_no_number_fails_the_group() -> None:
    with pytest.raises(LaunchPolicyError, match="returned 'many'"):
        self_consistency(lambda: "1", n=3, launch=lambda s, needed: "many")  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("asked", [0, -3, 99])
def test_out_of_range_targets_are_clamped_with_a_warning(
    asked: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tcc_plugin.sampling"):
        result = self_consistency(
            Scripted(["1", "1", "2"]), n=3, stop=None, launch=lambda s, k: asked
        )
    assert result.completed == 3  # never a hang
    assert f"asked for {asked} samples in flight" in caplog.text


def test_adaptive_launches_only_what_the_rule_needs() -> None:
    result = self_consistency(
        lambda: "7", n=16, stop=stop_confident(0.95), launch=launch_adaptive()
    )
    # four unanimous votes make stop_confident(0.95) fire: exactly four are launched
    assert result.launched == 4 and result.cancelled == 0 and result.answer == "7"
    assert result.launch == "launch_adaptive(growth=0.25, min_wave=1)"


def test_sequential_and_waves_in_a_thread_group() -> None:
    unbeatable = stop_unbeatable()
    seq = self_consistency(Scripted(["1"] * 16), n=16, stop=unbeatable, launch=launch_sequential())
    assert seq.launched == 9 and seq.cancelled == 0  # unbeatable after 9 of 16
    waves = self_consistency(Scripted(["1"] * 16), n=16, stop=unbeatable, launch=launch_waves(4))
    assert waves.launched == 12  # three waves of four: the third brings 9
    # the default rule fires on three unanimous votes: one wave of four, one cancelled
    waves = self_consistency(Scripted(["1"] * 16), n=16, launch=launch_waves(4))
    assert waves.launched == 4 and waves.completed + waves.cancelled == 4


# -- property: launch/cancel interleavings keep the ledger exact ---------------------------
OUT = 100  # each call's output cap: what a cancelled call is charged


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 8))
    kinds = draw(st.lists(st.sampled_from(["ok", "ok", "fail", "hang"]), min_size=n, max_size=n))
    steps = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    tokens = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    policy = draw(
        st.sampled_from(
            [
                launch_all(),
                launch_sequential(),
                launch_waves(2),
                launch_adaptive(),
                launch_adaptive(growth=0),
            ]
        )
    )
    stop = draw(
        st.sampled_from([None, stop_after_completed(1), stop_confident(0.9), stop_unbeatable()])
    )
    cancel_after = draw(st.none() | st.integers(0, 12))
    return {"n": n, "kinds": kinds, "steps": steps, "tokens": tokens, "policy": policy,
            "stop": stop, "cancel_after": cancel_after}  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_launch_and_cancel_interleavings_keep_the_ledger_exact(plan: dict[str, Any]) -> None:
    asyncio.run(_check(plan))


async def _check(plan: dict[str, Any]) -> None:
    started: list[int] = []
    answered: dict[int, int] = {}
    failed: list[int] = []

    @llm_call(model="o3", provider="openai", max_output_tokens=OUT)
    async def ask(i: int) -> dict[str, Any]:
        started.append(i)
        for _ in range(plan["steps"][i]):
            await asyncio.sleep(0)
        kind = plan["kinds"][i]
        if kind == "hang":
            await asyncio.sleep(3600)
        if kind == "fail":
            failed.append(i)
            raise RuntimeError("provider error")
        answered[i] = plan["tokens"][i]
        return chat_body(str(i % 2), prompt=10, completion=plan["tokens"][i])

    async def sample() -> Any:
        return await ask(index())

    result = None
    async with budget(calls=1000) as b:
        group = asyncio.ensure_future(
            aself_consistency(
                sample, n=plan["n"], stop=plan["stop"], launch=plan["policy"], timeout=0.05
            )
        )
        if plan["cancel_after"] is not None:
            for _ in range(plan["cancel_after"]):
                await asyncio.sleep(0)
            group.cancel()
        # cancelled from outside, or every sample failed: either way, nothing is lost
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            result = await group
        # whatever happened, every reservation is back and every call settled once
        assert b.reserved.is_zero() and b.in_flight == 0
    cancelled_calls = len(started) - len(answered) - len(failed)
    assert b.spent.calls == len(started)  # each call counted exactly once
    assert b.spent.output_tokens == sum(answered.values()) + OUT * cancelled_calls
    if result is not None:
        assert result.spent == b.spent and result.launched >= len(started)
        assert result.cancelled_spent.output_tokens == OUT * cancelled_calls + sum(
            answered[c.index] for c in result.candidates
            if c.status == "cancelled" and c.index in answered
        )  # fmt: skip
