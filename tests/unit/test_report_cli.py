"""`tcc report` over a trace file written by the real lifecycle (decorated calls, a stream,
a retry, a budget refusal and a best-of-N group), through the installed `tcc` command.

The file is written in a fresh interpreter: OpenTelemetry's global providers can be set
once per process, and the test session's are in-memory ones (tests/conftest.py). Both
processes run outside the repository, whose tcc_plugin/ folder would shadow the installed
package (exporters/ and integrations/ are mapped into it at install time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

APP = textwrap.dedent(
    """
    import sys, time
    import tcc_plugin
    from tcc_plugin.retry import RetryPolicy
    from tcc_plugin.sampling import best_of_n, stop_on_score

    handle = tcc_plugin.configure("jsonl", path=sys.argv[1], metrics=False)

    def body(model, output, reasoning, prompt=1000, cached=0):
        return {"id": "r", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "4"}}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": output,
                          "prompt_tokens_details": {"cached_tokens": cached},
                          "completion_tokens_details": {"reasoning_tokens": reasoning}}}

    @tcc_plugin.llm_call(provider="openai")
    def ask(question, model="o3", max_tokens=2000, output=600, reasoning=500):
        return body(model, output, reasoning, cached=400)

    @tcc_plugin.llm_call(model="o3", provider="openai", stream=True)
    def ask_stream(question, max_tokens=2000):
        time.sleep(0.05)  # the first token arrives after 50 ms
        yield {"id": "s", "object": "chat.completion.chunk", "model": "o3",
               "choices": [{"index": 0, "delta": {"content": "4"}}]}
        yield {"id": "s", "object": "chat.completion.chunk", "model": "o3", "choices": [],
               "usage": {"prompt_tokens": 100, "completion_tokens": 300,
                         "completion_tokens_details": {"reasoning_tokens": 200}}}

    attempts = []

    @tcc_plugin.llm_call(model="gpt-4o-mini", provider="openai",
                         retry=RetryPolicy(max_attempts=3, sleep=lambda s: None))
    def flaky(question, max_tokens=100):
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("connection reset")
        return body("gpt-4o-mini", 20, 0)

    for _ in range(3):
        ask("2+2?")
    for _ in ask_stream("2+2?"):
        pass
    flaky("2+2?")
    with tcc_plugin.budget(calls=1):
        ask("first")
        try:
            ask("second")
        except tcc_plugin.BudgetExceeded:
            pass

    scores = iter([0.2, 1.0, 0.5, 0.9])
    result = best_of_n(lambda: ask("sample", model="o4-mini", output=300, reasoning=250),
                       n=4, verifier=lambda candidate: next(scores),
                       stop=stop_on_score(1.0), concurrency=1)
    handle.shutdown()
    print("launched", result.launched, "completed", result.completed)
    """
)


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "tcc-traces.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run(
        [sys.executable, "-c", APP, str(path)],
        cwd=path.parent,  # not the repository: its tcc_plugin/ is not the installed layout
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # a hang guard
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "launched 2 completed 2" in proc.stdout, proc.stdout
    return path


def tcc(*args: str) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).parent / "tcc"
    return subprocess.run(
        [str(command), *args],
        cwd=Path(args[1]).parent,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "150"},
        timeout=120,
        check=False,
    )


def by_model(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["model"]: g for g in data["by_model"]}


def test_report_of_a_real_trace_file(traces: Path) -> None:
    proc = tcc("report", str(traces), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    models = by_model(data)
    assert set(models) == {"o3", "gpt-4o-mini", "o4-mini"}

    o3 = models["o3"]
    # 3 plain calls + 1 stream + 2 in the budget (one refused).
    assert o3["calls"] == 6 and o3["refused"] == 1
    assert o3["input_tokens"] == 4 * 1000 + 100
    assert o3["cached_input_tokens"] == 4 * 400
    assert o3["output_tokens"] == 4 * 600 + 300
    assert o3["reasoning_tokens"] == 4 * 500 + 200
    assert o3["reasoning_share"] == pytest.approx(2200 / 2700)
    assert o3["latency_s"]["count"] == 5  # the refused call is left out
    assert o3["budget_outcomes"] == {"ok": 1, "refused": 1, "unbudgeted": 4}
    assert o3["priced_calls"] == 5 and o3["cost_usd"] > 0
    ttft = o3["time_to_first_token_s"]
    assert ttft["count"] == 1 and 0.04 < ttft["p50"] < 5

    mini = models["gpt-4o-mini"]
    assert (mini["calls"], mini["retried_calls"], mini["retries"], mini["errors"]) == (1, 1, 2, 0)

    group = data["sampling"]
    assert len(group) == 1
    assert group[0]["name"] == "best_of_n"
    assert (group[0]["requested"], group[0]["completed"], group[0]["saved_samples"]) == (4, 2, 2)
    assert group[0]["stopped_early"] == 1
    assert models["o4-mini"]["calls"] == 2
    assert group[0]["cost_usd"] == pytest.approx(models["o4-mini"]["cost_usd"])
    assert group[0]["est_saved_usd"] == pytest.approx(group[0]["cost_usd"])  # 2 saved, 2 paid

    assert data["total"]["calls"] == 9
    assert data["total"]["cost_usd"] == pytest.approx(sum(g["cost_usd"] for g in data["by_model"]))


def test_tables_and_plot_of_a_real_trace_file(traces: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "report.png"
    proc = tcc("report", str(traces), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    for text in ("Calls and cost", "Latency in seconds", "Time to first token", "best_of_n"):
        assert text in proc.stdout
    assert f"plot written to {png}" in proc.stderr
    assert png.read_bytes().startswith(b"\x89PNG")


def test_tables_fit_an_80_column_terminal(traces: Path) -> None:
    proc = tcc("report", str(traces), "--width", "80")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out  # no cell shortened
    # Nothing cropped at the right edge either: the last column of each table is whole.
    for text in ("Unpriced", "Reasoning %", "CV", "unbudgeted", "Est. saved", "sample cost."):
        assert text in out, text
