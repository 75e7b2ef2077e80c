"""What the OpenAI and Anthropic integrations share. Imports no provider SDK.

Both SDKs send every API call through their client's ``post(path, body=..., options=...)``
method, to which each resource (``chat.completions``, ``responses``, ``messages``, ...)
holds a reference. An instrumented client gets an intercepting ``post``: calls to a path
with an adapter (``/chat/completions``, ``/v1/messages``, ...) become a
:class:`PostRequest` and go through the core lifecycle (:func:`~tcc_plugin.lifecycle.run`,
:func:`~tcc_plugin.lifecycle.open_stream` and their async twins); everything else passes
straight through. Interception at this level covers ``create``, ``parse``, the stream
helpers (``chat.completions.stream``, ``responses.stream``, ``messages.stream``) and
``with_raw_response`` alike, and lets ``max_retries`` be set per request.

Nothing here decides budgets, prices, spans or retries: the adapters only translate.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Final

from tcc_plugin.adapter import (
    INSTRUMENTED_ATTRIBUTE,
    Adapter,
    AttributeValue,
    ErrorInfo,
    ResponseInfo,
)
from tcc_plugin.drivers import aopen_stream, arun, open_stream, run
from tcc_plugin.instrument import Thinking, current_thinking
from tcc_plugin.plans import adrive, drive
from tcc_plugin.pricing import PriceBook
from tcc_plugin.readers import StreamAccumulator, read_response
from tcc_plugin.retry import RetryPolicy, classify_status

__all__ = [
    "IMAGE_TOKENS",
    "AsyncWithoutUsageChunk",
    "Config",
    "Parallel",
    "PostAdapter",
    "PostRequest",
    "WithoutUsageChunk",
    "classify_status",
    "estimate_input_tokens",
    "install",
    "installed",
    "uninstall",
]

# The SDKs' sentinels for "not given" (``omit``, ``not_given``), told apart by class name
# so this module imports neither SDK.
_SENTINELS: Final = frozenset({"Omit", "NotGiven"})
_RAW_HEADER: Final = "x-stainless-raw-response"
# What ``with_raw_response`` / ``with_streaming_response`` return instead of a model.
_RAW_RESPONSES: Final = frozenset({"LegacyAPIResponse", "APIResponse", "AsyncAPIResponse"})
_STATE_ATTR: Final = INSTRUMENTED_ATTRIBUTE


def given(value: Any) -> bool:
    """Whether a request field is set (not ``None`` nor an SDK "not given" sentinel)."""
    return value is not None and type(value).__name__ not in _SENTINELS


# -- the request ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PostRequest:
    """One API call as the SDK's ``post`` receives it; the adapters' request type.

    ``body`` is the JSON body without the SDK's "not given" sentinels; ``options`` the
    SDK's request options (``headers``, ``extra_json`` from ``extra_body``, ``timeout``,
    ``max_retries``, ...). ``hide_usage_chunk`` is set when the instrumentation asked a
    stream for a usage chunk the caller did not ask for; ``raw`` when the call comes
    from ``with_raw_response`` / ``with_streaming_response``."""

    path: str
    body: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False
    cast_to: Any = None
    stream_cls: Any = None
    hide_usage_chunk: bool = False
    raw: bool = False

    def get(self, key: str) -> Any:
        """The value of body field ``key`` as sent (``extra_body`` wins), or ``None``."""
        extra = self.options.get("extra_json")
        value = extra[key] if extra and key in extra else self.body.get(key)
        return value if given(value) else None

    def with_fields(self, **changes: Any) -> PostRequest:
        """A copy with body fields changed (also where ``extra_body`` sets them)."""
        options = self.options
        extra = options.get("extra_json")
        if extra and any(k in extra for k in changes):
            overridden = {k: v for k, v in changes.items() if k in extra}
            options = {**options, "extra_json": {**extra, **overridden}}
        return replace(self, body={**self.body, **changes}, options=options)


@dataclass(frozen=True, slots=True)
class Parallel:
    """A plan step: requests to send at once, answered with their responses in order."""

    requests: tuple[PostRequest, ...]


def _is_raw(options: Mapping[str, Any]) -> bool:
    headers = options.get("headers")
    if not headers:
        return False
    try:
        return any(str(k).lower() == _RAW_HEADER for k in headers)
    except TypeError:
        return False


# -- estimates -----------------------------------------------------------------------------
IMAGE_TOKENS: Final = 2000
"""Input tokens reserved per image part (above what either provider bills for one image
at its largest size)."""
_MESSAGE_TOKENS: Final = 3  # role and delimiters of a chat message
_REQUEST_TOKENS: Final = 3  # reply priming
_MEDIA_PARTS: Final = frozenset({"image_url", "image", "input_image"})
# Base64 payloads, opaque blobs and markup: not text the model reads as tokens. (In a
# schema, "type" is read: only message parts skip it.)
_OPAQUE_KEYS: Final = frozenset(
    {"data", "file_data", "b64_json", "signature", "encrypted_content", "cache_control"}
)
_PART_KEYS: Final = _OPAQUE_KEYS | {"type"}


def _bound(value: Any, keys: bool) -> int:
    if isinstance(value, str):
        if value.startswith("data:"):
            return 0
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (list, tuple)):  # before the (slower, ABC) Mapping check
        return sum(_bound(v, keys) for v in value)
    if type(value) is dict or isinstance(value, Mapping):
        total = IMAGE_TOKENS if value.get("type") in _MEDIA_PARTS else 0
        skip = _OPAQUE_KEYS if keys else _PART_KEYS
        for k, v in value.items():
            if k in skip:
                continue
            if keys:
                total += len(str(k))
            total += _bound(v, keys)
        return total
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, (int, float)):
        return 1  # a token id (legacy prompts) or a number in a schema
    dump = getattr(value, "model_dump", None)  # an SDK object passed back in (a message)
    if callable(dump):
        try:
            return _bound(dump(exclude_none=True), keys)
        except Exception:
            return 0
    return 0


def estimate_input_tokens(*texts: Any, messages: Any = None, schemas: Any = None) -> int:
    """An upper bound of the input tokens of a request's text, computed cheaply.

    A token is at least one UTF-8 byte, so the byte length of the text (``texts`` and
    ``messages``; keys too in ``schemas`` such as tool definitions) bounds its token
    count, plus a few tokens of chat framing per message. Images count
    :data:`IMAGE_TOKENS` each; base64 payloads are skipped. Documents, audio and
    context referenced by id (``previous_response_id``) are not counted. For English the
    bound is about four times the true count: reservations are generous, and settle to
    the exact usage after the call."""
    total = _REQUEST_TOKENS
    for text in texts:
        total += _bound(text, False)
    if isinstance(messages, (list, tuple)):
        total += _MESSAGE_TOKENS * len(messages) + _bound(messages, False)
    elif messages is not None:
        total += _bound(messages, False)
    if schemas is not None:
        total += _bound(schemas, True)
    return total


# -- errors --------------------------------------------------------------------------------
# -- the adapter base ----------------------------------------------------------------------
class PostAdapter(Adapter["PostRequest", Any]):
    """Translates the requests and responses of one API path of one provider.

    Subclasses implement :meth:`describe`, :meth:`clamp` and :meth:`adjust` (applying
    the neutral thinking budget and asking streams for usage); ``classify`` is the
    provider's error classification."""

    operation: str = "chat"
    path: str = ""
    # How a response of this path is read (a faster reader where the shape is known).
    reader: Callable[[Any], ResponseInfo] = staticmethod(read_response)
    stream_accumulator: type[StreamAccumulator] = StreamAccumulator
    # Span attributes read from the response's HTTP headers (attribute -> header name).
    response_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        *,
        provider: str,
        server_address: str | None,
        server_port: int | None,
        classify: Callable[[BaseException], ErrorInfo | None],
    ) -> None:
        self.provider = provider
        self.server_address = server_address
        self.server_port = server_port
        self._classify = classify

    # -- building the request ------------------------------------------------------------
    def prepare(
        self,
        path: str,
        body: Mapping[str, Any],
        options: Mapping[str, Any],
        stream: bool,
        cast_to: Any,
        stream_cls: Any,
        thinking: Thinking | None,
    ) -> PostRequest:
        """The request a ``post`` call makes, adjusted for the thinking budget."""
        clean = {k: v for k, v in body.items() if type(v).__name__ not in _SENTINELS}
        request = PostRequest(
            path, clean, options, stream, cast_to, stream_cls, raw=_is_raw(options)
        )
        return self.adjust(request, thinking)

    def adjust(self, request: PostRequest, thinking: Thinking | None) -> PostRequest:
        """``request`` with the neutral thinking budget and stream usage options applied."""
        return request

    # -- how a call is carried out (plans; see tcc_plugin.plans) ---------------------------
    @property
    def needs_setup(self) -> bool:
        """Whether :meth:`setup` must run before the next call (e.g. to detect a dialect)."""
        return False

    def setup(self) -> Generator[Any, Any, None]:
        """What the adapter must learn from the server before a call: a plan of steps
        for :meth:`perform`. The default asks nothing."""
        return
        yield  # pragma: no cover - makes this a generator

    def exchange(self, request: PostRequest) -> Generator[Any, Any, Any]:
        """How one attempt of a call is carried out: a plan yielding the
        :class:`PostRequest` (or :class:`Parallel` requests) to send, and any step for
        :meth:`perform`; it returns what the caller gets. The default sends ``request``."""
        response = yield request
        return response

    def perform(self, step: Any) -> Any:
        """Carry out a step of a plan other than sending requests (sync)."""
        raise TypeError(f"{type(self).__name__} cannot perform {step!r}")

    async def aperform(self, step: Any) -> Any:
        """Carry out a step of a plan other than sending requests (async)."""
        raise TypeError(f"{type(self).__name__} cannot perform {step!r}")

    def deliver(self, result: Any, run_plan: Callable[[Any], Any], asynchronous: bool) -> Any:
        """What :meth:`exchange` returned, as handed to the caller (e.g. a stream
        wrapped so that its end runs a plan with ``run_plan``). Default: unchanged."""
        return result

    # -- the Adapter interface -------------------------------------------------------------
    def describe(self, request: PostRequest) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def clamp(self, request: PostRequest, clamp: Any) -> PostRequest:  # pragma: no cover
        raise NotImplementedError

    def read_response(self, response: Any) -> ResponseInfo:
        """Usage and metadata of a response (a raw HTTP response's JSON body if read)."""
        if _is_raw_response(response):
            data = _raw_json(response)
            return self.reader(data) if data is not None else ResponseInfo(usage=None)
        return self.reader(response)

    def response_attributes(self, response: Any) -> dict[str, AttributeValue]:
        """The :attr:`response_headers` attributes of a response: a parsed model, a
        stream or a raw response (whichever holds the HTTP response's headers)."""
        if not self.response_headers:
            return {}
        headers = _headers_of(response)
        if headers is None:
            return {}
        attrs: dict[str, AttributeValue] = {}
        for name, header in self.response_headers.items():
            value = headers.get(header)
            if isinstance(value, str) and value:
                attrs[name] = value
        return attrs

    def output_messages(self, response: Any) -> Any:
        """The response's output, for opt-in content capture (the lifecycle asks for it
        only when content is captured); ``None`` for a raw response."""
        if _is_raw_response(response):
            return None
        return self.output_of(response)

    def output_of(self, response: Any) -> Any:
        """The output of a parsed response (subclasses say where it is)."""
        return None

    def stream_reader(self, request: PostRequest) -> StreamAccumulator:
        """A reader for the chunks of a streamed response."""
        return self.stream_accumulator()

    # -- retry hooks ------------------------------------------------------------------------
    def classify_error(self, error: BaseException) -> ErrorInfo | None:
        """The provider SDK's reading of ``error`` (``None``: not the SDK's)."""
        return self._classify(error)

    def without_provider_retries(self, request: PostRequest) -> PostRequest:
        """``request`` sent with the SDK's ``max_retries`` at 0 (our policy retries)."""
        return replace(request, options={**request.options, "max_retries": 0})

    # -- helpers for subclasses ------------------------------------------------------------
    @staticmethod
    def attributes(request: PostRequest, fields: Mapping[str, str]) -> dict[str, AttributeValue]:
        """Span attributes from the body fields ``fields`` maps to attribute names."""
        attrs: dict[str, AttributeValue] = {}
        body = request.body
        extra = request.options.get("extra_json")
        for key, name in fields.items():
            if key not in body and not (extra and key in extra):
                continue  # most requests set few of these: skip the full lookup
            value = request.get(key)
            if value is None:
                continue
            if isinstance(value, str) and name.endswith("stop_sequences"):
                attrs[name] = (value,)  # OpenAI's stop may be one string
            elif isinstance(value, (bool, int, float, str)):
                attrs[name] = value
            elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                attrs[name] = tuple(value)
        return attrs


def _headers_of(response: Any) -> Any:
    """The HTTP headers behind an SDK return value, or ``None``."""
    for holder in ("response", "http_response"):  # a stream; a raw response
        http = getattr(response, holder, None)
        headers = getattr(http, "headers", None)
        if headers is not None:
            return headers
    request_id = getattr(response, "_request_id", None)  # a parsed model keeps only this
    if isinstance(request_id, str):
        return {"request-id": request_id, "x-request-id": request_id}
    return None


def _is_raw_response(response: Any) -> bool:
    """Whether ``response`` is what ``with_raw_response`` / ``with_streaming_response``
    return (an HTTP response wrapper) rather than a parsed model."""
    return type(response).__name__ in _RAW_RESPONSES


def _raw_json(response: Any) -> Any:
    """The JSON body of a raw SDK response, if it has been read (else ``None``)."""
    http = getattr(response, "http_response", None)
    if http is None:
        return None
    try:
        return http.json()
    except Exception:  # not read yet (with_streaming_response), a stream, or not JSON
        return None


def model_dump(value: Any) -> Any:
    """An SDK object as plain JSON data (for content capture)."""
    to_dict = getattr(value, "model_dump", None)
    if callable(to_dict):
        try:
            return to_dict(mode="json", exclude_none=True)
        except Exception:
            return None
    return value


# -- streams -------------------------------------------------------------------------------
def _usage_only(chunk: Any) -> bool:
    return not getattr(chunk, "choices", True) and getattr(chunk, "usage", None) is not None


class WithoutUsageChunk:
    """A stream minus the usage-only final chunk that the instrumentation asked for
    (``stream_options.include_usage``) and the caller did not. The chunk still reaches
    the call's reader; every other attribute is the wrapped stream's."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        while True:
            chunk = next(self._stream)
            if not _usage_only(chunk):
                return chunk

    def close(self) -> None:
        """Close the stream; the call ends with what was read."""
        self._stream.close()

    def __enter__(self) -> WithoutUsageChunk:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class AsyncWithoutUsageChunk:
    """The async twin of :class:`WithoutUsageChunk`."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncWithoutUsageChunk:
        return self

    async def __anext__(self) -> Any:
        while True:
            chunk = await self._stream.__anext__()
            if not _usage_only(chunk):
                return chunk

    async def close(self) -> None:
        """Close the stream; the call ends with what was read."""
        await self._stream.aclose()

    async def aclose(self) -> None:
        """Alias of :meth:`close`."""
        await self._stream.aclose()

    async def __aenter__(self) -> AsyncWithoutUsageChunk:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# -- interception --------------------------------------------------------------------------
@dataclass(slots=True)
class Config:
    """What ``instrument(...)`` was given for a client."""

    price_book: PriceBook | None = None
    retry: RetryPolicy | None = None
    thinking: Thinking | None = None


class _Interceptor:
    """The ``post`` an instrumented client's resources call."""

    __slots__ = ("adapters", "config", "original")

    def __init__(
        self, original: Callable[..., Any], adapters: Mapping[str, PostAdapter], config: Config
    ) -> None:
        self.original = original
        self.adapters = adapters
        self.config = config

    def _route(
        self,
        path: str,
        body: Any,
        content: Any,
        files: Any,
        options: Mapping[str, Any] | None,
        stream: bool,
        cast_to: Any,
        stream_cls: Any,
    ) -> tuple[PostAdapter, PostRequest] | None:
        """The adapter and request of a call to instrument; ``None`` to pass it through
        (a path without an adapter, or a body that is not JSON)."""
        adapter = self.adapters.get(path)
        if (
            adapter is None
            or content is not None
            or files is not None
            or not isinstance(body, Mapping)
        ):
            return None
        request = adapter.prepare(
            path,
            body,
            options or {},
            stream,
            cast_to,
            stream_cls,
            current_thinking(self.config.thinking),
        )
        return adapter, request

    def send(self, request: PostRequest) -> Any:
        return self.original(
            request.path,
            cast_to=request.cast_to,
            body=request.body,
            options=request.options,
            stream=request.stream,
            stream_cls=request.stream_cls,
        )

    def _step(self, adapter: PostAdapter) -> Callable[[Any], Any]:
        def step(item: Any) -> Any:
            if isinstance(item, PostRequest):
                return self.send(item)
            if isinstance(item, Parallel):
                with ThreadPoolExecutor(max_workers=len(item.requests)) as pool:
                    return list(pool.map(self.send, item.requests))
            return adapter.perform(item)

        return step

    def _sender(self, adapter: PostAdapter) -> Callable[[PostRequest], Any]:
        """The ``send`` of a call: ``adapter``'s exchange plan, driven."""
        if type(adapter).exchange is PostAdapter.exchange:
            return self.send  # the common case: one request, nothing to drive
        step = self._step(adapter)

        def run_plan(plan: Any) -> Any:
            return drive(plan, step)

        def send(request: PostRequest) -> Any:
            return adapter.deliver(run_plan(adapter.exchange(request)), run_plan, False)

        return send

    def post(
        self,
        path: str,
        *,
        cast_to: Any,
        body: Any = None,
        content: Any = None,
        options: Mapping[str, Any] | None = None,
        files: Any = None,
        stream: bool = False,
        stream_cls: Any = None,
    ) -> Any:
        adapter = self.adapters.get(path)
        if adapter is not None and adapter.needs_setup:
            drive(adapter.setup(), self._step(adapter))
        routed = self._route(path, body, content, files, options, stream, cast_to, stream_cls)
        if routed is None:
            return self.original(
                path,
                cast_to=cast_to,
                body=body,
                content=content,
                options=options if options is not None else {},
                files=files,
                stream=stream,
                stream_cls=stream_cls,
            )
        adapter, request = routed
        config = self.config
        send = self._sender(adapter)
        if stream and not request.raw:
            observed = open_stream(
                adapter, request, send, price_book=config.price_book, retry=config.retry
            )
            return WithoutUsageChunk(observed) if request.hide_usage_chunk else observed
        return run(adapter, request, send, price_book=config.price_book, retry=config.retry)


class _AsyncInterceptor(_Interceptor):
    """The async twin of :class:`_Interceptor`."""

    __slots__ = ()

    def _astep(self, adapter: PostAdapter) -> Callable[[Any], Awaitable[Any]]:
        async def step(item: Any) -> Any:
            if isinstance(item, PostRequest):
                return await self.send(item)
            if isinstance(item, Parallel):
                return list(await asyncio.gather(*(self.send(r) for r in item.requests)))
            return await adapter.aperform(item)

        return step

    def _sender(self, adapter: PostAdapter) -> Callable[[PostRequest], Any]:
        if type(adapter).exchange is PostAdapter.exchange:
            return self.send
        step = self._astep(adapter)

        def run_plan(plan: Any) -> Awaitable[Any]:
            return adrive(plan, step)

        async def send(request: PostRequest) -> Any:
            return adapter.deliver(await run_plan(adapter.exchange(request)), run_plan, True)

        return send

    async def post(  # the async twin of _Interceptor.post
        self,
        path: str,
        *,
        cast_to: Any,
        body: Any = None,
        content: Any = None,
        options: Mapping[str, Any] | None = None,
        files: Any = None,
        stream: bool = False,
        stream_cls: Any = None,
    ) -> Any:
        adapter = self.adapters.get(path)
        if adapter is not None and adapter.needs_setup:
            await adrive(adapter.setup(), self._astep(adapter))
        routed = self._route(path, body, content, files, options, stream, cast_to, stream_cls)
        if routed is None:
            return await self.original(
                path,
                cast_to=cast_to,
                body=body,
                content=content,
                options=options if options is not None else {},
                files=files,
                stream=stream,
                stream_cls=stream_cls,
            )
        adapter, request = routed
        config = self.config
        send = self._sender(adapter)
        if stream and not request.raw:
            observed = await aopen_stream(
                adapter, request, send, price_book=config.price_book, retry=config.retry
            )
            return AsyncWithoutUsageChunk(observed) if request.hide_usage_chunk else observed
        return await arun(adapter, request, send, price_book=config.price_book, retry=config.retry)


@dataclass(slots=True)
class _Installed:
    interceptor: _Interceptor


def _resources(obj: Any, client: Any, seen: set[int]) -> Iterator[Any]:
    """The API resources of ``client`` created so far (they hold its ``post``)."""
    for value in list(vars(obj).values()):
        if id(value) in seen or getattr(value, "_client", None) is not client:
            continue
        if not hasattr(value, "_post") or not hasattr(value, "__dict__"):
            continue
        seen.add(id(value))
        yield value
        yield from _resources(value, client, seen)


def installed(client: Any) -> bool:
    """Whether ``client`` is instrumented."""
    return isinstance(vars(client).get(_STATE_ATTR), _Installed)


def install(
    client: Any,
    adapters: Mapping[str, PostAdapter],
    config: Config,
    reinstrument: Callable[[Any], Any],
) -> Any:
    """Instrument ``client`` in place: its ``post`` (and the ``post`` its resources hold)
    is intercepted for the paths of ``adapters``; ``with_options``/``copy`` return copies
    passed to ``reinstrument``. Installing again replaces the config and adapters."""
    state = vars(client).get(_STATE_ATTR)
    if isinstance(state, _Installed):
        state.interceptor.config = config
        state.interceptor.adapters = adapters
        return client
    original = type(client).post.__get__(client)
    cls = _AsyncInterceptor if inspect.iscoroutinefunction(original) else _Interceptor
    interceptor = cls(original, adapters, config)
    post = interceptor.post
    client.post = post  # resources created from now on bind this one
    for resource in list(_resources(client, client, set())):
        resource._post = post
    copier = getattr(type(client), "copy", None)
    if callable(copier):
        copy = copier.__get__(client)

        def instrumented_copy(*args: Any, **kwargs: Any) -> Any:
            return reinstrument(copy(*args, **kwargs))

        client.copy = instrumented_copy
        client.with_options = instrumented_copy
    setattr(client, _STATE_ATTR, _Installed(interceptor))
    return client


def uninstall(client: Any) -> Any:
    """Undo :func:`install` (resources created meanwhile are reset too)."""
    state = vars(client).get(_STATE_ATTR)
    if not isinstance(state, _Installed):
        return client
    for name in ("post", "copy", "with_options", _STATE_ATTR):
        vars(client).pop(name, None)
    original = client.post
    for resource in _resources(client, client, set()):
        resource._post = original
    return client
