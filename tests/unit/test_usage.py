from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcc_plugin import Usage, UsageError


def test_reasoning_is_part_of_output_not_added() -> None:
    u = Usage(input=100, output=40, reasoning=30)
    assert u.total == 140
    assert u.visible_output == 10


def test_cache_tokens_are_part_of_input() -> None:
    u = Usage(input=100, cached_input=60, cache_write=30, cache_write_1h=10, output=1)
    assert u.uncached_input == 10
    assert u.total == 101


def test_add_sums_every_field() -> None:
    a = Usage(input=10, cached_input=2, cache_write=3, cache_write_1h=1, output=7, reasoning=5)
    b = Usage(input=1, cached_input=1, cache_write=0, output=2, reasoning=1)
    assert a + b == Usage(
        input=11, cached_input=3, cache_write=3, cache_write_1h=1, output=9, reasoning=6
    )
    assert sum([a, b]) == a + b


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input": -1}, "must be >= 0"),
        ({"output": 1.5}, "must be an int"),
        ({"input": True}, "must be an int"),
        ({"input": "3"}, "must be an int"),
        ({"output": 3, "reasoning": 4}, "reasoning tokens are a part of output"),
        ({"input": 5, "cached_input": 4, "cache_write": 2}, "exceed input"),
        ({"input": 5, "cache_write": 1, "cache_write_1h": 2}, "exceeds cache_write"),
        ({"input": 5, "cached_input": -1}, "cached_input must be >= 0"),
        ({"output": -2}, "output must be >= 0"),
        ({"reasoning": -1}, "reasoning must be >= 0"),
        ({"cache_write_1h": -1}, "cache_write_1h must be >= 0"),
        ({"input": 2, "cache_write": 3, "cache_write_1h": 3}, "exceed input"),
        ({"output": 2, "reasoning": 2.0}, "reasoning must be an int"),
    ],
)
def test_bad_counts_are_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Usage(**kwargs)  # type: ignore[arg-type]


def test_usage_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Usage(input=-3)


usages = st.builds(
    lambda i, c, w, o, r: Usage(
        input=i + c + w, cached_input=c, cache_write=w, output=o + r, reasoning=r
    ),
    *(st.integers(0, 10**9) for _ in range(5)),
)


@given(usages, usages, usages)
def test_addition_is_associative_and_totals_add(a: Usage, b: Usage, c: Usage) -> None:
    assert (a + b) + c == a + (b + c)
    assert (a + b).total == a.total + b.total
    assert (a + b).reasoning <= (a + b).output
