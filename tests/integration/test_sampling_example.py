"""examples/self_consistency.py runs, saves samples, and traces each group with its calls."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "self_consistency.py"


def test_self_consistency_example(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--traces", str(traces), "--usd", "1.00"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    fixed = re.search(r"fixed:\s+(\d+) samples, (\d)/6 right", out.stdout)
    adaptive = re.search(r"adaptive:\s+(\d+) samples, (\d)/6 right", out.stdout)
    assert fixed and adaptive, out.stdout
    assert int(fixed.group(1)) == 96 and int(adaptive.group(1)) < 96
    assert int(adaptive.group(2)) >= int(fixed.group(2)) - 1
    assert "samples saved" in out.stdout and "budget spent" in out.stdout

    spans = [json.loads(line) for line in traces.read_text().splitlines()]
    groups = {s["span_id"]: s for s in spans if s["name"].startswith("self_consistency")}
    assert len(groups) == 12
    calls = [s for s in spans if s["name"] == "chat o4-mini"]
    assert calls and all(c["parent_span_id"] in groups for c in calls)
    launched = sum(g["attributes"]["tcc.sampling.launched"] for g in groups.values())
    completed = sum(g["attributes"]["tcc.sampling.completed"] for g in groups.values())
    # a sample abandoned before its thread started never made its call
    assert completed <= len(calls) <= launched
    for group in groups.values():
        a = group["attributes"]
        assert a["tcc.sampling.requested"] == 16
        assert (
            a["tcc.sampling.completed"] + a["tcc.sampling.cancelled"] == a["tcc.sampling.launched"]
        )
        assert a["tcc.sampling.cost.usd"] > 0 and "tcc.sampling.latency.median" in a
