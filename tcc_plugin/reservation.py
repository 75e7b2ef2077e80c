"""Reservations: a call's worst case held in every budget of its chain, then settled.

In-memory budgets of the chain are checked and held together under one lock; shared
budgets (kept in a store such as Redis) each take one atomic round trip after them, and
a refusal there gives back everything the call held. A ``clamp`` budget shrinks the call
to what is left rather than refusing it.

A shared store's round trips are the only I/O: the decisions around them are written
once, as a plan (a generator yielding each store operation), carried out with the
accounts' sync methods by :func:`reserve` and :meth:`Reservation.settle`, and awaited
through their async methods (``areserve`` / ``asettle``, where an account has them) by
:func:`areserve` and :meth:`Reservation.asettle`. A chain of in-memory budgets never
builds a plan: it is reserved and settled in one locked step either way.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from tcc_plugin.adapter import Clamp
from tcc_plugin.errors import BudgetExceeded
from tcc_plugin.ledger import (
    LEDGER_LOCK,
    ZERO,
    Account,
    Charge,
    MemoryAccount,
    Snapshot,
    charge,
)
from tcc_plugin.plans import adrive, drive

if TYPE_CHECKING:
    from tcc_plugin.budget import Budget

__all__ = [
    "Demand",
    "Policy",
    "Reservation",
    "active_budgets",
    "areserve",
    "reserve",
    "touches_store",
]

Policy = Literal["raise", "clamp"]

_ACTIVE: contextvars.ContextVar[tuple[Budget, ...]] = contextvars.ContextVar(
    "tcc_plugin_budgets", default=()
)
_TOKENS_AND_USD = ("total_tokens", "output_tokens", "reasoning_tokens", "usd")
_USD_ONLY = ("usd",)
_NO_USD = Decimal(0)
_NOTHING: tuple[int | Decimal, ...] = ZERO.values()


@dataclass(slots=True)  # not frozen: built on every call, and never changed once built
class Demand:
    """What a call may consume at worst, for a reservation (a value: never mutated;
    :func:`dataclasses.replace` makes a changed copy).

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
        n = self.choices
        return charge(
            self.input_tokens + output * n, output * n, thinking * n, usd or _NO_USD, self.calls
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

    def unbounded(self) -> tuple[str, ...]:
        """The limits whose worst case is unknown: checked after the call, and refused
        before it only once already used up."""
        if self.max_output_tokens is None:
            return _TOKENS_AND_USD
        if self.worst_usd is None or (
            self.worst_usd(self.max_output_tokens, self.max_reasoning_tokens) is None
        ):
            return _USD_ONLY
        return ()


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


class Reservation:
    """What one call holds reserved in every budget of its chain, until settled."""

    __slots__ = ("_held", "_locals", "_settled", "_shared", "budgets", "charge", "clamp", "outcome")

    def __init__(
        self,
        budgets: tuple[Budget, ...],
        charge: Charge,
        clamp: Clamp | None,
        outcome: str,
        locals_: tuple[MemoryAccount, ...] = (),
        shared: tuple[tuple[Account, object], ...] = (),
        values: tuple[int | Decimal, ...] | None = None,
    ) -> None:
        self.budgets = budgets
        self.charge = charge
        self.clamp = clamp
        self.outcome = outcome
        self._held = values if values is not None else charge.values()
        self._locals = locals_
        self._shared = shared
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def settle(self, actual: Charge) -> bool:
        """Replace the reservation by ``actual`` in every budget; only the first call
        counts (later ones return ``False``), so nothing is ever charged twice."""
        if not self._settle_locals(actual):
            return False
        for shared, hold in self._shared:
            shared.settle(hold, actual)  # never raises: a shared ledger journals on failure
        return True

    async def asettle(self, actual: Charge) -> bool:
        """The async twin of :meth:`settle`: each shared store's settlement is awaited
        (through the account's ``asettle`` where it has one), never blocking the loop."""
        if not self._settle_locals(actual):
            return False
        for shared, hold in self._shared:
            await _acarry_out(_SettleIn(shared, hold, actual))
        return True

    def _settle_locals(self, actual: Charge) -> bool:
        """Mark settled and settle the in-memory accounts; ``False`` if already settled."""
        with LEDGER_LOCK:
            if self._settled:
                return False
            self._settled = True
            if self._locals:
                values = actual.values()
                held = self._held
                for account in self._locals:
                    account.settle_locked(held, values)
        return True

    @property
    def in_store(self) -> bool:
        """Whether settling makes a round trip to a shared store (an async caller then
        awaits :meth:`asettle`; otherwise :meth:`settle` is the whole, local, step)."""
        return bool(self._shared) and not self._settled

    def release(self) -> bool:
        """Give the whole reservation back: the call never reached the provider."""
        return self.settle(ZERO)

    async def arelease(self) -> bool:
        """The async twin of :meth:`release`."""
        return await self.asettle(ZERO)


def _snapshot(b: Budget) -> Snapshot:
    """Under LEDGER_LOCK: the budget's account as known without a round trip."""
    return b._local.snapshot_locked() if b._local is not None else b._account.snapshot()


def _violations(
    budgets: tuple[Budget, ...], need: Charge, unbounded: tuple[str, ...]
) -> list[tuple[Budget, str]]:
    """Under LEDGER_LOCK: every (budget, limit) that ``need`` would break."""
    bad: list[tuple[Budget, str]] = []
    for b in budgets:
        snap = _snapshot(b)
        used = snap.spent + snap.reserved
        for _, limit, cap in b._caps:
            have = used.get(limit)
            if have + need.get(limit) > cap or (have >= cap and limit in unbounded):
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
        snap = _snapshot(b)
        used = snap.spent + snap.reserved
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
        Decimal(b.limits["usd"]) - _snapshot(b).spent.usd - _snapshot(b).reserved.usd
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


@dataclass(frozen=True, slots=True)
class _ReserveIn:
    """A plan's step: reserve ``need`` in a shared budget's account (one round trip)."""

    account: Account
    budget: Budget
    need: Charge
    unbounded: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _SettleIn:
    """A plan's step: settle a shared account's hold to ``actual`` (never raises)."""

    account: Account
    hold: object
    actual: Charge


_Step = _ReserveIn | _SettleIn
_Plan = Generator[_Step, object, Reservation]


def _carry_out(step: _Step) -> object:
    if type(step) is _SettleIn:
        step.account.settle(step.hold, step.actual)
        return None
    assert type(step) is _ReserveIn
    return step.account.reserve(step.budget, step.need, step.unbounded)


async def _acarry_out(step: _Step) -> object:
    """A step awaited through the account's async methods, found structurally (an
    account without them is called synchronously)."""
    if type(step) is _SettleIn:
        asettle = getattr(step.account, "asettle", None)
        if asettle is None:
            step.account.settle(step.hold, step.actual)
        else:
            await asettle(step.hold, step.actual)
        return None
    assert type(step) is _ReserveIn
    areserve_ = getattr(step.account, "areserve", None)
    if areserve_ is None:
        return step.account.reserve(step.budget, step.need, step.unbounded)
    held: object = await areserve_(step.budget, step.need, step.unbounded)
    return held


def touches_store(budgets: tuple[Budget, ...], replacing: Reservation | None = None) -> bool:
    """Whether reserving in ``budgets`` (taking ``replacing`` over) makes a round trip to
    a shared store: an async caller then awaits :func:`areserve`; otherwise
    :func:`reserve` is one local step and there is nothing to await."""
    if replacing is not None and replacing.in_store:
        return True
    for b in budgets:  # noqa: SIM110 - no generator on the in-memory path
        if b._local is None:
            return True
    return False


def reserve(
    demand: Demand,
    budgets: tuple[Budget, ...] | None = None,
    *,
    replacing: Reservation | None = None,
) -> Reservation:
    """Reserve ``demand``'s worst case in every active budget (or in ``budgets``).

    Raises :class:`BudgetExceeded` when it does not fit and no ``clamp`` budget can
    shrink it to a useful size (or ``BudgetUnavailable`` when a shared budget's store
    cannot be reached and its ledger fails closed); returns a reservation whose
    ``clamp`` says the new caps when a budget shrank the call.

    ``replacing`` is an unsettled reservation this one takes over: released when the
    new one is held, kept whole when the new one is refused. An enclosing call hands
    its reservation to the provider call it makes this way. In in-process budgets the
    hand-over is one step under the ledger lock, so no other call can take the room in
    between and the two never hold it twice; in a shared budget the new reservation is
    made first and the old one returned after, so near the cap the hand-over may be
    refused where an atomic one would not (it never overshoots).
    """
    held = _begin(demand, budgets, replacing)
    return held if isinstance(held, Reservation) else drive(held, _carry_out, catch=BaseException)


async def areserve(
    demand: Demand,
    budgets: tuple[Budget, ...] | None = None,
    *,
    replacing: Reservation | None = None,
) -> Reservation:
    """The async twin of :func:`reserve`: a shared store's round trips are awaited
    (through its accounts' ``areserve`` / ``asettle``), never blocking the event loop.
    A cancellation while a store answers gives back everything the call held."""
    held = _begin(demand, budgets, replacing)
    if isinstance(held, Reservation):
        return held
    return await adrive(held, _acarry_out, catch=BaseException)


def _begin(
    demand: Demand, budgets: tuple[Budget, ...] | None, replacing: Reservation | None
) -> Reservation | _Plan:
    """Reserve in the in-memory budgets; the reservation when that is all, else the
    plan of the shared stores' round trips that completes it."""
    chain = active_budgets() if budgets is None else _unique(budgets)
    handed = replacing if replacing is not None and not replacing._settled else None
    if not chain:
        unbudgeted = Reservation((), ZERO, None, "unbudgeted")
        if handed is None or not handed._settle_locals(ZERO) or not handed._shared:
            return unbudgeted
        return _complete(unbudgeted, chain, demand, handed, [])  # its stores: a plan
    for b in chain:
        if b._started is None:
            b.start()
        if b.deadline is not None:
            left = b.time_left()
            if left is not None and left <= 0:
                with LEDGER_LOCK:
                    raise b._refusal("deadline", ZERO)
    taken: list[bool] = []  # set once the hand-over released the enclosing call's room
    try:
        held = _reserve(chain, demand, retried=False, handing=handed, taken=taken)
    except BaseException:
        _keep_whole(handed, taken)
        raise
    if isinstance(held, Reservation) and (handed is None or not handed._shared):
        return held
    return _complete(held, chain, demand, handed, taken)


def _complete(
    held: Reservation | _Plan,
    chain: tuple[Budget, ...],
    demand: Demand,
    handed: Reservation | None,
    taken: list[bool],
) -> _Plan:
    """The rest of a reservation that touches a shared store, as a plan."""
    try:
        if not isinstance(held, Reservation):
            try:
                held = yield from held
            except _SharedRefusal:
                # A shared budget refused on numbers fresher than this process had: a
                # clamp policy in the chain gets one more try, sized on them.
                again = _reserve(chain, demand, retried=True, handing=handed, taken=taken)
                held = again if isinstance(again, Reservation) else (yield from again)
    except BaseException:
        _keep_whole(handed, taken)
        raise
    if handed is not None:
        for store, hold in handed._shared:
            yield _SettleIn(store, hold, ZERO)
    assert isinstance(held, Reservation)
    return held


def _keep_whole(handed: Reservation | None, taken: list[bool]) -> None:
    if handed is not None and taken:
        with LEDGER_LOCK:  # refused: the enclosing call keeps its reservation whole
            handed._settled = False
            for account in handed._locals:
                account.hold(handed._held)


class _SharedRefusal(BudgetExceeded):
    """A shared budget's store refused a reservation its last snapshot allowed, and a
    ``clamp`` budget of the chain may shrink the call to fit the fresh numbers."""


def _reserve(
    chain: tuple[Budget, ...],
    demand: Demand,
    *,
    retried: bool,
    handing: Reservation | None = None,
    taken: list[bool] | None = None,
) -> Reservation | _Plan:
    unbounded = demand.unbounded()
    need = demand.charge(demand.max_output_tokens, demand.max_reasoning_tokens)
    values = need.values()
    locals_: list[MemoryAccount] = []
    shared: list[Budget] = []
    clamp: Clamp | None = None
    outcome = "ok"
    with LEDGER_LOCK:
        if handing is not None and not handing._settled and taken is not None:
            # The hand-over: the enclosing call's room is given back in the same locked
            # step that takes it (re-held by reserve() if this one is refused).
            handing._settled = True
            taken.append(True)
            for given in handing._locals:
                given.settle_locked(handing._held, _NOTHING)
        fits = True
        for b in chain:
            account = b._local
            if account is None:
                shared.append(b)
            else:
                locals_.append(account)
                if fits and b._caps and account.over(b._caps, values, unbounded) is not None:
                    fits = False
        # Shared budgets are judged by their store, except on a retry after one refused:
        # then their snapshots are fresh from that refusal and size the clamp.
        if not fits or (retried and _violations(tuple(shared), need, unbounded)):
            judged = chain if retried else tuple(b for b in chain if b._local is not None)
            need, clamp = _clamped(judged, demand, need, unbounded)
            values = need.values()
            outcome = "clamped"
        for account in locals_:
            account.hold(values)
    if not shared:
        return Reservation(chain, need, clamp, outcome, tuple(locals_), (), values)
    return _hold_shared(
        chain, demand, retried, shared, locals_, need, values, unbounded, clamp, outcome
    )


def _hold_shared(
    chain: tuple[Budget, ...],
    demand: Demand,
    retried: bool,
    shared: list[Budget],
    locals_: list[MemoryAccount],
    need: Charge,
    values: tuple[int | Decimal, ...],
    unbounded: tuple[str, ...],
    clamp: Clamp | None,
    outcome: str,
) -> _Plan:
    """Hold ``need`` in each shared budget, one round trip each, after the in-memory
    ones were held; a refusal (or a cancellation) gives back everything held."""
    held: list[tuple[Account, object]] = []
    try:
        for b in shared:
            held.append((b._account, (yield _ReserveIn(b._account, b, need, unbounded))))
    except BaseException as exc:
        with LEDGER_LOCK:
            for account in locals_:
                account.settle_locked(values, _NOTHING)
        for store, hold in held:
            yield _SettleIn(store, hold, ZERO)
        if (
            isinstance(exc, BudgetExceeded)
            and not retried
            and demand.clampable
            and any(b.policy == "clamp" for b in chain)
            and exc.limit != "calls"
        ):
            raise _SharedRefusal(
                exc.limit,
                limit_value=exc.limit_value,
                spent=exc.spent,
                reserved=exc.reserved,
                needed=exc.needed,
                budget_name=exc.budget_name,
            ) from exc
        raise
    return Reservation(chain, need, clamp, outcome, tuple(locals_), tuple(held), values)


def _clamped(
    chain: tuple[Budget, ...], demand: Demand, need: Charge, unbounded: tuple[str, ...]
) -> tuple[Charge, Clamp]:
    """Under LEDGER_LOCK: the charge (and new caps) of ``demand`` shrunk to fit every
    budget, or the refusal when it cannot usefully shrink."""
    bad = _violations(chain, need, unbounded)
    for b, limit in bad:
        if (
            b.policy == "raise"
            or limit == "calls"
            or not demand.clampable
            or (limit == "usd" and demand.worst_usd is None)
        ):
            raise b._refusal(limit, need)
    out, thinking = _largest_output(chain, demand)
    floor = max(demand.min_output_tokens, *(b.min_output_tokens for b in chain))
    # A thinking budget the clamp shrank to nothing is refused; one that was zero
    # to begin with (thinking off) stays zero while the output shrinks.
    thinking_gone = thinking is not None and thinking < 1 <= (demand.max_reasoning_tokens or 0)
    if out is None or out < floor or thinking_gone:
        b, limit = bad[0]
        raise b._refusal(limit, need)
    clamped = replace(demand, max_output_tokens=out, max_reasoning_tokens=thinking)
    need = clamped.charge(out, thinking)
    still_bad = _violations(chain, need, clamped.unbounded())
    if still_bad:  # a bound the clamp cannot move (e.g. the input alone is too large)
        b, limit = still_bad[0]
        raise b._refusal(limit, need)
    return need, Clamp(out, thinking)
