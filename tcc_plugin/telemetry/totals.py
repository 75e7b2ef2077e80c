"""Running totals per attribute set, reported by asynchronous (observable) counters.

A synchronous OpenTelemetry instrument costs several microseconds per measurement in
the SDK (attribute cleaning, hashing, aggregation lookup). The per-call *sums* tcc-plugin
adds to the GenAI histograms (cost in USD, reasoning tokens) do not need a measurement
per call: a :class:`Totals` adds the call's values to an in-process running total
(a dict update under a lock) and an ``ObservableCounter`` reports the cumulative totals
when the metric reader collects, which is how OpenTelemetry models monotonic sums read
from elsewhere. The exported series are the same as a ``Counter``'s.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Final

from opentelemetry.metrics import CallbackOptions, Observation

from tcc_plugin.adapter import AttributeValue

__all__ = ["OVERFLOW_ATTRIBUTES", "Totals"]

# As the SDK does past its cardinality limit: further attribute sets share one series.
OVERFLOW_ATTRIBUTES: Final[Mapping[str, AttributeValue]] = {"otel.metric.overflow": True}
_OVERFLOW_KEY: Final = tuple(OVERFLOW_ATTRIBUTES.items())

Key = tuple[tuple[str, AttributeValue], ...]


class Totals:
    """Cumulative sums of a few named quantities, one row per attribute set.

    ``add(attributes, *values)`` adds one value per quantity to the row of
    ``attributes``; :meth:`callback` returns the callback of an observable counter
    reporting one of the quantities. Values add exactly (``Decimal`` and ``int``);
    at most ``max_series`` attribute sets are kept, the rest go to one overflow row.
    """

    __slots__ = ("_attributes", "_lock", "_max_series", "_rows", "quantities")

    def __init__(self, quantities: Iterable[str], *, max_series: int = 2000) -> None:
        self.quantities = tuple(quantities)
        self._max_series = max_series
        self._lock = threading.Lock()
        self._rows: dict[Key, list[Decimal | int]] = {}
        self._attributes: dict[Key, Mapping[str, AttributeValue]] = {}

    def add(self, attributes: Mapping[str, AttributeValue], *values: Decimal | int) -> None:
        """Add ``values`` (one per quantity, in order) to the row of ``attributes``."""
        key: Key = tuple(attributes.items())
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                if len(self._rows) >= self._max_series:
                    key = _OVERFLOW_KEY
                    row = self._rows.get(key)
                if row is None:
                    row = self._rows[key] = [0] * len(self.quantities)
                    self._attributes[key] = (
                        OVERFLOW_ATTRIBUTES if key is _OVERFLOW_KEY else dict(attributes)
                    )
            for i, value in enumerate(values):
                row[i] += value

    def snapshot(self, quantity: str) -> list[tuple[Mapping[str, AttributeValue], Decimal | int]]:
        """The current total of ``quantity`` for each attribute set seen."""
        index = self.quantities.index(quantity)
        with self._lock:
            return [(self._attributes[key], row[index]) for key, row in self._rows.items()]

    def callback(self, quantity: str, *, as_float: bool = False) -> _Observe:
        """An observable-counter callback reporting the totals of ``quantity``."""
        return _Observe(self, quantity, as_float)


class _Observe:
    __slots__ = ("as_float", "quantity", "totals")

    def __init__(self, totals: Totals, quantity: str, as_float: bool) -> None:
        self.totals = totals
        self.quantity = quantity
        self.as_float = as_float

    def __call__(self, options: CallbackOptions) -> list[Observation]:
        convert = float if self.as_float else int
        return [
            Observation(convert(total), dict(attrs))
            for attrs, total in self.totals.snapshot(self.quantity)
        ]
