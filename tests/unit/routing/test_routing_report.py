"""``tcc report``'s routing table, from the spans real routers and cascades record."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from tcc_plugin import Usage, budget, llm_call
from tcc_plugin.app.report import classify, render, summarize
from tcc_plugin.exporters.jsonl import span_to_dict
from tcc_plugin.routing import Route, Router, cascade
from tests.conftest import Telemetry


def usage_of(reply: dict[str, Any]) -> Usage:
    return reply["usage"]


@llm_call(model="gpt-4o-mini", provider="openai", max_output_tokens=50, usage=usage_of)
def cheap(question: str) -> dict[str, Any]:
    return {"text": "maybe 4" if "hard" in question else "4", "usage": Usage(input=10, output=2)}


@llm_call(model="o3", provider="openai", max_output_tokens=500, usage=usage_of)
def think(question: str) -> dict[str, Any]:
    return {"text": "1729", "usage": Usage(input=20, output=400, reasoning=380)}


def test_the_report_counts_decisions_per_route_with_their_cost(telemetry: Telemetry) -> None:
    router = Router(
        [Route("cheap", cheap, up_to=0.5), Route("think", think)],
        lambda q: 0.9 if "hard" in q else 0.1,
        name="qa",
    )
    flow = cascade(
        [Route("cheap", cheap), Route("think", think)],
        lambda reply: "maybe" not in reply["text"],
        name="cascade",
    )
    with budget(usd=1):
        for q in ("easy 1", "easy 2", "easy 3", "hard 1"):
            router(q)
        flow("easy"), flow("hard")
    report = summarize(classify(span_to_dict(s) for s in telemetry.spans()))
    rows = {(r.router, r.route): r for r in report.routing}
    assert set(rows) == {
        ("qa", "cheap"),
        ("qa", "think"),
        ("cascade", "cheap"),
        ("cascade", "think"),
    }
    qa_cheap, qa_think = rows["qa", "cheap"], rows["qa", "think"]
    assert (qa_cheap.decisions, qa_cheap.share, qa_cheap.calls) == (3, 0.75, 3)
    # gpt-4o-mini $0.15 / $0.60 per M; o3 $2 / $8 per M
    assert abs(qa_cheap.cost_usd - 3 * (10 * 0.15 + 2 * 0.60) / 1e6) < 1e-12
    assert abs(qa_think.cost_usd - (20 * 2 + 400 * 8) / 1e6) < 1e-12
    escalated = rows["cascade", "think"]
    assert (escalated.decisions, escalated.calls, escalated.escalation_rate) == (1, 2, 1.0)
    assert rows["cascade", "cheap"].escalation_rate == 0.0
    assert report.total.calls == 4 + 1 + 2  # routing spans are not calls
    console = Console(width=140, record=True)
    console.print(render(report))
    text = console.export_text()
    assert "Routing" in text and "cascade" in text and "75.0%" in text
    assert report.to_dict()["routing"][0]["router"] == "cascade"
