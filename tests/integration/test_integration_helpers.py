"""The integrations' translation helpers: model tables and versions, thinking budgets,
the input estimate, status classification, and lazy dispatch."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tcc_plugin.instrument import check_thinking, current_thinking, thinking

pytest.importorskip("openai")
pytest.importorskip("anthropic")

from tcc_plugin.integrations import _common
from tcc_plugin.integrations import anthropic as ant
from tcc_plugin.integrations import openai as oai


@pytest.mark.parametrize(
    ("model", "version", "form"),
    [
        ("claude-sonnet-4-5-20250929", (4, 5), "budget"),
        ("claude-3-7-sonnet-20250219", (3, 7), "budget"),
        ("claude-3-5-haiku-latest", (3, 5), None),
        ("claude-opus-4-1", (4, 1), "budget"),
        ("claude-sonnet-4-20250514", (4, 0), "budget"),
        ("claude-opus-4@20250514", (4, 0), "budget"),
        ("anthropic.claude-opus-4-6-v1", (4, 6), "adaptive"),
        ("us.anthropic.claude-sonnet-4-6", (4, 6), "adaptive"),
        ("claude-opus-4-7", (4, 7), "adaptive"),
        ("claude-sonnet-5", (5, 0), "adaptive"),
        ("claude-mythos-5-1", (5, 1), "adaptive"),
        ("claude-mythos-preview", None, "adaptive"),
        ("my-proxy-model", None, None),
    ],
)
def test_claude_versions_and_thinking_forms(
    model: str, version: tuple[int, int] | None, form: str | None
) -> None:
    assert ant.claude_version(model) == version
    assert ant.thinking_form(model) == form


@pytest.mark.parametrize(
    ("model", "limit"),
    [
        ("gpt-5", 128_000),
        ("gpt-5-mini-2025-08-07", 128_000),
        ("gpt-5-chat-latest", 16_384),
        ("o3", 100_000),
        ("o4-mini", 100_000),
        ("o1-mini", 65_536),
        ("gpt-4.1-nano", 32_768),
        ("gpt-4o-mini", 16_384),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc", 16_384),
        ("openai/gpt-5", 128_000),
        ("gpt-4", 8_192),
        ("my-azure-deployment", None),
        (None, None),
    ],
)
def test_openai_max_output_table(model: str | None, limit: int | None) -> None:
    assert oai.max_output_tokens(model) == limit


def test_input_estimate_bounds_text_by_its_bytes() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Qu'est-ce que c'est ?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + "A" * 10_000},
                },
            ],
        },
    ]
    # 3 (request) + 2 x 3 (messages) + "system" 6 + "Be brief." 9 + "user" 4
    # + the question's 22 UTF-8 bytes + one image allowance; the base64 is skipped
    expected = 3 + 6 + 6 + 9 + 4 + len(b"Qu'est-ce que c'est ?") + _common.IMAGE_TOKENS
    assert _common.estimate_input_tokens(messages=messages) == expected
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"a": "int"}}}]
    # keys count in schemas, "type" and its value too
    assert _common.estimate_input_tokens(schemas=tools) == 3 + len(
        "typefunctionfunctionnameaddparametersaint"
    )
    assert _common.estimate_input_tokens([1, 2, 3]) == 3 + 3  # token-id prompts
    assert _common.estimate_input_tokens("日本") == 3 + 6


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (429, {"retry-after-ms": "250"}, (True, "rate_limit", 0.25)),
        (529, {"retry-after": "4"}, (True, "overloaded", 4.0)),
        (503, {}, (True, "server", None)),
        (408, {}, (True, "request_timeout", None)),
        (409, {}, (True, "conflict", None)),
        (500, {"x-should-retry": "false", "retry-after": "9"}, (False, "server", None)),
        (404, {}, (False, "client", None)),
        (400, {"x-should-retry": "true"}, (True, "client", None)),
    ],
)
def test_classify_status(
    status: int, headers: dict[str, str], expected: tuple[object, ...]
) -> None:
    info = _common.classify_status(status, headers)
    assert (info.retryable, info.reason, info.retry_after) == expected
    assert info.status == status


def test_thinking_budgets_validate_and_scope() -> None:
    assert check_thinking("high") == "high" and check_thinking(0) == 0
    for bad in (-1, True, "huge", 1.5):
        with pytest.raises(ValueError):
            check_thinking(bad)
    assert current_thinking("low") == "low"
    with thinking(4000):
        assert current_thinking("low") == 4000
        with thinking(None):
            assert current_thinking("low") is None
        assert current_thinking() == 4000
    assert current_thinking() is None


async def test_thinking_scopes_follow_tasks() -> None:
    async def read() -> object:
        await asyncio.sleep(0)
        return current_thinking("default")

    with thinking("max"):
        inside = asyncio.create_task(read())
    outside = asyncio.create_task(read())
    assert await inside == "max" and await outside == "default"


def test_importing_the_dispatcher_imports_no_provider_sdk(tmp_path: Path) -> None:
    code = (
        "import sys, tcc_plugin.instrument\n"
        "sdks = {'openai', 'anthropic', 'httpx2'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in sdks)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == ""
