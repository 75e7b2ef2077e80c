"""A sweep on the real embedded engine: 3 thinking budgets x 2 methods (single call, s1
budget forcing) over built-in arithmetic questions, read back from the results file and
from the traces."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from tcc_plugin.app.local_engine import QWEN25_CODER_05B, LocalEngine  # noqa: E402
from tcc_plugin.app.sweep.targets import openai_compatible_target  # noqa: E402
from tcc_plugin.pricing import GpuHourPrice, PriceBook  # noqa: E402
from tcc_plugin.sweep import ROW_FIELDS, arithmetic, read_rows, sweep  # noqa: E402

BUDGETS = [16, 48, 96]
ANSWER_TOKENS = 24


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    if os.environ.get("TCC_SKIP_ENGINE"):
        pytest.skip("TCC_SKIP_ENGINE is set")
    with LocalEngine(QWEN25_CODER_05B, parallel=2, ctx_size=1024, progress=False) as running:
        yield running


def test_budgets_by_methods_on_the_local_engine(
    engine: LocalEngine, tmp_path: Path, telemetry: Any
) -> None:
    book = PriceBook()
    book.override(engine.alias, GpuHourPrice.of(Decimal("3.6")))
    client = openai.OpenAI(base_url=f"{engine.base_url}/v1", api_key="local")
    target = openai_compatible_target(
        client, engine.alias, flavour="llama.cpp", temperature=0.0,
        max_answer_tokens=ANSWER_TOKENS, price_book=book, max_waits=1,
    )  # fmt: skip
    questions = [q for q in arithmetic().questions if q.meta["level"] == 1][:3]
    results = tmp_path / "results.jsonl"
    out = sweep(
        questions, target, methods=["single", "forcing"], budgets=BUDGETS,
        results=results, concurrency=2, calls=400,
    )  # fmt: skip
    client.close()

    rows = read_rows(results)
    assert len(rows) == 3 * 2 * len(questions) == out.answered
    assert {r["cell_id"] for r in rows} == {
        f"{m}-b{b}" for m in ("single", "forcing") for b in BUDGETS
    }
    for row in rows:
        assert set(ROW_FIELDS) <= row.keys()
        assert row["error"] is None, row["error"]
        assert row["calls"] >= 1 and row["output_tokens"] > 0 and row["input_tokens"] > 0
        assert row["cost_usd"] is not None and row["cost_usd"] > 0  # GPU time, priced
        budget = row["cell"]["thinking_budget"]
        if row["cell"]["method"] == "single":
            assert row["calls"] == 1
            assert row["output_tokens"] <= budget + ANSWER_TOKENS  # the request's cap
        else:  # think phase(s) and one answer phase; thinking never past the budget
            assert 2 <= row["calls"] <= 3
            assert 0 < row["reasoning_tokens"] <= budget
            assert row["detail"]["thinking_tokens"] == row["reasoning_tokens"]
    assert out.analysis is not None and len(out.analysis.cells) == 6

    # traces: one sweep span; one answer span per row, parenting that row's calls
    sweep_span = telemetry.span("sweep")
    answers = telemetry.spans("sweep.answer")
    assert len(answers) == len(rows)
    calls = [s for s in telemetry.spans() if s.attributes.get("gen_ai.operation.name")]
    by_row = {(r["cell_id"], r["question_id"]): r for r in rows}
    for span in answers:
        assert span.parent.span_id == sweep_span.context.span_id
        row = by_row[
            (span.attributes["tcc.sweep.cell.id"], span.attributes["tcc.sweep.question.id"])
        ]
        mine = [c for c in calls if c.parent and c.parent.span_id == span.context.span_id]
        if row["cell"]["method"] == "forcing":  # calls hang under the forcing run's span
            runs = [s for s in telemetry.spans("budget_forcing")
                    if s.parent.span_id == span.context.span_id]  # fmt: skip
            assert len(runs) == 1
            # each phase is a parent span (its continuer calls an instrumented client);
            # the provider call below it carries the usage, once
            phases = [c for c in calls if c.parent and c.parent.span_id == runs[0].context.span_id]
            phase_ids = {p.context.span_id for p in phases}
            assert all(p.attributes["tcc.budget.outcome"] == "delegated" for p in phases)
            mine = [c for c in calls if c.parent and c.parent.span_id in phase_ids]
        assert len(mine) == row["calls"]
        assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in mine) == row["output_tokens"]
        assert span.attributes["tcc.sweep.calls"] == row["calls"]
