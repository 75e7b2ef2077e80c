"""The one call lifecycle every integration goes through.

``describe -> reserve -> span -> call -> usage -> price -> settle -> span end + metrics``

:class:`Call` holds the logic as plain steps; :func:`run` and :func:`arun` drive a
non-streamed call (sync and async), :class:`ObservedStream` and
:class:`AsyncObservedStream` a streamed one. Integrations supply an
:class:`~tcc_plugin.adapter.Adapter` and the function that sends the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from decimal import Decimal
from typing import Any, Generic, TypeVar

from opentelemetry.trace import Span

from tcc_plugin.adapter import (
    Adapter,
    AttributeValue,
    CallInfo,
    ErrorInfo,
    ResponseInfo,
    StreamReader,
)
from tcc_plugin.budget import Budget, Charge, Demand, Reservation, active_budgets, reserve
from tcc_plugin.cancellation import cancelled_usage, is_cancellation
from tcc_plugin.errors import BudgetExceeded, PriceUnknown
from tcc_plugin.pricing import Price, PriceBook, default_price_book
from tcc_plugin.retry import (
    RetriesExhausted,
    RetryDecision,
    RetryEvent,
    RetryPolicy,
    active_retry_policy,
    classify_error,
)
from tcc_plugin.telemetry import names, recorder
from tcc_plugin.usage import Usage

__all__ = [
    "AsyncObservedStream",
    "Call",
    "ObservedStream",
    "aopen_stream",
    "arun",
    "asend_with_retries",
    "open_stream",
    "run",
    "send_with_retries",
]

logger = logging.getLogger("tcc_plugin")

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
ChunkT = TypeVar("ChunkT")


_NO_DEMAND = Demand(input_tokens=0)


class Call(Generic[RequestT]):
    """One LLM call on its way through the lifecycle.

    ``Call.begin`` describes the request, starts its span and reserves its worst case
    (raising :class:`BudgetExceeded` or :class:`PriceUnknown` when it cannot be paid);
    ``request`` is then the request to send, clamped if a budget shrank it. A failed
    attempt goes to :meth:`on_error`, which either ends the call or settles the attempt
    and says how long to wait before :meth:`next_attempt` re-reserves. Exactly one of
    :meth:`succeed` and :meth:`fail` ends the call; both are idempotent.
    """

    __slots__ = (
        "_original",
        "_policy",
        "_policy_start",
        "_price",
        "_price_book",
        "_reader",
        "_started",
        "_ttfc",
        "adapter",
        "attempt",
        "budgets",
        "capture",
        "done",
        "info",
        "request",
        "reservation",
        "span",
    )

    def __init__(
        self,
        adapter: Adapter[RequestT, Any],
        request: RequestT,
        info: CallInfo,
        span: Span | None,
        budgets: tuple[Budget, ...],
        price: Price | None,
        price_book: PriceBook,
        policy: RetryPolicy | None = None,
        capture: bool = False,
    ) -> None:
        self.adapter = adapter
        self.request = request
        self._original = request
        self._policy = policy
        self._policy_start = policy.clock() if policy is not None else 0.0
        self.attempt = 1
        self.info = info
        self.span = span
        self.budgets = budgets
        self.reservation: Reservation | None = None
        self.done = False
        self._price = price
        self._price_book = price_book
        self._started = time.perf_counter()
        self._ttfc: float | None = None
        self._reader: StreamReader | None = None
        self.capture = capture  # whether content may be recorded: decided once per call

    @classmethod
    def begin(
        cls,
        adapter: Adapter[RequestT, Any],
        request: RequestT,
        *,
        budgets: tuple[Budget, ...] | None = None,
        price_book: PriceBook | None = None,
        span_name: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> Call[RequestT]:
        """Describe, open the span and reserve; the returned call is ready to send.

        ``retry`` (else the policy entered around the caller, if any) governs
        :meth:`on_error`; while one applies, the provider SDK's own retries are turned
        off through the adapter, so retry layers never multiply."""
        info = adapter.describe(request)
        book = price_book or default_price_book()
        chain = active_budgets() if budgets is None else budgets
        policy = retry if retry is not None else active_retry_policy()
        if policy is not None:
            no_sdk_retries = getattr(adapter, "without_provider_retries", None)
            if no_sdk_retries is not None:
                request = no_sdk_retries(request)
        price = book.lookup(info.model, info.provider)
        capture = recorder.capture_content()
        span = recorder.start_call_span(info, span_name, capture=capture)
        call = cls(adapter, request, info, span, chain, price, book, policy, capture)
        try:
            call._reserve()
        except BaseException as exc:
            call._refused(exc)
            raise
        return call

    # -- reservation ------------------------------------------------------------------
    def _demand(self) -> Demand:
        info = self.info
        price = self._price
        input_tokens = info.input_tokens
        if input_tokens is None:
            input_tokens = info.input_estimate() if info.input_estimate is not None else 0
        choices = max(info.choices, 1)

        known: dict[tuple[int | None, int | None], Decimal | None] = {}

        def worst_usd(output: int | None, reasoning: int | None) -> Decimal | None:
            # A reservation asks for the same caps more than once (charge, then bounded).
            if (output, reasoning) in known:
                return known[output, reasoning]
            if price is None:
                return None
            out = (output or 0) * choices
            thinking = min(reasoning if reasoning is not None else out, out)
            usd = price.worst_case(Usage(input=input_tokens, output=out, reasoning=thinking))
            known[output, reasoning] = usd
            return usd

        return Demand(
            input_tokens=input_tokens,
            max_output_tokens=info.max_output_tokens,
            max_reasoning_tokens=info.max_reasoning_tokens,
            choices=choices,
            clampable=info.clampable,
            min_output_tokens=info.min_output_tokens,
            calls=1 if self.attempt == 1 else 0,  # a retry is the same call
            worst_usd=worst_usd if price is not None else None,
        )

    def _reserve(self) -> None:
        if not self.budgets:  # nothing to reserve in: skip building the demand
            self.reservation = reserve(_NO_DEMAND, ())
            return
        if self._price is None and any("usd" in b.limits for b in self.budgets):
            raise PriceUnknown(self.info.model or "<unnamed>", self.info.provider)
        self.reservation = reserve(self._demand(), self.budgets)
        clamp = self.reservation.clamp
        if clamp is not None:
            try:
                self.request = self.adapter.clamp(self.request, clamp)
            except BaseException:
                self.reservation.release()
                raise
            extra: dict[str, AttributeValue] = {
                names.BUDGET_CLAMPED_MAX_TOKENS: clamp.max_output_tokens
            }
            if clamp.max_reasoning_tokens is not None:
                extra[names.BUDGET_CLAMPED_REASONING_TOKENS] = clamp.max_reasoning_tokens
            recorder.set_attributes(self.span, extra)

    def _refused(self, exc: BaseException) -> None:
        self.done = True
        attrs: dict[str, AttributeValue] = {names.BUDGET_OUTCOME: names.OUTCOME_REFUSED}
        if isinstance(exc, BudgetExceeded):
            attrs[names.BUDGET_LIMIT_HIT] = exc.limit
        if self.attempt > 1:
            attrs[names.RETRY_ATTEMPTS] = self.attempt
        recorder.set_attributes(self.span, attrs)
        recorder.end_span(self.span, exc)
        recorder.record_call_metrics(self.info, None, None, None, 0.0, refused=True)

    # -- retries ----------------------------------------------------------------------
    def on_error(self, error: BaseException) -> RetryDecision:
        """Decide what the failed current attempt leads to.

        When the decision is to stop, the call is ended (failed) and the caller raises
        :meth:`final_error`; otherwise the attempt is settled (usage it really consumed
        is charged, nothing else) and the caller waits ``decision.wait`` seconds, then
        calls :meth:`next_attempt`."""
        partial = self.stream_result()
        policy = self._policy
        if policy is None:
            decision = RetryDecision(False, 0.0, "no retry policy", None)
        else:
            info = self._classify(error)
            decision = policy.decide(
                self.attempt, self._policy_start, error, info, self._time_left()
            )
        self._attempt_event(error, decision)
        if not decision.retry:
            self._finish(partial, error, {})
            return decision
        self._settle_attempt(partial)
        if policy is not None and policy.before_sleep is not None:
            try:
                policy.before_sleep(RetryEvent(self.attempt, error, decision.info, decision.wait))
            except Exception:
                logger.warning("tcc_plugin: a before_sleep hook raised (ignored)", exc_info=True)
        return decision

    def final_error(self, error: BaseException, decision: RetryDecision) -> BaseException:
        """The exception to raise when ``decision`` stopped retrying ``error``."""
        if decision.exhausted:
            return RetriesExhausted(self.attempt, error, decision.reason)
        return error

    def next_attempt(self) -> None:
        """Start the next attempt: a fresh reservation (and clamp) for the request."""
        self.attempt += 1
        self.request = self._original
        self._reader = None
        try:
            self._reserve()
        except BaseException as exc:
            self._refused(exc)
            raise

    def _classify(self, error: BaseException) -> ErrorInfo | None:
        classify = getattr(self.adapter, "classify_error", None)
        info: ErrorInfo | None = None
        if classify is not None:
            try:
                info = classify(error)
            except Exception:
                logger.warning("tcc_plugin: classify_error raised (ignored)", exc_info=True)
        return info if info is not None else classify_error(error)

    def _time_left(self) -> float | None:
        lefts = [t for t in (b.time_left() for b in self.budgets) if t is not None]
        return min(lefts) if lefts else None

    def _attempt_event(self, error: BaseException, decision: RetryDecision) -> None:
        if self._policy is None:
            return
        attrs: dict[str, AttributeValue] = {
            names.RETRY_ATTEMPT: self.attempt,
            names.ERROR_TYPE: type(error).__qualname__,
            names.RETRY_DECISION: "retry" if decision.retry else "give_up",
            names.RETRY_REASON: decision.reason,
        }
        if decision.info is not None:
            attrs[names.RETRY_ERROR_KIND] = decision.info.reason
            if decision.info.status is not None:
                attrs[names.HTTP_STATUS_CODE] = decision.info.status
        if decision.retry:
            attrs[names.RETRY_WAIT] = decision.wait
        recorder.add_event(self.span, names.RETRY_EVENT, attrs)

    def _settle_attempt(self, partial: ResponseInfo | None) -> None:
        reservation = self.reservation
        if reservation is None:
            return
        calls = reservation.charge.calls  # the call is counted once, on its first attempt
        usage = partial.usage if partial is not None else None
        if usage is None:
            reservation.settle(Charge(calls=calls))
            return
        elapsed = time.perf_counter() - self._started
        cost = self._cost(usage, elapsed, partial.response_model if partial else None)
        reservation.settle(Charge.of(usage, cost, calls=calls))

    # -- span context -----------------------------------------------------------------
    def activated(self) -> AbstractContextManager[Any]:
        """A context in which the call's span is the current span (for nesting)."""
        return recorder.activated(self.span)

    # -- streams ----------------------------------------------------------------------
    def stream_reader(self) -> StreamReader:
        """The reader that accumulates this call's streamed response."""
        if self._reader is None:
            self._reader = self.adapter.stream_reader(self.request)
        return self._reader

    def chunk(self, chunk: Any) -> None:
        """Note one streamed chunk (never raises: a chunk we cannot read is skipped)."""
        if self._ttfc is None:
            self._ttfc = time.perf_counter() - self._started
            if not self.info.stream:  # e.g. LangChain says only now that it streams
                recorder.set_attributes(self.span, {names.REQUEST_STREAM: True})
        try:
            self.stream_reader().feed(chunk)
        except Exception:
            logger.warning("tcc_plugin could not read a stream chunk (ignored)", exc_info=True)

    def stream_result(self) -> ResponseInfo | None:
        """What the stream said so far (``None`` if it cannot be read)."""
        if self._reader is None:
            return None
        try:
            return self._reader.result()
        except Exception:
            logger.warning("tcc_plugin could not read a stream's usage", exc_info=True)
            return None

    # -- ending -----------------------------------------------------------------------
    def read_response(self, response: Any) -> ResponseInfo | None:
        """The adapter's reading of ``response``; ``None`` when it cannot be read."""
        try:
            info = self.adapter.read_response(response)
        except Exception:
            logger.warning("tcc_plugin could not read a response's usage", exc_info=True)
            return None
        if self.capture and info.output_messages is None:
            output_messages = getattr(self.adapter, "output_messages", None)
            if output_messages is not None:
                try:
                    info = replace(info, output_messages=output_messages(response))
                except Exception:
                    logger.warning("tcc_plugin could not read a response's output", exc_info=True)
        return info

    def succeed(self, response: ResponseInfo | None, **extra: AttributeValue) -> None:
        """Settle, price and record a call that returned ``response``."""
        self._finish(response, None, dict(extra))

    def fail(
        self,
        error: BaseException,
        partial: ResponseInfo | None = None,
        **extra: AttributeValue,
    ) -> None:
        """Settle and record a call that raised ``error`` (after ``partial``, if any)."""
        self._finish(partial, error, dict(extra))

    def _finish(
        self,
        response: ResponseInfo | None,
        error: BaseException | None,
        extra: dict[str, AttributeValue],
    ) -> None:
        if self.done:
            return
        self.done = True
        if self._policy is not None:
            extra[names.RETRY_ATTEMPTS] = self.attempt
        duration = time.perf_counter() - self._started
        usage = response.usage if response is not None else None
        cost: Decimal | None = None
        if usage is None and is_cancellation(error):
            # never free: see tcc_plugin.cancellation
            usage, cost = self._cancelled_usage(duration)
            extra[names.USAGE_ESTIMATED] = True
        elif usage is not None:
            cost = self._cost(usage, duration, response.response_model if response else None)
        elif error is None or self._ttfc is not None:
            extra[names.USAGE_MISSING] = True
            logger.warning(
                "tcc_plugin: a %s response of model %r carried no usage; charging the "
                "call's reservation (its worst case)",
                self.info.provider or "provider",
                self.info.model,
            )
        extra.update(self._settle(usage, cost, error))
        recorder.record_response(
            self.span,
            response,
            usage,
            cost,
            time_to_first_chunk=self._ttfc,
            extra=extra,
            capture=self.capture,
        )
        recorder.end_span(self.span, error)
        estimated = names.USAGE_ESTIMATED in extra  # token metrics count reported usage only
        recorder.record_call_metrics(
            self.info,
            response,
            None if estimated else usage,
            None if estimated else cost,
            duration,
            error=error,
            time_to_first_chunk=self._ttfc,
        )

    def _cancelled_usage(self, duration: float) -> tuple[Usage, Decimal | None]:
        """The estimate a cancelled call is charged, and its cost."""
        reservation = self.reservation
        if reservation is not None and reservation.budgets:
            worst = reservation.charge
        else:  # nothing reserved (no budget): the span still reports the estimate
            info = self.info
            worst = self._demand().charge(info.max_output_tokens, info.max_reasoning_tokens)
        chunks = getattr(self._reader, "chunks", 0) if self._ttfc is not None else 0
        usage = cancelled_usage(worst, chunks if isinstance(chunks, int) else 1)
        if usage.output == worst.output_tokens and self._price is not None:
            return usage, worst.usd  # the reservation itself, priced as it was reserved
        return usage, self._cost(usage, duration, None)

    def _cost(self, usage: Usage, duration: float, response_model: str | None) -> Decimal | None:
        if self._price is None and response_model:
            # The request named no known model; the response may (e.g. a decorated call).
            self._price = self._price_book.lookup(response_model, self.info.provider)
        if self._price is None:
            self._price_book.warn_unknown(response_model or self.info.model, self.info.provider)
            return None
        try:
            return self._price.cost(usage, seconds=duration)
        except Exception:
            logger.warning("tcc_plugin could not price model %r", self.info.model, exc_info=True)
            return None

    def _settle(
        self, usage: Usage | None, cost: Decimal | None, error: BaseException | None
    ) -> dict[str, AttributeValue]:
        """Settle the reservation; returns the budget attributes for the span."""
        reservation = self.reservation
        if reservation is None or not reservation.budgets:
            return {names.BUDGET_OUTCOME: names.OUTCOME_NONE}
        calls = reservation.charge.calls
        if usage is not None:
            # a failure after partial output is charged what it consumed
            actual = Charge.of(usage, cost, calls=calls)
        elif error is None or self._ttfc is not None:
            # No usage reported, or a stream that broke after chunks arrived (tokens were
            # generated, how many is unknown): never under-charge.
            actual = reservation.charge
        else:
            actual = Charge(calls=calls)  # failed before any output: the call still counts
        reservation.settle(actual)
        return _budget_attributes(reservation)


def _budget_attributes(reservation: Reservation) -> dict[str, AttributeValue]:
    inner = reservation.budgets[-1]
    attrs: dict[str, AttributeValue] = {names.BUDGET_OUTCOME: reservation.outcome}
    if inner.name:
        attrs[names.BUDGET_NAME] = inner.name
    if reservation.charge.output_tokens:
        attrs[names.BUDGET_RESERVED_OUTPUT_TOKENS] = reservation.charge.output_tokens
    spent = inner.spent
    remaining = inner.remaining()
    for key, limit in inner.limits.items():
        attrs[names.BUDGET_LIMIT_PREFIX + key] = _number(limit)
        attrs[names.BUDGET_SPENT_PREFIX + key] = _number(spent.get(key))
        attrs[names.BUDGET_REMAINING_PREFIX + key] = _number(remaining[key])
    return attrs


def _number(value: int | Decimal) -> int | float:
    return float(value) if isinstance(value, Decimal) else value


# -- drivers ------------------------------------------------------------------------------
def _sleep_of(call: Call[Any]) -> Callable[[float], None]:
    return call._policy.sleep if call._policy is not None else time.sleep


def _async_sleep_of(call: Call[Any]) -> Callable[[float], Awaitable[None]]:
    return call._policy.async_sleep if call._policy is not None else asyncio.sleep


def send_with_retries(call: Call[RequestT], send: Callable[[RequestT], ResponseT]) -> ResponseT:
    """Send the call's request until it succeeds or the retry policy stops (sync).
    The call is *not* ended on success: the caller reads the response and succeeds it."""
    while True:
        try:
            with call.activated():
                return send(call.request)
        except BaseException as exc:
            decision = call.on_error(exc)
            if not decision.retry:
                final = call.final_error(exc, decision)
                if final is exc:
                    raise
                raise final from exc
            _sleep_of(call)(decision.wait)
            call.next_attempt()


async def asend_with_retries(
    call: Call[RequestT], send: Callable[[RequestT], Awaitable[ResponseT]]
) -> ResponseT:
    """The async twin of :func:`send_with_retries`."""
    while True:
        try:
            with call.activated():
                return await send(call.request)
        except BaseException as exc:
            decision = call.on_error(exc)
            if not decision.retry:
                final = call.final_error(exc, decision)
                if final is exc:
                    raise
                raise final from exc
            await _async_sleep_of(call)(decision.wait)
            call.next_attempt()


def run(
    adapter: Adapter[RequestT, ResponseT],
    request: RequestT,
    send: Callable[[RequestT], ResponseT],
    *,
    budgets: tuple[Budget, ...] | None = None,
    price_book: PriceBook | None = None,
    retry: RetryPolicy | None = None,
) -> ResponseT:
    """Send ``request`` with ``send`` through the whole lifecycle (sync)."""
    call = Call.begin(adapter, request, budgets=budgets, price_book=price_book, retry=retry)
    response = send_with_retries(call, send)
    call.succeed(call.read_response(response))
    return response


async def arun(
    adapter: Adapter[RequestT, ResponseT],
    request: RequestT,
    send: Callable[[RequestT], Awaitable[ResponseT]],
    *,
    budgets: tuple[Budget, ...] | None = None,
    price_book: PriceBook | None = None,
    retry: RetryPolicy | None = None,
) -> ResponseT:
    """Send ``request`` with ``send`` through the whole lifecycle (async)."""
    call = Call.begin(adapter, request, budgets=budgets, price_book=price_book, retry=retry)
    response = await asend_with_retries(call, send)
    call.succeed(call.read_response(response))
    return response


def open_stream(
    adapter: Adapter[RequestT, Any],
    request: RequestT,
    send: Callable[[RequestT], Any],
    *,
    budgets: tuple[Budget, ...] | None = None,
    price_book: PriceBook | None = None,
    retry: RetryPolicy | None = None,
) -> ObservedStream[Any]:
    """Open a streamed call (retrying the opening per the policy) and observe it.

    A stream that breaks after chunks reached the caller is not retried (the caller
    already consumed them); what it had consumed is charged."""
    call = Call.begin(adapter, request, budgets=budgets, price_book=price_book, retry=retry)
    return ObservedStream(call, send_with_retries(call, send))


async def aopen_stream(
    adapter: Adapter[RequestT, Any],
    request: RequestT,
    send: Callable[[RequestT], Awaitable[Any]],
    *,
    budgets: tuple[Budget, ...] | None = None,
    price_book: PriceBook | None = None,
    retry: RetryPolicy | None = None,
) -> AsyncObservedStream[Any]:
    """The async twin of :func:`open_stream`."""
    call = Call.begin(adapter, request, budgets=budgets, price_book=price_book, retry=retry)
    return AsyncObservedStream(call, await asend_with_retries(call, send))


class _StreamEnd:
    """What ends a stream: shared by the sync and async observers."""

    __slots__ = ("call",)

    def __init__(self, call: Call[Any]) -> None:
        self.call = call

    def finished(self) -> None:
        self.call.succeed(self.call.stream_result())

    def raised(self, exc: BaseException) -> None:
        # Chunks already reached the caller: a broken stream is not retried.
        self.call.fail(exc, self.call.stream_result())

    def abandoned(self) -> None:
        # Closed or dropped half-read: what was read is charged; when the provider sent
        # no usage yet, the reservation is (flagged as missing usage).
        if not self.call.done:
            self.call.succeed(self.call.stream_result(), **{names.STREAM_ABANDONED: True})


class ObservedStream(Generic[ChunkT]):
    """Iterates a provider stream, feeding each chunk to the call; ends the call when
    the stream finishes, raises, is closed, or is garbage-collected half-read.
    Other attributes are those of the wrapped stream."""

    def __init__(self, call: Call[Any], stream: Any) -> None:
        self._call = call
        self._end = _StreamEnd(call)
        self._stream = stream
        self._iterator: Iterator[ChunkT] = iter(stream)

    def __iter__(self) -> ObservedStream[ChunkT]:
        return self

    def __next__(self) -> ChunkT:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._end.finished()
            raise
        except BaseException as exc:
            self._end.raised(exc)
            raise
        self._call.chunk(chunk)
        return chunk

    def close(self) -> None:
        """Close the underlying stream; the call ends with what was read."""
        try:
            closer = getattr(self._stream, "close", None)
            if callable(closer):
                closer()
        finally:
            self._end.abandoned()

    def __enter__(self) -> ObservedStream[ChunkT]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown anything may be gone
            self._end.abandoned()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class AsyncObservedStream(Generic[ChunkT]):
    """The async twin of :class:`ObservedStream`."""

    def __init__(self, call: Call[Any], stream: Any) -> None:
        self._call = call
        self._end = _StreamEnd(call)
        self._stream = stream
        self._iterator: AsyncIterator[ChunkT] = aiter(stream)

    def __aiter__(self) -> AsyncObservedStream[ChunkT]:
        return self

    async def __anext__(self) -> ChunkT:
        try:
            chunk = await anext(self._iterator)
        except StopAsyncIteration:
            self._end.finished()
            raise
        except BaseException as exc:
            self._end.raised(exc)
            raise
        self._call.chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        """Close the underlying stream; the call ends with what was read."""
        try:
            closer = getattr(self._stream, "aclose", None) or getattr(self._stream, "close", None)
            if callable(closer):
                result = closer()
                if hasattr(result, "__await__"):
                    await result
        finally:
            self._end.abandoned()

    async def close(self) -> None:
        """Alias of :meth:`aclose` (provider async streams name it ``close``)."""
        await self.aclose()

    async def __aenter__(self) -> AsyncObservedStream[ChunkT]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown anything may be gone
            self._end.abandoned()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
