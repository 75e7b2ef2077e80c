"""A ledger on Redis (or Valkey): one budget shared by many processes and machines.

    ledger = RedisLedger("redis://localhost:6379/0")
    with tcc_plugin.budget(usd=50, key="team-a/daily", period="daily", ledger=ledger):
        ...

Reserve, settle and release are one atomic round trip each (server-side Lua scripts,
loaded once and called by digest; reloaded after a server restart). A reservation is a
lease: this process renews it while the call runs, and a worker that dies mid-call lets
it expire, returning what it held. When Redis cannot be reached the ledger fails closed
(:class:`~tcc_plugin.BudgetUnavailable`) unless ``fail_open`` gives a local cap per
process; a settlement that cannot reach Redis is retried, then journalled and replayed
when Redis returns, so no spend is lost.

Async calls reserve and settle through a ``redis.asyncio`` client (one per event loop:
a redis.asyncio pool belongs to the loop it was made in), so they never block the loop
on Redis. The logic of each step is written once, as a plan that yields the scripts to
run (and the pauses between settle attempts), carried out by the sync client or awaited
on the asyncio one. Lease renewal stays on this process's background thread (sync
client): it must go on while a loop is busy or blocked, and it costs one round trip per
budget every ``lease_ttl / 3`` whatever the number of calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

try:
    import redis
    import redis.asyncio
    import redis.asyncio.retry
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "tcc_plugin.integrations.redis_ledger needs redis-py: pip install 'tcc-plugin[redis]'"
    ) from exc

from tcc_plugin.errors import BudgetExceeded, BudgetUnavailable, LedgerConflict
from tcc_plugin.integrations import redis_scripts
from tcc_plugin.ledger import (
    DIMENSIONS,
    LEDGER_LOCK,
    Charge,
    MemoryAccount,
    Snapshot,
)
from tcc_plugin.plans import adrive, drive

if TYPE_CHECKING:
    from tcc_plugin.budget import Budget

__all__ = ["RedisAccount", "RedisLedger"]

logger = logging.getLogger("tcc_plugin")

_PICO = Decimal(10) ** 12  # USD is kept in units of 1e-12 dollars, exact integers
_KEY = re.compile(r"^[\w./:@+=-]{1,200}$")
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)
_ZERO_SNAPSHOT = Snapshot(Charge(), Charge(), 0)
_RELEASE = Charge()


def _pico(usd: Decimal) -> int:
    """USD as whole 1e-12 dollars, rounded up: a reservation never under-holds."""
    return int((usd * _PICO).to_integral_value(ROUND_CEILING))


def _encode(charge: Charge) -> list[str]:
    tt, ot, rt, usd, calls = charge.values()
    return [str(tt), str(ot), str(rt), str(_pico(usd)), str(calls)]


def _joined(charge: Charge) -> str:
    """The five amounts as the scripts take them: one comma-separated argument."""
    tt, ot, rt, usd, calls = charge.values()
    return f"{tt},{ot},{rt},{_pico(usd)},{calls}"


class _LeaseIds:
    """Lease ids unique across processes and machines: a random prefix per process
    (drawn again in a forked child) and a counter (uuid4 costs a system call each)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = uuid.uuid4().hex[:20]
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):x}"


_lease_ids = _LeaseIds()


def _decode(values: list[Any]) -> Charge:
    tt, ot, rt, usd, calls = (v.decode() if isinstance(v, bytes) else str(v) for v in values)
    return Charge(int(tt), int(ot), int(rt), Decimal(usd).scaleb(-12), int(calls))


def _state(reply: list[Any]) -> Snapshot:
    """The snapshot at the end of a script's reply: spent x5, held x5, in flight."""
    tail = reply[-11:]
    return Snapshot(_decode(tail[:5]), _decode(tail[5:10]), int(tail[10]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_SCRIPTS = {
    "reserve": redis_scripts.RESERVE,
    "settle": redis_scripts.SETTLE,
    "renew": redis_scripts.RENEW,
    "read": redis_scripts.READ,
}


@dataclass(frozen=True, slots=True)
class _Eval:
    """A plan's step: run one of the ledger's scripts (one round trip)."""

    script: str
    keys: Sequence[str]
    args: Sequence[str | int]


@dataclass(frozen=True, slots=True)
class _Pause:
    """A plan's step: wait before the next attempt."""

    seconds: float


_Plan = Generator[_Eval | _Pause, Any, Any]


class _AsyncSide:
    """The ledger's asyncio client on one event loop, and its scripts."""

    __slots__ = ("client", "closer", "scripts")

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        self.closer: AsyncGenerator[None, None] | None = None

    async def run(self, step: _Eval | _Pause) -> Any:
        if isinstance(step, _Pause):
            await asyncio.sleep(step.seconds)
            return None
        return await self.scripts[step.script](keys=step.keys, args=step.args)


async def _close_with_loop(
    ledger: RedisLedger, loop: object, side: _AsyncSide
) -> AsyncGenerator[None, None]:
    """Closes ``side``'s client when its loop shuts down: ``asyncio.run`` (any runner
    calling ``loop.shutdown_asyncgens()``) finalises the async generators still open."""
    try:
        yield
    finally:
        with ledger._lock:
            if ledger._sides.get(loop) is side:
                del ledger._sides[loop]
        await side.client.aclose()


@dataclass(frozen=True, slots=True)
class _Hold:
    base: str
    lease: str
    need: Charge
    offline: bool = False


@dataclass(slots=True)
class _Entry:
    """A settlement Redis has not seen yet."""

    base: str
    lease: str
    actual: Charge
    offline: RedisAccount | None = None  # the account whose local cap it counts against

    def to_json(self) -> str:
        return json.dumps({"base": self.base, "lease": self.lease, "actual": _encode(self.actual)})


class RedisLedger:
    """Budgets kept in Redis, shared by every process that names the same key.

    ``url`` is a ``redis://``, ``rediss://`` or ``unix://`` URL (or pass a ``client``,
    a ``redis.Redis``). Async calls use a ``redis.asyncio`` client made from the same URL
    and options, one per event loop (or what ``async_client()`` returns, called once per
    loop; with ``client=`` and no ``async_client``, async calls use the sync client and
    block their loop for each round trip). ``lease_ttl`` is how long a reservation
    outlives a worker that stopped renewing it. ``fail_open`` (e.g.
    ``{"usd": "0.50", "calls": 20}``) lets calls run while Redis is unreachable, under
    that cap per budget in this process; without it the ledger fails closed.
    ``journal`` is a file keeping settlements not yet delivered across a restart of
    this process (else they are kept in memory).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.Redis | None = None,
        async_client: Callable[[], redis.asyncio.Redis] | None = None,
        prefix: str = "tcc:budget",
        lease_ttl: float = 30.0,
        fail_open: Mapping[str, int | str | Decimal] | None = None,
        journal: str | os.PathLike[str] | None = None,
        settle_attempts: int = 3,
        socket_timeout: float = 2.0,
        keep_settled: float = 7 * 86400.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("RedisLedger needs exactly one of url= and client=")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be > 0 seconds, got {lease_ttl!r}")
        if settle_attempts < 1:
            raise ValueError(f"settle_attempts must be >= 1, got {settle_attempts!r}")
        if client is None:
            assert url is not None
            if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    f"malformed Redis URL {_redact(str(url))!r}: expected "
                    "redis://[user:password@]host[:port][/db], rediss://... or unix:///path"
                )
            try:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_timeout,
                    # No blind resends: whether a lost reply was held is decided here
                    # (a reserve is journalled for release, a settle retried by lease).
                    retry=Retry(NoBackoff(), 0),
                )
            except ValueError as exc:
                raise ValueError(f"malformed Redis URL {_redact(url)!r}: {exc}") from None
            if async_client is None:
                async_client = _async_factory(url, socket_timeout)
        self.client = client
        self._async_client = async_client
        self._sides: dict[object, _AsyncSide] = {}  # event loop -> its asyncio client
        self._warned_sync = False
        kwargs = client.connection_pool.connection_kwargs
        self.where = _redact(url) if url else f"redis at {kwargs.get('host')}:{kwargs.get('port')}"
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.fail_open = _caps(fail_open) if fail_open is not None else None
        self.settle_attempts = settle_attempts
        self.keep_settled_ms = int(keep_settled * 1000)
        self._keep_arg = str(self.keep_settled_ms)
        self._ttl_arg = str(int(lease_ttl * 1000))
        self._keys: dict[str, tuple[str, ...]] = {}  # base -> its four keys (built once)
        self._now = now or (lambda: datetime.now(dt_timezone.utc))
        self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
        self._lock = threading.Lock()
        self._replaying = threading.Lock()
        self._leases: dict[str, dict[str, None]] = {}  # base -> live lease ids
        self._journal: list[_Entry] = []
        self._journal_path = Path(journal) if journal is not None else None
        self._renewer: threading.Thread | None = None
        self._renewer_pid = 0
        self._stop = threading.Event()
        if self._journal_path is not None and self._journal_path.exists():
            for line in self._journal_path.read_text().splitlines():
                if line.strip():
                    data = json.loads(line)
                    self._journal.append(
                        _Entry(data["base"], data["lease"], _decode(data["actual"]))
                    )

    def __repr__(self) -> str:
        return f"RedisLedger({self.where!r})"

    def account(self, budget: Budget) -> RedisAccount:
        return RedisAccount(self, budget)

    # -- carrying out plans ---------------------------------------------------------------
    def _run(self, step: _Eval | _Pause) -> Any:
        if isinstance(step, _Pause):
            time.sleep(step.seconds)
            return None
        return self._scripts[step.script](keys=step.keys, args=step.args)

    async def _side(self) -> _AsyncSide | None:
        """This loop's asyncio client (made on first use; ``None``: none configured)."""
        loop = asyncio.get_running_loop()
        side = self._sides.get(loop)
        if side is not None or self._async_client is None:
            if side is None and not self._warned_sync:
                self._warned_sync = True
                logger.warning(
                    "tcc_plugin: RedisLedger(client=...) without async_client=: async calls "
                    "use the sync client and block their event loop on each round trip"
                )
            return side
        side = _AsyncSide(self._async_client())
        with self._lock:
            for old in [k for k in self._sides if getattr(k, "is_closed", lambda: False)()]:
                del self._sides[old]  # a loop closed without shutting down its async gens
            self._sides[loop] = side
        closer = _close_with_loop(self, loop, side)
        await closer.__anext__()
        side.closer = closer
        return side

    async def aclose(self) -> None:
        """Deliver what the journal holds (if Redis answers) and close this event loop's
        asyncio client (``asyncio.run`` closes it anyway when the loop ends)."""
        if self._journal:
            await self.areplay()
        side = self._sides.get(asyncio.get_running_loop())
        if side is not None and side.closer is not None:
            await side.closer.aclose()

    # -- the store ------------------------------------------------------------------------
    def ping(self) -> None:
        """Check now that Redis answers and accepts our credentials."""
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise self._unavailable(None, exc) from exc

    def keys(self, base: str) -> tuple[str, ...]:
        """The four keys of a budget period (``base`` may carry its expiry after '@')."""
        found = self._keys.get(base)
        if found is None:
            if len(self._keys) > 1024:  # old periods' bases
                self._keys.clear()
            tag = base.partition("@")[0]
            found = (f"{tag}:acct", f"{tag}:leases", f"{tag}:holds", f"{tag}:done")
            self._keys[base] = found
        return found

    def _unavailable(self, name: str | None, exc: BaseException) -> BudgetUnavailable:
        if isinstance(exc, redis.AuthenticationError) or (
            isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))
        ):
            reason = f"Redis refused our credentials ({exc})"
        elif isinstance(exc, _UNREACHABLE):
            reason = f"Redis is unreachable ({type(exc).__name__}: {exc})"
        else:
            reason = f"Redis answered with an error ({type(exc).__name__}: {exc})"
        return BudgetUnavailable(name, self.where, reason)

    # -- settlement journal ---------------------------------------------------------------
    @property
    def pending(self) -> int:
        """How many settlements wait in the journal for Redis to return."""
        with self._lock:
            return len(self._journal)

    def _journalize(self, entry: _Entry, *, quiet: bool = False) -> None:
        with self._lock:
            self._journal.append(entry)
            if self._journal_path is not None:
                with self._journal_path.open("a") as f:
                    f.write(entry.to_json() + "\n")
        self._ensure_renewer()
        if quiet:
            return
        logger.warning(
            "tcc_plugin: Redis unreachable at %s; settlement of lease %s journalled for replay",
            self.where,
            entry.lease,
        )

    def replay(self) -> int:
        """Deliver journalled settlements (in order) until one fails; returns how many
        remain. Each is idempotent on the server: none is ever charged twice."""
        left: int = drive(self._replaying_plan(), self._run)
        return left

    async def areplay(self) -> int:
        """The async twin of :meth:`replay` (on this loop's asyncio client)."""
        side = await self._side()
        if side is None:
            return self.replay()
        left: int = await adrive(self._replaying_plan(), side.run)
        return left

    def _replaying_plan(self) -> _Plan:
        if not self._replaying.acquire(blocking=False):
            return self.pending  # another thread is replaying: entries go in order, once
        try:
            return (yield from self._delivering())
        finally:
            self._replaying.release()

    def _delivering(self) -> _Plan:
        with self._lock:
            entries = list(self._journal)
        delivered = 0
        try:
            for entry in entries:
                try:
                    yield _Eval("settle", self.keys(entry.base), self._settle_args(entry))
                except _UNREACHABLE:
                    break
                except redis.RedisError:
                    logger.warning(
                        "tcc_plugin: a journalled settlement was refused by Redis (kept)",
                        exc_info=True,
                    )
                    break
                delivered += 1
                if entry.offline is not None:  # Redis has it now: the local cap frees it
                    with LEDGER_LOCK:
                        spent = entry.offline._offline.spent
                        actual: tuple[int | Decimal, ...] = entry.actual.values()
                        for i in range(5):
                            spent[i] -= actual[i]
        finally:  # also when cut short (cancelled): what was delivered leaves the journal
            with self._lock:
                del self._journal[:delivered]
                if delivered and self._journal_path is not None:
                    self._journal_path.write_text(
                        "".join(e.to_json() + "\n" for e in self._journal)
                    )
                left = len(self._journal)
        return left

    def _settle_args(self, entry: _Entry) -> list[str | int]:
        return [entry.lease, self.keys_ttl(entry.base), self._keep_arg, _joined(entry.actual)]

    def keys_ttl(self, base: str) -> str:
        """How long (ms) the keys of ``base``'s period are kept from now ("0": for ever)."""
        _, _, until = base.partition("@")
        if not until:
            return "0"
        now = self._now().timestamp() * 1000
        return str(max(int(int(until) - now), 1000))

    # -- lease renewal --------------------------------------------------------------------
    def _track(self, base: str, lease: str) -> None:
        with self._lock:
            self._leases.setdefault(base, {})[lease] = None
        self._ensure_renewer()

    def _untrack(self, base: str, lease: str) -> None:
        with self._lock:
            live = self._leases.get(base)
            if live is not None:
                live.pop(lease, None)
                if not live:
                    del self._leases[base]

    def _ensure_renewer(self) -> None:
        pid = os.getpid()
        if self._renewer is not None and self._renewer_pid == pid and self._renewer.is_alive():
            return
        with self._lock:
            if self._renewer is not None and self._renewer_pid == pid and self._renewer.is_alive():
                return
            self._renewer_pid = pid
            self._renewer = threading.Thread(
                target=self._renew_forever, name="tcc-redis-ledger-renewer", daemon=True
            )
            self._renewer.start()

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.lease_ttl / 3):
            try:
                self.renew()
            except Exception:  # the renewer never dies of an error: leases would strand
                logger.warning("tcc_plugin: lease renewal failed (will retry)", exc_info=True)

    def renew(self) -> int:
        """Extend every live lease of this process (the renewer does this every
        ``lease_ttl / 3`` seconds), and replay the journal; returns leases renewed."""
        if self._journal:
            self.replay()
        with self._lock:
            live = {base: list(ids) for base, ids in self._leases.items()}
        renewed = 0
        for base, ids in live.items():
            try:
                renewed += int(
                    self._scripts["renew"](
                        keys=self.keys(base), args=[int(self.lease_ttl * 1000), *ids]
                    )
                )
            except _UNREACHABLE:
                return renewed
        return renewed

    def close(self, timeout: float = 5.0) -> None:
        """Stop renewing, deliver what the journal holds (trying for up to ``timeout``
        seconds while Redis is away; what is still undelivered then stays in the journal
        file, if one was given, with a warning), and close."""
        self._stop.set()
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            # Wait for a replay in progress (the renewer's) rather than skip ours: entries
            # journalled after it read the journal would otherwise stay undelivered.
            with self._replaying:
                left = drive(self._delivering(), self._run) if self._journal else 0
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if left:
            logger.warning(
                "tcc_plugin: closing the Redis ledger at %s with %d settlement(s) undelivered%s",
                self.where,
                left,
                f" (kept in {self._journal_path})" if self._journal_path else "",
            )
        self.client.close()

    # -- periods --------------------------------------------------------------------------
    def base(self, key: str, period: str | None, zone: ZoneInfo) -> str:
        """The key prefix of ``key``'s current period (with its expiry, ms, after '@')."""
        tag = f"{self.prefix}:{{{key}}}"
        if period is None:
            return tag
        now = self._now().astimezone(zone)
        if period == "daily":
            start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            end = (start + timedelta(days=1, hours=2)).replace(hour=0)
            label = start.strftime("%Y-%m-%d")
        else:
            start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = (start + timedelta(days=32)).replace(day=1)
            label = start.strftime("%Y-%m")
        # Keys outlive their period by one more, so late settlements still land.
        keep_until = end + (end - start)
        return f"{tag}:{label}@{int(keep_until.timestamp() * 1000)}"


class RedisAccount:
    """One budget's account in a :class:`RedisLedger` (the budget's current period)."""

    def __init__(self, ledger: RedisLedger, budget: Budget) -> None:
        key = budget.key
        if key is None:
            raise ValueError("a budget on a RedisLedger needs key= (its name in Redis)")
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(
                f"budget key {key!r} must be 1-200 characters of letters, digits and "
                "'_ . / : @ + = -' (no spaces or braces)"
            )
        try:
            self.zone = ZoneInfo(budget.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown timezone {budget.timezone!r}") from None
        self.ledger = ledger
        self.key = key
        self.name = budget.name
        self.period = budget.period
        self._caps = [""] * 5
        for i, dim in enumerate(DIMENSIONS):
            if dim in budget.limits:
                cap = budget.limits[dim]
                self._caps[i] = str(_pico(Decimal(cap))) if dim == "usd" else str(cap)
        self._caps_arg = ",".join(self._caps)
        # The last reply's account, decoded when asked for (most are never read: a
        # reserve's is superseded by its settle's).
        self._snap: Snapshot | list[Any] = _ZERO_SNAPSHOT
        self._offline = MemoryAccount()  # what ran while Redis was away (fail_open)

    def __repr__(self) -> str:
        return f"RedisAccount({self.key!r}, {self.ledger.where!r})"

    def _base(self) -> str:
        return self.ledger.base(self.key, self.period, self.zone)

    def snapshot(self) -> Snapshot:
        snap = self._snap
        if isinstance(snap, list):
            snap = _state(snap)
            self._snap = snap
        return snap

    def read(self) -> Snapshot:
        base = self._base()
        try:
            reply = self.ledger._scripts["read"](keys=self.ledger.keys(base))
        except redis.ResponseError as exc:
            raise self._conflict_or_unavailable(exc) from exc
        except redis.RedisError as exc:
            raise self.ledger._unavailable(self.name, exc) from exc
        snap = self._snap = _state(reply)
        return snap

    def reserve(self, budget: Budget, need: Charge, unbounded: tuple[str, ...]) -> object:
        return drive(self._reserving(budget, need, unbounded), self.ledger._run)

    async def areserve(self, budget: Budget, need: Charge, unbounded: tuple[str, ...]) -> object:
        """The async twin of :meth:`reserve` (this loop's asyncio client)."""
        side = await self.ledger._side()
        if side is None:
            return self.reserve(budget, need, unbounded)
        return await adrive(self._reserving(budget, need, unbounded), side.run)

    def _reserving(self, budget: Budget, need: Charge, unbounded: tuple[str, ...]) -> _Plan:
        ledger = self.ledger
        if ledger._journal:
            yield from ledger._replaying_plan()
        base = self._base()
        lease = _lease_ids.next()
        flags = (
            "".join("1" if dim in unbounded else "0" for dim in DIMENSIONS)
            if unbounded
            else "00000"
        )
        args = [lease, ledger._ttl_arg, ledger.keys_ttl(base), self._caps_arg, _joined(need), flags]
        try:
            reply = yield _Eval("reserve", ledger.keys(base), args)
        except GeneratorExit:
            # Cut short (a cancelled task) after the request may have reached Redis:
            # journal its release, so what it may hold returns when the journal replays.
            ledger._journalize(_Entry(base, lease, _RELEASE), quiet=True)
            raise
        except redis.ResponseError as exc:
            raise self._conflict_or_unavailable(exc) from exc
        except redis.RedisError as exc:
            error = ledger._unavailable(self.name, exc)
            if (
                ledger.fail_open is None
                or not isinstance(exc, _UNREACHABLE)
                or isinstance(exc, redis.AuthenticationError)
            ):
                self._release_if_ambiguous(base, lease, exc)
                raise error from exc
            return self._reserve_offline(budget, base, lease, need, unbounded, exc, error)
        tag = _text(reply[0])
        if tag == "conflict":
            dim, stored, given, open_ = (_text(v) for v in reply[1:5])
            raise LedgerConflict(
                f"budget {self.key!r} in {ledger.where}: its {dim} cap is {stored or 'unset'} "
                f"in Redis but {given or 'unset'} here, and {open_} reservations are open; "
                "change a shared cap when no call is in flight (nothing was charged)"
            )
        if tag == "gone":  # only a lease this process gave up on (never a fresh one)
            self._snap = reply
            raise BudgetUnavailable(self.name, ledger.where, f"lease {lease} was released")
        if tag == "refused":
            snap = self._snap = _state(reply)
            raise budget._refusal(_text(reply[1]), need, snap)
        self._snap = reply
        ledger._track(base, lease)
        return _Hold(base, lease, need)

    def _reserve_offline(
        self,
        budget: Budget,
        base: str,
        lease: str,
        need: Charge,
        unbounded: tuple[str, ...],
        cause: redis.RedisError,
        error: BudgetUnavailable,
    ) -> _Hold:
        caps = self.ledger.fail_open or ()
        values = need.values()
        with LEDGER_LOCK:
            limit = self._offline.over(caps, values, unbounded)
            if limit is None:
                self._offline.hold(values)
            else:
                refusal = BudgetExceeded(
                    limit,
                    limit_value=next(c for _, name, c in caps if name == limit),
                    spent=self._offline.spent[DIMENSIONS.index(limit)],
                    reserved=self._offline.reserved[DIMENSIONS.index(limit)],
                    needed=need.get(limit),
                    budget_name=f"{self.name} (local cap while Redis is away)",
                )
        if limit is not None:
            self._release_if_ambiguous(base, lease, cause)
            raise refusal from error
        logger.warning("tcc_plugin: %s; running under the local fail_open cap", error)
        return _Hold(base, lease, need, offline=True)

    def _release_if_ambiguous(self, base: str, lease: str, exc: BaseException) -> None:
        """A reservation lost on the way back (not refused at connect) may have been
        held by Redis: journal its release, so it returns when Redis does rather than
        when its lease expires. (Settling an offline call's lease later does the same.)"""
        if isinstance(exc, redis.ConnectionError) and "connecting to" in str(exc):
            return  # the request never reached Redis
        self.ledger._journalize(_Entry(base, lease, _RELEASE), quiet=True)

    def settle(self, hold: object, actual: Charge) -> None:
        drive(self._settling(hold, actual), self.ledger._run)

    async def asettle(self, hold: object, actual: Charge) -> None:
        """The async twin of :meth:`settle` (this loop's asyncio client)."""
        side = await self.ledger._side()
        if side is None:
            self.settle(hold, actual)
        else:
            await adrive(self._settling(hold, actual), side.run)

    def _settling(self, hold: object, actual: Charge) -> _Plan:
        assert isinstance(hold, _Hold)
        ledger = self.ledger
        entry = _Entry(hold.base, hold.lease, actual)
        if hold.offline:
            with LEDGER_LOCK:
                # What ran offline counts against the local cap until Redis has it.
                self._offline.settle_locked(hold.need.values(), actual.values())
            entry.offline = self
            ledger._journalize(entry)
            return
        ledger._untrack(hold.base, hold.lease)
        keys = ledger.keys(hold.base)
        try:
            for attempt in range(ledger.settle_attempts):
                try:
                    reply = yield _Eval("settle", keys, ledger._settle_args(entry))
                except _UNREACHABLE:
                    if attempt + 1 < ledger.settle_attempts:
                        yield _Pause(0.05 * 2**attempt)
                    continue
                except Exception:
                    logger.warning(
                        "tcc_plugin: Redis refused a settlement of budget %r (journalled)",
                        self.key,
                        exc_info=True,
                    )
                    break
                self._snap = reply
                return
        except GeneratorExit:
            # Cut short (a cancelled task): the journal delivers it, once (by lease id).
            ledger._journalize(entry, quiet=True)
            raise
        ledger._journalize(entry)

    def _conflict_or_unavailable(self, exc: redis.ResponseError) -> Exception:
        if "WRONGTYPE" in str(exc):
            return LedgerConflict(
                f"budget {self.key!r} in {self.ledger.where}: a key under "
                f"{self.ledger.prefix}:{{{self.key}}} holds a value of another type; "
                "choose another key or prefix (nothing was charged)"
            )
        return self.ledger._unavailable(self.name, exc)


def _caps(limits: Mapping[str, int | str | Decimal]) -> tuple[tuple[int, str, int | Decimal], ...]:
    caps: list[tuple[int, str, int | Decimal]] = []
    for name, value in limits.items():
        if name not in DIMENSIONS:
            raise ValueError(f"fail_open: unknown limit {name!r} (one of {', '.join(DIMENSIONS)})")
        try:
            amount = Decimal(str(value)) if name == "usd" else int(value)
        except (InvalidOperation, ValueError):
            raise ValueError(f"fail_open: {name} must be a number, got {value!r}") from None
        if amount < 0:
            raise ValueError(f"fail_open: {name} must be >= 0, got {value!r}")
        caps.append((DIMENSIONS.index(name), name, amount))
    return tuple(sorted(caps))


def _async_factory(url: str, timeout: float) -> Callable[[], redis.asyncio.Redis]:
    def make() -> redis.asyncio.Redis:
        return redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=redis.asyncio.retry.Retry(NoBackoff(), 0),  # as the sync client: no resends
        )

    return make


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)
