"""What a sampling group returns: its candidates, the vote or scores, and the counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from tcc_plugin.budget import Charge

__all__ = ["Candidate", "SampleStatus", "SamplingResult", "StopReason", "Verdict"]

T = TypeVar("T")

SampleStatus = Literal["ok", "failed", "refused", "cancelled"]
"""``ok``: the sample returned a candidate; ``failed``: it raised; ``refused``: a budget
refused its call (:class:`~tcc_plugin.BudgetExceeded`); ``cancelled``: the group
stopped before it finished (async: cancelled; threads: abandoned, see the docs)."""

StopReason = Literal["all_done", "rule", "budget", "timeout", "deadline"]
"""Why a group ended: ``all_done`` every requested sample finished; ``rule`` the stop
rule fired; ``budget`` the budget could not pay for more samples; ``timeout`` the
group's ``timeout`` passed; ``deadline`` a budget's deadline passed."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verifier's judgement of one candidate: a ``score`` (higher is better; the
    built-in verifiers score in [0, 1]) and optional ``details`` (e.g. tests passed)."""

    score: float
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the score is a full pass (>= 1)."""
        return self.score >= 1.0


@dataclass(frozen=True, slots=True)
class Candidate(Generic[T]):
    """One sample of a group and what became of it.

    ``index`` is its launch order (0-based, stable: the tie rules use it); ``value``
    what the sample returned; ``text`` its answer text and ``answer`` the normalised
    answer (``None``: it abstained); ``verdict`` the verifier's judgement and
    ``weight`` its vote weight; ``latency`` the sample's own wall time in seconds (the
    verifier's excluded); ``error`` what the sample (or, with status ``ok``, its
    verifier or weight) raised.
    """

    index: int
    status: SampleStatus
    value: T | None = None
    text: str | None = None
    answer: str | None = None
    verdict: Verdict | None = None
    weight: float | None = None
    latency: float | None = None
    error: BaseException | None = None

    @property
    def score(self) -> float | None:
        """The verifier's score (``None``: unverified or verification failed)."""
        return None if self.verdict is None else self.verdict.score

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class SamplingResult(Generic[T]):
    """The outcome of a :func:`best_of_n` or :func:`self_consistency` group.

    ``winner`` is the chosen candidate (``None`` when no candidate qualified) and
    ``answer`` its answer. ``candidates`` holds every launched sample in launch order
    with its status. ``votes`` (weighted) and ``counts`` are the tally per answer;
    ``margin`` is the leader's votes minus the runner-up's. The counts say how many
    samples were ``requested``, ``launched``, ``completed`` (status ok), ``failed``,
    ``refused`` by a budget and ``cancelled``. ``stopped_early`` says a stop rule,
    timeout or deadline ended the group before every requested sample finished, and
    ``stop_reason`` why it ended; ``budget_limited`` that the budget could not pay for
    every requested sample, so fewer were launched. ``spent`` is what the group's calls
    (samples and verifiers) had consumed when it returned; ``elapsed`` its wall time.
    ``cancelled_spent`` is the part of ``spent`` charged for cancelled samples (an
    honest estimate where the provider never reported usage: tokens streamed so far,
    else the call's reservation); ``launch`` names the launch policy.
    """

    method: str
    winner: Candidate[T] | None
    answer: str | None
    candidates: tuple[Candidate[T], ...]
    votes: Mapping[str, float]
    counts: Mapping[str, int]
    margin: float | None
    requested: int
    launched: int
    completed: int
    failed: int
    refused: int
    cancelled: int
    stopped_early: bool
    stop_reason: StopReason
    stop_rule: str | None
    budget_limited: bool
    spent: Charge
    elapsed: float
    cancelled_spent: Charge = field(default_factory=Charge)
    launch: str | None = None

    @property
    def value(self) -> T:
        """What the winning sample returned; raises :class:`LookupError` without one."""
        if self.winner is None:
            raise LookupError(
                f"{self.method}: no winner ({self.completed} of {self.launched} samples "
                f"completed, stop reason {self.stop_reason!r})"
            )
        return self.winner.value  # type: ignore[return-value]

    @property
    def score(self) -> float | None:
        """The winner's verifier score."""
        return None if self.winner is None else self.winner.score

    @property
    def scores(self) -> tuple[float | None, ...]:
        """Every launched candidate's score, in launch order."""
        return tuple(c.score for c in self.candidates)

    @property
    def abstained(self) -> int:
        """Completed samples that gave no answer (or no vote weight)."""
        return sum(1 for c in self.candidates if c.ok and (c.answer is None or c.weight is None))
