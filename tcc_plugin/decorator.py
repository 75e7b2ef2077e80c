"""``@llm_call``: put any function that calls an LLM through the lifecycle."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any, Protocol, TypeVar, cast, overload

from tcc_plugin.adapter import Adapter, CallInfo, Clamp, ResponseInfo, StreamReader
from tcc_plugin.budget import Budget, active_budgets
from tcc_plugin.drivers import abegin, aopen_stream, arun, open_stream, run, send_with_retries
from tcc_plugin.errors import ResponseError
from tcc_plugin.lifecycle import AsyncObservedStream, Call, ObservedStream
from tcc_plugin.readers import StreamAccumulator, read_response
from tcc_plugin.retry import RetryPolicy
from tcc_plugin.usage import Usage

__all__ = ["UsageExtractor", "llm_call"]

F = TypeVar("F", bound=Callable[..., Any])

UsageExtractor = Callable[[Any], "Usage | Mapping[str, int] | None"]
"""Reads usage from a decorated function's return value (or, for streams, a chunk)."""


class Applicable(Protocol):
    """Anything with ``apply()`` returning a context manager, e.g. a sweep's
    :class:`~tcc_plugin.sweep.Policy`."""

    def apply(self) -> AbstractContextManager[Any]: ...


_MAX_TOKENS_PARAMS = ("max_tokens", "max_output_tokens", "max_completion_tokens", "max_new_tokens")
_AUTO = "auto"


def _as_usage(value: Usage | Mapping[str, int] | None) -> Usage | None:
    if value is None or isinstance(value, Usage):
        return value
    if isinstance(value, Mapping):
        return Usage(**value)
    raise ResponseError(f"a usage extractor must return Usage, a mapping or None, not {value!r}")


class _ExtractorStreamReader:
    """Sums what a user extractor reads from each chunk."""

    def __init__(self, extract: UsageExtractor) -> None:
        self._extract = extract
        self._usage: Usage | None = None

    def feed(self, chunk: Any) -> None:
        usage = _as_usage(self._extract(chunk))
        if usage is not None:
            self._usage = usage if self._usage is None else self._usage + usage

    def result(self) -> ResponseInfo:
        return ResponseInfo(usage=self._usage)


class FunctionAdapter(Adapter[inspect.BoundArguments, Any]):
    """The adapter of a decorated function; its request is the call's bound arguments."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        model: str | None,
        provider: str | None,
        operation: str,
        max_output_tokens: int | None,
        max_reasoning_tokens: int | None,
        input_tokens: int | Callable[[inspect.BoundArguments], int] | None,
        max_tokens_arg: str | None,
        reasoning_arg: str | None,
        model_arg: str | None,
        usage: UsageExtractor | None,
        stream: bool,
    ) -> None:
        self.signature = inspect.signature(fn)
        params = self.signature.parameters
        if max_tokens_arg == _AUTO:
            max_tokens_arg = next((p for p in _MAX_TOKENS_PARAMS if p in params), None)
        elif max_tokens_arg is not None and max_tokens_arg not in params:
            raise TypeError(f"{fn.__qualname__} has no parameter {max_tokens_arg!r}")
        if reasoning_arg is not None and reasoning_arg not in params:
            raise TypeError(f"{fn.__qualname__} has no parameter {reasoning_arg!r}")
        self.model = model
        self.provider = provider
        self.operation = operation
        self.max_output_tokens = max_output_tokens
        self.max_reasoning_tokens = max_reasoning_tokens
        self.input_tokens = input_tokens
        self.max_tokens_arg = max_tokens_arg
        self.reasoning_arg = reasoning_arg
        self.model_arg = model_arg if model_arg in params else None
        self.usage = usage
        self.stream = stream

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return bound

    def _arg(self, bound: inspect.BoundArguments, name: str | None) -> Any:
        return None if name is None else bound.arguments.get(name)

    def describe(self, request: inspect.BoundArguments) -> CallInfo:
        model = self._arg(request, self.model_arg) or self.model
        max_out = self._arg(request, self.max_tokens_arg)
        assumed = max_out is None
        if max_out is None:
            max_out = self.max_output_tokens
        thinking = self._arg(request, self.reasoning_arg)
        if thinking is None:
            thinking = self.max_reasoning_tokens
        estimate = self.input_tokens(request) if callable(self.input_tokens) else self.input_tokens
        return CallInfo(
            model=model if isinstance(model, str) else None,
            provider=self.provider,
            operation=self.operation,
            max_output_tokens=max_out,
            max_output_assumed=assumed,
            max_reasoning_tokens=thinking,
            input_tokens=estimate,
            clampable=self.max_tokens_arg is not None,
            stream=self.stream,
        )

    def clamp(self, request: inspect.BoundArguments, clamp: Clamp) -> inspect.BoundArguments:
        if self.max_tokens_arg is not None:
            request.arguments[self.max_tokens_arg] = clamp.max_output_tokens
        if self.reasoning_arg is not None and clamp.max_reasoning_tokens is not None:
            request.arguments[self.reasoning_arg] = clamp.max_reasoning_tokens
        return request

    def read_response(self, response: Any) -> ResponseInfo:
        if self.usage is not None:
            return ResponseInfo(usage=_as_usage(self.usage(response)))
        return read_response(response)

    def stream_reader(self, request: inspect.BoundArguments) -> StreamReader:
        if self.usage is not None:
            return _ExtractorStreamReader(self.usage)
        return StreamAccumulator()


@overload
def llm_call(fn: F) -> F: ...


@overload
def llm_call(
    fn: None = None,
    *,
    model: str | None = None,
    provider: str | None = None,
    operation: str = "chat",
    max_output_tokens: int | None = None,
    max_reasoning_tokens: int | None = None,
    input_tokens: int | Callable[[inspect.BoundArguments], int] | None = None,
    max_tokens_arg: str | None = _AUTO,
    reasoning_arg: str | None = None,
    model_arg: str | None = "model",
    usage: UsageExtractor | None = None,
    stream: bool = False,
    budget: Budget | None = None,
    retry: RetryPolicy | None = None,
    policy: Applicable | None = None,
) -> Callable[[F], F]: ...


def llm_call(
    fn: F | None = None,
    *,
    model: str | None = None,
    provider: str | None = None,
    operation: str = "chat",
    max_output_tokens: int | None = None,
    max_reasoning_tokens: int | None = None,
    input_tokens: int | Callable[[inspect.BoundArguments], int] | None = None,
    max_tokens_arg: str | None = _AUTO,
    reasoning_arg: str | None = None,
    model_arg: str | None = "model",
    usage: UsageExtractor | None = None,
    stream: bool = False,
    budget: Budget | None = None,
    retry: RetryPolicy | None = None,
    policy: Applicable | None = None,
) -> F | Callable[[F], F]:
    """Budget, price and trace every call of the decorated function.

    The function may be sync or async, a generator or async generator (a stream whose
    chunks carry usage), or return a stream (``stream=True``). Its return value (or its
    chunks) carry the usage: a provider response object or JSON dict, a LangChain
    message, a :class:`~tcc_plugin.Usage`, or whatever ``usage`` reads.

    The worst case reserved before the call is the function's ``max_tokens``-like
    argument (``max_tokens_arg``; found by name when ``"auto"``), else
    ``max_output_tokens``; a budget in ``clamp`` mode lowers that argument. Without
    either, token and cost caps are only checked after the call. ``model`` (or the
    function's ``model`` argument) and ``provider`` select the price. ``budget`` runs
    each call inside that budget, nested in the caller's. ``retry`` retries failed
    calls (else the :class:`~tcc_plugin.RetryPolicy` entered around the caller, if any);
    a generator's stream is not retried once it has started. ``policy`` (a sweep's
    :class:`~tcc_plugin.sweep.Policy`) runs each call inside ``policy.apply()``: its
    thinking budget and per-call budget (not for generator functions).
    """

    def decorate(func: F) -> F:
        adapter = FunctionAdapter(
            func,
            model=model,
            provider=provider,
            operation=operation,
            max_output_tokens=max_output_tokens,
            max_reasoning_tokens=max_reasoning_tokens,
            input_tokens=input_tokens,
            max_tokens_arg=max_tokens_arg,
            reasoning_arg=reasoning_arg,
            model_arg=model_arg,
            usage=usage,
            stream=stream,
        )
        scope = budget
        if policy is not None and (
            inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func)
        ):
            raise TypeError("llm_call(policy=...) does not apply to generator functions")

        def entered() -> AbstractContextManager[Any]:
            if policy is None:
                return scope if scope is not None else nullcontext()
            stack = ExitStack()
            if scope is not None:
                stack.enter_context(scope)
            stack.enter_context(policy.apply())
            return stack

        def chain() -> tuple[Budget, ...] | None:
            # A generator must not enter a scope: its context would leak into the
            # consumer between yields. Its calls charge the chain explicitly instead.
            if scope is None:
                return None
            scope.start()
            return (*active_budgets(), scope)

        def send(bound: inspect.BoundArguments) -> Any:
            return func(*bound.args, **bound.kwargs)

        async def asend(bound: inspect.BoundArguments) -> Any:
            return await func(*bound.args, **bound.kwargs)

        if inspect.isasyncgenfunction(func):

            @functools.wraps(func)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                call = await abegin(
                    adapter, adapter.bind(args, kwargs), budgets=chain(), retry=retry
                )
                stream_ = AsyncObservedStream[Any](
                    call, send_with_retries(call, send), enclose=True
                )
                try:
                    async for chunk in stream_:
                        yield chunk
                finally:
                    await stream_.aclose()

            return cast(F, agen_wrapper)

        if inspect.isgeneratorfunction(func):

            @functools.wraps(func)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                call = Call.begin(adapter, adapter.bind(args, kwargs), budgets=chain(), retry=retry)
                stream_ = ObservedStream[Any](call, send_with_retries(call, send), enclose=True)
                try:
                    yield from stream_
                finally:
                    stream_.close()

            return cast(F, gen_wrapper)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with entered():
                    bound = adapter.bind(args, kwargs)
                    if stream:
                        return await aopen_stream(adapter, bound, asend, retry=retry)
                    return await arun(adapter, bound, asend, retry=retry)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            with entered():
                bound = adapter.bind(args, kwargs)
                if stream:
                    return open_stream(adapter, bound, send, retry=retry)
                return run(adapter, bound, send, retry=retry)

        return cast(F, sync_wrapper)

    if fn is not None:
        return decorate(fn)
    return decorate
