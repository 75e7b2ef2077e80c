"""The four billing gaps the replay suite showed, each on its recorded exchange, with
the expected figures computed by hand from the recorded usage and the list prices
(USD per million tokens, as genai-prices has them; each test states the rates it uses).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

pytest.importorskip("anthropic")
pytest.importorskip("openai")

from tcc_plugin import budget
from tcc_plugin.pricing import PriceBook, TokenPrice, default_price_book
from tcc_plugin.usage import Usage

from ...conftest import Telemetry
from .cassettes import cassettes_dir, exchange
from .driver import consume, our_span_attributes

pytestmark = pytest.mark.skipif(
    cassettes_dir() is None, reason="../shared/cassettes is absent (test_replay fails in CI)"
)

COMPACTION = "pai__test_anthropic__test_anthropic_compaction_usage_with_cache.yaml"
COMPACTION_STREAM = "pai__test_anthropic__test_anthropic_compaction_usage_with_cache_streaming.yaml"
ADVISOR = "pai__test_anthropic__test_anthropic_advisor_tool.yaml"
ADVISOR_STREAM = "pai__test_anthropic__test_anthropic_advisor_tool_stream.yaml"
WEB_SEARCH = "pai__test_anthropic__test_pause_turn_web_search_streaming_vcr.yaml"
THINKING = "ol__test_thinking__test_anthropic_thinking_legacy.yaml"
THINKING_STREAM = "ol__test_thinking__test_anthropic_thinking_streaming_legacy.yaml"
AZURE_STREAM = "ol__test_azure__test_chat_streaming.yaml"
AZURE_ASYNC_STREAM = "ol__test_azure__test_chat_async_streaming.yaml"


def usd(micro: int | str | Decimal) -> Decimal:
    """Millionths of a dollar (token count x USD per million) as dollars."""
    return Decimal(micro) / 1_000_000


def rates(model: str) -> tuple[Decimal, ...]:
    """(input, output, cache read, cache write 5m) USD per million, from the price book:
    checked here so a change of list price shows up as such, not as a billing bug."""
    price = default_price_book().lookup(model, "anthropic")
    flat = getattr(price, "_flat", None)
    assert isinstance(flat, TokenPrice), model
    return (flat.input, flat.output, flat.cached_input or flat.input, flat.cache_write or 0)


# -- 1. Anthropic usage.iterations --------------------------------------------------------
def test_compaction_step_is_priced_at_its_own_usage(telemetry: Telemetry) -> None:
    assert rates("claude-sonnet-4-6") == (3, 15, Decimal("0.3"), Decimal("3.75"))
    with budget(usd="5", name="compaction") as b:
        consume(exchange(COMPACTION))
    a = our_span_attributes(telemetry)
    # the call's own tokens stay the top-level usage
    assert a["gen_ai.usage.input_tokens"] == 229
    assert a["gen_ai.usage.output_tokens"] == 5
    # the compaction step: 100 input + 55,096 cache-written, 131 output
    assert a["tcc.usage.compaction.input_tokens"] == 55_196
    assert a["tcc.usage.compaction.cache_creation.input_tokens"] == 55_096
    assert a["tcc.usage.compaction.output_tokens"] == 131
    message = 229 * 3 + 5 * 15  # 762 micro-USD: all the old figure counted
    compaction = 100 * 3 + 55_096 * Decimal("3.75") + 131 * 15  # 208,875 micro-USD
    expected = usd(message + compaction)
    assert expected == Decimal("0.209637")
    assert a["tcc.cost.usd"] == pytest.approx(float(expected))
    assert b.spent.usd == expected
    assert b.spent.total_tokens == 234  # token caps count the call's own tokens


def test_streamed_compaction_step_is_priced(telemetry: Telemetry) -> None:
    consume(exchange(COMPACTION_STREAM))
    a = our_span_attributes(telemetry)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (181, 8)
    assert a["tcc.usage.compaction.input_tokens"] == 55_196  # 100 + 55,096 cache reads
    assert a["tcc.usage.compaction.cache_read.input_tokens"] == 55_096
    message = 181 * 3 + 8 * 15  # 663
    compaction = 100 * 3 + 55_096 * Decimal("0.3") + 83 * 15  # 18,073.8
    assert a["tcc.cost.usd"] == pytest.approx(float(usd(message + compaction)))
    assert a["tcc.cost.usd"] == pytest.approx(0.0187368)


def test_advisor_step_is_priced_at_the_advisor_model(telemetry: Telemetry) -> None:
    assert rates("claude-sonnet-5")[:2] == (2, 10)
    assert rates("claude-opus-4-8")[:2] == (5, 25)
    consume(exchange(ADVISOR))
    a = our_span_attributes(telemetry)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (2390, 121)
    assert a["tcc.usage.advisor_message.model"] == "claude-opus-4-8"
    assert a["tcc.usage.advisor_message.input_tokens"] == 2518
    assert a["tcc.usage.advisor_message.output_tokens"] == 22
    executor = 2390 * 2 + 121 * 10  # 5,990 on claude-sonnet-5
    advisor = 2518 * 5 + 22 * 25  # 13,140 on claude-opus-4-8
    assert a["tcc.cost.usd"] == pytest.approx(0.01913)
    assert a["tcc.cost.usd"] == pytest.approx(float(usd(executor + advisor)))


def test_streamed_advisor_step_is_priced(telemetry: Telemetry) -> None:
    consume(exchange(ADVISOR_STREAM))
    a = our_span_attributes(telemetry)
    executor = 2411 * 2 + 145 * 10  # 6,272
    advisor = 2543 * 5 + 18 * 25  # 13,165
    assert a["tcc.usage.advisor_message.input_tokens"] == 2543
    assert a["tcc.cost.usd"] == pytest.approx(float(usd(executor + advisor)))


def test_a_step_on_an_unpriced_model_leaves_the_cost_unknown(telemetry: Telemetry) -> None:
    book = PriceBook(use_genai_prices=False)
    book.override("claude-sonnet-5", TokenPrice.per_million(input=2, output=10))
    with pytest.warns(UserWarning, match="claude-opus-4-8"), budget(calls=5) as b:
        consume(exchange(ADVISOR), price_book=book)
    a = our_span_attributes(telemetry)
    assert a["tcc.cost.unknown"] is True
    assert "tcc.cost.usd" not in a
    assert b.spent.usd == usd(2390 * 2 + 121 * 10)  # the part that could be priced


# -- 2. server-side tool fees --------------------------------------------------------------
def test_web_search_requests_are_billed_per_request(telemetry: Telemetry) -> None:
    ex = exchange(WEB_SEARCH)
    consume(ex)
    a = our_span_attributes(telemetry)
    assert a["tcc.server_tool.web_search_requests"] == 10
    fee = 10 * Decimal("0.01")  # $10 per 1,000 searches (Anthropic's price page)
    assert a["tcc.server_tool.web_search_requests.cost_usd"] == pytest.approx(float(fee))
    # claude-sonnet-4-5 above 200k input tokens: $6 in / $22.50 out per million
    tokens = usd(404_500 * 6 + 943 * Decimal("22.5"))  # $2.4482175
    assert a["tcc.cost.usd"] == pytest.approx(float(tokens + fee))
    assert a["tcc.cost.usd"] == pytest.approx(2.5482175)


def test_tool_fees_are_overridable(telemetry: Telemetry) -> None:
    book = PriceBook()
    book.set_tool_fee("web_search_requests", "0.025", provider="anthropic")
    consume(
        exchange(WEB_SEARCH),
        price_book=book,
    )
    a = our_span_attributes(telemetry)
    assert a["tcc.server_tool.web_search_requests.cost_usd"] == pytest.approx(0.25)
    assert a["tcc.cost.usd"] == pytest.approx(2.4482175 + 0.25)


def test_openai_web_search_calls_are_flagged_until_a_fee_is_set(telemetry: Telemetry) -> None:
    ex = exchange("pai__test_openai_responses__test_openai_responses_model_web_search_tool.yaml")
    assert [i["type"] for i in ex.json["output"]].count("web_search_call") == 1
    consume(ex)
    a = our_span_attributes(telemetry)
    assert a["tcc.server_tool.web_search_call"] == 1
    assert a["tcc.cost.unknown"] is True and "tcc.cost.usd" not in a

    book = PriceBook()
    book.set_tool_fee("web_search_call", "0.01", provider="openai")  # $10 per 1,000 calls
    with budget(usd="2") as b:  # the worst case (128k output at $10/M) must fit
        consume(ex, price_book=book)
    # gpt-5: $1.25 in, $0.125 cached in, $10 out per million
    tokens = usd((9299 - 8448) * Decimal("1.25") + 8448 * Decimal("0.125") + 577 * 10)
    assert tokens == Decimal("0.00788975")
    assert b.spent.usd == tokens + Decimal("0.01")


# -- 3. Azure streams: the model is the first non-empty one ---------------------------------
@pytest.mark.parametrize(
    ("file", "index"),
    [(AZURE_STREAM, i) for i in range(4)] + [(AZURE_ASYNC_STREAM, i) for i in range(4)],
)
def test_azure_stream_records_the_served_model(telemetry: Telemetry, file: str, index: int) -> None:
    ex = exchange(file, index)
    # the first chunk is Azure's prompt filter results, with "model": ""
    assert ex.events()[0][1]["model"] == ""
    consume(ex)
    a = our_span_attributes(telemetry)
    assert a["gen_ai.request.model"] == "openllmetry-testing"  # the deployment
    assert a["gen_ai.response.model"] == ex.events()[1][1]["model"]
    assert a["gen_ai.response.id"] == ex.events()[1][1]["id"]
    # recorded without stream_options.include_usage: no usage, so no cost: flagged
    assert a["tcc.usage.missing"] is True and a["tcc.cost.unknown"] is True


def test_azure_deployment_alias_prices_the_reservation(telemetry: Telemetry) -> None:
    from tcc_plugin.errors import PriceUnknown

    ex = exchange(AZURE_STREAM, 0)
    with pytest.raises(PriceUnknown), budget(usd="0.01"):
        consume(ex, price_book=PriceBook())
    book = PriceBook()
    book.alias("openllmetry-testing", "gpt-35-turbo")
    probe = Usage(input=1_000_000, output=1_000_000)
    aliased, served = book.lookup("openllmetry-testing"), book.lookup("gpt-35-turbo")
    assert aliased is not None and served is not None
    assert aliased.cost(probe) == served.cost(probe) == Decimal(2)  # $0.50 + $1.50
    telemetry_spans_before = len(telemetry.spans())
    with budget(usd="0.01", output_tokens=100_000) as b:
        consume(ex, price_book=book)
    assert len(telemetry.spans()) == telemetry_spans_before + 1
    # no usage recorded: the call is charged its reservation, priced at gpt-35-turbo
    assert b.spent.usd > 0


def test_azure_stream_with_usage_is_priced_by_the_served_model(telemetry: Telemetry) -> None:
    """The recorded Azure stream plus the usage chunk Azure sends when asked for it
    (``stream_options.include_usage``): priced at the served model, not the deployment."""
    import dataclasses
    import json

    ex = exchange(AZURE_STREAM, 0)
    last = ex.events()[-2][1]
    usage_chunk = {
        **last,
        "choices": [],
        "usage": {"prompt_tokens": 14, "completion_tokens": 20, "total_tokens": 34},
    }
    body = ex.content.replace(
        b"data: [DONE]", f"data: {json.dumps(usage_chunk)}\n\ndata: [DONE]".encode()
    )
    derived = dataclasses.replace(ex, wire_body=body, content=body)
    consume(derived)
    a = our_span_attributes(telemetry)
    assert a["gen_ai.response.model"] == "gpt-35-turbo"
    # gpt-35-turbo: $0.50 in / $1.50 out per million
    assert a["tcc.cost.usd"] == pytest.approx(float(usd(14 * Decimal("0.5") + 20 * Decimal("1.5"))))
    assert "tcc.cost.unknown" not in a


# -- 4. not reported is not zero ------------------------------------------------------------
def test_unreported_thinking_tokens_are_estimated(telemetry: Telemetry) -> None:
    ex = exchange(THINKING)
    body = ex.json
    usage = body["usage"]
    assert "output_tokens_details" not in usage  # Claude 3.7 reports no thinking count
    thinking = len(body["content"][0]["thinking"])
    text = len(body["content"][1]["text"])
    assert (thinking, text, usage["output_tokens"]) == (429, 56, 215)
    with budget(reasoning_tokens=10_000) as b:
        consume(ex)
    a = our_span_attributes(telemetry)
    estimate = 215 * 429 // (429 + 56)  # the output split by characters: 190
    assert a["gen_ai.usage.reasoning.output_tokens"] == estimate == 190
    assert a["tcc.usage.estimated"] is True
    assert a["tcc.usage.estimated_fields"] == ("reasoning",)
    assert b.spent.reasoning_tokens == 190  # a reasoning cap counts the estimate
    # reasoning is billed as output: the cost does not move (52 x $3 + 215 x $15)
    assert a["tcc.cost.usd"] == pytest.approx(float(usd(52 * 3 + 215 * 15)))


def test_unreported_thinking_tokens_are_estimated_in_a_stream(telemetry: Telemetry) -> None:
    ex = exchange(THINKING_STREAM)
    thinking = sum(
        len(d["delta"].get("thinking", ""))
        for _, d in ex.events()
        if isinstance(d, dict) and d.get("type") == "content_block_delta"
    )
    assert thinking == 422
    consume(ex)
    a = our_span_attributes(telemetry)
    assert a["gen_ai.usage.reasoning.output_tokens"] == 216 * 422 // (422 + 56)  # 190
    assert a["tcc.usage.estimated"] is True


def test_a_reasoning_cap_refuses_the_next_call_on_the_estimate(telemetry: Telemetry) -> None:
    from tcc_plugin import BudgetExceeded

    ex = exchange(THINKING)
    assert ex.request_body["thinking"]["budget_tokens"] == 1024  # each call reserves 1,024
    with budget(reasoning_tokens=1200) as b:
        consume(ex)
        assert b.spent.reasoning_tokens == 190
        # 1,200 - 190 = 1,010 left < 1,024: refused (were "not reported" 0, it would run)
        with pytest.raises(BudgetExceeded, match="reasoning_tokens"):
            consume(ex)


def test_cache_writes_openai_does_not_report_have_no_attribute(telemetry: Telemetry) -> None:
    ex = exchange("oi__test_tool_calls__test_cached_tokens.yaml", 1)
    details = ex.json["usage"]["prompt_tokens_details"]
    assert "cache_write_tokens" not in details
    consume(ex)
    a = our_span_attributes(telemetry)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1280
    assert "gen_ai.usage.cache_creation.input_tokens" not in a
    assert a["tcc.usage.unreported"] == ("cache_write",)


def test_an_unknown_model_is_flagged(telemetry: Telemetry) -> None:
    ex = exchange("ol__test_completions__test_completion.yaml", 0)
    with pytest.warns(UserWarning, match="davinci"):
        consume(ex, price_book=PriceBook(use_genai_prices=False))
    a = our_span_attributes(telemetry)
    assert a["gen_ai.usage.output_tokens"] == 16
    assert a["tcc.cost.unknown"] is True
    assert "tcc.cost.usd" not in a
