"""Budgets: hard caps on tokens, reasoning, USD, calls and wall time.

A :class:`Budget` is a scope. Entered (``with tcc_plugin.budget(usd=1):``), it joins the
chain of active budgets of the current context (``contextvars``), so scopes nest and a
call charges every budget in its chain: a child can never outspend a parent. The chain
follows asyncio tasks automatically; a thread started inside a scope joins it through
``contextvars.copy_context().run`` (LangChain's executors do this already).

A call first *reserves* its worst case in every budget of its chain, atomically, then
*settles* to what it really used. Concurrent calls therefore cannot jointly exceed a cap:
what one has reserved, another cannot spend. Where the worst case is unknown (no output
cap on the request), call-count and deadline caps still hold exactly, while token and
cost caps are checked after the call and refuse the next one.

A budget keeps its accounts in a ledger (:mod:`tcc_plugin.ledger`): this process's
memory by default, or a shared store (``RedisLedger``) that many processes and machines
charge together, with caps that may reset every day or month.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Literal

from tcc_plugin import _scopes
from tcc_plugin.adapter import AttributeValue
from tcc_plugin.errors import BudgetExceeded
from tcc_plugin.ledger import (
    DIMENSIONS,
    LEDGER_LOCK,
    MEMORY,
    Charge,
    Ledger,
    MemoryAccount,
    Snapshot,
)
from tcc_plugin.reservation import (
    _ACTIVE,
    Demand,
    Policy,
    Reservation,
    active_budgets,
    reserve,
)
from tcc_plugin.telemetry import names

__all__ = [
    "LIMITS",
    "Budget",
    "Charge",
    "Demand",
    "Period",
    "Policy",
    "Reservation",
    "active_budgets",
    "budget",
    "reserve",
    "shared_budget",
    "using",
]

Period = Literal["daily", "monthly"]


def _number(value: int | Decimal) -> int | float:
    return _finite(float(value)) if isinstance(value, Decimal) else value


def _finite(value: float) -> float:
    """``value``, or the largest float of its sign for an amount too large for a float
    (span attributes must be finite numbers)."""
    if value - value == 0:  # inf - inf is nan
        return value
    return math.copysign(sys.float_info.max, value)


LIMITS = DIMENSIONS
_USD = DIMENSIONS.index("usd")  # the one dimension kept in Decimal (reported as float)


class Budget:
    """Limits on what the calls inside a scope may consume, and their ledger.

    ``deadline`` is in seconds from when the budget is first entered. ``policy``
    ``"raise"`` refuses a call that does not fit; ``"clamp"`` shrinks its output cap
    (and thinking budget) to what is left, refusing only when fewer than
    ``min_output_tokens`` would fit. A budget may be entered again, and by concurrent
    tasks and threads at once: they share one ledger.

    ``ledger`` keeps the accounts (default: this process's memory). A shared ledger
    needs a ``key`` naming the budget in its store, and may reset the caps every
    ``period`` (``"daily"`` or ``"monthly"``, at midnight in ``timezone``).
    """

    def __init__(
        self,
        *,
        total_tokens: int | None = None,
        output_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        usd: float | str | Decimal | None = None,
        calls: int | None = None,
        deadline: float | None = None,
        policy: Policy = "raise",
        min_output_tokens: int = 1,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        ledger: Ledger | None = None,
        key: str | None = None,
        period: Period | None = None,
        timezone: str = "UTC",
    ) -> None:
        limits: dict[str, int | Decimal] = {}
        for limit, value in (
            ("total_tokens", total_tokens),
            ("output_tokens", output_tokens),
            ("reasoning_tokens", reasoning_tokens),
            ("calls", calls),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{limit} must be a non-negative int, got {value!r}")
            limits[limit] = value
        if usd is not None:
            try:
                if isinstance(usd, bool):
                    raise InvalidOperation
                amount = usd if isinstance(usd, Decimal) else Decimal(str(usd))
            except InvalidOperation:
                raise ValueError(f"usd must be a number of dollars, got {usd!r}") from None
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"usd must be a non-negative amount, got {usd!r}")
            limits["usd"] = amount
        if deadline is not None and not deadline >= 0:
            raise ValueError(f"deadline must be >= 0 seconds, got {deadline!r}")
        if policy not in ("raise", "clamp"):
            raise ValueError(f"policy must be 'raise' or 'clamp', got {policy!r}")
        if (
            isinstance(min_output_tokens, bool)
            or not isinstance(min_output_tokens, int)
            or min_output_tokens < 1
        ):
            raise ValueError(f"min_output_tokens must be an int >= 1, got {min_output_tokens!r}")
        if period is not None and period not in ("daily", "monthly"):
            raise ValueError(f"period must be 'daily', 'monthly' or None, got {period!r}")
        self.limits: dict[str, int | Decimal] = {k: limits[k] for k in LIMITS if k in limits}
        self._caps = tuple(
            (i, k, self.limits[k]) for i, k in enumerate(DIMENSIONS) if k in self.limits
        )
        # Span attribute names and values per limit, built once (a call reports them all).
        self._report = tuple(
            (
                i,
                limit,
                names.BUDGET_LIMIT_PREFIX + limit,
                names.BUDGET_SPENT_PREFIX + limit,
                names.BUDGET_REMAINING_PREFIX + limit,
                cap,
                _number(cap),
            )
            for i, limit, cap in self._caps
        )
        self.deadline = deadline
        self.policy: Policy = policy
        self.min_output_tokens = min_output_tokens
        self.key = key
        self.period: Period | None = period
        self.timezone = timezone
        self.name = name if name is not None else key
        self._clock = clock
        self._started: float | None = None
        self.ledger: Ledger = ledger if ledger is not None else MEMORY
        self._account = self.ledger.account(self)
        # In-memory accounts of a chain move together under one lock; shared ones each
        # take their own round trip.
        self._local: MemoryAccount | None = (
            self._account if isinstance(self._account, MemoryAccount) else None
        )

    def __repr__(self) -> str:
        parts = [repr(self.name)] if self.name else []
        parts += [f"{k}={v}" for k, v in self.limits.items()]
        if self.deadline is not None:
            parts.append(f"deadline={self.deadline}")
        if self.period is not None:
            parts.append(f"period={self.period!r}")
        parts.append(f"policy={self.policy!r}")
        if self._local is None:
            parts.append(f"ledger={self.ledger!r}")
        return f"Budget({', '.join(parts)})"

    # -- ledger views ---------------------------------------------------------------------
    @property
    def spent(self) -> Charge:
        """What settled calls have consumed (a shared budget: read from its store)."""
        return self._account.read().spent

    @property
    def reserved(self) -> Charge:
        """What calls in flight hold reserved."""
        return self._account.read().reserved

    @property
    def in_flight(self) -> int:
        """How many calls hold a reservation now."""
        return self._account.read().in_flight

    def remaining(self) -> dict[str, int | Decimal]:
        """For each limit, what is neither spent nor reserved (never below zero)."""
        return self.remaining_of(self._account.read())

    def snapshot(self) -> Snapshot:
        """The account without a round trip: current for an in-memory budget, as of
        the last reserve or settle for a shared one (what span attributes report)."""
        return self._account.snapshot()

    def remaining_of(self, snapshot: Snapshot) -> dict[str, int | Decimal]:
        """For each limit, what ``snapshot`` leaves (never below zero)."""
        left: dict[str, int | Decimal] = {}
        spent, reserved = snapshot.spent, snapshot.reserved
        for limit, cap in self.limits.items():
            rest = cap - spent.get(limit) - reserved.get(limit)
            left[limit] = rest if rest > 0 else type(rest)(0)
        return left

    def report(self, attrs: dict[str, AttributeValue]) -> None:
        """Add each limit, and what is spent and remaining of it, to span ``attrs``
        (a shared budget: as of its last round trip). The values are ints and finite
        floats, valid attribute values as they are."""
        local = self._local
        if local is None:
            snap = self._account.snapshot()
            spent: Sequence[int | Decimal] = snap.spent.values()
            reserved: Sequence[int | Decimal] = snap.reserved.values()
            lock: AbstractContextManager[object] = nullcontext()
        else:  # read in place under the lock: one consistent reading, a few operations
            spent, reserved, lock = local.spent, local.reserved, LEDGER_LOCK
        with lock:
            for i, _, limit_name, spent_name, remaining_name, cap, number in self._report:
                used = spent[i]
                rest = cap - used - reserved[i]
                attrs[limit_name] = number
                if i == _USD:
                    attrs[spent_name] = _finite(float(used))
                    attrs[remaining_name] = _finite(float(rest)) if rest > 0 else 0
                else:  # token and call counts: ints (int() of an int is itself)
                    attrs[spent_name] = int(used)
                    attrs[remaining_name] = int(rest) if rest > 0 else 0

    def elapsed(self) -> float:
        """Seconds since the budget was first entered (0 before)."""
        return 0.0 if self._started is None else self._clock() - self._started

    def time_left(self) -> float | None:
        """Seconds until the deadline (``None``: no deadline)."""
        if self.deadline is None:
            return None
        return self.deadline - self.elapsed()

    def _refusal(
        self, limit: str, need: Charge, snapshot: Snapshot | None = None
    ) -> BudgetExceeded:
        """The error refusing ``need`` on ``limit`` (under LEDGER_LOCK for a local one)."""
        if limit == "deadline":
            return BudgetExceeded(
                "deadline",
                limit_value=self.deadline or 0.0,
                spent=self.elapsed(),
                needed=0.0,
                budget_name=self.name,
            )
        if snapshot is None:
            snapshot = (
                self._local.snapshot_locked()
                if self._local is not None
                else self._account.snapshot()
            )
        return BudgetExceeded(
            limit,
            limit_value=self.limits[limit],
            spent=snapshot.spent.get(limit),
            reserved=snapshot.reserved.get(limit),
            needed=need.get(limit),
            budget_name=self.name,
        )

    # -- scope ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the deadline clock (entering does this; idempotent)."""
        if self._started is None:
            self._started = self._clock()

    def __enter__(self) -> Budget:
        self.start()
        _scopes.push(_ACTIVE, self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _scopes.pop(_ACTIVE, self)

    async def __aenter__(self) -> Budget:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def budget(
    *,
    total_tokens: int | None = None,
    output_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    usd: float | str | Decimal | None = None,
    calls: int | None = None,
    deadline: float | None = None,
    policy: Policy = "raise",
    min_output_tokens: int = 1,
    name: str | None = None,
    ledger: Ledger | None = None,
    key: str | None = None,
    period: Period | None = None,
    timezone: str = "UTC",
) -> Budget:
    """A new budget scope, to use as ``with budget(...) as b:`` (or ``async with``).

    With ``ledger`` (e.g. ``RedisLedger(url)``) and ``key``, the budget is shared by
    every process that opens the same key in the same store."""
    return Budget(
        total_tokens=total_tokens,
        output_tokens=output_tokens,
        reasoning_tokens=reasoning_tokens,
        usd=usd,
        calls=calls,
        deadline=deadline,
        policy=policy,
        min_output_tokens=min_output_tokens,
        name=name,
        ledger=ledger,
        key=key,
        period=period,
        timezone=timezone,
    )


_SHARED: dict[str, Budget] = {}
_SHARED_LOCK = threading.Lock()


def shared_budget(
    key: str,
    *,
    ledger: Ledger | None = None,
    total_tokens: int | None = None,
    output_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    usd: float | str | Decimal | None = None,
    calls: int | None = None,
    policy: Policy = "raise",
    min_output_tokens: int = 1,
    period: Period | None = None,
    timezone: str = "UTC",
) -> Budget:
    """A named budget shared across processes, configured once and used anywhere.

    Called with a ``ledger`` (and limits), it configures the budget ``key`` for this
    process and returns it; called with the key alone, it returns the budget configured
    before, to enter as ``with shared_budget("team-a/daily"):``.
    """
    with _SHARED_LOCK:
        if ledger is None:
            found = _SHARED.get(key)
            if found is None:
                known = ", ".join(repr(k) for k in sorted(_SHARED)) or "none"
                raise LookupError(
                    f"no shared budget {key!r} is configured in this process (configured: "
                    f"{known}); configure it once with shared_budget({key!r}, "
                    "ledger=RedisLedger(url), usd=...)"
                )
            return found
        created = Budget(
            total_tokens=total_tokens,
            output_tokens=output_tokens,
            reasoning_tokens=reasoning_tokens,
            usd=usd,
            calls=calls,
            policy=policy,
            min_output_tokens=min_output_tokens,
            ledger=ledger,
            key=key,
            period=period,
            timezone=timezone,
        )
        _SHARED[key] = created
        return created


@contextmanager
def using(budgets: tuple[Budget, ...]) -> Iterator[None]:
    """Make ``budgets`` the active chain for the block (for worker threads)."""
    token = _ACTIVE.set(budgets)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
