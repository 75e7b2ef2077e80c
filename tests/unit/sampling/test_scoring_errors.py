"""A verifier (or vote weight, or LLM judge) that raises is never silent: on every
candidate, the group raises ScoringFailed naming it, chained to the first error; on
some, one warning and a count on the group span."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tcc_plugin.errors import ScoringFailed
from tcc_plugin.sampling import (
    Candidate,
    abest_of_n,
    best_of_n,
    llm_judge,
    self_consistency,
    weighted,
)

from ...conftest import Telemetry


def broken_verifier(candidate: Candidate[Any]) -> float:
    raise RuntimeError(f"grader crashed on {candidate.value}")


def test_a_verifier_raising_on_every_candidate_raises_naming_it() -> None:
    with pytest.raises(ScoringFailed) as raised:
        best_of_n(lambda: "4", n=3, verifier=broken_verifier)
    message = str(raised.value)
    assert "verifier broken_verifier" in message and "every one of the 3" in message
    assert "RuntimeError: grader crashed on 4" in message
    assert isinstance(raised.value.__cause__, RuntimeError)


async def test_async_twin_raises_the_same() -> None:
    async def sample() -> str:
        return "4"

    with pytest.raises(ScoringFailed) as raised:
        await abest_of_n(sample, n=2, verifier=broken_verifier)
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_some_failures_warn_once_and_count_on_the_group_span(
    caplog: pytest.LogCaptureFixture, telemetry: Telemetry
) -> None:
    answers = iter(["1", "2", "3", "4"])

    def flaky(candidate: Candidate[Any]) -> float:
        if candidate.value in ("1", "3"):
            raise ValueError("unparseable")
        return float(candidate.value) / 4

    with caplog.at_level(logging.WARNING, logger="tcc_plugin"):
        result = best_of_n(lambda: next(answers), n=4, verifier=flaky, concurrency=1)
    assert result.value == "4"
    warnings = [r for r in caplog.records if "raised on 2 of 4 candidates" in r.getMessage()]
    assert len(warnings) == 1 and "verifier test_some" in warnings[0].getMessage()
    [group] = [s for s in telemetry.spans() if "tcc.sampling.launched" in (s.attributes or {})]
    assert (group.attributes or {})["tcc.sampling.scoring_failed"] == 2


def test_a_vote_weight_raising_on_every_candidate_names_the_vote_rule() -> None:
    def weight(candidate: Candidate[Any]) -> float:
        raise ZeroDivisionError("division by zero")

    with pytest.raises(ScoringFailed) as raised:
        self_consistency(lambda: "Final Answer: 4", n=3, vote=weighted(weight), stop=None)
    assert "vote weight weighted" in str(raised.value)
    assert isinstance(raised.value.__cause__, ZeroDivisionError)


def test_an_llm_judge_whose_judge_call_fails_is_named() -> None:
    def judge(prompt: str) -> str:
        raise ConnectionError("judge model unreachable")

    with pytest.raises(ScoringFailed) as raised:
        best_of_n(lambda: "4", n=2, verifier=llm_judge(judge, question="2+2?"))
    assert "llm_judge" in str(raised.value) and "judge model unreachable" in str(raised.value)
    assert isinstance(raised.value.__cause__, ConnectionError)
