"""Difficulty estimators: small strategy objects that read an input and say how hard it
is, from 0 (trivial) to 1 (as hard as it gets).

- :class:`heuristic_difficulty`: text features and user rules, no call;
- :class:`self_assessed`: one short call to a cheap model that rates the question
  (its cost is charged to the active budgets like any call);
- :class:`~tcc_plugin.routing.learned.LearnedDifficulty`: a classifier trained on
  ``tcc sweep`` results (see :mod:`tcc_plugin.routing.learned`).

Estimators are plain objects with ``estimate(input) -> float`` (and ``aestimate`` for
async); a plain function ``input -> float`` works too.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

__all__ = [
    "DifficultyEstimator",
    "EstimatorLike",
    "as_estimator",
    "heuristic_difficulty",
    "parse_difficulty",
    "self_assessed",
    "text_of_input",
]

_NUMBER: Final = re.compile(r"\d+(?:[.,]\d+)?")
_OPERATOR_CHARS: Final = "+*/=^%<>"
_OPERATOR_WORDS: Final = frozenset(
    {"times", "plus", "minus", "divided", "percent", "sum", "product", "twice", "half"}
)
_HARD_WORDS: Final = frozenset(
    {"prove", "proof", "derive", "integral", "optimise", "optimize", "algorithm", "why"}
    | {"complexity", "recursive", "probability", "expected", "theorem", "combinatorics"}
)
_STRIP: Final = ".,;:!?()[]{}\"'"


def text_of_input(value: Any) -> str:
    """The text of a routed input: a string, a mapping's ``question``/``input``/
    ``content``, or a chat message list's last user content."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("question", "input", "prompt", "content", "text"):
            if isinstance(value.get(key), str):
                return str(value[key])
        messages = value.get("messages")
        if isinstance(messages, Sequence):
            return text_of_input(list(messages))
    if isinstance(value, list) and value:
        last = value[-1]
        content = last.get("content") if isinstance(last, dict) else getattr(last, "content", None)
        if isinstance(content, str):
            return content
    return str(value)


class DifficultyEstimator(ABC):
    """How hard an input is, in [0, 1]. :meth:`aestimate` runs :meth:`estimate` in a
    worker thread unless overridden."""

    name: str = "estimator"

    @abstractmethod
    def estimate(self, value: Any) -> float:
        """The difficulty of ``value``."""

    async def aestimate(self, value: Any) -> float:
        return await asyncio.to_thread(self.estimate, value)

    def estimate_step(self, value: Any) -> Callable[[Any], float]:
        """A plan step function estimating ``value`` (for :func:`tcc_plugin.plans.drive`)."""
        return lambda _step: self.estimate(value)

    def aestimate_step(self, value: Any) -> Callable[[Any], Awaitable[float]]:
        """The async twin of :meth:`estimate_step`."""
        return lambda _step: self.aestimate(value)


EstimatorLike = DifficultyEstimator | Callable[[Any], float]


class _FunctionEstimator(DifficultyEstimator):
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "estimator")

    def estimate(self, value: Any) -> float:
        result = self.fn(value)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise TypeError(f"estimator {self.name} is async: route with arun()")
        return float(result)

    async def aestimate(self, value: Any) -> float:
        result = self.fn(value)
        if inspect.isawaitable(result):
            result = await result
        return float(result)


def as_estimator(estimator: EstimatorLike) -> DifficultyEstimator:
    """``estimator`` as a :class:`DifficultyEstimator` (wrapping a plain function)."""
    if isinstance(estimator, DifficultyEstimator):
        return estimator
    if callable(estimator):
        return _FunctionEstimator(estimator)
    raise TypeError(
        "a difficulty estimator is a DifficultyEstimator or a function input -> float; "
        f"got {type(estimator).__qualname__}"
    )


class heuristic_difficulty(DifficultyEstimator):
    """Difficulty from text features, no call: length, numbers, operators and words
    that signal multi-step work, squashed into [0, 1]; then ``rules`` in order, each a
    ``(predicate, difficulty)`` whose first match wins (e.g. ``(lambda q: "proof" in q,
    1.0)``).

    The weights are deliberately simple: ``words_for_hard`` words make a question
    half-way hard, ``numbers_for_hard`` numbers or operators another quarter each.
    Tune them (or train :class:`~tcc_plugin.routing.learned.LearnedDifficulty`) on your
    own questions."""

    name = "heuristic"

    def __init__(
        self,
        *,
        words_for_hard: int = 120,
        numbers_for_hard: int = 6,
        rules: Sequence[tuple[Callable[[str], bool], float]] = (),
    ) -> None:
        if words_for_hard < 1 or numbers_for_hard < 1:
            raise ValueError("words_for_hard and numbers_for_hard must be >= 1")
        for _, difficulty in rules:
            if not 0.0 <= difficulty <= 1.0:
                raise ValueError("a rule's difficulty is in [0, 1]")
        self.words_for_hard = words_for_hard
        self.numbers_for_hard = numbers_for_hard
        self.rules = tuple(rules)

    def estimate(self, value: Any) -> float:
        text = text_of_input(value)
        for predicate, difficulty in self.rules:
            if predicate(text):
                return difficulty
        words = [w.strip(_STRIP) for w in text.lower().split()]
        numbers = len(_NUMBER.findall(text))
        operators = sum(map(text.count, _OPERATOR_CHARS)) + sum(w in _OPERATOR_WORDS for w in words)
        hard = len(_HARD_WORDS.intersection(words))
        score = (
            0.5 * min(len(words) / self.words_for_hard, 1.0)
            + 0.25 * min(numbers / self.numbers_for_hard, 1.0)
            + 0.25 * min(operators / self.numbers_for_hard, 1.0)
            + 0.25 * min(hard, 2) / 2
        )
        return min(score, 1.0)


_RATING: Final = re.compile(r"(?<![\d.])(10|[0-9])(?:\s*/\s*10)?(?![\d.])")

ASSESS_PROMPT: Final = (
    "Rate how hard the following question is to answer correctly, from 0 (trivial, "
    "answerable at a glance) to 10 (needs long careful reasoning). Reply with the number "
    "only.\n\nQuestion: {question}"
)


def parse_difficulty(reply: Any) -> float:
    """A 0-10 rating in a model's reply, as a difficulty in [0, 1]; ``ValueError`` when
    the reply holds none."""
    from tcc_plugin.sampling.extract import text_of

    text = text_of(reply) if not isinstance(reply, str) else reply
    match = _RATING.search(text or "")
    if match is None:
        raise ValueError(f"no 0-10 difficulty rating in the reply {str(text)[:80]!r}")
    return int(match.group(1)) / 10


class self_assessed(DifficultyEstimator):
    """A cheap model rates the input: ``ask(prompt)`` makes one short call (an
    instrumented client call or an ``@llm_call`` function, so it is budgeted and traced
    under the routing span) and its 0-10 reply becomes the difficulty. Async ``ask``
    functions work with the async drivers."""

    name = "self_assessed"

    def __init__(
        self,
        ask: Callable[[str], Any] | Callable[[str], Awaitable[Any]],
        *,
        prompt: str = ASSESS_PROMPT,
    ) -> None:
        if "{question}" not in prompt:
            raise ValueError("the prompt must contain {question}")
        self.ask = ask
        self.prompt = prompt

    def estimate(self, value: Any) -> float:
        reply = self.ask(self.prompt.format(question=text_of_input(value)))
        if inspect.isawaitable(reply):
            close = getattr(reply, "close", None)
            if close is not None:
                close()
            raise TypeError("self_assessed(ask) with an async ask: route with arun()")
        return parse_difficulty(reply)

    async def aestimate(self, value: Any) -> float:
        reply = self.ask(self.prompt.format(question=text_of_input(value)))
        if inspect.isawaitable(reply):
            reply = await reply
        return parse_difficulty(reply)
