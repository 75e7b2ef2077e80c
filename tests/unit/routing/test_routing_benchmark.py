"""The routing benchmark's replay of a sweep results file runs and reads it right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "routing.py"
pytest.importorskip("sklearn")


def test_routers_replayed_on_a_sweep_results_file(tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        hard = i % 3 == 0
        text = (
            f"A depot holds {i + 10} crates. Then it ships 4 crates. After that it receives "
            "9 crates. Each day it loses 3 crates. How many remain, in total, at the end?"
            if hard
            else f"What is {i} + 2?"
        )
        for cell, right, cost in (("single-b64", not hard, 0.001), ("forcing-b512", True, 0.01)):
            rows.append({
                "cell_id": cell, "question_id": f"q{i}", "seed": 0, "question": text,
                "correct": right, "cost_usd": cost, "error": None, "refused": False,
            })  # fmt: skip
    results = tmp_path / "r.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = subprocess.run(
        [sys.executable, str(BENCH), "--from-sweep", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "12 questions, cheap = single-b64, think = forcing-b512"
    assert lines[1] == "always-cheap: 66.7%, $0.00100 per question"
    assert lines[2] == "always-think: 100.0%, $0.01000 per question"
    # the oracle sends exactly the 4 hard questions to thinking: (8 x 0.001 + 4 x 0.01) / 12
    assert "oracle router            100.0% at $0.00400 (40% of always-think)" in out.stdout
    assert "heuristic router" in out.stdout and "learned router (2-fold)" in out.stdout


def test_a_results_file_without_the_cells_says_which_it_has(tmp_path: Path) -> None:
    results = tmp_path / "r.jsonl"
    row = {"cell_id": "single-b16", "question_id": "q", "question": "x", "correct": True}
    results.write_text(json.dumps(row) + "\n")
    out = subprocess.run(
        [sys.executable, str(BENCH), "--from-sweep", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "no rows of cell 'single-b64'; the file has ['single-b16']" in out.stderr
