"""Batch sample sources: a wave of ``k`` samples drawn by one call.

Servers such as vLLM and llama-server generate ``k`` samples of one prompt in one
request (``n=k``), sharing the prompt's work. A :class:`BatchSample` says so to a
sampling group: when the launch policy starts a wave of ``k`` samples, the group calls
``draw(k)`` once and receives the ``k`` candidates, which then vote, are verified and
stop the group exactly like ``k`` separate samples (the group span counts samples, not
requests).

- :class:`batched`: any function ``k -> sequence of k values`` (sync, or ``async def``
  for the async twins) as a batch source;
- :func:`tcc_plugin.integrations.openai_batch.choices_batch` builds one from an
  instrumented ``openai`` client pointed at vLLM or llama-server (``n=k``).

A batch is one call: it is admitted, charged and cancelled as a whole. When the group
stops while a batch is in flight (a stop rule fired on another wave, a timeout, a
deadline), every sample of the batch is cancelled and the request is charged an
honest estimate; choices of it that had already finished are not voted (the decision
was taken without them).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["BatchSample", "BatchSizeError", "batched", "values_of_batch"]

T = TypeVar("T")


class BatchSizeError(ValueError):
    """A batch source returned something other than a sequence of ``k`` values."""


class BatchSample(ABC, Generic[T]):
    """A sample source that draws ``k`` samples in one call.

    Subclasses implement :meth:`draw` (a plain method for the sync group functions,
    ``async def`` for the async twins). ``max_batch`` caps ``k`` (``None``: the wave
    the launch policy asks for, within ``concurrency``)."""

    max_batch: int | None = None

    @abstractmethod
    def draw(self, k: int) -> Sequence[T] | Awaitable[Sequence[T]]:
        """Draw ``k`` samples; return them in order (exactly ``k``)."""

    @property
    def is_async(self) -> bool:
        """Whether :meth:`draw` is a coroutine function."""
        return inspect.iscoroutinefunction(self.draw)


class batched(BatchSample[T]):
    """``draw_k`` (``k -> k values``, sync or ``async def``) as a batch source.

    >>> source = batched(lambda k: [f"answer {i}" for i in range(k)], max_batch=8)
    """

    def __init__(
        self,
        draw_k: Callable[[int], Sequence[T]] | Callable[[int], Awaitable[Sequence[T]]],
        *,
        max_batch: int | None = None,
    ) -> None:
        if not callable(draw_k):
            raise TypeError(f"batched: draw_k must be callable, not {type(draw_k).__name__}")
        if max_batch is not None and (
            isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
        ):
            raise ValueError(f"batched: max_batch must be a positive int, got {max_batch!r}")
        self.draw_k = draw_k
        self.max_batch = max_batch

    def draw(self, k: int) -> Sequence[T] | Awaitable[Sequence[T]]:
        return self.draw_k(k)

    @property
    def is_async(self) -> bool:
        fn: Any = self.draw_k
        return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004
        )

    def __repr__(self) -> str:
        name = getattr(self.draw_k, "__qualname__", repr(self.draw_k))
        return f"batched({name}, max_batch={self.max_batch})"


def values_of_batch(value: Any, k: int, source: object) -> list[Any]:
    """The ``k`` values a batch draw returned; :class:`BatchSizeError` otherwise."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise BatchSizeError(
            f"batch source {source!r} returned {type(value).__name__}, not a sequence of "
            f"{k} samples"
        )
    if len(value) != k:
        raise BatchSizeError(
            f"batch source {source!r} was asked for {k} samples and returned {len(value)}"
        )
    return list(value)
