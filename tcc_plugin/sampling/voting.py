"""Vote rules and the tally.

A vote rule gives each answering candidate a weight: :class:`majority` one vote each,
:class:`weighted` the verifier's score or a user weight. The :class:`Tally` adds them
up per answer, order-independently (``math.fsum``).

Tie rule: between answers with equal votes, the one whose first vote came from the
lowest sample index (launch order) wins. It depends only on which candidates
completed, never on the order they finished in.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from tcc_plugin.sampling.result import Candidate

__all__ = ["Tally", "VoteRule", "majority", "weighted"]


class VoteRule(ABC):
    """Gives each answering candidate a vote weight (``None``: it abstains).

    ``max_weight`` bounds one candidate's weight (``None``: unbounded); stop rules
    that reason about the samples still to come need it.
    """

    max_weight: float | None = 1.0

    @abstractmethod
    def weight(self, candidate: Candidate[Any]) -> float | None:
        """The vote weight of ``candidate`` (which has an answer)."""


class majority(VoteRule):
    """One vote per answering candidate."""

    max_weight = 1.0

    def weight(self, candidate: Candidate[Any]) -> float | None:
        return 1.0

    def __repr__(self) -> str:
        return "majority()"


class weighted(VoteRule):
    """Votes weighted by ``by(candidate)``, or by the verifier's score when ``by`` is
    ``None`` (a candidate whose verification failed abstains).

    Weights must lie in ``[0, max_weight]`` (``max_weight=None``: any weight >= 0, but
    then no stop rule can tell that the leader is out of reach); a weight outside it is
    an error recorded on that candidate, which then abstains.
    """

    def __init__(
        self,
        by: Callable[[Candidate[Any]], float] | None = None,
        *,
        max_weight: float | None = 1.0,
    ) -> None:
        if max_weight is not None and not max_weight > 0:
            raise ValueError("max_weight must be > 0 (or None)")
        self.by = by
        self.max_weight = max_weight

    def weight(self, candidate: Candidate[Any]) -> float | None:
        if self.by is None:
            value = candidate.score
            if value is None:
                return None
        else:
            value = self.by(candidate)
        w = float(value)
        too_big = self.max_weight is not None and w > self.max_weight
        if not (w >= 0 and math.isfinite(w)) or too_big:
            raise ValueError(
                f"vote weight {w!r} of sample {candidate.index} is outside [0, {self.max_weight}]"
            )
        return w

    def __repr__(self) -> str:
        by = "score" if self.by is None else getattr(self.by, "__qualname__", repr(self.by))
        return f"weighted(by={by}, max_weight={self.max_weight})"


class Tally:
    """Votes per answer, added as candidates complete."""

    __slots__ = ("_first", "_weights", "abstained")

    def __init__(self) -> None:
        self._weights: dict[str, list[float]] = {}
        self._first: dict[str, int] = {}
        self.abstained = 0

    def add(self, answer: str | None, weight: float | None, index: int) -> None:
        """Count ``answer`` with ``weight`` from sample ``index`` (``None``: abstain)."""
        if answer is None or weight is None:
            self.abstained += 1
            return
        self._weights.setdefault(answer, []).append(weight)
        first = self._first.get(answer)
        if first is None or index < first:
            self._first[answer] = index

    @property
    def votes(self) -> dict[str, float]:
        """Weighted votes per answer, in ranking order."""
        return dict(self.ranking())

    @property
    def counts(self) -> dict[str, int]:
        """Candidates per answer, in ranking order."""
        return {a: len(self._weights[a]) for a, _ in self.ranking()}

    def ranking(self) -> list[tuple[str, float]]:
        """Answers by votes, most first; ties by the lowest first sample index."""
        totals = [(a, math.fsum(ws)) for a, ws in self._weights.items()]
        totals.sort(key=lambda item: (-item[1], self._first[item[0]]))
        return totals

    @property
    def leader(self) -> str | None:
        ranking = self.ranking()
        return ranking[0][0] if ranking else None

    @property
    def margin(self) -> float | None:
        """Leader's votes minus the runner-up's (the leader's own votes when alone)."""
        ranking = self.ranking()
        if not ranking:
            return None
        return ranking[0][1] - (ranking[1][1] if len(ranking) > 1 else 0.0)

    def snapshot(self) -> tuple[tuple[str, float], ...]:
        return tuple(self.ranking())


def tally_of(candidates: Mapping[int, Candidate[Any]]) -> Tally:
    """A tally of completed ``candidates`` (by index)."""
    tally = Tally()
    for index in sorted(candidates):
        c = candidates[index]
        if c.ok:
            tally.add(c.answer, c.weight, index)
    return tally
