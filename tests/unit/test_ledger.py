"""The ledger seam: a budget's accounts behind the Account protocol (in-memory here;
the Redis ledger has its own tests against a real server)."""

from __future__ import annotations

import sys
from decimal import Decimal

import pytest

import tcc_plugin
from tcc_plugin.budget import Charge, Demand, reserve
from tcc_plugin.ledger import MEMORY, Account, MemoryAccount, Snapshot


def test_the_in_memory_ledger_is_an_account_per_budget() -> None:
    a, b = tcc_plugin.budget(calls=2), tcc_plugin.budget(calls=2)
    assert a.ledger is MEMORY and isinstance(a._account, MemoryAccount)
    assert isinstance(a._account, Account) and a._account is not b._account


def test_an_account_reserves_and_settles_on_its_own() -> None:
    b = tcc_plugin.budget(usd="1", calls=2)
    hold = b._account.reserve(b, Charge(10, 5, 0, Decimal("0.4"), 1), ())
    assert b.reserved == Charge(10, 5, 0, Decimal("0.4"), 1) and b.in_flight == 1
    with pytest.raises(tcc_plugin.BudgetExceeded) as refused:
        b._account.reserve(b, Charge(usd=Decimal("0.7"), calls=1), ())
    assert refused.value.limit == "usd" and refused.value.reserved == Decimal("0.4")
    b._account.settle(hold, Charge(10, 3, 0, Decimal("0.25"), 1))
    assert b.snapshot() == Snapshot(Charge(10, 3, 0, Decimal("0.25"), 1), Charge(), 0)
    assert b.remaining() == {"usd": Decimal("0.75"), "calls": 1}


def test_span_figures_come_from_one_read_of_the_account() -> None:
    b = tcc_plugin.budget(usd="0.5", output_tokens=100)
    reserve(Demand(input_tokens=0, max_output_tokens=30), (b,)).settle(
        Charge(40, 30, 0, Decimal("0.2"), 1)
    )
    reserve(Demand(input_tokens=0, max_output_tokens=50), (b,))  # in flight
    attrs: dict[str, object] = {}
    b.report(attrs)  # type: ignore[arg-type]
    assert attrs == {
        "tcc.budget.limit.output_tokens": 100,
        "tcc.budget.spent.output_tokens": 30,
        "tcc.budget.remaining.output_tokens": 20,
        "tcc.budget.limit.usd": 0.5,
        "tcc.budget.spent.usd": 0.2,
        "tcc.budget.remaining.usd": 0.3,
    }


def test_a_period_needs_a_shared_ledger() -> None:
    with pytest.raises(ValueError, match="shared ledger"):
        tcc_plugin.budget(calls=1, period="daily")
    with pytest.raises(ValueError, match="period"):
        tcc_plugin.budget(calls=1, period="hourly")  # type: ignore[arg-type]


def test_an_unconfigured_shared_budget_says_how_to_configure_it() -> None:
    with pytest.raises(LookupError, match=r"shared_budget\('nobody', ledger="):
        tcc_plugin.shared_budget("nobody")


def test_span_figures_are_finite_numbers_even_for_amounts_no_float_holds() -> None:
    b = tcc_plugin.budget(usd="1e400", calls=10)
    reserve(Demand(input_tokens=0, max_output_tokens=1), (b,)).settle(
        Charge(1, 1, 0, Decimal("3e399"), 1)
    )
    attrs: dict[str, object] = {}
    b.report(attrs)  # type: ignore[arg-type]
    biggest = sys.float_info.max
    assert attrs == {
        "tcc.budget.limit.usd": biggest,
        "tcc.budget.spent.usd": biggest,
        "tcc.budget.remaining.usd": biggest,  # 7e399: more than a float holds
        "tcc.budget.limit.calls": 10,
        "tcc.budget.spent.calls": 1,
        "tcc.budget.remaining.calls": 9,
    }
    assert b.remaining()["usd"] == Decimal("7e399")  # the ledger itself stays exact
