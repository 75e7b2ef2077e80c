"""Context-local stacks of scope objects (budgets, retry policies).

Entering pushes onto a tuple held in a ContextVar and exiting removes the innermost
occurrence, without tokens: the same object may be entered by concurrent tasks and
threads at once, each in its own context.
"""

from __future__ import annotations

import contextvars
from typing import TypeVar

T = TypeVar("T")


def push(stack: contextvars.ContextVar[tuple[T, ...]], item: T) -> None:
    """Enter ``item`` in the current context."""
    stack.set((*stack.get(), item))


def pop(stack: contextvars.ContextVar[tuple[T, ...]], item: T) -> None:
    """Leave ``item``: remove its innermost occurrence (scopes exit in reverse order)."""
    items = stack.get()
    for i in range(len(items) - 1, -1, -1):
        if items[i] is item:
            stack.set(items[:i] + items[i + 1 :])
            return
