"""A deterministic model for sweeps: an ``@llm_call`` function whose correctness per
(question, thinking budget) is fixed in advance, billed like gpt-4o-mini."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import tcc_plugin
from tcc_plugin.sweep import Question

MODEL = "gpt-4o-mini"
INPUT_TOKENS = 50
ANSWER_TOKENS = 10
# gpt-4o-mini: $0.15 / $0.60 per million input / output tokens
PRICE_IN, PRICE_OUT = Decimal("0.15") / 10**6, Decimal("0.60") / 10**6


def cost(budget: int, calls: int = 1) -> float:
    """What one question costs at ``budget`` (``calls`` samples)."""
    return float((INPUT_TOKENS * PRICE_IN + (ANSWER_TOKENS + budget) * PRICE_OUT) * calls)


def questions(count: int) -> list[Question]:
    return [Question(f"q{i:03d}", f"What is {i} + 1?", i + 1) for i in range(count)]


def completion(text: str, budget: int) -> dict[str, Any]:
    """An OpenAI chat completion body with ``budget`` reasoning tokens."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": INPUT_TOKENS, "completion_tokens": ANSWER_TOKENS + budget,
                  "total_tokens": INPUT_TOKENS + ANSWER_TOKENS + budget,
                  "completion_tokens_details": {"reasoning_tokens": budget}},
    }  # fmt: skip


def model(correct: Callable[[int, int, int], bool], log: list[tuple[str, int, int]] | None = None):  # type: ignore[no-untyped-def]
    """``ask(question, *, thinking_budget, seed)``: right iff ``correct(i, budget, seed)``
    for question ``i``; every call appended to ``log``."""

    @tcc_plugin.llm_call(model=MODEL, provider="openai")
    def ask(question: str, *, thinking_budget: int, seed: int) -> dict[str, Any]:
        i = int(question.split()[2])
        if log is not None:
            log.append((question, thinking_budget, seed))
        answer = i + 1 if correct(i, thinking_budget, seed) else i + 2
        return completion(f"Let me think.\nFinal Answer: {answer}", thinking_budget)

    return ask
