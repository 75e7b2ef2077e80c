"""Adaptive early stopping: small rules that say, after each finished sample, whether
the group has seen enough.

Rules combine like tenacity's stop conditions: ``rule_a | rule_b`` stops when either
says so, ``rule_a & rule_b`` when both do; nested combinations flatten. A plain
function ``SamplingState -> bool`` combines too.

- :class:`stop_unbeatable`: the leader cannot be overtaken by the samples still to
  come (lossless: the answer is the one the full group would have voted for).
- :class:`stop_confident`: the posterior probability that the leader is the majority
  answer passes a threshold (Adaptive-Consistency, Aggarwal et al. 2023: Beta over the
  two leading answers, or Dirichlet over all of them; or the posterior-predictive
  probability that the leader still leads once all ``n`` samples are in).
- :class:`stop_on_score`: a candidate's verifier score reaches a threshold (best-of-N).
- :class:`stop_after_completed`, :class:`stop_after_delay`, :class:`stop_never`.

Rules are evaluated by the group plan each time a sample finishes, never concurrently.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from tcc_plugin.sampling._stats import (
    beta_leader_probability,
    dirichlet_leader_probability,
    predictive_leader_probability,
)

__all__ = [
    "SamplingState",
    "StopRule",
    "StopRuleLike",
    "as_stop_rule",
    "stop_after_completed",
    "stop_after_delay",
    "stop_all",
    "stop_any",
    "stop_confident",
    "stop_never",
    "stop_on_score",
    "stop_unbeatable",
]


@dataclass(frozen=True, slots=True)
class SamplingState:
    """What a stop rule sees: the group's counts and its tally so far.

    ``ranking`` is the weighted votes per answer, most first (ties by lowest first
    sample index). ``in_flight`` samples are running; ``pending`` could still be
    launched (0 once launching stopped, e.g. the budget is spent). ``max_weight`` bounds
    one sample's vote (``None``: unbounded). ``best_score`` is the highest verifier score.
    """

    requested: int
    launched: int
    completed: int
    failed: int
    in_flight: int
    pending: int
    ranking: tuple[tuple[str, float], ...]
    abstained: int
    best_score: float | None
    max_weight: float | None
    elapsed: float

    @property
    def remaining(self) -> int:
        """Samples that may still finish and vote: in flight plus still launchable."""
        return self.in_flight + self.pending

    @property
    def votes(self) -> Mapping[str, float]:
        return dict(self.ranking)

    @property
    def leader(self) -> str | None:
        return self.ranking[0][0] if self.ranking else None

    @property
    def leader_votes(self) -> float:
        return self.ranking[0][1] if self.ranking else 0.0

    @property
    def runner_up_votes(self) -> float:
        return self.ranking[1][1] if len(self.ranking) > 1 else 0.0

    def agreeing(self, k: int) -> SamplingState:
        """This state after ``k`` more samples all voted for the leader (a new answer
        when there is none yet), each with the largest weight (1 if unbounded); the
        samples in flight finish first, then pending ones launch."""
        if k <= 0:
            return self
        weight = self.max_weight if self.max_weight is not None else 1.0
        if self.ranking:
            leader, votes = self.ranking[0]
            ranking = ((leader, votes + k * weight), *self.ranking[1:])
        else:
            ranking = (("\x00leader", k * weight),)
        launched_now = max(0, k - self.in_flight)
        return replace(
            self,
            launched=self.launched + launched_now,
            completed=self.completed + k,
            in_flight=max(0, self.in_flight - k),
            pending=self.pending - launched_now,
            ranking=ranking,
        )


class StopRule(ABC):
    """Whether a group has seen enough samples."""

    @abstractmethod
    def __call__(self, state: SamplingState) -> bool:
        """``True`` to stop now (in-flight samples are then cancelled)."""

    def votes_needed(self, state: SamplingState) -> int | None:
        """How many more samples, all agreeing with the leader, would make this rule
        fire (0: it fires now); ``None`` when even all the remaining ones would not,
        or it cannot be known. A launch scheduler launches no more than that.

        The default asks the rule itself about :meth:`SamplingState.agreeing` states
        (a binary search: more agreeing votes never make a vote rule less sure)."""
        if self(state):
            return 0
        most = state.remaining
        if most <= 0 or not self(state.agreeing(most)):
            return None
        lo, hi = 0, most  # self(agreeing(lo)) is False, self(agreeing(hi)) is True
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self(state.agreeing(mid)):
                hi = mid
            else:
                lo = mid
        return hi

    def __or__(self, other: StopRuleLike) -> StopRule:
        return stop_any(self, other)

    def __ror__(self, other: StopRuleLike) -> StopRule:
        return stop_any(other, self)

    def __and__(self, other: StopRuleLike) -> StopRule:
        return stop_all(self, other)

    def __rand__(self, other: StopRuleLike) -> StopRule:
        return stop_all(other, self)


StopRuleLike = StopRule | Callable[[SamplingState], bool]


class _Function(StopRule):
    def __init__(self, fn: Callable[[SamplingState], bool]) -> None:
        self.fn = fn

    def __call__(self, state: SamplingState) -> bool:
        return bool(self.fn(state))

    def __repr__(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


def as_stop_rule(rule: StopRuleLike) -> StopRule:
    """``rule`` as a :class:`StopRule` (a plain function is wrapped)."""
    return rule if isinstance(rule, StopRule) else _Function(rule)


class stop_any(StopRule):
    """Stop when any of ``rules`` says so."""

    def __init__(self, *rules: StopRuleLike) -> None:
        flat: list[StopRule] = []
        for r in map(as_stop_rule, rules):
            flat.extend(r.rules if isinstance(r, stop_any) else (r,))
        self.rules: tuple[StopRule, ...] = tuple(flat)

    def __call__(self, state: SamplingState) -> bool:
        return any(rule(state) for rule in self.rules)

    def fired(self, state: SamplingState) -> StopRule | None:
        """The first rule that says stop."""
        return next((rule for rule in self.rules if rule(state)), None)

    def votes_needed(self, state: SamplingState) -> int | None:
        needs = [n for n in (rule.votes_needed(state) for rule in self.rules) if n is not None]
        return min(needs) if needs else None

    def __repr__(self) -> str:
        return " | ".join(repr(r) for r in self.rules)


class stop_all(StopRule):
    """Stop when all of ``rules`` say so."""

    def __init__(self, *rules: StopRuleLike) -> None:
        flat: list[StopRule] = []
        for r in map(as_stop_rule, rules):
            flat.extend(r.rules if isinstance(r, stop_all) else (r,))
        self.rules: tuple[StopRule, ...] = tuple(flat)

    def __call__(self, state: SamplingState) -> bool:
        return all(rule(state) for rule in self.rules)

    def votes_needed(self, state: SamplingState) -> int | None:
        needs = [rule.votes_needed(state) for rule in self.rules]
        if any(n is None for n in needs):
            return None
        return max(n for n in needs if n is not None)

    def __repr__(self) -> str:
        return "(" + " & ".join(repr(r) for r in self.rules) + ")"


class stop_never(StopRule):
    """Never stop early: every requested sample runs."""

    def __call__(self, state: SamplingState) -> bool:
        return False

    def votes_needed(self, state: SamplingState) -> int | None:
        return None

    def __repr__(self) -> str:
        return "stop_never()"


class stop_unbeatable(StopRule):
    """Stop when no answer can catch the leader any more: the leader's votes exceed the
    runner-up's by more than the samples still to come could add
    (``remaining * max_weight``).

    Lossless: the group then returns exactly the answer it would have returned after
    every requested sample. Needs a bounded vote weight (majority voting, or
    :class:`~tcc_plugin.sampling.weighted` with ``max_weight``); with unbounded weights
    it never fires.
    """

    def __call__(self, state: SamplingState) -> bool:
        if not state.ranking or state.max_weight is None:
            return False
        reach = state.remaining * state.max_weight
        return state.leader_votes - state.runner_up_votes > reach

    def __repr__(self) -> str:
        return "stop_unbeatable()"


class stop_confident(StopRule):
    """Stop when the posterior probability that the leading answer is the majority
    answer reaches ``threshold`` (Adaptive-Consistency's stopping criterion).

    ``method="beta"`` (the paper's default): the *model's* majority answer:
    P(p_1 > p_2) with the two leading answers' share ~ Beta(v_1 + prior, v_2 + prior).
    ``method="dirichlet"``: P(the leader's probability is the largest) under
    Dir(v + prior) over every answer seen plus one for answers not seen yet.
    ``method="predictive"``: the *group's* majority answer: P(the leader still strictly
    leads once the samples still to come have voted), under the Dirichlet-multinomial
    posterior predictive (leader, runner-up, all others). It knows how many samples are
    left, so with a small ``n`` it stops sooner than Beta at no extra loss against the
    full group's vote (see benchmarks/sampling_adaptive.py).
    ``v`` are the (weighted) votes; ``min_votes`` requires that many for the leader.
    With a uniform prior and 0.95, four unanimous votes stop (Beta); 5-1 does not.
    """

    def __init__(
        self,
        threshold: float = 0.95,
        *,
        method: Literal["beta", "dirichlet", "predictive"] = "beta",
        prior: float = 1.0,
        min_votes: float = 1.0,
    ) -> None:
        if not 0.5 < threshold < 1.0:
            raise ValueError("threshold must be in (0.5, 1)")
        if method not in ("beta", "dirichlet", "predictive"):
            raise ValueError("method must be 'beta', 'dirichlet' or 'predictive'")
        if not prior > 0:
            raise ValueError("prior must be > 0")
        self.threshold = threshold
        self.method = method
        self.prior = prior
        self.min_votes = min_votes

    def probability(self, state: SamplingState) -> float:
        """The posterior probability that the leader is the majority answer."""
        if not state.ranking:
            return 0.0
        if self.method == "beta":
            return beta_leader_probability(state.leader_votes, state.runner_up_votes, self.prior)
        if self.method == "dirichlet":
            votes = [v for _, v in state.ranking]
            return dirichlet_leader_probability([*votes, 0.0], self.prior)  # + unseen
        others = sum(v for _, v in state.ranking[2:])
        return predictive_leader_probability(
            state.leader_votes,
            state.runner_up_votes,
            others,
            state.remaining,
            self.prior,
            state.max_weight or 1.0,
        )

    def __call__(self, state: SamplingState) -> bool:
        if not state.ranking or state.leader_votes < self.min_votes:
            return False
        return self.probability(state) >= self.threshold

    def __repr__(self) -> str:
        return f"stop_confident({self.threshold}, method={self.method!r})"


class stop_on_score(StopRule):
    """Stop when a candidate's verifier score reaches ``threshold`` (best-of-N)."""

    def __init__(self, threshold: float = 1.0) -> None:
        self.threshold = threshold

    def __call__(self, state: SamplingState) -> bool:
        return state.best_score is not None and state.best_score >= self.threshold

    def votes_needed(self, state: SamplingState) -> int | None:
        if self(state):
            return 0
        return 1 if state.remaining > 0 else None  # one sample may score high enough

    def __repr__(self) -> str:
        return f"stop_on_score({self.threshold})"


class stop_after_completed(StopRule):
    """Stop once ``count`` samples have completed (returned a candidate)."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.count = count

    def __call__(self, state: SamplingState) -> bool:
        return state.completed >= self.count

    def __repr__(self) -> str:
        return f"stop_after_completed({self.count})"


class stop_after_delay(StopRule):
    """Stop at the first sample that finishes ``seconds`` after the group started.
    (Checked when samples finish; the group's ``timeout`` stops it at a fixed time.)"""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, state: SamplingState) -> bool:
        return state.elapsed >= self.seconds

    def votes_needed(self, state: SamplingState) -> int | None:
        return 0 if self(state) else None  # time, not votes, decides

    def __repr__(self) -> str:
        return f"stop_after_delay({self.seconds})"
