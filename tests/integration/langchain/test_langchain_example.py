"""examples/langchain_agent.py, run with real ChatOpenAI / ChatAnthropic whose HTTP is
mocked: one trace with the expected parent/child spans, exact totals, and a step the
budget cannot pay refused before its request."""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tcc_plugin import Budget, BudgetExceeded

from ...conftest import Telemetry
from ..conftest import (
    MockAPI,
    anthropic_message,
    anthropic_usage,
    chat_completion,
    chat_usage,
    json_response,
)
from .conftest import haiku_cost, make_anthropic, make_openai, o3_cost

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "langchain_agent.py"
PLAN_TEXT = "1. Multiply 17 by 20.\n2. Multiply 17 by 4.\n3. Add the two."


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langchain_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def claude(text: str, inp: int, out: int) -> Any:
    return json_response(
        anthropic_message(
            anthropic_usage(inp, out), model="claude-haiku-4-5", thinking=False, text=text
        )
    )


def solved(text: str = "340 + 68 = 408\nFinal Answer: 408") -> Any:
    return json_response(chat_completion(chat_usage(120, 200, reasoning=150), contents=(text,)))


@pytest.fixture
def judge_api() -> MockAPI:
    return MockAPI()


def models(
    example: ModuleType, planner: MockAPI, solver: MockAPI, judge: MockAPI, **kw: Any
) -> Any:
    return example.Models(
        planner=make_anthropic(planner, max_tokens=1024),
        solver=make_openai(solver, max_tokens=1000),
        judge=make_anthropic(judge, max_tokens=kw.get("judge_max_tokens", 256)),
    )


def test_example_exports_one_trace_with_exact_totals(
    tmp_path: Path,
    telemetry: Telemetry,
    openai_api: MockAPI,
    anthropic_api: MockAPI,
    judge_api: MockAPI,
) -> None:
    example = load_example()
    anthropic_api.queue(claude(PLAN_TEXT, 40, 30))
    openai_api.queue(*[solved() for _ in range(5)])
    judge_api.queue(claude("The arithmetic is right.\nScore: 9", 90, 20))
    trace_file = tmp_path / "agent.jsonl"

    report = example.main(
        ["What is 17 * 24?", "--usd", "0.05", "--concurrency", "1", "--trace", str(trace_file)],
        models=models(example, anthropic_api, openai_api, judge_api),
    )

    # Five samples asked for, drawn one at a time: three unanimous votes settle it.
    assert openai_api.count == 3
    assert report["answer"] == "408" and report["votes"] == {"408": 3}
    assert report["samples"] == 3 and report["stopped_early"] is True
    assert report["score"] == pytest.approx(0.9) and report["verified"] is True
    cost = haiku_cost(40, 30) + 3 * o3_cost(120, 200) + haiku_cost(90, 20)
    assert cost == Decimal("0.00590")  # 190 + 3 x 1840 + 190 micro-dollars
    assert report["spent"] == {
        "usd": str(cost),
        "calls": 5,
        "total_tokens": 70 + 3 * 320 + 110,
        "output_tokens": 30 + 3 * 200 + 20,
        "reasoning_tokens": 3 * 150,
    }
    # The judge saw the question and the voted answer.
    judge_prompt = judge_api.body()["messages"][0]["content"]
    assert "What is 17 * 24?" in judge_prompt and "Final Answer: 408" in judge_prompt

    exported = [json.loads(line) for line in trace_file.read_text().splitlines()]
    assert len({s["trace_id"] for s in exported}) == 1  # one trace
    # The anthropic SDK (2.x) traces its own calls too ("anthropic.messages.create"),
    # beside ours: keep the example's and tcc's spans.
    spans = [
        s for s in exported if s["scope"]["name"] in ("tcc_plugin", "examples.langchain_agent")
    ]
    by_id = {s["span_id"]: s for s in spans}
    (root,) = [s for s in spans if s["parent_span_id"] is None]
    assert root["name"] == "agent"

    def children(span: dict[str, Any]) -> list[str]:
        return sorted(s["name"] for s in spans if s["parent_span_id"] == span["span_id"])

    assert children(root) == ["chat claude-haiku-4-5", "chat claude-haiku-4-5", "solve"]
    (group,) = [s for s in spans if s["name"] == "solve"]
    assert children(group) == ["chat o3"] * 3
    assert group["attributes"]["tcc.sampling.completed"] == 3
    calls = [s for s in spans if s["name"].startswith("chat ")]
    assert sum(s["attributes"]["tcc.cost.usd"] for s in calls) == pytest.approx(float(cost))
    assert all(by_id[s["parent_span_id"]]["name"] in ("agent", "solve") for s in calls)
    assert {s["attributes"]["tcc.budget.name"] for s in calls} == {"agent"}


def test_a_step_the_budget_cannot_pay_is_refused_before_its_request(
    telemetry: Telemetry, openai_api: MockAPI, anthropic_api: MockAPI, judge_api: MockAPI
) -> None:
    example = load_example()
    anthropic_api.queue(claude(PLAN_TEXT, 40, 30))
    openai_api.queue(*[solved() for _ in range(5)])
    budget = Budget(usd="0.02", name="agent")
    # The plan and each solve fit; the judge's worst case (4096 x $5 = $0.02048) cannot.
    with pytest.raises(BudgetExceeded) as refused:
        example.run(
            "What is 17 * 24?",
            budget,
            models(example, anthropic_api, openai_api, judge_api, judge_max_tokens=4096),
            concurrency=1,
        )
    assert refused.value.limit == "usd"
    assert judge_api.count == 0  # never sent
    assert anthropic_api.count == 1 and openai_api.count == 3
    assert budget.spent.usd == haiku_cost(40, 30) + 3 * o3_cost(120, 200)
    assert budget.in_flight == 0
    judge_span = telemetry.spans("chat claude-haiku-4-5")[-1]
    assert judge_span.attributes is not None
    assert judge_span.attributes["tcc.budget.outcome"] == "refused"
    root = telemetry.span("agent")
    assert root.status.status_code.name == "ERROR"
