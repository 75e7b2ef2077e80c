"""Router and cascade decisions, budgets and spans, with plain-function routes."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from tcc_plugin import budget
from tcc_plugin.budget import Charge
from tcc_plugin.routing import (
    Route,
    Router,
    RoutingError,
    accept_agreement,
    accept_score,
    accept_when,
    cascade,
    escalation,
    heuristic_difficulty,
)
from tcc_plugin.routing.telemetry import (
    ROUTE_DIFFICULTY,
    ROUTE_ESCALATIONS,
    ROUTE_ESTIMATOR_ERROR,
    ROUTE_NAME,
    ROUTE_REASON,
    ROUTE_SKIPPED,
)
from tcc_plugin.sampling import exact_answer, self_consistency, stop_never
from tests.conftest import Telemetry


class Recorder:
    """Routes that remember what they answered."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def route(self, name: str, answer: Any = None, **kw: Any) -> Route:
        def answer_fn(value: Any) -> Any:
            self.calls.append((name, value))
            if isinstance(answer, BaseException):
                raise answer
            return answer if answer is not None else f"{name}:{value}"

        return Route(name, answer_fn, **kw)


def two_routes(rec: Recorder, **think: Any) -> list[Route]:
    return [rec.route("cheap", up_to=0.4), rec.route("think", **think)]


def test_the_difficulty_picks_the_route_and_the_span_says_why(telemetry: Telemetry) -> None:
    rec = Recorder()
    difficulty = {"2+2": 0.1, "prove it": 0.9}
    router = Router(two_routes(rec), difficulty.__getitem__, name="qa")
    assert router("2+2") == "cheap:2+2"
    result = router.run("prove it")
    assert (result.route, result.difficulty, result.escalations) == ("think", 0.9, 0)
    assert rec.calls == [("cheap", "2+2"), ("think", "prove it")]
    spans = telemetry.spans("route qa")
    assert [s.attributes[ROUTE_NAME] for s in spans] == ["cheap", "think"]
    assert spans[0].attributes[ROUTE_DIFFICULTY] == 0.1
    assert spans[0].attributes[ROUTE_REASON] == "difficulty 0.10 -> cheap (up to 0.4)"
    assert spans[1].attributes[ROUTE_REASON] == "difficulty 0.90 -> think"


def test_a_difficulty_equal_to_up_to_stays_on_the_cheap_route() -> None:
    rec = Recorder()
    assert Router(two_routes(rec), lambda _: 0.4).run("q").route == "cheap"


def test_a_route_the_budget_cannot_pay_for_is_skipped(telemetry: Telemetry) -> None:
    rec = Recorder()
    routes = two_routes(rec, expected=Charge(usd=Decimal("0.05"), calls=1))
    with budget(usd=0.01, name="req"):
        result = Router(routes, lambda _: 0.9).run("hard")
    assert result.route == "cheap"
    assert result.skipped == ("think",)
    assert "think skipped: needs $0.05, budget 'req' has $0.01 left" in result.reason
    assert rec.calls == [("cheap", "hard")]
    span = telemetry.span("route router")
    assert span.attributes[ROUTE_SKIPPED] == ("think",)


def test_in_clamp_mode_the_route_runs_clamped_and_the_decision_says_so() -> None:
    rec = Recorder()
    routes = two_routes(rec, expected=Charge(output_tokens=8000, calls=1))
    with budget(output_tokens=1000, policy="clamp"):
        result = Router(routes, lambda _: 0.9).run("hard")
    assert result.route == "think"
    assert "think clamped: needs 8000 output tokens, the budget has 1000 output tokens" in (
        result.reason
    )


def test_a_deadline_makes_the_router_prefer_a_route_that_fits() -> None:
    rec = Recorder()
    routes = two_routes(rec, expected_seconds=30.0)
    with budget(deadline=5):
        result = Router(routes, lambda _: 0.9).run("hard")
    assert result.route == "cheap"
    assert "think needs ~30.0 s" in result.reason


def test_when_no_route_fits_the_cheapest_meets_the_budgets_own_refusal() -> None:
    rec = Recorder()
    routes = [
        rec.route("cheap", up_to=0.4, expected=Charge(calls=1)),
        rec.route("think", expected=Charge(calls=1)),
    ]
    with budget(calls=0):
        result = Router(routes, lambda _: 0.9).run("q")
    assert result.route == "cheap"
    assert result.skipped == ("think", "cheap")
    assert "no route fits the budgets" in result.reason


def test_an_estimator_that_raises_takes_the_fallback_and_records_it(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()

    def broken(_: Any) -> float:
        raise RuntimeError("classifier offline")

    result = Router(two_routes(rec), broken, fallback="think").run("q")
    assert result.route == "think"
    assert result.difficulty is None
    assert result.reason == "estimator broken failed (RuntimeError); fallback think"
    span = telemetry.span("route router")
    assert span.attributes[ROUTE_ESTIMATOR_ERROR] == "RuntimeError: classifier offline"
    assert "difficulty estimator failed: RuntimeError: classifier offline" in caplog.text


def test_without_a_fallback_a_failing_estimator_stops_before_any_paid_call() -> None:
    rec = Recorder()
    router = Router(two_routes(rec), lambda _: float("nan"))
    with pytest.raises(RoutingError, match=r"estimator <lambda> failed \(ValueError.*no fallback"):
        router.run("q")
    assert rec.calls == []


@pytest.mark.parametrize(
    ("routes", "kwargs", "message"),
    [
        ([], {}, "at least one route"),
        (["cheap"], {}, "Route objects"),
        ("dup", {}, "unique"),
        ("no_up_to", {}, "every route but the last needs up_to"),
        ("decreasing", {}, "must not decrease"),
        ("ok", {"fallback": "nope"}, "fallback 'nope' is not one of the routes"),
    ],
)
def test_a_malformed_router_fails_at_construction(routes: Any, kwargs: Any, message: str) -> None:
    rec = Recorder()
    built = {
        "dup": [rec.route("a", up_to=0.5), rec.route("a")],
        "no_up_to": [rec.route("a"), rec.route("b")],
        "decreasing": [rec.route("a", up_to=0.7), rec.route("b", up_to=0.3), rec.route("c")],
        "ok": two_routes(rec),
    }
    with pytest.raises((ValueError, TypeError), match=message):
        Router(
            built.get(routes, routes) if isinstance(routes, str) else routes, lambda _: 0, **kwargs
        )


def test_a_route_is_validated() -> None:
    with pytest.raises(TypeError, match="callable or have invoke"):
        Route("x", 42)
    with pytest.raises(ValueError, match=r"up_to is a difficulty in \[0, 1\]"):
        Route("x", str, up_to=2)


def test_the_heuristic_reads_length_numbers_and_rules() -> None:
    estimate = heuristic_difficulty(rules=[(lambda q: "proof" in q, 1.0)])
    easy = estimate.estimate("What is 2 + 2?")
    hard = estimate.estimate(
        "A train leaves at 3:15 and travels 120 km at 80 km/h, then 45 km at 60 km/h; "
        "each stop takes 7 minutes and there are 4 stops. Why is the total time what it is? "
        "Derive the expected arrival time and the probability it is late by 5 minutes."
    )
    assert 0 <= easy < 0.3 < 0.6 < hard <= 1
    assert estimate.estimate("Give a proof that sqrt 2 is irrational") == 1.0
    assert estimate.estimate({"question": "What is 2 + 2?"}) == easy


# -- cascades ------------------------------------------------------------------------------
def test_a_cascade_stops_at_the_first_answer_it_trusts(telemetry: Telemetry) -> None:
    rec = Recorder()
    routes = [rec.route("cheap", "41"), rec.route("mid", "42"), rec.route("strong", "42")]
    result = cascade(routes, accept_score(exact_answer("42"))).run("q")
    assert (result.route, result.answer, result.escalations) == ("mid", "42", 1)
    assert [a.accepted for a in result.attempts] == [False, True]
    assert [name for name, _ in rec.calls] == ["cheap", "mid"]
    span = telemetry.span("route cascade")
    assert span.attributes[ROUTE_ESCALATIONS] == 1
    assert span.attributes[ROUTE_REASON] == "mid: accepted (score 1)"
    assert [e.attributes[ROUTE_NAME] for e in span.events] == ["cheap", "mid"]


def test_the_last_route_answers_when_nothing_is_trusted() -> None:
    rec = Recorder()
    routes = [rec.route("cheap", "a"), rec.route("strong", "b")]
    result = cascade(routes, lambda _: False).run("q")
    assert (result.route, result.answer, result.escalations) == ("strong", "b", 1)
    assert result.reason == "strong: accepted by none before"


def test_escalation_carries_the_earlier_answers_when_asked() -> None:
    seen: list[tuple[Any, ...]] = []

    def strong(value: Any) -> str:
        seen.append(tuple((a.route, a.answer, a.accepted) for a in escalation()))
        return "42"

    routes = [Route("cheap", lambda v: "41"), Route("strong", strong)]
    cascade(routes, lambda _: False, carry=True).run("q")
    cascade(routes, lambda _: False).run("q")
    assert seen == [(("cheap", "41", False),), ()]
    assert escalation() == ()


def test_when_every_route_fails_the_last_error_is_raised_chained_to_the_earlier() -> None:
    rec = Recorder()
    first, last = ConnectionError("cheap down"), TimeoutError("strong timed out")
    routes = [rec.route("cheap", first), rec.route("strong", last)]
    with pytest.raises(TimeoutError) as caught:
        cascade(routes, lambda _: True).run("q")
    assert caught.value is last
    assert caught.value.__cause__ is first


def test_a_failing_route_escalates_and_an_acceptance_rule_that_raises_is_recorded() -> None:
    rec = Recorder()

    def judge(answer: Any) -> bool:
        raise ValueError("judge offline")

    routes = [rec.route("a", RuntimeError("boom")), rec.route("b", "x"), rec.route("c", "y")]
    result = cascade(routes, judge).run("q")
    assert result.route == "c"
    assert result.attempts[0].error is not None
    assert result.attempts[1].detail == "acceptance rule raised ValueError: judge offline"


def test_a_cascade_skips_routes_the_budget_cannot_pay_for_but_always_tries_the_last() -> None:
    rec = Recorder()
    routes = [
        rec.route("mid", "x", expected=Charge(usd=Decimal(1))),
        rec.route("strong", "y", expected=Charge(usd=Decimal(1))),
    ]
    with budget(usd=0.5):
        result = cascade(routes, lambda _: True).run("q")
    assert result.route == "strong"
    assert result.skipped == ("mid",)


def test_vote_agreement_among_cheap_samples_decides_the_escalation() -> None:
    answers = iter(["7", "7", "7", "7", "3", "9", "1", "5"])

    def cheap(_: Any) -> Any:
        return self_consistency(lambda: next(answers), n=4, concurrency=1, stop=stop_never())

    routes = [Route("cheap", cheap), Route("strong", lambda _: "strong")]
    agreed = cascade(routes, accept_agreement(0.75)).run("q")
    assert agreed.route == "cheap"
    assert agreed.answer.answer == "7"
    assert agreed.attempts[0].detail == "4 of 4 samples agree"
    split = cascade(routes, accept_agreement(0.75)).run("q")
    assert split.route == "strong"
    assert split.attempts[0].detail == "1 of 4 samples agree"


def test_accept_agreement_needs_a_sampling_result() -> None:
    with pytest.raises(TypeError, match="self_consistency result"):
        accept_agreement().judge("42")


def test_acceptance_rules_compose() -> None:
    yes, no = accept_when(lambda _: True), accept_when(lambda _: 0.2)
    assert (yes & no).judge("x").accepted is False
    assert (yes | no).judge("x").accepted is True
    assert (yes & no).judge("x").confidence == 0.2


# -- async -------------------------------------------------------------------------------
async def test_async_routes_estimators_and_judges(telemetry: Telemetry) -> None:
    async def estimate(value: Any) -> float:
        await asyncio.sleep(0)
        return 0.9

    async def think(value: Any) -> str:
        await asyncio.sleep(0)
        return "deep"

    async def judge(answer: Any) -> bool:
        return answer == "deep"

    router = Router([Route("cheap", str, up_to=0.5), Route("think", think)], estimate)
    assert await router.acall("q") == "deep"
    result = await cascade([Route("a", think), Route("b", str)], judge).arun("q")
    assert (result.route, result.escalations) == ("a", 0)
    assert len(telemetry.spans("route router")) == 1


def test_an_async_route_in_the_sync_driver_says_to_use_the_async_twin() -> None:
    async def think(value: Any) -> str:
        return "deep"

    with pytest.raises(TypeError, match="async twin"):
        Router([Route("think", think)], lambda _: 0.5).run("q")


def test_llm_call_functions_as_routes_are_charged_and_nested(telemetry: Telemetry) -> None:
    from tcc_plugin import Usage, llm_call

    @llm_call(model="o3", provider="openai", max_output_tokens=500, usage=lambda r: r["usage"])
    def think(question: str) -> dict[str, Any]:
        return {"text": "1729", "usage": Usage(input=20, output=400, reasoning=380)}

    @llm_call(
        model="gpt-4o-mini", provider="openai", max_output_tokens=50, usage=lambda r: r["usage"]
    )
    def cheap(question: str) -> dict[str, Any]:
        return {"text": "4", "usage": Usage(input=10, output=2)}

    router = Router([Route("cheap", cheap, up_to=0.5), Route("think", think)], lambda q: 0.9)
    with budget(usd=1, calls=1) as b:
        assert router("taxicab?")["text"] == "1729"
    # o3: $2 / M input, $8 / M output
    assert b.spent.usd == (20 * Decimal(2) + 400 * Decimal(8)) / 10**6
    assert (b.spent.calls, b.spent.reasoning_tokens) == (1, 380)
    decision = telemetry.span("route router")
    call = next(s for s in telemetry.spans() if s is not decision)
    assert call.parent is not None and call.parent.span_id == decision.context.span_id
