"""Eval sets: files with bad lines, iterables, and the built-in sets' verified answers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tcc_plugin.sampling import code_verifier
from tcc_plugin.sampling.result import Candidate
from tcc_plugin.sweep import BadEvalLine, arithmetic, as_evalset, builtin, code_tasks, load_evalset


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text(text)
    return path


BAD = (
    '{"id": "a", "question": "1+1?", "answer": 2}\n'
    "\n"
    '{"id": "b", "question": "2+2?"\n'  # line 3: not JSON
    '{"id": "c", "answer": 3}\n'  # line 4: no question
    '{"id": "d", "question": "f?", "tests": ["assert f() == 1"]}\n'
)


def test_a_bad_line_is_named_then_skipped_or_fatal(tmp_path: Path) -> None:
    path = _write(tmp_path, BAD)
    with pytest.raises(BadEvalLine, match=r"set.jsonl:3: ") as info:
        load_evalset(path)
    assert info.value.line == 3
    loaded = load_evalset(path, on_bad_line="skip")
    assert [q.id for q in loaded] == ["a", "d"]
    assert [(b.line, b.reason) for b in loaded.skipped][1] == (4, "missing field(s) question")
    assert loaded.questions[1].tests == ("assert f() == 1",)
    with pytest.raises(ValueError, match="on_bad_line"):
        load_evalset(path, on_bad_line="ignore")  # type: ignore[arg-type]


def test_duplicates_and_empty_sets_are_errors(tmp_path: Path) -> None:
    dup = '{"id": 1, "question": "a", "answer": 1}\n{"id": "1", "question": "b", "answer": 2}\n'
    with pytest.raises(ValueError, match="duplicate question id '1'"):
        load_evalset(_write(tmp_path, dup))
    with pytest.raises(ValueError, match="no valid questions"):
        load_evalset(_write(tmp_path, '{"id": 1}\n'), on_bad_line="skip")
    with pytest.raises(ValueError, match="item 1: 'question' must be"):
        as_evalset([{"id": 1, "question": "a", "answer": 1}, {"id": 2, "question": ""}])


def _solve(text: str) -> int:
    """Re-derive an arithmetic answer from the problem's words alone."""
    total = int(re.search(r"has (\d+)", text).group(1))  # type: ignore[union-attr]
    for sentence in text.split(". "):
        if m := re.search(r"finds (\d+) more|buys (\d+) more", sentence):
            total += int(m.group(1) or m.group(2))
        elif m := re.search(r"gives away (\d+)", sentence):
            total -= int(m.group(1))
        elif m := re.search(r"grows (\d+) times", sentence):
            total *= int(m.group(1))
        elif m := re.search(r"among (\d+) friends", sentence):
            assert total % int(m.group(1)) == 0
            total //= int(m.group(1))
    return total


def test_builtin_arithmetic_is_deterministic_graded_and_right() -> None:
    first, again = arithmetic(), builtin("arithmetic")
    assert first == again and len(first) == 40
    assert [q.meta["level"] for q in first].count(5) == 8
    for q in first:
        assert _solve(q.question) == q.answer, q
        assert q.question.count("Then") == q.meta["level"]
    with pytest.raises(ValueError, match="unknown built-in eval set 'trivia'"):
        builtin("trivia")


def test_builtin_code_references_pass_their_tests() -> None:
    tasks = code_tasks()
    assert len(tasks) == 24 and tasks == code_tasks()
    for q in tasks:
        verdict = code_verifier(q.tests).verify(
            Candidate(0, "ok", value=f"```python\n{q.meta['reference']}```")
        )
        assert verdict.score == 1.0, (q.id, verdict.details)
    broken = code_verifier(tasks.questions[0].tests).verify(
        Candidate(0, "ok", value="```python\ndef sum_multiples(xs, k):\n    return 0\n```")
    )
    assert broken.score < 1.0
