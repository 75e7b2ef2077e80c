"""Replays a recorded exchange through a real, instrumented SDK client.

The client's HTTP is answered by ``httpx2.MockTransport`` with the recorded status,
headers and body bytes (gzip-compressed bodies stay compressed on the wire; streams
arrive one SSE frame per read). The request is made through the SDK method a user
would call, with the recorded body's fields as its arguments (fields the installed SDK
does not name go through ``extra_body``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anthropic
import httpx2
import openai

from tcc_plugin.integrations import anthropic as tcc_anthropic
from tcc_plugin.integrations import openai as tcc_openai
from tcc_plugin.telemetry import names

from .cassettes import Exchange


class Replayer:
    """Answers the SDK's request with ``ex``'s recorded response (once) and checks the
    request went to the recorded method and path."""

    def __init__(self, ex: Exchange, *, asynchronous: bool) -> None:
        self.ex = ex
        self.asynchronous = asynchronous
        self.requests: list[Any] = []

    def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        assert len(self.requests) == 1, "a replayed call must make exactly one request"
        assert request.method == self.ex.method
        assert request.url.path == self.ex.path, (request.url.path, self.ex.path)
        frames = self.ex.frames()
        if not self.ex.sse:
            return httpx2.Response(
                self.ex.status, headers=self.ex.headers, content=b"".join(frames)
            )

        def chunks() -> Iterator[bytes]:
            yield from frames

        async def achunks() -> AsyncIterator[bytes]:
            for frame in frames:
                yield frame

        return httpx2.Response(
            self.ex.status,
            headers=self.ex.headers,
            content=achunks() if self.asynchronous else chunks(),
        )


def client_for(
    ex: Exchange, replayer: Replayer, *, instrumented: bool = True, **instrument: Any
) -> Any:
    """A real SDK client for ``ex``'s provider, answered by ``replayer``, instrumented
    (with ``instrument``'s options) unless ``instrumented`` is false."""
    transport = httpx2.MockTransport(replayer)
    http = (httpx2.AsyncClient if replayer.asynchronous else httpx2.Client)(transport=transport)
    url = urlsplit(ex.url)
    client: Any
    if ex.provider == "anthropic":
        cls = anthropic.AsyncAnthropic if replayer.asynchronous else anthropic.Anthropic
        client = cls(api_key="sk-ant-replay", http_client=http, max_retries=0)
        return tcc_anthropic.instrument(client, **instrument) if instrumented else client
    if ex.provider == "azure":
        azure = openai.AsyncAzureOpenAI if replayer.asynchronous else openai.AzureOpenAI
        version = parse_qs(url.query).get("api-version", ["2024-02-01"])[0]
        client = azure(
            api_key="replay",
            api_version=version,
            azure_endpoint=f"{url.scheme}://{url.netloc}",
            http_client=http,
            max_retries=0,
        )
    else:
        cls_ = openai.AsyncOpenAI if replayer.asynchronous else openai.OpenAI
        base = url.path
        for endpoint in ("/chat/completions", "/completions", "/responses"):
            base = base.split(endpoint)[0]
        client = cls_(
            api_key="sk-replay",
            base_url=f"{url.scheme}://{url.netloc}{base}",
            http_client=http,
            max_retries=0,
        )
    return tcc_openai.instrument(client, **instrument) if instrumented else client


def resource(client: Any, ex: Exchange) -> Any:
    """The SDK resource the recorded request was made through."""
    path = ex.path
    if path.endswith("/messages"):
        beta = "beta=true" in urlsplit(ex.url).query
        return client.beta.messages if beta else client.messages
    if path.endswith("/chat/completions"):
        return client.chat.completions
    if "/responses" in path:
        return client.responses
    if path.endswith("/completions"):
        return client.completions
    raise AssertionError(f"no SDK resource for {path}")


def arguments(method: Callable[..., Any], body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as keyword arguments of ``method``; unknown fields via ``extra_body``."""
    params = inspect.signature(method).parameters
    known = {k: v for k, v in body.items() if k in params}
    extra = {k: v for k, v in body.items() if k not in params}
    if extra:
        known["extra_body"] = extra
    return known


def send(client: Any, ex: Exchange, *, raw: bool = False) -> Any:
    """Make the recorded request with the SDK (a coroutine for an async client)."""
    res = resource(client, ex)
    if raw:
        res = res.with_raw_response
    if ex.method == "GET":  # e.g. polling a background response
        return res.retrieve(ex.path.rsplit("/", 1)[-1])
    body = dict(ex.request_body or {})
    if ex.provider == "azure":
        body["model"] = ex.path.split("/deployments/")[1].split("/")[0]
    return res.create(**arguments(res.create, body))


def stream_helper(client: Any, ex: Exchange) -> Any:
    """The SDK's stream helper for the recorded request (a context manager)."""
    res = resource(client, ex)
    body = {k: v for k, v in (ex.request_body or {}).items() if k != "stream"}
    if ex.provider == "azure":
        body["model"] = ex.path.split("/deployments/")[1].split("/")[0]
    return res.stream(**arguments(res.stream, body))


def run(
    ex: Exchange, call: Callable[[Any], Any], *, instrumented: bool = True, **instrument: Any
) -> Any:
    """``call(client)`` against a client of the kind the recording used (an async
    ``call`` on an async client is run to completion)."""
    asynchronous = ex.client == "async"
    replayer = Replayer(ex, asynchronous=asynchronous)
    client = client_for(ex, replayer, instrumented=instrumented, **instrument)
    if asynchronous:
        return asyncio.run(call(client))
    return call(client)


def consume(ex: Exchange, *, instrumented: bool = True, **instrument: Any) -> Any:
    """Make the recorded call and read it to the end (a stream, every event); returns
    the response (a stream: the list of its events)."""

    def sync(client: Any) -> Any:
        response = send(client, ex)
        return list(response) if ex.sse else response

    async def asynchronous(client: Any) -> Any:
        response = await send(client, ex)
        return [chunk async for chunk in response] if ex.sse else response

    call = asynchronous if ex.client == "async" else sync
    return run(ex, call, instrumented=instrumented, **instrument)


def our_spans(telemetry: Any) -> list[Any]:
    """Spans of this project (the anthropic SDK may record its own)."""
    return [
        s
        for s in telemetry.spans()
        if s.instrumentation_scope is not None
        and s.instrumentation_scope.name == names.INSTRUMENTATION_NAME
    ]


def our_span_attributes(telemetry: Any) -> dict[str, Any]:
    """The attributes of the one span of this project."""
    spans = our_spans(telemetry)
    assert len(spans) == 1, [s.name for s in spans]
    assert spans[0].end_time is not None
    return dict(spans[0].attributes or {})
