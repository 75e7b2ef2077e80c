"""Errors and warnings say what happened, in one line, in numbers people read."""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import Any

import pytest

from tcc_plugin import budget, llm_call
from tcc_plugin.app.cli import main

from ..conftest import Telemetry


def test_tcc_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"tcc {version('tcc-plugin')}"


def test_invalid_usage_is_one_warning_line_and_the_reservation_is_charged(
    caplog: pytest.LogCaptureFixture, telemetry: Telemetry
) -> None:
    @llm_call(model="o3", provider="openai", max_output_tokens=100)
    def ask() -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "o3",
            "choices": [],
            "usage": {"prompt_tokens": -5, "completion_tokens": 10},
        }

    with caplog.at_level(logging.WARNING, logger="tcc_plugin"), budget(calls=5) as b:
        ask()
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.exc_info is None  # no traceback
    text = warning.getMessage()
    assert "invalid usage (Usage.input must be >= 0, got -5)" in text
    assert "charging the call's reservation" in text
    assert b.spent.output_tokens == 100 and b.spent.calls == 1  # the worst case
    attrs = dict(telemetry.span("chat o3").attributes or {})
    assert attrs["tcc.usage.error"] == "Usage.input must be >= 0, got -5"
    assert attrs["tcc.usage.missing"] is True
