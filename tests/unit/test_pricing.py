"""Prices checked against figures computed by hand from the providers' price lists."""

from __future__ import annotations

import warnings
from decimal import Decimal

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_plugin import GpuHourPrice, PriceBook, TokenPrice, Usage
from tcc_plugin.pricing import UnknownModelWarning


def test_openai_reasoning_model_with_cached_input() -> None:
    # o3: $2 / 1M input, $0.50 / 1M cached input, $8 / 1M output (reasoning billed as output).
    usage = Usage(input=10_000, cached_input=4_000, output=3_000, reasoning=2_500)
    expected = (6_000 * Decimal(2) + 4_000 * Decimal("0.5") + 3_000 * Decimal(8)) / 1_000_000
    assert expected == Decimal("0.038")
    assert PriceBook().cost(usage, "o3", "openai") == expected


def test_anthropic_cache_read_five_minute_write_and_thinking() -> None:
    # Claude Sonnet 4.5 (below the 200k-token tier): $3 input, $0.30 cache read,
    # $3.75 five-minute cache write, $15 output; thinking is billed as output.
    # Anthropic's usage: input_tokens=2,000 uncached, cache_read=10,000, cache_creation=3,000.
    usage = Usage(
        input=15_000, cached_input=10_000, cache_write=3_000, output=4_000, reasoning=3_000
    )
    expected = (
        2_000 * Decimal(3) + 10_000 * Decimal("0.3") + 3_000 * Decimal("3.75") + 4_000 * Decimal(15)
    ) / 1_000_000
    assert expected == Decimal("0.08025")
    assert PriceBook().cost(usage, "claude-sonnet-4-5", "anthropic") == expected


def test_anthropic_one_hour_cache_write_priced_apart() -> None:
    # Claude Opus 4.1: $15 input, $18.75 5-minute write, $30 1-hour write, $1.50 read, $75 output.
    usage = Usage(input=1_000, cached_input=100, cache_write=500, cache_write_1h=200, output=10)
    expected = (
        400 * Decimal(15)
        + 100 * Decimal("1.5")
        + 300 * Decimal("18.75")
        + 200 * Decimal(30)
        + 10 * Decimal(75)
    ) / 1_000_000
    assert PriceBook().cost(usage, "claude-opus-4-1", "anthropic") == expected


def test_unknown_model_costs_none_and_warns_once() -> None:
    book = PriceBook()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert book.cost(Usage(input=1, output=1), "no-such-model-xyz", "openai") is None
        assert book.cost(Usage(input=5, output=1), "no-such-model-xyz", "openai") is None
    assert [w.category for w in caught] == [UnknownModelWarning]
    assert "no-such-model-xyz" in str(caught[0].message)


def test_override_wins_over_genai_prices() -> None:
    book = PriceBook()
    book.override("o3", TokenPrice.per_million(input=1, output=2))
    assert book.cost(Usage(input=1_000_000, output=1_000_000), "o3", "openai") == Decimal(3)


def test_override_for_one_provider_only() -> None:
    book = PriceBook(use_genai_prices=False)
    book.override("my-model", TokenPrice.per_million(input="0.1", output="0.2"), provider="vllm")
    assert book.lookup("my-model", "other") is None
    assert book.cost(Usage(input=10, output=10), "My-Model", "vllm") == Decimal("0.000003")


def test_token_price_fallbacks_and_reasoning_rate() -> None:
    price = TokenPrice.per_million(input=1, output=4, reasoning=2)
    usage = Usage(input=10, cached_input=3, cache_write=2, cache_write_1h=1, output=5, reasoning=4)
    # cached and cache writes fall back to the input rate; reasoning has its own rate.
    assert price.cost(usage) == (10 * 1 + 1 * 4 + 4 * 2) / Decimal(1_000_000)


def test_gpu_hour_price_is_rate_times_wall_time_shared() -> None:
    price = GpuHourPrice.of("2.40", max_seconds=30)
    assert price.cost(Usage(output=100), seconds=1.5) == Decimal("0.001")
    assert price.cost(Usage(output=100), seconds=1.5, share=4) == Decimal("0.00025")
    assert price.worst_case(Usage()) == Decimal("0.02")
    assert GpuHourPrice.of(1).worst_case(Usage()) is None


def test_worst_case_bounds_any_split() -> None:
    book = PriceBook()
    for model, provider in (("o3", "openai"), ("claude-sonnet-4-5", "anthropic")):
        price = book.lookup(model, provider)
        assert price is not None
        bound = price.worst_case(Usage(input=1000, output=500))
        assert bound is not None
        for split in (
            Usage(input=1000, output=500),
            Usage(input=1000, cache_write=1000, cache_write_1h=1000, output=500, reasoning=500),
            Usage(input=1000, cached_input=1000, output=500),
        ):
            assert price.cost(split) <= bound


@settings(max_examples=300, deadline=None)
@given(
    model=st.sampled_from(
        [
            ("o3", "openai"),
            ("gpt-4o", "openai"),
            ("claude-opus-4-1", "anthropic"),
            ("deepseek-reasoner", "deepseek"),
            ("claude-sonnet-4-5", "anthropic"),
        ]
    ),
    uncached=st.integers(0, 300_000),
    cached=st.integers(0, 300_000),
    write_5m=st.integers(0, 50_000),
    write_1h=st.integers(0, 50_000),
    output=st.integers(0, 100_000),
)
def test_prices_agree_with_genai_prices(
    model: tuple[str, str], uncached: int, cached: int, write_5m: int, write_1h: int, output: int
) -> None:
    """Our fast path for flat prices must compute exactly what the library computes."""
    name, provider = model
    usage = Usage(
        input=uncached + cached + write_5m + write_1h,
        cached_input=cached,
        cache_write=write_5m + write_1h,
        cache_write_1h=write_1h,
        output=output,
    )
    theirs = calc_price(
        GenaiUsage(
            input_tokens=usage.input,
            cache_read_tokens=cached,
            cache_write_tokens=usage.cache_write,
            cache_write_1h_tokens=write_1h,
            output_tokens=output,
        ),
        name,
        provider_id=provider,
    ).total_price
    assert PriceBook().cost(usage, name, provider) == theirs


def test_set_price_validates() -> None:
    from tcc_plugin import set_price

    with pytest.raises(ValueError, match="both input and output"):
        set_price("m", input=1)
    with pytest.raises(ValueError, match="not both"):
        set_price("m", input=1, output=1, usd_per_hour=1)


def test_worst_case_usd_is_the_price_s_worst_case_from_counts() -> None:
    from tcc_plugin import UsageError
    from tcc_plugin.pricing import worst_case_usd

    # o3 (genai-prices, flat): $2 input, $8 output per million; all input at the
    # dearest input rate, all output at the output rate.
    o3 = PriceBook().lookup("o3", "openai")
    assert o3 is not None
    assert worst_case_usd(o3, 1000, 2000, 2000) == Decimal("0.018")
    # a token price whose cache writes and reasoning are dearer than input and output
    price = TokenPrice.per_million(input="2", output="8", cache_write="2.5", reasoning="9")
    assert worst_case_usd(price, 1000, 2000, 0) == Decimal("0.0205")  # 1000*2.5 + 2000*9
    for p in (o3, price):
        for counts in ((0, 0, 0), (1, 1, 1), (123_457, 98_765, 5)):
            usage = Usage(input=counts[0], output=counts[1], reasoning=counts[2])
            assert worst_case_usd(p, *counts) == p.worst_case(usage)
    # prices without a flat rate go through their own worst_case
    assert worst_case_usd(GpuHourPrice.of(36, max_seconds=10), 5, 5, 0) == Decimal("0.1")
    assert worst_case_usd(GpuHourPrice.of(36), 5, 5, 0) is None
    # counts a Usage refuses are refused the same way
    with pytest.raises(UsageError, match="input must be >= 0"):
        worst_case_usd(o3, -1, 10, 0)
    with pytest.raises(UsageError, match="must be an int"):
        worst_case_usd(price, 10, 2.5, 0)  # type: ignore[arg-type]
