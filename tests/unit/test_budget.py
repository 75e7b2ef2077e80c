"""Budget, budget(), reserve, Reservation and BudgetExceeded, by example.

Limits, raise vs clamp, nesting, unknown worst cases, settling, asyncio and threads,
validation, and a few calls through the real ``@llm_call`` decorator.
"""

from __future__ import annotations

import asyncio
import contextvars
import pickle
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

import tcc_plugin
from tcc_plugin import Budget, BudgetExceeded, PriceUnknown, budget, llm_call
from tcc_plugin.adapter import Clamp
from tcc_plugin.budget import Charge, Demand, Reservation, active_budgets, reserve
from tcc_plugin.retry import RetryPolicy

MTOK = Decimal(1_000_000)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def priced(
    input_tokens: int, choices: int = 1, *, input_rate: int = 2, output_rate: int = 8
) -> Callable[[int | None, int | None], Decimal | None]:
    """A ``worst_usd`` at ``input_rate`` / ``output_rate`` USD per million tokens."""

    def worst(output: int | None, reasoning: int | None) -> Decimal:
        return (input_tokens * input_rate + (output or 0) * choices * output_rate) / MTOK

    return worst


def demand(
    input_tokens: int = 0,
    max_output_tokens: int | None = 100,
    *,
    max_reasoning_tokens: int | None = None,
    choices: int = 1,
    clampable: bool = True,
    usd: bool = False,
) -> Demand:
    return Demand(
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        max_reasoning_tokens=max_reasoning_tokens,
        choices=choices,
        clampable=clampable,
        worst_usd=priced(input_tokens, choices) if usd else None,
    )


def spend(b: Budget, charge: Charge) -> None:
    """Run one call in ``b`` (reserving no tokens) that spends ``charge``."""
    assert reserve(demand(0, 0), (b,)).settle(charge)


def refused(d: Demand, budgets: tuple[Budget, ...] | None = None) -> BudgetExceeded:
    with pytest.raises(BudgetExceeded) as info:
        reserve(d, budgets)
    return info.value


def assert_idle(*budgets: Budget) -> None:
    for b in budgets:
        assert b.reserved == Charge()
        assert b.in_flight == 0


def chat(prompt: int, completion: int, reasoning: int = 0, model: str = "m") -> dict[str, Any]:
    """An OpenAI chat completion body."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def cost(prompt: int, completion: int) -> Decimal:
    """USD of a call to a :func:`unique_model` at its default $2 / $8 per million."""
    return (prompt * 2 + completion * 8) / MTOK


def unique_model(input: str = "2", output: str = "8") -> str:
    """A model name priced in the default book (input/output USD per million)."""
    name = f"budget-test-{uuid.uuid4().hex}"
    tcc_plugin.set_price(name, input=input, output=output)
    return name


# -- the Charge a demand reserves ----------------------------------------------------------
def test_demand_charge_counts_choices_and_thinking() -> None:
    d = demand(10, 100, max_reasoning_tokens=30, choices=3, usd=True)
    assert d.charge(100, 30) == Charge(
        total_tokens=310,
        output_tokens=300,
        reasoning_tokens=90,
        usd=(10 * 2 + 300 * 8) / MTOK,
        calls=1,
    )
    # Without a thinking budget all output may be reasoning.
    assert demand(10, 100).charge(100, None).reasoning_tokens == 100
    # Unknown worst case: only what is known ahead (input and one call).
    assert demand(10, None).charge(None, None) == Charge(total_tokens=10, calls=1)


def test_reservation_holds_the_worst_case_and_settle_replaces_it() -> None:
    b = Budget(total_tokens=1000)
    r = reserve(demand(10, 100, choices=2), (b,))
    assert r.outcome == "ok" and r.clamp is None and not r.settled
    assert b.reserved == Charge(total_tokens=210, output_tokens=200, reasoning_tokens=200, calls=1)
    assert b.in_flight == 1
    assert b.remaining() == {"total_tokens": 790}
    assert r.settle(Charge(total_tokens=50, output_tokens=40, calls=1))
    assert r.settled
    assert b.spent == Charge(total_tokens=50, output_tokens=40, calls=1)
    assert_idle(b)
    assert b.remaining() == {"total_tokens": 950}


def test_unbudgeted_reservation_touches_nothing() -> None:
    assert active_budgets() == ()
    r = reserve(demand(10, 100))
    assert r.outcome == "unbudgeted" and r.budgets == () and r.charge == Charge()


# -- every limit, raise policy -----------------------------------------------------------
def test_total_tokens_limit() -> None:
    b = Budget(total_tokens=100)
    r = reserve(demand(10, 90), (b,))  # exactly fits
    e = refused(demand(0, 1), (b,))
    assert (e.limit, e.limit_value, e.spent, e.reserved, e.needed) == (
        "total_tokens",
        100,
        0,
        100,
        1,
    )
    r.settle(Charge(total_tokens=60, output_tokens=50, calls=1))
    reserve(demand(10, 30), (b,)).settle(Charge(total_tokens=40, calls=1))  # 60 + 40 = 100
    e = refused(demand(0, 1), (b,))
    assert (e.spent, e.reserved, e.needed) == (100, 0, 1)
    assert_idle(b)


def test_output_tokens_limit_counts_every_choice() -> None:
    b = Budget(output_tokens=100)
    e = refused(demand(1000, 34, choices=3), (b,))
    assert (e.limit, e.needed) == ("output_tokens", 102)
    r = reserve(demand(1000, 33, choices=3), (b,))
    assert b.reserved.output_tokens == 99
    r.release()
    assert_idle(b)
    assert b.spent == Charge()


def test_reasoning_tokens_limit_with_and_without_a_thinking_budget() -> None:
    b = Budget(reasoning_tokens=100)
    # No thinking budget declared: the whole output may be reasoning.
    e = refused(demand(0, 200), (b,))
    assert (e.limit, e.needed) == ("reasoning_tokens", 200)
    # A declared thinking budget bounds it.
    r = reserve(demand(0, 200, max_reasoning_tokens=60), (b,))
    assert b.reserved.reasoning_tokens == 60 and b.reserved.output_tokens == 200
    e = refused(demand(0, 200, max_reasoning_tokens=41), (b,))
    assert (e.limit, e.reserved, e.needed) == ("reasoning_tokens", 60, 41)
    r.settle(Charge(total_tokens=120, output_tokens=120, reasoning_tokens=59, calls=1))
    reserve(demand(0, 200, max_reasoning_tokens=41), (b,)).release()
    assert b.spent.reasoning_tokens == 59


def test_usd_limit() -> None:
    b = Budget(usd="0.001")
    # 100 input at $2/M + 100 output at $8/M = $0.001: exactly fits.
    r = reserve(demand(100, 100, usd=True), (b,))
    assert b.reserved.usd == Decimal("0.001")
    e = refused(demand(0, 1, usd=True), (b,))
    assert e.limit == "usd" and e.limit_value == Decimal("0.001")
    assert e.reserved == Decimal("0.001") and e.needed == Decimal("0.000008")
    r.settle(Charge(total_tokens=150, output_tokens=50, usd=Decimal("0.0006"), calls=1))
    assert b.remaining() == {"usd": Decimal("0.0004")}
    reserve(demand(10, 47, usd=True), (b,)).release()  # 0.00002 + 0.000376 fits
    refused(demand(10, 48, usd=True), (b,))  # 0.00002 + 0.000384 > 0.0004


@pytest.mark.parametrize("usd", [0.25, "0.25", Decimal("0.25"), 1])
def test_usd_limit_accepts_floats_strings_and_decimals_exactly(usd: Any) -> None:
    assert Budget(usd=usd).limits["usd"] == Decimal(str(usd))


def test_calls_limit_counts_failed_and_in_flight_calls() -> None:
    b = Budget(calls=3)
    first = reserve(demand(0, 1), (b,))
    second = reserve(demand(0, 1), (b,))
    first.settle(Charge(calls=1))  # a failed call still counts
    third = reserve(demand(0, 1), (b,))
    e = refused(demand(0, 1), (b,))
    assert (e.limit, e.limit_value, e.spent, e.reserved, e.needed) == ("calls", 3, 1, 2, 1)
    second.release()  # never reached the provider: not a call
    third.settle(Charge(calls=1))
    reserve(demand(0, 1), (b,)).settle(Charge(calls=1))
    assert b.spent.calls == 3
    refused(demand(0, 1), (b,))


def test_zero_limits_refuse_everything() -> None:
    assert refused(demand(0, 1), (Budget(calls=0),)).limit == "calls"
    assert refused(demand(1, 0), (Budget(total_tokens=0),)).limit == "total_tokens"
    # A zero output cap fits a zero output limit.
    reserve(demand(5, 0), (Budget(output_tokens=0),)).release()


def test_deadline_with_an_injected_clock() -> None:
    clock = FakeClock(100.0)
    b = Budget(deadline=10, clock=clock, name="fast")
    assert b.elapsed() == 0.0 and b.time_left() == 10
    clock.now = 500.0  # the clock starts when the budget is entered, not created
    with b:
        assert b.elapsed() == 0.0
        clock.now = 509.5
        assert b.time_left() == pytest.approx(0.5)
        reserve(demand(0, 1)).release()
        clock.now = 510.0
        e = refused(demand(0, 1))
    assert (e.limit, e.limit_value, e.spent, e.needed, e.budget_name) == (
        "deadline",
        10,
        10.0,
        0.0,
        "fast",
    )
    assert str(e) == "budget 'fast': deadline of 10 s reached (10 s elapsed)"
    # Entering again does not restart the clock.
    with b:
        refused(demand(0, 1))


def test_deadline_refuses_even_a_clamp_budget_and_an_unknown_worst_case() -> None:
    clock = FakeClock()
    b = Budget(deadline=5, policy="clamp", clock=clock)
    b.start()
    clock.now = 6
    assert refused(demand(0, None), (b,)).limit == "deadline"
    assert b.spent == Charge() and b.reserved == Charge()


def test_zero_deadline_refuses_at_once() -> None:
    assert refused(demand(0, 1), (Budget(deadline=0, clock=FakeClock()),)).limit == "deadline"


def test_a_call_in_flight_at_the_deadline_still_settles() -> None:
    clock = FakeClock()
    b = Budget(deadline=1, clock=clock)
    r = reserve(demand(0, 10), (b,))  # reserving starts the clock of a budget not entered
    clock.now = 2
    assert r.settle(Charge(total_tokens=5, output_tokens=5, calls=1))
    assert b.spent.calls == 1
    assert_idle(b)


# -- clamp policy ------------------------------------------------------------------------
def test_clamp_total_tokens_shrinks_the_output_cap() -> None:
    b = Budget(total_tokens=100, policy="clamp")
    spend(b, Charge(total_tokens=40, calls=1))
    r = reserve(demand(20, 100), (b,))
    # 100 - 40 spent - 20 input = 40 output tokens left.
    assert r.outcome == "clamped"
    assert r.clamp == Clamp(max_output_tokens=40, max_reasoning_tokens=None)
    assert r.charge == Charge(total_tokens=60, output_tokens=40, reasoning_tokens=40, calls=1)
    assert b.remaining() == {"total_tokens": 0}


def test_clamp_divides_what_is_left_among_choices() -> None:
    b = Budget(output_tokens=100, policy="clamp")
    r = reserve(demand(0, 50, choices=3), (b,))
    assert r.clamp == Clamp(33)  # floor(100 / 3)
    assert r.charge.output_tokens == 99


def test_clamp_takes_the_tightest_limit_of_the_chain() -> None:
    parent = Budget(output_tokens=70, policy="clamp")
    child = Budget(total_tokens=90, reasoning_tokens=1000, policy="clamp")
    r = reserve(demand(30, 100), (parent, child))
    assert r.clamp == Clamp(60)  # child: 90 - 30 input = 60 < parent's 70
    e = refused(demand(0, 100), (parent, child))  # the child has no tokens left
    assert (e.limit, e.reserved) == ("output_tokens", 60)  # the first limit hit is named
    r.settle(Charge(total_tokens=40, output_tokens=10, calls=1))
    # Now the parent binds: 70 - 10 = 60 output, the child has 90 - 40 = 50 total.
    assert reserve(demand(0, 100), (parent, child)).clamp == Clamp(50)
    assert reserve(demand(0, 100), (parent, Budget(total_tokens=1000))).clamp == Clamp(10)


def test_clamp_refuses_below_min_output_tokens() -> None:
    b = Budget(total_tokens=100, policy="clamp", min_output_tokens=50)
    spend(b, Charge(total_tokens=51, calls=1))
    e = refused(demand(0, 100), (b,))  # 49 would fit, fewer than 50
    assert (e.limit, e.spent, e.needed) == ("total_tokens", 51, 100)
    b2 = Budget(total_tokens=100, policy="clamp", min_output_tokens=50)
    spend(b2, Charge(total_tokens=50, calls=1))
    assert reserve(demand(0, 100), (b2,)).clamp == Clamp(50)  # the floor itself fits


def test_clamp_floor_is_the_largest_of_the_chain() -> None:
    parent = Budget(total_tokens=1000, min_output_tokens=20)
    child = Budget(total_tokens=10, policy="clamp")
    e = refused(demand(0, 100), (parent, child))
    assert e.limit == "total_tokens" and e.limit_value == 10


def test_clamp_shrinks_the_thinking_budget_first() -> None:
    b = Budget(reasoning_tokens=300, policy="clamp")
    r = reserve(demand(0, 1000, max_reasoning_tokens=500), (b,))
    assert r.clamp == Clamp(max_output_tokens=1000, max_reasoning_tokens=300)
    assert r.charge == Charge(total_tokens=1000, output_tokens=1000, reasoning_tokens=300, calls=1)
    # With the reasoning budget gone, thinking cannot be clamped to anything useful.
    e = refused(demand(0, 1000, max_reasoning_tokens=500), (b,))
    assert e.limit == "reasoning_tokens"


def test_clamp_keeps_a_zero_thinking_budget_and_shrinks_the_output() -> None:
    # Thinking switched off (budget 0) is not "nothing useful fits": the output still
    # can be clamped to what is left.
    b = Budget(total_tokens=100, policy="clamp")
    r = reserve(demand(0, 200, max_reasoning_tokens=0), (b,))
    assert r.clamp == Clamp(max_output_tokens=100, max_reasoning_tokens=0)
    assert r.charge == Charge(total_tokens=100, output_tokens=100, calls=1)


def test_clamp_shrinks_the_output_when_no_thinking_budget_is_declared() -> None:
    b = Budget(reasoning_tokens=300, policy="clamp")
    r = reserve(demand(0, 1000), (b,))
    assert r.clamp == Clamp(300)


def test_clamp_thinking_never_exceeds_the_clamped_output_from_token_limits() -> None:
    b = Budget(output_tokens=200, policy="clamp")
    r = reserve(demand(0, 1000, max_reasoning_tokens=500), (b,))
    assert r.clamp == Clamp(max_output_tokens=200, max_reasoning_tokens=200)


def test_clamp_usd_finds_the_largest_affordable_output() -> None:
    b = Budget(usd="0.001", policy="clamp")
    # 100 input at $2/M = $0.0002; $0.0008 left buys 100 output tokens at $8/M.
    r = reserve(demand(100, 1000, usd=True), (b,))
    assert r.clamp == Clamp(100)
    assert r.charge.usd == Decimal("0.001")
    # With choices, each choice gets a share: $0.0008 / (2 x $8/M) = 50 per choice.
    b2 = Budget(usd="0.001", policy="clamp")
    assert reserve(demand(100, 1000, choices=2, usd=True), (b2,)).clamp == Clamp(50)


def test_clamp_usd_keeps_the_thinking_budget_within_the_output_cap() -> None:
    b = Budget(usd="0.0008", policy="clamp")
    r = reserve(demand(0, 1000, max_reasoning_tokens=800, usd=True), (b,))
    assert r.clamp is not None and r.clamp.max_output_tokens == 100
    # A thinking budget above the output cap is not a valid request (Anthropic rejects
    # budget_tokens >= max_tokens); the clamp must lower both.
    assert r.clamp.max_reasoning_tokens is not None
    assert r.clamp.max_reasoning_tokens <= r.clamp.max_output_tokens


def test_clamp_cannot_shrink_calls_input_or_an_unclampable_request() -> None:
    calls = Budget(calls=1, policy="clamp")
    spend(calls, Charge(calls=1))
    assert refused(demand(0, 10), (calls,)).limit == "calls"
    tokens = Budget(total_tokens=100, policy="clamp")
    assert refused(demand(150, 10), (tokens,)).limit == "total_tokens"  # input alone
    e = refused(demand(0, 200, clampable=False), (tokens,))
    assert (e.limit, e.needed) == ("total_tokens", 200)
    assert_idle(calls, tokens)


def test_clamp_usd_needs_a_price() -> None:
    b = Budget(usd="0.001", policy="clamp")
    spend(b, Charge(usd=Decimal("0.001"), calls=1))
    assert refused(demand(0, 10), (b,)).limit == "usd"  # no worst_usd: cannot clamp


def test_a_raise_budget_in_the_chain_refuses_what_a_clamp_budget_would_shrink() -> None:
    parent = Budget(total_tokens=50)  # raise
    child = Budget(total_tokens=1000, policy="clamp")
    e = refused(demand(0, 100), (parent, child))
    assert e.limit_value == 50
    # The clamp child shrinks to what the raise parent allows, if only the child binds.
    parent2 = Budget(total_tokens=1000)
    child2 = Budget(total_tokens=50, policy="clamp")
    assert reserve(demand(0, 100), (parent2, child2)).clamp == Clamp(50)


# -- nesting -------------------------------------------------------------------------------
def test_nested_scopes_charge_every_ancestor() -> None:
    with budget(total_tokens=1000, name="outer") as outer:
        with budget(calls=5, name="inner") as inner:
            assert active_budgets() == (outer, inner)
            r = reserve(demand(10, 100))
            assert r.budgets == (outer, inner)
            assert outer.reserved == inner.reserved
            r.settle(Charge(total_tokens=30, output_tokens=20, calls=1))
        with budget(calls=5) as sibling:
            reserve(demand(0, 10)).settle(Charge(total_tokens=5, output_tokens=5, calls=1))
        assert active_budgets() == (outer,)
    assert active_budgets() == ()
    assert inner.spent == Charge(total_tokens=30, output_tokens=20, calls=1)
    assert sibling.spent == Charge(total_tokens=5, output_tokens=5, calls=1)
    assert outer.spent == inner.spent + sibling.spent
    assert_idle(outer, inner, sibling)


def test_a_child_cannot_outspend_its_parent() -> None:
    with (
        budget(total_tokens=100, name="parent") as parent,
        budget(total_tokens=10_000, name="child"),
    ):
        e = refused(demand(0, 101))
        assert (e.budget_name, e.limit_value) == ("parent", 100)
        reserve(demand(0, 60)).settle(Charge(total_tokens=60, output_tokens=60, calls=1))
        e = refused(demand(0, 41))
        assert e.budget_name == "parent" and e.spent == 60
    assert parent.spent.total_tokens == 60


def test_the_same_budget_entered_twice_is_charged_once() -> None:
    b = Budget(total_tokens=100)
    with b:
        with b:
            assert active_budgets() == (b,)
            reserve(demand(0, 60)).settle(Charge(total_tokens=60, output_tokens=60, calls=1))
            reserve(demand(0, 40)).release()  # 60 + 40 fits: not counted twice
        assert active_budgets() == (b,)  # the outer scope still holds
    assert active_budgets() == ()
    assert b.spent.total_tokens == 60
    with b:  # entered again later: the same ledger
        refused(demand(0, 41))


def test_a_budget_inside_another_twice_keeps_the_outermost_order() -> None:
    a, c = Budget(name="a"), Budget(name="c")
    with a, c, a:
        assert active_budgets() == (a, c)
        r = reserve(demand(0, 5))
        assert r.budgets == (a, c)
        r.settle(Charge(calls=1))
    assert a.spent.calls == 1 and c.spent.calls == 1


def test_an_explicit_chain_naming_a_budget_twice_is_charged_once() -> None:
    b = Budget(total_tokens=100)
    r = reserve(demand(0, 60), (b, b))
    r.settle(r.charge)
    assert b.spent.total_tokens == 60
    assert b.spent.calls == 1


# -- BudgetExceeded ------------------------------------------------------------------------
def test_budget_exceeded_attributes_and_message() -> None:
    b = Budget(total_tokens=1000, name="agent")
    spend(b, Charge(total_tokens=300, calls=1))
    held = reserve(demand(0, 500), (b,))
    e = refused(demand(50, 200), (b,))
    assert isinstance(e, tcc_plugin.TCCError)
    assert (e.limit, e.limit_value, e.spent, e.reserved, e.needed, e.budget_name) == (
        "total_tokens",
        1000,
        300,
        500,
        250,
        "agent",
    )
    assert str(e) == (
        "budget 'agent': total_tokens limit 1,000 exceeded: earlier calls used it up "
        "(spent 300 and 500 reserved by calls in flight); this call needs 250"
    )
    assert e.reason == "used_up"
    held.release()
    unnamed = refused(demand(0, 2), (Budget(calls=0),))
    assert str(unnamed).startswith("budget: calls limit 0 exceeded")
    too_large = refused(demand(100, 2000), (Budget(total_tokens=1000),))
    assert too_large.reason == "call_too_large"
    assert str(too_large) == (
        "budget: total_tokens limit 1,000 exceeded: this call alone needs 2,100, "
        "more than the whole limit"
    )
    copy = pickle.loads(pickle.dumps(e))
    assert (copy.limit, copy.spent, copy.reserved, copy.needed, str(copy)) == (
        e.limit,
        e.spent,
        e.reserved,
        e.needed,
        str(e),
    )


def test_budget_exceeded_usd_amounts_are_decimals() -> None:
    b = Budget(usd="0.0001")
    e = refused(demand(100, 100, usd=True), (b,))
    assert e.needed == Decimal("0.001") and isinstance(e.spent, Decimal)
    assert str(e) == (
        "budget: usd limit $0.0001 exceeded: this call alone needs $0.001, more than the "
        "whole limit"
    )


def test_budget_exceeded_rounds_amounts_and_durations_for_people() -> None:
    from tcc_plugin.errors import BudgetExceeded, format_seconds, format_usd

    assert format_usd(Decimal("0.0036999999999999999999999999")) == "$0.0037"
    assert format_usd(Decimal("0E-7")) == "$0" and format_usd(12.5) == "$12.50"
    assert format_usd(Decimal("0.05")) == "$0.05"
    assert format_seconds(0.2034) == "0.2 s" and format_seconds(0.035) == "35 ms"
    assert format_seconds(120.4) == "120 s"
    e = BudgetExceeded(
        "usd",
        limit_value=Decimal("0.01"),
        spent=Decimal("0.0099999999999999999999999999"),
        reserved=Decimal("0E-7"),
        needed=Decimal("0.0037123"),
    )
    assert str(e) == (
        "budget: usd limit $0.01 exceeded: earlier calls used it up (spent $0.01); "
        "this call needs $0.0037"
    )
    late = BudgetExceeded("deadline", limit_value=120.0, spent=120.2341, needed=0.0)
    assert str(late) == "budget: deadline of 120 s reached (120 s elapsed)"
    assert late.reason == "deadline"


# -- unknown worst case --------------------------------------------------------------------
def test_unknown_worst_case_calls_cap_holds_exactly() -> None:
    b = Budget(calls=2, total_tokens=100)
    first = reserve(demand(10, None), (b,))
    second = reserve(demand(10, None), (b,))
    assert b.reserved == Charge(total_tokens=20, calls=2)
    assert refused(demand(10, None), (b,)).limit == "calls"  # while both are in flight
    first.settle(Charge(total_tokens=500, output_tokens=490, calls=1))
    second.settle(Charge(calls=1))
    assert b.spent == Charge(total_tokens=500, output_tokens=490, calls=2)


def test_unknown_worst_case_deadline_holds_exactly() -> None:
    clock = FakeClock()
    b = Budget(deadline=3, clock=clock)
    with b:
        reserve(demand(0, None)).settle(Charge(calls=1))
        clock.now = 3
        assert refused(demand(0, None)).limit == "deadline"


@pytest.mark.parametrize(
    ("limit", "cap", "overspend"),
    [
        ("total_tokens", 100, Charge(total_tokens=150, output_tokens=140, calls=1)),
        ("output_tokens", 100, Charge(total_tokens=150, output_tokens=140, calls=1)),
        (
            "reasoning_tokens",
            100,
            Charge(total_tokens=150, output_tokens=140, reasoning_tokens=120, calls=1),
        ),
        ("usd", Decimal("0.001"), Charge(total_tokens=200, usd=Decimal("0.0015"), calls=1)),
    ],
)
def test_unknown_worst_case_token_and_cost_caps_are_checked_after(
    limit: str, cap: int | Decimal, overspend: Charge
) -> None:
    kwargs: dict[str, Any] = {limit: cap}
    b = Budget(**kwargs)
    r = reserve(demand(10, None, usd=True), (b,))  # nothing known ahead to refuse on
    assert r.outcome == "ok"
    r.settle(overspend)  # the call used more than the cap: it is charged all of it
    assert b.spent == overspend
    assert b.remaining() == {limit: type(cap)(0)}
    e = refused(demand(0, None, usd=True), (b,))  # ...and the next call is refused
    assert e.limit == limit and e.spent == overspend.get(limit)
    # A call that declares its worst case is refused too.
    assert refused(demand(0, 1, usd=True), (b,)).limit == limit


def test_unknown_worst_case_is_admitted_until_the_cap_is_reached() -> None:
    b = Budget(output_tokens=100)
    reserve(demand(0, None), (b,)).settle(Charge(total_tokens=99, output_tokens=99, calls=1))
    r = reserve(demand(0, None), (b,))  # 99 < 100: still admitted
    r.settle(Charge(total_tokens=1, output_tokens=1, calls=1))
    assert refused(demand(0, None), (b,)).limit == "output_tokens"


def test_unknown_worst_case_in_clamp_mode_is_refused_once_the_cap_is_reached() -> None:
    b = Budget(output_tokens=100, policy="clamp")
    reserve(demand(0, None), (b,)).settle(Charge(total_tokens=120, output_tokens=120, calls=1))
    assert refused(demand(0, None), (b,)).limit == "output_tokens"


def test_unknown_worst_case_counts_its_known_input() -> None:
    b = Budget(total_tokens=100)
    e = refused(demand(101, None), (b,))
    assert (e.limit, e.needed) == ("total_tokens", 101)


# -- settling ------------------------------------------------------------------------------
def test_settle_is_idempotent() -> None:
    parent, child = Budget(total_tokens=1000), Budget(calls=10)
    r = reserve(demand(10, 100), (parent, child))
    actual = Charge(total_tokens=50, output_tokens=40, calls=1)
    assert r.settle(actual) is True
    after = (parent.spent, parent.reserved, child.spent, child.reserved, parent.in_flight)
    assert r.settle(actual) is False
    assert r.settle(Charge(total_tokens=999, calls=1)) is False
    assert r.release() is False
    assert (parent.spent, parent.reserved, child.spent, child.reserved, parent.in_flight) == after
    assert parent.spent == child.spent == actual
    assert_idle(parent, child)


def test_release_gives_everything_back_and_is_idempotent() -> None:
    b = Budget(total_tokens=100, calls=1)
    r = reserve(demand(10, 90), (b,))
    assert r.release() is True
    assert r.release() is False and r.settle(Charge(calls=1)) is False
    assert b.spent == Charge()
    assert_idle(b)
    reserve(demand(10, 90), (b,)).release()


def test_concurrent_settles_of_one_reservation_charge_once() -> None:
    b = Budget(total_tokens=1000)
    r = reserve(demand(0, 100), (b,))
    barrier = threading.Barrier(8)

    def settle() -> bool:
        barrier.wait(timeout=10)
        return r.settle(Charge(total_tokens=7, output_tokens=7, calls=1))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: settle(), range(8)))
    assert results.count(True) == 1
    assert b.spent == Charge(total_tokens=7, output_tokens=7, calls=1)
    assert_idle(b)


# -- asyncio and threads -----------------------------------------------------------------
async def test_asyncio_tasks_inherit_the_chain() -> None:
    async def one(tokens: int) -> tuple[Budget, ...]:
        await asyncio.sleep(0)
        r = reserve(demand(0, tokens))
        await asyncio.sleep(0)
        r.settle(Charge(total_tokens=tokens, output_tokens=tokens, calls=1))
        return active_budgets()

    async with budget(total_tokens=1000, name="root") as root:
        async with budget(calls=10) as child:
            chains = await asyncio.gather(*(one(t) for t in (10, 20, 30)))
            task = asyncio.create_task(one(40))
        assert await task == (root, child)  # created inside the child scope
    assert all(c == (root, child) for c in chains)
    assert child.spent == Charge(total_tokens=100, output_tokens=100, calls=4)
    assert root.spent == child.spent
    assert_idle(root, child)


async def test_a_scope_entered_in_a_task_does_not_leak_to_its_parent() -> None:
    async def inner() -> None:
        with budget(calls=1):
            await asyncio.sleep(0)

    with budget() as outer:
        await asyncio.create_task(inner())
        assert active_budgets() == (outer,)


async def test_concurrent_tasks_cannot_jointly_overshoot() -> None:
    release = asyncio.Event()
    admitted: list[Reservation] = []
    refusals: list[BudgetExceeded] = []

    async def one() -> None:
        await asyncio.sleep(0)
        try:
            r = reserve(demand(0, 30))
        except BudgetExceeded as e:
            refusals.append(e)
            return
        admitted.append(r)
        await release.wait()
        r.settle(Charge(total_tokens=30, output_tokens=30, calls=1))

    async with budget(total_tokens=100) as b:
        tasks = [asyncio.create_task(one()) for _ in range(10)]
        try:
            for _ in range(100):
                await asyncio.sleep(0)
            assert b.in_flight == 3 and b.reserved.total_tokens == 90
            assert len(refusals) == 7 and {e.reserved for e in refusals} == {90}
        finally:
            release.set()
            await asyncio.gather(*tasks)
    assert len(admitted) == 3 and b.spent.total_tokens == 90
    assert_idle(b)


def test_threads_join_the_scope_through_copy_context() -> None:
    def work() -> tuple[Budget, ...]:
        reserve(demand(0, 10)).settle(Charge(total_tokens=10, output_tokens=10, calls=1))
        return active_budgets()

    with budget(total_tokens=1000) as b, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(6)]
        chains = [f.result() for f in futures]
        # A thread started without the context is outside every scope.
        assert pool.submit(active_budgets).result() == ()
    assert chains == [(b,)] * 6
    assert b.spent == Charge(total_tokens=60, output_tokens=60, calls=6)
    assert_idle(b)


def test_concurrent_threads_cannot_jointly_overshoot() -> None:
    b = Budget(total_tokens=100, calls=50)
    barrier = threading.Barrier(10)
    release = threading.Event()
    refused_ = threading.Semaphore(0)

    def work() -> bool:
        barrier.wait(timeout=10)
        try:
            r = reserve(demand(0, 30))
        except BudgetExceeded:
            refused_.release()
            return False
        release.wait(timeout=10)
        r.settle(Charge(total_tokens=30, output_tokens=30, calls=1))
        return True

    with b, ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(contextvars.copy_context().run, work) for _ in range(10)]
        for _ in range(7):  # the seven refused threads return at once
            assert refused_.acquire(timeout=10)
        assert b.in_flight == 3 and b.reserved.total_tokens == 90
        release.set()
        assert sorted(f.result() for f in futures) == [False] * 7 + [True] * 3
    assert b.spent.total_tokens == 90
    assert_idle(b)


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"total_tokens": -1},
        {"output_tokens": 1.5},
        {"reasoning_tokens": True},
        {"calls": "3"},
        {"usd": -0.01},
        {"usd": float("nan")},
        {"usd": float("inf")},
        {"usd": Decimal("-1")},
        {"deadline": -1},
        {"deadline": float("nan")},
        {"policy": "warn"},
        {"min_output_tokens": 0},
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Budget(**kwargs)
    with pytest.raises(ValueError):
        budget(**kwargs)


@pytest.mark.parametrize("value", [1.5, True, "2"])
def test_min_output_tokens_must_be_an_int(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        Budget(min_output_tokens=value)


@pytest.mark.parametrize("usd", ["ten dollars", "", True])
def test_a_non_numeric_usd_limit_is_a_value_error(usd: Any) -> None:
    with pytest.raises(ValueError, match="usd"):
        Budget(usd=usd)


def test_limits_keep_a_fixed_order_and_repr() -> None:
    b = Budget(calls=3, usd=1, total_tokens=5, deadline=2.5, policy="clamp", name="x")
    assert list(b.limits) == ["total_tokens", "usd", "calls"]
    assert repr(b) == "Budget('x', total_tokens=5, usd=1, calls=3, deadline=2.5, policy='clamp')"
    assert repr(Budget(deadline=3)) == "Budget(deadline=3, policy='raise')"


def test_repr_of_a_budget_without_limits() -> None:
    assert repr(Budget()) == "Budget(policy='raise')"
    assert repr(Budget(name="x")) == "Budget('x', policy='raise')"


# -- through @llm_call ---------------------------------------------------------------------
def test_decorator_clamp_rewrites_the_max_tokens_argument() -> None:
    model = unique_model()
    seen: list[int] = []

    @llm_call(input_tokens=100)
    def ask(prompt: str, model: str = model, max_tokens: int = 1000) -> dict[str, Any]:
        seen.append(max_tokens)
        return chat(100, max_tokens // 2)

    with budget(total_tokens=500, policy="clamp") as b:
        ask("hi")  # 500 - 100 input = 400 left; it uses 100 + 200
        ask("hi")  # 500 - 300 spent - 100 input = 100 left; it uses 100 + 50
        with pytest.raises(BudgetExceeded) as info:
            ask("hi")  # 500 - 450 - 100 < 0: nothing left to clamp to
    assert seen == [400, 100]
    assert info.value.limit == "total_tokens" and info.value.spent == 450
    assert b.spent == Charge(
        total_tokens=450, output_tokens=250, usd=cost(100, 200) + cost(100, 50), calls=2
    )
    # Where it fits, the caller's own argument passes through untouched.
    with budget(total_tokens=500, policy="clamp"):
        ask("hi", max_tokens=7)
    assert seen[-1] == 7


def test_decorator_raise_never_runs_a_refused_call() -> None:
    model = unique_model(input="2", output="8")
    runs: list[int] = []

    @llm_call(model=model, max_output_tokens=100, input_tokens=100)
    def ask() -> dict[str, Any]:
        runs.append(1)
        return chat(100, 100)

    # One call's worst case: 100 x $2/M + 100 x $8/M = $0.001.
    with budget(usd="0.0025") as b:
        ask()
        ask()
        with pytest.raises(BudgetExceeded) as info:
            ask()
    assert len(runs) == 2
    assert info.value.limit == "usd" and info.value.spent == Decimal("0.002")
    assert b.spent == Charge(total_tokens=400, output_tokens=200, usd=Decimal("0.002"), calls=2)
    assert_idle(b)


def test_decorator_clamp_unclampable_function_is_refused() -> None:
    model = unique_model()

    @llm_call(model=model, max_output_tokens=1000)
    def ask() -> dict[str, Any]:  # no max_tokens argument to lower
        return chat(1, 1)

    with budget(output_tokens=500, policy="clamp"), pytest.raises(BudgetExceeded) as info:
        ask()
    assert info.value.limit == "output_tokens"


def test_decorator_clamps_the_thinking_argument() -> None:
    model = unique_model()
    seen: list[tuple[int, int]] = []

    @llm_call(reasoning_arg="thinking")
    def ask(model: str = model, max_tokens: int = 2000, thinking: int = 1500) -> dict[str, Any]:
        seen.append((max_tokens, thinking))
        return chat(0, 300, reasoning=250)

    with budget(reasoning_tokens=1000, policy="clamp") as b:
        ask()
    assert seen == [(2000, 1000)]
    assert b.spent.reasoning_tokens == 250


def test_decorator_failed_call_counts_one_call_and_no_tokens() -> None:
    model = unique_model()

    @llm_call(model=model, max_output_tokens=100)
    def ask() -> dict[str, Any]:
        raise TimeoutError("provider timed out")

    with budget(calls=2, total_tokens=150) as b:
        with pytest.raises(TimeoutError):
            ask()
        with pytest.raises(TimeoutError):
            ask()
        assert refused(demand(0, 1)).limit == "calls"
    assert b.spent == Charge(calls=2)
    assert_idle(b)


def test_decorator_response_without_usage_is_charged_its_reservation() -> None:
    model = unique_model(input="2", output="8")

    @llm_call(model=model, max_output_tokens=100, input_tokens=50)
    def ask() -> dict[str, Any]:
        return {"id": "x", "choices": []}

    with budget(usd=1) as b:
        ask()
    assert b.spent == Charge(
        total_tokens=150,
        output_tokens=100,
        reasoning_tokens=100,
        usd=(50 * 2 + 100 * 8) / MTOK,
        calls=1,
    )


def test_decorator_with_an_unknown_worst_case_checks_after() -> None:
    model = unique_model()

    @llm_call(model=model)
    def ask(n: int) -> dict[str, Any]:
        return chat(10, n)

    with budget(output_tokens=100, calls=10) as b:
        ask(150)  # no cap declared: admitted, then charged in full
        with pytest.raises(BudgetExceeded) as info:
            ask(1)
    assert info.value.limit == "output_tokens"
    assert b.spent == Charge(total_tokens=160, output_tokens=150, usd=cost(10, 150), calls=1)


def test_decorator_budget_argument_nests_in_the_callers_scope() -> None:
    model = unique_model()

    @llm_call(model=model, max_output_tokens=10, budget=Budget(calls=2, name="per-fn"))
    def ask() -> dict[str, Any]:
        return chat(5, 5)

    with budget(total_tokens=1000) as outer:
        ask()
        ask()
        with pytest.raises(BudgetExceeded) as info:
            ask()
    assert info.value.budget_name == "per-fn"
    assert outer.spent == Charge(total_tokens=20, output_tokens=10, usd=2 * cost(5, 5), calls=2)


def test_decorated_generator_inside_its_own_budget_is_charged_once() -> None:
    model = unique_model()
    b = Budget(total_tokens=1000)

    @llm_call(model=model, max_output_tokens=100, budget=b)
    def stream() -> Any:
        yield {"choices": [{"index": 0, "delta": {"content": "hi"}}]}
        yield {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}

    with b:
        assert len(list(stream())) == 2
    assert b.spent == Charge(total_tokens=12, output_tokens=7, usd=cost(5, 7), calls=1)


async def test_decorated_async_calls_share_the_budget() -> None:
    model = unique_model()
    release = asyncio.Event()

    started: list[int] = []

    @llm_call(model=model, input_tokens=10)
    async def ask(max_tokens: int = 40) -> dict[str, Any]:
        started.append(max_tokens)
        if len(started) == 2:  # both admitted calls are in flight at once
            release.set()
        await release.wait()
        return chat(10, max_tokens)

    async with budget(total_tokens=100, policy="clamp") as b:
        calls = asyncio.gather(ask(), ask(), ask(), return_exceptions=True)
        results = await asyncio.wait_for(calls, 10)  # hangs only if a call is wrongly refused
    # Two calls of 10 + 40 fill the budget; the third finds nothing left to clamp to.
    assert [type(r).__name__ for r in results[:3]].count("BudgetExceeded") == 1
    assert b.spent == Charge(total_tokens=100, output_tokens=80, usd=2 * cost(10, 40), calls=2)
    assert_idle(b)


def test_decorator_usd_budget_needs_a_price() -> None:
    @llm_call(model=f"unpriced-{uuid.uuid4().hex}", max_output_tokens=10)
    def ask() -> dict[str, Any]:
        return chat(1, 1)

    with budget(usd=1) as b, pytest.raises(PriceUnknown):
        ask()
    assert b.spent == Charge()
    assert_idle(b)


def test_decorated_call_retried_counts_once_and_reserves_again() -> None:
    model = unique_model()
    attempts: list[int] = []

    class Reset(ConnectionError):
        pass

    policy = RetryPolicy(max_attempts=3, initial_wait=0, max_wait=0, jitter=0, sleep=lambda s: None)

    @llm_call(input_tokens=10, retry=policy)
    def ask(model: str = model, max_tokens: int = 100) -> dict[str, Any]:
        attempts.append(max_tokens)
        if len(attempts) < 3:
            raise Reset("connection reset")
        return chat(10, 20)

    with budget(total_tokens=1000, calls=1) as b:
        assert ask() == chat(10, 20)
        assert_idle(b)
        with pytest.raises(BudgetExceeded):
            ask()  # the retried call was one call
    assert attempts == [100, 100, 100]
    assert b.spent == Charge(total_tokens=30, output_tokens=20, usd=cost(10, 20), calls=1)


def test_a_retry_finds_the_budget_spent_meanwhile() -> None:
    model = unique_model()
    b = Budget(total_tokens=200, policy="clamp")
    seen: list[int] = []

    policy = RetryPolicy(max_attempts=3, initial_wait=0, max_wait=0, jitter=0, sleep=lambda s: None)

    @llm_call(input_tokens=0, retry=policy)
    def ask(model: str = model, max_tokens: int = 150) -> dict[str, Any]:
        seen.append(max_tokens)
        if len(seen) == 1:
            # Meanwhile another call spends 100 of the 200 tokens.
            reserve(demand(0, 0), (b,)).settle(Charge(total_tokens=100, calls=1))
            raise TimeoutError("read timed out")
        return chat(0, max_tokens)

    with b:
        ask()
    # The retry reserves anew, and is clamped to what is left.
    assert seen == [150, 100]
    assert b.spent == Charge(total_tokens=200, output_tokens=100, usd=cost(0, 100), calls=2)
    assert_idle(b)
