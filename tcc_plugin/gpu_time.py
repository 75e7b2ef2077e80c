"""GPU-hour prices shared among the requests in flight on one server.

A self-hosted server costs ``usd_per_hour`` whatever it serves; while ``k`` requests
run on it at once, each is charged a ``1/k`` share of that time. :class:`InFlightMeter`
records how many requests are in flight on a server over time (the client marks each
request's start and end), and :class:`SharedGpuHourPrice` charges a call
``usd_per_hour / 3600 x integral of 1/k(t) dt`` over the call's wall time, so the costs
of concurrent calls add up to the server's cost over the same period.

The lifecycle prices a call with ``price.cost(usage, seconds=wall_time)`` when it ends;
the meter, asked then, knows the in-flight count over that interval. Nothing here
decides budgets or records spans.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Final

from tcc_plugin.usage import Usage

__all__ = ["InFlightMeter", "SharedGpuHourPrice", "meter_for"]

_SECONDS_PER_HOUR: Final = Decimal(3600)


class InFlightMeter:
    """The number of requests in flight on one server, as a step function of time.

    ``clock`` must be the lifecycle's clock (``time.perf_counter``). History older than
    ``horizon`` seconds is dropped (a call longer than that is charged as if alone
    before the horizon)."""

    def __init__(
        self, clock: Callable[[], float] = time.perf_counter, horizon: float = 3600.0
    ) -> None:
        self._clock = clock
        self._horizon = horizon
        self._lock = threading.Lock()
        self._times: list[float] = []
        self._levels: list[int] = []  # requests in flight from _times[i] on
        self._now = 0

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._now

    def begin(self) -> None:
        """A request started."""
        self._step(+1)

    def end(self) -> None:
        """A request finished (its body read, or its stream closed)."""
        self._step(-1)

    def _step(self, delta: int) -> None:
        with self._lock:
            now = self._clock()
            self._now = max(self._now + delta, 0)
            self._times.append(now)
            self._levels.append(self._now)
            cutoff = now - self._horizon
            drop = bisect.bisect_left(self._times, cutoff) - 1
            if drop > 0:  # keep the last step before the cutoff: it gives the level there
                del self._times[:drop]
                del self._levels[:drop]

    def shared_seconds(self, start: float, end: float) -> float:
        """``integral of 1/max(k(t), 1) dt`` over ``[start, end]``: the call's share of
        the server's time (``end - start`` when it ran alone)."""
        if end <= start:
            return 0.0
        with self._lock:
            times, levels = list(self._times), list(self._levels)
        i = bisect.bisect_right(times, start) - 1
        level = levels[i] if i >= 0 else 1
        t = start
        total = 0.0
        for j in range(max(i + 1, 0), len(times)):
            if times[j] >= end:
                break
            total += (times[j] - t) / max(level, 1)
            t, level = times[j], levels[j]
        total += (end - t) / max(level, 1)
        return total


_METERS: dict[str, InFlightMeter] = {}
_METERS_LOCK = threading.Lock()


def meter_for(server: str) -> InFlightMeter:
    """The process-wide meter of ``server`` (its base URL): every client of one server
    shares it, so their requests share the server's time."""
    with _METERS_LOCK:
        meter = _METERS.get(server)
        if meter is None:
            meter = _METERS[server] = InFlightMeter()
        return meter


class SharedGpuHourPrice:
    """``usd_per_hour`` of GPU time, shared among the requests in flight (a
    :class:`tcc_plugin.pricing.Price`). ``max_seconds`` bounds one call's wall time for
    budget reservations (``None``: cost caps are checked after the call)."""

    __slots__ = ("clock", "max_seconds", "meter", "usd_per_hour")

    def __init__(
        self,
        usd_per_hour: Decimal,
        meter: InFlightMeter,
        *,
        max_seconds: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.usd_per_hour = usd_per_hour
        self.meter = meter
        self.max_seconds = max_seconds
        self.clock = clock

    def cost(self, usage: Usage, *, seconds: float | None = None, share: int = 1) -> Decimal:
        if seconds is None:
            return Decimal(0)
        if share > 1:  # the caller knows the share: take it
            billed = seconds / share
        else:
            end = self.clock()
            billed = self.meter.shared_seconds(end - seconds, end)
        return self.usd_per_hour * Decimal(str(billed)) / _SECONDS_PER_HOUR

    def worst_case(self, usage: Usage, *, seconds: float | None = None) -> Decimal | None:
        bound = self.max_seconds if seconds is None else seconds
        if bound is None:
            return None
        return self.usd_per_hour * Decimal(str(bound)) / _SECONDS_PER_HOUR

    def __repr__(self) -> str:
        return f"SharedGpuHourPrice(usd_per_hour={self.usd_per_hour})"
