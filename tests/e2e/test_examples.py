"""Every example runs, and says what it should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_budgeted_agent_example(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "budgeted_agent.py"),
            "--traces",
            str(traces),
            "--usd",
            "0.05",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "calls made / refused" in out.stdout
    assert "5 / 1" in out.stdout  # the last question no longer fits 256 output tokens
    assert "refused by the budget" in out.stdout
    spans = [json.loads(line) for line in traces.read_text().splitlines()]
    chat = [s for s in spans if s["name"] == "chat o4-mini"]
    assert len(chat) == 6
    cost = sum(s["attributes"].get("tcc.cost.usd", 0.0) for s in chat)
    assert cost <= 0.05
    outcomes = [s["attributes"]["tcc.budget.outcome"] for s in chat]
    assert outcomes.count("refused") == 1 and "clamped" in outcomes
    assert any(s["attributes"].get("tcc.retry.attempts") == 2 for s in chat)
