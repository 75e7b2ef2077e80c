"""The grid: which ways of answering a sweep measures.

A :class:`Cell` is one way to answer: a method (``single`` call, s1 budget ``forcing``,
``best_of_n`` with a verifier, ``self_consistency`` voting), a thinking budget (tokens,
or an effort level for providers that take one), and for sampling the number of
samples ``n`` and a stop rule. Its :attr:`Cell.id` is stable, so a results file keyed by
it is reused when the grid changes. Stop rules are named so they can be written down:
``"unbeatable"``, ``"never"``, ``"confident:0.95"``, ``"score:1.0"``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from tcc_plugin.instrument import EFFORT_TOKENS, check_thinking
from tcc_plugin.sampling.stopping import (
    StopRule,
    stop_confident,
    stop_never,
    stop_on_score,
    stop_unbeatable,
)

__all__ = ["METHODS", "Cell", "Method", "grid", "parse_stop", "thinking_tokens"]

Method = Literal["single", "forcing", "best_of_n", "self_consistency"]
METHODS: tuple[Method, ...] = get_args(Method)
_SAMPLING = ("best_of_n", "self_consistency")


def parse_stop(stop: str | None) -> StopRule | None:
    """The stop rule a name stands for (``None``: the method's default)."""
    if stop is None:
        return None
    name, _, arg = stop.partition(":")
    try:
        if name == "unbeatable" and not arg:
            return stop_unbeatable()
        if name == "never" and not arg:
            return stop_never()
        if name == "confident":
            return stop_confident(float(arg or 0.95)) | stop_unbeatable()
        if name == "score":
            return stop_on_score(float(arg or 1.0))
    except ValueError as exc:
        raise ValueError(f"bad stop rule {stop!r}: {exc}") from None
    raise ValueError(
        f"unknown stop rule {stop!r}; use unbeatable, never, confident:<p> or score:<s>"
    )


def thinking_tokens(budget: int | str | None) -> int | None:
    """A thinking budget in tokens (an effort level by its usual token count)."""
    if budget is None or isinstance(budget, int):
        return budget
    return EFFORT_TOKENS[budget]


@dataclass(frozen=True, slots=True)
class Cell:
    """One point of the grid. ``min_thinking_tokens`` is forcing's minimum (it appends
    "Wait" below it)."""

    method: Method
    thinking_budget: int | str | None = None
    n: int | None = None
    stop: str | None = None
    min_thinking_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        check_thinking(self.thinking_budget)
        if self.method in _SAMPLING:
            if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
                raise ValueError(f"{self.method} needs n >= 1, got {self.n!r}")
            parse_stop(self.stop)
        elif self.n is not None or self.stop is not None:
            raise ValueError(f"{self.method} takes no n or stop rule")
        if self.method == "forcing" and not isinstance(self.thinking_budget, int):
            raise ValueError("forcing needs a thinking budget in tokens")
        if self.min_thinking_tokens is not None and self.method != "forcing":
            raise ValueError("min_thinking_tokens applies to forcing only")

    @property
    def id(self) -> str:
        """A stable, readable key: ``forcing-b256``, ``self_consistency-b64-n8-unbeatable``."""
        parts: list[str] = [self.method]
        if self.thinking_budget is not None:
            parts.append(f"b{self.thinking_budget}")
        if self.min_thinking_tokens:
            parts.append(f"min{self.min_thinking_tokens}")
        if self.n is not None:
            parts.append(f"n{self.n}")
        if self.stop is not None:
            parts.append(self.stop)
        return "-".join(parts)

    @property
    def samples(self) -> int:
        return self.n or 1

    @property
    def family(self) -> tuple[Any, ...]:
        """Cells that differ only by thinking budget share a family (compared for
        overthinking)."""
        return (self.method, self.n, self.stop, self.min_thinking_tokens)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
        return cls(
            data["method"],
            data.get("thinking_budget"),
            data.get("n"),
            data.get("stop"),
            data.get("min_thinking_tokens"),
        )


def grid(
    *,
    methods: Iterable[Method] = ("single",),
    budgets: Sequence[int | str | None] = (None,),
    n: Sequence[int] = (4,),
    stop: Sequence[str | None] = (None,),
    min_thinking_tokens: int | None = None,
) -> list[Cell]:
    """Every combination: methods x budgets (x n x stop rules for sampling methods).
    ``forcing`` skips budgets that are not token counts. Raises ``ValueError`` for an
    empty grid."""
    cells: list[Cell] = []
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        for budget in budgets:
            if method == "forcing":
                if not isinstance(budget, int):
                    continue
                cells.append(Cell(method, budget, min_thinking_tokens=min_thinking_tokens))
            elif method in _SAMPLING:
                for size, rule in itertools.product(n, stop):
                    cells.append(Cell(method, budget, size, rule))
            else:
                cells.append(Cell(method, budget))
    unique = list(dict.fromkeys(cells))
    if not unique:
        raise ValueError("the grid is empty: give at least one method and one budget")
    return unique
