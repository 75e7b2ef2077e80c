"""Budget forcing driven by a scripted backend (a plain object, not a mock of our code).

The backend plays a model that ends its thought early (``</think>`` after a few tokens)
or runs on until ``max_tokens``; the engine-backed tests in ``tests/integration/engine``
check the same rules against the real local server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

import tcc_plugin
from tcc_plugin.forcing import (
    FORCED_END,
    THINKING_TOKENS,
    WAITS_APPENDED,
    Continuation,
    abudget_forcing,
    budget_forcing,
)
from tcc_plugin.usage import Usage


@dataclass
class Call:
    prompt: str
    max_tokens: int
    stop: list[str]
    reasoning: bool | None = None
    attributes: dict[str, Any] | None = None


@dataclass
class ScriptedModel:
    """Each think phase produces ``think`` tokens (one word each) then stops, unless
    ``max_tokens`` comes first; the answer phase produces ``answer``."""

    think: list[int]
    answer: str = "42"
    calls: list[Call] = field(default_factory=list)

    def _continue(
        self, prompt: str, max_tokens: int, stop: Sequence[str], **extra: Any
    ) -> Continuation:
        self.calls.append(Call(prompt, max_tokens, list(stop), **extra))
        prompt_tokens = len(prompt.split())
        if "</think>" in stop:
            want = self.think[min(len(self.calls) - 1, len(self.think) - 1)]
            n = min(want, max_tokens)
            text = " ".join(f"t{i}" for i in range(n))
            reason = "length" if want >= max_tokens else "stop"
            return Continuation(text, Usage(input=prompt_tokens, output=n, reasoning=n), reason)
        n = min(len(self.answer.split()), max_tokens)
        return Continuation(self.answer, Usage(input=prompt_tokens, output=n), "stop")

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str],
        reasoning: bool = False,
        attributes: dict[str, Any] | None = None,
    ) -> Continuation:
        return self._continue(prompt, max_tokens, stop, reasoning=reasoning, attributes=attributes)


class TupleModel:
    """A minimal backend: ``complete(prompt, *, max_tokens, stop) -> (text, usage)``."""

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Any:
        self.calls += 1
        n = min(5, max_tokens)
        return ("x " * n).strip(), Usage(input=10, output=n)


class AsyncScriptedModel(ScriptedModel):
    async def complete(  # type: ignore[override]
        self,
        prompt: str,
        *,
        max_tokens: int,
        stop: Sequence[str],
        reasoning: bool = False,
        attributes: dict[str, Any] | None = None,
    ) -> Continuation:
        return self._continue(prompt, max_tokens, stop, reasoning=reasoning, attributes=attributes)


PROMPT = "Q: what is six times seven?\n<think>\n"


def test_waits_are_appended_until_the_minimum(telemetry: Any) -> None:
    model = ScriptedModel(think=[4, 4, 4, 4])
    result = budget_forcing(
        model, PROMPT, min_thinking_tokens=10, max_thinking_tokens=100, max_answer_tokens=8
    )
    assert result.waits_appended == 2  # 4 -> Wait -> 8 -> Wait -> 12 >= 10
    assert result.thinking_tokens == 12
    assert not result.forced_end
    assert result.end_reason == "delimiter"
    assert result.thinking.count("Wait") == 2
    assert [p.kind for p in result.phases] == ["think", "think", "think", "answer"]
    # each thinking phase continues the previous text, the delimiter dropped
    assert model.calls[1].prompt == PROMPT + "t0 t1 t2 t3 Wait"
    assert model.calls[1].max_tokens == 96
    # the answer follows the delimiter and the answer prefix, however thinking ended
    assert model.calls[-1].prompt.endswith("t3</think>\nFinal Answer:")
    assert result.answer == "42"
    assert result.usage == sum((p.usage for p in result.phases), Usage())
    assert result.usage.reasoning == 12


def test_the_end_is_forced_at_the_maximum(telemetry: Any) -> None:
    model = ScriptedModel(think=[50])
    result = budget_forcing(
        model, PROMPT, min_thinking_tokens=0, max_thinking_tokens=16, answer_prefix="Final Answer:"
    )
    assert result.forced_end
    assert result.thinking_tokens == 16
    assert result.end_reason == "max_thinking_tokens"
    answer_prompt = model.calls[-1].prompt
    assert answer_prompt.endswith("t15\n</think>\nFinal Answer:")
    assert result.transcript == answer_prompt + "42"


def test_max_waits_bounds_the_waits() -> None:
    model = ScriptedModel(think=[1])
    result = budget_forcing(
        model, PROMPT, min_thinking_tokens=50, max_thinking_tokens=100, max_waits=3
    )
    assert result.waits_appended == 3
    assert result.thinking_tokens == 4
    assert result.end_reason == "max_waits"
    assert not result.forced_end


def test_phases_are_told_they_are_thinking() -> None:
    model = ScriptedModel(think=[3])
    budget_forcing(model, PROMPT, max_thinking_tokens=10)
    think, answer = model.calls
    assert think.reasoning is True and answer.reasoning is False
    assert think.attributes == {"tcc.forcing.phase": "think", "tcc.forcing.phase.index": 0}
    assert answer.attributes == {"tcc.forcing.phase": "answer", "tcc.forcing.phase.index": 1}
    assert think.stop == ["</think>"]


def test_a_minimal_tuple_backend_works() -> None:
    model = TupleModel()
    result = budget_forcing(model, PROMPT, min_thinking_tokens=0, max_thinking_tokens=5)
    # 5 tokens at max_tokens=5 is read as "length": the end was forced
    assert result.forced_end
    assert result.thinking_tokens == 5
    assert model.calls == 2


def test_budgets_clamp_the_thinking_maximum(telemetry: Any) -> None:
    model = ScriptedModel(think=[1000])
    with tcc_plugin.budget(reasoning_tokens=30):
        result = budget_forcing(model, PROMPT, max_thinking_tokens=500, max_answer_tokens=5)
    assert result.max_thinking_tokens == 30
    assert result.thinking_tokens == 30
    assert result.forced_end
    span = telemetry.span("budget_forcing")
    assert span.attributes["tcc.forcing.clamped.max_thinking_tokens"] == 30


def test_an_output_budget_keeps_room_for_the_answer() -> None:
    model = ScriptedModel(think=[1000])
    with tcc_plugin.budget(output_tokens=100):
        result = budget_forcing(model, PROMPT, max_thinking_tokens=500, max_answer_tokens=20)
    assert result.thinking_tokens == 80


def test_the_run_is_a_span_with_forcing_attributes(telemetry: Any) -> None:
    model = ScriptedModel(think=[2, 2])
    budget_forcing(model, PROMPT, min_thinking_tokens=3, max_thinking_tokens=20)
    span = telemetry.span("budget_forcing")
    assert span.attributes[WAITS_APPENDED] == 1
    assert span.attributes[THINKING_TOKENS] == 4
    assert span.attributes[FORCED_END] is False
    assert span.attributes["tcc.forcing.phases"] == 3
    assert span.attributes["gen_ai.operation.name"] == "budget_forcing"


def test_a_failing_backend_ends_the_span_with_the_error(telemetry: Any) -> None:
    class Broken:
        def complete(self, prompt: str, *, max_tokens: int, stop: Sequence[str]) -> Any:
            raise RuntimeError("server gone")

    with pytest.raises(RuntimeError, match="server gone"):
        budget_forcing(Broken(), PROMPT)
    span = telemetry.span("budget_forcing")
    assert span.attributes["error.type"] == "RuntimeError"
    assert not span.status.is_ok
    assert len([e for e in span.events if e.name == "exception"]) == 1  # recorded once


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_thinking_tokens": 10, "max_thinking_tokens": 5}, "exceeds"),
        ({"max_thinking_tokens": -1}, ">= 0"),
        ({"max_answer_tokens": 0}, "max_answer_tokens"),
        ({"end_of_thinking": ""}, "delimiter"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        budget_forcing(TupleModel(), PROMPT, **kwargs)


async def test_the_async_twin_follows_the_same_rules() -> None:
    model = AsyncScriptedModel(think=[4, 4, 50])
    result = await abudget_forcing(
        model, PROMPT, min_thinking_tokens=10, max_thinking_tokens=20, max_answer_tokens=4
    )
    assert result.waits_appended == 2
    assert result.thinking_tokens == 20  # 4 + 4 + 12 (forced)
    assert result.forced_end
    assert model.calls[-1].prompt.endswith("</think>\nFinal Answer:")


def test_a_users_own_backend_goes_through_the_lifecycle(telemetry: Any) -> None:
    model = TupleModel()  # reports (text, usage): knows nothing of budgets or spans
    model.model = "my-local-model"  # type: ignore[attr-defined]
    tcc_plugin.set_price("my-local-model", input="1", output="2")
    with tcc_plugin.budget(output_tokens=100, calls=10) as scope:
        result = budget_forcing(
            model, PROMPT, min_thinking_tokens=8, max_thinking_tokens=20, max_answer_tokens=8
        )
    # 5 thinking tokens, Wait, 5 more (>= 8): two think phases and the answer
    assert [p.kind for p in result.phases] == ["think", "think", "answer"]
    assert scope.spent.calls == 3
    assert scope.spent.output_tokens == 15
    assert scope.spent.reasoning_tokens == 10  # the think phases' output is reasoning
    forcing = telemetry.span("budget_forcing")
    calls = telemetry.spans("text_completion my-local-model")
    assert [s.attributes["tcc.forcing.phase"] for s in calls] == ["think", "think", "answer"]
    assert all(s.parent is not None and s.parent.span_id == forcing.context.span_id for s in calls)
    assert [s.attributes.get("gen_ai.usage.reasoning.output_tokens", 0) for s in calls] == [
        5,
        5,
        0,
    ]
    # priced from the book: 10 input and 5 output tokens per phase at $1 / $2 per million
    assert calls[0].attributes["tcc.cost.usd"] == pytest.approx(20e-6)


def test_a_clamping_budget_lowers_a_users_phase_max_tokens() -> None:
    model = ScriptedModel(think=[3])
    with tcc_plugin.budget(output_tokens=40, policy="clamp"):
        result = budget_forcing(model, PROMPT, max_thinking_tokens=10, max_answer_tokens=100)
    # no room for thinking beside a 100-token answer; the answer phase, asking for 100,
    # is clamped to the 40 left (and still runs: a run always ends with an answer)
    assert result.max_thinking_tokens == 0
    assert [p.kind for p in result.phases] == ["answer"]
    assert model.calls[-1].max_tokens == 40


def test_a_users_backend_is_refused_when_the_budget_cannot_pay() -> None:
    model = TupleModel()
    with tcc_plugin.budget(calls=1), pytest.raises(tcc_plugin.BudgetExceeded):
        budget_forcing(model, PROMPT, max_thinking_tokens=20)
    assert model.calls == 1  # the answer phase was refused before it ran


def test_a_backend_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(TypeError, match="complete"):
        budget_forcing(object(), PROMPT)

    class Completions:
        def create(self, **kwargs: Any) -> Any:  # pragma: no cover - never called
            raise AssertionError

    class OpenAIShaped:
        completions = Completions()

    with pytest.raises(ValueError, match="needs model="):
        budget_forcing(OpenAIShaped(), PROMPT)
