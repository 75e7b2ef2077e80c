"""Sampling groups in threads: real @llm_call samples, real budgets, spans read back."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tcc_plugin import BudgetExceeded, active_budgets, budget, llm_call
from tcc_plugin.budget import Charge, Demand
from tcc_plugin.sampling import (
    best_of_n,
    current_sample,
    exact_answer,
    launch_all,
    llm_judge,
    self_consistency,
    stop_after_completed,
    stop_confident,
    stop_on_score,
    stop_unbeatable,
    weighted,
    whole,
    worst_case,
)

from ...conftest import Telemetry
from .conftest import Scripted, chat_body, index, seeded_answers

GUARD = 30.0  # seconds: only a guard against hanging, never a timing assertion


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def scripted_llm(answers: list[str], *, completion: int = 20, max_output: int = 100) -> Any:
    """An instrumented sample: sample i answers answers[i]."""

    @llm_call(model="o3", provider="openai", max_output_tokens=max_output)
    def ask() -> dict[str, Any]:
        return chat_body(f"so the answer is {answers[index()]}", completion=completion)

    return ask


# -- the group span ---------------------------------------------------------------------
def test_group_span_parents_every_call_and_says_what_happened(telemetry: Telemetry) -> None:
    answers = ["42", "41", "42", "42", "42", "7", "42", "42"]
    with budget(usd=1, name="q1") as b:
        result = self_consistency(scripted_llm(answers), n=8, concurrency=2, stop=None)

    assert result.answer == "42" and result.winner is not None and result.winner.index == 0
    assert result.votes == {"42": 6.0, "41": 1.0, "7": 1.0}
    assert result.counts == {"42": 6, "41": 1, "7": 1}
    assert result.margin == 5.0
    assert (result.requested, result.launched, result.completed, result.cancelled) == (8, 8, 8, 0)
    assert result.stop_reason == "all_done" and not result.stopped_early
    # the group's ledger equals what the caller's budget was charged: exact
    assert result.spent == b.spent
    assert result.spent.calls == 8 and result.spent.total_tokens == 8 * 30
    assert result.spent.usd == 8 * (Decimal(10) * 2 + Decimal(20) * 8) / 10**6

    group = telemetry.span("self_consistency")
    a = attrs(group)
    assert a["tcc.sampling.method"] == "self_consistency"
    assert a["tcc.sampling.requested"] == 8 and a["tcc.sampling.concurrency"] == 2
    assert a["tcc.sampling.launched"] == 8 and a["tcc.sampling.completed"] == 8
    assert a["tcc.sampling.cancelled"] == 0 and a["tcc.sampling.stopped_early"] is False
    assert a["tcc.sampling.winner.index"] == 0 and a["tcc.sampling.winner.votes"] == 6.0
    assert a["tcc.sampling.vote.margin"] == 5.0 and a["tcc.sampling.vote.distinct"] == 3
    assert "tcc.sampling.winner.answer" not in a  # content: opt-in only
    for key in ("min", "median", "max", "stdev"):
        assert a[f"tcc.sampling.latency.{key}"] >= 0
    assert (
        a["tcc.sampling.latency.min"]
        <= a["tcc.sampling.latency.median"]
        <= a["tcc.sampling.latency.max"]
    )
    assert a["tcc.sampling.usage.total_tokens"] == 240 and a["tcc.sampling.calls"] == 8
    assert a["tcc.sampling.cost.usd"] == pytest.approx(float(result.spent.usd))
    assert len([e for e in group.events if e.name == "tcc.sampling.sample"]) == 8

    calls = telemetry.spans("chat o3")
    assert len(calls) == 8
    assert group.context is not None
    for call in calls:
        assert call.parent is not None and call.parent.span_id == group.context.span_id
        assert call.context is not None and call.context.trace_id == group.context.trace_id
        # the caller's budget stays the one the call spans report
        assert attrs(call)["tcc.budget.name"] == "q1"


def test_winning_answer_is_recorded_only_on_opt_in(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    self_consistency(Scripted(["5", "5", "6"]), n=3, stop=None)
    a = attrs(telemetry.span("self_consistency"))
    assert a["tcc.sampling.winner.answer"] == "5"
    events = telemetry.span("self_consistency").events
    assert {dict(e.attributes or {}).get("tcc.sampling.sample.answer") for e in events} == {
        "5",
        "6",
    }


def test_samples_run_concurrently() -> None:
    # Eight samples that can only finish once all eight are running at the same time.
    barrier = threading.Barrier(8, timeout=GUARD)

    def sample() -> str:
        barrier.wait()
        return "1"

    result = self_consistency(sample, n=8, concurrency=8, stop=None)
    assert result.completed == 8 and result.failed == 0


def test_the_concurrency_limit_holds() -> None:
    lock = threading.Lock()
    running = peak = 0

    def sample() -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return str(index() % 3)
        finally:
            with lock:
                running -= 1

    result = self_consistency(sample, n=30, concurrency=3, stop=None)
    assert result.completed == 30 and peak <= 3


def test_context_follows_each_sample_into_its_thread(telemetry: Telemetry) -> None:
    seen: list[tuple[int, tuple[str | None, ...], bool]] = []
    lock = threading.Lock()

    def sample() -> str:
        span = trace.get_current_span()
        with lock:
            seen.append((index(), tuple(b.name for b in active_budgets()), span.is_recording()))
        return "1"

    with budget(calls=100, name="outer"):
        self_consistency(sample, n=4, concurrency=4, stop=None)
    assert sorted(i for i, _, _ in seen) == [0, 1, 2, 3]
    group = "tcc.sampling.self_consistency"  # the group's ledger, then the sample's own
    assert all(chain == (group, f"{group}[sample {i}]", "outer") for i, chain, _ in seen)
    assert all(recording for _, _, recording in seen)
    assert current_sample() is None and active_budgets() == ()


# -- winners, votes, verifiers ----------------------------------------------------------
def test_round_robin_over_several_samples() -> None:
    calls: list[str] = []

    def make(name: str, answer: str) -> Any:
        def sample() -> str:
            calls.append(name)
            return answer

        return sample

    result = self_consistency(
        [make("a", "1"), make("b", "2"), make("c", "1")], n=6, stop=None, extract=whole()
    )
    assert sorted(calls) == ["a", "a", "b", "b", "c", "c"]
    assert result.answer == "1" and result.counts == {"1": 4, "2": 2}
    assert self_consistency([make("x", "9")], stop=None).requested == 1  # n = len(samples)


def test_abstaining_samples_do_not_vote() -> None:
    result = self_consistency(Scripted([None, "3", None, "4", "4"]), n=5, stop=None)
    assert result.answer == "4" and result.abstained == 2 and result.completed == 5
    assert result.candidates[0].answer is None and result.candidates[0].status == "ok"
    nobody = self_consistency(Scripted([None, None]), n=2, stop=None)
    assert nobody.winner is None and nobody.answer is None
    with pytest.raises(LookupError, match="no winner"):
        _ = nobody.value


def test_tie_goes_to_the_lowest_sample_index() -> None:
    result = self_consistency(Scripted(["8", "7", "7", "8"]), n=4, stop=None)
    assert result.answer == "8" and result.margin == 0.0


def test_weighted_vote_by_verifier_score() -> None:
    # Three weak votes for 41 lose to two confident votes for 42.
    scores = {"41": 0.3, "42": 1.0}
    result = self_consistency(
        Scripted(["41", "41", "41", "42", "42"]),
        n=5,
        vote=weighted(),
        verifier=lambda c: scores[c.answer],
        stop=None,
    )
    assert result.votes == {"42": 2.0, "41": pytest.approx(0.9)}
    assert result.answer == "42" and result.winner is not None and result.winner.index == 3
    with pytest.raises(ValueError, match="needs a verifier"):
        self_consistency(Scripted(["1"]), n=1, vote=weighted())


def test_best_of_n_picks_the_highest_score_and_breaks_ties_by_index() -> None:
    scores = [0.2, 0.9, 0.5, 0.9]
    result = best_of_n(lambda: index(), n=4, verifier=lambda c: scores[c.value])
    assert result.value == 1 and result.score == 0.9
    assert result.scores == (0.2, 0.9, 0.5, 0.9)
    assert result.votes == {} and result.answer is None


def test_best_of_n_stops_at_a_passing_candidate_and_abandons_the_rest(telemetry: Telemetry) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    seen_cancelled: list[bool] = []

    def sample() -> str:
        if index() == 0:
            assert started.wait(GUARD)
            return "def add(a, b): return a + b"
        started.set()
        release.wait(GUARD)  # sample 1 is still running when sample 0 passes
        ctx = current_sample()
        seen_cancelled.append(ctx is not None and ctx.cancelled)
        finished.set()
        return "def add(a, b): return 0"

    result = best_of_n(
        sample,
        n=4,
        concurrency=2,
        verifier=lambda c: "a + b" in c.value,
        stop=stop_on_score(1.0),
        launch=launch_all(),
    )
    assert result.value == "def add(a, b): return a + b"
    assert result.stopped_early and result.stop_reason == "rule"
    assert result.stop_rule == "stop_on_score(1.0)"
    assert (result.launched, result.completed, result.cancelled) == (2, 1, 1)
    assert result.candidates[1].status == "cancelled"
    a = attrs(telemetry.span("best_of_n"))
    assert a["tcc.sampling.stopped_early"] is True and a["tcc.sampling.winner.score"] == 1.0
    release.set()
    assert finished.wait(GUARD)
    assert seen_cancelled == [True]  # the abandoned sample can see it is no longer needed


def test_exact_answer_verifier_in_best_of_n() -> None:
    result = best_of_n(Scripted(["1,000", "999", "1000.0"]), n=3, verifier=exact_answer(1000))
    assert result.scores == (1.0, 0.0, 1.0) and result.winner is not None
    assert result.winner.index == 0


def test_llm_judge_calls_are_children_charged_to_the_same_budget(telemetry: Telemetry) -> None:
    prompts: list[str] = []

    @llm_call(model="o3-mini", provider="openai", max_output_tokens=50)
    def judge(prompt: str) -> dict[str, Any]:
        prompts.append(prompt)
        good = "is 4" in prompt
        return chat_body("Looks right.\nScore: 9" if good else "Wrong.\nScore: 2", completion=5)

    with budget(calls=100) as b:
        result = best_of_n(
            scripted_llm(["4", "5", "4"]),
            n=3,
            verifier=llm_judge(judge, question="What is 2+2?"),
        )
    assert result.scores == (0.9, 0.2, 0.9) and result.winner is not None
    assert result.winner.index == 0
    assert all("What is 2+2?" in p for p in prompts) and len(prompts) == 3
    assert b.spent.calls == 6 and result.spent == b.spent  # 3 samples + 3 judgements
    group = telemetry.span("best_of_n")
    assert group.context is not None
    judged = telemetry.spans("chat o3-mini")
    assert len(judged) == 3
    assert all(s.parent is not None and s.parent.span_id == group.context.span_id for s in judged)


def test_verifier_errors_are_recorded_not_raised() -> None:
    def verifier(c: Any) -> float:
        if c.index == 1:
            raise RuntimeError("grader crashed")
        return 0.5

    result = best_of_n(lambda: index(), n=3, verifier=verifier)
    bad = result.candidates[1]
    assert bad.status == "ok" and bad.score is None and isinstance(bad.error, RuntimeError)
    assert result.winner is not None and result.winner.index == 0


# -- early stopping ---------------------------------------------------------------------
def test_unbeatable_is_lossless_and_saves_samples() -> None:
    answers = seeded_answers(seed=3, n=16, p_correct=0.8)
    full = self_consistency(Scripted(answers), n=16, concurrency=1, stop=None)
    early = self_consistency(Scripted(answers), n=16, concurrency=1, stop=stop_unbeatable())
    assert early.answer == full.answer == "42"
    assert early.launched < 16 and early.stopped_early and early.stop_reason == "rule"
    assert early.stop_rule == "stop_unbeatable()"


def test_default_stop_is_predictive_confidence_then_unbeatable() -> None:
    # Three unanimous votes of 16: P(the leader still leads after all 16) = 0.917
    # under the Dirichlet-multinomial predictive with a uniform prior; two give 0.808.
    source = Scripted(["9"] * 16)
    result = self_consistency(source, n=16, concurrency=1)
    assert result.launched == 3 and result.answer == "9" and sorted(source.calls) == [0, 1, 2]
    assert result.stop_rule == "stop_confident(0.9, method='predictive')"
    # 4 votes to 1: 0.916 stops; 3 to 1 (0.78) does not.
    source = Scripted(["9", "8", "9", "9", "9", *["9"] * 11])
    result = self_consistency(source, n=16, concurrency=1)
    assert result.launched == 5 and result.answer == "9"


def test_adaptive_consistency_stops_on_a_unanimous_start() -> None:
    source = Scripted(["9"] * 16)
    result = self_consistency(source, n=16, concurrency=1, stop=stop_confident(0.95))
    assert result.launched == 4 and result.answer == "9"  # P = 1 - 1/32 after four
    assert sorted(source.calls) == [0, 1, 2, 3]


def test_cancelled_samples_are_reported(telemetry: Telemetry) -> None:
    gate = threading.Event()

    def sample() -> str:
        if index() >= 2:
            gate.wait(GUARD)
        return "5"

    result = self_consistency(
        sample, n=4, concurrency=4, stop=stop_after_completed(2), launch=launch_all()
    )
    gate.set()
    assert result.completed == 2 and result.cancelled == 2 and result.stopped_early
    assert [c.status for c in result.candidates] == ["ok", "ok", "cancelled", "cancelled"]
    events = [dict(e.attributes or {}) for e in telemetry.span("self_consistency").events]
    assert sorted(e["tcc.sampling.sample.status"] for e in events) == [
        "cancelled",
        "cancelled",
        "ok",
        "ok",
    ]


def test_timeout_ends_the_group_with_what_it_has() -> None:
    gate = threading.Event()

    def sample() -> str:
        if index() == 1:
            gate.wait(GUARD)
        return "3"

    result = self_consistency(sample, n=2, concurrency=2, stop=None, timeout=0.05)
    gate.set()
    assert result.stop_reason == "timeout" and result.stopped_early
    assert result.completed == 1 and result.cancelled == 1 and result.answer == "3"


def test_a_budget_deadline_ends_the_group() -> None:
    gate = threading.Event()

    def sample() -> str:
        if index() == 1:
            gate.wait(GUARD)
        return "3"

    with budget(deadline=0.05):
        result = self_consistency(sample, n=2, concurrency=2, stop=None)
    gate.set()
    assert result.stop_reason == "deadline" and result.completed == 1


def test_abandoned_thread_is_charged_when_its_call_ends() -> None:
    started, gate, done = threading.Event(), threading.Event(), threading.Event()

    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    def ask() -> dict[str, Any]:
        try:
            if index() == 0:
                assert started.wait(GUARD)  # sample 1's call is under way
            if index() == 1:
                started.set()
                gate.wait(GUARD)
            return chat_body("answer 2", completion=20)
        finally:
            if index() == 1:
                done.set()

    with budget(output_tokens=1000) as b:
        result = self_consistency(
            ask, n=2, concurrency=2, stop=stop_after_completed(1), launch=launch_all()
        )
        assert result.cancelled == 1
        assert b.reserved.output_tokens == 100  # the abandoned call still holds its worst case
        gate.set()
        assert done.wait(GUARD)
    # its call settled normally: charged what it used, reservation released
    for _ in range(1000):
        if b.in_flight == 0:
            break
        threading.Event().wait(0.01)
    assert b.reserved.is_zero() and b.spent.output_tokens == 40 and b.spent.calls == 2


# -- failures -----------------------------------------------------------------------------
def test_failing_samples_are_counted_and_others_still_vote(telemetry: Telemetry) -> None:
    def sample() -> str:
        if index() % 2:
            raise ConnectionError("reset")
        return "6"

    result = self_consistency(sample, n=4, stop=None)
    assert result.failed == 2 and result.completed == 2 and result.answer == "6"
    assert isinstance(result.candidates[1].error, ConnectionError)
    # A failed sample does not fail its group: no error status, no exception event.
    span = telemetry.span("self_consistency")
    assert span.status.status_code is StatusCode.UNSET
    assert not [e for e in span.events if e.name == "exception"]


def test_when_nothing_completes_the_first_error_is_raised(telemetry: Telemetry) -> None:
    def sample() -> str:
        raise ValueError(f"bad sample {index()}")

    with pytest.raises(ValueError, match="bad sample 0"):
        self_consistency(sample, n=3, stop=None)
    span = telemetry.span("self_consistency")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["tcc.sampling.failed"] == 3


def test_async_samples_are_refused_by_the_sync_api() -> None:
    async def sample() -> str:
        return "1"

    with pytest.raises(TypeError, match="aself_consistency"):
        self_consistency(sample, n=2)
    with pytest.raises(TypeError, match="awaitable"):
        self_consistency(lambda: sample(), n=2)  # a lambda around a coroutine function


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n": 0}, ValueError),
        ({"n": True}, ValueError),
        ({"n": 2, "concurrency": 0}, ValueError),
        ({"n": 2, "timeout": 0}, ValueError),
        ({"n": 2, "per_sample": 100}, TypeError),
        ({}, TypeError),  # n is required with one callable
    ],
)
def test_arguments_are_checked(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        self_consistency(lambda: "1", **kwargs)


def test_no_sample_callables() -> None:
    with pytest.raises(ValueError, match="no sample"):
        self_consistency([], n=None)
    with pytest.raises(TypeError, match="callable"):
        self_consistency(["not callable"])  # type: ignore[list-item]


# -- budgets ----------------------------------------------------------------------------
def test_per_sample_worst_case_launches_only_what_the_budget_can_pay_for(
    telemetry: Telemetry,
) -> None:
    source = scripted_llm(["1"] * 10)
    with budget(calls=3, name="tight") as b:
        result = self_consistency(
            source, n=10, concurrency=5, per_sample=Demand(max_output_tokens=100), stop=None
        )
    assert result.launched == 3 and result.completed == 3 and result.refused == 0
    assert result.budget_limited and result.stop_reason == "budget"
    assert b.spent.calls == 3 and b.reserved.is_zero() and b.in_flight == 0
    assert attrs(telemetry.span("self_consistency"))["tcc.sampling.budget_limited"] is True
    # each call ran inside its sample's slice of the budget
    names = sorted(attrs(s)["tcc.budget.name"] for s in telemetry.spans("chat o3"))
    assert names == ["tight[sample 0]", "tight[sample 1]", "tight[sample 2]"]


def test_per_sample_tokens_and_exact_settlement() -> None:
    source = scripted_llm(["1"] * 10, completion=30, max_output=100)
    with budget(output_tokens=350) as b:
        result = self_consistency(
            source, n=10, concurrency=10, per_sample=Demand(max_output_tokens=100), stop=None
        )
    # Three worst cases (3 x 100) fit in 350 at first; each settles to 30, which makes
    # room again. A sample launches only while 100 are free: after nine (270 spent) only
    # 80 are, and with nothing left running to free more, launching ends.
    assert result.completed == 9 and result.launched == 9 and result.refused == 0
    assert b.spent.output_tokens == 270 and b.reserved.is_zero()
    assert result.budget_limited and result.stop_reason == "budget"


def test_priced_worst_case_under_a_usd_cap() -> None:
    charge = worst_case("o3", provider="openai", max_output_tokens=100, input_tokens=10)
    assert charge == Charge(110, 100, 100, (10 * Decimal(2) + 100 * Decimal(8)) / 10**6, 1)
    source = scripted_llm(["1"] * 10)
    with budget(usd=charge.usd * 4) as b:
        result = self_consistency(source, n=10, concurrency=2, per_sample=charge, stop=None)
    assert result.completed >= 4 and b.spent.usd <= charge.usd * 4


def test_per_sample_must_bound_what_the_budget_limits() -> None:
    with budget(usd=1), pytest.raises(ValueError, match="no worst case for usd"):
        self_consistency(lambda: "1", n=2, per_sample=Demand(max_output_tokens=10))
    with budget(output_tokens=10), pytest.raises(ValueError, match="output cap"):
        self_consistency(lambda: "1", n=2, per_sample=Demand())


def test_a_sample_cannot_outspend_its_slice() -> None:
    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    def ask() -> dict[str, Any]:
        return chat_body("7")

    def two_calls() -> Any:
        ask()
        return ask()  # the slice allows one call

    per_sample = Demand(max_output_tokens=100)
    with budget(calls=10) as b, pytest.raises(BudgetExceeded) as refused:
        self_consistency(two_calls, n=3, concurrency=1, per_sample=per_sample)
    # the second call of the first sample is refused by its slice: nothing overspent, and
    # a refused sample stops further launches (nothing completed: the refusal is raised)
    assert refused.value.budget_name == "budget[sample 0]" and refused.value.limit == "calls"
    assert any("raise per_sample" in note for note in getattr(refused.value, "__notes__", []))
    assert b.spent.calls == 1 and b.reserved.is_zero()
    with budget(calls=10) as b:
        result = self_consistency(
            two_calls, n=3, concurrency=1, per_sample=Charge(100, 100, 0, calls=2), stop=None
        )
    assert result.completed == 3 and b.spent.calls == 6


def test_without_per_sample_refused_samples_stop_further_launches() -> None:
    source = scripted_llm(["1"] * 10)
    with budget(calls=3) as b:
        serial = self_consistency(source, n=10, concurrency=1, stop=None)
    assert serial.launched == 3 and serial.completed == 3 and serial.budget_limited
    assert b.spent.calls == 3
    with budget(calls=3) as b:
        wide = self_consistency(source, n=10, concurrency=6, stop=None)
    assert wide.completed == 3 and wide.launched == wide.completed + wide.refused
    assert wide.budget_limited and b.spent.calls == 3 and b.reserved.is_zero()


def test_a_budget_that_cannot_pay_for_one_sample_raises(telemetry: Telemetry) -> None:
    with budget(calls=0), pytest.raises(BudgetExceeded):
        self_consistency(lambda: "1", n=3, per_sample=Demand(max_output_tokens=1))
    assert telemetry.span("self_consistency").status.status_code is StatusCode.ERROR
    with budget(calls=0), pytest.raises(BudgetExceeded):
        self_consistency(lambda: "1", n=3)


def test_unbudgeted_groups_still_count_their_spend() -> None:
    result = self_consistency(scripted_llm(["1", "1"]), n=2, stop=None)
    assert result.spent.calls == 2 and result.spent.total_tokens == 60


def test_samples_cancelled_before_they_started_give_their_reservation_back() -> None:
    # Stopping right after the first answer cancels samples whose thread had not even
    # started yet: their per-sample reservations must come back too (over many groups,
    # some surely are in that state).
    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    def ask() -> dict[str, Any]:
        return chat_body("1")

    with budget(output_tokens=100_000) as b:
        for _ in range(40):
            self_consistency(
                ask,
                n=8,
                concurrency=8,
                per_sample=Demand(max_output_tokens=100),
                stop=stop_after_completed(1),
            )
        for _ in range(int(GUARD / 0.01)):  # abandoned running threads finish on their own
            if b.in_flight == 0:
                break
            threading.Event().wait(0.01)
    assert b.in_flight == 0 and b.reserved.is_zero()


def test_groups_nest(telemetry: Telemetry) -> None:
    # best-of-3 over self-consistent answers: each outer sample is itself a group
    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    def ask() -> dict[str, Any]:
        return chat_body(f"answer {index() % 2 + 1}")

    def inner() -> str:
        result = self_consistency(ask, n=3, concurrency=3, stop=None, name="inner")
        return f"{result.answer}"

    with budget(calls=100) as b:
        outer = best_of_n(
            inner, n=3, concurrency=3, verifier=lambda c: float(c.value), name="outer"
        )
    assert outer.value == "1" and b.spent.calls == 9 and outer.spent == b.spent
    (group,) = telemetry.spans("outer")
    inners = telemetry.spans("inner")
    assert group.context is not None and len(inners) == 3
    assert all(s.parent is not None and s.parent.span_id == group.context.span_id for s in inners)
    inner_ids = {s.context.span_id for s in inners if s.context is not None}
    calls = telemetry.spans("chat o3")
    assert len(calls) == 9 and all(
        c.parent is not None and c.parent.span_id in inner_ids for c in calls
    )
