"""Every recorded exchange in ``../shared/cassettes``, replayed through real, instrumented
openai / anthropic SDK clients (plain, raw response, stream helper, a stream abandoned
after one event): our span's usage equals an independent reading of the recorded body,
the span ended, a known model is priced, and the caller gets what was recorded."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")

from tcc_plugin.pricing import default_price_book  # noqa: E402
from tcc_plugin.telemetry import names  # noqa: E402

from ...conftest import Telemetry  # noqa: E402
from .cassettes import (  # noqa: E402
    REASONING,
    Exchange,
    all_exchanges,
    cassettes_dir,
    in_ci,
    recorded_model,
    recorded_tool_calls,
    recorded_usage,
)
from .driver import consume, our_spans, run, send, stream_helper  # noqa: E402

EXCHANGES = list(all_exchanges())
STREAMS = [ex for ex in EXCHANGES if ex.sse and ex.status < 300]
HELPER_STREAMS = [ex for ex in STREAMS if not ex.path.endswith("/v1/completions")]
JSON_POSTS = [ex for ex in EXCHANGES if not ex.sse and ex.method == "POST"]
USAGE = ("input", "output", "reasoning", "cached_input", "cache_write")


def _ids(ex: Exchange) -> str:
    return ex.id


def test_cassettes_are_present() -> None:
    """In CI the cassettes are part of the build: their absence fails, not skips."""
    if cassettes_dir() is None:
        if in_ci():
            pytest.fail("../shared/cassettes is missing: the replay suite cannot run")
        pytest.skip("../shared/cassettes is absent (outside CI)")
    assert len(EXCHANGES) >= 82  # 82 when this suite was written


def check_span(telemetry: Telemetry, ex: Exchange, *, complete: bool = True) -> dict[str, Any]:
    """The call's one span, checked against the recorded body; returns its attributes."""
    spans = our_spans(telemetry)
    assert len(spans) == 1, [s.name for s in spans]
    span = spans[0]
    assert span.end_time is not None
    attrs = dict(span.attributes or {})
    if ex.status >= 300:
        assert attrs[names.ERROR_TYPE]
        return attrs
    expected = recorded_usage(ex) if complete else None
    if expected is None:
        if complete:  # the body reports no usage: flagged, charged the reservation
            assert attrs[names.USAGE_MISSING] is True
            assert attrs[names.COST_UNKNOWN] is True
        return attrs
    for key, value in expected.items():
        assert attrs[key] == value, (key, attrs.get(key), value)
    usage_keys = {k for k in attrs if k.startswith("gen_ai.usage.")}
    extra = usage_keys - set(expected)
    if REASONING in extra:  # not reported, but estimated from the thinking content
        assert attrs[names.USAGE_ESTIMATED] is True
        assert attrs[REASONING] > 0
        extra.discard(REASONING)
    assert not extra, f"attributes the body does not report: {extra}"
    model = recorded_model(ex)
    assert attrs.get(names.RESPONSE_MODEL) == model
    # priced, or flagged as not priceable: never silently unpriced
    assert (names.COST_USD in attrs) != (names.COST_UNKNOWN in attrs)
    tools = recorded_tool_calls(ex)
    for tool, count in tools.items():  # billed per call; no default fee for OpenAI's
        assert attrs[f"tcc.server_tool.{tool}"] == count
        assert attrs[names.COST_UNKNOWN] is True
    if not tools and default_price_book().lookup(model, attrs[names.PROVIDER_NAME]):
        assert attrs[names.COST_USD] > 0
    return attrs


def as_data(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def recorded_events(ex: Exchange) -> list[Any]:
    return [data for _, data in ex.events() if data != "[DONE]"]


def check_events(ex: Exchange, received: list[Any]) -> None:
    """The caller received the recorded events, in order (the anthropic SDK drops the
    keep-alive ``ping`` events it is documented to ignore)."""
    expected = [e for e in recorded_events(ex) if e.get("type") != "ping"]
    assert [as_data(e) for e in received] == expected


# -- plain calls ---------------------------------------------------------------------------
@pytest.mark.parametrize("ex", EXCHANGES, ids=_ids)
def test_replay(ex: Exchange, telemetry: Telemetry) -> None:
    received: list[Any] = []

    def sync(client: Any) -> Any:
        response = send(client, ex)
        if ex.sse:
            received.extend(response)
        return response

    async def asynchronous(client: Any) -> Any:
        response = await send(client, ex)
        if ex.sse:
            received.extend([chunk async for chunk in response])
        return response

    call = asynchronous if ex.client == "async" else sync
    if ex.status >= 300:
        with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as caught:
            run(ex, call)
        assert caught.value.status_code == ex.status
    else:
        response = run(ex, call)
        if ex.sse:
            check_events(ex, received)
        else:
            assert as_data(response) == ex.json
    if ex.method == "GET":  # retrieving a stored response is not a model call
        assert our_spans(telemetry) == []
        return
    check_span(telemetry, ex)


# -- raw responses -------------------------------------------------------------------------
@pytest.mark.parametrize("ex", JSON_POSTS, ids=_ids)
def test_replay_raw_response(ex: Exchange, telemetry: Telemetry) -> None:
    def sync(client: Any) -> Any:
        raw = send(client, ex, raw=True)
        return raw, raw.parse()

    async def asynchronous(client: Any) -> Any:
        raw = await send(client, ex, raw=True)
        parsed = raw.parse()  # a coroutine in the anthropic SDK, not in openai's
        return raw, (await parsed) if inspect.isawaitable(parsed) else parsed

    call = asynchronous if ex.client == "async" else sync
    if ex.status >= 300:
        with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)):
            run(ex, call)
    else:
        raw, parsed = run(ex, call)
        assert raw.http_response.content == ex.content  # gzip bodies arrive inflated
        assert as_data(parsed) == ex.json
    check_span(telemetry, ex)


# -- stream helpers ------------------------------------------------------------------------
@pytest.mark.parametrize("ex", HELPER_STREAMS, ids=_ids)
def test_replay_stream_helper(ex: Exchange, telemetry: Telemetry) -> None:
    def sync(client: Any) -> Any:
        with stream_helper(client, ex) as stream:
            for _ in stream:
                pass
            return _final(stream)

    async def asynchronous(client: Any) -> Any:
        async with stream_helper(client, ex) as stream:
            async for _ in stream:
                pass
            final = _final(stream)
            return await final if asyncio.iscoroutine(final) else final

    run(ex, asynchronous if ex.client == "async" else sync)
    check_span(telemetry, ex)


def _final(stream: Any) -> Any:
    for name in ("get_final_message", "get_final_response", "get_final_completion"):
        getter = getattr(stream, name, None)
        if getter is not None:
            return getter()
    return None


# -- a stream abandoned after one event ----------------------------------------------------
@pytest.mark.parametrize("ex", STREAMS, ids=_ids)
def test_replay_stream_abandoned_after_one_event(ex: Exchange, telemetry: Telemetry) -> None:
    def sync(client: Any) -> Any:
        stream = send(client, ex)
        first = next(iter(stream))
        stream.close()
        return first

    async def asynchronous(client: Any) -> Any:
        stream = await send(client, ex)
        first = await stream.__anext__()
        await stream.close()
        return first

    first = run(ex, asynchronous if ex.client == "async" else sync)
    assert as_data(first) == recorded_events(ex)[0]
    gc.collect()
    attrs = check_span(telemetry, ex, complete=False)
    assert attrs[names.STREAM_ABANDONED] is True


# -- the usage chunk the instrumentation asked for is hidden from a caller who did not ----
USAGE_STREAMS = [
    ex
    for ex in STREAMS
    if ex.path.endswith("/chat/completions")
    and (ex.request_body or {}).get("stream_options", {}).get("include_usage")
]


@pytest.mark.parametrize("ex", USAGE_STREAMS, ids=_ids)
def test_replay_hides_the_usage_chunk_it_asked_for(ex: Exchange, telemetry: Telemetry) -> None:
    body = {k: v for k, v in ex.request_body.items() if k != "stream_options"}
    asked = dataclasses.replace(ex, request_body=body)  # the caller did not ask for usage
    received = consume(asked)
    recorded = recorded_events(ex)
    usage_only = [e for e in recorded if not e.get("choices") and e.get("usage")]
    assert len(usage_only) == 1
    assert [as_data(e) for e in received] == [e for e in recorded if e not in usage_only]
    check_span(telemetry, ex)  # the span still has the usage from the hidden chunk
