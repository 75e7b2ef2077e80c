"""A sweep killed mid-way by a real SIGKILL, then re-run: no recorded answer is paid for
again, and the final table is the one an uninterrupted sweep gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tcc_plugin.sweep import analyze, read_rows

SCRIPT = r"""
import os, sys, time
from tcc_plugin.sweep import Question, sweep

paid = sys.argv[2]

def ask(question, *, thinking_budget, seed):
    i = int(question.split()[1])
    time.sleep(0.02)
    with open(paid, "a") as f:  # the "provider" bills the call as it returns
        f.write(f"single-b{thinking_budget} q{i:02d} {seed}\n")
        f.flush()
        os.fsync(f.fileno())
    right = (i * 7 + thinking_budget) % 10 < (6 if thinking_budget < 100 else 3)
    return f"Final Answer: {i if right else -1}"

questions = [Question(f"q{i:02d}", f"Question {i}", i) for i in range(30)]
sweep(questions, ask, budgets=[32, 64, 128], results=sys.argv[1], concurrency=1, name="kill")
"""


def _run(results: Path, paid: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(results), str(paid)])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    a = analyze(rows).to_dict()
    for cell in a["cells"]:  # wall time differs between runs; everything else must not
        for key in ("latency_p50", "latency_p95", "latency_cv"):
            cell.pop(key)
    return a


def test_sigkill_then_resume_pays_nothing_twice(tmp_path: Path) -> None:
    results, paid = tmp_path / "results.jsonl", tmp_path / "paid.txt"
    proc = _run(results, paid)
    deadline = time.monotonic() + 120
    while len(_lines(results)) < 25 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    recorded_at_kill = {(r["cell_id"], r["question_id"], r["seed"]) for r in read_rows(results)}
    assert 25 <= len(recorded_at_kill) < 90  # killed mid-way

    assert _run(results, paid).wait(timeout=300) == 0
    rows = read_rows(results)
    assert len(rows) == 90  # every (cell, question, seed) once
    assert len(_lines(results)) == 90  # nothing recorded twice, no torn line left
    bills = Counter(tuple(line.split()) for line in _lines(paid))
    twice = {k for k, n in bills.items() if n > 1}
    # only a call in flight at the kill (billed, its answer not yet recorded) is paid again
    assert len(twice) <= 1
    assert all((c, q, int(s)) not in recorded_at_kill for c, q, s in twice)
    assert all(n <= 2 for n in bills.values()) and len(bills) == 90

    fresh, fresh_paid = tmp_path / "fresh.jsonl", tmp_path / "fresh-paid.txt"
    assert _run(fresh, fresh_paid).wait(timeout=300) == 0
    assert json.dumps(_table(rows), sort_keys=True) == json.dumps(
        _table(read_rows(fresh)), sort_keys=True
    )
