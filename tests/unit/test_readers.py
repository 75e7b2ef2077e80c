"""Usage read from every provider shape, against counts computed by hand."""

from __future__ import annotations

from typing import Any

import pytest

from tcc_plugin import ResponseError, Usage
from tcc_plugin.readers import (
    ChatStreamAccumulator,
    StreamAccumulator,
    read_chat_response,
    read_response,
    read_usage,
)

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "o3-2025-04-16",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}},
        {"index": 1, "finish_reason": "length", "message": {"role": "assistant", "content": "5"}},
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 900,
        "total_tokens": 2100,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 768, "audio_tokens": 0},
    },
}

RESPONSES = {
    "id": "resp_1",
    "object": "response",
    "status": "completed",
    "model": "gpt-5",
    "usage": {
        "input_tokens": 500,
        "input_tokens_details": {"cached_tokens": 100},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 256},
        "total_tokens": 800,
    },
}

ANTHROPIC = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "stop_reason": "end_turn",
    "content": [{"type": "thinking", "thinking": "...", "signature": "s"}],
    "usage": {
        "input_tokens": 50,
        "cache_read_input_tokens": 2000,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
        "output_tokens": 700,
        "output_tokens_details": {"thinking_tokens": 600},
    },
}


def test_openai_chat_reasoning_and_cache_not_double_counted() -> None:
    info = read_response(CHAT)
    assert info.usage == Usage(input=1200, cached_input=1024, output=900, reasoning=768)
    assert info.usage.total == 2100  # the provider's own total: nothing added twice
    assert info.response_model == "o3-2025-04-16"
    assert info.finish_reasons == ("stop", "length")


def test_openai_responses() -> None:
    info = read_response(RESPONSES)
    assert info.usage == Usage(input=500, cached_input=100, output=300, reasoning=256)
    assert info.finish_reasons == ("completed",)


def test_anthropic_input_adds_cache_reads_and_writes() -> None:
    info = read_response(ANTHROPIC)
    assert info.usage == Usage(
        input=50 + 2000 + 300,
        cached_input=2000,
        cache_write=300,
        cache_write_1h=100,
        output=700,
        reasoning=600,
    )
    assert info.finish_reasons == ("end_turn",)


def test_bare_usage_blocks_and_usage_objects() -> None:
    assert read_usage({"prompt_tokens": 3, "completion_tokens": 4}) == Usage(input=3, output=4)
    assert read_usage(Usage(input=1)) == Usage(input=1)
    assert read_usage({"choices": []}) is None
    assert read_usage(None) is None


def test_malformed_usage_is_a_precise_error() -> None:
    with pytest.raises(ResponseError, match="'completion_tokens' is not an integer"):
        read_usage({"usage": {"prompt_tokens": 3, "completion_tokens": "many"}})


def test_langchain_ai_message() -> None:
    messages = pytest.importorskip("langchain_core.messages")
    msg = messages.AIMessage(
        content="hi",
        usage_metadata={
            "input_tokens": 2350,  # langchain-anthropic already folds cache tokens in
            "output_tokens": 700,
            "total_tokens": 3050,
            "input_token_details": {
                "cache_read": 2000,
                "cache_creation": 0,
                "ephemeral_5m_input_tokens": 200,
                "ephemeral_1h_input_tokens": 100,
            },
            "output_token_details": {"reasoning": 600},
        },
        response_metadata={"model_name": "claude-sonnet-4-5", "stop_reason": "end_turn"},
    )
    info = read_response(msg)
    assert info.usage == Usage(
        input=2350,
        cached_input=2000,
        cache_write=300,
        cache_write_1h=100,
        output=700,
        reasoning=600,
    )
    assert info.response_model == "claude-sonnet-4-5"
    assert info.finish_reasons == ("end_turn",)


def _feed(chunks: list[Any], acc: StreamAccumulator | None = None) -> StreamAccumulator:
    acc = acc or StreamAccumulator()
    for c in chunks:
        acc.feed(c)
    return acc


def test_openai_chat_stream_usage_from_final_chunk() -> None:
    chunks: list[Any] = [
        {
            "id": "c1",
            "model": "o3",
            "choices": [{"index": 0, "delta": {"content": "4"}}],
            "usage": None,
        },
        {
            "id": "c1",
            "model": "o3",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        },
        {"id": "c1", "model": "o3", "choices": [], "usage": CHAT["usage"]},
    ]
    info = _feed(chunks).result()
    assert info.usage == Usage(input=1200, cached_input=1024, output=900, reasoning=768)
    assert info.finish_reasons == ("stop",)
    assert info.response_id == "c1"


def test_anthropic_stream_usage_is_final_only_after_message_delta() -> None:
    start = {
        "type": "message_start",
        "message": {**ANTHROPIC, "usage": {**ANTHROPIC["usage"], "output_tokens": 1}},
    }
    acc = _feed([start, {"type": "content_block_delta", "delta": {"type": "thinking_delta"}}])
    assert acc.result().usage is None  # cut here: unknown, so the reservation is charged
    acc.feed(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 700, "output_tokens_details": {"thinking_tokens": 600}},
        }
    )
    info = acc.result()
    assert info.usage == read_usage(ANTHROPIC)
    assert info.response_model == "claude-sonnet-4-5-20250929"
    assert info.finish_reasons == ("end_turn",)


def test_responses_stream_usage_from_completed_event() -> None:
    info = _feed(
        [
            {"type": "response.created", "response": {**RESPONSES, "usage": None}},
            {"type": "response.output_text.delta", "delta": "hi"},
            {"type": "response.completed", "response": RESPONSES},
        ]
    ).result()
    assert info.usage == Usage(input=500, cached_input=100, output=300, reasoning=256)


def test_langchain_chunks_add_up() -> None:
    messages = pytest.importorskip("langchain_core.messages")
    chunks = [
        messages.AIMessageChunk(
            content="", usage_metadata={"input_tokens": 10, "output_tokens": 0, "total_tokens": 10}
        ),
        messages.AIMessageChunk(content="a"),
        messages.AIMessageChunk(
            content="b",
            usage_metadata={
                "input_tokens": 0,
                "output_tokens": 7,
                "total_tokens": 7,
                "output_token_details": {"reasoning": 5},
            },
        ),
    ]
    assert _feed(chunks).result().usage == Usage(input=10, output=7, reasoning=5)


LEGACY = {
    "id": "cmpl-1",
    "object": "text_completion",
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"index": 0, "text": "4", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28},
}


@pytest.mark.parametrize(
    "response",
    [
        CHAT,
        LEGACY,
        {**CHAT, "usage": None},  # no usage: flagged and charged by the lifecycle
        {k: v for k, v in CHAT.items() if k != "usage"},
        # an OpenAI-compatible server answering with another usage shape
        {**CHAT, "usage": ANTHROPIC["usage"], "model": 7, "id": None},
    ],
)
def test_the_chat_reader_reads_what_the_generic_reader_reads(response: dict[str, Any]) -> None:
    assert read_chat_response(response) == read_response(response)


def test_the_chat_reader_reads_usage_exactly() -> None:
    info = read_chat_response(CHAT)
    assert info.usage == Usage(input=1200, cached_input=1024, output=900, reasoning=768)
    assert info.finish_reasons == ("stop", "length")
    assert (info.response_model, info.response_id) == ("o3-2025-04-16", "chatcmpl-1")


def _chat_chunk(index: int, reason: str | None, **extra: Any) -> dict[str, Any]:
    choice = {"index": index, "delta": {"content": "x"}, "finish_reason": reason}
    return {"id": "c2", "model": "o3-2025-04-16", "choices": [choice], **extra}


@pytest.mark.parametrize(
    "chunks",
    [
        # n = 2, finish reasons arriving out of order, then the usage-only chunk
        [
            _chat_chunk(0, None),
            _chat_chunk(1, None),
            _chat_chunk(1, "length"),
            _chat_chunk(0, "stop"),
            {"id": "c2", "model": "o3-2025-04-16", "choices": [], "usage": CHAT["usage"]},
        ],
        # cut before the usage chunk: no usage yet
        [_chat_chunk(0, None), _chat_chunk(0, None)],
        # the model named only from the second chunk on
        [{"id": "c3", "choices": []}, _chat_chunk(0, "stop", usage=LEGACY["usage"])],
        [],
    ],
)
def test_the_chat_stream_accumulator_agrees_with_the_generic_one(chunks: list[Any]) -> None:
    fast = _feed(chunks, ChatStreamAccumulator()).result()
    assert fast == _feed(chunks).result()
    if chunks and "usage" in chunks[-1]:
        assert (
            fast.usage is not None and fast.usage.output == chunks[-1]["usage"]["completion_tokens"]
        )
