"""Verifiers: plain callables, exact answers, an LLM judge, and their combinations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tcc_plugin.sampling import (
    Candidate,
    Verdict,
    all_of,
    any_of,
    exact_answer,
    last_number,
    llm_judge,
    mean_of,
    parse_judgement,
)
from tcc_plugin.sampling.verifiers import as_verdict, as_verifier


def cand(value: Any, answer: str | None = None, index: int = 0) -> Candidate[Any]:
    return Candidate(
        index, "ok", value=value, text=value if isinstance(value, str) else None, answer=answer
    )


def test_plain_callables_and_their_return_values() -> None:
    assert as_verifier(lambda c: True).verify(cand("x")) == Verdict(1.0)
    assert as_verifier(lambda c: 0).verify(cand("x")) == Verdict(0.0)
    assert as_verifier(lambda c: 0.25).verify(cand("x")).score == 0.25
    verdict = Verdict(0.5, {"why": "half"})
    assert as_verifier(lambda c: verdict).verify(cand("x")) is verdict
    with pytest.raises(TypeError, match="float, a bool or a Verdict"):
        as_verifier(lambda c: "yes").verify(cand("x"))
    with pytest.raises(ValueError, match="NaN"):
        as_verdict(float("nan"))
    assert Verdict(1.0).passed and not Verdict(0.99).passed


async def test_sync_callables_verify_in_a_thread_under_asyncio() -> None:
    import threading

    main = threading.get_ident()
    seen: list[int] = []

    def score(c: Any) -> float:
        seen.append(threading.get_ident())
        return 0.5

    assert (await as_verifier(score).averify(cand("x"))).score == 0.5
    assert seen and seen[0] != main

    async def ascore(c: Any) -> float:
        return 0.75

    assert (await as_verifier(ascore).averify(cand("x"))).score == 0.75
    assert (await as_verifier(lambda c: ascore(c)).averify(cand("x"))).score == 0.75
    with pytest.raises(TypeError, match="async"):
        as_verifier(ascore).verify(cand("x"))
    with pytest.raises(TypeError, match="awaitable"):
        as_verifier(lambda c: ascore(c)).verify(cand("x"))


def test_exact_answer_normalises_both_sides() -> None:
    v = exact_answer(1000)
    assert v.verify(cand("the total is 1,000")).score == 1.0
    assert v.verify(cand("ignored", answer="1000")).score == 1.0  # the group's answer wins
    assert v.verify(cand("it is 999")).score == 0.0
    assert (
        exact_answer("Paris", extract=lambda s: s.strip().lower()).verify(cand(" paris ")).score
        == 1.0
    )
    assert exact_answer(["0.5", "1/2"]).accepted == {"0.5"}
    assert exact_answer("\\frac{1}{2}").verify(cand("so 1/2")).score == 1.0
    assert exact_answer(3, extract=last_number()).verify(cand("2 then 3")).details == {
        "answer": "3"
    }
    with pytest.raises(ValueError, match="normalises to nothing"):
        exact_answer("  ")


def test_all_of_is_the_minimum_and_skips_after_a_failure() -> None:
    calls: list[str] = []

    def named(name: str, score: float) -> Any:
        def verify(c: Any) -> float:
            calls.append(name)
            return score

        return verify

    v = as_verifier(named("a", 0.5)) & named("b", 0.0) & named("costly judge", 1.0)
    assert isinstance(v, all_of) and len(v.verifiers) == 3  # flattened
    verdict = v.verify(cand("x"))
    assert verdict.score == 0.0 and calls == ["a", "b"] and verdict.details["evaluated"] == 2
    calls.clear()
    w = any_of(named("a", 0.2), named("b", 1.0), named("c", 0.0))
    assert w.verify(cand("x")).score == 1.0 and calls == ["a", "b"]
    either = exact_answer(1) | exact_answer(2)
    assert isinstance(either, any_of) and either.verify(cand("2")).score == 1.0
    assert "|" in repr(either) and "&" in repr(v)
    mixed = (lambda c: 0.5) & exact_answer(5)
    assert isinstance(mixed, all_of) and mixed.verify(cand("5")).score == 0.5
    with pytest.raises(ValueError):
        all_of()


async def test_combinations_run_async_too() -> None:
    v = exact_answer(1) & (lambda c: 0.4)
    assert (await v.averify(cand("1"))).score == 0.4
    m = mean_of(exact_answer(1), lambda c: 0.5, weights=[3, 1])
    assert m.verify(cand("1")).score == pytest.approx(0.875)
    assert (await m.averify(cand("1"))).score == pytest.approx(0.875)
    with pytest.raises(ValueError):
        mean_of(exact_answer(1), weights=[0])
    with pytest.raises(ValueError):
        mean_of()


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Reasoning...\nScore: 7", 0.7),
        ("score = 8/10", 0.8),
        ("**Score:** 4 out of 5", 0.8),
        ("Score: 12", 1.0),  # clamped
        ("I'd give it 3/4.", 0.75),
        ("Is it correct? Yes", 1.0),
        ("The answer is incorrect.", 0.0),
        ("PASS", 1.0),
    ],
)
def test_parse_judgement(reply: str, score: float) -> None:
    assert parse_judgement(reply) == pytest.approx(score)


def test_parse_judgement_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="cannot read a score"):
        parse_judgement("hmm, hard to say")


def test_llm_judge_prompt_and_parse() -> None:
    prompts: list[str] = []

    def judge(prompt: str) -> dict[str, Any]:
        prompts.append(prompt)
        return {"choices": [{"message": {"content": "Looks fine.\nScore: 9"}}]}

    v = llm_judge(judge, question="What is 6 x 7?")
    verdict = v.verify(cand("It is 42."))
    assert verdict.score == pytest.approx(0.9) and "Score: 9" in verdict.details["reply"]
    assert "What is 6 x 7?" in prompts[0] and "It is 42." in prompts[0]
    custom = llm_judge(
        lambda p: "YES" if "42" in p else "NO", template="{answer}", parse=lambda t: t == "YES"
    )
    assert custom.verify(cand("42")).score == 1.0 and custom.verify(cand("41")).score == 0.0
    with pytest.raises(ValueError, match="no text"):
        llm_judge(lambda p: None).verify(cand("x"))


async def test_llm_judge_async_and_sync_judges_under_asyncio() -> None:
    async def ajudge(prompt: str) -> str:
        await asyncio.sleep(0)
        return "Score: 10"

    assert (await llm_judge(ajudge).averify(cand("x"))).score == 1.0
    assert (await llm_judge(lambda p: "Score: 5").averify(cand("x"))).score == 0.5
    assert (await llm_judge(lambda p: ajudge(p)).averify(cand("x"))).score == 1.0
    with pytest.raises(TypeError, match="async"):
        llm_judge(ajudge).verify(cand("x"))
    with pytest.raises(TypeError, match="awaitable"):
        llm_judge(lambda p: ajudge(p)).verify(cand("x"))
