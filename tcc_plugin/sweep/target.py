"""Targets: what a sweep tunes, as a few callables (so any backend fits).

A :class:`Target` answers a question with ``ask(question, **knobs)``; the knobs it
accepts are listed in :attr:`Target.knobs` (``thinking_budget``, ``seed``). For s1
budget forcing it also gives a raw-prompt ``continuer`` (anything with
``complete(prompt, *, max_tokens, stop)``) and the ``forcing_prompt`` for a question.
:func:`function_target` builds one from a plain or ``@llm_call`` function; the
application layer builds them for the local engine, endpoints and hosted models.
Calls a target makes through instrumented clients or ``@llm_call`` are budgeted,
priced and traced, and each answer's spend is read from the ledger.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tcc_plugin.forcing import Continuer
from tcc_plugin.sweep.grid import Cell

__all__ = ["KNOBS", "Target", "function_target", "missing_knobs"]

KNOBS = ("thinking_budget", "seed")


@dataclass(frozen=True)
class Target:
    """A way to ask one model.

    ``ask(question, **knobs)`` returns the reply (a string, a provider response, any
    shape :func:`~tcc_plugin.sampling.text_of` reads); only knobs in ``knobs`` are
    passed. ``continuer`` and ``forcing_prompt`` enable the ``forcing`` method;
    ``forcing_options`` are more keyword arguments of
    :func:`~tcc_plugin.budget_forcing` (delimiters, stops, ``max_answer_tokens``).
    ``max_answer_tokens`` (with the thinking budget) bounds a call's output, for
    refusing cells that cannot fit; ``None``: unknown."""

    name: str
    ask: Callable[..., Any]
    knobs: frozenset[str] = frozenset()
    continuer: Continuer | None = None
    forcing_prompt: Callable[[str], str] | None = None
    forcing_options: Mapping[str, Any] = field(default_factory=dict)
    max_answer_tokens: int | None = None

    def call(self, question: str, **knobs: Any) -> Any:
        return self.ask(question, **{k: v for k, v in knobs.items() if k in self.knobs})

    def max_output_tokens(self, cell: Cell) -> int | None:
        """The most output tokens one question of ``cell`` can generate (``None``:
        unknown), summed over its samples."""
        if self.max_answer_tokens is None:
            return None
        from tcc_plugin.sweep.grid import thinking_tokens

        budget = thinking_tokens(cell.thinking_budget)
        if budget is None:
            return None
        if cell.method == "forcing":
            answer = int(self.forcing_options.get("max_answer_tokens", self.max_answer_tokens))
            return budget + answer
        return (budget + self.max_answer_tokens) * cell.samples


def missing_knobs(target: Target, cell: Cell) -> list[str]:
    """What ``cell`` needs that ``target`` cannot do (empty: it can run)."""
    missing = []
    if cell.thinking_budget is not None and "thinking_budget" not in target.knobs:
        missing.append("thinking_budget")
    if cell.method == "forcing" and (target.continuer is None or target.forcing_prompt is None):
        missing.append("forcing (a raw-prompt continuer)")
    return missing


def function_target(fn: Callable[..., Any], *, name: str | None = None) -> Target:
    """A target calling ``fn(question, *, thinking_budget=..., seed=...)``; the knobs
    are the keyword parameters ``fn`` declares (all of them if it takes ``**kwargs``).
    Decorate ``fn`` with ``@llm_call`` to have its calls priced and counted."""
    if not callable(fn):
        raise TypeError(f"a target function must be callable, not {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError("the sweep calls targets from worker threads: give a sync function")
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        knobs = frozenset(KNOBS)
    else:
        knobs = frozenset(k for k in KNOBS if k in params)
    label = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)}"
    return Target(label, fn, knobs)
