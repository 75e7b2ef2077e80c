"""Bad input, cassette-shaped: usage of the wrong type, a stream that ends without
``[DONE]``, a gzip body that does not inflate. The caller sees exactly what the SDK
does without instrumentation; our span records what was known and flags the rest;
nothing raises from our code."""

from __future__ import annotations

import dataclasses
import gzip
import json
from typing import Any

import pytest

pytest.importorskip("anthropic")
pytest.importorskip("openai")

from ...conftest import Telemetry
from .cassettes import Exchange, cassettes_dir, exchange, recorded_usage
from .driver import consume, our_span_attributes

pytestmark = pytest.mark.skipif(
    cassettes_dir() is None, reason="../shared/cassettes is absent (test_replay fails in CI)"
)

CHAT_GZIP = "ol__test_chat__test_chat_reasoning.yaml"  # gzip-encoded JSON bodies
CHAT_STREAM = "pai__test_openai__test_run_stream_sync_streams_real_model.yaml"
ANTHROPIC_STREAM = "ol__test_prompt_caching__test_anthropic_prompt_caching_async_stream_legacy.yaml"


def with_body(ex: Exchange, content: bytes, *, wire: bytes | None = None) -> Exchange:
    return dataclasses.replace(ex, content=content, wire_body=content if wire is None else wire)


def outcome(ex: Exchange, *, instrumented: bool) -> tuple[str, Any]:
    """What the caller gets: ("ok", the data it received) or ("raised", the exception
    type and message)."""
    try:
        result = consume(ex, instrumented=instrumented)
    except Exception as exc:
        return "raised", (type(exc), str(exc))
    if isinstance(result, list):
        return "ok", [chunk.to_dict() for chunk in result]
    return "ok", result.to_dict()


def same_for_the_caller(ex: Exchange) -> tuple[str, Any]:
    plain = outcome(ex, instrumented=False)
    ours = outcome(ex, instrumented=True)
    assert ours == plain
    return ours


def test_usage_of_the_wrong_type(telemetry: Telemetry) -> None:
    ex = exchange(CHAT_GZIP)
    body = ex.json
    body["usage"]["completion_tokens"] = "many"  # a string where the API sends an int
    content = json.dumps(body).encode()
    bad = with_body(ex, content, wire=gzip.compress(content))
    kind, data = same_for_the_caller(bad)
    assert kind == "ok" and data["usage"]["completion_tokens"] == "many"
    telemetry_attrs = our_span_attributes(telemetry)
    # what was known is recorded; the usage it could not read is flagged, not invented
    assert telemetry_attrs["gen_ai.response.model"] == "gpt-5-nano-2025-08-07"
    assert telemetry_attrs["gen_ai.response.id"] == body["id"]
    assert "gen_ai.usage.output_tokens" not in telemetry_attrs
    assert "completion_tokens" in telemetry_attrs["tcc.usage.error"]
    assert telemetry_attrs["tcc.usage.missing"] is True
    assert telemetry_attrs["tcc.cost.unknown"] is True


@pytest.mark.parametrize("file", [CHAT_STREAM, ANTHROPIC_STREAM])
def test_a_stream_that_ends_without_done(telemetry: Telemetry, file: str) -> None:
    ex = exchange(file)
    cut = ex.content.replace(b"data: [DONE]\n\n", b"")
    if file == ANTHROPIC_STREAM:  # Anthropic streams end with message_stop: drop it
        cut = cut[: cut.rindex(b"event: message_stop")]
    assert cut != ex.content
    kind, _ = same_for_the_caller(with_body(ex, cut))
    assert kind == "ok"  # both SDKs end the iteration at the end of the body
    attrs = our_span_attributes(telemetry)
    expected = recorded_usage(ex)
    assert expected is not None
    for key, value in expected.items():  # the usage arrived before the end: as sent
        assert attrs[key] == value
    assert attrs["tcc.cost.usd"] > 0


@pytest.mark.parametrize("file", [CHAT_STREAM, ANTHROPIC_STREAM])
def test_a_stream_cut_before_its_usage(telemetry: Telemetry, file: str) -> None:
    ex = exchange(file)
    frames = ex.content.split(b"\n\n")
    cut = b"\n\n".join(frames[:3]) + b"\n\n"  # the first three events, then the end
    kind, received = same_for_the_caller(with_body(ex, cut))
    assert kind == "ok" and 0 < len(received) <= 3
    attrs = our_span_attributes(telemetry)
    if file == ANTHROPIC_STREAM:  # message_start's counts are provisional, never final
        assert "gen_ai.usage.output_tokens" not in attrs
    assert attrs["tcc.usage.missing"] is True
    assert attrs["tcc.cost.unknown"] is True


def test_a_gzip_body_that_does_not_inflate(telemetry: Telemetry) -> None:
    ex = exchange(CHAT_GZIP)
    bad = with_body(ex, ex.content, wire=ex.wire_body[:20] + b"not gzip at all")
    kind, (error_type, _) = same_for_the_caller(bad)
    assert kind == "raised"
    attrs = our_span_attributes(telemetry)
    assert attrs["error.type"] == error_type.__qualname__
    assert "gen_ai.usage.input_tokens" not in attrs
