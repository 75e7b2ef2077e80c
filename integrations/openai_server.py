"""Self-hosted servers (vLLM, llama-server) through a standard ``openai`` client.

``instrument(openai.OpenAI(base_url="http://gpu-box:8000/v1"), gpu_price=2.5)`` gives
the calls of a client pointed at vLLM or llama-server what a hosted API gets, in the
server's dialect (:mod:`.server_dialect`): provider ``vllm`` / ``llama.cpp``; exact
reasoning tokens (the server's count, else ``/tokenize`` of ``message.reasoning`` /
``reasoning_content`` and of the streamed deltas) written into the response's
``usage.completion_tokens_details``; vLLM's ``thinking_token_budget`` (``extra_body``)
clamped by budgets and set from a neutral thinking budget; ``n`` choices counted
exactly (:data:`~.server_dialect.CHOICE_USAGE`); the GPU-hour price shared among the
calls in flight on the server; raw ``completions`` as the thinking phases of budget
forcing (all their output is reasoning). The dialect is declared (``server="vllm"``)
or detected once per server at the first call.

The adapters here only translate and plan; :mod:`._common` drives the plans with the
client's own ``post`` (sync or async).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit

from tcc_plugin.adapter import CallInfo, Clamp, ResponseInfo
from tcc_plugin.forcing import current_phase
from tcc_plugin.gpu_time import InFlightMeter, SharedGpuHourPrice, meter_for
from tcc_plugin.instrument import Thinking
from tcc_plugin.pricing import GpuHourPrice, Price, PriceBook, default_price_book

from ._common import Parallel, PostAdapter, PostRequest
from .server_dialect import (
    CHOICE_USAGE,
    DIALECT_ATTRIBUTE,
    Dialect,
    Fetch,
    Reply,
    StreamState,
    Unanswered,
    detect,
    finish_usage,
    merge_choices,
    one_request_for_choices,
    reasoning_of,
    server_root,
    single_choice_seeds,
)

__all__ = ["GpuPrice", "Server", "ServerPriceBook", "server_adapters"]

GpuPrice = GpuHourPrice | float | int | str | Decimal
"""A GPU-hour price: USD per hour, or a :class:`tcc_plugin.GpuHourPrice`."""

_OPENAI_HOSTS: Final = ("api.openai.com", ".openai.azure.com", ".cognitiveservices.azure.com")


def is_hosted_openai(base_url: str) -> bool:
    """Whether ``base_url`` is OpenAI's (or Azure OpenAI's) own API."""
    host = (base_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]).lower()
    return any(host == h or (h.startswith(".") and host.endswith(h)) for h in _OPENAI_HOSTS)


def may_be_self_hosted(base_url: str) -> bool:
    """Whether an undeclared ``base_url`` is worth asking about its dialect.

    A server of one's own is reached over plain HTTP, on an explicit port, by an IP
    address, ``localhost`` or a single-label host name; a hosted API (OpenAI, DeepSeek,
    Together, ...) over HTTPS on its default port by a public name, and it is never
    sent a probe it did not ask for. A self-hosted server behind HTTPS on port 443 is
    declared with ``server=``."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if not host or is_hosted_openai(base_url):
        return False
    try:
        explicit_port = parts.port is not None and parts.port != 443
    except ValueError:
        return False
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    return parts.scheme == "http" or explicit_port or literal or "." not in host


class ServerPriceBook(PriceBook):
    """Every model the server serves priced by its GPU time (shared among the calls
    in flight); other lookups go to ``base``."""

    def __init__(self, price: Price, base: PriceBook) -> None:
        super().__init__(use_genai_prices=False)
        self._price = price
        self._base = base

    def lookup(self, model: str | None, provider: str | None = None) -> Price | None:
        return self._price if model else self._base.lookup(model, provider)


def gpu_price_of(gpu_price: GpuPrice, meter: InFlightMeter) -> Price:
    """``gpu_price`` shared among the requests ``meter`` sees in flight."""
    if isinstance(gpu_price, GpuHourPrice):
        return SharedGpuHourPrice(gpu_price.usd_per_hour, meter, max_seconds=gpu_price.max_seconds)
    if isinstance(gpu_price, bool) or not isinstance(gpu_price, (int, float, str, Decimal)):
        raise TypeError(f"gpu_price must be USD per hour or a GpuHourPrice, got {gpu_price!r}")
    amount = gpu_price if isinstance(gpu_price, Decimal) else Decimal(str(gpu_price))
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"gpu_price must be a finite USD amount >= 0, got {gpu_price!r}")
    return SharedGpuHourPrice(amount, meter)


class Server:
    """One self-hosted server as a client sees it: its root URL, the declared or
    detected dialect, its in-flight meter, and how to reach it (``fetch``: the
    client's own HTTP, sync or async)."""

    def __init__(self, client: Any, declared: Dialect | None) -> None:
        self.client = client
        self.root = server_root(str(client.base_url))
        self.declared = declared
        self.dialect: Dialect | None = None
        self.known = False
        self.meter = meter_for(self.root)

    def setup(self) -> Generator[Fetch, Reply, None]:
        try:
            self.dialect = yield from detect(self.root, self.declared)
        except Unanswered:  # down or unreachable: the call itself will say so
            self.dialect = self.declared
            return
        self.known = True

    def _options(self, step: Fetch) -> dict[str, Any]:
        return {"max_retries": step.retries}

    def fetch(self, step: Fetch) -> Reply:
        try:
            if step.method == "GET":
                data = self.client.get(step.url, cast_to=object, options=self._options(step))
            else:
                post = type(self.client).post.__get__(self.client)  # never intercepted
                data = post(step.url, cast_to=object, body=step.body, options=self._options(step))
        except Exception as exc:
            return Reply(getattr(exc, "status_code", None), None, str(exc))
        return Reply(200, data)

    async def afetch(self, step: Fetch) -> Reply:
        try:
            if step.method == "GET":
                data = await self.client.get(step.url, cast_to=object, options=self._options(step))
            else:
                post = type(self.client).post.__get__(self.client)
                data = await post(
                    step.url, cast_to=object, body=step.body, options=self._options(step)
                )
        except Exception as exc:
            return Reply(getattr(exc, "status_code", None), None, str(exc))
        return Reply(200, data)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _without(request: PostRequest, key: str) -> PostRequest:
    extra = request.options.get("extra_json")
    options = request.options
    if extra and key in extra:
        options = {**options, "extra_json": {k: v for k, v in extra.items() if k != key}}
    return replace(
        request, body={k: v for k, v in request.body.items() if k != key}, options=options
    )


class _ServerMixin(PostAdapter):
    """What the self-hosted chat and completions adapters add to OpenAI's."""

    server: Server

    @property
    def needs_setup(self) -> bool:
        return not self.server.known

    def setup(self) -> Generator[Any, Any, None]:
        yield from self.server.setup()

    def perform(self, step: Any) -> Any:
        return self.server.fetch(step)

    async def aperform(self, step: Any) -> Any:
        return await self.server.afetch(step)

    def _thinking_phase(self) -> bool:
        phase = current_phase()
        return phase is not None and phase.kind == "think" and self.operation == "text_completion"

    def server_info(self, info: CallInfo, request: PostRequest) -> CallInfo:
        dialect = self.server.dialect
        if dialect is None:
            return info
        thinking = _int(request.get("thinking_token_budget"))
        if thinking is not None and thinking < 0:
            thinking = None  # vLLM: -1 is "no budget"
        if self._thinking_phase():
            thinking = info.max_output_tokens
        elif thinking is None and self.operation == "text_completion":
            thinking = 0  # a raw continuation's output is never split into reasoning
        phase = current_phase()
        attributes = {**info.attributes, DIALECT_ATTRIBUTE: dialect}
        if phase is not None:
            attributes.update(phase.attributes())
        return replace(info, provider=dialect, max_reasoning_tokens=thinking, attributes=attributes)

    def clamp_thinking(self, request: PostRequest, clamp: Clamp) -> PostRequest:
        if clamp.max_reasoning_tokens is not None and _int(
            request.get("thinking_token_budget")
        ) not in (None, -1):
            return request.with_fields(thinking_token_budget=clamp.max_reasoning_tokens)
        return request

    def exchange(self, request: PostRequest) -> Generator[Any, Any, Any]:
        dialect = self.server.dialect
        if dialect is None or (request.raw and request.stream):
            response = yield request
            return response
        n = max(_int(request.get("n")) or 1, 1)
        if n > 1 and not one_request_for_choices(dialect, request.stream):
            one = _without(request, "n")
            seeds = single_choice_seeds(n, _int(request.get("seed")))
            parts = [one if s is None else one.with_fields(seed=s) for s in seeds]
        else:
            parts = [request]
        meter = self.server.meter
        meter.begin()
        try:
            if len(parts) == 1:
                results = [(yield parts[0])]
            else:
                results = list((yield Parallel(tuple(parts))))
        except BaseException:
            meter.end()
            raise
        if not request.stream:
            meter.end()  # a stream's request ends when the stream is closed
        if request.stream:
            # llama-server streams n choices' usage one choice at a time (a legacy
            # completion's on each choice's last chunk): every part is summed.
            per_choice = n > 1 and len(parts) == 1 and CHOICE_USAGE[dialect].stream == "per_choice"
            return _Opened(results, self._finisher(request), StreamState(per_choice=per_choice))
        # A raw response (with_raw_response, as LangChain's ChatOpenAI calls) is
        # normalised in the object its parse() caches and returns.
        parsed = [_parsed(r) for r in results] if request.raw else results
        response = parsed[0] if len(parsed) == 1 else merge_choices(parsed)
        texts = [reasoning_of(_message(c)) or "" for c in getattr(response, "choices", ()) or ()]
        yield from self._finisher(request)(response, texts)
        return results[0]

    def read_response(self, response: Any) -> ResponseInfo:
        if self.server.dialect is not None and _is_raw(response):
            return self.reader(_parsed(response))  # the normalised parse, not the raw JSON
        return super().read_response(response)

    def _finisher(
        self, request: PostRequest
    ) -> Callable[[Any, list[str]], Generator[Fetch, Reply, None]]:
        dialect = self.server.dialect
        assert dialect is not None
        model = request.get("model")
        reasoning_output = self._thinking_phase()

        def finish(holder: Any, texts: list[str]) -> Generator[Fetch, Reply, None]:
            return finish_usage(
                holder,
                texts,
                root=self.server.root,
                dialect=dialect,
                model=model if isinstance(model, str) else None,
                reasoning_output=reasoning_output,
            )

        return finish

    def deliver(self, result: Any, run_plan: Callable[[Any], Any], asynchronous: bool) -> Any:
        if not isinstance(result, _Opened):
            return result
        cls = _AsyncServerStream if asynchronous else _ServerStream
        return cls(result, run_plan, self.server.meter)


def _message(choice: Any) -> Any:
    return getattr(choice, "message", None)


def _is_raw(response: Any) -> bool:
    return callable(getattr(response, "parse", None)) and hasattr(response, "http_response")


def _parsed(response: Any) -> Any:
    """What a raw SDK response parses to (the SDK caches it: later parse() calls return
    this very object)."""
    return response.parse() if _is_raw(response) else response


class _Opened:
    """Streams opened for one call (several for llama-server ``n``), and the plan that
    completes the usage of their final chunk."""

    def __init__(
        self,
        streams: list[Any],
        finish: Callable[[Any, list[str]], Generator[Fetch, Reply, None]],
        state: StreamState | None = None,
    ) -> None:
        self.streams = streams
        self.finish = finish
        self.state = state if state is not None else StreamState()

    def chunks(self) -> Iterator[tuple[int, Any]]:
        """The streams to read in order, with their choice-index offsets."""
        return iter(enumerate(self.streams))


class _ServerStream:
    """The chunks of the opened streams, one after the other, ending with one usage
    chunk whose reasoning tokens are exact. Closing it (or reaching its end) marks the
    request done on the server's meter."""

    def __init__(self, opened: _Opened, run_plan: Callable[[Any], Any], meter: Any) -> None:
        self._opened = opened
        self._run_plan = run_plan
        self._meter = meter
        self._done = False
        self._iterator = self._chunks()

    def _chunks(self) -> Iterator[Any]:
        state = self._opened.state
        for offset, stream in self._opened.chunks():
            for chunk in stream:
                if state.feed(chunk, offset):
                    yield chunk
        final = state.final_chunk()
        if final is not None:
            self._run_plan(self._opened.finish(final, state.reasoning_texts()))
            yield final

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._meter.end()
            for stream in self._opened.streams:
                stream.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._opened.streams[0], name)


class _AsyncServerStream:
    """The async twin of :class:`_ServerStream`."""

    def __init__(self, opened: _Opened, run_plan: Callable[[Any], Any], meter: Any) -> None:
        self._opened = opened
        self._run_plan = run_plan
        self._meter = meter
        self._done = False
        self._iterator = self._chunks()

    async def _chunks(self) -> Any:
        state = self._opened.state
        for offset, stream in self._opened.chunks():
            async for chunk in stream:
                if state.feed(chunk, offset):
                    yield chunk
        final = state.final_chunk()
        if final is not None:
            await self._run_plan(self._opened.finish(final, state.reasoning_texts()))
            yield final

    def __aiter__(self) -> _AsyncServerStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._iterator.__anext__()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if not self._done:
            self._done = True
            self._meter.end()
            for stream in self._opened.streams:
                await stream.close()

    async def aclose(self) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._opened.streams[0], name)


def server_adapters(
    base: Mapping[str, type[PostAdapter]],
    server: Server,
    **kwargs: Any,
) -> dict[str, PostAdapter]:
    """The adapters of a self-hosted client: for each OpenAI adapter class of ``base``
    that a server dialect extends (chat and legacy completions), its server subclass."""
    out: dict[str, PostAdapter] = {}
    for path, cls in base.items():
        server_cls = _SERVER_CLASSES.get(cls)
        if server_cls is None:
            server_cls = _make_server_class(cls)
        adapter = server_cls(**kwargs)
        adapter.server = server  # type: ignore[attr-defined]
        out[path] = adapter
    return out


_SERVER_CLASSES: dict[type[PostAdapter], type[PostAdapter]] = {}


def _make_server_class(cls: type[PostAdapter]) -> type[PostAdapter]:
    """``cls`` with the server dialect: described, clamped and exchanged per the server."""

    def describe(self: Any, request: PostRequest) -> CallInfo:
        info: CallInfo = self.server_info(cls.describe(self, request), request)
        return info

    def clamp(self: Any, request: PostRequest, clamp: Clamp) -> PostRequest:
        clamped: PostRequest = self.clamp_thinking(cls.clamp(self, request, clamp), clamp)
        return clamped

    def adjust(self: Any, request: PostRequest, thinking: Thinking | None) -> PostRequest:
        request = cls.adjust(self, request, thinking)
        if (
            self.server.dialect == "vllm"
            and isinstance(thinking, int)
            and self.operation == "chat"
            and request.get("thinking_token_budget") is None
        ):
            request = request.with_fields(thinking_token_budget=thinking)
        return request

    server_cls = type(
        f"Server{cls.__name__}",
        (_ServerMixin, cls),
        {"describe": describe, "clamp": clamp, "adjust": adjust, "__module__": __name__},
    )
    _SERVER_CLASSES[cls] = server_cls
    return server_cls


def server_price_book(
    gpu_price: GpuPrice | None, price_book: PriceBook | None, server: Server
) -> PriceBook | None:
    """The price book of a self-hosted client: ``gpu_price`` for every model when
    given (shared among the calls in flight), else ``price_book``."""
    if gpu_price is None:
        return price_book
    base = price_book if price_book is not None else default_price_book()
    return ServerPriceBook(gpu_price_of(gpu_price, server.meter), base)
