"""Acceptance rules for cascades: whether to trust a route's answer or escalate.

Rules combine like stop rules: ``rule_a & rule_b`` accepts when both do,
``rule_a | rule_b`` when either does. A plain function ``answer -> bool | float``
works too (a float is a confidence accepted at 0.5 and above).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from tcc_plugin.sampling._stats import beta_leader_probability
from tcc_plugin.sampling.result import Candidate, SamplingResult

__all__ = [
    "AcceptRule",
    "Judgement",
    "accept_agreement",
    "accept_all",
    "accept_any",
    "accept_logprob",
    "accept_score",
    "accept_when",
    "as_accept_rule",
]


@dataclass(frozen=True, slots=True)
class Judgement:
    """An acceptance rule's verdict on one answer."""

    accepted: bool
    confidence: float | None = None
    detail: str = ""


class AcceptRule(ABC):
    """Judges a route's answer. :meth:`ajudge` runs :meth:`judge` in a worker thread
    unless overridden."""

    @abstractmethod
    def judge(self, answer: Any) -> Judgement:
        """Whether to accept ``answer``."""

    async def ajudge(self, answer: Any) -> Judgement:
        return await asyncio.to_thread(self.judge, answer)

    def __and__(self, other: AcceptLike) -> AcceptRule:
        return accept_all(self, other)

    def __rand__(self, other: AcceptLike) -> AcceptRule:
        return accept_all(other, self)

    def __or__(self, other: AcceptLike) -> AcceptRule:
        return accept_any(self, other)

    def __ror__(self, other: AcceptLike) -> AcceptRule:
        return accept_any(other, self)


AcceptLike = AcceptRule | Callable[[Any], Any]


def _judgement(value: Any, name: str) -> Judgement:
    if isinstance(value, Judgement):
        return value
    if isinstance(value, bool):
        return Judgement(value, 1.0 if value else 0.0, name)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return Judgement(value >= 0.5, float(value), name)
    raise TypeError(
        f"{name} returned {type(value).__qualname__}; expected bool, float or Judgement"
    )


class accept_when(AcceptRule):
    """Accept when ``fn(answer)`` says so (``bool``, a confidence, or a Judgement)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "accept_when")

    def judge(self, answer: Any) -> Judgement:
        value = self.fn(answer)
        if inspect.isawaitable(value):
            close = getattr(value, "close", None)
            if close is not None:
                close()
            raise TypeError(f"acceptance function {self.name} is async: use the async cascade")
        return _judgement(value, self.name)

    async def ajudge(self, answer: Any) -> Judgement:
        value = self.fn(answer)
        if inspect.isawaitable(value):
            value = await value
        return _judgement(value, self.name)


def as_accept_rule(rule: AcceptLike) -> AcceptRule:
    if isinstance(rule, AcceptRule):
        return rule
    if callable(rule):
        return accept_when(rule)
    raise TypeError(
        f"an acceptance rule is an AcceptRule or a function; got {type(rule).__qualname__}"
    )


class _Combined(AcceptRule):
    """Rules judged together; nested combinations of the same kind flatten. ``every``:
    all must accept (confidence: the lowest), else any (confidence: the highest)."""

    every: ClassVar[bool]

    def __init__(self, *rules: AcceptLike) -> None:
        flat: list[AcceptRule] = []
        for rule in map(as_accept_rule, rules):
            flat.extend(rule.rules if isinstance(rule, type(self)) else (rule,))
        if not flat:
            raise ValueError(f"{type(self).__name__} needs at least one rule")
        self.rules: tuple[AcceptRule, ...] = tuple(flat)

    def judge(self, answer: Any) -> Judgement:
        return self._combine([rule.judge(answer) for rule in self.rules])

    async def ajudge(self, answer: Any) -> Judgement:
        return self._combine([await rule.ajudge(answer) for rule in self.rules])

    def _combine(self, verdicts: list[Judgement]) -> Judgement:
        known = [v.confidence for v in verdicts if v.confidence is not None]
        flags = [v.accepted for v in verdicts]
        return Judgement(
            all(flags) if self.every else any(flags),
            (min(known) if self.every else max(known)) if known else None,
            (" & " if self.every else " | ").join(v.detail for v in verdicts if v.detail),
        )


class accept_all(_Combined):
    """Accept when every rule does (confidence: the lowest)."""

    every = True


class accept_any(_Combined):
    """Accept when any rule does (confidence: the highest)."""

    every = False


class accept_agreement(AcceptRule):
    """Accept a :func:`~tcc_plugin.self_consistency` result whose samples agree.

    With ``min_share`` the leader's share of the completed samples must reach it; with
    ``confidence`` the Beta posterior that the leader beats the runner-up
    (Adaptive-Consistency's rule, as :class:`~tcc_plugin.sampling.stop_confident` uses)
    must. ``min_votes`` guards against accepting a lone sample."""

    def __init__(
        self,
        min_share: float | None = 0.7,
        *,
        confidence: float | None = None,
        min_votes: int = 2,
    ) -> None:
        if min_share is None and confidence is None:
            raise ValueError("accept_agreement needs min_share or confidence")
        for value in (min_share, confidence):
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError("min_share and confidence are in (0, 1]")
        if min_votes < 1:
            raise ValueError("min_votes must be >= 1")
        self.min_share = min_share
        self.confidence = confidence
        self.min_votes = min_votes

    def judge(self, answer: Any) -> Judgement:
        if not isinstance(answer, SamplingResult):
            raise TypeError(
                "accept_agreement judges a self_consistency result (SamplingResult); got "
                f"{type(answer).__qualname__} — route through self_consistency, or use "
                "accept_score / accept_when"
            )
        ranking = sorted(answer.counts.values(), reverse=True)
        total = sum(ranking)
        leader = ranking[0] if ranking else 0
        runner_up = ranking[1] if len(ranking) > 1 else 0
        share = leader / total if total else 0.0
        posterior = beta_leader_probability(leader, runner_up)
        accepted = leader >= self.min_votes
        if self.min_share is not None:
            accepted = accepted and share >= self.min_share
        if self.confidence is not None:
            accepted = accepted and posterior >= self.confidence
        detail = f"{leader} of {total} samples agree"
        return Judgement(accepted, posterior if self.confidence is not None else share, detail)


class accept_score(AcceptRule):
    """Accept when ``verifier(answer)`` scores at least ``threshold``.

    ``verifier`` is a function ``answer -> float | bool`` or a sampling
    :class:`~tcc_plugin.sampling.Verifier` (unit tests, exact answer, LLM judge), which
    is given the answer as a candidate."""

    def __init__(self, verifier: Any, threshold: float = 1.0) -> None:
        if not callable(verifier) and not hasattr(verifier, "verify"):
            raise TypeError("accept_score needs a verifier (a function or a Verifier)")
        self.verifier = verifier
        self.threshold = threshold

    def _candidate(self, answer: Any) -> Candidate[Any]:
        from tcc_plugin.sampling.extract import text_of

        text = answer if isinstance(answer, str) else text_of(answer)
        return Candidate(index=0, status="ok", value=answer, text=text, answer=text)

    def _result(self, value: Any) -> Judgement:
        score = getattr(value, "score", value)
        if score is None:
            return Judgement(False, None, "verifier gave no score")
        score = float(score)
        return Judgement(score >= self.threshold, score, f"score {score:.3g}")

    def judge(self, answer: Any) -> Judgement:
        if hasattr(self.verifier, "verify"):
            return self._result(self.verifier.verify(self._candidate(answer)))
        return self._result(self.verifier(answer))

    async def ajudge(self, answer: Any) -> Judgement:
        if hasattr(self.verifier, "averify"):
            return self._result(await self.verifier.averify(self._candidate(answer)))
        value = self.verifier(answer)
        if inspect.isawaitable(value):
            value = await value
        return self._result(value)


class accept_logprob(AcceptRule):
    """Accept when the answer's tokens were likely: the geometric-mean token probability
    (``exp`` of the mean log-probability) reaches ``threshold``.

    Reads OpenAI-style log-probabilities from the response (``choices[0].logprobs.
    content[*].logprob`` of Chat Completions, ``output[*].content[*].logprobs`` of the
    Responses API), as objects or JSON; request them with ``logprobs=True``. A response
    without them is not accepted (the detail says so)."""

    def __init__(self, threshold: float = 0.8) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold is a probability in (0, 1]")
        self.threshold = threshold

    def judge(self, answer: Any) -> Judgement:
        values = logprobs_of(answer)
        if not values:
            return Judgement(False, None, "no token log-probabilities in the response")
        mean = math.exp(sum(values) / len(values))
        return Judgement(mean >= self.threshold, mean, f"mean token probability {mean:.3f}")

    async def ajudge(self, answer: Any) -> Judgement:
        return self.judge(answer)


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def logprobs_of(response: Any) -> list[float]:
    """The token log-probabilities an OpenAI-style response carries (empty: none)."""
    values: list[float] = []

    def add(items: Any) -> None:
        for item in items or ():
            value = _get(item, "logprob")
            if isinstance(value, (int, float)) and math.isfinite(value):
                values.append(float(value))

    for choice in _get(response, "choices") or ():
        add(_get(_get(choice, "logprobs"), "content"))
    for item in _get(response, "output") or ():
        for part in _get(item, "content") or ():
            add(_get(part, "logprobs"))
    return values
