"""Eval sets: questions with verified answers, from a JSON-lines file or any iterable.

A line is ``{"id": ..., "question": ..., "answer": ...}`` plus optional ``tests`` (code
tasks: Python snippets run against the candidate's code) and ``meta``. A malformed line
is reported with its line number, then skipped or fatal per ``on_bad_line``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["BadEvalLine", "EvalSet", "OnBadLine", "Question", "as_evalset", "load_evalset"]

OnBadLine = Literal["skip", "fail"]


class BadEvalLine(ValueError):
    """A line of an eval set that is not a valid question; says where and why."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Question:
    """One eval question: its ``id``, text, expected ``answer`` and, for code tasks,
    the ``tests`` (Python snippets) a correct solution passes."""

    id: str
    question: str
    answer: Any = None
    tests: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvalSet:
    """Questions in order, the set's ``name``, and the lines skipped as malformed."""

    name: str
    questions: tuple[Question, ...]
    skipped: tuple[BadEvalLine, ...] = ()

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self) -> Any:
        return iter(self.questions)

    def head(self, limit: int | None) -> EvalSet:
        """The first ``limit`` questions (all when ``None``)."""
        if limit is None:
            return self
        return EvalSet(self.name, self.questions[:limit], self.skipped)


def _question(raw: Any, where: str) -> Question:
    """``raw`` (a mapping or a :class:`Question`) as a Question, else ``ValueError``."""
    if isinstance(raw, Question):
        return raw
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in ("id", "question") if k not in raw]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    qid, text = raw["id"], raw["question"]
    if not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == "":
        raise ValueError(f"'id' must be a non-empty string or an int, got {qid!r}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'question' must be a non-empty string")
    tests = raw.get("tests") or ()
    if isinstance(tests, str):
        tests = (tests,)
    if not isinstance(tests, (list, tuple)) or not all(isinstance(t, str) for t in tests):
        raise ValueError("'tests' must be a string or a list of strings")
    if "answer" not in raw and not tests:
        raise ValueError("needs an 'answer' (or 'tests' for a code task)")
    meta = raw.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise ValueError("'meta' must be an object")
    return Question(str(qid), text, raw.get("answer"), tuple(tests), dict(meta))


def _check_unique(questions: list[Question], source: str) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise ValueError(f"{source}: duplicate question id {q.id!r}")
        seen.add(q.id)


def load_evalset(
    path: str | os.PathLike[str], *, on_bad_line: OnBadLine = "fail", name: str | None = None
) -> EvalSet:
    """Read a JSON-lines eval set. Blank lines are ignored. A malformed line raises
    :class:`BadEvalLine` (``on_bad_line="fail"``) or is skipped and listed in
    :attr:`EvalSet.skipped` (``"skip"``). Duplicate ids are always an error."""
    if on_bad_line not in ("skip", "fail"):
        raise ValueError(f"on_bad_line must be 'skip' or 'fail', got {on_bad_line!r}")
    source = str(path)
    questions: list[Question] = []
    skipped: list[BadEvalLine] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                questions.append(_question(json.loads(line), source))
            except ValueError as exc:  # JSONDecodeError is a ValueError
                bad = BadEvalLine(source, number, str(exc))
                if on_bad_line == "fail":
                    raise bad from None
                skipped.append(bad)
    _check_unique(questions, source)
    if not questions:
        raise ValueError(f"{source}: no valid questions")
    return EvalSet(name or Path(path).stem, tuple(questions), tuple(skipped))


def as_evalset(source: EvalSet | Iterable[Any], *, name: str = "evalset") -> EvalSet:
    """An :class:`EvalSet` from an eval set, or an iterable of :class:`Question` or
    mappings with the file's fields (a bad item raises, naming its index)."""
    if isinstance(source, EvalSet):
        return source
    questions: list[Question] = []
    for index, raw in enumerate(source):
        try:
            questions.append(_question(raw, name))
        except ValueError as exc:
            raise ValueError(f"{name}: item {index}: {exc}") from None
    _check_unique(questions, name)
    if not questions:
        raise ValueError(f"{name}: no questions")
    return EvalSet(name, tuple(questions))
