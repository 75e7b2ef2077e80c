"""BudgetRunnable and RetryRunnable around real ChatOpenAI / ChatAnthropic chains: the
budget holds across steps and under batch concurrency, a step it cannot pay is refused
before its HTTP request, retries are the core's (one span, attempts as events) and the
SDKs' own retries are off."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tcc_plugin import Budget, BudgetExceeded, RetriesExhausted, RetryPolicy, budget
from tcc_plugin.budget import active_budgets
from tcc_plugin.integrations.langchain import (
    BudgetRunnable,
    RetryRunnable,
    with_budget,
    with_retries,
    without_provider_retries,
)

from ...conftest import Telemetry
from ..conftest import (
    MockAPI,
    anthropic_error,
    anthropic_message,
    anthropic_usage,
    chat_chunks,
    chat_completion,
    chat_usage,
    json_response,
    openai_error,
    sse_response,
)
from .conftest import haiku_cost, make_anthropic, make_openai, o3_cost


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


class Clock:
    """Injected into RetryPolicy: records waits, never sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def policy(clock: Clock, **kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("jitter", 0)
    return RetryPolicy(sleep=clock.sleep, async_sleep=clock.async_sleep, clock=clock, **kwargs)


def two_step_chain(openai_api: MockAPI, anthropic_api: MockAPI) -> Any:
    """plan (Claude) -> solve (o3)."""
    plan = (
        ChatPromptTemplate.from_messages([("human", "Plan how to solve: {question}")])
        | make_anthropic(anthropic_api, max_tokens=1024)
        | StrOutputParser()
    )
    solve = (
        ChatPromptTemplate.from_messages([("human", "Follow this plan: {plan}")])
        | make_openai(openai_api, max_tokens=1000)
        | StrOutputParser()
    )
    return {"plan": plan} | solve


# -- BudgetRunnable -------------------------------------------------------------------------
def test_budget_holds_across_the_steps_of_a_chain(
    telemetry: Telemetry, openai_api: MockAPI, anthropic_api: MockAPI
) -> None:
    plan_usage = anthropic_usage(30, 200, thinking=0)
    anthropic_api.queue(
        json_response(anthropic_message(plan_usage, model="claude-haiku-4-5", thinking=False)),
        json_response(anthropic_message(plan_usage, model="claude-haiku-4-5", thinking=False)),
    )
    openai_api.queue(json_response(chat_completion(chat_usage(250, 400, reasoning=300))))
    shared = Budget(usd="0.012", name="agent")
    agent = BudgetRunnable(bound=two_step_chain(openai_api, anthropic_api), budget=shared)

    assert agent.invoke({"question": "What is 2+2?"}) == "4"
    first = haiku_cost(30, 200) + o3_cost(250, 400)
    assert first == Decimal("0.00473")  # (30 x $1 + 200 x $5 + 250 x $2 + 400 x $8) / 1M
    assert shared.spent.usd == first and shared.spent.calls == 2

    # Second run: the plan (worst case 1024 x $5 plus its input) still fits, then the
    # solve step (1000 x $8 = $0.008 at worst) no longer does: refused before its request.
    with pytest.raises(BudgetExceeded) as refused:
        agent.invoke({"question": "What is 3+3?"})
    assert refused.value.limit == "usd" and refused.value.budget_name == "agent"
    assert anthropic_api.count == 2 and openai_api.count == 1
    assert shared.spent.usd == first + haiku_cost(30, 200)
    assert shared.spent.calls == 3 and shared.in_flight == 0
    assert active_budgets() == ()


def test_batch_shares_one_budget_across_threads(telemetry: Telemetry, openai_api: MockAPI) -> None:
    openai_api.queue(*[json_response(chat_completion(chat_usage(20, 50))) for _ in range(3)])
    shared = Budget(calls=3)
    runnable = BudgetRunnable(bound=make_openai(openai_api), budget=shared)
    results = runnable.batch(list("abcde"), return_exceptions=True)
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 2
    assert openai_api.count == 3 and shared.spent.calls == 3
    assert shared.spent.total_tokens == 210 and shared.in_flight == 0


def test_a_budget_factory_gives_each_input_its_own_budget(openai_api: MockAPI) -> None:
    openai_api.queue(*[json_response(chat_completion(chat_usage(20, 50))) for _ in range(4)])
    made: list[Budget] = []

    def fresh() -> Budget:
        made.append(Budget(calls=1))
        return made[-1]

    runnable = BudgetRunnable(bound=make_openai(openai_api), budget=fresh)
    results = runnable.batch(list("abcd"))
    assert len(results) == 4 and openai_api.count == 4
    assert [b.spent.calls for b in made] == [1, 1, 1, 1]


def test_with_budget_one_liner_and_nesting(openai_api: MockAPI) -> None:
    openai_api.queue(*[json_response(chat_completion(chat_usage(20, 50))) for _ in range(2)])
    runnable = with_budget(make_openai(openai_api), calls=5, output_tokens=5000)
    with budget(calls=1) as outer:  # the caller's budget still applies: a child never outspends it
        runnable.invoke("a")
        with pytest.raises(BudgetExceeded) as refused:
            runnable.invoke("b")
    assert refused.value.limit == "calls" and outer.spent.calls == 1
    with pytest.raises(TypeError):
        with_budget(make_openai(openai_api))


async def test_ainvoke_and_abatch(openai_api: MockAPI, anthropic_api: MockAPI) -> None:
    openai_api.queue(*[json_response(chat_completion(chat_usage(20, 50))) for _ in range(3)])
    shared = Budget(calls=3, output_tokens=10_000)
    runnable = BudgetRunnable(bound=make_openai(openai_api), budget=shared)
    reply = await runnable.ainvoke("a")
    assert reply.content == "4"
    results = await runnable.abatch(["b", "c", "d"], return_exceptions=True)
    assert sum(isinstance(r, BudgetExceeded) for r in results) == 1
    assert shared.spent.calls == 3 and shared.spent.output_tokens == 150


def test_stream_passes_chunks_through_without_leaking_the_scope(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    openai_api.queue(sse_response(chat_chunks(["2", "+2", "=4"], chat_usage(30, 90, reasoning=60))))
    shared = Budget(usd="0.01")
    chain = BudgetRunnable(
        bound=make_openai(openai_api, stream_usage=True) | StrOutputParser(), budget=shared
    )
    seen: list[str] = []
    for chunk in chain.stream("2+2?"):
        assert active_budgets() == ()  # the consumer runs outside the budget scope
        seen.append(chunk)
    assert "".join(seen) == "2+2=4" and len(seen) >= 3
    assert shared.spent.usd == o3_cost(30, 90) and shared.spent.reasoning_tokens == 60


async def test_astream(openai_api: MockAPI) -> None:
    openai_api.queue(
        sse_response(chat_chunks(["4"], chat_usage(30, 90)), asynchronous=True),
    )
    shared = Budget(usd="0.01")
    runnable = BudgetRunnable(bound=make_openai(openai_api, stream_usage=True), budget=shared)
    chunks = []
    async for chunk in runnable.astream("2+2?"):
        assert active_budgets() == ()
        chunks.append(chunk)
    assert "".join(str(c.content) for c in chunks) == "4"
    assert shared.spent.usd == o3_cost(30, 90)


def test_budget_runnable_is_a_langchain_run(openai_api: MockAPI) -> None:
    from langchain_core.tracers.context import collect_runs

    openai_api.queue(json_response(chat_completion(chat_usage(1, 1))))
    runnable = with_budget(make_openai(openai_api), calls=1)
    with collect_runs() as collected:
        runnable.invoke("a")
    root = collected.traced_runs[0]
    assert root.name == "BudgetRunnable"
    assert [c.name for c in root.child_runs] == ["ChatOpenAI"]


# -- RetryRunnable --------------------------------------------------------------------------
def test_retry_is_one_call_with_attempts_and_no_sdk_retries(
    telemetry: Telemetry, openai_api: MockAPI
) -> None:
    clock = Clock()
    openai_api.queue(
        json_response(
            openai_error(429, "Rate limit reached", "requests", "rate_limit_exceeded"),
            status=429,
            headers={"retry-after-ms": "1500"},
        ),
        json_response(chat_completion(chat_usage(10, 30))),
    )
    model = make_openai(openai_api)  # the SDK would retry twice by itself
    retried = RetryRunnable(bound=model, policy=policy(clock))
    with budget(calls=1) as b:  # a retry is the same call
        assert retried.invoke("2+2?").content == "4"
    assert openai_api.count == 2
    assert [r.headers.get("x-stainless-retry-count") for r in openai_api.requests] == ["0", "0"]
    assert clock.waits == [1.5]  # Retry-After honoured
    assert b.spent.calls == 1 and b.spent.total_tokens == 40 and b.in_flight == 0
    span = telemetry.span("chat o3")
    assert attrs(span)["tcc.retry.attempts"] == 2
    events = [e for e in span.events if e.name == "tcc.retry.attempt"]
    assert len(events) == 1 and events[0].attributes["tcc.retry.decision"] == "retry"
    assert model.max_retries is None  # the user's model is left as it is


def test_without_retry_runnable_the_sdk_retries_by_itself(openai_api: MockAPI) -> None:
    rate_limited = json_response(
        openai_error(429, "Rate limit reached", "requests"),
        status=429,
        headers={"retry-after-ms": "1"},
    )
    openai_api.queue(rate_limited, rate_limited, json_response(chat_completion(chat_usage(1, 1))))
    make_openai(openai_api).invoke("2+2?")
    assert openai_api.count == 3  # which is why RetryRunnable turns it off


def test_anthropic_overloaded_retried_then_exhausted(
    telemetry: Telemetry, anthropic_api: MockAPI
) -> None:
    clock = Clock()
    overloaded = json_response(
        anthropic_error("overloaded_error", "Overloaded"), status=529, headers={"retry-after": "2"}
    )
    anthropic_api.queue(overloaded, overloaded, overloaded)
    retried = with_retries(make_anthropic(anthropic_api), policy(clock, max_attempts=3))
    with budget(calls=5) as b, pytest.raises(RetriesExhausted) as gave_up:
        retried.invoke("2+2?")
    assert gave_up.value.attempts == 3
    assert anthropic_api.count == 3 and clock.waits == [2.0, 2.0]
    assert b.spent.calls == 1 and b.in_flight == 0
    span = telemetry.span("chat claude-haiku-4-5")
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["tcc.retry.attempts"] == 3


async def test_async_retry(telemetry: Telemetry, openai_api: MockAPI) -> None:
    clock = Clock()
    openai_api.queue(
        json_response(openai_error(500, "server error", "server_error"), status=500),
        json_response(chat_completion(chat_usage(10, 30))),
    )
    retried = RetryRunnable(bound=make_openai(openai_api), policy=policy(clock, initial_wait=0.25))
    with budget(calls=1):
        reply = await retried.ainvoke("2+2?")
    assert reply.content == "4" and clock.waits == [0.25] and openai_api.count == 2


def test_budget_refusals_and_client_errors_are_not_retried(openai_api: MockAPI) -> None:
    clock = Clock()
    retried = RetryRunnable(bound=make_openai(openai_api, max_tokens=500), policy=policy(clock))
    with budget(output_tokens=100), pytest.raises(BudgetExceeded):
        retried.invoke("2+2?")
    openai_api.queue(json_response(openai_error(400, "bad", "invalid_request_error"), status=400))
    import openai

    with pytest.raises(openai.BadRequestError):
        retried.invoke("2+2?")
    assert openai_api.count == 1 and clock.waits == []


def test_retry_around_a_chain_retries_the_failed_step_only_as_one_call(
    telemetry: Telemetry, openai_api: MockAPI, anthropic_api: MockAPI
) -> None:
    clock = Clock()
    anthropic_api.queue(
        json_response(anthropic_message(anthropic_usage(30, 200), thinking=False)),
        json_response(anthropic_message(anthropic_usage(30, 200), thinking=False)),
    )
    openai_api.queue(
        json_response(openai_error(503, "unavailable", "server_error"), status=503),
        json_response(chat_completion(chat_usage(250, 400))),
    )
    chain = RetryRunnable(bound=two_step_chain(openai_api, anthropic_api), policy=policy(clock))
    with budget(calls=10) as b:
        assert chain.invoke({"question": "2+2?"}) == "4"
    # The whole chain ran again: the plan twice (two calls), the solve once with a retry.
    assert anthropic_api.count == 2 and openai_api.count == 2
    assert b.spent.calls == 3
    assert attrs(telemetry.span("chat o3"))["tcc.retry.attempts"] == 2
    assert len(telemetry.spans("chat claude-haiku-4-5")) == 2


def test_a_parser_error_is_not_retried(openai_api: MockAPI) -> None:
    clock = Clock()
    openai_api.queue(json_response(chat_completion(chat_usage(1, 1))))

    def parse(text: str) -> int:
        raise ValueError(f"not a number: {text!r}")

    chain = RetryRunnable(
        bound=make_openai(openai_api) | StrOutputParser() | RunnableLambda(parse),
        policy=policy(clock),
    )
    with pytest.raises(ValueError, match="not a number"):
        chain.invoke("2+2?")
    assert openai_api.count == 1 and clock.waits == []


def test_stream_retried_before_its_first_chunk(telemetry: Telemetry, openai_api: MockAPI) -> None:
    clock = Clock()
    openai_api.queue(
        json_response(openai_error(502, "bad gateway", "server_error"), status=502),
        sse_response(chat_chunks(["4"], chat_usage(30, 90))),
    )
    retried = RetryRunnable(bound=make_openai(openai_api, stream_usage=True), policy=policy(clock))
    with budget(calls=1) as b:
        text = "".join(str(c.content) for c in retried.stream("2+2?"))
    assert text == "4" and openai_api.count == 2 and len(clock.waits) == 1
    assert b.spent.total_tokens == 120 and b.spent.calls == 1
    assert attrs(telemetry.span("chat o3"))["tcc.retry.attempts"] == 2


async def test_astream_retried_before_its_first_chunk(openai_api: MockAPI) -> None:
    clock = Clock()
    openai_api.queue(
        json_response(openai_error(500, "oops", "server_error"), status=500),
        sse_response(chat_chunks(["4"], chat_usage(30, 90)), asynchronous=True),
    )
    retried = RetryRunnable(bound=make_openai(openai_api, stream_usage=True), policy=policy(clock))
    with budget(calls=1) as b:
        chunks = [c async for c in retried.astream("2+2?")]
    assert "".join(str(c.content) for c in chunks) == "4"
    assert openai_api.count == 2 and b.spent.total_tokens == 120


def test_retry_deadline_is_the_budget_s(openai_api: MockAPI) -> None:
    clock = Clock()
    openai_api.queue(
        json_response(
            openai_error(429, "slow down", "requests"), status=429, headers={"retry-after": "30"}
        )
    )
    retried = RetryRunnable(bound=make_openai(openai_api), policy=policy(clock))
    with budget(deadline=10), pytest.raises(RetriesExhausted) as gave_up:
        retried.invoke("2+2?")
    assert "deadline" in str(gave_up.value) and clock.waits == [] and openai_api.count == 1


# -- turning the SDKs' retries off ------------------------------------------------------------
def test_without_provider_retries_copies_models_inside_chains(
    openai_api: MockAPI, anthropic_api: MockAPI
) -> None:
    from langchain_anthropic import ChatAnthropic

    openai_model = make_openai(openai_api)
    lazy_claude = ChatAnthropic(model="claude-haiku-4-5", api_key="sk-ant-test", max_tokens=10)
    built_claude = make_anthropic(anthropic_api)  # clients already built (and cached)
    chain = (
        ChatPromptTemplate.from_messages([("human", "{q}")])
        | {"a": openai_model, "b": lazy_claude.bind(stop=["x"])}
        | RunnableLambda(lambda d: d)
    )
    quiet = without_provider_retries(chain)
    quiet_openai = quiet.middle[0].steps__["a"]
    quiet_lazy = quiet.middle[0].steps__["b"].bound
    assert quiet_openai is not openai_model and quiet_openai.max_retries == 0
    assert quiet_openai.root_client.max_retries == 0
    assert quiet_openai.client._client is quiet_openai.root_client
    assert quiet_openai.async_client._client.max_retries == 0
    assert quiet_lazy.max_retries == 0 and quiet_lazy._client.max_retries == 0
    quiet_built = without_provider_retries(built_claude)
    assert quiet_built._client.max_retries == 0 and quiet_built._async_client.max_retries == 0
    # the mocked transport is kept
    assert quiet_built._client._client is built_claude._client._client
    # the originals are untouched
    assert openai_model.root_client.max_retries == 2 and built_claude._client.max_retries == 2
    assert lazy_claude.max_retries == 2


def test_retry_runnable_composes_with_pipe(openai_api: MockAPI) -> None:
    clock = Clock()
    openai_api.queue(
        json_response(openai_error(500, "oops", "server_error"), status=500),
        json_response(chat_completion(chat_usage(1, 1), contents=("42",))),
    )
    chain = (
        ChatPromptTemplate.from_messages([("human", "{q}")])
        | RetryRunnable(bound=make_openai(openai_api), policy=policy(clock))
        | StrOutputParser()
    )
    assert chain.invoke({"q": "6x7?"}) == "42"
    assert asyncio.iscoroutinefunction(chain.ainvoke)


def test_a_stream_left_half_read_is_settled(openai_api: MockAPI) -> None:
    import gc

    openai_api.queue(sse_response(chat_chunks(["a", "b", "c"], chat_usage(30, 90))))
    shared = Budget(output_tokens=5000)
    runnable = BudgetRunnable(bound=make_openai(openai_api, stream_usage=True), budget=shared)
    stream = runnable.stream("go")
    next(stream)
    stream.close()
    del stream
    gc.collect()
    assert shared.in_flight == 0 and shared.spent.calls == 1
    assert active_budgets() == ()
