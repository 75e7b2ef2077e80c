"""Routing over real, instrumented OpenAI clients whose HTTP is an ``httpx2.MockTransport``:
the self-assessment call is charged and traced under the routing span, the chosen
route's call is its child, and log-probabilities are read from a real response."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tcc_plugin import budget
from tcc_plugin.routing import Route, Router, accept_logprob, cascade, self_assessed
from tcc_plugin.routing.telemetry import ROUTE_DIFFICULTY, ROUTE_NAME

from ..conftest import Telemetry
from .conftest import MockAPI, chat_completion, chat_usage, json_response

openai = pytest.importorskip("openai")
pytest.importorskip("tcc_plugin.integrations.openai")
from tcc_plugin.instrument import instrument  # noqa: E402

# gpt-4o-mini: $0.15 / M input, $0.60 / M output; o3: $2 / M input, $8 / M output.
MINI_IN, MINI_OUT = Decimal("0.15") / 10**6, Decimal("0.60") / 10**6
O3_IN, O3_OUT = Decimal(2) / 10**6, Decimal(8) / 10**6


def ask_with(client: Any, model: str, max_tokens: int) -> Any:
    def ask(prompt: str) -> Any:
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_completion_tokens=max_tokens,
        )

    return ask


def test_self_assessment_and_the_chosen_route_are_charged_and_nested(
    api: MockAPI, openai_client: Any, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(
        json_response(chat_completion(chat_usage(60, 1), model="gpt-4o-mini", contents=["8"])),
        json_response(chat_completion(chat_usage(20, 500, reasoning=480), contents=["1729"])),
    )
    router = Router(
        [
            Route("cheap", ask_with(client, "gpt-4o-mini", 50), up_to=0.5),
            Route("think", ask_with(client, "o3", 2000)),
        ],
        self_assessed(ask_with(client, "gpt-4o-mini", 5)),
    )
    with budget(usd=1) as b:
        result = router.run("The smallest number expressible as a sum of two cubes twice?")
    assert (result.route, result.difficulty) == ("think", 0.8)
    assert result.answer.choices[0].message.content == "1729"
    assessment = 60 * MINI_IN + 1 * MINI_OUT
    answer = 20 * O3_IN + 500 * O3_OUT
    assert b.spent.usd == assessment + answer  # $0.0000096 + $0.00404
    assert b.spent.calls == 2
    assert b.spent.reasoning_tokens == 480

    route_span = telemetry.span("route router")
    assert route_span.attributes[ROUTE_NAME] == "think"
    assert route_span.attributes[ROUTE_DIFFICULTY] == 0.8
    calls = [s for s in telemetry.spans() if s.name.startswith("chat ")]
    assert [s.name for s in calls] == ["chat gpt-4o-mini", "chat o3"]
    assert all(
        s.parent is not None and s.parent.span_id == route_span.context.span_id for s in calls
    )
    prompt = api.body(0)["messages"][0]["content"]
    assert "from 0 (trivial" in prompt and "sum of two cubes" in prompt


def logprob_completion(logprobs: list[float], text: str) -> dict[str, Any]:
    body = chat_completion(chat_usage(12, len(logprobs)), model="gpt-4o-mini", contents=[text])
    body["choices"][0]["logprobs"] = {
        "content": [
            {"token": f"t{i}", "logprob": lp, "bytes": [116], "top_logprobs": []}
            for i, lp in enumerate(logprobs)
        ],
        "refusal": None,
    }
    return body


def test_a_cascade_escalates_on_low_token_probability(
    api: MockAPI, openai_client: Any, telemetry: Telemetry
) -> None:
    client = instrument(openai_client)
    api.queue(
        json_response(logprob_completion([-0.9, -1.2, -0.6], "maybe 12")),  # mean p = 0.407
        json_response(chat_completion(chat_usage(12, 300, reasoning=290), contents=["14"])),
    )

    def cheap(question: str) -> Any:
        return client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}],
            max_completion_tokens=20, logprobs=True,
        )  # fmt: skip

    strong = ask_with(client, "o3", 1000)
    with budget(usd=1) as b:
        result = cascade([Route("cheap", cheap), Route("strong", strong)], accept_logprob(0.8)).run(
            "What is 2 x 7?"
        )
    assert (result.route, result.escalations) == ("strong", 1)
    assert result.attempts[0].detail == "mean token probability 0.407"
    assert api.body(0)["logprobs"] is True
    assert b.spent.calls == 2
    assert b.spent.usd == 12 * MINI_IN + 3 * MINI_OUT + 12 * O3_IN + 300 * O3_OUT


async def test_async_router_over_an_async_client(
    api: MockAPI, async_openai_client: Any, telemetry: Telemetry
) -> None:
    client = instrument(async_openai_client)
    api.queue(json_response(chat_completion(chat_usage(9, 2), model="gpt-4o-mini", contents=["4"])))

    async def cheap(question: str) -> Any:
        return await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}],
            max_completion_tokens=20,
        )  # fmt: skip

    router = Router([Route("cheap", cheap, up_to=0.5), Route("think", cheap)], lambda q: 0.1)
    with budget(calls=1):
        answer = await router.acall("What is 2 + 2?")
    assert answer.choices[0].message.content == "4"
    span = telemetry.span("chat gpt-4o-mini")
    assert span.parent is not None
    assert span.parent.span_id == telemetry.span("route router").context.span_id
