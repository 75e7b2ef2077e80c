"""``tcc demo``, the main job, run as a user runs it: a subprocess on the local engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _tcc() -> list[str]:
    exe = shutil.which("tcc", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "tcc_plugin.app.cli"]


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "COLUMNS": "200", **(env or {})}
    environ.pop("OTEL_TRACES_EXPORTER", None)
    return subprocess.run(
        [*_tcc(), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=3600
    )


@pytest.mark.skipif(bool(os.environ.get("TCC_SKIP_ENGINE")), reason="TCC_SKIP_ENGINE is set")
def test_the_demo_runs_the_agent_and_prints_its_summary(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    done = _run(["demo", "--quick", "--no-progress", "--traces", str(traces)], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for expected in (
        "self-consistency",
        "best-of-N",
        "budget forcing",
        "reasoning tokens (hidden)",
        "cost (USD)",
        "latency p50 / p95 / stdev",
        "samples saved by early stopping",
        "1 (1 injected failure)",
        str(traces),
    ):
        assert expected in out, (expected, out)

    spans = [json.loads(line) for line in traces.read_text().splitlines() if line.strip()]
    names = {s["name"] for s in spans}
    assert "budget_forcing" in names
    calls = [s for s in spans if "gen_ai.usage.input_tokens" in s["attributes"]]
    assert calls, names
    assert all(s["attributes"]["gen_ai.provider.name"] == "llama.cpp" for s in calls)
    # a call whose reasoning the server did not report carries no count (never a 0 that
    # claims none happened): it is listed in tcc.usage.unreported
    reasoning = "gen_ai.usage.reasoning.output_tokens"
    assert sum(s["attributes"].get(reasoning, 0) for s in calls) > 0
    assert all(
        reasoning in s["attributes"] or "reasoning" in s["attributes"]["tcc.usage.unreported"]
        for s in calls
    )
    assert all(s["attributes"].get("tcc.cost.usd", 0) > 0 for s in calls)
    assert all(s["attributes"]["tcc.budget.name"] == "demo-agent" for s in calls)
    assert any(s["attributes"].get("tcc.retry.attempts", 1) == 2 for s in calls)
    sampling = [s for s in spans if any(k.startswith("tcc.sampling.") for k in s["attributes"])]
    assert {s["name"] for s in sampling} >= {"estimate", "implement"}
    forcing = next(s for s in spans if s["name"] == "budget_forcing")
    assert forcing["attributes"]["tcc.forcing.thinking_tokens"] > 0


def test_a_hosted_provider_needs_its_api_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run(
        [*_tcc(), "demo", "--provider", "openai"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "OPENAI_API_KEY" in done.stdout
