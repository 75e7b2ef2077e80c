"""A budgeted call's span figures: exact, valid attribute values, and only the budget's
name (text a user chose) goes through attribute cleaning."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import tcc_plugin
from tcc_plugin import llm_call
from tcc_plugin.telemetry.cleaning import CLEANED, clean_attributes

from ..conftest import Telemetry

BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "o3-2025-04-16",
    "choices": [{"index": 0, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 600,
        "total_tokens": 1600,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 500},
    },
}


def test_budget_figures_on_the_span_and_a_dirty_name_cleaned(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai")
    def ask(question: str, max_tokens: int = 2000) -> dict[str, Any]:
        return BODY

    with tcc_plugin.budget(usd="0.05", calls=3, name="team\udc80") as b:
        ask("2+2?")
    # o3: $2 input, $0.50 cached input, $8 output per million tokens
    cost = (600 * Decimal(2) + 400 * Decimal("0.5") + 600 * Decimal(8)) / 10**6
    assert cost == Decimal("0.0062") and b.spent.usd == cost
    a = dict(telemetry.span("chat o3").attributes or {})
    assert {k: v for k, v in a.items() if k.startswith("tcc.budget.")} == {
        "tcc.budget.outcome": "ok",
        "tcc.budget.name": "team\ufffd",  # a lone surrogate is not UTF-8: replaced
        "tcc.budget.reserved.output_tokens": 2000,
        "tcc.budget.limit.usd": 0.05,
        "tcc.budget.spent.usd": 0.0062,
        "tcc.budget.remaining.usd": 0.0438,
        "tcc.budget.limit.calls": 3,
        "tcc.budget.spent.calls": 1,
        "tcc.budget.remaining.calls": 2,
    }
    assert a[CLEANED] == ("tcc.budget.name",)


def test_an_unbudgeted_call_says_so(telemetry: Telemetry) -> None:
    @llm_call(model="o3", provider="openai")
    def ask(question: str, max_tokens: int = 2000) -> dict[str, Any]:
        return BODY

    ask("2+2?")
    a = dict(telemetry.span("chat o3").attributes or {})
    assert {k: v for k, v in a.items() if k.startswith("tcc.budget.")} == {
        "tcc.budget.outcome": "unbudgeted"
    }
    assert CLEANED not in a


def test_numbers_pass_cleaning_as_they_are_and_non_finite_floats_are_left_out() -> None:
    given = {
        "b": True,
        "i": 3,
        "f": 1.5,
        "big": 10**30,
        "inf": float("inf"),
        "-inf": float("-inf"),
        "nan": float("nan"),
        "s": "ok",
    }
    assert clean_attributes(given) == {
        "b": True,
        "i": 3,
        "f": 1.5,
        "big": 10**30,
        "s": "ok",
        CLEANED: ("inf", "-inf", "nan"),
    }
