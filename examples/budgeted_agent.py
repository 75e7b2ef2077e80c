"""A multi-step agent under one budget, traced to a JSON-lines file. No API key needed.

The "model" here is a deterministic stand-in for a reasoning model (it answers with an
OpenAI-shaped response whose hidden reasoning grows with the question's difficulty), so
the example runs anywhere; swap ``ask`` for a real client call and nothing else changes.

    python examples/budgeted_agent.py [--traces tcc-traces.jsonl] [--usd 0.05]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from decimal import Decimal
from typing import Any

import tcc_plugin
from tcc_plugin import BudgetExceeded, RetryPolicy, budget, llm_call
from tcc_plugin.exporters.jsonl import read_spans

QUESTIONS = [
    ("What is 17 * 23?", 1),
    ("Is 391 prime? Explain.", 2),
    ("Find all integer solutions of x^2 - 5y^2 = 1 with y < 100.", 4),
    ("Prove that the sum of the first n odd numbers is n^2.", 3),
    ("How many trailing zeros does 1000! have?", 3),
    ("Schedule 12 meetings into 4 rooms with these 30 constraints...", 5),
]


class Overloaded(Exception):
    """Shaped like a provider's 529: retried by the policy."""

    status_code = 529


_flaky = {"left": 1}


@llm_call(
    model="o4-mini",
    provider="openai",
    input_tokens=lambda args: 40 + len(args.arguments["question"]) // 4,
)
def ask(question: str, difficulty: int, max_completion_tokens: int = 6000) -> dict[str, Any]:
    """A reasoning-model call (simulated): hidden reasoning grows with difficulty."""
    if difficulty == 3 and _flaky["left"]:
        _flaky["left"] -= 1
        raise Overloaded("overloaded, try again")
    seed = int(hashlib.sha256(question.encode()).hexdigest(), 16)
    # The model honours its output cap: reasoning first, then the visible answer.
    reasoning = min(250 * difficulty**2 + seed % 400, max(max_completion_tokens - 60, 0))
    visible = min(60, max_completion_tokens - reasoning)
    time.sleep(0.002 * difficulty)
    return {
        "id": f"chatcmpl-{seed % 10**8}",
        "object": "chat.completion",
        "model": "o4-mini-2025-04-16",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "..."}}],
        "usage": {
            "prompt_tokens": 40 + len(question) // 4,
            "completion_tokens": reasoning + visible,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default="tcc-traces.jsonl")
    parser.add_argument("--usd", default="0.05", help="the agent's budget in USD")
    args = parser.parse_args(argv)

    handle = tcc_plugin.configure("jsonl", path=args.traces, metrics=False)
    refused: list[str] = []
    agent = budget(usd=args.usd, policy="clamp", min_output_tokens=256, name="agent")
    with agent, RetryPolicy(max_attempts=3, initial_wait=0.01, jitter=0.01):
        for question, difficulty in QUESTIONS:
            try:
                ask(question, difficulty)
            except BudgetExceeded as exc:
                refused.append(f"{question[:40]}... ({exc.limit})")
    handle.force_flush()
    handle.shutdown()

    spans = [s for s in read_spans(args.traces) if s["name"].startswith("chat ")]
    attrs = [s["attributes"] for s in spans]
    latencies = [s["duration_s"] for s in spans]
    reasoning = sum(a.get("gen_ai.usage.reasoning.output_tokens", 0) for a in attrs)
    output = sum(a.get("gen_ai.usage.output_tokens", 0) for a in attrs)
    spent = agent.spent
    from rich.console import Console
    from rich.table import Table

    table = Table(title="tcc-plugin: budgeted agent (simulated reasoning model)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("calls made / refused", f"{spent.calls} / {len(refused)}")
    table.add_row("tokens (input + output)", f"{spent.total_tokens:,}")
    table.add_row(
        "reasoning tokens (hidden)", f"{reasoning:,} ({reasoning / max(output, 1):.0%} of output)"
    )
    table.add_row("cost (USD)", f"{spent.usd:.6f} of {Decimal(args.usd):.2f}")
    table.add_row(
        "latency p50 / max (ms)",
        f"{statistics.median(latencies) * 1e3:.1f} / {max(latencies) * 1e3:.1f}",
    )
    table.add_row("retries", str(sum(a.get("tcc.retry.attempts", 1) - 1 for a in attrs)))
    table.add_row(
        "clamped calls", str(sum(a.get("tcc.budget.outcome") == "clamped" for a in attrs))
    )
    table.add_row("traces", args.traces)
    Console().print(table)
    for line in refused:
        Console().print(f"[yellow]refused by the budget:[/] {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
