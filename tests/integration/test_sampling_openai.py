"""Sampling over real, instrumented OpenAI clients whose HTTP is an ``httpx2.MockTransport``.

Each sample asks with its own ``seed`` (its sample index); the mock server answers by
seed, so the outcome is deterministic whatever the scheduling.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from tcc_plugin import budget
from tcc_plugin.sampling import (
    aself_consistency,
    best_of_n,
    current_sample,
    launch_all,
    llm_judge,
    self_consistency,
    stop_confident,
    worst_case,
)

from ..conftest import Telemetry

httpx2 = pytest.importorskip("httpx2")
openai = pytest.importorskip("openai")
pytest.importorskip("tcc_plugin.integrations.openai")
from tcc_plugin.instrument import instrument  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 6 x 7? End with 'Final Answer: N'."}]
MAX_TOKENS = 400


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def completion(
    content: str, prompt: int = 25, completion_tokens: int = 60, reasoning: int = 40
) -> Any:
    """A chat completion response as the OpenAI API documents it."""
    return httpx2.Response(
        200,
        json={
            "id": "chatcmpl-sc",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": "o3-2025-04-16",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": content, "refusal": None},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": reasoning},
            },
        },
    )


class Server:
    """Answers ``answers[seed]``; seeds in ``hang`` never answer (async only)."""

    def __init__(self, answers: list[str], hang: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.answers = answers
        self.hang = hang
        self.bodies: list[dict[str, Any]] = []
        self.hung = 0
        self.all_hung = asyncio.Event() if hang else None

    def handler(self, request: Any) -> Any:
        body = json.loads(request.content)
        self.bodies.append(body)
        return completion(f"6 x 7... Final Answer: {self.answers[body['seed']]}")

    async def ahandler(self, request: Any) -> Any:
        body = json.loads(request.content)
        self.bodies.append(body)
        if body["seed"] in self.hang:
            self.hung += 1
            if self.all_hung is not None and self.hung == len(self.hang):
                self.all_hung.set()
            await asyncio.sleep(3600)
        elif self.all_hung is not None:
            await asyncio.wait_for(self.all_hung.wait(), 30)  # the hung ones are in flight
        return completion(f"6 x 7... Final Answer: {self.answers[body['seed']]}")


def seed() -> int:
    ctx = current_sample()
    assert ctx is not None
    return ctx.index


def sync_client(server: Server) -> Any:
    client = openai.OpenAI(
        api_key="sk-test", http_client=httpx2.Client(transport=httpx2.MockTransport(server.handler))
    )
    return instrument(client)


def async_client(server: Server) -> Any:
    client = openai.AsyncOpenAI(
        api_key="sk-test",
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(server.ahandler)),
    )
    return instrument(client)


def test_self_consistency_over_an_instrumented_client(telemetry: Telemetry) -> None:
    server = Server(["42", "42", "24", "42", "42", "42", "41", "42"])
    client = sync_client(server)

    def sample() -> Any:
        return client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=MAX_TOKENS, seed=seed()
        )

    with budget(usd="1.00", name="question") as b:
        result = self_consistency(sample, n=8, concurrency=4, stop=None)
    assert result.answer == "42" and result.counts == {"42": 6, "24": 1, "41": 1}
    assert sorted(body["seed"] for body in server.bodies) == list(range(8))
    # o3: $2 / M input, $8 / M output (reasoning billed as output)
    per_call = (25 * Decimal(2) + 60 * Decimal(8)) / 10**6
    assert b.spent.usd == 8 * per_call and result.spent == b.spent
    assert b.spent.reasoning_tokens == 8 * 40 and b.reserved.is_zero()
    group = telemetry.span("self_consistency")
    assert group.context is not None
    calls = [s for s in telemetry.spans() if attrs(s).get("gen_ai.request.model") == "o3"]
    assert len(calls) == 8
    for call in calls:
        assert call.parent is not None and call.parent.span_id == group.context.span_id
        assert attrs(call)["tcc.budget.name"] == "question"
    assert attrs(group)["tcc.sampling.usage.reasoning_tokens"] == 320
    assert attrs(group)["tcc.sampling.cost.usd"] == pytest.approx(float(8 * per_call))


def test_per_sample_worst_case_caps_what_is_launched() -> None:
    server = Server(["42"] * 10)
    client = sync_client(server)

    def sample() -> Any:
        return client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=MAX_TOKENS, seed=seed()
        )

    # generous input bound: the instrumented client estimates input from the request size
    each = worst_case("o3", provider="openai", max_output_tokens=MAX_TOKENS, input_tokens=500)
    with budget(usd=each.usd * 3) as b:
        result = self_consistency(sample, n=10, concurrency=10, per_sample=each, stop=None)
    # three worst cases fit at once; each settles far below it, so more launch later,
    # but never one the budget could not pay in full
    assert result.completed >= 3 and result.refused == 0 and result.failed == 0
    assert b.spent.usd <= each.usd * 3 and b.reserved.is_zero()
    assert result.launched == len(server.bodies)
    assert result.launched == 10 or result.budget_limited


def test_best_of_n_with_a_judge_on_the_same_client(telemetry: Telemetry) -> None:
    server = Server(["41", "42", "43"])
    client = sync_client(server)
    judged: list[str] = []

    def judge_handler(request: Any) -> Any:
        body = json.loads(request.content)
        prompt = body["messages"][0]["content"]
        judged.append(prompt)
        return completion(
            "Score: 10" if "Final Answer: 42" in prompt else "Score: 1",
            completion_tokens=5,
            reasoning=0,
        )

    judge_client = instrument(
        openai.OpenAI(
            api_key="sk-test",
            http_client=httpx2.Client(transport=httpx2.MockTransport(judge_handler)),
        )
    )

    def judge(prompt: str) -> Any:
        return judge_client.chat.completions.create(
            model="o3-mini",
            messages=[{"role": "user", "content": prompt}],
            max_completion_tokens=50,
        )

    def sample() -> Any:
        return client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=MAX_TOKENS, seed=seed()
        )

    with budget(calls=10) as b:
        result = best_of_n(sample, n=3, verifier=llm_judge(judge, question="What is 6 x 7?"))
    assert result.winner is not None and result.winner.index == 1 and result.score == 1.0
    assert len(judged) == 3 and b.spent.calls == 6 and result.spent == b.spent
    group = telemetry.span("best_of_n")
    assert group.context is not None
    judge_spans = [
        s for s in telemetry.spans() if attrs(s).get("gen_ai.request.model") == "o3-mini"
    ]
    assert len(judge_spans) == 3
    assert all(
        s.parent is not None and s.parent.span_id == group.context.span_id for s in judge_spans
    )


async def test_early_stop_cancels_in_flight_requests_and_releases_their_budget(
    telemetry: Telemetry,
) -> None:
    server = Server(["42"] * 8, hang={5, 6, 7})
    client = async_client(server)

    async def sample() -> Any:
        return await client.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=MAX_TOKENS, seed=seed()
        )

    async with budget(output_tokens=100_000, calls=100) as b:
        result = await aself_consistency(
            sample, n=8, concurrency=8, stop=stop_confident(0.95), launch=launch_all()
        )
        assert b.reserved.is_zero() and b.in_flight == 0  # settled before the group returned
    assert result.answer == "42" and result.stopped_early and result.cancelled == 3
    # five answers, and three cancelled requests charged their worst case (never zero)
    assert result.completed == 5 and b.spent.output_tokens == 5 * 60 + 3 * MAX_TOKENS
    assert sorted(c.index for c in result.candidates if c.status == "cancelled") == [5, 6, 7]
    calls = [s for s in telemetry.spans() if attrs(s).get("gen_ai.request.model") == "o3"]
    errors = [s for s in calls if s.status.status_code is StatusCode.ERROR]
    assert len(calls) == 8 and len(errors) == 3
    group_attrs = attrs(telemetry.span("self_consistency"))
    assert group_attrs["tcc.sampling.cancelled"] == 3 and group_attrs["tcc.sampling.stopped_early"]
