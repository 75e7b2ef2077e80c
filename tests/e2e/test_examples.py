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


def test_self_hosted_example(tmp_path: Path) -> None:
    import os

    import pytest

    if os.environ.get("TCC_SKIP_ENGINE"):
        pytest.skip("TCC_SKIP_ENGINE is set")
    traces = tmp_path / "traces.jsonl"
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "self_hosted.py"), "--traces", str(traces)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    assert "reasoning tokens:" in out.stdout and "forcing:" in out.stdout
    spans = [json.loads(line) for line in traces.read_text().splitlines()]
    calls = [s for s in spans if "gen_ai.usage.output_tokens" in s["attributes"]]
    assert len(calls) >= 3  # the chat call and at least two forcing phases
    assert {s["attributes"]["gen_ai.provider.name"] for s in calls} == {"llama.cpp"}
    chat = [s for s in calls if s["name"].startswith("chat ")]
    assert chat[0]["attributes"]["gen_ai.usage.reasoning.output_tokens"] > 0
    assert (
        chat[0]["attributes"]["gen_ai.usage.reasoning.output_tokens"]
        <= chat[0]["attributes"]["gen_ai.usage.output_tokens"]
    )
    assert all(s["attributes"]["tcc.cost.usd"] > 0 for s in calls)


def test_batch_sampling_example(tmp_path: Path) -> None:
    import os

    import pytest

    if os.environ.get("TCC_SKIP_ENGINE"):
        pytest.skip("TCC_SKIP_ENGINE is set")
    traces = tmp_path / "traces.jsonl"
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "batch_sampling.py"), "--traces", str(traces)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    assert "requests:" in out.stdout and "waves (samples per request):" in out.stdout
    spans = [json.loads(line) for line in traces.read_text().splitlines()]
    chat = [s for s in spans if s["name"].startswith("chat ")]
    group = next(s for s in spans if s["name"] == "self_consistency")
    waves = [s["attributes"].get("gen_ai.request.choice.count", 1) for s in chat]
    assert max(waves) > 1  # a wave went out as one request with n > 1
    assert sum(waves) == group["attributes"]["tcc.sampling.launched"]  # samples, not requests
    assert group["attributes"]["tcc.sampling.usage.output_tokens"] == sum(
        s["attributes"]["gen_ai.usage.output_tokens"] for s in chat
    )


def test_code_verifier_sandbox_example(tmp_path: Path) -> None:
    for extra in ([], ["--isolate-tests"]):
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / "code_verifier_sandbox.py"), *extra],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        scores = [line.split("score ")[1].split()[0] for line in lines if "score" in line][:6]
        # wrong (2 of 3 tests), reward hacker, forger, host prober, runaway, correct
        assert scores == ["0.67", "0.00", "0.00", "0.00", "0.00", "1.00"], out.stdout
        assert "timeout" in lines[4] and "winner: candidate 5, score 1.00" in out.stdout
