"""``tcc sweep`` and ``tcc sweep report`` as a user runs them, on a local function target."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from tcc_plugin.app.cli import main
from tcc_plugin.sweep import load_policy, read_rows

pytest.importorskip("matplotlib")

MODULE = """
import tcc_plugin
from tcc_plugin.sweep import arithmetic

ANSWERS = {q.question: q.answer for q in arithmetic().questions}

@tcc_plugin.llm_call(model="gpt-4o-mini", provider="openai")
def ask(question, *, thinking_budget, seed):
    level = int(next(q.id for q in arithmetic().questions if q.question == question)[7])
    right = level * 64 <= thinking_budget < 1024  # harder needs more; 1024 overthinks
    answer = ANSWERS[question] + (0 if right else 1)
    return {"id": "c", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"Final Answer: {answer}"}}],
            "usage": {"prompt_tokens": 40, "completion_tokens": thinking_budget + 8,
                      "completion_tokens_details": {"reasoning_tokens": thinking_budget}}}

def plain(question):
    return "Final Answer: 0"
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "mymodel.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_sweep_then_report(workdir: Path, capsys: Any) -> None:
    code = main(["sweep", "--builtin", "arithmetic", "--target", "mymodel:ask",
                 "--methods", "single", "--budgets", "64,320,1024,2048", "--no-progress",
                 "--policy", "policy.json", "--plot", "plot.png", "--json", "a.json",
                 "--usd", "1"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "single-b320" in out and "overthinking" in out and "sweet spot: single-b320" in out
    rows = read_rows(workdir / "sweep-results.jsonl")
    assert len(rows) == 4 * 40
    assert load_policy(workdir / "policy.json").thinking_budget == 320
    analysis = json.loads((workdir / "a.json").read_text())
    assert analysis["overthinking"] == ["single-b1024", "single-b2048"]
    assert analysis["sweet_spot"] == "single-b320" and analysis["refused"] == {}
    assert _png_size(workdir / "plot.png") == (1200, 480)

    # the report re-analyses under constraints, without a single call
    code = main(["sweep", "report", "sweep-results.jsonl", "--json", "-",
                 "--max-usd-per-question", "0.0001", "--plot", "again.png"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recommended"] == "single-b64"  # the only cell under $0.0001
    assert _png_size(workdir / "again.png") == (1200, 480)
    assert len(read_rows(workdir / "sweep-results.jsonl")) == 160


def test_bad_input_exits_2_with_a_clear_message(workdir: Path, capsys: Any) -> None:
    (workdir / "set.jsonl").write_text(
        '{"id": 1, "question": "1+1?", "answer": 2}\n{"id": 2, "question":\n'
    )
    args = ["sweep", "--evalset", "set.jsonl", "--target", "mymodel:ask", "--no-progress",
            "--methods", "single", "--budgets", "64"]  # fmt: skip
    assert main(args) == 2
    assert "set.jsonl:2: " in capsys.readouterr().err
    assert main([*args, "--on-bad-line", "skip"]) == 0
    assert "skipped" in capsys.readouterr().out

    assert main(["sweep", "--target", "mymodel:plain", "--budgets", "64", "--methods",
                 "single", "--results", "plain.jsonl", "--no-progress"]) == 2  # fmt: skip
    assert "does not accept thinking_budget" in capsys.readouterr().err
    assert not (workdir / "plain.jsonl").exists()
    assert main(["sweep", "--target", "nosuchmodule:ask", "--no-progress"]) == 2
    assert "cannot load target" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "--methods", "guessing"])
    assert "unknown method" in capsys.readouterr().err
    assert main(["sweep", "report", "missing.jsonl"]) == 2
