"""sweep(): rows with exact spend, resume, a changed grid, the budget, bad input, spans."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tcc_plugin
from tcc_plugin.sweep import (
    ROW_FIELDS,
    Cell,
    SweepBudgetError,
    SweepConfigError,
    Target,
    read_rows,
    sweep,
)

from .conftest import cost, model, questions


def always(i: int, budget: int, seed: int) -> bool:
    return True


def test_rows_carry_exact_tokens_cost_and_answers(tmp_path: Path) -> None:
    log: list[Any] = []
    out = sweep(questions(3), model(always, log), budgets=[64, 128], seeds=2,
                results=tmp_path / "r.jsonl")  # fmt: skip
    rows = read_rows(tmp_path / "r.jsonl")
    assert len(rows) == len(log) == 3 * 2 * 2 == out.answered
    row = next(r for r in rows if r["cell_id"] == "single-b64" and r["question_id"] == "q001")
    assert set(ROW_FIELDS) <= row.keys()
    assert row["cell"] == {"method": "single", "thinking_budget": 64, "n": None, "stop": None,
                           "min_thinking_tokens": None}  # fmt: skip
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"]) == (50, 74, 64)
    assert row["cost_usd"] == pytest.approx(cost(64))
    assert (row["answer"], row["expected"], row["correct"], row["score"]) == ("2", 2, True, 1.0)
    assert row["calls"] == 1 and row["error"] is None and row["latency_s"] >= 0
    assert out.spent.calls == 12
    assert float(out.spent.usd) == pytest.approx(6 * cost(64) + 6 * cost(128))


def test_a_rerun_pays_nothing_and_a_changed_grid_reuses_the_overlap(tmp_path: Path) -> None:
    log: list[Any] = []
    ask = model(always, log)
    results = tmp_path / "r.jsonl"
    sweep(questions(4), ask, budgets=[64, 128], results=results)
    assert len(log) == 8
    again = sweep(questions(4), ask, budgets=[64, 128], results=results)
    assert len(log) == 8 and again.answered == 0 and again.reused == 8
    assert again.spent.calls == 0
    wider = sweep(questions(4), ask, budgets=[128, 256], results=results)
    assert len(log) == 12 and wider.reused == 4  # only b256 was new
    assert {r["cell_id"] for r in wider.rows} == {"single-b128", "single-b256"}
    assert len(read_rows(results)) == 12


def test_sampling_methods_reuse_the_core(tmp_path: Path) -> None:
    log: list[Any] = []
    ask = model(lambda i, b, seed: seed % 2 == 0, log)  # samples with even seeds are right
    out = sweep(questions(2), ask, methods=["self_consistency"], budgets=[64], n=[3],
                stop=["never"], results=tmp_path / "r.jsonl")  # fmt: skip
    rows = out.rows
    assert [r["cell_id"] for r in rows] == ["self_consistency-b64-n3-never"] * 2
    # sample seeds 0, 1, 2 (seed 0 x 1009 + index): two right answers outvote one wrong
    assert all(r["correct"] and r["calls"] == 3 for r in rows)
    assert rows[0]["cost_usd"] == pytest.approx(cost(64, calls=3))

    def verifier(q: Any) -> Any:
        return lambda candidate: candidate.text.endswith(f"Answer: {q.answer}")

    best = sweep(questions(2), ask, methods=["best_of_n"], budgets=[64], n=[2],
                 stop=["score:1.0"], verifier=verifier, results=tmp_path / "r.jsonl")  # fmt: skip
    assert [r["correct"] for r in best.rows] == [True, True]


def test_cells_that_no_longer_fit_are_refused_and_said_so(tmp_path: Path) -> None:
    log: list[Any] = []
    progress: list[Any] = []
    out = sweep(
        questions(5), model(always, log), budgets=[64, 128], calls=7, concurrency=1,
        results=tmp_path / "r.jsonl", on_progress=progress.append,
    )  # fmt: skip
    # cheapest cell first: its 5 answers fit, then 2 of the next; the rest is refused
    assert len(log) == 7 and out.answered == 7
    assert set(out.refused) == {"single-b128"}
    assert "calls" in out.refused["single-b128"]
    assert any(p.message and "single-b128 refused" in p.message for p in progress)
    # a re-run with more budget answers exactly what was refused
    more = sweep(questions(5), model(always, log), budgets=[64, 128], calls=10,
                 results=tmp_path / "r.jsonl")  # fmt: skip
    assert len(log) == 10 and more.reused == 7 and not more.refused


def test_bad_input_fails_before_any_call(tmp_path: Path) -> None:
    log: list[Any] = []
    ask = model(always, log)
    r = tmp_path / "r.jsonl"
    with pytest.raises(ValueError, match="unknown checker 'fuzzy'"):
        sweep(questions(2), ask, checker="fuzzy", results=r)
    with pytest.raises(ValueError, match="grid is empty"):
        sweep(questions(2), ask, methods=[], results=r)
    with pytest.raises(ValueError, match="grid is empty"):
        sweep(questions(2), ask, methods=["forcing"], budgets=["low"], results=r)

    def no_knobs(question: str) -> str:
        return "Final Answer: 1"

    with pytest.raises(SweepConfigError, match="does not accept thinking_budget"):
        sweep(questions(2), no_knobs, budgets=[64], results=r)
    with pytest.raises(SweepConfigError, match=r"forcing-b64: .*raw-prompt continuer"):
        sweep(questions(2), ask, methods=["forcing"], budgets=[64], results=r)
    with pytest.raises(SweepConfigError, match="best_of_n needs a verifier"):
        sweep(questions(2), ask, methods=["best_of_n"], budgets=[64], results=r)
    with pytest.raises(SweepConfigError, match="needs 'tests'"):
        sweep(questions(2), ask, budgets=[64], checker="code", results=r)
    with pytest.raises(SweepBudgetError, match="cannot pay for a single cell"):
        sweep(questions(4), ask, methods=["self_consistency"], budgets=[64], n=[4], calls=10,
              results=r)  # fmt: skip
    with pytest.raises(ValueError, match="n >= 1"):
        sweep(questions(2), ask, cells=[Cell("best_of_n", 64, 0)], results=r)
    assert log == [] and not r.exists()


def test_a_target_declaring_its_output_cap_is_refused_up_front_by_tokens(
    tmp_path: Path,
) -> None:
    ask = model(always)
    target = Target("capped", ask, frozenset({"thinking_budget", "seed"}), max_answer_tokens=10)
    with pytest.raises(SweepBudgetError, match="output tokens"):
        sweep(questions(3), target, budgets=[64], output_tokens=200, results=tmp_path / "r")


def test_failures_are_rows_with_their_error(tmp_path: Path) -> None:
    def flaky(question: str, *, thinking_budget: int) -> str:
        if "2 +" in question:
            raise RuntimeError("model fell over")
        return f"Final Answer: {int(question.split()[2]) + 1}"

    out = sweep(questions(3), flaky, budgets=[8], results=tmp_path / "r.jsonl")
    bad = next(r for r in out.rows if r["question_id"] == "q002")
    assert bad["error"] == "RuntimeError: model fell over" and bad["correct"] is False
    assert out.analysis is not None and out.analysis.cell("single-b8").errors == 1
    # an uninstrumented function: nothing was priced, so the cost is unknown, not zero
    assert all(r["cost_usd"] is None and r["calls"] == 0 for r in out.rows)


def test_every_answer_is_a_span_under_the_sweep_span(tmp_path: Path, telemetry: Any) -> None:
    out = sweep(questions(2), model(always), budgets=[16, 32], results=tmp_path / "r.jsonl",
                name="spans")  # fmt: skip
    root = telemetry.span("sweep")
    assert root.attributes["tcc.sweep.name"] == "spans"
    assert root.attributes["tcc.sweep.answered"] == 4
    answers = telemetry.spans("sweep.answer")
    assert len(answers) == 4
    calls = [s for s in telemetry.spans() if s.attributes.get("gen_ai.request.model")]
    for span in answers:
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        (call,) = [c for c in calls if c.parent and c.parent.span_id == span.context.span_id]
        row = next(r for r in out.rows if r["cell_id"] == span.attributes["tcc.sweep.cell.id"]
                   and r["question_id"] == span.attributes["tcc.sweep.question.id"])  # fmt: skip
        assert call.attributes["gen_ai.usage.output_tokens"] == row["output_tokens"]
        assert span.attributes["tcc.sweep.cost.usd"] == row["cost_usd"]


def test_rows_survive_a_cut_off_last_line(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    sweep(questions(2), model(always), budgets=[16], results=results)
    with results.open("a") as f:
        f.write('{"sweep": "cut off mid-wr')
    log: list[Any] = []
    out = sweep(questions(3), model(always, log), budgets=[16], results=results)
    assert len(log) == 1 and out.reused == 2
    lines = results.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_top_level_names() -> None:
    assert tcc_plugin.sweep is sweep
    from tcc_plugin.sweep.grid import Cell as GridCell

    assert GridCell is Cell


async def test_asweep_runs_off_the_event_loop_inside_the_callers_budget(tmp_path: Path) -> None:
    from tcc_plugin.sweep import asweep

    log: list[Any] = []
    with tcc_plugin.budget(calls=7) as outer:
        out = await asweep(questions(5), model(always, log), budgets=[16, 32],
                           results=tmp_path / "r.jsonl", concurrency=1)  # fmt: skip
        with pytest.raises(SweepBudgetError, match=r"needs up to 5 calls, 0 left in Budget\("):
            await asweep(questions(5), model(always, log), budgets=[64],
                         results=tmp_path / "r.jsonl")  # fmt: skip
    # the budget around the sweep refuses the 8th question before it is asked
    assert len(log) == 7 and out.answered == 7
    assert (
        out.refused["single-b32"]
        == "needs up to 1 calls, 0 left in Budget(calls=7, policy='raise')"
    )
    assert outer.spent.calls == 7 and len(out.rows) == 7


def test_code_tasks_use_the_sandboxed_checker_and_verifier(tmp_path: Path) -> None:
    from tcc_plugin.sweep import code_tasks

    tasks = code_tasks().questions[:2]
    reference = {q.question: q.meta["reference"] for q in tasks}

    def write_code(question: str, *, seed: int) -> str:  # right on even seeds only
        body = reference[question] if seed % 2 == 0 else "def nothing():\n    pass\n"
        return f"Here you go:\n```python\n{body}```"

    out = sweep(tasks, write_code, methods=["single", "best_of_n"], n=[2], seeds=2,
                results=tmp_path / "r.jsonl")  # fmt: skip
    a = out.analysis
    assert a is not None
    assert a.cell("single").accuracy == 0.5  # seed 1 writes nothing useful
    assert a.cell("best_of_n-n2").accuracy == 1.0  # the tests pick the right sample
    row = next(r for r in out.rows if r["cell_id"] == "single" and r["seed"] == 0)
    assert row["answer"].startswith("def ") and row["score"] == 1.0
