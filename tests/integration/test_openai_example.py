"""examples/openai_budget.py runs (offline) and says what it should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openai")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "openai_budget.py"


def test_openai_budget_example_runs_offline(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--offline", "--usd", "0.02", "--traces", str(traces)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "How many trailing zeros does 1000! have?      -> 249\n" in out.stdout
    assert "refused by the budget (usd limit)" in out.stdout
    assert "3 calls, 1 refused; 3600 output tokens of which 3480 reasoning" in out.stdout
    spans = [json.loads(line) for line in traces.read_text().splitlines()]
    chat = [s["attributes"] for s in spans if s["name"] == "chat o4-mini"]
    assert [a["tcc.budget.outcome"] for a in chat] == ["clamped"] * 3 + ["refused"]
    # o4-mini: $1.10 input, $4.40 output per million; the first question: 1,216 input
    # tokens and 220 output tokens (180 of them reasoning)
    assert chat[0]["tcc.cost.usd"] == pytest.approx((1216 * 1.1 + 220 * 4.4) / 1e6)
    assert chat[0]["gen_ai.usage.reasoning.output_tokens"] == 180
    assert sum(a.get("tcc.cost.usd", 0.0) for a in chat) <= 0.02
    assert chat[2]["gen_ai.request.stream"] is True
