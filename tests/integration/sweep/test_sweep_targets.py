"""Sweep targets on real OpenAI and Anthropic SDK clients (HTTP answered by
``httpx2.MockTransport``): each knob reaches the provider's request, each answer's
tokens and cost come from the instrumented call."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("openai")

from tcc_plugin.app.sweep.targets import anthropic_target, openai_compatible_target
from tcc_plugin.pricing import PriceBook, TokenPrice, default_price_book
from tcc_plugin.sweep import Question, sweep
from tcc_plugin.usage import Usage

from ..conftest import (
    MockAPI,
    anthropic_message,
    anthropic_usage,
    chat_completion,
    chat_usage,
    completion_object,
    json_response,
)

Q = [Question("two", "What is 2 + 2?", 4)]


def _completion(text: str, finish: str, prompt: int, out: int) -> Any:
    body = completion_object(chat_usage(prompt, out), model="qwen")
    body["choices"][0].update(text=text, finish_reason=finish)
    return json_response(body)


def test_vllm_endpoint_single_and_forcing(api: MockAPI, openai_client: Any, tmp_path: Any) -> None:
    book = PriceBook(use_genai_prices=False)
    book.override("qwen", TokenPrice.per_million(input=1, output=2))
    target = openai_compatible_target(
        openai_client, "qwen", flavour="vllm", max_answer_tokens=16, price_book=book
    )
    api.queue(
        json_response(
            chat_completion(chat_usage(30, 90), model="qwen", contents=["Final Answer: 4"])
        ),
        # forcing: the thought ends by itself, then the answer phase
        _completion("2 and 2 make 4.", "stop", 40, 12),
        _completion(" 4", "stop", 58, 2),
    )
    out = sweep(Q, target, methods=["single", "forcing"], budgets=[64],
                results=tmp_path / "r.jsonl", concurrency=1)  # fmt: skip
    single = api.body(0)
    assert single["max_tokens"] == 64 + 16 and single["thinking_token_budget"] == 64
    assert single["seed"] == 0 and single["messages"][1]["content"] == "What is 2 + 2?"
    think, answer = api.body(1), api.body(2)
    assert think["prompt"].endswith("<|im_start|>assistant\n<think>\n")
    assert think["max_tokens"] == 64 and "</think>" in think["stop"]
    # the model ended its thought; the answer prefix is added however thinking ended
    assert answer["prompt"].endswith("2 and 2 make 4.</think>\nFinal Answer:")
    rows = {r["cell_id"]: r for r in out.rows}
    assert rows["single-b64"]["correct"] and rows["forcing-b64"]["correct"]
    assert (rows["single-b64"]["input_tokens"], rows["single-b64"]["output_tokens"]) == (30, 90)
    forcing = rows["forcing-b64"]
    assert (forcing["calls"], forcing["input_tokens"], forcing["output_tokens"]) == (2, 98, 14)
    assert forcing["reasoning_tokens"] == 12  # the think phase's output
    assert rows["single-b64"]["cost_usd"] == pytest.approx((30 * 1 + 90 * 2) / 1e6)
    assert forcing["cost_usd"] == pytest.approx((98 * 1 + 14 * 2) / 1e6)


def test_openai_effort_levels(api: MockAPI, openai_client: Any, tmp_path: Any) -> None:
    target = openai_compatible_target(openai_client, "o3-2025-04-16", flavour="openai")
    usage = chat_usage(20, 300, reasoning=280)
    api.queue(json_response(chat_completion(usage, contents=["Final Answer: 4"])))
    out = sweep(Q, target, budgets=["low"], results=tmp_path / "r.jsonl")
    assert api.body(0)["reasoning_effort"] == "low"
    (row,) = out.rows
    assert (row["output_tokens"], row["reasoning_tokens"], row["correct"]) == (300, 280, True)
    expected = default_price_book().cost(Usage(input=20, output=300, reasoning=280),
                                         "o3-2025-04-16", provider="openai")  # fmt: skip
    assert expected is not None and row["cost_usd"] == pytest.approx(float(expected))


def test_anthropic_thinking_budget(api: MockAPI, anthropic_client: Any, tmp_path: Any) -> None:
    target = anthropic_target(anthropic_client, "claude-sonnet-4-5-20250929", max_answer_tokens=512)
    api.queue(json_response(anthropic_message(anthropic_usage(25, 700), text="Final Answer: 4")))
    out = sweep(Q, target, budgets=[2048], results=tmp_path / "r.jsonl")
    body = api.body(0)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 2048 + 512
    (row,) = out.rows
    assert row["correct"] and row["output_tokens"] == 700 and row["cost_usd"] > 0
    with pytest.raises(ValueError, match="forcing"):
        sweep(Q, target, methods=["forcing"], budgets=[64], results=tmp_path / "r.jsonl")
