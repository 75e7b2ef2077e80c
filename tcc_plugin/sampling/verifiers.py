"""Verifiers: score a candidate.

A verifier takes a :class:`~tcc_plugin.sampling.Candidate` (what the sample returned,
its text and extracted answer) and returns a :class:`~tcc_plugin.sampling.Verdict`
(a score, higher is better; the built-in verifiers score in [0, 1]). A plain function
``candidate -> float | bool | Verdict`` (sync or async) works wherever a verifier does.

Verifiers compose like tenacity's strategies: ``a & b`` scores the minimum (both must
pass; evaluation stops at the first score <= 0), ``a | b`` the maximum (either may
pass; evaluation stops at the first score >= 1); nested combinations flatten.
:func:`mean_of` averages with weights.

Verifiers run inside the group: an LLM judge's calls are instrumented as any other
call, are children of the group's span and are charged to the same budgets.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any, cast

from tcc_plugin.sampling.extract import (
    Extractor,
    ExtractorLike,
    as_extractor,
    math_answer,
    normalize,
    normalize_number,
    text_of,
)
from tcc_plugin.sampling.result import Candidate, Verdict

__all__ = [
    "JUDGE_TEMPLATE",
    "Verifier",
    "VerifierLike",
    "all_of",
    "any_of",
    "as_verdict",
    "as_verifier",
    "exact_answer",
    "llm_judge",
    "mean_of",
    "parse_judgement",
]


def as_verdict(value: Verdict | float | bool) -> Verdict:
    """A verifier's return value as a :class:`Verdict` (``True`` -> 1.0, ``False`` -> 0.0)."""
    if isinstance(value, Verdict):
        return value
    if isinstance(value, (bool, int, float, Decimal, Fraction)):
        score = float(value)
        if math.isnan(score):
            raise ValueError("a verifier returned NaN")
        return Verdict(score)
    raise TypeError(
        f"a verifier must return a float, a bool or a Verdict, not {type(value).__name__}"
    )


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


class Verifier(ABC):
    """Scores a candidate. Subclasses implement :meth:`verify`; :meth:`averify` (the
    async twin) runs :meth:`verify` in a worker thread unless overridden."""

    @abstractmethod
    def verify(self, candidate: Candidate[Any]) -> Verdict:
        """Judge ``candidate``."""

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        """Judge ``candidate`` without blocking the event loop."""
        return await asyncio.to_thread(self.verify, candidate)

    def __and__(self, other: VerifierLike) -> Verifier:
        return all_of(self, other)

    def __rand__(self, other: VerifierLike) -> Verifier:
        return all_of(other, self)

    def __or__(self, other: VerifierLike) -> Verifier:
        return any_of(self, other)

    def __ror__(self, other: VerifierLike) -> Verifier:
        return any_of(other, self)


VerifierLike = Verifier | Callable[[Candidate[Any]], Any]


class _Function(Verifier):
    """A plain scoring function (sync or async) as a verifier."""

    def __init__(self, fn: Callable[[Candidate[Any]], Any]) -> None:
        self.fn = fn
        self.is_async = _is_async(fn)

    def verify(self, candidate: Candidate[Any]) -> Verdict:
        if self.is_async:
            raise TypeError(
                f"verifier {self!r} is async: use it with abest_of_n / aself_consistency"
            )
        result = self.fn(candidate)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"verifier {self!r} returned an awaitable: use it with abest_of_n / "
                "aself_consistency"
            )
        return as_verdict(result)

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        if self.is_async:
            return as_verdict(await self.fn(candidate))
        # A sync scorer (e.g. a reward model) runs in a thread; one that returns an
        # awaitable (a lambda around an async call) is awaited here.
        result = await asyncio.to_thread(self.fn, candidate)
        if inspect.isawaitable(result):
            result = await result
        return as_verdict(result)

    def __repr__(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


def as_verifier(verifier: VerifierLike) -> Verifier:
    """``verifier`` as a :class:`Verifier` (a plain function is wrapped)."""
    return verifier if isinstance(verifier, Verifier) else _Function(verifier)


class _Combined(Verifier):
    """Scores with several verifiers in order, stopping once the result is settled."""

    name = ""

    def __init__(self, *verifiers: VerifierLike) -> None:
        flat: list[Verifier] = []
        for v in map(as_verifier, verifiers):
            same = isinstance(v, _Combined) and type(v) is type(self)
            flat.extend(v.verifiers if isinstance(v, _Combined) and same else (v,))
        if not flat:
            raise ValueError(f"{type(self).__name__} needs at least one verifier")
        self.verifiers: tuple[Verifier, ...] = tuple(flat)

    @abstractmethod
    def _settled(self, score: float) -> bool: ...

    @abstractmethod
    def _combine(self, scores: list[float]) -> float: ...

    def _verdict(self, verdicts: list[Verdict]) -> Verdict:
        return Verdict(
            self._combine([v.score for v in verdicts]),
            {"verdicts": tuple(verdicts), "evaluated": len(verdicts)},
        )

    def verify(self, candidate: Candidate[Any]) -> Verdict:
        verdicts: list[Verdict] = []
        for verifier in self.verifiers:
            verdicts.append(verifier.verify(candidate))
            if self._settled(verdicts[-1].score):
                break
        return self._verdict(verdicts)

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        verdicts: list[Verdict] = []
        for verifier in self.verifiers:
            verdicts.append(await verifier.averify(candidate))
            if self._settled(verdicts[-1].score):
                break
        return self._verdict(verdicts)

    def __repr__(self) -> str:
        return "(" + f" {self.name} ".join(repr(v) for v in self.verifiers) + ")"


class all_of(_Combined):
    """The minimum score: every verifier must pass. Stops at the first score <= 0
    (later verifiers, e.g. a costly LLM judge, are then skipped)."""

    name = "&"

    def _settled(self, score: float) -> bool:
        return score <= 0.0

    def _combine(self, scores: list[float]) -> float:
        return min(scores)


class any_of(_Combined):
    """The maximum score: any verifier may pass. Stops at the first score >= 1."""

    name = "|"

    def _settled(self, score: float) -> bool:
        return score >= 1.0

    def _combine(self, scores: list[float]) -> float:
        return max(scores)


class mean_of(Verifier):
    """The weighted mean of every verifier's score (all are evaluated)."""

    def __init__(self, *verifiers: VerifierLike, weights: Sequence[float] | None = None) -> None:
        if not verifiers:
            raise ValueError("mean_of needs at least one verifier")
        self.verifiers = tuple(map(as_verifier, verifiers))
        self.weights = tuple(weights) if weights is not None else (1.0,) * len(self.verifiers)
        if len(self.weights) != len(self.verifiers) or not sum(self.weights) > 0:
            raise ValueError("weights must match the verifiers and sum to more than 0")

    def _verdict(self, verdicts: Sequence[Verdict]) -> Verdict:
        total = math.fsum(w * v.score for w, v in zip(self.weights, verdicts, strict=True))
        return Verdict(total / math.fsum(self.weights), {"verdicts": tuple(verdicts)})

    def verify(self, candidate: Candidate[Any]) -> Verdict:
        return self._verdict([v.verify(candidate) for v in self.verifiers])

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        verdicts = await asyncio.gather(*(v.averify(candidate) for v in self.verifiers))
        return self._verdict(verdicts)

    def __repr__(self) -> str:
        return f"mean_of({', '.join(repr(v) for v in self.verifiers)})"


class exact_answer(Verifier):
    """1.0 when the candidate's answer equals ``expected`` (both normalised: ``"1,000"``
    matches ``1000.0``), else 0.0. The answer is read with ``extract`` when given,
    else the group's extracted answer, else :func:`~tcc_plugin.sampling.math_answer`.
    ``expected`` may be a collection of accepted answers."""

    def __init__(
        self,
        expected: str | int | float | Decimal | Fraction | Sequence[str | int | float],
        *,
        extract: ExtractorLike | None = None,
    ) -> None:
        options = (
            list(expected)
            if isinstance(expected, Sequence) and not isinstance(expected, str)
            else [expected]
        )
        accepted: set[str] = set()
        for option in options:
            key = normalize(option) if isinstance(option, str) else normalize_number(str(option))
            if key is None:
                raise ValueError(f"expected answer {option!r} normalises to nothing")
            accepted.add(key)
        self.accepted = frozenset(accepted)
        self.extract: Extractor | None = None if extract is None else as_extractor(extract)
        self._fallback = math_answer()

    def answer_of(self, candidate: Candidate[Any]) -> str | None:
        if self.extract is not None:
            return self.extract(candidate.value)
        if candidate.answer is not None:
            return candidate.answer
        return self._fallback(candidate.value)

    def verify(self, candidate: Candidate[Any]) -> Verdict:
        answer = self.answer_of(candidate)
        return Verdict(1.0 if answer in self.accepted else 0.0, {"answer": answer})

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        return self.verify(candidate)  # cheap: no thread

    def __repr__(self) -> str:
        return f"exact_answer({sorted(self.accepted)!r})"


JUDGE_TEMPLATE = (
    "You are grading a candidate answer to a question.\n\n"
    "Question:\n{question}\n\n"
    "Candidate answer:\n{answer}\n\n"
    "Judge whether the candidate answer is correct and complete. Explain briefly, then "
    "end with a last line of the form 'Score: N' where N is an integer from 0 (wrong) "
    "to 10 (certainly correct)."
)

_SCORE = re.compile(
    r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?)|out\s+of\s+(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_RATIO = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_YES_NO = re.compile(r"\b(yes|no|correct|incorrect|pass|fail|true|false)\b", re.IGNORECASE)
_POSITIVE = {"yes", "correct", "pass", "true"}


def parse_judgement(text: str, scale: float = 10.0) -> float:
    """A judge's reply as a score in [0, 1]: the last ``Score: N`` (``N/M`` or
    ``N out of M`` divides by M, else by ``scale``), else the last ``N/M``, else the
    last yes/no, correct/incorrect, pass/fail. Raises :class:`ValueError` otherwise."""
    found = _SCORE.findall(text)
    if found:
        value, over, out_of = found[-1]
        denominator = float(over or out_of or scale)
        return _unit(float(value) / denominator if denominator else 0.0)
    ratios = _RATIO.findall(text)
    if ratios:
        value, over = ratios[-1]
        return _unit(float(value) / float(over) if float(over) else 0.0)
    words = _YES_NO.findall(text)
    if words:
        return 1.0 if words[-1].lower() in _POSITIVE else 0.0
    raise ValueError(f"cannot read a score from the judge's reply: {text[-200:]!r}")


def _unit(score: float) -> float:
    return min(1.0, max(0.0, score))


class llm_judge(Verifier):
    """Scores a candidate by asking a model.

    ``judge`` is a function that sends a prompt and returns the reply (any shape
    :func:`~tcc_plugin.sampling.text_of` reads: a string, a provider response...),
    usually an ``@llm_call`` function or an instrumented client call, sync or async. Its
    calls are instrumented like any other: children of the group's span, charged to
    the same budgets. The prompt is ``template`` formatted with ``question`` and the
    candidate's ``answer`` text; ``parse`` turns the reply into a score
    (:func:`parse_judgement` by default).
    """

    def __init__(
        self,
        judge: Callable[[str], Any],
        *,
        question: str = "",
        template: str = JUDGE_TEMPLATE,
        parse: Callable[[str], float] = parse_judgement,
    ) -> None:
        self.judge = judge
        self.question = question
        self.template = template
        self.parse = parse
        self.is_async = _is_async(judge)

    def prompt(self, candidate: Candidate[Any]) -> str:
        answer = candidate.text if candidate.text is not None else text_of(candidate.value)
        return self.template.format(question=self.question, answer=answer or "")

    def _verdict(self, reply: Any) -> Verdict:
        text = text_of(reply)
        if text is None:
            raise ValueError(f"the judge's reply has no text: {type(reply).__name__}")
        return Verdict(_unit(float(self.parse(text))), {"reply": text})

    def verify(self, candidate: Candidate[Any]) -> Verdict:
        if self.is_async:
            raise TypeError("this llm_judge is async: use it with abest_of_n / aself_consistency")
        reply = self.judge(self.prompt(candidate))
        if inspect.isawaitable(reply):
            if inspect.iscoroutine(reply):
                reply.close()
            raise TypeError("the judge returned an awaitable: use abest_of_n / aself_consistency")
        return self._verdict(reply)

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        prompt = self.prompt(candidate)
        if self.is_async:
            reply = await cast(Callable[[str], Awaitable[Any]], self.judge)(prompt)
        else:
            reply = await asyncio.to_thread(self.judge, prompt)
            if inspect.isawaitable(reply):
                reply = await reply
        return self._verdict(reply)

    def __repr__(self) -> str:
        return f"llm_judge({getattr(self.judge, '__qualname__', self.judge)!r})"
