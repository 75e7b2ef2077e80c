"""The batch path: a wave of samples as one ``n=k`` request through a real instrumented
``openai`` client, the server played by an ``httpx2.MockTransport`` answering with
vLLM's shapes (one usage chunk summed over the choices:
``vllm/entrypoints/openai/chat_completion/serving.py``, ``sum(previous_num_tokens)``)
and llama-server's (one usage chunk per choice, each counting that choice only, as
measured on the embedded engine)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tcc_plugin
from tcc_plugin.budget import Demand
from tcc_plugin.integrations.openai_batch import BatchUnsupported, choices_batch
from tcc_plugin.sampling import (
    BatchSizeError,
    aself_consistency,
    best_of_n,
    launch_all,
    launch_waves,
    self_consistency,
    stop_after_completed,
)

from ..conftest import SPANS, Telemetry
from .test_server_dialects import MODEL, QUESTION, VLLMServer, delta, sse, stream_chunk

PROMPT_TOKENS = 11


def finish(index: int, reason: str = "stop") -> dict[str, Any]:
    return {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}


def usage(completion: int, prompt: int = PROMPT_TOKENS) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def vllm_chunks(answers: list[str], tokens: list[int]) -> list[dict[str, Any]]:
    """vLLM: choices interleaved by index, then ONE usage chunk summed over them."""
    chunks = [
        stream_chunk([delta(i, role="assistant", content="")], None) for i in range(len(answers))
    ]
    chunks += [stream_chunk([delta(i, content=f"so {a}")], None) for i, a in enumerate(answers)]
    chunks += [stream_chunk([finish(i)], None) for i in range(len(answers))]
    chunks.append(stream_chunk([], usage(sum(tokens))))
    return chunks


def llama_chunks(answers: list[str], tokens: list[int]) -> list[dict[str, Any]]:
    """llama-server: each choice's last chunk followed by ITS OWN usage chunk (that
    choice's completion tokens only); choices in reverse order, as it interleaves."""
    chunks = []
    for i in reversed(range(len(answers))):
        chunks.append(stream_chunk([delta(i, role="assistant", content=None)], None))
        chunks.append(stream_chunk([delta(i, reasoning_content="hm")], None))
        chunks.append(stream_chunk([delta(i, content=f"so {answers[i]}")], None))
        chunks.append(stream_chunk([finish(i)], None))
        chunks.append(stream_chunk([], usage(tokens[i])))
    return chunks


def streamed(chunks: list[dict[str, Any]]) -> httpx2.Response:
    return httpx2.Response(200, content=sse(chunks), headers={"content-type": "text/event-stream"})


def client_of(server: VLLMServer, dialect: str, base: str) -> openai.OpenAI:
    http = httpx2.Client(transport=httpx2.MockTransport(server.handler))
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", http_client=http)
    return tcc_plugin.instrument(client, server=dialect, gpu_price=36)


REQUEST: dict[str, Any] = {"model": MODEL, "messages": QUESTION, "max_tokens": 50}


@pytest.mark.parametrize(
    ("owner", "dialect", "chunks_of"),
    [("vllm", "vllm", vllm_chunks), ("llamacpp", "llama.cpp", llama_chunks)],
)
def test_a_wave_is_one_request_and_charged_every_choice(
    owner: str,
    dialect: str,
    chunks_of: Callable[[list[str], list[int]], list[dict[str, Any]]],
    telemetry: Telemetry,
) -> None:
    server = VLLMServer(owner=owner)
    answers, tokens = ["4", "4", "5", "4"], [5, 6, 7, 8]
    server.routes["/v1/chat/completions"] = lambda body: streamed(chunks_of(answers, tokens))
    port = 8210 if owner == "vllm" else 8211
    client = client_of(server, dialect, f"http://127.0.0.1:{port}")
    with tcc_plugin.budget(output_tokens=1_000) as b:
        result = self_consistency(
            choices_batch(client, **REQUEST), n=4, launch=launch_all(), stop=None
        )
    bodies = server.bodies("/v1/chat/completions")
    assert len(bodies) == 1  # one request for the wave, never fanned out
    assert (bodies[0]["n"], bodies[0]["stream"]) == (4, True)
    assert result.answer == "4" and dict(result.counts) == {"4": 3, "5": 1}
    assert (result.launched, result.completed) == (4, 4)
    # every choice's tokens: 5 + 6 + 7 + 8 (llama-server's per-choice chunks summed)
    assert b.spent.output_tokens == 26
    assert b.spent.total_tokens == PROMPT_TOKENS + 26  # the prompt once
    assert b.spent.calls == 1
    assert b.reserved.output_tokens == 0
    call = telemetry.span(f"chat {MODEL}")
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.request.choice.count"] == 4
    assert attributes["gen_ai.usage.output_tokens"] == 26
    assert attributes["tcc.budget.reserved.output_tokens"] == 50 * 4  # max_tokens x k
    group = dict(telemetry.span("self_consistency").attributes or {})
    assert group["tcc.sampling.launched"] == 4  # samples, not requests
    assert group["tcc.sampling.completed"] == 4
    assert group["tcc.sampling.usage.output_tokens"] == 26
    value: Any = result.winner.value if result.winner else None
    assert value.usage is None  # charged once, on the request's span
    if dialect == "llama.cpp":
        assert value.choices[0].message.reasoning_content == "hm"


def test_llama_server_legacy_completions_usage_on_each_finish_chunk_is_summed(
    telemetry: Telemetry,
) -> None:
    # llama-server's /v1/completions stream (measured): each choice's usage rides on
    # that choice's finish chunk, there is no usage-only chunk
    server = VLLMServer(owner="llamacpp")

    def legacy(index: int, text: str, reason: str | None, tokens: int | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": MODEL,
            "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": reason}],
        }
        if tokens is not None:
            chunk["usage"] = usage(tokens, prompt=3)
        return chunk

    chunks = [
        legacy(1, " blue", None, None),
        legacy(0, " grey", None, None),
        legacy(1, "", "length", 4),
        legacy(0, " today", None, None),
        legacy(0, "", "stop", 2),
    ]
    server.routes["/v1/completions"] = lambda body: streamed(chunks)
    client = client_of(server, "llama.cpp", "http://127.0.0.1:8219")
    source = choices_batch(client, model=MODEL, prompt="The sky is", max_tokens=4)
    with tcc_plugin.budget(output_tokens=1_000) as b:
        result = best_of_n(source, n=2, verifier=lambda c: 1.0, launch=launch_all())
    assert [c.text for c in result.candidates] == [" grey today", " blue"]
    assert len(server.bodies("/v1/completions")) == 1
    assert b.spent.output_tokens == 6 and b.spent.total_tokens == 3 + 6  # 2 + 4, prompt once


def test_waves_follow_the_launch_policy(telemetry: Telemetry) -> None:
    server = VLLMServer()

    def answer(body: dict[str, Any]) -> httpx2.Response:
        k = body["n"]
        return streamed(vllm_chunks(["7"] * k, [3] * k))

    server.routes["/v1/chat/completions"] = answer
    client = client_of(server, "vllm", "http://127.0.0.1:8212")
    with tcc_plugin.budget(output_tokens=1_000) as b:
        result = self_consistency(
            choices_batch(client, **REQUEST), n=6, launch=launch_waves(2), stop=None
        )
    assert [body["n"] for body in server.bodies("/v1/chat/completions")] == [2, 2, 2]
    assert result.completed == 6 and b.spent.calls == 3 and b.spent.output_tokens == 18


def test_max_batch_splits_a_wave(telemetry: Telemetry) -> None:
    server = VLLMServer()
    server.routes["/v1/chat/completions"] = lambda body: streamed(
        vllm_chunks(["1"] * body["n"], [2] * body["n"])
    )
    client = client_of(server, "vllm", "http://127.0.0.1:8213")
    result = self_consistency(
        choices_batch(client, max_batch=3, **REQUEST), n=5, launch=launch_all(), stop=None
    )
    assert sorted(body["n"] for body in server.bodies("/v1/chat/completions")) == [2, 3]
    assert result.completed == 5


def test_a_server_sending_fewer_choices_fails_the_batch_clearly() -> None:
    server = VLLMServer()
    server.routes["/v1/chat/completions"] = lambda body: streamed(vllm_chunks(["1"], [3]))
    client = client_of(server, "vllm", "http://127.0.0.1:8218")
    fewer = "asked for n=3 choices and sent none for 2"
    with tcc_plugin.budget(output_tokens=1_000) as b, pytest.raises(BatchSizeError, match=fewer):
        self_consistency(choices_batch(client, **REQUEST), n=3, launch=launch_all())
    assert b.spent.output_tokens == 3  # what the server did generate is still charged


def test_refusals() -> None:
    server = VLLMServer(owner="organization-owner")  # neither vLLM nor llama-server
    server.routes["/v1/chat/completions"] = lambda body: streamed(vllm_chunks(["1"], [1]))
    plain = openai.OpenAI(
        base_url="http://127.0.0.1:8214/v1",
        api_key="none",
        http_client=httpx2.Client(transport=httpx2.MockTransport(server.handler)),
    )
    with pytest.raises(BatchUnsupported, match="instrumented client"):
        choices_batch(plain, **REQUEST)
    client = tcc_plugin.instrument(plain)
    with pytest.raises(BatchUnsupported, match="neither vLLM nor llama-server"):
        self_consistency(choices_batch(client, **REQUEST), n=2)
    assert server.bodies("/v1/chat/completions") == []  # nothing was sent
    hosted = tcc_plugin.instrument(openai.OpenAI(api_key="sk-test"))
    with pytest.raises(BatchUnsupported, match="reasoning models"):
        choices_batch(hosted, model="o3", messages=QUESTION).draw(2)
    with pytest.raises(TypeError, match="sets n"):
        choices_batch(client, n=3, **REQUEST)
    with pytest.raises(TypeError, match="has no n"):
        choices_batch(anthropic.Anthropic(api_key="x"), **REQUEST)  # type: ignore[arg-type]
    aclient = tcc_plugin.instrument(openai.AsyncOpenAI(api_key="x", base_url="http://h:1/v1"))
    with pytest.raises(TypeError, match="use aself_consistency"):
        self_consistency(choices_batch(aclient, **REQUEST), n=2)


class AsyncServer:
    """A vLLM server whose streams are scripted per request, in arrival order: either
    complete (k choices, 2 tokens each, one usage chunk), or send ``hang`` content
    chunks and then never finish (until the client goes away)."""

    def __init__(self, plan: list[int | None], answers: list[str]) -> None:
        self.plan = plan  # per request: None completes; an int hangs after that many chunks
        self.answers = answers
        self.requests: list[int] = []
        self.hanging = asyncio.Event()

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        body = json.loads(request.content)
        if request.url.path == "/v1/models":
            card = {"id": MODEL, "object": "model", "created": 1, "owned_by": "vllm"}
            return httpx2.Response(200, json={"object": "list", "data": [card]})
        k = body["n"]
        number = len(self.requests)
        self.requests.append(k)
        hang = self.plan[number] if number < len(self.plan) else None
        answers = [self.answers[(number + i) % len(self.answers)] for i in range(k)]
        return httpx2.Response(
            200,
            content=self._stream(k, hang, answers),
            headers={"content-type": "text/event-stream"},
        )

    async def _stream(self, k: int, hang: int | None, answers: list[str]) -> AsyncIterator[bytes]:
        if hang is None:
            yield sse(vllm_chunks(answers, [2] * k))
            return
        for i in range(hang):
            chunk = stream_chunk([delta(i % k, content="x")], None)
            yield f"data: {json.dumps(chunk)}\n\n".encode()
        self.hanging.set()
        await asyncio.Event().wait()  # never answers: only cancellation ends it
        yield b""  # pragma: no cover


def async_client(server: AsyncServer, port: int) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(server.handler))
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="none", http_client=http
    )
    return tcc_plugin.instrument(client, server="vllm", gpu_price=36)


async def test_a_batch_cancelled_in_flight_is_charged_what_it_streamed(
    telemetry: Telemetry,
) -> None:
    # two batches of two; the second streams 3 chunks and hangs; the first then
    # completes with two agreeing answers and the stop rule cancels the second
    server = AsyncServer(plan=[None, 3], answers=["9"])
    original = server.handler

    async def ordered(request: httpx2.Request) -> httpx2.Response:
        first = not server.requests
        response = await original(request)
        if first and request.url.path != "/v1/models":
            await server.hanging.wait()  # the first answers once the second hangs
        return response

    server.handler = ordered  # type: ignore[method-assign]
    client = async_client(server, 8215)
    source = choices_batch(client, max_batch=2, **REQUEST)
    with tcc_plugin.budget(output_tokens=1_000) as b:
        result = await aself_consistency(
            source, n=4, launch=launch_all(), stop=stop_after_completed(2)
        )
    assert server.requests == [2, 2]
    assert (result.completed, result.cancelled) == (2, 2)
    assert result.stop_reason == "rule"
    # completed batch: 2 choices x 2 tokens; cancelled: one token per chunk streamed
    assert b.spent.output_tokens == 4 + 3
    assert result.cancelled_spent.output_tokens == 3
    assert b.spent.calls == 2
    assert b.reserved.output_tokens == 0 and b.reserved.calls == 0
    cancelled = [
        s
        for s in telemetry.spans(f"chat {MODEL}")
        if (s.attributes or {}).get("tcc.usage.estimated")
    ]
    assert len(cancelled) == 1
    attributes = dict(cancelled[0].attributes or {})
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert attributes["gen_ai.request.choice.count"] == 2
    group = dict(telemetry.span("self_consistency").attributes or {})
    assert group["tcc.sampling.cancelled"] == 2  # samples, from one request
    assert group["tcc.sampling.cancelled.usage.output_tokens"] == 3
    assert group["tcc.sampling.cancelled.calls"] == 1


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    n=st.integers(1, 7),
    max_batch=st.integers(1, 4),
    plan=st.lists(st.one_of(st.none(), st.integers(0, 3)), max_size=7),
    stop_after=st.integers(1, 7),
    waves=st.booleans(),
    per_sample=st.booleans(),
)
def test_the_ledger_stays_exact_under_batch_cancellation(
    n: int,
    max_batch: int,
    plan: list[int | None],
    stop_after: int,
    waves: bool,
    per_sample: bool,
    telemetry: Telemetry,
) -> None:
    """Launch/cancel interleavings with batches: reservations come back to zero, and the
    budget is charged exactly each request's usage (completed: 2 tokens per choice;
    cancelled: one per chunk streamed, else its reservation), nothing twice."""

    async def scenario() -> None:
        SPANS.clear()
        server = AsyncServer(plan=plan, answers=["1", "2"])
        client = async_client(server, 8216)
        source = choices_batch(client, max_batch=max_batch, **REQUEST)
        demand = Demand(input_tokens=200, max_output_tokens=50) if per_sample else None
        with tcc_plugin.budget(output_tokens=100_000, calls=1_000) as b:
            result = await aself_consistency(
                source,
                n=n,
                launch=launch_waves(max_batch) if waves else launch_all(),
                stop=stop_after_completed(stop_after),
                timeout=0.05,
                per_sample=demand,
            )
        calls = [dict(span.attributes or {}) for span in SPANS.get_finished_spans()]
        calls = [a for a in calls if a.get("gen_ai.operation.name") == "chat"]
        assert b.reserved.is_zero()
        # every request charged once, and only what its span says: nothing twice
        assert b.spent.output_tokens == sum(a["gen_ai.usage.output_tokens"] for a in calls)
        assert b.spent.calls == len(calls) >= len(server.requests)
        assert result.spent.output_tokens == b.spent.output_tokens
        # answered requests: exactly 2 tokens per choice, as the server said
        answered = [a for a in calls if not a.get("tcc.usage.estimated")]
        completed = [
            2 * k
            for number, k in enumerate(server.requests)
            if (plan[number] if number < len(plan) else None) is None
        ]
        # (a completed request whose reading the timeout cut is charged as cancelled)
        assert not Counter(a["gen_ai.usage.output_tokens"] for a in answered) - Counter(completed)
        # cancelled ones: one token per chunk read, else the reservation; never zero
        for a in calls:
            if a.get("tcc.usage.estimated"):
                k = a.get("gen_ai.request.choice.count", 1)
                assert 1 <= a["gen_ai.usage.output_tokens"] <= 50 * k
        assert sum(server.requests) <= result.launched <= n
        assert (
            result.completed + result.cancelled + result.failed + result.refused == result.launched
        )
        event(f"batches cancelled in flight: {result.cancelled > 0}")
        await client.close()

    asyncio.run(scenario())


def test_a_sync_batch_abandoned_by_the_group_stops_reading_and_is_charged_what_it_read(
    telemetry: Telemetry,
) -> None:
    # two batches of two: the first answers at once; the second streams one chunk, then
    # waits until the group has returned; its worker thread then sees the sample was
    # cancelled, stops reading and closes the stream
    server = VLLMServer()
    group_returned = threading.Event()
    chunks_sent = []

    def slow() -> Iterator[bytes]:
        for i in range(1_000):
            chunk = stream_chunk([delta(i % 2, content="x")], None)
            chunks_sent.append(i)
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            if i == 0:
                group_returned.wait(30)

    requests = []
    second_sent = threading.Event()

    def answer(body: dict[str, Any]) -> httpx2.Response:
        requests.append(body["n"])
        if len(requests) == 1:
            second_sent.wait(30)  # both batches are in flight before the first answers
            return streamed(vllm_chunks(["6", "6"], [2, 2]))
        second_sent.set()
        return httpx2.Response(200, content=slow(), headers={"content-type": "text/event-stream"})

    server.routes["/v1/chat/completions"] = answer
    client = client_of(server, "vllm", "http://127.0.0.1:8217")
    source = choices_batch(client, max_batch=2, **REQUEST)
    with tcc_plugin.budget(output_tokens=1_000) as b:
        result = self_consistency(source, n=4, launch=launch_all(), stop=stop_after_completed(2))
        group_returned.set()
        for _ in range(3_000):  # the abandoned worker settles its call when it ends
            if b.reserved.is_zero():
                break
            threading.Event().wait(0.01)
    assert (result.completed, result.cancelled) == (2, 2)
    assert b.reserved.is_zero()
    assert len(chunks_sent) < 10  # it stopped reading long before the stream's end
    # answered: 2 x 2 tokens; the given-up stream: one token per chunk it had read (the
    # first, and maybe the one after it), as a cancelled call; never zero, nor its
    # reservation (2 x 50)
    estimated = [
        dict(s.attributes or {})
        for s in telemetry.spans(f"chat {MODEL}")
        if (s.attributes or {}).get("tcc.usage.estimated")
    ]
    assert len(estimated) == 1 and estimated[0]["error.type"] == "CancelledError"
    streamed_tokens = estimated[0]["gen_ai.usage.output_tokens"]
    assert streamed_tokens in (1, 2)
    assert b.spent.output_tokens == 4 + streamed_tokens
    assert b.spent.calls == 2
