"""The sampling group plan: every decision of a group, in one place.

The plan decides what to launch (concurrency limit, budget admission), turns what a
sample returned into a candidate (extraction, verification, vote weight), keeps the
tally, asks the stop rule, picks the winner and builds the result. The drivers
(:mod:`tcc_plugin.sampling._sync` with threads, :mod:`tcc_plugin.sampling._async` with
asyncio tasks) only carry its decisions out: they start what :meth:`GroupPlan.launches`
returns, run each sample's :meth:`GroupPlan.job` (a generator that yields the two
steps that need I/O: *call the sample*, *call the verifier*), report what finished and
cancel what :meth:`GroupPlan.to_cancel` says.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from tcc_plugin.budget import Budget, Charge, Demand, using
from tcc_plugin.errors import BudgetExceeded, ScoringFailed
from tcc_plugin.sampling.admission import Admission, Slot, has_room, needs_admission
from tcc_plugin.sampling.batch import BatchSample, values_of_batch
from tcc_plugin.sampling.extract import Extractor, text_of
from tcc_plugin.sampling.launch import LaunchPolicy, LaunchPolicyError
from tcc_plugin.sampling.result import Candidate, SamplingResult, StopReason, Verdict
from tcc_plugin.sampling.stopping import SamplingState, StopRule, stop_any
from tcc_plugin.sampling.verifiers import Verifier
from tcc_plugin.sampling.voting import Tally, VoteRule

__all__ = [
    "CallSample",
    "CallVerifier",
    "GroupPlan",
    "GroupSpec",
    "Job",
    "Launch",
    "SampleContext",
    "Step",
    "current_sample",
    "is_async_callable",
]

logger = logging.getLogger("tcc_plugin.sampling")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """What a group was asked to do (validated by the public functions)."""

    method: str
    samples: tuple[Callable[[], Any], ...]
    n: int
    concurrency: int
    extract: Extractor | None
    verifier: Verifier | None
    vote: VoteRule | None
    stop: StopRule | None
    per_sample: Demand | Charge | None
    timeout: float | None
    name: str
    launch: LaunchPolicy
    batch: BatchSample[Any] | None = None  # draws a wave as one call (then samples is empty)


class SampleContext:
    """What a running sample can ask about itself (:func:`current_sample`): its
    ``index`` and whether the group no longer needs it (``cancelled``). A synchronous
    sample (run in a thread, which cannot be interrupted) may poll ``cancelled`` to
    stop early, e.g. between stream chunks."""

    __slots__ = ("_event", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        self._event.set()

    def __repr__(self) -> str:
        return f"SampleContext(index={self.index}, cancelled={self.cancelled})"


_CURRENT: contextvars.ContextVar[SampleContext | None] = contextvars.ContextVar(
    "tcc_sampling_current", default=None
)


def current_sample() -> SampleContext | None:
    """The sample running in this context (``None`` outside a sampling group)."""
    return _CURRENT.get()


class Launch:
    """One launched call: its callable, its budget slot, its context, and its own
    ledger (a scope without limits that records what its calls spent). It stands for
    ``size`` samples, ``index`` .. ``index + size - 1``: one, or a batch drawn at once."""

    __slots__ = ("chain", "context", "fn", "index", "ledger", "size", "slot")

    def __init__(
        self,
        index: int,
        fn: Callable[[], Any],
        slot: Slot | None,
        chain: tuple[Budget, ...],
        ledger: Budget | None = None,
        size: int = 1,
    ) -> None:
        self.index = index
        self.size = size
        self.fn = fn
        self.slot = slot
        self.ledger = ledger if ledger is not None else Budget(name=f"sample {index}")
        # The sample's ledger sits right after the group's, outside the caller's budgets.
        self.chain = (*chain[:1], self.ledger, *chain[1:])
        self.context = SampleContext(index)

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the sample's own code in here: it is then the current sample, and its
        calls charge its own ledger and, with a budget slot, the slot (settled into the
        caller's budgets on exit), else the group's chain."""
        token = _CURRENT.set(self.context)
        try:
            if self.slot is None:
                with using(self.chain):
                    yield
            else:
                self.slot.budget.start()
                try:
                    with using(self.chain):
                        yield
                finally:
                    self.slot.settle()
        finally:
            _CURRENT.reset(token)

    def call_sync(self) -> Any:
        """Call the sample (in a worker thread)."""
        with self.entered():
            value = self.fn()
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                raise TypeError(
                    "the sample returned an awaitable: use abest_of_n / aself_consistency "
                    "for async samples"
                )
            return value

    async def call_async(self) -> Any:
        """Call the sample (in an asyncio task). A synchronous callable runs on the
        event loop; one that returns an awaitable (a ``lambda`` around an async call)
        is awaited."""
        with self.entered():
            value = self.fn()
            if inspect.isawaitable(value):
                return await value
            _warn_sync_sample(self.fn)
            return value

    @property
    def indices(self) -> range:
        """The samples this launch stands for."""
        return range(self.index, self.index + self.size)

    def cancel(self) -> None:
        self.context.cancel()

    def release_unstarted(self) -> None:
        """Give back the slot of a sample that was cancelled before it ever ran (one
        that ran settles its slot itself; settling is idempotent)."""
        if self.slot is not None:
            self.slot.settle()


def _note(exc: BaseException, note: str) -> None:
    add_note = getattr(exc, "add_note", None)  # Python 3.11+
    if callable(add_note):
        add_note(note)


_warned_sync: set[int] = set()


def _warn_sync_sample(fn: Callable[[], Any]) -> None:
    key = id(getattr(fn, "__code__", fn))
    if key not in _warned_sync:
        _warned_sync.add(key)
        logger.warning(
            "tcc_plugin.sampling: sample %r is synchronous; in an async group it runs on "
            "the event loop, one at a time. Use the sync best_of_n/self_consistency, or "
            "make the sample async.",
            getattr(fn, "__qualname__", fn),
        )


@dataclass(frozen=True, slots=True)
class CallSample:
    """Step: call the sample of ``launch`` (inside ``launch.entered()``)."""

    launch: Launch


@dataclass(frozen=True, slots=True)
class CallVerifier:
    """Step: score ``candidate`` with ``verifier``."""

    verifier: Verifier
    candidate: Candidate[Any]


Step = CallSample | CallVerifier
Job = Generator[Step, Any, list[Candidate[Any]]]


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine, by its declaration."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


class GroupPlan(Generic[T]):
    """The decisions of one sampling group (used by one driver, from one thread)."""

    def __init__(
        self,
        spec: GroupSpec,
        chain: tuple[Budget, ...],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.outer = chain
        self._clock = clock
        # A private scope with no limits: it charges nothing, records everything the
        # group's calls spend. Outermost, so the caller's innermost budget stays the
        # one call spans report.
        self.ledger = Budget(name=f"tcc.sampling.{spec.method}")
        self.chain: tuple[Budget, ...] = (self.ledger, *chain)
        self._admission = (
            Admission(spec.per_sample, chain)
            if spec.per_sample is not None and needs_admission(chain)
            else None
        )
        self._running: dict[int, Launch] = {}
        self._launches: dict[int, Launch] = {}
        self._clamp_warned = False
        self._candidates: dict[int, Candidate[T]] = {}
        self._tally = Tally()
        self._best: tuple[float, int] | None = None  # (score, -index) of the best candidate
        self._next = 0
        self._closed = False  # no more launches
        self._stopping = False  # stop decided: cancel what runs
        self._reason: StopReason = "all_done"
        self._rule: str | None = None
        self._budget_limited = False
        self._budget_error: BudgetExceeded | None = None
        self._started = clock()
        self._ends: list[tuple[float, StopReason]] = []
        if spec.timeout is not None:
            self._ends.append((self._started + spec.timeout, "timeout"))
        lefts = [t for t in (b.time_left() for b in chain) if t is not None]
        if lefts:
            self._ends.append((self._started + min(lefts), "deadline"))

    # -- launching ----------------------------------------------------------------------
    def launches(self) -> list[Launch]:
        """The samples to start now (none once the group is closed)."""
        out: list[Launch] = []
        spec = self.spec
        if self._closed or self._next >= spec.n or self.in_flight >= spec.concurrency:
            return out
        target = min(self._target(), spec.concurrency)
        while not self._closed and self._next < spec.n and self.in_flight < target:
            index = self._next
            size = self._batch_size(target)
            slot: Slot | None = None
            try:
                if self._admission is not None:
                    slot, size = self._admit(self._admission, index, size)
                else:
                    refusal = has_room(self.outer)
                    if refusal is not None:
                        raise refusal
            except BudgetExceeded as exc:
                # Running samples will settle (usually far below their worst case):
                # try again when one finishes. With nothing running, no room will come.
                if self._budget_error is None:
                    self._budget_error = exc
                if not self._running:
                    self._budget_stop(exc)
                break
            self._next += size
            chain = (self.ledger, slot.budget) if slot is not None else self.chain
            ledger = Budget(name=f"{self.ledger.name}[sample {index}]")
            if spec.batch is not None:
                launch = Launch(index, _draw(spec.batch, size), slot, chain, ledger, size)
            else:
                fn = spec.samples[index % len(spec.samples)]
                launch = Launch(index, fn, slot, chain, ledger)
            self._running[index] = launch
            self._launches[index] = launch
            out.append(launch)
        if self._next >= spec.n:
            self._closed = True
        return out

    @property
    def in_flight(self) -> int:
        """Samples running (a batch counts all of its samples)."""
        return sum(launch.size for launch in self._running.values())

    def _batch_size(self, target: int) -> int:
        """How many samples the next launch draws: 1, or for a batch source the rest
        of the wave (within ``n`` and the source's ``max_batch``)."""
        batch = self.spec.batch
        if batch is None:
            return 1
        size = min(target - self.in_flight, self.spec.n - self._next)
        if batch.max_batch is not None:
            size = min(size, batch.max_batch)
        return max(size, 1)

    @staticmethod
    def _admit(admission: Admission, index: int, size: int) -> tuple[Slot, int]:
        """Admit the largest batch of at most ``size`` samples the budgets can pay for
        in full (raises the refusal when not even one fits)."""
        while True:
            try:
                return admission.admit(index, size), size
            except BudgetExceeded:
                if size == 1:
                    raise
                size -= 1

    def _target(self) -> int:
        """How many samples the launch policy wants in flight, clamped to ``[1, n]``."""
        spec = self.spec
        state = self.state()
        needed: int | None = None
        if spec.stop is not None:
            try:
                needed = spec.stop.votes_needed(state)
            except Exception as exc:
                raise LaunchPolicyError(
                    f"{spec.method}: stop rule {spec.stop!r} failed to say how many votes "
                    f"it needs: {exc!r}"
                ) from exc
        try:
            target = spec.launch(state, needed)
        except Exception as exc:
            raise LaunchPolicyError(
                f"{spec.method}: launch policy {spec.launch!r} raised {exc!r}"
            ) from exc
        if isinstance(target, bool) or not isinstance(target, int):
            raise LaunchPolicyError(
                f"{spec.method}: launch policy {spec.launch!r} returned {target!r}, "
                "not an int number of samples"
            )
        if not 1 <= target <= spec.n:
            clamped = min(max(target, 1), spec.n)
            if not self._clamp_warned:
                self._clamp_warned = True
                logger.warning(
                    "tcc_plugin.sampling: launch policy %r asked for %d samples in flight; "
                    "clamped to %d (between 1 and n=%d)",
                    spec.launch,
                    target,
                    clamped,
                    spec.n,
                )
            target = clamped
        return target

    def _budget_stop(self, exc: BudgetExceeded) -> None:
        """The budget cannot pay for more samples: launch no more."""
        self._closed = True
        self._budget_limited = True
        if self._budget_error is None:
            self._budget_error = exc

    # -- one sample ---------------------------------------------------------------------
    def job(self, launch: Launch) -> Job:
        """The work of one launch, as steps for a driver; returns its candidates (one,
        or one per sample of a batch, in index order)."""
        spec = self.spec
        indices = launch.indices
        started = time.perf_counter()
        try:
            value = yield CallSample(launch)
            values = (
                [value] if spec.batch is None else values_of_batch(value, launch.size, spec.batch)
            )
        except BudgetExceeded as exc:
            if launch.slot is not None and exc.budget_name == launch.slot.budget.name:
                _note(
                    exc,
                    "tcc_plugin.sampling: this sample's calls need more than its per_sample "
                    "worst case: raise per_sample (the input bound of instrumented calls is "
                    "the request's size in bytes)",
                )
            latency = time.perf_counter() - started
            return [Candidate(i, "refused", error=exc, latency=latency) for i in indices]
        except Exception as exc:
            latency = time.perf_counter() - started
            return [Candidate(i, "failed", error=exc, latency=latency) for i in indices]
        latency = time.perf_counter() - started
        candidates: list[Candidate[Any]] = []
        for index, one in zip(indices, values, strict=True):
            candidates.append((yield from self._candidate(index, one, latency)))
        return candidates

    def _candidate(
        self, index: int, value: Any, latency: float
    ) -> Generator[Step, Any, Candidate[Any]]:
        """What sample ``index`` returned, as a scored candidate."""
        spec = self.spec
        try:
            text = text_of(value)
            answer = spec.extract(value) if spec.extract is not None else None
        except Exception as exc:  # a user extractor failed
            return Candidate(index, "failed", value=value, error=exc, latency=latency)
        candidate: Candidate[Any] = Candidate(
            index, "ok", value=value, text=text, answer=answer, latency=latency
        )
        voting = spec.vote is not None
        if spec.verifier is not None and not (voting and answer is None):
            try:
                verdict = yield CallVerifier(spec.verifier, candidate)
                if not isinstance(verdict, Verdict):
                    raise TypeError(f"verifier returned {type(verdict).__name__}, not Verdict")
                candidate = replace(candidate, verdict=verdict)
            except Exception as exc:
                candidate = replace(candidate, error=exc)
        if spec.vote is not None and answer is not None:
            try:
                candidate = replace(candidate, weight=spec.vote.weight(candidate))
            except Exception as exc:
                candidate = replace(candidate, error=exc)
        return candidate

    # -- what the drivers report --------------------------------------------------------
    def finished(self, index: int, candidates: list[Candidate[T]]) -> None:
        """The launch of sample ``index`` finished with ``candidates`` (one per sample
        it stood for; decide with :meth:`decide`)."""
        self._running.pop(index, None)
        for candidate in candidates:
            self._add(candidate)

    def _add(self, candidate: Candidate[T]) -> None:
        index = candidate.index
        self._candidates[index] = candidate
        if candidate.status == "refused":
            assert isinstance(candidate.error, BudgetExceeded)
            self._budget_stop(candidate.error)
        if not candidate.ok:
            return
        if self.spec.vote is not None:
            self._tally.add(candidate.answer, candidate.weight, index)
        score = candidate.score
        if score is not None and (self._best is None or (score, -index) > self._best):
            self._best = (score, -index)

    def crashed(self, index: int, error: BaseException) -> list[Candidate[T]]:
        """The driver could not run the launch of sample ``index`` at all."""
        launch = self._running.get(index)
        indices = launch.indices if launch is not None else range(index, index + 1)
        out: list[Candidate[T]] = [Candidate(i, "failed", error=error) for i in indices]
        self.finished(index, out)
        return out

    def cancelled(self, index: int) -> list[Candidate[T]]:
        """The launch of sample ``index`` (every sample of a batch) was cancelled (or
        abandoned) by the driver; returns the cancelled candidates."""
        launch = self._running.pop(index, None)
        indices = range(index, index + 1)
        if launch is not None:
            launch.cancel()
            indices = launch.indices
        out: list[Candidate[T]] = [Candidate(i, "cancelled") for i in indices]
        for candidate in out:
            self._candidates[candidate.index] = candidate
        return out

    def decide(self) -> None:
        """Ask the stop rule, after a batch of finished samples."""
        if self._stopping or self.spec.stop is None:
            return
        state = self.state()
        if state.remaining == 0:
            return
        rule = self.spec.stop
        if rule(state):
            fired = rule.fired(state) if isinstance(rule, stop_any) else rule
            self._stop("rule", repr(fired))

    def expire(self) -> None:
        """Called when :meth:`wait_timeout` passed with nothing finished."""
        now = self._clock()
        due = [reason for at, reason in sorted(self._ends) if at <= now]
        if due:
            self._stop(due[0], None)

    def _stop(self, reason: StopReason, rule: str | None) -> None:
        self._stopping = True
        self._closed = True
        self._reason = reason
        self._rule = rule

    # -- what the drivers ask -----------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """A stop was decided: cancel what :meth:`to_cancel` returns and finish."""
        return self._stopping

    def to_cancel(self) -> list[Launch]:
        return list(self._running.values())

    def wait_timeout(self) -> float | None:
        """How long the driver may wait for the next finished sample."""
        if not self._ends:
            return None
        return max(0.0, min(at for at, _ in self._ends) - self._clock())

    def state(self) -> SamplingState:
        spec = self.spec
        counts = [c.status for c in self._candidates.values()]
        return SamplingState(
            requested=spec.n,
            launched=self._next,
            completed=counts.count("ok"),
            failed=counts.count("failed") + counts.count("refused"),
            in_flight=self.in_flight,
            pending=0 if self._closed else spec.n - self._next,
            ranking=self._tally.snapshot(),
            abstained=self._tally.abstained,
            best_score=None if self._best is None else self._best[0],
            max_weight=None if spec.vote is None else spec.vote.max_weight,
            elapsed=self._clock() - self._started,
        )

    # -- the outcome --------------------------------------------------------------------
    def first_error(self) -> BaseException | None:
        """Why nothing completed: the first sample's error, or the budget's refusal."""
        for index in sorted(self._candidates):
            error = self._candidates[index].error
            if self._candidates[index].status in ("failed", "refused") and error is not None:
                return error
        return self._budget_error

    def outcome_error(self, result: SamplingResult[T]) -> BaseException | None:
        """What the group raises instead of returning ``result``: the first sample's
        error when none completed; :class:`ScoringFailed` (chained to the first error)
        when candidates completed but the verifier (or vote weight) raised on every one.
        When it raised on some, a warning, once per group (the group span counts them
        too, ``tcc.sampling.scoring_failed``)."""
        if result.completed == 0:
            return self.first_error()
        failed = [c for c in result.candidates if c.ok and c.error is not None]
        if not failed:
            return None
        first = failed[0]
        spec = self.spec
        by_verifier = spec.verifier is not None and first.verdict is None
        what = f"verifier {spec.verifier!r}" if by_verifier else f"vote weight {spec.vote!r}"
        if len(failed) < result.completed:
            logger.warning(
                "tcc_plugin.sampling: %s: the %s raised on %d of %d candidates (first: %s: %s); "
                "they were left out",
                spec.method,
                what,
                len(failed),
                result.completed,
                type(first.error).__name__,
                first.error,
            )
            return None
        error = ScoringFailed(
            f"{spec.method}: the {what} raised on every one of the {len(failed)} completed "
            f"candidates, so none could be scored (first: {type(first.error).__name__}: "
            f"{first.error})"
        )
        error.__cause__ = first.error
        return error

    def _winner(self) -> Candidate[T] | None:
        completed = [c for c in self._candidates.values() if c.ok]
        if self.spec.vote is not None:
            leader = self._tally.leader
            if leader is None:
                return None
            mine = [c for c in completed if c.answer == leader and c.weight is not None]
            return min(mine, key=lambda c: (-(c.weight or 0.0), c.index))
        scored = [c for c in completed if c.score is not None]
        if not scored:
            return None
        return min(scored, key=lambda c: (-(c.score or 0.0), c.index))

    def result(self) -> SamplingResult[T]:
        spec = self.spec
        candidates = tuple(self._candidates[i] for i in sorted(self._candidates))
        statuses = [c.status for c in candidates]
        winner = self._winner()
        cancelled = statuses.count("cancelled")
        cancelled_spent = Charge()
        for c in candidates:
            launch = self._launches.get(c.index)
            if c.status == "cancelled" and launch is not None:
                cancelled_spent = cancelled_spent + launch.ledger.spent
        reason: StopReason = self._reason
        if not self._stopping:
            reason = "budget" if self._budget_limited else "all_done"
        return SamplingResult(
            method=spec.method,
            winner=winner,
            answer=None if winner is None else winner.answer,
            candidates=candidates,
            votes=self._tally.votes,
            counts=self._tally.counts,
            margin=self._tally.margin,
            requested=spec.n,
            launched=self._next,
            completed=statuses.count("ok"),
            failed=statuses.count("failed"),
            refused=statuses.count("refused"),
            cancelled=cancelled,
            stopped_early=self._stopping and (cancelled > 0 or self._next < spec.n),
            stop_reason=reason,
            stop_rule=self._rule,
            budget_limited=self._budget_limited,
            spent=self.ledger.spent,
            elapsed=self._clock() - self._started,
            cancelled_spent=cancelled_spent,
            launch=repr(spec.launch),
        )


def _draw(batch: BatchSample[Any], size: int) -> Callable[[], Any]:
    """The call that draws ``size`` samples of ``batch`` at once."""

    def draw() -> Any:
        return batch.draw(size)

    draw.__qualname__ = f"{type(batch).__qualname__}.draw"
    return draw
