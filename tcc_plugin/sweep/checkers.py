"""Checkers: is a reply a correct answer to a question? A score in [0, 1].

``exact`` (normalised text equality), ``numeric`` (the number the reply ends on, read by
:func:`~tcc_plugin.sampling.math_answer` and compared exactly after normalisation),
``code`` (the question's ``tests`` run in the sandboxed code verifier), ``judge`` (an LLM
judge you provide), or a function ``(reply, question) -> float | bool``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tcc_plugin.sampling.code_verifier import code_verifier, extract_code
from tcc_plugin.sampling.extract import Extractor, math_answer, normalize, text_of, whole
from tcc_plugin.sampling.result import Candidate, Verdict
from tcc_plugin.sampling.verifiers import exact_answer, llm_judge
from tcc_plugin.sweep.evalset import Question

__all__ = ["CHECKERS", "Check", "Checker", "CheckerLike", "as_checker"]


@dataclass(frozen=True, slots=True)
class Check:
    """A checked reply: its ``score`` (correct when >= 1), the ``answer`` read from it."""

    score: float
    answer: Any

    @property
    def correct(self) -> bool:
        return self.score >= 1.0


def _candidate(value: Any) -> Candidate[Any]:
    return Candidate(index=0, status="ok", value=value, text=text_of(value))


class Checker:
    """Scores one reply against one question. ``extract`` reads the answer a vote
    compares (self-consistency); ``needs_tests`` says the questions must have tests."""

    name = "checker"
    needs_tests = False

    def extractor(self) -> Extractor:
        return math_answer()

    def check(self, reply: Any, question: Question) -> Check:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class _Exact(Checker):
    name = "exact"

    def extractor(self) -> Extractor:
        return whole()

    def check(self, reply: Any, question: Question) -> Check:
        text = text_of(reply) or ""
        got = normalize(text.strip())
        return Check(float(got is not None and got == normalize(str(question.answer))), got)


class _Numeric(Checker):
    name = "numeric"

    def check(self, reply: Any, question: Question) -> Check:
        verdict = exact_answer(question.answer).verify(_candidate(reply))
        return Check(verdict.score, verdict.details.get("answer"))


class _Code(Checker):
    name = "code"
    needs_tests = True

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def extractor(self) -> Extractor:
        return whole()

    def check(self, reply: Any, question: Question) -> Check:
        verdict = code_verifier(question.tests, timeout=self.timeout).verify(_candidate(reply))
        return Check(verdict.score, extract_code(reply))


class _Judge(Checker):
    name = "judge"

    def __init__(self, judge: Callable[[str], Any]) -> None:
        self.judge = judge

    def check(self, reply: Any, question: Question) -> Check:
        verifier = llm_judge(self.judge, question=question.question)
        verdict: Verdict = verifier.verify(_candidate(reply))
        return Check(verdict.score, text_of(reply))


class _Function(Checker):
    def __init__(self, fn: Callable[[Any, Question], float | bool]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__qualname__", "function")

    def check(self, reply: Any, question: Question) -> Check:
        score = self.fn(reply, question)
        if inspect.isawaitable(score):
            raise TypeError(f"checker {self.name} returned an awaitable: give a sync function")
        return Check(float(score), text_of(reply))


CHECKERS = ("exact", "numeric", "code", "judge")

CheckerLike = str | Checker | Callable[[Any, Question], "float | bool"]


def as_checker(checker: CheckerLike, *, judge: Callable[[str], Any] | None = None) -> Checker:
    """A :class:`Checker` from a name in :data:`CHECKERS`, a Checker, or a function
    ``(reply, question) -> score``. ``judge`` (a function sending a prompt to a model)
    is required for ``"judge"``. Unknown names raise ``ValueError``."""
    if isinstance(checker, Checker):
        return checker
    if isinstance(checker, str):
        if checker == "exact":
            return _Exact()
        if checker == "numeric":
            return _Numeric()
        if checker == "code":
            return _Code()
        if checker == "judge":
            if judge is None:
                raise ValueError("checker 'judge' needs judge=<a function that asks a model>")
            return _Judge(judge)
        raise ValueError(f"unknown checker {checker!r}; choose from {', '.join(CHECKERS)}")
    if callable(checker):
        return _Function(checker)
    raise TypeError(f"a checker is a name, a Checker or a function, not {type(checker).__name__}")
