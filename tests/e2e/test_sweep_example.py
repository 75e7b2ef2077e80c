"""The sweep example runs as a user runs it, resumes for free, and its policy applies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sweep_overthinking.py"


def _run(cwd: Path) -> str:
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                         cwd=cwd, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_sweep_example(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert "sweet spot: single-b1024; overthinking: single-b4096" in first
    assert "answered now: 300, reused: 0" in first
    assert "single-b512: accuracy 80% [68%, 88%]" in first
    assert "policy single-b1024: Final Answer: 394 (expected 394)" in first
    again = _run(tmp_path)
    assert "answered now: 0, reused: 300, spent: $0.000000 in 0 calls" in again
    policy = json.loads((tmp_path / "sweep-policy.json").read_text())
    assert policy["method"] == "single" and policy["thinking_budget"] == 1024
    assert len((tmp_path / "sweep-example.jsonl").read_text().splitlines()) == 300
