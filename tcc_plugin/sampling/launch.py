"""Launch scheduling: how many samples a group keeps in flight.

A stop rule only saves the samples that are not launched yet. A launch policy is a
small object that, each time samples finish, says how many samples the group should
have in flight, given the group's state and how many more agreeing votes the stop rule
needs (:meth:`~tcc_plugin.sampling.StopRule.votes_needed`). The group then launches
the difference, within ``concurrency`` and what the budgets can pay for.

- :class:`launch_all`: every requested sample at once (fastest, saves nothing).
- :class:`launch_sequential`: one at a time (saves most, ``n`` round trips).
- :class:`launch_waves`: ``size`` samples, the next wave once the last one is in.
- :class:`launch_adaptive` (the default): only as many samples as could still change
  the stop rule's decision, more when the vote is contested.

Policies combine: ``a | b`` keeps the larger target, ``a & b`` the smaller one
(``launch_adaptive() | launch_waves(4)`` never has fewer than a wave of four going).
A plain function ``(state, needed) -> int`` works too.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

from tcc_plugin.sampling.stopping import SamplingState

__all__ = [
    "LaunchPolicy",
    "LaunchPolicyError",
    "LaunchPolicyLike",
    "as_launch_policy",
    "launch_adaptive",
    "launch_all",
    "launch_largest",
    "launch_sequential",
    "launch_smallest",
    "launch_waves",
]


class LaunchPolicyError(RuntimeError):
    """A launch policy raised, or returned something that is not a number of samples."""


class LaunchPolicy(ABC):
    """How many samples a group should have in flight."""

    @abstractmethod
    def __call__(self, state: SamplingState, needed: int | None) -> int:
        """The number of samples to have in flight now (counting those running).

        ``needed`` is how many more samples, all agreeing with the leader, would make
        the stop rule fire (``None``: no number would, or there is no rule). The group
        clamps the answer to ``[1, requested]`` (with a warning when it had to) and to
        its ``concurrency``; samples already running are never cancelled by it."""

    def __or__(self, other: LaunchPolicyLike) -> LaunchPolicy:
        return launch_largest(self, other)

    def __ror__(self, other: LaunchPolicyLike) -> LaunchPolicy:
        return launch_largest(other, self)

    def __and__(self, other: LaunchPolicyLike) -> LaunchPolicy:
        return launch_smallest(self, other)

    def __rand__(self, other: LaunchPolicyLike) -> LaunchPolicy:
        return launch_smallest(other, self)


LaunchPolicyLike = LaunchPolicy | Callable[[SamplingState, "int | None"], int]


class _Function(LaunchPolicy):
    def __init__(self, fn: Callable[[SamplingState, int | None], int]) -> None:
        self.fn = fn

    def __call__(self, state: SamplingState, needed: int | None) -> int:
        return self.fn(state, needed)

    def __repr__(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))


def as_launch_policy(policy: LaunchPolicyLike) -> LaunchPolicy:
    """``policy`` as a :class:`LaunchPolicy` (a plain function is wrapped)."""
    if isinstance(policy, LaunchPolicy):
        return policy
    if not callable(policy):
        raise TypeError(f"launch must be a LaunchPolicy or a callable, not {type(policy).__name__}")
    return _Function(policy)


class launch_largest(LaunchPolicy):
    """The largest target of ``policies`` (``a | b``)."""

    def __init__(self, *policies: LaunchPolicyLike) -> None:
        flat: list[LaunchPolicy] = []
        for p in map(as_launch_policy, policies):
            flat.extend(p.policies if isinstance(p, launch_largest) else (p,))
        self.policies: tuple[LaunchPolicy, ...] = tuple(flat)

    def __call__(self, state: SamplingState, needed: int | None) -> int:
        return max(p(state, needed) for p in self.policies)

    def __repr__(self) -> str:
        return " | ".join(repr(p) for p in self.policies)


class launch_smallest(LaunchPolicy):
    """The smallest target of ``policies`` (``a & b``)."""

    def __init__(self, *policies: LaunchPolicyLike) -> None:
        flat: list[LaunchPolicy] = []
        for p in map(as_launch_policy, policies):
            flat.extend(p.policies if isinstance(p, launch_smallest) else (p,))
        self.policies: tuple[LaunchPolicy, ...] = tuple(flat)

    def __call__(self, state: SamplingState, needed: int | None) -> int:
        return min(p(state, needed) for p in self.policies)

    def __repr__(self) -> str:
        return "(" + " & ".join(repr(p) for p in self.policies) + ")"


class launch_all(LaunchPolicy):
    """Every requested sample at once (within ``concurrency``): the lowest latency; a
    stop rule then only cancels samples already running."""

    def __call__(self, state: SamplingState, needed: int | None) -> int:
        return state.requested

    def __repr__(self) -> str:
        return "launch_all()"


class launch_sequential(LaunchPolicy):
    """One sample at a time: the stop rule decides after every sample, so nothing is
    launched it did not need; wall time is one round trip per sample."""

    def __call__(self, state: SamplingState, needed: int | None) -> int:
        return 1

    def __repr__(self) -> str:
        return "launch_sequential()"


class launch_waves(LaunchPolicy):
    """Waves of ``size`` samples: the next wave launches once the last one is in."""

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"launch_waves: size must be a positive int, got {size!r}")
        self.size = size

    def __call__(self, state: SamplingState, needed: int | None) -> int:
        return state.in_flight if state.in_flight else self.size

    def __repr__(self) -> str:
        return f"launch_waves({self.size})"


class launch_adaptive(LaunchPolicy):
    """Launch only as many samples as could still change the stop rule's decision.

    With ``needed`` more agreeing votes the rule fires, so ``needed`` samples in
    flight is enough if they all agree: more would be paid for and cancelled. When the
    vote is contested, waiting for agreement one round trip at a time is slow, so the
    target grows by ``growth`` per dissenting sample (one that voted for another
    answer, gave none, failed, or for best-of-N scored too low to stop the group):
    ``target = ceil(needed * (1 + growth * dissent))``, at least ``min_wave`` (at
    most ``n``). ``growth=0`` decides exactly like :class:`launch_sequential` (the
    same samples paid) in fewer round trips; the default 0.25 trades a few samples for
    wall time (see benchmarks/sampling_frontier.py).
    Without a rule that can fire (``needed`` is ``None``), every sample launches.
    """

    def __init__(self, *, growth: float = 0.25, min_wave: int = 1) -> None:
        if not (isinstance(growth, (int, float)) and growth >= 0 and math.isfinite(growth)):
            raise ValueError(f"launch_adaptive: growth must be finite and >= 0, got {growth!r}")
        if isinstance(min_wave, bool) or not isinstance(min_wave, int) or min_wave < 1:
            raise ValueError(f"launch_adaptive: min_wave must be a positive int, got {min_wave!r}")
        self.growth = float(growth)
        self.min_wave = min_wave

    def __call__(self, state: SamplingState, needed: int | None) -> int:
        if needed is None:
            return state.requested
        dissent = _dissent(state)
        target = max(self.min_wave, math.ceil(needed * (1.0 + self.growth * dissent)))
        return min(target, state.requested)

    def __repr__(self) -> str:
        return f"launch_adaptive(growth={self.growth:g}, min_wave={self.min_wave})"


def _dissent(state: SamplingState) -> float:
    """Finished samples that did not back the leader (voted otherwise, abstained,
    failed; for best-of-N, every sample that did not stop the group)."""
    weight = state.max_weight if state.max_weight else 1.0
    return max(0.0, state.completed + state.failed - state.leader_votes / weight)
