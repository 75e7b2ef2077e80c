"""Policy files: written by a sweep, read by load_policy, applied to calls."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import tcc_plugin
from tcc_plugin.budget import active_budgets
from tcc_plugin.instrument import current_thinking
from tcc_plugin.sweep import Policy, PolicyError, load_policy, policy_from_analysis, sweep

from .conftest import ANSWER_TOKENS, MODEL, completion, cost, model, questions


def test_the_sweep_writes_what_load_policy_reads(tmp_path: Path) -> None:
    out = sweep(questions(10), model(lambda i, b, s: b >= 64 or i < 3), budgets=[32, 64, 128],
                results=tmp_path / "r.jsonl")  # fmt: skip
    assert out.analysis is not None and out.analysis.sweet_spot == "single-b64"
    policy = policy_from_analysis(out.analysis, out.rows)
    path = policy.write(tmp_path / "policy.json")
    loaded = load_policy(path)
    assert loaded == policy
    assert (loaded.method, loaded.thinking_budget, loaded.n, loaded.stop) == (
        "single",
        64,
        None,
        None,
    )
    # per-call budget: 1.5x the most one question spent, USD rounded up to micro-dollars
    assert loaded.per_call == {
        "output_tokens": math.ceil((64 + ANSWER_TOKENS) * 1.5),
        "usd": f"{math.ceil(cost(64) * 1.5 * 1e6) / 1e6:.6f}",
    }
    assert loaded.source["cell_id"] == "single-b64" and loaded.source["accuracy"] == 1.0
    assert "McNemar" in loaded.source["test"]
    assert loaded.router is None and "router" not in json.loads(path.read_text())


def test_the_router_section_is_kept_and_toml_is_read(tmp_path: Path) -> None:
    data = {"method": "self_consistency", "thinking_budget": "low", "n": 5,
            "stop": "confident:0.9", "per_call": {"usd": "0.01"},
            "router": {"kind": "difficulty", "routes": [{"cell_id": "single-b64"}]}}  # fmt: skip
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    policy = load_policy(path)
    assert policy.router == data["router"]
    assert load_policy(policy.write(tmp_path / "again.json")).router == data["router"]
    toml = tmp_path / "p.toml"
    toml.write_text('method = "best_of_n"\nn = 4\nthinking_budget = 256\nstop = "score:1.0"\n'
                    "[router]\nthreshold = 0.5\n")  # fmt: skip
    read = load_policy(toml)
    assert (read.method, read.n, read.router) == ("best_of_n", 4, {"threshold": 0.5})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "Expecting property name"),
        ('{"method": "guess"}', "unknown method 'guess'"),
        ('{"method": "single", "colour": 1}', "unknown field(s) colour"),
        ('{"thinking_budget": 5}', "missing field 'method'"),
        ('{"method": "single", "per_call": {"dollars": 1}}', "unknown limit(s) dollars"),
        ('{"method": "best_of_n", "n": 0}', "n >= 1"),
        ('{"method": "self_consistency", "n": 3, "stop": "soon"}', "unknown stop rule 'soon'"),
        ('{"method": "single", "version": 9}', "version 9"),
        ('{"method": "single", "router": [1]}', "'router' must be an object"),
    ],
)
def test_bad_policy_files_say_what_and_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(PolicyError, match=r"bad\.json") as info:
        load_policy(path)
    assert message in str(info.value)


def test_apply_sets_thinking_and_a_per_call_budget() -> None:
    policy = Policy("single", thinking_budget="high", per_call={"usd": "0.5", "calls": 2})
    with policy.apply() as scope:
        assert current_thinking() == "high"
        assert active_budgets()[-1] is scope
        assert scope is not None and scope.limits == {"usd": 0.5, "calls": 2}
    assert current_thinking() is None and active_budgets() == ()


def test_llm_call_with_a_policy_refuses_what_the_per_call_budget_cannot_pay() -> None:
    calls: list[int] = []
    policy = Policy("single", thinking_budget=64, per_call={"output_tokens": 50})

    @tcc_plugin.llm_call(model=MODEL, max_output_tokens=100, policy=policy)
    def ask(question: str) -> dict[str, Any]:
        calls.append(1)
        return completion("Final Answer: 1", 10)

    with pytest.raises(tcc_plugin.BudgetExceeded):
        ask("q")
    assert calls == []  # refused before the call: its worst case (100) exceeds 50

    roomy = Policy("single", thinking_budget=64, per_call={"output_tokens": 500})

    @tcc_plugin.llm_call(model=MODEL, max_output_tokens=100, policy=roomy)
    def ask_roomy(question: str) -> Any:
        assert current_thinking() == 64
        return completion("Final Answer: 1", 10)

    assert ask_roomy("q")["choices"][0]["message"]["content"] == "Final Answer: 1"
    with pytest.raises(TypeError, match="generator"):

        @tcc_plugin.llm_call(policy=roomy)
        def stream() -> Any:
            yield 1


def test_run_executes_the_method() -> None:
    answers = iter(["Final Answer: 7", "Final Answer: 8", "Final Answer: 7", "x", "y"])
    policy = Policy("self_consistency", n=5, stop="unbeatable")
    result = policy.run(lambda: next(answers))
    assert result.answer == "7" and result.launched <= 5
    assert Policy("single").run(lambda: 42) == 42
    with pytest.raises(TypeError, match="verifier"):
        Policy("best_of_n", n=2).run(lambda: 1)
