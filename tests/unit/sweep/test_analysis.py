"""The analysis on deterministic sweeps whose accuracy per budget is known in advance,
and on pure noise (no flag at the stated error rate)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tcc_plugin.sweep import analyze, sweep
from tcc_plugin.sweep.stats import (
    holm,
    mcnemar_greater,
    mcnemar_two_sided,
    percentile,
    wilson_interval,
)

from .conftest import cost, model, questions

# accuracy per budget over 40 questions: rises to a peak at 256, then falls (overthinking)
TRUTH = {32: 0.30, 64: 0.60, 128: 0.90, 256: 0.95, 512: 0.50}
N = 40


def peaked(i: int, budget: int, seed: int) -> bool:
    return i < TRUTH[budget] * N


def test_stats_by_hand() -> None:
    assert mcnemar_greater(5, 0) == 1 / 32  # all five discordant pairs one way
    assert mcnemar_greater(0, 5) == 1.0
    assert mcnemar_greater(3, 1) == pytest.approx(5 / 16)  # P(X>=3 | 4) = (4+1)/16
    assert mcnemar_two_sided(3, 1) == pytest.approx(10 / 16)
    assert mcnemar_two_sided(0, 0) == 1.0
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]
    assert holm([0.01, 0.02, 0.03], 0.05) == [True, True, True]
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_peak_then_fall_is_found(tmp_path: Path) -> None:
    out = sweep(questions(N), model(peaked), budgets=list(TRUTH), results=tmp_path / "r.jsonl")
    a = out.analysis
    assert a is not None
    for budget, accuracy in TRUTH.items():
        cell = a.cell(f"single-b{budget}")
        assert cell.accuracy == accuracy
        assert cell.cost_usd == pytest.approx(cost(budget))
        assert cell.reasoning_tokens == budget and cell.output_tokens == budget + 10
    # the fall from 256 (and from 128) to 512 is overthinking; nothing else is
    assert a.overthinking == ("single-b512",)
    assert a.cell("single-b512").overthinking_vs in ("single-b128", "single-b256")
    assert a.best == "single-b256"
    # 128 (36/40) is indistinguishable from 256 (38/40): 2 discordant pairs, p = 0.5
    assert a.sweet_spot == "single-b128"
    assert a.frontier == ("single-b32", "single-b64", "single-b128", "single-b256")
    # constraints: at most the cost of 64 -> 64; accuracy >= 0.95 -> 256
    assert analyze(out.rows, max_usd_per_question=cost(64)).recommended == "single-b64"
    assert analyze(out.rows, min_accuracy=0.95).recommended == "single-b256"
    assert analyze(out.rows, min_accuracy=0.99).recommended is None


def _noise_rows(rng: random.Random, budgets: list[int], n: int, p: float) -> list[dict[str, Any]]:
    rows = []
    for budget in budgets:
        for i in range(n):
            rows.append({
                "sweep": "noise", "cell_id": f"single-b{budget}",
                "cell": {"method": "single", "thinking_budget": budget},
                "question_id": f"q{i}", "seed": 0, "correct": rng.random() < p,
                "cost_usd": budget * 1e-6, "input_tokens": 10, "output_tokens": budget,
                "reasoning_tokens": budget, "latency_s": 0.1, "calls": 1, "error": None,
            })  # fmt: skip
    return rows


def test_a_flat_curve_with_noise_is_not_flagged_beyond_the_error_rate() -> None:
    # 400 sweeps of 5 budgets x 60 questions, every answer right with probability 0.6
    # independently: no true overthinking. Holm bounds P(any flag in a sweep) by alpha.
    rng = random.Random(2026)
    sweeps = 400
    flagged = sum(
        bool(analyze(_noise_rows(rng, [32, 64, 128, 256, 512], 60, 0.6)).overthinking)
        for _ in range(sweeps)
    )
    assert flagged / sweeps <= 0.05
    # and the test is not blind: a real drop 0.8 -> 0.4 on 60 questions is caught
    rows = _noise_rows(rng, [32], 60, 0.8) + [
        {**r, "cell_id": "single-b64", "cell": {"method": "single", "thinking_budget": 64},
         "correct": rng.random() < 0.4} for r in _noise_rows(rng, [64], 60, 0)
    ]  # fmt: skip
    assert analyze(rows).overthinking == ("single-b64",)


def test_analysis_refuses_mixed_or_empty_rows() -> None:
    rng = random.Random(1)
    rows = _noise_rows(rng, [32], 5, 0.5)
    other = [{**r, "sweep": "other"} for r in rows]
    with pytest.raises(ValueError, match="several sweeps"):
        analyze(rows + other)
    assert analyze(rows + other, sweep="other").sweep == "other"
    with pytest.raises(ValueError, match="no answered rows"):
        analyze([])
