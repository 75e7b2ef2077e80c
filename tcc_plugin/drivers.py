"""The drivers of the call lifecycle: send a :class:`~tcc_plugin.lifecycle.Call`'s
request with retries, run a call to its end, open a streamed call (sync and async twins;
the logic is the Call's, these only carry it out). Importable from
:mod:`tcc_plugin.lifecycle` too.

The async drivers begin, retry and end a call through the async edges below: where a
budget of the call is kept in a shared store (Redis), its reservation and settlement are
awaited (the store's asyncio client), so an async call never blocks the event loop on
it; in-memory budgets take the same one local step as the sync drivers (no await).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tcc_plugin.adapter import Adapter
from tcc_plugin.budget import Budget, Reservation
from tcc_plugin.lifecycle import AsyncObservedStream, Call, ObservedStream
from tcc_plugin.pricing import PriceBook
from tcc_plugin.reservation import areserve, touches_store
from tcc_plugin.retry import RetryDecision, RetryPolicy

__all__ = [
    "abegin",
    "anext_attempt",
    "aon_error",
    "aopen_stream",
    "arun",
    "asend_with_retries",
    "open_stream",
    "run",
    "send_with_retries",
]

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


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
                response = send(call.request)
        except BaseException as exc:
            decision = call.on_error(exc)
            if not decision.retry:
                final = call.final_error(exc, decision)
                if final is exc:
                    raise
                raise final from exc
            _sleep_of(call)(decision.wait)
            call.next_attempt()
        else:
            call.note_response(response)
            return response


async def asend_with_retries(
    call: Call[RequestT], send: Callable[[RequestT], Awaitable[ResponseT]]
) -> ResponseT:
    """The async twin of :func:`send_with_retries`."""
    while True:
        try:
            with call.activated():
                response = await send(call.request)
        except BaseException as exc:
            decision = await aon_error(call, exc)
            if not decision.retry:
                final = call.final_error(exc, decision)
                if final is exc:
                    raise
                raise final from exc
            await _async_sleep_of(call)(decision.wait)
            await anext_attempt(call)
        else:
            call.note_response(response)
            return response


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
    call = await abegin(adapter, request, budgets=budgets, price_book=price_book, retry=retry)
    response = await asend_with_retries(call, send)
    await call.asucceed(call.read_response(response))
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
    call = await abegin(adapter, request, budgets=budgets, price_book=price_book, retry=retry)
    return AsyncObservedStream(call, await asend_with_retries(call, send))


# -- the async edges of a Call (its reservation awaited where a shared store keeps it) ----
async def abegin(
    adapter: Adapter[RequestT, Any],
    request: RequestT,
    *,
    budgets: tuple[Budget, ...] | None = None,
    price_book: PriceBook | None = None,
    span_name: str | None = None,
    retry: RetryPolicy | None = None,
) -> Call[RequestT]:
    """The async twin of :meth:`Call.begin <tcc_plugin.lifecycle.Call.begin>`."""
    call, handed = Call._open(adapter, request, budgets, price_book, span_name, retry)
    try:
        await _areserve(call, handed)
    except BaseException as exc:
        call._refused(exc)
        raise
    return call


async def _areserve(call: Call[Any], replacing: Reservation | None = None) -> None:
    """The async twin of ``Call._reserve``: in-memory budgets take the same one local
    step (nothing to await); a shared store's round trips are awaited."""
    if not touches_store(call.budgets, replacing):
        call._reserve(replacing)
        return
    call.reservation = await areserve(call._reserving(), call.budgets, replacing=replacing)
    call._clamp()


async def aon_error(call: Call[Any], error: BaseException) -> RetryDecision:
    """The async twin of :meth:`Call.on_error <tcc_plugin.lifecycle.Call.on_error>`."""
    decision, partial = call._decide(error)
    if not decision.retry:
        await call._afinish(partial, error, {})
        return decision
    charge = call._attempt_charge(partial)
    reservation = call.reservation
    if charge is not None and reservation is not None:
        if reservation.in_store:
            await reservation.asettle(charge)
        else:
            reservation.settle(charge)
    call._before_sleep(error, decision)
    return decision


async def anext_attempt(call: Call[Any]) -> None:
    """The async twin of :meth:`Call.next_attempt <tcc_plugin.lifecycle.Call.next_attempt>`."""
    call._restart()
    try:
        await _areserve(call)
    except BaseException as exc:
        call._refused(exc)
        raise
