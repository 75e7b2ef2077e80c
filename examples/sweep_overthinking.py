"""Find the sweet spot of thinking on an eval set, then use it in production calls.

Runs offline: the "model" is a stand-in for a reasoning model, an ``@llm_call`` function
returning OpenAI-shaped completions (billed as gpt-4o-mini) that gets harder questions
right with more thinking, until too much thinking makes it second-guess itself. Swap in
a real client call (or ``--target openai:o4-mini`` on the command line) to measure yours.

    python examples/sweep_overthinking.py [--results FILE] [--policy FILE]
"""

from __future__ import annotations

import argparse
from typing import Any

import tcc_plugin
from tcc_plugin.sweep import arithmetic, load_policy, policy_from_analysis

QUESTIONS = arithmetic(per_level=6)
LEVEL = {q.question: int(q.meta["level"]) for q in QUESTIONS}
ANSWER = {q.question: q.answer for q in QUESTIONS}


@tcc_plugin.llm_call(model="gpt-4o-mini", provider="openai")
def ask(question: str, *, thinking_budget: int, seed: int) -> dict[str, Any]:
    """Right when the budget covers the question's level, wrong past 2048 tokens on
    every other question (overthinking); OpenAI's response shape, with usage."""
    level = LEVEL[question]
    right = thinking_budget >= 128 * level and not (thinking_budget > 2048 and seed % 2 == 0)
    answer = ANSWER[question] if right else ANSWER[question] + 1
    used = min(thinking_budget, 160 * level)
    return {
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"Final Answer: {answer}"},
            }
        ],
        "usage": {
            "prompt_tokens": 60,
            "completion_tokens": used + 12,
            "completion_tokens_details": {"reasoning_tokens": used},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", default="sweep-example.jsonl")
    parser.add_argument("--policy", default="sweep-policy.json")
    args = parser.parse_args()

    result = tcc_plugin.sweep(
        QUESTIONS,
        ask,
        budgets=[128, 256, 512, 1024, 4096],
        seeds=2,
        results=args.results,
        usd=1,
        concurrency=4,
    )
    analysis = result.analysis
    assert analysis is not None
    for cell in sorted(analysis.cells, key=lambda c: c.output_tokens):
        flag = " OVERTHINKING" if cell.overthinking else ""
        print(
            f"{cell.cell_id:>14}: accuracy {cell.accuracy:.0%} "
            f"[{cell.ci_low:.0%}, {cell.ci_high:.0%}], ${cell.cost_usd:.6f}/question{flag}"
        )
    print(f"sweet spot: {analysis.sweet_spot}; overthinking: {', '.join(analysis.overthinking)}")
    print(
        f"answered now: {result.answered}, reused: {result.reused}, "
        f"spent: ${result.spent.usd:.6f} in {result.spent.calls} calls"
    )

    policy_from_analysis(analysis, result.rows).write(args.policy)
    policy = load_policy(args.policy)
    question = QUESTIONS.questions[-1]
    with policy.apply() as per_call:  # the recommended budget, capped per call
        reply = ask(question.question, thinking_budget=policy.thinking_budget, seed=1)
    assert per_call is not None
    print(
        f"policy {policy.cell.id}: {reply['choices'][0]['message']['content']} "
        f"(expected {question.answer}); per-call spend {per_call.spent.calls} call, "
        f"${per_call.spent.usd:.6f} of ${per_call.limits['usd']}"
    )


if __name__ == "__main__":
    main()
