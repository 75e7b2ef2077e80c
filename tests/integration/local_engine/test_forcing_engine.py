"""s1 budget forcing on the real local server through a standard ``openai.OpenAI``
pointed at it (and through a ``complete()`` of the user's), token counts checked
through ``/tokenize``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import openai

import tcc_plugin
from tcc_plugin.app.local_engine import LocalEngine
from tcc_plugin.forcing import Continuation, abudget_forcing, budget_forcing
from tcc_plugin.usage import Usage

from .conftest import SYSTEM, Tokens

PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    "<|im_start|>user\nWhat is 6*7?<|im_end|>\n<|im_start|>assistant\n<think>\n"
)
END_OF_TURN = "<|im_end|>"


def _check_phases_exactly(tokens: Tokens, result: Any) -> None:
    for phase in result.phases:
        # what the server billed as input is the phase's prompt, token for token
        assert phase.usage.input == tokens.count(phase.prompt, add_special=True)
        assert phase.usage.output <= phase.max_tokens
    thinking = [p for p in result.phases if p.kind == "think"]
    assert result.thinking_tokens == sum(p.usage.output for p in thinking)
    assert all(p.usage.reasoning == p.usage.output for p in thinking)
    assert result.answer_tokens == result.phases[-1].usage.output
    assert result.phases[-1].usage.reasoning == 0


def test_waits_are_appended_until_the_minimum(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, qwen_tokens: Tokens, telemetry: Any
) -> None:
    model = qwen_engine.alias
    result = budget_forcing(
        qwen,
        PROMPT,
        model=model,
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
    assert result.thinking_tokens <= 60
    _check_phases_exactly(qwen_tokens, result)
    # every wait starts a new thinking phase on the text so far, delimiter dropped
    assert result.phases[1].prompt.startswith(PROMPT + result.phases[0].text)
    assert "</think>" not in result.phases[1].prompt[len(PROMPT) :]
    forcing = telemetry.span("budget_forcing")
    assert forcing.attributes["tcc.forcing.waits_appended"] == result.waits_appended
    assert forcing.attributes["tcc.forcing.thinking_tokens"] == result.thinking_tokens
    calls = telemetry.spans(f"text_completion {model}")
    assert len(calls) == len(result.phases)  # one span per phase: the client's
    assert all(s.parent is not None and s.parent.span_id == forcing.context.span_id for s in calls)
    assert [s.attributes["tcc.forcing.phase"] for s in calls][-1] == "answer"
    assert all(s.attributes["gen_ai.provider.name"] == "llama.cpp" for s in calls)
    assert all(s.attributes["tcc.cost.usd"] > 0 for s in calls)


def test_the_end_is_forced_at_the_maximum(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, qwen_tokens: Tokens, telemetry: Any
) -> None:
    result = budget_forcing(
        qwen,
        PROMPT,
        model=qwen_engine.alias,
        min_thinking_tokens=8,
        max_thinking_tokens=8,
        max_answer_tokens=6,
        think_stop=[END_OF_TURN],
        options={"temperature": 0},
    )
    assert result.forced_end
    assert result.thinking_tokens == 8  # exactly the maximum
    assert result.phases[-2].finish_reason == "length"
    assert result.phases[-1].prompt.endswith("</think>\nFinal Answer:")
    _check_phases_exactly(qwen_tokens, result)
    span = telemetry.span("budget_forcing")
    assert span.attributes["tcc.forcing.forced_end"] is True


def test_an_answer_follows_however_thinking_ended(
    qwen: openai.OpenAI, qwen_engine: LocalEngine
) -> None:
    # The model closes </think> itself well before the maximum: without the answer
    # prefix, Qwen ends its turn at once and the answer is empty (3 runs in 6 before).
    for seed in range(6):
        result = budget_forcing(
            qwen,
            PROMPT,
            model=qwen_engine.alias,
            max_thinking_tokens=200,
            max_answer_tokens=12,
            think_stop=[END_OF_TURN],
            answer_stop=[END_OF_TURN],
            options={"temperature": 0.7, "seed": seed},
        )
        assert result.phases[-1].kind == "answer"
        assert result.phases[-1].prompt.endswith("</think>\nFinal Answer:")
        assert result.answer.strip(), (seed, result.end_reason, result.transcript)


def test_a_budget_clamps_the_thinking(qwen: openai.OpenAI, qwen_engine: LocalEngine) -> None:
    with tcc_plugin.budget(reasoning_tokens=10) as scope:
        result = budget_forcing(
            qwen, PROMPT, model=qwen_engine.alias, max_thinking_tokens=200, max_answer_tokens=4
        )
    assert result.max_thinking_tokens == 10
    assert result.thinking_tokens <= 10
    assert scope.spent.reasoning_tokens == result.thinking_tokens
    assert scope.spent.calls == len(result.phases)


class OwnBackend:
    """A user's own backend: raw continuations through a plain (uninstrumented)
    ``openai`` client, returning ``(text, usage, finish_reason)``."""

    def __init__(self, engine: LocalEngine) -> None:
        self.model = engine.alias
        self.client = openai.OpenAI(base_url=engine.openai_base_url, api_key="local")

    def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Any:
        response = self.client.completions.create(
            model=self.model, prompt=prompt, max_tokens=max_tokens, stop=list(stop), temperature=0
        )
        usage: Any = response.usage
        return Continuation(
            response.choices[0].text,
            Usage(input=usage.prompt_tokens, output=usage.completion_tokens),
            response.choices[0].finish_reason,
        )


def test_a_users_own_backend_is_charged_clamped_and_traced(
    qwen_engine: LocalEngine, telemetry: Any
) -> None:
    backend = OwnBackend(qwen_engine)
    tcc_plugin.set_price(backend.model, usd_per_hour=3.6)
    with tcc_plugin.budget(output_tokens=30, calls=10) as scope:
        result = budget_forcing(backend, PROMPT, max_thinking_tokens=200, max_answer_tokens=6)
    assert result.max_thinking_tokens <= 30 - 6  # clamped to keep room for the answer
    assert scope.spent.calls == len(result.phases)
    assert scope.spent.output_tokens == result.usage.output <= 30
    assert scope.spent.reasoning_tokens == result.thinking_tokens
    forcing = telemetry.span("budget_forcing")
    calls = telemetry.spans(f"text_completion {backend.model}")
    assert len(calls) == len(result.phases)
    assert all(s.parent is not None and s.parent.span_id == forcing.context.span_id for s in calls)
    assert (
        calls[0].attributes["gen_ai.usage.reasoning.output_tokens"] == result.phases[0].usage.output
    )


async def test_the_async_twin(aqwen: openai.AsyncOpenAI, qwen_engine: LocalEngine) -> None:
    result = await abudget_forcing(
        aqwen,
        PROMPT,
        model=qwen_engine.alias,
        min_thinking_tokens=0,
        max_thinking_tokens=8,
        max_answer_tokens=4,
    )
    assert result.thinking_tokens <= 8
    assert result.usage.input == sum(p.usage.input for p in result.phases)
    assert all(p.usage.reasoning == p.usage.output for p in result.phases[:-1])
