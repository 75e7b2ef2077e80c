"""The self-hosted protocol logic on plain JSON (the shapes vLLM and llama-server send),
driven by the one plan driver with a step that plays ``/tokenize``."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tcc_plugin.integrations.server_dialect import (
    Fetch,
    Reply,
    StreamState,
    check_dialect,
    finish_usage,
    merge_choices,
    server_root,
)
from tcc_plugin.plans import drive


def tokenize(step: Fetch) -> Reply:
    """llama-server's /tokenize: one token per word."""
    assert step.url.endswith("/tokenize") and step.body is not None
    return Reply(200, {"tokens": list(range(len(str(step.body["content"]).split())))})


def response(text: str, reasoning: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": 0,
                "message": {"content": text, "reasoning_content": reasoning},
                "finish_reason": "length",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 50)),  # words of reasoning, extra output
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 500),
)
def test_n_single_choice_responses_merge_to_exact_usage(
    parts: list[tuple[int, int]], prompt: int
) -> None:
    bodies = [
        response("a", " ".join(["w"] * words), prompt, words + extra) for words, extra in parts
    ]
    merged = merge_choices(bodies)
    texts = [c["message"]["reasoning_content"] for c in merged["choices"]]
    drive(finish_usage(merged, texts, root="http://h", dialect="llama.cpp", model=None), tokenize)
    usage = merged["usage"]
    assert [c["index"] for c in merged["choices"]] == list(range(len(parts)))
    assert usage["prompt_tokens"] == prompt  # the prompt, once
    assert usage["completion_tokens"] == sum(w + e for w, e in parts)
    reasoning = sum(w for w, _ in parts)
    if reasoning:
        assert usage["completion_tokens_details"] == {"reasoning_tokens": reasoning}
    else:
        assert "completion_tokens_details" not in usage  # nothing to count: left alone


@given(st.lists(st.lists(st.sampled_from(["x", "y z", ""]), max_size=4), min_size=1, max_size=3))
def test_chained_streams_offset_indices_and_sum_usage(streams: list[list[str]]) -> None:
    state = StreamState()
    passed = []
    for offset, pieces in enumerate(streams):
        for piece in pieces:
            chunk = {"choices": [{"index": 0, "delta": {"reasoning_content": piece}}]}
            if state.feed(chunk, offset):
                passed.append(chunk)
        usage_chunk = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
        assert not state.feed(usage_chunk, offset)  # held back
    assert {c["choices"][0]["index"] for c in passed} <= set(range(len(streams)))
    final = state.final_chunk()
    drive(
        finish_usage(
            final, state.reasoning_texts(), root="http://h", dialect="llama.cpp", model=None
        ),
        tokenize,
    )
    assert final["usage"]["prompt_tokens"] == 7
    assert final["usage"]["completion_tokens"] == 3 * len(streams)
    words = sum(len("".join(p).split()) for p in ("".join(s) for s in streams))
    details = final["usage"].get("completion_tokens_details")
    assert (details or {}).get("reasoning_tokens", 0) == min(words, 3 * len(streams))


def test_a_thinking_phase_is_all_reasoning_without_tokenizing() -> None:
    body = response("", "", 30, 8)

    def no_io(step: Fetch) -> Reply:
        raise AssertionError(step)

    drive(
        finish_usage(body, [], root="http://h", dialect="vllm", model="m", reasoning_output=True),
        no_io,
    )
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 8}


def test_names_and_roots() -> None:
    assert check_dialect("llama-server") == "llama.cpp"
    assert check_dialect(None) is None
    assert server_root("http://h:8000/v1/") == "http://h:8000"
