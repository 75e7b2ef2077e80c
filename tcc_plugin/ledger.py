"""Ledgers: where a :class:`~tcc_plugin.Budget` keeps its accounts.

A budget's account holds what settled calls have *spent* and what calls in flight hold
*reserved*, in every budgeted dimension. The in-memory ledger (the default) keeps them
in this process: every in-memory account moves under one lock, so a call's reservation
across a whole chain of nested budgets is atomic. A shared ledger (the Redis ledger in
``tcc_plugin.integrations.redis_ledger``) keeps them in a store that many processes
reach; it implements :class:`Ledger` and :class:`Account`, and the budget chain reserves
in its accounts one round trip each, after the in-memory ones, undoing what it held when
one refuses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tcc_plugin.usage import Usage

if TYPE_CHECKING:
    from tcc_plugin.budget import Budget

__all__ = [
    "DIMENSIONS",
    "LEDGER_LOCK",
    "MEMORY",
    "Account",
    "AsyncAccount",
    "Charge",
    "Ledger",
    "MemoryAccount",
    "MemoryLedger",
    "Snapshot",
]

DIMENSIONS = ("total_tokens", "output_tokens", "reasoning_tokens", "usd", "calls")
_INDEX = {name: i for i, name in enumerate(DIMENSIONS)}

# One lock for every in-memory account: a reservation touches all budgets of a chain
# atomically, and chains may order the same budgets differently, so per-budget locks
# could deadlock. Nothing blocking ever runs under it.
LEDGER_LOCK = threading.Lock()


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
        return charge(
            usage.input + usage.output,
            usage.output,
            usage.reasoning,
            usd if usd is not None else _ZERO_USD,
            calls,
        )

    @classmethod
    def from_values(cls, values: list[int | Decimal] | tuple[int | Decimal, ...]) -> Charge:
        """The charge whose dimensions, in :data:`DIMENSIONS` order, are ``values``."""
        tt, ot, rt, usd, calls = values
        return cls(int(tt), int(ot), int(rt), Decimal(usd), int(calls))

    def values(self) -> tuple[int, int, int, Decimal, int]:
        """The dimensions in :data:`DIMENSIONS` order."""
        return (self.total_tokens, self.output_tokens, self.reasoning_tokens, self.usd, self.calls)

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


_ZERO_USD = Decimal(0)
ZERO = Charge()

# A frozen dataclass sets each field through object.__setattr__ (about 1 us for a
# Charge); the hot path (two charges per budgeted call) sets the slots directly.
_new = object.__new__
_set_tt = Charge.__dict__["total_tokens"].__set__
_set_ot = Charge.__dict__["output_tokens"].__set__
_set_rt = Charge.__dict__["reasoning_tokens"].__set__
_set_usd = Charge.__dict__["usd"].__set__
_set_calls = Charge.__dict__["calls"].__set__


def charge(total: int, output: int, reasoning: int, usd: Decimal, calls: int) -> Charge:
    """``Charge(total, output, reasoning, usd, calls)``, built faster (no validation)."""
    c: Charge = _new(Charge)
    _set_tt(c, total)
    _set_ot(c, output)
    _set_rt(c, reasoning)
    _set_usd(c, usd)
    _set_calls(c, calls)
    return c


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account at one moment: spent, reserved, and how many calls hold a reservation."""

    spent: Charge
    reserved: Charge
    in_flight: int


@runtime_checkable
class Account(Protocol):
    """The accounts of one budget in a ledger.

    ``reserve`` holds ``need`` if it fits under ``limits`` (atomically; a dimension
    named in ``unbounded`` is refused only once it is already used up), raising
    :class:`~tcc_plugin.BudgetExceeded` when it does not fit, and returns a hold;
    ``settle`` replaces a hold by what the call really used and never raises (a shared
    ledger that cannot reach its store journals the settlement and replays it later).
    """

    def snapshot(self) -> Snapshot:
        """The account as last seen (a shared ledger: as of its last round trip)."""
        ...

    def read(self) -> Snapshot:
        """The account now (a shared ledger makes a round trip)."""
        ...

    def reserve(self, budget: Budget, need: Charge, unbounded: tuple[str, ...]) -> object: ...

    def settle(self, hold: object, actual: Charge) -> None: ...


@runtime_checkable
class AsyncAccount(Account, Protocol):
    """An :class:`Account` with an asyncio path (optional: the budget chain finds the
    methods structurally). Async calls reserve and settle through them, so a shared
    store's round trip never blocks the event loop; same contract as the sync twins."""

    async def areserve(
        self, budget: Budget, need: Charge, unbounded: tuple[str, ...]
    ) -> object: ...

    async def asettle(self, hold: object, actual: Charge) -> None: ...


class Ledger(Protocol):
    """A place that keeps budgets' accounts: ``account(budget)`` opens one."""

    def account(self, budget: Budget) -> Account: ...


class MemoryAccount:
    """An account kept in this process, under :data:`LEDGER_LOCK`.

    The budget chain drives it directly under the lock (``over``, ``hold``,
    ``settle_locked``), so all in-memory budgets of a chain move together."""

    __slots__ = ("in_flight", "reserved", "spent")

    def __init__(self) -> None:
        self.spent: list[int | Decimal] = [0, 0, 0, _ZERO_USD, 0]
        self.reserved: list[int | Decimal] = [0, 0, 0, _ZERO_USD, 0]
        self.in_flight = 0

    # -- under LEDGER_LOCK ----------------------------------------------------------------
    def over(
        self,
        caps: tuple[tuple[int, str, int | Decimal], ...],
        need: tuple[int | Decimal, ...],
        unbounded: tuple[str, ...],
    ) -> str | None:
        """The first limit ``need`` would break, else ``None``."""
        spent, reserved = self.spent, self.reserved
        for i, name, cap in caps:
            have = spent[i] + reserved[i]
            if have + need[i] > cap or (have >= cap and name in unbounded):
                return name
        return None

    def hold(self, need: tuple[int | Decimal, ...]) -> None:
        # Unrolled: this runs on every budgeted call.
        r = self.reserved
        r[0] += need[0]
        r[1] += need[1]
        r[2] += need[2]
        r[3] += need[3]
        r[4] += need[4]
        self.in_flight += 1

    def settle_locked(
        self, held: tuple[int | Decimal, ...], actual: tuple[int | Decimal, ...]
    ) -> None:
        r, s = self.reserved, self.spent
        r[0] -= held[0]
        r[1] -= held[1]
        r[2] -= held[2]
        r[3] -= held[3]
        r[4] -= held[4]
        s[0] += actual[0]
        s[1] += actual[1]
        s[2] += actual[2]
        s[3] += actual[3]
        s[4] += actual[4]
        self.in_flight -= 1

    def used_locked(self, limit: str) -> int | Decimal:
        i = _INDEX[limit]
        return self.spent[i] + self.reserved[i]

    def snapshot_locked(self) -> Snapshot:
        return Snapshot(
            Charge.from_values(self.spent), Charge.from_values(self.reserved), self.in_flight
        )

    # -- the Account protocol (each takes the lock) ---------------------------------------
    def snapshot(self) -> Snapshot:
        with LEDGER_LOCK:
            return self.snapshot_locked()

    def read(self) -> Snapshot:
        return self.snapshot()

    def reserve(self, budget: Budget, need: Charge, unbounded: tuple[str, ...]) -> object:
        values = need.values()
        with LEDGER_LOCK:
            limit = self.over(budget._caps, values, unbounded)
            if limit is not None:
                raise budget._refusal(limit, need)
            self.hold(values)
        return values

    def settle(self, hold: object, actual: Charge) -> None:
        assert isinstance(hold, tuple)
        with LEDGER_LOCK:
            self.settle_locked(hold, actual.values())


class MemoryLedger:
    """The default ledger: accounts in this process's memory."""

    def account(self, budget: Budget) -> MemoryAccount:
        if budget.period is not None:
            raise ValueError(
                f"a budget with period={budget.period!r} needs a shared ledger "
                "(e.g. RedisLedger): an in-memory budget lives as long as its process"
            )
        return MemoryAccount()

    def __repr__(self) -> str:
        return "MemoryLedger()"


MEMORY = MemoryLedger()
