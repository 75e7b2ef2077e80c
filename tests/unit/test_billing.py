"""Billing beyond a call's own tokens: extra steps, server-tool fees, deployment aliases,
and usage that is not reported (left out, or estimated), on JSON-shaped responses."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcc_plugin.adapter import ResponseInfo
from tcc_plugin.pricing import SERVER_TOOL_FEES, PriceBook, TokenPrice, bill
from tcc_plugin.readers import StreamAccumulator, read_chat_response, read_response
from tcc_plugin.usage import BilledStep, Usage

SONNET = TokenPrice.per_million(input=3, output=15, cached_input="0.3", cache_write="3.75")


def message(usage: dict[str, Any], content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-3-7-sonnet-20250219",
        "content": content or [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": usage,
    }


BASE = {"input_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


def test_thinking_without_a_count_is_estimated_from_characters() -> None:
    content = [{"type": "thinking", "thinking": "x" * 300}, {"type": "text", "text": "y" * 100}]
    info = read_response(message({**BASE, "output_tokens": 80}, content))
    assert info.usage is not None
    assert info.usage.reasoning == 60  # 80 x 300 / 400
    assert info.estimated == {"reasoning"} and info.unreported == frozenset()


def test_a_reported_thinking_count_is_used_as_is() -> None:
    usage = {**BASE, "output_tokens": 80, "output_tokens_details": {"thinking_tokens": 7}}
    content = [{"type": "thinking", "thinking": "x" * 300}]
    info = read_response(message(usage, content))
    assert info.usage is not None and info.usage.reasoning == 7
    assert info.estimated == frozenset() and info.unreported == frozenset()


def test_no_thinking_and_no_count_is_unreported_not_zero() -> None:
    info = read_response(message({**BASE, "output_tokens": 80}))
    assert info.usage is not None and info.usage.reasoning == 0
    assert info.unreported == {"reasoning"} and info.estimated == frozenset()


@given(
    output=st.integers(1, 100_000),
    thinking=st.integers(1, 100_000),
    other=st.integers(0, 100_000),
)
def test_the_estimate_is_at_least_one_and_within_the_output(
    output: int, thinking: int, other: int
) -> None:
    content = [
        {"type": "thinking", "thinking": "x" * thinking},
        {"type": "text", "text": "y" * other},
    ]
    info = read_response(message({**BASE, "output_tokens": output}, content))
    assert info.usage is not None
    assert 1 <= info.usage.reasoning <= output


def test_openai_fields_left_out_are_listed() -> None:
    chat = {
        "id": "c",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    info = read_chat_response(chat)
    assert info.unreported == {"cached_input", "cache_write", "reasoning"}


def test_a_wrong_usage_type_keeps_what_is_known() -> None:
    chat = {"id": "c", "model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": "5"}}
    info = read_chat_response(chat)
    assert info.usage is None
    assert info.response_model == "gpt-4o-mini" and info.response_id == "c"
    assert "prompt_tokens" in str(info.attributes["tcc.usage.error"])


def test_stream_model_and_id_are_the_first_non_empty() -> None:
    reader = StreamAccumulator()
    reader.feed({"id": "", "model": "", "choices": [], "prompt_filter_results": []})
    reader.feed({"id": "chatcmpl-1", "model": "gpt-35-turbo", "choices": []})
    result = reader.result()
    assert (result.response_model, result.response_id) == ("gpt-35-turbo", "chatcmpl-1")


def test_iterations_other_than_messages_are_extra_steps() -> None:
    usage = {
        **BASE,
        "output_tokens": 5,
        "iterations": [
            {"type": "compaction", "input_tokens": 100, "output_tokens": 9},
            {"type": "message", "input_tokens": 10, "output_tokens": 5},
            {
                "type": "advisor_message",
                "model": "claude-opus-4-8",
                "input_tokens": 7,
                "output_tokens": 2,
            },
        ],
        "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0},
    }
    info = read_response(message(usage))
    assert info.extra_steps == (
        BilledStep("compaction", Usage(input=100, output=9)),
        BilledStep("advisor_message", Usage(input=7, output=2), "claude-opus-4-8"),
    )
    assert info.server_tools == {"web_search_requests": 3}


def test_bill_adds_steps_at_their_model_and_tool_fees() -> None:
    book = PriceBook(use_genai_prices=False)
    book.override("claude-opus-4-8", TokenPrice.per_million(input=5, output=25))
    response = ResponseInfo(
        usage=Usage(input=10, output=5),
        extra_steps=(
            BilledStep("compaction", Usage(input=100, output=9)),
            BilledStep("advisor_message", Usage(input=7, output=2), "claude-opus-4-8"),
        ),
        server_tools={"web_search_requests": 3},
    )
    billed = bill(book, SONNET, Usage(input=10, output=5), response, "anthropic")
    own = 10 * 3 + 5 * 15  # 105 micro-USD
    compaction = 100 * 3 + 9 * 15  # 435, at the call's model
    advisor = 7 * 5 + 2 * 25  # 85, at claude-opus-4-8
    assert billed.complete
    assert billed.usd == Decimal(own + compaction + advisor) / 1_000_000 + Decimal("0.03")
    assert billed.attributes["tcc.usage.compaction.input_tokens"] == 100
    assert billed.attributes["tcc.usage.advisor_message.model"] == "claude-opus-4-8"
    assert billed.attributes["tcc.server_tool.web_search_requests"] == 3


def test_a_tool_without_a_fee_makes_the_bill_incomplete() -> None:
    book = PriceBook(use_genai_prices=False)
    response = ResponseInfo(usage=Usage(input=10), server_tools={"code_execution_requests": 2})
    with pytest.warns(UserWarning, match="code_execution_requests"):
        billed = bill(book, SONNET, Usage(input=10), response, "anthropic")
    assert not billed.complete
    assert billed.usd == Decimal(30) / 1_000_000  # what could be priced
    assert billed.attributes["tcc.cost.unknown"] is True


def test_tool_fees_default_and_override_per_provider() -> None:
    book = PriceBook(use_genai_prices=False)
    assert book.tool_fee("web_search_requests") == SERVER_TOOL_FEES["web_search_requests"]
    book.set_tool_fee("web_search_requests", "0.02", provider="aws.bedrock")
    assert book.tool_fee("web_search_requests", "aws.bedrock") == Decimal("0.02")
    assert book.tool_fee("web_search_requests", "anthropic") == Decimal("0.01")
    assert book.tool_fee("unheard_of") is None


def test_an_alias_prices_a_deployment_and_cycles_end() -> None:
    book = PriceBook(use_genai_prices=False)
    book.override("gpt-4o-mini", TokenPrice.per_million(input="0.15", output="0.6"))
    book.alias("My-Deployment", "gpt-4o-mini")
    price = book.lookup("my-deployment", "azure.ai.openai")
    assert price is not None
    assert price.cost(Usage(input=1_000_000, output=1_000_000)) == Decimal("0.75")
    book.alias("a", "b")
    book.alias("b", "a")
    assert book.lookup("a") is None  # no price, and no endless lookup
