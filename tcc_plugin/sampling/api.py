"""The public functions: best-of-N and self-consistency, sync and async.

Both draw up to ``n`` samples concurrently (``concurrency`` at a time), each a call of
``sample`` (or of the next callable of a sequence, round-robin), budget-aware and
traced; they differ in how the winner is chosen:

- :func:`best_of_n`: the candidate the ``verifier`` scores highest (ties: the lowest
  sample index). Default stop: never (all ``n`` samples); ``stop_on_score(t)`` stops
  at the first candidate scoring ``t``.
- :func:`self_consistency`: the answer most (weighted) votes agree on, after answer
  extraction and normalisation (ties: the answer first given by the lowest sample
  index). Default stop: :class:`~tcc_plugin.sampling.stop_unbeatable`, which only
  stops once the answer can no longer change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from tcc_plugin.budget import Charge, Demand
from tcc_plugin.sampling import _async, _sync
from tcc_plugin.sampling.batch import BatchSample
from tcc_plugin.sampling.extract import ExtractorLike, as_extractor, math_answer
from tcc_plugin.sampling.group_plan import GroupSpec, is_async_callable
from tcc_plugin.sampling.launch import (
    LaunchPolicy,
    LaunchPolicyLike,
    as_launch_policy,
    launch_adaptive,
)
from tcc_plugin.sampling.result import SamplingResult
from tcc_plugin.sampling.stopping import (
    StopRule,
    StopRuleLike,
    as_stop_rule,
    stop_confident,
    stop_unbeatable,
)
from tcc_plugin.sampling.verifiers import VerifierLike, as_verifier
from tcc_plugin.sampling.voting import VoteRule, majority, weighted

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LAUNCH",
    "DEFAULT_STOP",
    "abest_of_n",
    "aself_consistency",
    "best_of_n",
    "self_consistency",
]

T = TypeVar("T")

DEFAULT_CONCURRENCY = 16
"""Samples in flight at once when ``concurrency`` is not given (at most ``n``)."""

DEFAULT_STOP: StopRule = stop_confident(0.9, method="predictive") | stop_unbeatable()
"""``self_consistency``'s stop rule when ``stop`` is not given: stop once the leader
is 90 % likely to still lead after all ``n`` votes, or cannot be overtaken at all.
Chosen with :data:`DEFAULT_LAUNCH` by benchmarks/sampling_frontier.py (about 2.6x
fewer samples than a fixed N = 16 vote at about 0.3 pt of accuracy); pass
``stop_unbeatable()`` for a lossless early stop, ``None`` for all ``n``."""

DEFAULT_LAUNCH: LaunchPolicy = launch_adaptive()
"""The launch policy when ``launch`` is not given (chosen by
benchmarks/sampling_frontier.py with :data:`DEFAULT_STOP`: the largest saving whose
wall time stays within 2x of the all-at-once launch it replaces)."""


def _spec(
    method: str,
    sample: Callable[[], Any] | Sequence[Callable[[], Any]] | BatchSample[Any],
    n: int | None,
    *,
    is_async: bool,
    extract: ExtractorLike | None,
    verifier: VerifierLike | None,
    vote: VoteRule | None,
    stop: StopRuleLike | None,
    concurrency: int | None,
    per_sample: Demand | Charge | None,
    timeout: float | None,
    name: str | None,
    launch: LaunchPolicyLike | None,
) -> GroupSpec:
    batch: BatchSample[Any] | None = None
    samples: tuple[Callable[[], Any], ...] = ()
    if isinstance(sample, BatchSample):
        batch = sample
        if n is None:
            raise TypeError(f"{method}: give n, the number of samples to draw from {batch!r}")
        if not is_async and batch.is_async:
            raise TypeError(f"{method}: batch source {batch!r} draws asynchronously; use a{method}")
    else:
        samples = (sample,) if callable(sample) else tuple(sample)
        if not samples:
            raise ValueError(f"{method}: no sample callables given")
        for fn in samples:
            if not callable(fn):
                raise TypeError(f"{method}: a sample must be callable, not {type(fn).__name__}")
            if not is_async and is_async_callable(fn):
                raise TypeError(
                    f"{method}: sample {getattr(fn, '__qualname__', fn)!r} is async; use a{method}"
                )
        if n is None:
            if callable(sample):
                raise TypeError(f"{method}: give n, the number of samples to draw")
            n = len(samples)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{method}: n must be a positive int, got {n!r}")
    if concurrency is None:
        concurrency = DEFAULT_CONCURRENCY
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"{method}: concurrency must be a positive int, got {concurrency!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"{method}: timeout must be > 0 seconds")
    if per_sample is not None and not isinstance(per_sample, (Demand, Charge)):
        raise TypeError(f"{method}: per_sample must be a Demand or a Charge")
    if isinstance(vote, weighted) and vote.by is None and verifier is None:
        raise ValueError(f"{method}: weighted() by score needs a verifier")
    return GroupSpec(
        method=method,
        samples=samples,
        n=n,
        concurrency=min(concurrency, n),
        extract=None if extract is None else as_extractor(extract),
        verifier=None if verifier is None else as_verifier(verifier),
        vote=vote,
        stop=None if stop is None else as_stop_rule(stop),
        per_sample=per_sample,
        timeout=timeout,
        name=name or method,
        launch=DEFAULT_LAUNCH if launch is None else _launch(method, launch),
        batch=batch,
    )


def _launch(method: str, launch: LaunchPolicyLike) -> LaunchPolicy:
    try:
        return as_launch_policy(launch)
    except TypeError as exc:
        raise TypeError(f"{method}: {exc}") from None


def best_of_n(
    sample: Callable[[], T] | Sequence[Callable[[], T]] | BatchSample[T],
    n: int | None = None,
    *,
    verifier: VerifierLike,
    stop: StopRuleLike | None = None,
    extract: ExtractorLike | None = None,
    concurrency: int | None = None,
    per_sample: Demand | Charge | None = None,
    timeout: float | None = None,
    name: str | None = None,
    launch: LaunchPolicyLike | None = None,
) -> SamplingResult[T]:
    """Draw up to ``n`` candidates and return the one ``verifier`` scores highest.

    ``sample`` is a callable returning a candidate (usually an instrumented LLM call),
    or a sequence of them used round-robin (``n`` then defaults to its length), or a
    :class:`~tcc_plugin.sampling.BatchSample` (e.g. ``batched(draw_k)``): each wave the
    launch policy starts is then drawn by one call of ``draw(k)`` (e.g. one request
    with ``n=k`` on vLLM or llama-server).
    ``verifier`` is a :class:`~tcc_plugin.sampling.Verifier` or a plain function
    ``candidate -> float | bool | Verdict``. ``stop`` ends the group early (e.g.
    ``stop_on_score(1.0)``); running samples are then abandoned (see the docs on
    threads). ``extract`` also extracts each candidate's answer. ``concurrency``
    samples run at once (default 16, at most ``n``). ``per_sample`` is one sample's
    worst case (a :class:`~tcc_plugin.budget.Demand`, or a
    :class:`~tcc_plugin.budget.Charge` such as :func:`worst_case` returns): with it,
    a sample launches only once its worst case is reserved in the active budgets.
    ``timeout`` (seconds) ends the group with what it has. ``name`` names its span.
    ``launch`` decides how many samples are in flight (default
    :data:`DEFAULT_LAUNCH`, :class:`~tcc_plugin.sampling.launch_adaptive`: only as
    many as could still change the stop rule's decision; ``launch_all()`` for every
    sample at once).

    Raises the first sample's error when no sample completed (e.g.
    :class:`~tcc_plugin.BudgetExceeded` when the budget could not pay for one).
    """
    spec = _spec(
        "best_of_n", sample, n, is_async=False, extract=extract, verifier=verifier, vote=None,
        stop=stop, concurrency=concurrency, per_sample=per_sample, timeout=timeout, name=name,
        launch=launch,
    )  # fmt: skip
    return _sync.run(spec)


def self_consistency(
    sample: Callable[[], T] | Sequence[Callable[[], T]] | BatchSample[T],
    n: int | None = None,
    *,
    extract: ExtractorLike | None = None,
    vote: VoteRule | None = None,
    verifier: VerifierLike | None = None,
    stop: StopRuleLike | None = DEFAULT_STOP,
    concurrency: int | None = None,
    per_sample: Demand | Charge | None = None,
    timeout: float | None = None,
    name: str | None = None,
    launch: LaunchPolicyLike | None = None,
) -> SamplingResult[T]:
    """Draw up to ``n`` samples and return the answer most of them agree on.

    Each sample's answer is found by ``extract`` (default
    :func:`~tcc_plugin.sampling.math_answer`: ``\\boxed{}``, a "Final Answer:" line,
    else the last number) and normalised; samples without one abstain. ``vote`` weighs
    the answers (default :class:`~tcc_plugin.sampling.majority`; ``weighted()`` uses
    the ``verifier``'s score). ``stop`` ends the group early (default
    :data:`DEFAULT_STOP`: once the leader is 90 % likely to keep its lead over all
    ``n`` votes, or cannot be overtaken; ``stop_unbeatable()`` alone is lossless;
    ``None`` draws all ``n``; ``stop_confident(0.95) | stop_unbeatable()`` is
    Adaptive-Consistency).
    The other arguments are as for :func:`best_of_n`.
    """
    spec = _spec(
        "self_consistency", sample, n, is_async=False, extract=extract or math_answer(),
        verifier=verifier, vote=vote or majority(), stop=stop, concurrency=concurrency,
        per_sample=per_sample, timeout=timeout, name=name, launch=launch,
    )  # fmt: skip
    return _sync.run(spec)


async def abest_of_n(
    sample: Callable[[], Awaitable[T]] | Sequence[Callable[[], Awaitable[T]]] | BatchSample[T],
    n: int | None = None,
    *,
    verifier: VerifierLike,
    stop: StopRuleLike | None = None,
    extract: ExtractorLike | None = None,
    concurrency: int | None = None,
    per_sample: Demand | Charge | None = None,
    timeout: float | None = None,
    name: str | None = None,
    launch: LaunchPolicyLike | None = None,
) -> SamplingResult[T]:
    """The async twin of :func:`best_of_n`: samples are coroutine functions (or
    callables returning awaitables, e.g. ``lambda: client.chat.completions.create(...)``
    on an async client); stopping cancels the samples still running."""
    spec = _spec(
        "best_of_n", sample, n, is_async=True, extract=extract, verifier=verifier, vote=None,
        stop=stop, concurrency=concurrency, per_sample=per_sample, timeout=timeout, name=name,
        launch=launch,
    )  # fmt: skip
    return await _async.run(spec)


async def aself_consistency(
    sample: Callable[[], Awaitable[T]] | Sequence[Callable[[], Awaitable[T]]] | BatchSample[T],
    n: int | None = None,
    *,
    extract: ExtractorLike | None = None,
    vote: VoteRule | None = None,
    verifier: VerifierLike | None = None,
    stop: StopRuleLike | None = DEFAULT_STOP,
    concurrency: int | None = None,
    per_sample: Demand | Charge | None = None,
    timeout: float | None = None,
    name: str | None = None,
    launch: LaunchPolicyLike | None = None,
) -> SamplingResult[T]:
    """The async twin of :func:`self_consistency` (see :func:`abest_of_n`)."""
    spec = _spec(
        "self_consistency", sample, n, is_async=True, extract=extract or math_answer(),
        verifier=verifier, vote=vote or majority(), stop=stop, concurrency=concurrency,
        per_sample=per_sample, timeout=timeout, name=name, launch=launch,
    )  # fmt: skip
    return await _async.run(spec)
