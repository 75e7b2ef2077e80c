"""A sample cancelled in flight on the embedded engine (llama-server) is charged an
estimate, never zero: a real request, really cancelled by the group's stop rule."""

from __future__ import annotations

from typing import Any

import pytest

from tcc_plugin import budget
from tcc_plugin.app.local_engine import LocalEngine
from tcc_plugin.sampling import aself_consistency, current_sample, launch_all, stop_after_completed

from ...conftest import Telemetry

openai = pytest.importorskip("openai")
pytest.importorskip("tcc_plugin.integrations.openai")
from tcc_plugin.instrument import instrument  # noqa: E402

SHORT, LONG = 4, 400  # output caps: the short sample answers long before the long one


async def test_a_cancelled_engine_sample_is_charged_its_reservation(
    qwen_engine: LocalEngine, telemetry: Telemetry
) -> None:
    client = instrument(
        openai.AsyncOpenAI(base_url=f"{qwen_engine.base_url}/v1", api_key="local", max_retries=0)
    )

    async def sample() -> Any:
        ctx = current_sample()
        assert ctx is not None
        return await client.chat.completions.create(
            model=qwen_engine.alias,
            messages=[{"role": "user", "content": "Count from 1 to 300, comma separated."}],
            max_tokens=SHORT if ctx.index == 0 else LONG,
            temperature=0.0,
        )

    async with budget(output_tokens=10_000) as b:
        result = await aself_consistency(
            sample, n=2, stop=stop_after_completed(1), launch=launch_all()
        )
        assert b.reserved.is_zero() and b.in_flight == 0
    await client.close()
    assert (result.completed, result.cancelled) == (1, 1)
    cancelled = next(c for c in result.candidates if c.status == "cancelled")
    cap = SHORT if cancelled.index == 0 else LONG
    calls = [dict(s.attributes or {}) for s in telemetry.spans()]
    estimated = [a for a in calls if a.get("tcc.usage.estimated")]
    assert len(estimated) == 1 and estimated[0]["gen_ai.usage.output_tokens"] == cap
    assert result.cancelled_spent.output_tokens == cap and result.cancelled_spent.calls == 1
    answered = next(a for a in calls if "gen_ai.usage.output_tokens" in a and a is not estimated[0])
    assert b.spent.output_tokens == answered["gen_ai.usage.output_tokens"] + cap
