"""The llama.cpp dialect against the real local server: usage normalised and exact."""

from __future__ import annotations

import time
from typing import Any

import tcc_plugin
from tcc_plugin.integrations.vllm import AsyncVLLMClient, VLLMClient

from .conftest import SYSTEM

QUESTION = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 6*7?"}]


def test_chat_usage_is_exact(qwen: VLLMClient, telemetry: Any) -> None:
    response = qwen.chat(QUESTION, max_tokens=24, temperature=0)
    choice = response.choices[0]
    assert choice.reasoning
    # the input, counted before the call through /apply-template + /tokenize, is what
    # the server billed; reasoning tokens are /tokenize of the reasoning text
    assert response.usage.input == qwen.count_chat_tokens(QUESTION)
    assert response.usage.reasoning == qwen.count_tokens(choice.reasoning)
    assert 0 < response.usage.reasoning <= response.usage.output <= 24
    span = telemetry.span(f"chat {qwen.model}")
    assert span.attributes["gen_ai.provider.name"] == "llama.cpp"
    assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == response.usage.reasoning
    assert span.attributes["tcc.cost.usd"] > 0
    assert span.attributes["server.address"] == "127.0.0.1"


def test_n_choices_sum_their_completion_tokens(qwen: VLLMClient, telemetry: Any) -> None:
    # every choice runs into max_tokens, so the exact total is known: 3 x 6
    response = qwen.chat(QUESTION, max_tokens=6, n=3, temperature=1.0, seed=11)
    assert len(response.choices) == 3
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in response.choices)
    assert response.usage.output == 18
    assert response.usage.input == qwen.count_chat_tokens(QUESTION)  # the prompt, once
    reasoning = sum(qwen.count_tokens(c.reasoning or "") for c in response.choices)
    assert response.usage.reasoning == reasoning
    span = telemetry.span(f"chat {qwen.model}")
    assert span.attributes["gen_ai.request.choice.count"] == 3
    assert span.attributes["gen_ai.usage.output_tokens"] == 18


def test_streaming_reports_usage(qwen: VLLMClient, telemetry: Any) -> None:
    with qwen.chat_stream(QUESTION, max_tokens=8, temperature=0) as stream:
        chunks = list(stream)
    reasoning = "".join(
        c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"]
    )
    final = chunks[-1]
    assert final["choices"] == []
    assert final["usage"]["completion_tokens"] == 8
    assert final["usage"]["completion_tokens_details"]["reasoning_tokens"] == qwen.count_tokens(
        reasoning
    )
    span = telemetry.span(f"chat {qwen.model}")
    assert span.attributes["gen_ai.usage.output_tokens"] == 8
    assert span.attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_streaming_n_choices(qwen: VLLMClient) -> None:
    stream = qwen.chat_stream(QUESTION, max_tokens=5, n=2, temperature=1.0, seed=3)
    chunks = list(stream)
    indices = {ch["index"] for c in chunks for ch in c["choices"]}
    assert indices == {0, 1}
    assert chunks[-1]["usage"]["completion_tokens"] == 10


def test_raw_completion_stops_at_a_stop_string(gemma: VLLMClient) -> None:
    prompt = "Counting: 1, 2, 3, 4,"
    response = gemma.complete(prompt, max_tokens=20, stop=[" 7"], temperature=0)
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert " 7" not in choice.text
    assert response.usage.input == gemma.count_tokens(prompt, add_special=True)
    assert response.usage.reasoning == 0


def test_raw_completion_with_n(gemma: VLLMClient) -> None:
    response = gemma.complete("The sky is", max_tokens=4, n=2, temperature=1.0, seed=5)
    assert len(response.choices) == 2
    assert response.usage.output == 8


def test_a_clamp_budget_shrinks_max_tokens(qwen: VLLMClient, telemetry: Any) -> None:
    with tcc_plugin.budget(output_tokens=5, policy="clamp") as scope:
        response = qwen.chat(QUESTION, max_tokens=200, temperature=0)
    assert response.usage.output <= 5
    assert scope.spent.output_tokens == response.usage.output
    span = telemetry.span(f"chat {qwen.model}")
    assert span.attributes["tcc.budget.clamped.max_tokens"] == 5


async def test_the_async_client(aqwen: AsyncVLLMClient) -> None:
    response = await aqwen.chat(QUESTION, max_tokens=6, n=2, temperature=1.0, seed=1)
    assert response.usage.output == 12
    stream = await aqwen.chat_stream(QUESTION, max_tokens=4, temperature=0)
    chunks = [c async for c in stream]
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_concurrent_calls_share_the_gpu_hour(qwen_engine: Any, telemetry: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # $3600 per hour: a call costs its share of the server's seconds, in dollars
    with qwen_engine.client(gpu_price=3600) as client:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda _: client.chat(QUESTION, max_tokens=16, temperature=0), range(2)))
        window = time.perf_counter() - start
    spans = telemetry.spans(f"chat {client.model}")
    costs = [s.attributes["tcc.cost.usd"] for s in spans]
    durations = [(s.end_time - s.start_time) / 1e9 for s in spans]
    assert len(costs) == 2
    # shared time adds up to (about) the time the server was busy, not to the sum of
    # the calls' wall times
    assert sum(costs) <= window * 1.05 + 0.05
    assert sum(costs) < sum(durations)
