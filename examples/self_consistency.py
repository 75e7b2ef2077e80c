"""Self-consistency with adaptive early stopping, under one budget, traced. No API key needed.

Each question is answered by voting over several samples of a reasoning model. The
fixed recipe draws N samples per question; the adaptive one (Adaptive-Consistency)
stops as soon as the vote is settled: ``stop_confident(0.95) | stop_unbeatable()``.
Both run through the same budget, and every group is a span whose children are its
calls, written to a JSON-lines file.

The "model" is a deterministic stand-in for a reasoning model (an OpenAI-shaped
response whose hidden reasoning and correctness depend on the question's difficulty),
so the example runs anywhere; swap ``ask`` for a real client call and nothing else
changes.

    python examples/self_consistency.py [--traces tcc-traces.jsonl] [--usd 1.00] [--n 16]
"""

from __future__ import annotations

import argparse
import hashlib
import random
from decimal import Decimal
from typing import Any

import tcc_plugin
from tcc_plugin import budget, llm_call
from tcc_plugin.exporters.jsonl import read_spans
from tcc_plugin.sampling import (
    SamplingResult,
    current_sample,
    launch_adaptive,
    launch_all,
    self_consistency,
    stop_confident,
    stop_unbeatable,
    worst_case,
)

# (question, the right answer, how often one sample gets it right)
QUESTIONS = [
    ("Natalia sold 48 clips in April and half as many in May. How many in all?", "72", 0.95),
    ("A robe takes 2 bolts of blue fiber and half that much white. Bolts in all?", "3", 0.9),
    ("A $80,000 house, $50,000 of repairs, value up 150%. What is the profit?", "70000", 0.55),
    ("James runs 3 sprints of 60 m, 3 times a week. How many metres a week?", "540", 0.85),
    ("20 chickens, 3 cups each a day in 3 meals: 15 then 25 cups. The last meal?", "20", 0.6),
    ("16 glasses; every second one costs 60% of $5. How much in all?", "64", 0.7),
]
WRONG = ["12", "36", "48", "60", "90", "120"]
MAX_TOKENS = 2048


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(digest, 16))


@llm_call(model="o4-mini", provider="openai", input_tokens=lambda a: 40 + len(a.arguments["q"]))
def ask(q: str, truth: str, p_right: float, max_completion_tokens: int = MAX_TOKENS) -> Any:
    """One sample of a reasoning model (simulated): sample i of a question always says
    the same thing, so a rerun gives the same votes."""
    ctx = current_sample()
    rng = _rng(q, ctx.index if ctx else 0)
    answer = truth if rng.random() < p_right else rng.choice(WRONG)
    reasoning = min(300 + rng.randrange(900), max_completion_tokens - 40)
    return {
        "id": f"chatcmpl-{rng.randrange(10**8)}",
        "object": "chat.completion",
        "model": "o4-mini-2025-04-16",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"content": f"Let me work it out... Final Answer: {answer}"},
            }
        ],
        "usage": {
            "prompt_tokens": 40 + len(q) // 4,
            "completion_tokens": reasoning + 40,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def solve(q: str, truth: str, p_right: float, n: int, adaptive: bool) -> SamplingResult[Any]:
    return self_consistency(
        lambda: ask(q, truth, p_right),
        n=n,
        # fixed: every sample at once; adaptive: only as many in flight as could still
        # change the stop rule's decision, so stopping early saves what is not launched
        launch=launch_adaptive() if adaptive else launch_all(),
        stop=stop_confident(0.95) | stop_unbeatable() if adaptive else None,
        # each sample's worst case, reserved before it launches
        per_sample=worst_case(
            "o4-mini", provider="openai", max_output_tokens=MAX_TOKENS, input_tokens=200
        ),
        name="self_consistency adaptive" if adaptive else "self_consistency fixed",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default="tcc-traces.jsonl")
    parser.add_argument("--usd", default="1.00", help="the whole evaluation's budget in USD")
    parser.add_argument("--n", type=int, default=16, help="samples per question (fixed recipe)")
    args = parser.parse_args(argv)

    handle = tcc_plugin.configure("jsonl", path=args.traces, metrics=False)
    rows = []
    with budget(usd=args.usd, name="eval") as spent:
        for q, truth, p_right in QUESTIONS:
            fixed = solve(q, truth, p_right, args.n, adaptive=False)
            adaptive = solve(q, truth, p_right, args.n, adaptive=True)
            rows.append((q, truth, fixed, adaptive))
    handle.force_flush()
    handle.shutdown()

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tcc-plugin: self-consistency, fixed N={args.n} vs adaptive")
    for column in ("question", "truth", "fixed", "adaptive", "stopped by"):
        table.add_column(column)
    for q, truth, fixed, adaptive in rows:
        table.add_row(
            q[:38] + "...",
            truth,
            f"{fixed.answer} ({fixed.launched} samples)",
            f"{adaptive.answer} ({adaptive.launched} samples)",
            adaptive.stop_rule or adaptive.stop_reason,
        )
    console = Console(width=140)
    console.print(table)

    def total(pick: int) -> tuple[int, int, Decimal]:
        results = [row[pick] for row in rows]
        right = sum(r.answer == row[1] for r, row in zip(results, rows, strict=True))
        return (
            sum(r.launched for r in results),
            right,
            sum((r.spent.usd for r in results), Decimal(0)),
        )

    (f_samples, f_right, f_usd), (a_samples, a_right, a_usd) = total(2), total(3)
    console.print(f"fixed:    {f_samples} samples, {f_right}/{len(rows)} right, ${f_usd:.4f}")
    console.print(f"adaptive: {a_samples} samples, {a_right}/{len(rows)} right, ${a_usd:.4f}")
    console.print(f"samples saved: {f_samples / a_samples:.1f}x")
    console.print(f"budget spent: ${spent.spent.usd:.4f} of ${args.usd}")
    groups = [s for s in read_spans(args.traces) if s["name"].startswith("self_consistency")]
    console.print(f"traces: {len(groups)} sampling groups in {args.traces}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
