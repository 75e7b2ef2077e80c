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
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Literal

from tcc_plugin import _scopes
from tcc_plugin.adapter import Clamp
from tcc_plugin.errors import BudgetExceeded
from tcc_plugin.usage import Usage

__all__ = [
    "LIMITS",
    "Budget",
    "Charge",
    "Demand",
    "Policy",
    "Reservation",
    "active_budgets",
    "budget",
    "reserve",
    "using",
]

Policy = Literal["raise", "clamp"]
LIMITS = ("total_tokens", "output_tokens", "reasoning_tokens", "usd", "calls")
_TOKEN_LIMITS = ("total_tokens", "output_tokens", "reasoning_tokens")

# One lock for every ledger: a reservation touches all budgets of a chain atomically,
# and chains may order the same budgets differently, so per-budget locks could deadlock.
# Nothing blocking ever runs under it.
_LEDGER_LOCK = threading.Lock()
_ACTIVE: contextvars.ContextVar[tuple[Budget, ...]] = contextvars.ContextVar(
    "tcc_plugin_budgets", default=()
)


@dataclass(frozen=True, slots=True)
class Charge:
    """An amount in every budgeted dimension."""

    total_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    usd: Decimal = Decimal(0)
    calls: int = 0

    @classmethod
    def of(cls, usage: Usage, usd: Decimal | None = None, *, calls: int = 1) -> Charge:
        """What a call that used ``usage`` and cost ``usd`` charges."""
        return cls(
            total_tokens=usage.total,
            output_tokens=usage.output,
            reasoning_tokens=usage.reasoning,
            usd=usd if usd is not None else Decimal(0),
            calls=calls,
        )

    def __add__(self, other: Charge) -> Charge:
        return Charge(
            self.total_tokens + other.total_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.usd + other.usd,
            self.calls + other.calls,
        )

    def __sub__(self, other: Charge) -> Charge:
        return Charge(
            self.total_tokens - other.total_tokens,
            self.output_tokens - other.output_tokens,
            self.reasoning_tokens - other.reasoning_tokens,
            self.usd - other.usd,
            self.calls - other.calls,
        )

    def get(self, limit: str) -> int | Decimal:
        value: int | Decimal = getattr(self, limit)
        return value

    def is_zero(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in fields(self))


_ZERO = Charge()


@dataclass(frozen=True, slots=True)
class Demand:
    """What a call may consume at worst, for a reservation.

    ``max_output_tokens`` and ``max_reasoning_tokens`` are per choice (``None``:
    unknown); ``calls`` is 1, or 0 for a retry of a call already counted;
    ``worst_usd(output, reasoning)`` bounds the cost of a call whose
    per-choice caps are those (``None`` when the call cannot be priced ahead).
    """

    input_tokens: int = 0
    max_output_tokens: int | None = None
    max_reasoning_tokens: int | None = None
    choices: int = 1
    clampable: bool = True
    min_output_tokens: int = 1
    calls: int = 1
    worst_usd: Callable[[int | None, int | None], Decimal | None] | None = None

    def charge(self, output: int | None, reasoning: int | None) -> Charge:
        usd = self.worst_usd(output, reasoning) if self.worst_usd is not None else None
        if output is None:
            return Charge(total_tokens=self.input_tokens, usd=usd or Decimal(0), calls=self.calls)
        thinking = output if reasoning is None else min(reasoning, output)
        return Charge(
            total_tokens=self.input_tokens + output * self.choices,
            output_tokens=output * self.choices,
            reasoning_tokens=thinking * self.choices,
            usd=usd or Decimal(0),
            calls=self.calls,
        )

    def bounded(self, limit: str) -> bool:
        """Whether the worst case is known in the dimension of ``limit``."""
        if limit == "calls":
            return True
        if limit == "usd":
            return (
                self.max_output_tokens is not None
                and self.worst_usd is not None
                and (self.worst_usd(self.max_output_tokens, self.max_reasoning_tokens) is not None)
            )
        return self.max_output_tokens is not None


class Budget:
    """Limits on what the calls inside a scope may consume, and their ledger.

    ``deadline`` is in seconds from when the budget is first entered. ``policy``
    ``"raise"`` refuses a call that does not fit; ``"clamp"`` shrinks its output cap
    (and thinking budget) to what is left, refusing only when fewer than
    ``min_output_tokens`` would fit. A budget may be entered again, and by concurrent
    tasks and threads at once: they share one ledger.
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
    ) -> None:
        limits: dict[str, int | Decimal] = {}
        for key, value in (
            ("total_tokens", total_tokens),
            ("output_tokens", output_tokens),
            ("reasoning_tokens", reasoning_tokens),
            ("calls", calls),
        ):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be a non-negative int, got {value!r}")
            limits[key] = value
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
        self.limits: dict[str, int | Decimal] = {k: limits[k] for k in LIMITS if k in limits}
        self.deadline = deadline
        self.policy: Policy = policy
        self.min_output_tokens = min_output_tokens
        self.name = name
        self._clock = clock
        self._started: float | None = None
        self._spent = _ZERO
        self._reserved = _ZERO
        self._in_flight = 0

    def __repr__(self) -> str:
        parts = [repr(self.name)] if self.name else []
        parts += [f"{k}={v}" for k, v in self.limits.items()]
        if self.deadline is not None:
            parts.append(f"deadline={self.deadline}")
        parts.append(f"policy={self.policy!r}")
        return f"Budget({', '.join(parts)})"

    # -- ledger views ---------------------------------------------------------------------
    @property
    def spent(self) -> Charge:
        """What settled calls have consumed."""
        with _LEDGER_LOCK:
            return self._spent

    @property
    def reserved(self) -> Charge:
        """What calls in flight hold reserved."""
        with _LEDGER_LOCK:
            return self._reserved

    @property
    def in_flight(self) -> int:
        """How many calls hold a reservation now."""
        with _LEDGER_LOCK:
            return self._in_flight

    def remaining(self) -> dict[str, int | Decimal]:
        """For each limit, what is neither spent nor reserved (never below zero)."""
        with _LEDGER_LOCK:
            used = self._spent + self._reserved
        left: dict[str, int | Decimal] = {}
        for key, limit in self.limits.items():
            rest = limit - used.get(key)
            left[key] = rest if rest > 0 else type(rest)(0)
        return left

    def elapsed(self) -> float:
        """Seconds since the budget was first entered (0 before)."""
        return 0.0 if self._started is None else self._clock() - self._started

    def time_left(self) -> float | None:
        """Seconds until the deadline (``None``: no deadline)."""
        if self.deadline is None:
            return None
        return self.deadline - self.elapsed()

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
) -> Budget:
    """A new budget scope, to use as ``with budget(...) as b:`` (or ``async with``)."""
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
    )


def active_budgets() -> tuple[Budget, ...]:
    """The budgets a call made here would charge, outermost first, each once."""
    return _unique(_ACTIVE.get())


def _unique(chain: tuple[Budget, ...]) -> tuple[Budget, ...]:
    if len(chain) < 2:
        return chain
    seen: set[int] = set()
    unique: list[Budget] = []
    for b in chain:
        if id(b) not in seen:
            seen.add(id(b))
            unique.append(b)
    return tuple(unique)


@contextmanager
def using(budgets: tuple[Budget, ...]) -> Iterator[None]:
    """Make ``budgets`` the active chain for the block (for worker threads)."""
    token = _ACTIVE.set(budgets)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class Reservation:
    """What one call holds reserved in every budget of its chain, until settled."""

    __slots__ = ("_settled", "budgets", "charge", "clamp", "outcome")

    def __init__(
        self,
        budgets: tuple[Budget, ...],
        charge: Charge,
        clamp: Clamp | None,
        outcome: str,
    ) -> None:
        self.budgets = budgets
        self.charge = charge
        self.clamp = clamp
        self.outcome = outcome
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def settle(self, actual: Charge) -> bool:
        """Replace the reservation by ``actual`` in every budget; only the first call
        counts (later ones return ``False``), so nothing is ever charged twice."""
        with _LEDGER_LOCK:
            if self._settled:
                return False
            self._settled = True
            for b in self.budgets:
                b._reserved = b._reserved - self.charge
                b._spent = b._spent + actual
                b._in_flight -= 1
        return True

    def release(self) -> bool:
        """Give the whole reservation back: the call never reached the provider."""
        return self.settle(_ZERO)


def _refuse(b: Budget, limit: str, need: Charge) -> BudgetExceeded:
    if limit == "deadline":
        return BudgetExceeded(
            "deadline",
            limit_value=b.deadline or 0.0,
            spent=b.elapsed(),
            needed=0.0,
            budget_name=b.name,
        )
    return BudgetExceeded(
        limit,
        limit_value=b.limits[limit],
        spent=b._spent.get(limit),
        reserved=b._reserved.get(limit),
        needed=need.get(limit),
        budget_name=b.name,
    )


def _violations(
    budgets: tuple[Budget, ...], need: Charge, demand: Demand
) -> list[tuple[Budget, str]]:
    bad: list[tuple[Budget, str]] = []
    for b in budgets:
        used = b._spent + b._reserved
        for limit, cap in b.limits.items():
            have = used.get(limit)
            if have + need.get(limit) > cap or (not demand.bounded(limit) and have >= cap):
                bad.append((b, limit))
    return bad


def _largest_output(budgets: tuple[Budget, ...], demand: Demand) -> tuple[int | None, int | None]:
    """The largest per-choice output (and thinking budget) every budget can pay for;
    ``None`` where no limit binds."""
    n = demand.choices
    out: int | None = demand.max_output_tokens
    thinking: int | None = demand.max_reasoning_tokens

    def cap(current: int | None, bound: int) -> int:
        bound = max(bound, 0)
        return bound if current is None else min(current, bound)

    for b in budgets:
        used = b._spent + b._reserved
        if "total_tokens" in b.limits:
            left = int(b.limits["total_tokens"]) - used.total_tokens - demand.input_tokens
            out = cap(out, left // n)
        if "output_tokens" in b.limits:
            out = cap(out, (int(b.limits["output_tokens"]) - used.output_tokens) // n)
        if "reasoning_tokens" in b.limits:
            left = (int(b.limits["reasoning_tokens"]) - used.reasoning_tokens) // n
            if thinking is not None:
                thinking = cap(thinking, left)
            else:
                out = cap(out, left)
    if out is not None and thinking is not None:
        thinking = min(thinking, out)
    if demand.worst_usd is not None and any("usd" in b.limits for b in budgets):
        out = _largest_affordable(budgets, demand, out, thinking)
        if out is not None and thinking is not None:
            thinking = min(thinking, out)
    return out, thinking


def _largest_affordable(
    budgets: tuple[Budget, ...], demand: Demand, out: int | None, thinking: int | None
) -> int | None:
    left = min(
        Decimal(b.limits["usd"]) - (b._spent + b._reserved).usd
        for b in budgets
        if "usd" in b.limits
    )

    def fits(o: int) -> bool:
        usd = demand.charge(o, None if thinking is None else min(thinking, o)).usd
        return usd <= left

    hi = out
    if hi is None:  # grow an upper bound: the request set no output cap
        hi = 1024
        while fits(hi) and hi < 1 << 40:
            hi *= 2
    if fits(hi):
        return hi
    lo, hi = -1, hi  # fits(lo) holds by convention, fits(hi) fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid >= 0 and fits(mid):
            lo = mid
        else:
            hi = mid
    return max(lo, 0)


def reserve(
    demand: Demand,
    budgets: tuple[Budget, ...] | None = None,
    *,
    replacing: Reservation | None = None,
) -> Reservation:
    """Reserve ``demand``'s worst case in every active budget (or in ``budgets``).

    Raises :class:`BudgetExceeded` when it does not fit and no ``clamp`` budget can
    shrink it to a useful size; returns a reservation whose ``clamp`` says the new caps
    when a budget shrank the call.

    ``replacing`` is an unsettled reservation this one takes over, atomically: it is
    released in the same step (settled to nothing) when the new one is held, and kept
    whole when the new one is refused. An enclosing call hands its reservation to the
    provider call it makes this way, so no other call can take the room in between and
    the two never hold it twice.
    """
    chain = active_budgets() if budgets is None else _unique(budgets)
    if not chain:
        if replacing is not None:
            replacing.release()
        return Reservation((), _ZERO, None, "unbudgeted")
    for b in chain:
        b.start()
        left = b.time_left()
        if left is not None and left <= 0:
            with _LEDGER_LOCK:
                raise _refuse(b, "deadline", _ZERO)
    with _LEDGER_LOCK:
        handed = replacing if replacing is not None and not replacing._settled else None
        if handed is not None:
            _unhold(handed.budgets, handed.charge)
        try:
            held = _reserve_locked(chain, demand)
        except BaseException:
            if handed is not None:
                _hold(handed.budgets, handed.charge, None, "")
            raise
        if handed is not None:
            handed._settled = True
        return held


def _reserve_locked(chain: tuple[Budget, ...], demand: Demand) -> Reservation:
    """Reserve ``demand`` in ``chain`` (the caller holds the ledger lock)."""
    need = demand.charge(demand.max_output_tokens, demand.max_reasoning_tokens)
    bad = _violations(chain, need, demand)
    if not bad:
        return _hold(chain, need, None, "ok")
    for b, limit in bad:
        if (
            b.policy == "raise"
            or limit == "calls"
            or not demand.clampable
            or (limit == "usd" and demand.worst_usd is None)
        ):
            raise _refuse(b, limit, need)
    out, thinking = _largest_output(chain, demand)
    floor = max(demand.min_output_tokens, *(b.min_output_tokens for b in chain))
    # A thinking budget the clamp shrank to nothing is refused; one that was zero
    # to begin with (thinking off) stays zero while the output shrinks.
    thinking_gone = thinking is not None and thinking < 1 <= (demand.max_reasoning_tokens or 0)
    if out is None or out < floor or thinking_gone:
        b, limit = bad[0]
        raise _refuse(b, limit, need)
    clamped = replace(demand, max_output_tokens=out, max_reasoning_tokens=thinking)
    need = clamped.charge(out, thinking)
    still_bad = _violations(chain, need, clamped)
    if still_bad:  # a bound the clamp cannot move (e.g. the input alone is too large)
        b, limit = still_bad[0]
        raise _refuse(b, limit, need)
    return _hold(chain, need, Clamp(out, thinking), "clamped")


def _unhold(chain: tuple[Budget, ...], held: Charge) -> None:
    for b in chain:
        b._reserved = b._reserved - held
        b._in_flight -= 1


def _hold(
    chain: tuple[Budget, ...], need: Charge, clamp: Clamp | None, outcome: str
) -> Reservation:
    for b in chain:
        b._reserved = b._reserved + need
        b._in_flight += 1
    return Reservation(chain, need, clamp, outcome)
