"""Helpers for the sampling tests: deterministic candidate sources and response bodies."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from tcc_plugin.sampling import current_sample


def chat_body(
    content: str, prompt: int = 10, completion: int = 20, reasoning: int = 0
) -> dict[str, Any]:
    """An OpenAI chat completion JSON body."""
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "o3-2025-04-16",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def index() -> int:
    """The index of the sample running here."""
    ctx = current_sample()
    assert ctx is not None, "not inside a sampling group"
    return ctx.index


class Scripted:
    """Sample i answers ``answers[i]``: deterministic whatever the thread scheduling."""

    def __init__(self, answers: Sequence[str | None]) -> None:
        self.answers = list(answers)
        self.calls: list[int] = []

    def __call__(self) -> str:
        i = index()
        self.calls.append(i)
        answer = self.answers[i]
        return (
            "I could not solve it."
            if answer is None
            else f"Reasoning... so the answer is {answer}."
        )


def seeded_answers(seed: int, n: int, p_correct: float, correct: str = "42") -> list[str]:
    """``n`` answers: ``correct`` with probability ``p_correct``, else one of a few
    distractors (seeded)."""
    rng = random.Random(seed)
    wrong = ["41", "43", "24", "7"]
    return [correct if rng.random() < p_correct else rng.choice(wrong) for _ in range(n)]
