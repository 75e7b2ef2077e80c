"""BestOfNRunnable and SelfConsistencyRunnable over real chat models: the core's sampling
groups (one span parenting the samples' and the judge's calls), budgets that bound the
launches, cancelled samples that release their reservations."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from tcc_plugin import Budget, BudgetExceeded, RetryPolicy, budget
from tcc_plugin.integrations.langchain import (
    BestOfNRunnable,
    BudgetRunnable,
    RetryRunnable,
    SelfConsistencyRunnable,
    question_text,
    with_best_of_n,
    with_self_consistency,
)
from tcc_plugin.sampling import (
    Candidate,
    SamplingResult,
    launch_all,
    launch_sequential,
    stop_on_score,
)

from ...conftest import Telemetry
from ..conftest import (
    MockAPI,
    anthropic_message,
    anthropic_usage,
    chat_completion,
    chat_usage,
    json_response,
    openai_error,
)
from .conftest import haiku_cost, make_anthropic, make_openai, o3_cost


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def answer(text: str, completion: int = 40) -> Any:
    return json_response(
        chat_completion(chat_usage(20, completion, reasoning=30), contents=(text,))
    )


def test_self_consistency_one_group_span_parenting_its_samples(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    openai_api.queue(
        answer("So 2+2 = 4"), answer("It is 4."), answer("I get 5"), answer("Final Answer: 4")
    )
    solver = SelfConsistencyRunnable(bound=make_openai(openai_api), n=5, concurrency=1)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("agent") as agent, budget(usd="0.1") as b:
        winner = solver.invoke("What is 2+2?")
    assert isinstance(winner, AIMessage) and winner.content == "So 2+2 = 4"
    # 4, 4, 5, 4: with one sample left, 4 can no longer be overtaken.
    assert openai_api.count == 4
    assert b.spent.calls == 4 and b.spent.usd == 4 * o3_cost(20, 40)
    group = telemetry.span("self_consistency")
    assert group.parent is not None and group.parent.span_id == agent.get_span_context().span_id
    a = attrs(group)
    assert (a["tcc.sampling.launched"], a["tcc.sampling.completed"]) == (4, 4)
    assert a["tcc.sampling.stopped_early"] is True
    samples = telemetry.spans("chat o3")
    assert len(samples) == 4
    for span in samples:
        assert span.parent is not None and span.parent.span_id == group.context.span_id


def test_self_consistency_outputs(openai_api: MockAPI) -> None:
    openai_api.queue(answer("4"), answer("4"))
    solver = with_self_consistency(make_openai(openai_api), n=3, output="answer", concurrency=1)
    assert solver.invoke("2+2?") == "4"
    assert openai_api.count == 2  # 4, 4: the third sample cannot change the answer
    openai_api.queue(answer("7"), answer("7"))
    result = with_self_consistency(
        make_openai(openai_api), n=3, output="result", concurrency=1
    ).invoke("3+4?")
    assert isinstance(result, SamplingResult)
    assert result.answer == "7" and result.launched == 2 and result.requested == 3


def test_best_of_n_with_a_langchain_judge(
    telemetry: Telemetry, openai_api: MockAPI, anthropic_api: MockAPI
) -> None:
    openai_api.queue(answer("maybe 5"), answer("4"), answer("four-ish"))

    def judged(score: int) -> Any:
        return json_response(
            anthropic_message(
                anthropic_usage(60, 25),
                model="claude-haiku-4-5",
                thinking=False,
                text=f"Score: {score}",
            )
        )

    anthropic_api.queue(judged(2), judged(10), judged(6))
    judge = make_anthropic(anthropic_api, max_tokens=256)
    picker = BestOfNRunnable(
        bound=ChatPromptTemplate.from_messages([("human", "{question}")]) | make_openai(openai_api),
        n=3,
        verifier=judge,
        concurrency=1,
    )
    with budget(usd="0.1") as b:
        best = picker.invoke({"question": "What is 2+2?"})
    assert best.content == "4"
    judge_prompt = anthropic_api.body(0)["messages"][0]["content"]
    assert "What is 2+2?" in judge_prompt and "maybe 5" in judge_prompt
    assert b.spent.calls == 6
    assert b.spent.usd == 3 * o3_cost(20, 40) + 3 * haiku_cost(60, 25)
    group = telemetry.span("best_of_n")
    assert attrs(group)["tcc.sampling.completed"] == 3
    for span in telemetry.spans("chat o3") + telemetry.spans("chat claude-haiku-4-5"):
        assert span.parent is not None and span.parent.span_id == group.context.span_id


async def test_async_best_of_n_stops_on_score_and_releases_cancelled_samples(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    never = asyncio.Event()
    stuck = asyncio.Event()

    async def hang(request: Any) -> Any:
        stuck.set()
        await never.wait()
        raise AssertionError("not reached")

    async def fast(request: Any) -> Any:
        await stuck.wait()  # answer once the other sample is in flight
        return answer("4")

    openai_api.queue(hang, fast)

    def exact(candidate: Candidate[Any]) -> float:
        return 1.0 if candidate.text == "4" else 0.0

    picker = with_best_of_n(
        make_openai(openai_api),
        n=2,
        verifier=exact,
        stop=stop_on_score(1.0),
        launch=launch_all(),
        output="result",
    )
    with budget(output_tokens=10_000) as b:
        result = await picker.ainvoke("2+2?")
        assert b.in_flight == 0 and b.reserved.is_zero()  # the hung sample was cancelled
    assert result.value.content == "4" and result.cancelled == 1 and result.stopped_early
    # the hung request is charged its worst case (max_tokens=1000), never zero
    assert b.spent.output_tokens == 40 + 1000 and b.spent.calls == 2
    assert result.cancelled_spent.output_tokens == 1000


def test_the_budget_bounds_the_launches(openai_api: MockAPI) -> None:
    openai_api.queue(answer("4"), answer("5"))
    solver = SelfConsistencyRunnable(
        bound=make_openai(openai_api), n=5, concurrency=1, output="result"
    )
    with budget(calls=2) as b:
        result = solver.invoke("2+2?")
    assert openai_api.count == 2 and b.spent.calls == 2
    assert result.budget_limited and result.launched <= 3 and result.completed == 2
    with budget(calls=0), pytest.raises(BudgetExceeded):
        solver.invoke("2+2?")
    assert openai_api.count == 2


def test_stream_yields_the_winner_once_and_batch_runs_a_group_per_input(
    openai_api: MockAPI,
) -> None:
    openai_api.queue(answer("4"), answer("4"))
    solver = SelfConsistencyRunnable(
        bound=make_openai(openai_api) | StrOutputParser(), n=3, concurrency=1
    )
    assert list(solver.stream("2+2?")) == ["4"]
    openai_api.queue(answer("4"), answer("4"), answer("6"), answer("6"))
    assert solver.batch(["2+2?", "3+3?"], config={"max_concurrency": 1}) == ["4", "6"]


async def test_astream_and_abatch(openai_api: MockAPI) -> None:
    openai_api.queue(answer("4"), answer("4"))
    solver = SelfConsistencyRunnable(
        bound=make_openai(openai_api) | StrOutputParser(), n=3, concurrency=1
    )
    assert [c async for c in solver.astream("2+2?")] == ["4"]
    openai_api.queue(answer("9"), answer("9"))
    assert await solver.abatch(["4+5?"]) == ["9"]


def test_inside_a_budget_runnable(openai_api: MockAPI) -> None:
    openai_api.queue(answer("4"), answer("4"))
    shared = Budget(calls=10, name="solve")
    runnable = BudgetRunnable(
        bound=SelfConsistencyRunnable(bound=make_openai(openai_api), n=3, concurrency=1),
        budget=shared,
    )
    runnable.invoke("2+2?")
    assert shared.spent.calls == 2 and shared.in_flight == 0


def test_question_text_of_inputs() -> None:
    assert question_text("2+2?") == "2+2?"
    assert question_text({"question": "2+2?", "plan": "add"}) == "2+2?"
    assert question_text({"a": 1}) == "a: 1"
    assert question_text([HumanMessage("first"), HumanMessage("2+2?")]) == "2+2?"
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")]).invoke({"q": "2+2?"})
    assert question_text(prompt) == "Human: 2+2?"


def server_error() -> Any:
    return json_response(openai_error(500, "oops", "server_error"), status=500)


def test_each_sample_retried_on_its_own(telemetry: Telemetry, openai_api: MockAPI) -> None:
    waits: list[float] = []
    openai_api.queue(server_error(), answer("4"), answer("4"))
    retried = RetryRunnable(
        bound=make_openai(openai_api), policy=RetryPolicy(jitter=0, sleep=waits.append)
    )
    solver = SelfConsistencyRunnable(bound=retried, n=3, concurrency=1, output="answer")
    with budget(calls=2) as b:  # the retried sample is one call
        assert solver.invoke("2+2?") == "4"
    assert openai_api.count == 3 and b.spent.calls == 2 and len(waits) == 1
    attempts = sorted(attrs(s)["tcc.retry.attempts"] for s in telemetry.spans("chat o3"))
    assert attempts == [1, 2]


def test_a_failed_sample_inside_a_retried_group_is_not_taken_for_another(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    openai_api.queue(server_error(), answer("4"), answer("4"))
    group = RetryRunnable(
        bound=SelfConsistencyRunnable(bound=make_openai(openai_api), n=3, concurrency=1),
        policy=RetryPolicy(jitter=0, sleep=lambda s: None),
    )
    with budget(calls=5) as b:
        assert group.invoke("2+2?").content == "4"  # the group succeeded: no retry
    assert openai_api.count == 3 and b.spent.calls == 3 and b.in_flight == 0
    spans = telemetry.spans("chat o3")
    assert sorted(s.status.status_code.name for s in spans) == ["ERROR", "UNSET", "UNSET"]


def test_a_launch_policy_on_the_runnable_pays_only_for_what_the_vote_needs(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    openai_api.queue(*(answer("Final Answer: 4") for _ in range(5)))
    solver = SelfConsistencyRunnable(
        bound=make_openai(openai_api), n=5, launch=launch_sequential(), output="result"
    )
    with budget(usd="0.1") as b:
        result = solver.invoke("2+2?")
    # one at a time, the leader is unbeatable after three agreeing votes of five
    assert result.answer == "4" and result.launched == 3 and openai_api.count == 3
    assert result.cancelled == 0 and b.spent.calls == 3
    assert attrs(telemetry.span("self_consistency"))["tcc.sampling.launch"] == (
        "launch_sequential()"
    )
