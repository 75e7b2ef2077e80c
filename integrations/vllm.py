"""OpenAI-compatible inference servers: vLLM and llama.cpp's ``llama-server``.

:class:`VLLMClient` (sync) and :class:`AsyncVLLMClient` speak the OpenAI protocol both
servers serve, in either *dialect*:

- chat completions with reasoning output (``message.reasoning``, formerly
  ``reasoning_content``; streamed as ``delta.reasoning`` / ``delta.reasoning_content``);
- raw-prompt ``/v1/completions`` continuation (what budget forcing needs:
  :meth:`VLLMClient.complete` is a :class:`tcc_plugin.forcing.Continuer`);
- ``n`` choices, stop strings and stop token ids, vLLM's ``thinking_token_budget``;
- ``/tokenize`` for exact token counts (vLLM: ``{"prompt"|"messages"}`` ->
  ``{"tokens", "count"}``; llama-server: ``{"content"}`` -> ``{"tokens"}``, chat
  prompts rendered with ``/apply-template`` first);
- streamed usage (``stream_options.include_usage``).

Usage is normalised before the core reads it: llama-server reports the completion
tokens of only one of ``n`` choices, so ``n > 1`` is sent as ``n`` concurrent
single-choice requests whose exact usages are summed (the prompt counted once, as
``n`` bills it); reasoning tokens that a server does not report are counted exactly by
``/tokenize`` of the reasoning text; a raw continuation flagged ``reasoning=True`` (a
budget-forcing thinking phase) is all reasoning. Input tokens are counted through
``/tokenize`` before the call, so budgets reserve the exact input.

A self-hosted server is priced by GPU time: ``gpu_price`` (USD per hour, or a
:class:`tcc_plugin.GpuHourPrice`) shared among the requests in flight on the server
(see :mod:`tcc_plugin.gpu_time`).

Every call goes through the core lifecycle (:func:`tcc_plugin.lifecycle.run`,
:func:`~tcc_plugin.lifecycle.open_stream` and their async twins): this module only
translates. Needs the ``vllm`` extra (``pip install 'tcc-plugin[vllm]'``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

try:
    import httpx2
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "tcc_plugin.integrations.vllm needs httpx2: pip install 'tcc-plugin[vllm]'"
    ) from exc

from tcc_plugin.adapter import Adapter, AttributeValue, CallInfo, Clamp, ResponseInfo, StreamReader
from tcc_plugin.gpu_time import InFlightMeter, SharedGpuHourPrice, meter_for
from tcc_plugin.lifecycle import (
    AsyncObservedStream,
    ObservedStream,
    aopen_stream,
    arun,
    open_stream,
    run,
)
from tcc_plugin.pricing import GpuHourPrice, Price, PriceBook, default_price_book
from tcc_plugin.readers import StreamAccumulator
from tcc_plugin.readers import read_response as read_any_response
from tcc_plugin.retry import RetryPolicy
from tcc_plugin.usage import Usage

__all__ = [
    "DIALECTS",
    "AsyncVLLMClient",
    "Choice",
    "Dialect",
    "ServerAdapter",
    "ServerError",
    "ServerRequest",
    "ServerResponse",
    "VLLMClient",
]

logger = logging.getLogger("tcc_plugin.integrations.vllm")

Dialect = Literal["vllm", "llama.cpp"]
DIALECTS: Final[tuple[Dialect, ...]] = ("vllm", "llama.cpp")
CHAT_PATH: Final = "/v1/chat/completions"
COMPLETIONS_PATH: Final = "/v1/completions"
DIALECT_ATTRIBUTE: Final = "tcc.server.dialect"


class ServerError(Exception):
    """The server answered with an error status. ``status_code``, ``response`` and its
    ``headers`` let the retry layer classify it (429 and 5xx are retried)."""

    def __init__(self, status_code: int, message: str, response: httpx2.Response) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.response = response
        self.message = message


# -- requests and responses ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServerRequest:
    """One request: its API path and JSON body. ``input_tokens`` is the exact input
    count when it was tokenized beforehand; ``reasoning_output`` marks a continuation
    whose whole output is thinking (a budget-forcing phase); ``attributes`` go on the
    call's span."""

    path: str
    body: Mapping[str, Any]
    stream: bool = False
    input_tokens: int | None = None
    reasoning_output: bool = False
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    @property
    def choices(self) -> int:
        n = self.body.get("n")
        return n if isinstance(n, int) and n > 0 else 1

    def with_body(self, **changes: Any) -> ServerRequest:
        return replace(self, body={**self.body, **changes})


@dataclass(frozen=True, slots=True)
class Choice:
    """One choice of a response: the text (chat ``content`` or completion ``text``),
    the reasoning (chat only; ``None`` when the server split none), why it finished,
    and vLLM's ``stop_reason`` (the stop string or token id that ended it)."""

    index: int
    text: str
    reasoning: str | None
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass(frozen=True, slots=True)
class ServerResponse:
    """A complete response, usage normalised. ``body`` is the JSON with the normalised
    ``usage`` block (summed over choices, reasoning tokens filled in)."""

    id: str | None
    model: str | None
    choices: tuple[Choice, ...]
    usage: Usage
    body: Mapping[str, Any]

    @property
    def text(self) -> str:
        """The first choice's text."""
        return self.choices[0].text if self.choices else ""

    @property
    def reasoning(self) -> str | None:
        """The first choice's reasoning."""
        return self.choices[0].reasoning if self.choices else None

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason."""
        return self.choices[0].finish_reason if self.choices else None

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.choices]


def _reasoning_of(obj: Mapping[str, Any] | None) -> str | None:
    """``reasoning`` (vLLM now), else ``reasoning_content`` (vLLM before, llama-server)."""
    if not obj:
        return None
    value = obj.get("reasoning")
    if value is None:
        value = obj.get("reasoning_content")
    return value if isinstance(value, str) else None


def _choices_of(body: Mapping[str, Any]) -> tuple[Choice, ...]:
    out: list[Choice] = []
    for i, raw in enumerate(body.get("choices") or ()):
        message = raw.get("message")
        if isinstance(message, Mapping):
            text = message.get("content") or ""
            reasoning = _reasoning_of(message)
        else:
            text = raw.get("text") or ""
            reasoning = None
        out.append(
            Choice(
                index=int(raw.get("index", i)),
                text=str(text),
                reasoning=reasoning,
                finish_reason=raw.get("finish_reason"),
                stop_reason=raw.get("stop_reason"),
            )
        )
    return tuple(sorted(out, key=lambda c: c.index))


# -- usage normalisation (logic once; the clients drive the /tokenize I/O) -------------------
def _usage_block(
    prompt: int, completion: int, cached: int | None, reasoning: int | None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        block["prompt_tokens_details"] = {"cached_tokens": min(cached, prompt)}
    if reasoning is not None:
        block["completion_tokens_details"] = {"reasoning_tokens": min(reasoning, completion)}
    return block


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _from_timings(timings: Any) -> dict[str, Any] | None:
    """llama-server's ``timings`` as a usage block (for a stream that sent no usage)."""
    if not isinstance(timings, Mapping):
        return None
    predicted = _int(timings.get("predicted_n"))
    prompt_n = _int(timings.get("prompt_n"))
    if predicted is None or prompt_n is None:
        return None
    cached = _int(timings.get("cache_n")) or 0
    return _usage_block(prompt_n + cached, predicted, cached, None)


def _normalise_usage(
    usage: Mapping[str, Any] | None,
    reasoning_texts: Sequence[str],
    reasoning_output: bool,
) -> Generator[str, int, dict[str, Any] | None]:
    """Complete a usage block: reasoning tokens counted when the server did not report
    them (yields each reasoning text and receives its token count). ``None`` when the
    server sent no usage."""
    if usage is None:
        return None
    prompt = _int(usage.get("prompt_tokens")) or 0
    completion = _int(usage.get("completion_tokens")) or 0
    details_in = usage.get("prompt_tokens_details")
    cached = _int(details_in.get("cached_tokens")) if isinstance(details_in, Mapping) else None
    details_out = usage.get("completion_tokens_details")
    reported = (
        _int(details_out.get("reasoning_tokens")) if isinstance(details_out, Mapping) else None
    )
    reasoning: int | None
    if reasoning_output:
        reasoning = completion
    elif reported:
        reasoning = reported
    elif any(reasoning_texts):
        reasoning = 0
        for text in reasoning_texts:
            if text:
                reasoning += yield text
    else:
        reasoning = reported
    return _usage_block(prompt, completion, cached, reasoning)


def _merge_bodies(bodies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``n`` single-choice responses as one ``n``-choice response (exact usage: the
    completions summed, the prompt counted once)."""
    first = dict(bodies[0])
    choices: list[Any] = []
    completion = 0
    for i, body in enumerate(bodies):
        for choice in body.get("choices") or ():
            choices.append({**choice, "index": i})
        usage = body.get("usage") or {}
        completion += _int(usage.get("completion_tokens")) or 0
    usage0 = first.get("usage") or {}
    prompt = _int(usage0.get("prompt_tokens")) or 0
    details = usage0.get("prompt_tokens_details")
    cached = _int(details.get("cached_tokens")) if isinstance(details, Mapping) else None
    first["choices"] = choices
    first["usage"] = _usage_block(prompt, completion, cached, None)
    return first


def _response_of(body: dict[str, Any], usage: dict[str, Any] | None) -> ServerResponse:
    if usage is not None:
        body["usage"] = usage
    info = read_any_response(body)
    rid = body.get("id")
    model = body.get("model")
    return ServerResponse(
        id=rid if isinstance(rid, str) else None,
        model=model if isinstance(model, str) else None,
        choices=_choices_of(body),
        usage=info.usage if info.usage is not None else Usage(),
        body=body,
    )


class _StreamState:
    """Accumulates a stream's reasoning deltas and usage; withholds the servers' own
    usage-only chunks so that one normalised usage chunk ends the stream."""

    def __init__(self) -> None:
        self.reasoning: dict[int, list[str]] = {}
        self.stream_usage: dict[int, Mapping[str, Any]] = {}
        self.template: dict[str, Any] = {}

    def feed(self, chunk: dict[str, Any], offset: int = 0) -> dict[str, Any] | None:
        """Note ``chunk`` of the ``offset``-th stream; returns what to pass on."""
        for key in ("id", "model", "created", "object", "system_fingerprint"):
            if key in chunk and key not in self.template:
                self.template[key] = chunk[key]
        choices = chunk.get("choices") or []
        for choice in choices:
            if offset:
                choice["index"] = int(choice.get("index", 0)) + offset
            piece = _reasoning_of(choice.get("delta"))
            if piece:
                self.reasoning.setdefault(int(choice.get("index", 0)), []).append(piece)
        usage = chunk.pop("usage", None)
        timings = chunk.pop("timings", None)
        if isinstance(usage, Mapping):
            self.stream_usage[offset] = usage  # the latest is the total (continuous stats)
        elif not choices and offset not in self.stream_usage:
            derived = _from_timings(timings)
            if derived is not None:
                self.stream_usage[offset] = derived
        return chunk if choices else None

    @property
    def usage(self) -> dict[str, Any] | None:
        """The usage of all streams: completions summed, the prompt counted once."""
        if not self.stream_usage:
            return None
        first = dict(self.stream_usage[min(self.stream_usage)])
        completion = sum(_int(u.get("completion_tokens")) or 0 for u in self.stream_usage.values())
        first["completion_tokens"] = completion
        first["total_tokens"] = (_int(first.get("prompt_tokens")) or 0) + completion
        return first

    def reasoning_texts(self) -> list[str]:
        return ["".join(self.reasoning[i]) for i in sorted(self.reasoning)]

    def final_chunk(self, usage: dict[str, Any]) -> dict[str, Any]:
        return {**self.template, "choices": [], "usage": usage}


# -- the adapter ----------------------------------------------------------------------------
class ServerAdapter(Adapter["ServerRequest", "ServerResponse"]):
    """Translates :class:`ServerRequest` / :class:`ServerResponse` for the lifecycle."""

    def __init__(self, dialect: Dialect, host: str | None, port: int | None) -> None:
        self.dialect = dialect
        self.host = host
        self.port = port

    def describe(self, request: ServerRequest) -> CallInfo:
        body = request.body
        max_out = _int(body.get("max_completion_tokens")) or _int(body.get("max_tokens"))
        thinking = _int(body.get("thinking_token_budget"))
        if thinking is not None and thinking < 0:
            thinking = None  # vLLM: -1 is "no budget"
        chat = request.path == CHAT_PATH
        if thinking is None and request.reasoning_output:
            thinking = max_out
        elif thinking is None and not chat:
            thinking = 0  # a raw continuation's output is never split into reasoning
        model = body.get("model")
        return CallInfo(
            model=model if isinstance(model, str) else None,
            provider=self.dialect,
            operation="chat" if chat else "text_completion",
            max_output_tokens=max_out,
            max_reasoning_tokens=thinking,
            input_tokens=request.input_tokens,
            choices=request.choices,
            clampable=True,
            stream=request.stream,
            server_address=self.host,
            server_port=self.port,
            attributes={DIALECT_ATTRIBUTE: self.dialect, **request.attributes},
            input_messages=body.get("messages") if chat else body.get("prompt"),
        )

    def clamp(self, request: ServerRequest, clamp: Clamp) -> ServerRequest:
        key = "max_completion_tokens" if "max_completion_tokens" in request.body else "max_tokens"
        changes: dict[str, Any] = {key: clamp.max_output_tokens}
        if (
            clamp.max_reasoning_tokens is not None
            and _int(request.body.get("thinking_token_budget")) is not None
        ):
            changes["thinking_token_budget"] = clamp.max_reasoning_tokens
        return request.with_body(**changes)

    def read_response(self, response: ServerResponse) -> ResponseInfo:
        return ResponseInfo(
            usage=response.usage,
            response_model=response.model,
            response_id=response.id,
            finish_reasons=tuple(c.finish_reason for c in response.choices if c.finish_reason),
            output_messages=[
                {"role": "assistant", "content": c.text, "reasoning": c.reasoning}
                for c in response.choices
            ],
        )

    def stream_reader(self, request: ServerRequest) -> StreamReader:
        return StreamAccumulator()


# -- what the sync and async clients share ---------------------------------------------------
def _root(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _price_of(gpu_price: GpuHourPrice | float | str | Decimal, meter: InFlightMeter) -> Price:
    if isinstance(gpu_price, GpuHourPrice):
        return SharedGpuHourPrice(gpu_price.usd_per_hour, meter, max_seconds=gpu_price.max_seconds)
    amount = gpu_price if isinstance(gpu_price, Decimal) else Decimal(str(gpu_price))
    return SharedGpuHourPrice(amount, meter)


def _stops(stop: str | Sequence[str] | None) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


class _Core:
    """Configuration and request building shared by :class:`VLLMClient` and
    :class:`AsyncVLLMClient` (no I/O here)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        dialect: Dialect,
        gpu_price: GpuHourPrice | float | str | Decimal | None,
        price_book: PriceBook | None,
        retry: RetryPolicy | None,
        count_input_tokens: bool,
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
        self.root = _root(base_url)
        self.model = model
        self.dialect: Dialect = dialect
        self.retry = retry
        self.count_input_tokens = count_input_tokens
        parts = urlsplit(self.root)
        self.adapter = ServerAdapter(dialect, parts.hostname, parts.port)
        self.meter = meter_for(self.root)
        if gpu_price is not None:
            book = price_book if price_book is not None else PriceBook(use_genai_prices=False)
            book.override(model, _price_of(gpu_price, self.meter))
            self.price_book = book
        else:
            self.price_book = price_book if price_book is not None else default_price_book()

    def body(
        self,
        field: str,
        value: Any,
        *,
        thinking_token_budget: int | None = None,
        max_tokens: int | None,
        n: int,
        stop: str | Sequence[str] | None,
        stop_token_ids: Sequence[int] | None,
        temperature: float | None,
        top_p: float | None,
        seed: int | None,
        extra: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """A request body: the sampling options, ``extra``, then ``field`` (the messages
        or the prompt) and vLLM's ``thinking_token_budget``."""
        body: dict[str, Any] = {"model": self.model}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if n != 1:
            body["n"] = n
        stops = _stops(stop)
        if stops:
            body["stop"] = stops
        if stop_token_ids:
            body["stop_token_ids"] = list(stop_token_ids)
        if temperature is not None:
            body["temperature"] = temperature
        if top_p is not None:
            body["top_p"] = top_p
        if seed is not None:
            body["seed"] = seed
        if extra:
            body.update(extra)
        body[field] = value  # the messages or prompt: never overridden by ``extra``
        if thinking_token_budget is not None:
            body["thinking_token_budget"] = thinking_token_budget
        return body

    def tokenize_request(self, text: str, add_special: bool) -> tuple[str, dict[str, Any]]:
        if self.dialect == "vllm":
            return "/tokenize", {
                "model": self.model,
                "prompt": text,
                "add_special_tokens": add_special,
            }
        return "/tokenize", {"content": text, "add_special": add_special, "parse_special": True}

    def chat_tokenize_request(self, messages: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        if self.dialect == "vllm":
            return "/tokenize", {
                "model": self.model,
                "messages": list(messages),
                "add_generation_prompt": True,
            }
        return "/apply-template", {"messages": list(messages)}

    def fan_out(self, request: ServerRequest) -> list[ServerRequest]:
        """llama-server reports one choice's completion tokens for ``n > 1``: send
        ``n`` single-choice requests instead (seeds offset, so samples differ)."""
        n = request.choices
        if self.dialect != "llama.cpp" or n == 1:
            return [request]
        body = {k: v for k, v in request.body.items() if k != "n"}
        seed = _int(body.get("seed"))
        out = []
        for i in range(n):
            one = dict(body)
            if seed is not None:
                one["seed"] = seed + i
            out.append(replace(request, body=one))
        return out

    def stream_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        return {**body, "stream": True, "stream_options": options}


def _error_message(response: httpx2.Response) -> str:
    try:
        data = response.json()
    except Exception:
        return response.text[:500]
    error = data.get("error") if isinstance(data, Mapping) else None
    if isinstance(error, Mapping):
        return str(error.get("message") or error)
    return str(data)[:500]


def _check(response: httpx2.Response) -> None:
    if response.status_code >= 400:
        raise ServerError(response.status_code, _error_message(response), response)


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif not line.strip() and data:
            payload = "\n".join(data)
            data = []
            if payload == "[DONE]":
                return
            yield json.loads(payload)
    if data and "\n".join(data) != "[DONE]":
        yield json.loads("\n".join(data))


async def _aevents(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    data: list[str] = []
    async for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif not line.strip() and data:
            payload = "\n".join(data)
            data = []
            if payload == "[DONE]":
                return
            yield json.loads(payload)
    if data and "\n".join(data) != "[DONE]":
        yield json.loads("\n".join(data))


# -- sync ---------------------------------------------------------------------------------------
class _SyncStream:
    """The chunks of one or more open streamed responses (llama-server ``n`` fan-out:
    read one after the other, choice indices offset), ending with one normalised usage
    chunk. Marks the request done on the server's meter when exhausted or closed."""

    def __init__(
        self,
        client: VLLMClient,
        responses: list[httpx2.Response],
        reasoning_output: bool,
    ) -> None:
        self._client = client
        self._responses = responses
        self._reasoning_output = reasoning_output
        self._iterator = self._chunks()
        self._closed = False

    def _chunks(self) -> Iterator[dict[str, Any]]:
        state = _StreamState()
        for offset, response in enumerate(self._responses):
            for event in _events(response.iter_lines()):
                chunk = state.feed(event, offset)
                if chunk is not None:
                    yield chunk
        if state.usage is None:
            return
        usage = self._client._drive(
            _normalise_usage(state.usage, state.reasoning_texts(), self._reasoning_output)
        )
        if usage is not None:
            yield state.final_chunk(usage)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            return next(self._iterator)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for response in self._responses:
            response.close()
        self._client._core.meter.end()

    def __del__(self) -> None:
        # dropped half-read without close(): the request is no longer in flight
        if not getattr(self, "_closed", True):
            self._closed = True
            self._client._core.meter.end()


class VLLMClient:
    """A client of a vLLM or llama-server OpenAI-compatible server (sync).

    ``base_url`` is the server's root (a trailing ``/v1`` is accepted); ``model`` the
    served model name; ``dialect`` ``"vllm"`` or ``"llama.cpp"``. ``gpu_price`` prices
    calls by GPU time (USD per hour, shared among the requests in flight on the
    server); else ``price_book`` (default: the process-wide one) prices them. ``retry``
    is the retry policy (else the one entered around a call). With
    ``count_input_tokens``, each call's input is tokenized first so budgets reserve it
    exactly. Use as a context manager, or :meth:`close` it.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        dialect: Dialect = "vllm",
        api_key: str | None = None,
        gpu_price: GpuHourPrice | float | str | Decimal | None = None,
        price_book: PriceBook | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 600.0,
        count_input_tokens: bool = True,
        http_client: httpx2.Client | None = None,
    ) -> None:
        self._core = _Core(
            base_url, model, dialect, gpu_price, price_book, retry, count_input_tokens
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_http = http_client is None
        self._http = http_client or httpx2.Client(timeout=timeout)
        self._headers = headers

    @property
    def model(self) -> str:
        return self._core.model

    @property
    def dialect(self) -> Dialect:
        return self._core.dialect

    @property
    def base_url(self) -> str:
        return self._core.root

    @property
    def price_book(self) -> PriceBook:
        return self._core.price_book

    # -- plumbing -------------------------------------------------------------------------
    def _post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self._http.post(self._core.root + path, json=body, headers=self._headers)
        _check(response)
        data: dict[str, Any] = response.json()
        return data

    def _drive(self, gen: Generator[str, int, Any]) -> Any:
        try:
            text = next(gen)
            while True:
                text = gen.send(self.count_tokens(text))
        except StopIteration as done:
            return done.value

    def _input_tokens(self, path: str, body: Mapping[str, Any]) -> int | None:
        if not self._core.count_input_tokens:
            return None
        try:
            if path == CHAT_PATH:
                return self.count_chat_tokens(body["messages"])
            prompt = body.get("prompt")
            return self.count_tokens(prompt, add_special=True) if isinstance(prompt, str) else None
        except Exception:
            logger.debug("could not count the input tokens of a request", exc_info=True)
            return None

    def _send(self, request: ServerRequest) -> ServerResponse:
        meter = self._core.meter
        meter.begin()
        try:
            parts = self._core.fan_out(request)
            if len(parts) == 1:
                bodies = [self._post_json(request.path, request.body)]
            else:
                bodies = self._post_many(request.path, [p.body for p in parts])
        finally:
            meter.end()
        body = bodies[0] if len(bodies) == 1 else _merge_bodies(bodies)
        texts = [c.reasoning or "" for c in _choices_of(body)]
        usage = self._drive(_normalise_usage(body.get("usage"), texts, request.reasoning_output))
        return _response_of(body, usage)

    def _post_many(self, path: str, bodies: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
            return list(pool.map(lambda b: self._post_json(path, b), bodies))

    def _open(self, request: ServerRequest) -> _SyncStream:
        meter = self._core.meter
        meter.begin()
        responses: list[httpx2.Response] = []
        try:
            for part in self._core.fan_out(request):
                http_request = self._http.build_request(
                    "POST",
                    self._core.root + request.path,
                    json=self._core.stream_body(part.body),
                    headers=self._headers,
                )
                response = self._http.send(http_request, stream=True)
                responses.append(response)
                if response.status_code >= 400:
                    response.read()
                    _check(response)
        except BaseException:
            for response in responses:
                response.close()
            meter.end()
            raise
        return _SyncStream(self, responses, request.reasoning_output)

    def _request(
        self,
        path: str,
        body: dict[str, Any],
        stream: bool,
        reasoning: bool,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> ServerRequest:
        return ServerRequest(
            path=path,
            body=body,
            stream=stream,
            input_tokens=self._input_tokens(path, body),
            reasoning_output=reasoning,
            attributes=dict(attributes or {}),
        )

    # -- the API --------------------------------------------------------------------------
    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        n: int = 1,
        stop: str | Sequence[str] | None = None,
        stop_token_ids: Sequence[int] | None = None,
        thinking_token_budget: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> ServerResponse:
        """A chat completion (``thinking_token_budget``: vLLM's cap on reasoning)."""
        body = self._core.body(
            "messages", list(messages), max_tokens=max_tokens, n=n, stop=stop,
            stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, seed=seed,
            extra=extra, thinking_token_budget=thinking_token_budget,
        )  # fmt: skip
        request = self._request(CHAT_PATH, body, False, False, attributes)
        return run(
            self._core.adapter, request, self._send,
            price_book=self._core.price_book, retry=self._core.retry,
        )  # fmt: skip

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        n: int = 1,
        stop: str | Sequence[str] | None = None,
        stop_token_ids: Sequence[int] | None = None,
        thinking_token_budget: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> ObservedStream[dict[str, Any]]:
        """A streamed chat completion: an iterator of chunk dicts (``delta.content``,
        ``delta.reasoning_content`` / ``delta.reasoning``), ending with one chunk whose
        ``usage`` is normalised. Close it (or use ``with``) if you stop early."""
        body = self._core.body(
            "messages", list(messages), max_tokens=max_tokens, n=n, stop=stop,
            stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, seed=seed,
            extra=extra, thinking_token_budget=thinking_token_budget,
        )  # fmt: skip
        request = self._request(CHAT_PATH, body, True, False, attributes)
        return open_stream(
            self._core.adapter, request, self._open,
            price_book=self._core.price_book, retry=self._core.retry,
        )  # fmt: skip

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stop: str | Sequence[str] | None = None,
        n: int = 1,
        stop_token_ids: Sequence[int] | None = None,
        thinking_token_budget: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> ServerResponse:
        """Continue the raw ``prompt`` (``/v1/completions``). ``reasoning=True`` marks
        the whole output as thinking (reasoning tokens). A
        :class:`tcc_plugin.forcing.Continuer`."""
        body = self._core.body(
            "prompt", prompt, max_tokens=max_tokens, n=n, stop=stop,
            stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, seed=seed,
            extra=extra, thinking_token_budget=thinking_token_budget,
        )  # fmt: skip
        request = self._request(COMPLETIONS_PATH, body, False, reasoning, attributes)
        return run(
            self._core.adapter, request, self._send,
            price_book=self._core.price_book, retry=self._core.retry,
        )  # fmt: skip

    def complete_stream(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stop: str | Sequence[str] | None = None,
        n: int = 1,
        stop_token_ids: Sequence[int] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> ObservedStream[dict[str, Any]]:
        """A streamed raw continuation (chunks carry ``choices[i].text``)."""
        body = self._core.body(
            "prompt", prompt, max_tokens=max_tokens, n=n, stop=stop,
            stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, seed=seed,
            extra=extra,
        )  # fmt: skip
        request = self._request(COMPLETIONS_PATH, body, True, reasoning, attributes)
        return open_stream(
            self._core.adapter, request, self._open,
            price_book=self._core.price_book, retry=self._core.retry,
        )  # fmt: skip

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """The token ids of ``text`` (``add_special``: with BOS etc., as a prompt)."""
        path, body = self._core.tokenize_request(text, add_special)
        tokens: list[int] = self._post_json(path, body)["tokens"]
        return tokens

    def count_tokens(self, text: str, *, add_special: bool = False) -> int:
        """How many tokens ``text`` is (through ``/tokenize``)."""
        return len(self.tokenize(text, add_special=add_special))

    def count_chat_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """How many prompt tokens ``messages`` make, generation prompt included."""
        path, body = self._core.chat_tokenize_request(messages)
        data = self._post_json(path, body)
        if self._core.dialect == "vllm":
            return len(data["tokens"])
        return self.count_tokens(data["prompt"], add_special=True)

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> VLLMClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- async --------------------------------------------------------------------------------------
class _AsyncStream:
    """The async twin of :class:`_SyncStream`."""

    def __init__(
        self,
        client: AsyncVLLMClient,
        responses: list[httpx2.Response],
        reasoning_output: bool,
    ) -> None:
        self._client = client
        self._responses = responses
        self._reasoning_output = reasoning_output
        self._iterator = self._chunks()
        self._closed = False

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        state = _StreamState()
        for offset, response in enumerate(self._responses):
            async for event in _aevents(response.aiter_lines()):
                chunk = state.feed(event, offset)
                if chunk is not None:
                    yield chunk
        if state.usage is None:
            return
        usage = await self._client._drive(
            _normalise_usage(state.usage, state.reasoning_texts(), self._reasoning_output)
        )
        if usage is not None:
            yield state.final_chunk(usage)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await anext(self._iterator)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for response in self._responses:
            await response.aclose()
        self._client._core.meter.end()

    def __del__(self) -> None:
        # dropped half-read without aclose(): the request is no longer in flight
        if not getattr(self, "_closed", True):
            self._closed = True
            self._client._core.meter.end()


class AsyncVLLMClient:
    """The async twin of :class:`VLLMClient` (same arguments and methods, awaited)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        dialect: Dialect = "vllm",
        api_key: str | None = None,
        gpu_price: GpuHourPrice | float | str | Decimal | None = None,
        price_book: PriceBook | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 600.0,
        count_input_tokens: bool = True,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        self._core = _Core(
            base_url, model, dialect, gpu_price, price_book, retry, count_input_tokens
        )
        self._own_http = http_client is None
        self._http = http_client or httpx2.AsyncClient(timeout=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @property
    def model(self) -> str:
        return self._core.model

    @property
    def dialect(self) -> Dialect:
        return self._core.dialect

    @property
    def base_url(self) -> str:
        return self._core.root

    @property
    def price_book(self) -> PriceBook:
        return self._core.price_book

    async def _post_json(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self._http.post(self._core.root + path, json=body, headers=self._headers)
        _check(response)
        data: dict[str, Any] = response.json()
        return data

    async def _drive(self, gen: Generator[str, int, Any]) -> Any:
        try:
            text = next(gen)
            while True:
                text = gen.send(await self.count_tokens(text))
        except StopIteration as done:
            return done.value

    async def _input_tokens(self, path: str, body: Mapping[str, Any]) -> int | None:
        if not self._core.count_input_tokens:
            return None
        try:
            if path == CHAT_PATH:
                return await self.count_chat_tokens(body["messages"])
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                return None
            return await self.count_tokens(prompt, add_special=True)
        except Exception:
            logger.debug("could not count the input tokens of a request", exc_info=True)
            return None

    async def _send(self, request: ServerRequest) -> ServerResponse:
        meter = self._core.meter
        meter.begin()
        try:
            parts = self._core.fan_out(request)
            bodies = list(
                await asyncio.gather(*(self._post_json(request.path, p.body) for p in parts))
            )
        finally:
            meter.end()
        body = bodies[0] if len(bodies) == 1 else _merge_bodies(bodies)
        texts = [c.reasoning or "" for c in _choices_of(body)]
        usage = await self._drive(
            _normalise_usage(body.get("usage"), texts, request.reasoning_output)
        )
        return _response_of(body, usage)

    async def _open(self, request: ServerRequest) -> _AsyncStream:
        meter = self._core.meter
        meter.begin()
        responses: list[httpx2.Response] = []
        try:
            for part in self._core.fan_out(request):
                http_request = self._http.build_request(
                    "POST",
                    self._core.root + request.path,
                    json=self._core.stream_body(part.body),
                    headers=self._headers,
                )
                response = await self._http.send(http_request, stream=True)
                responses.append(response)
                if response.status_code >= 400:
                    await response.aread()
                    _check(response)
        except BaseException:
            for response in responses:
                await response.aclose()
            meter.end()
            raise
        return _AsyncStream(self, responses, request.reasoning_output)

    async def _request(
        self,
        path: str,
        body: dict[str, Any],
        stream: bool,
        reasoning: bool,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> ServerRequest:
        return ServerRequest(
            path=path,
            body=body,
            stream=stream,
            input_tokens=await self._input_tokens(path, body),
            reasoning_output=reasoning,
            attributes=dict(attributes or {}),
        )

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        n: int = 1,
        stop: str | Sequence[str] | None = None,
        stop_token_ids: Sequence[int] | None = None,
        thinking_token_budget: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> ServerResponse:
        """See :meth:`VLLMClient.chat`."""
        body = self._core.body(
            "messages", list(messages), max_tokens=max_tokens, n=n, stop=stop,
            stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, seed=seed,
            extra=extra, thinking_token_budget=thinking_token_budget,
        )  # fmt: skip
        request = await self._request(CHAT_PATH, body, False, False, attributes)
        return await arun(
            self._core.adapter, request, self._send,
            price_book=self._core.price_book, retry=self._core.retry,
        )  # fmt: skip

    async def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        n: int = 1,
        stop: str | Sequence[str] | None = None,
        stop_token_ids: Sequence[int] | None = None,
        thinking_token_budget: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> AsyncObservedStream[dict[str, Any]]:
        """See :meth:`VLLMClient.chat_stream`."""
        body = self._core.body(
            "messages", list(messages), max_tokens=max_tokens, n=n, stop=stop,
            stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, seed=seed,
            extra=extra, thinking_token_budget=thinking_token_budget,
        )  # fmt: skip
        request = await self._request(CHAT_PATH, body, True, False, attributes)
        return await aopen_stream(
            self._core.adapter, request, self._open,
            price_book=self._core.price_book, retry=self._core.retry,
        )  # fmt: skip

    async def complete(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stop: str | Sequence[str] | None = None,
        n: int = 1,
        stop_token_ids: Sequence[int] | None = None,
        thinking_token_budget: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> ServerResponse:
        """See :meth:`VLLMClient.complete` (a :class:`tcc_plugin.forcing.AsyncContinuer`)."""
        body = self._core.body(
            "prompt", prompt, max_tokens=max_tokens, n=n, stop=stop,
            stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, seed=seed,
            extra=extra, thinking_token_budget=thinking_token_budget,
        )  # fmt: skip
        request = await self._request(COMPLETIONS_PATH, body, False, reasoning, attributes)
        return await arun(
            self._core.adapter, request, self._send,
            price_book=self._core.price_book, retry=self._core.retry,
        )  # fmt: skip

    async def complete_stream(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stop: str | Sequence[str] | None = None,
        n: int = 1,
        stop_token_ids: Sequence[int] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        reasoning: bool = False,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> AsyncObservedStream[dict[str, Any]]:
        """See :meth:`VLLMClient.complete_stream`."""
        body = self._core.body(
            "prompt", prompt, max_tokens=max_tokens, n=n, stop=stop,
            stop_token_ids=stop_token_ids, temperature=temperature, top_p=top_p, seed=seed,
            extra=extra,
        )  # fmt: skip
        request = await self._request(COMPLETIONS_PATH, body, True, reasoning, attributes)
        return await aopen_stream(
            self._core.adapter, request, self._open,
            price_book=self._core.price_book, retry=self._core.retry,
        )  # fmt: skip

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """See :meth:`VLLMClient.tokenize`."""
        path, body = self._core.tokenize_request(text, add_special)
        tokens: list[int] = (await self._post_json(path, body))["tokens"]
        return tokens

    async def count_tokens(self, text: str, *, add_special: bool = False) -> int:
        """See :meth:`VLLMClient.count_tokens`."""
        return len(await self.tokenize(text, add_special=add_special))

    async def count_chat_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """See :meth:`VLLMClient.count_chat_tokens`."""
        path, body = self._core.chat_tokenize_request(messages)
        data = await self._post_json(path, body)
        if self._core.dialect == "vllm":
            return len(data["tokens"])
        return await self.count_tokens(data["prompt"], add_special=True)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncVLLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
