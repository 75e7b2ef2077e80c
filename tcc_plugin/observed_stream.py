"""Observed streams: a provider stream whose chunks feed a
:class:`~tcc_plugin.lifecycle.Call`, ending it when the stream finishes, raises, is
closed or is dropped half-read (sync and async twins over one shared ending)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tcc_plugin.telemetry import names

if TYPE_CHECKING:
    from tcc_plugin.lifecycle import Call

__all__ = ["AsyncObservedStream", "ObservedStream"]

ChunkT = TypeVar("ChunkT")


class _StreamEnd:
    """What ends a stream: shared by the sync and async observers (the async ones await
    the call's settlement, which a shared budget's store makes a round trip)."""

    __slots__ = ("call",)

    def __init__(self, call: Call[Any]) -> None:
        self.call = call

    def finished(self) -> None:
        self.call.succeed(self.call.stream_result())

    def raised(self, exc: BaseException) -> None:
        # Chunks already reached the caller: a broken stream is not retried.
        self.call.fail(exc, self.call.stream_result())

    def cancelled(self) -> None:
        # Given up by its reader (the result is no longer wanted): charged like a call
        # cancelled in flight, one output token per chunk received (never zero).
        if not self.call.done:
            self.call.fail(asyncio.CancelledError(), self.call.stream_result())

    def abandoned(self) -> None:
        # Closed or dropped half-read: what was read is charged; when the provider sent
        # no usage yet, the reservation is (flagged as missing usage).
        if not self.call.done:
            self.call.succeed(self.call.stream_result(), **{names.STREAM_ABANDONED: True})

    async def afinished(self) -> None:
        await self.call.asucceed(self.call.stream_result())

    async def araised(self, exc: BaseException) -> None:
        await self.call.afail(exc, self.call.stream_result())

    async def aabandoned(self) -> None:
        if not self.call.done:
            await self.call.asucceed(self.call.stream_result(), **{names.STREAM_ABANDONED: True})


class ObservedStream(Generic[ChunkT]):
    """Iterates a provider stream, feeding each chunk to the call; ends the call when
    the stream finishes, raises, is closed, or is garbage-collected half-read.
    Other attributes are those of the wrapped stream. With ``enclose``, the stream's
    own code (a decorated generator's body) runs with the call enclosing it, so a
    provider call it makes takes the call's charge over."""

    def __init__(self, call: Call[Any], stream: Any, *, enclose: bool = False) -> None:
        self._call = call
        self._end = _StreamEnd(call)
        self._stream = stream
        self._iterator: Iterator[ChunkT] = iter(stream)
        self._enclose = enclose

    def __iter__(self) -> ObservedStream[ChunkT]:
        return self

    def __next__(self) -> ChunkT:
        try:
            if self._enclose:
                with self._call.activated():
                    chunk = next(self._iterator)
            else:
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
            self._close_stream()
        finally:
            self._end.abandoned()

    def cancel(self) -> None:
        """Stop reading because the result is no longer wanted (e.g. a sampling group
        went on without it): close the stream; the call ends as cancelled, charged its
        estimate like a cancelled async call (see :mod:`tcc_plugin.cancellation`)."""
        try:
            self._close_stream()
        finally:
            self._end.cancelled()

    def _close_stream(self) -> None:
        closer = getattr(self._stream, "close", None)
        if callable(closer):
            closer()

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

    def __init__(self, call: Call[Any], stream: Any, *, enclose: bool = False) -> None:
        self._call = call
        self._end = _StreamEnd(call)
        self._stream = stream
        self._iterator: AsyncIterator[ChunkT] = aiter(stream)
        self._enclose = enclose

    def __aiter__(self) -> AsyncObservedStream[ChunkT]:
        return self

    async def __anext__(self) -> ChunkT:
        try:
            if self._enclose:
                with self._call.activated():
                    chunk = await anext(self._iterator)
            else:
                chunk = await anext(self._iterator)
        except StopAsyncIteration:
            await self._end.afinished()
            raise
        except BaseException as exc:
            await self._end.araised(exc)
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
            await self._end.aabandoned()

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
