"""The batch path on the embedded engine (llama-server): a wave of samples as one real
``n=k`` request through the standard ``openai`` client, charged every choice's tokens
(llama-server's non-streamed usage would count one), checked against the server's own
counts."""

from __future__ import annotations

from typing import Any

import openai

from tcc_plugin import budget
from tcc_plugin.app.local_engine import LocalEngine
from tcc_plugin.integrations.openai_batch import choices_batch
from tcc_plugin.sampling import aself_consistency, best_of_n, launch_all, self_consistency

from ...conftest import Telemetry
from .conftest import SYSTEM, Tokens

QUESTION: Any = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is 6*7?"},
]


def test_a_wave_is_one_request_charged_per_choice(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, qwen_tokens: Tokens, telemetry: Telemetry
) -> None:
    model = qwen_engine.alias
    source = choices_batch(qwen, model=model, messages=QUESTION, max_tokens=6, temperature=1.0)
    with budget(output_tokens=1_000) as b:
        result = self_consistency(source, n=4, launch=launch_all(), stop=None)
        assert b.reserved.is_zero()
    assert (result.launched, result.completed) == (4, 4)
    values: Any = [c.value for c in result.candidates]
    assert all(v.choices[0].finish_reason == "length" for v in values)
    # every choice ran into max_tokens: 4 x 6, where llama-server's own non-streamed
    # usage would have said 6
    assert b.spent.output_tokens == 24
    assert b.spent.total_tokens == qwen_tokens.chat(QUESTION) + 24  # the prompt, once
    assert b.spent.calls == 1
    calls = telemetry.spans(f"chat {model}")
    assert len(calls) == 1  # one request for the wave
    attributes = dict(calls[0].attributes or {})
    assert attributes["gen_ai.request.choice.count"] == 4
    assert attributes["gen_ai.usage.output_tokens"] == 24
    assert attributes["tcc.budget.reserved.output_tokens"] == 6 * 4
    assert attributes["gen_ai.provider.name"] == "llama.cpp"
    group = dict(telemetry.span("self_consistency").attributes or {})
    assert group["tcc.sampling.launched"] == 4


async def test_async_batch_matches_the_per_choice_counts(
    aqwen: openai.AsyncOpenAI, qwen: openai.OpenAI, qwen_engine: LocalEngine, telemetry: Telemetry
) -> None:
    model = qwen_engine.alias
    request: Any = {"model": model, "messages": QUESTION, "max_tokens": 40, "temperature": 0}
    # greedy: every choice is the single answer, whose exact count llama-server gives
    single = qwen.chat.completions.create(**request)
    assert single.usage is not None
    per_choice = single.usage.completion_tokens
    async with budget(output_tokens=1_000) as b:
        result = await aself_consistency(
            choices_batch(aqwen, **request), n=3, launch=launch_all(), stop=None
        )
    texts = {c.text for c in result.candidates}
    assert len(texts) == 1 and result.completed == 3  # greedy: three identical choices
    assert b.spent.output_tokens == 3 * per_choice
    assert b.reserved.is_zero()


async def test_a_batch_cut_by_the_timeout_is_charged_what_it_streamed(
    aqwen: openai.AsyncOpenAI, qwen_engine: LocalEngine, telemetry: Telemetry
) -> None:
    cap = 400
    source = choices_batch(
        aqwen,
        model=qwen_engine.alias,
        messages=[{"role": "user", "content": "Count from 1 to 300, comma separated."}],
        max_tokens=cap,
        temperature=0.0,
    )
    async with budget(output_tokens=10_000) as b:
        result = await aself_consistency(source, n=2, launch=launch_all(), timeout=2.0)
        assert b.reserved.is_zero() and b.in_flight == 0
    assert (result.cancelled, result.stop_reason) == (2, "timeout")
    estimated = [
        dict(s.attributes or {})
        for s in telemetry.spans(f"chat {qwen_engine.alias}")
        if (s.attributes or {}).get("tcc.usage.estimated")
    ]
    assert len(estimated) == 1  # one request for both samples
    charged = estimated[0]["gen_ai.usage.output_tokens"]
    assert 0 < charged <= 2 * cap  # chunks streamed so far, else the reservation
    assert result.cancelled_spent.output_tokens == charged == b.spent.output_tokens


def test_a_streamed_n_is_one_request_with_every_choice_counted(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, telemetry: Telemetry
) -> None:
    model = qwen_engine.alias
    stream = qwen.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_tokens=5,
        n=3,
        temperature=1.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    indices = [c.choices[0].index for c in chunks if c.choices]
    assert set(indices) == {0, 1, 2}  # interleaved by index, as the server sends them
    finished = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finished) == 3 and all(f.finish_reason == "length" for f in finished)
    usage_chunks = [c for c in chunks if not c.choices and c.usage is not None]
    assert len(usage_chunks) == 1  # llama-server's three per-choice chunks, summed
    assert usage_chunks[0].usage is not None and usage_chunks[0].usage.completion_tokens == 15
    calls = telemetry.spans(f"chat {model}")
    assert len(calls) == 1
    assert dict(calls[0].attributes or {})["gen_ai.usage.output_tokens"] == 15


def test_a_raw_prompt_batch_goes_through_legacy_completions(
    qwen: openai.OpenAI, qwen_engine: LocalEngine, telemetry: Telemetry
) -> None:
    model = qwen_engine.alias
    request: Any = {"model": model, "prompt": "The sky is", "max_tokens": 12, "temperature": 0}
    single = qwen.completions.create(**request)  # greedy: each choice is this one
    assert single.usage is not None
    with budget(output_tokens=1_000) as b:
        result = best_of_n(
            choices_batch(qwen, **request), n=3, verifier=lambda c: 1.0, launch=launch_all()
        )
    values: Any = [c.value for c in result.candidates]
    assert [v.choices[0].text for v in values] == [single.choices[0].text] * 3
    assert b.spent.output_tokens == 3 * single.usage.completion_tokens
    calls = telemetry.spans(f"text_completion {model}")
    assert len(calls) == 2  # the single one, then the batch: one request
    assert dict(calls[-1].attributes or {})["gen_ai.request.choice.count"] == 3
