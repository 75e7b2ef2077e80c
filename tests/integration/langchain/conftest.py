"""LangChain's real ChatOpenAI and ChatAnthropic, their HTTP answered by ``httpx2.MockTransport``.

ChatOpenAI takes ``http_client`` / ``http_async_client``. ChatAnthropic has no such
argument: it builds its SDK clients lazily in the cached properties ``_client`` and
``_async_client`` from ``_client_params`` (key, base URL, ``max_retries``, headers), so a
test sets those properties to SDK clients built from the same parameters, whose HTTP
goes through the mock transport. The payloads are the parent conftest's (the
providers' documented schemas).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from ..conftest import MockAPI

pytest.importorskip("langchain_core")
langchain_openai = pytest.importorskip("langchain_openai")
langchain_anthropic = pytest.importorskip("langchain_anthropic")
anthropic = pytest.importorskip("anthropic")
httpx2 = pytest.importorskip("httpx2")

from tcc_plugin.budget import active_budgets  # noqa: E402
from tcc_plugin.integrations import langchain_callbacks  # noqa: E402

# Prices per million tokens (genai-prices): o3 $2 in, $0.50 cached in, $8 out;
# claude-haiku-4-5 $1 in, $0.10 cache read, $1.25 5-minute and $2 1-hour cache write, $5 out.
O3 = {"input": "2", "cached": "0.5", "output": "8"}
HAIKU = {"input": "1", "read": "0.1", "write_5m": "1.25", "write_1h": "2", "output": "5"}


def usd(*terms: tuple[int, str]) -> Decimal:
    """Sum of tokens x USD per million tokens."""
    return sum((Decimal(n) * Decimal(p) for n, p in terms), Decimal(0)) / 10**6


def o3_cost(prompt: int, completion: int, cached: int = 0) -> Decimal:
    return usd((prompt - cached, O3["input"]), (cached, O3["cached"]), (completion, O3["output"]))


def haiku_cost(
    inp: int, out: int, *, read: int = 0, write_5m: int = 0, write_1h: int = 0
) -> Decimal:
    """``inp`` is Anthropic's ``input_tokens``: the uncached part only."""
    return usd(
        (inp, HAIKU["input"]),
        (read, HAIKU["read"]),
        (write_5m, HAIKU["write_5m"]),
        (write_1h, HAIKU["write_1h"]),
        (out, HAIKU["output"]),
    )


def make_openai(api: MockAPI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "o3")
    kwargs.setdefault("max_tokens", 1000)
    return langchain_openai.ChatOpenAI(
        api_key="sk-test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(api.handler)),
        http_async_client=httpx2.AsyncClient(transport=httpx2.MockTransport(api.handler)),
        **kwargs,
    )


def attach_mock(model: Any, api: MockAPI) -> Any:
    """Give a ChatAnthropic SDK clients built from its own parameters, over ``api``."""
    params = model._client_params
    model.__dict__["_client"] = anthropic.Anthropic(
        **params, http_client=httpx2.Client(transport=httpx2.MockTransport(api.handler))
    )
    model.__dict__["_async_client"] = anthropic.AsyncAnthropic(
        **params, http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(api.handler))
    )
    return model


def make_anthropic(api: MockAPI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "claude-haiku-4-5")
    kwargs.setdefault("max_tokens", 1024)
    return attach_mock(langchain_anthropic.ChatAnthropic(api_key="sk-ant-test", **kwargs), api)


@pytest.fixture
def openai_api() -> MockAPI:
    return MockAPI()


@pytest.fixture
def anthropic_api() -> MockAPI:
    return MockAPI()


@pytest.fixture(autouse=True)
def _clean_state() -> Iterator[None]:
    """Every test starts and ends with no budget active and no call left in flight."""
    assert active_budgets() == ()
    yield
    assert active_budgets() == ()
    assert not langchain_callbacks._RUNS._runs, "a LangChain call was never ended"
