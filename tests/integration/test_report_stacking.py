"""`tcc report` over the spans of stacked layers: one row per provider call, with the
cost, cache writes and budget outcome of our span.

The spans come from the real lifecycle (instrumented SDK clients over a mock transport,
``@llm_call``, the LangChain handler) and are turned into the JSON-lines records the
report reads by the exporter's own ``span_to_dict``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tcc_plugin import budget, llm_call
from tcc_plugin.app.report import classify, summarize
from tcc_plugin.exporters.jsonl import span_to_dict
from tcc_plugin.instrument import instrument

from ..conftest import Telemetry
from .conftest import (
    MockAPI,
    anthropic_message,
    anthropic_usage,
    chat_completion,
    chat_usage,
    json_response,
)

pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
CLAUDE = "claude-sonnet-4-5-20250929"


def records(telemetry: Telemetry) -> list[dict[str, Any]]:
    return [span_to_dict(s) for s in telemetry.spans()]


def test_llm_call_over_instrumented_clients_one_row_per_provider_call(
    openai_client: Any, anthropic_client: Any, api: MockAPI, telemetry: Telemetry
) -> None:
    oai = instrument(openai_client)
    claude = instrument(anthropic_client, provider_spans=True)  # the SDK span stays too

    @llm_call(model="o3", provider="openai")
    def ask(max_completion_tokens: int = 4000) -> Any:
        return oai.chat.completions.create(
            model="o3", messages=QUESTION, max_completion_tokens=max_completion_tokens
        )

    @llm_call(model=CLAUDE, provider="anthropic")
    def ask_claude(max_tokens: int = 1024) -> Any:
        return claude.messages.create(model=CLAUDE, max_tokens=max_tokens, messages=QUESTION)

    usage = anthropic_usage(100, 1500, read=2000, write_5m=500, thinking=1200)
    api.queue(
        json_response(chat_completion(chat_usage(120, 300, reasoning=200))),
        json_response(chat_completion(chat_usage(120, 300, reasoning=200))),
        json_response(anthropic_message(usage, model=CLAUDE)),
    )
    with budget(usd=1, name="agent"):
        ask()
        ask()
        ask_claude()
    spans = classify(records(telemetry))
    assert len(spans.calls) == 3  # not 6 (decorators) nor 4 (the SDK's span)
    report = summarize(spans)
    total = report.total
    assert total.calls == 3
    # 2 x (120 in, 300 out) + (100 + 2,000 read + 500 written in, 1,500 out)
    assert total.input_tokens == 240 + 2600 and total.output_tokens == 600 + 1500
    assert total.reasoning_tokens == 400 + 1200
    # o3: $2 in, $8 out; sonnet-4-5: $3 in, $0.30 read, $3.75 5-minute write, $15 out
    o3 = (Decimal(120) * 2 + Decimal(300) * 8) / 10**6
    sonnet = (Decimal(100) * 3 + 2000 * Decimal("0.3") + 500 * Decimal("3.75") + 1500 * 15) / 10**6
    assert total.cost_usd == pytest.approx(float(2 * o3 + sonnet))
    assert total.priced_calls == 3 and total.unpriced_calls == 0
    [claude_call] = [c for c in spans.calls if c.provider == "anthropic"]
    assert claude_call.cache_write_tokens == 500 and claude_call.budget_outcome == "ok"


def test_langchain_over_an_instrumented_client_one_row(api: MockAPI, telemetry: Telemetry) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    from tcc_plugin.integrations.langchain import use_handler

    httpx2 = pytest.importorskip("httpx2")
    model = langchain_openai.ChatOpenAI(
        model="o3",
        max_tokens=1000,
        api_key="sk-test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(api.handler)),
    )
    instrument(model.root_client)
    api.queue(*(json_response(chat_completion(chat_usage(30, 200))) for _ in range(3)))
    with budget(calls=3), use_handler():
        for _ in range(3):
            model.invoke("2+2?")
    spans = classify(records(telemetry))
    assert len(spans.calls) == 3
    assert summarize(spans).total.input_tokens == 90  # not doubled
    assert {c.budget_outcome for c in spans.calls} == {"ok"}
