"""s1 budget forcing on the real local server, token counts checked through /tokenize."""

from __future__ import annotations

from typing import Any

import tcc_plugin
from tcc_plugin.forcing import abudget_forcing, budget_forcing
from tcc_plugin.integrations.vllm import AsyncVLLMClient, VLLMClient

from .conftest import SYSTEM

PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    "<|im_start|>user\nWhat is 6*7?<|im_end|>\n<|im_start|>assistant\n<think>\n"
)
END_OF_TURN = "<|im_end|>"


def _check_phases_exactly(client: VLLMClient, result: Any) -> None:
    for phase in result.phases:
        # what the server billed as input is the phase's prompt, token for token
        assert phase.usage.input == client.count_tokens(phase.prompt, add_special=True)
        assert phase.usage.output <= phase.max_tokens
    thinking = [p for p in result.phases if p.kind == "think"]
    assert result.thinking_tokens == sum(p.usage.output for p in thinking)
    assert all(p.usage.reasoning == p.usage.output for p in thinking)
    assert result.answer_tokens == result.phases[-1].usage.output
    assert result.phases[-1].usage.reasoning == 0


def test_waits_are_appended_until_the_minimum(qwen: VLLMClient, telemetry: Any) -> None:
    result = budget_forcing(
        qwen,
        PROMPT,
        min_thinking_tokens=40,
        max_thinking_tokens=60,
        max_answer_tokens=8,
        think_stop=[END_OF_TURN],
        answer_stop=[END_OF_TURN],
        options={"temperature": 0},
    )
    assert result.waits_appended >= 1
    assert "Wait" in result.thinking
    assert result.thinking_tokens >= 40 or result.forced_end
    _check_phases_exactly(qwen, result)
    # every wait starts a new thinking phase on the text so far, delimiter dropped
    assert result.phases[1].prompt.startswith(PROMPT + result.phases[0].text)
    assert "</think>" not in result.phases[1].prompt[len(PROMPT) :]
    forcing = telemetry.span("budget_forcing")
    assert forcing.attributes["tcc.forcing.waits_appended"] == result.waits_appended
    assert forcing.attributes["tcc.forcing.thinking_tokens"] == result.thinking_tokens
    calls = [s for s in telemetry.spans() if s.name == f"text_completion {qwen.model}"]
    assert len(calls) == len(result.phases)
    assert all(s.parent is not None and s.parent.span_id == forcing.context.span_id for s in calls)
    assert [s.attributes["tcc.forcing.phase"] for s in calls][-1] == "answer"


def test_the_end_is_forced_at_the_maximum(qwen: VLLMClient, telemetry: Any) -> None:
    result = budget_forcing(
        qwen,
        PROMPT,
        min_thinking_tokens=8,
        max_thinking_tokens=8,
        max_answer_tokens=6,
        think_stop=[END_OF_TURN],
        options={"temperature": 0},
    )
    assert result.forced_end
    assert result.thinking_tokens == 8  # exactly the maximum
    assert result.phases[-2].finish_reason == "length"
    answer_prompt = result.phases[-1].prompt
    assert answer_prompt.endswith("</think>\nFinal Answer:")
    _check_phases_exactly(qwen, result)
    span = telemetry.span("budget_forcing")
    assert span.attributes["tcc.forcing.forced_end"] is True


def test_a_budget_clamps_the_thinking(qwen: VLLMClient) -> None:
    with tcc_plugin.budget(reasoning_tokens=10) as scope:
        result = budget_forcing(qwen, PROMPT, max_thinking_tokens=200, max_answer_tokens=4)
    assert result.max_thinking_tokens == 10
    assert result.thinking_tokens <= 10
    assert scope.spent.reasoning_tokens == result.thinking_tokens
    assert scope.spent.calls == len(result.phases)


async def test_the_async_twin(aqwen: AsyncVLLMClient) -> None:
    result = await abudget_forcing(
        aqwen, PROMPT, min_thinking_tokens=0, max_thinking_tokens=8, max_answer_tokens=4
    )
    assert result.thinking_tokens <= 8
    assert result.usage.input == sum(p.usage.input for p in result.phases)
