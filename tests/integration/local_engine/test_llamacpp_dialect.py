"""The llama.cpp dialect through a standard ``openai.OpenAI(base_url=...)`` against the
real local server: provider, exact reasoning tokens, GPU-hour cost, clamps, ``n``."""

from __future__ import annotations

import time
from typing import Any

import openai

import tcc_plugin
from tcc_plugin.app.local_engine import LocalEngine
from tcc_plugin.integrations.server_dialect import reasoning_of

from .conftest import SYSTEM, Tokens

QUESTION: Any = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is 6*7?"},
]


def test_chat_usage_is_exact(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, qwen_tokens: Tokens, telemetry: Any
) -> None:
    model = qwen_engine.alias
    response = qwen.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=24, temperature=0
    )
    reasoning = reasoning_of(response.choices[0].message)
    assert reasoning
    usage: Any = response.usage
    assert usage.prompt_tokens == qwen_tokens.chat(QUESTION)
    # reasoning tokens: /tokenize of the thought, written into the response's usage
    exact = qwen_tokens.count(reasoning)
    assert usage.completion_tokens_details.reasoning_tokens == exact
    assert 0 < exact <= usage.completion_tokens <= 24
    span = telemetry.span(f"chat {model}")
    assert span.attributes["gen_ai.provider.name"] == "llama.cpp"
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == exact
    assert span.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert span.attributes["tcc.cost.usd"] > 0  # GPU-hour price x its share of wall time
    assert span.attributes["server.address"] == "127.0.0.1"


def test_n_choices_are_normalised(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, qwen_tokens: Tokens, telemetry: Any
) -> None:
    model = qwen_engine.alias
    # every choice runs into max_tokens, so the exact total is known: 3 x 6
    response = qwen.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=6, n=3, temperature=1.0, seed=11
    )
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in response.choices)
    usage: Any = response.usage
    assert usage.completion_tokens == 18
    assert usage.prompt_tokens == qwen_tokens.chat(QUESTION)  # the prompt, once
    reasoning = sum(qwen_tokens.count(reasoning_of(c.message) or "") for c in response.choices)
    assert usage.completion_tokens_details.reasoning_tokens == reasoning
    span = telemetry.span(f"chat {model}")
    assert span.attributes["gen_ai.request.choice.count"] == 3
    assert span.attributes["gen_ai.usage.output_tokens"] == 18


def test_streaming_reports_exact_usage(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, qwen_tokens: Tokens, telemetry: Any
) -> None:
    model = qwen_engine.alias
    stream = qwen.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    thought = "".join(reasoning_of(c.choices[0].delta) or "" for c in chunks if c.choices)
    final: Any = chunks[-1]
    assert final.choices == []
    assert final.usage.completion_tokens == 8
    assert final.usage.completion_tokens_details.reasoning_tokens == qwen_tokens.count(thought)
    span = telemetry.span(f"chat {model}")
    assert span.attributes["gen_ai.usage.output_tokens"] == 8
    assert span.attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_streaming_n_choices(qwen: openai.OpenAI, qwen_engine: LocalEngine) -> None:
    stream = qwen.chat.completions.create(
        model=qwen_engine.alias,
        messages=QUESTION,
        max_tokens=5,
        n=2,
        temperature=1.0,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks: Any = list(stream)
    assert {ch.index for c in chunks for ch in c.choices} == {0, 1}
    assert chunks[-1].usage.completion_tokens == 10


def test_raw_completion_stops_at_a_stop_string(
    gemma: openai.OpenAI, gemma_engine: LocalEngine, gemma_tokens: Tokens, telemetry: Any
) -> None:
    prompt = "Counting: 1, 2, 3, 4,"
    response = gemma.completions.create(
        model=gemma_engine.alias, prompt=prompt, max_tokens=20, stop=[" 7"], temperature=0
    )
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert " 7" not in choice.text
    usage: Any = response.usage
    assert usage.prompt_tokens == gemma_tokens.count(prompt, add_special=True)
    span = telemetry.span(f"text_completion {gemma_engine.alias}")
    assert span.attributes.get("gen_ai.usage.reasoning.output_tokens", 0) == 0


def test_raw_completion_with_n(gemma: openai.OpenAI, gemma_engine: LocalEngine) -> None:
    response = gemma.completions.create(
        model=gemma_engine.alias, prompt="The sky is", max_tokens=4, n=2, temperature=1.0, seed=5
    )
    assert len(response.choices) == 2
    assert response.usage is not None and response.usage.completion_tokens == 8


def test_a_clamp_budget_shrinks_max_tokens(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, telemetry: Any
) -> None:
    model = qwen_engine.alias
    with tcc_plugin.budget(output_tokens=5, policy="clamp") as scope:
        response = qwen.chat.completions.create(
            model=model, messages=QUESTION, max_tokens=200, temperature=0
        )
    assert response.usage is not None and response.usage.completion_tokens <= 5
    assert scope.spent.output_tokens == response.usage.completion_tokens
    span = telemetry.span(f"chat {model}")
    assert span.attributes["tcc.budget.clamped.max_tokens"] == 5


async def test_the_async_client(aqwen: openai.AsyncOpenAI, qwen_engine: LocalEngine) -> None:
    model = qwen_engine.alias
    response = await aqwen.chat.completions.create(
        model=model, messages=QUESTION, max_tokens=6, n=2, temperature=1.0, seed=1
    )
    assert response.usage is not None and response.usage.completion_tokens == 12
    stream = await aqwen.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_tokens=4,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks: Any = [c async for c in stream]
    assert chunks[-1].usage.completion_tokens == 4


def test_concurrent_calls_share_the_gpu_hour(qwen_engine: LocalEngine, telemetry: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    model = qwen_engine.alias
    # $3600 per hour: a call costs its share of the server's seconds, in dollars
    with qwen_engine.client(gpu_price=3600) as client:

        def ask(_: int) -> Any:
            return client.chat.completions.create(
                model=model, messages=QUESTION, max_tokens=16, temperature=0
            )

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(ask, range(2)))
        window = time.perf_counter() - start
    spans = telemetry.spans(f"chat {model}")
    costs = [s.attributes["tcc.cost.usd"] for s in spans]
    durations = [(s.end_time - s.start_time) / 1e9 for s in spans]
    assert len(costs) == 2
    # shared time adds up to (about) the time the server was busy, not to the sum of
    # the calls' wall times
    assert sum(costs) <= window * 1.05 + 0.05
    assert sum(costs) < sum(durations)
