"""Prices: what a call's usage costs in USD.

Hosted models are priced from the ``genai-prices`` data (a maintained price list, not a
hand-kept table); users override or add models with :meth:`PriceBook.override` or
:func:`set_price`. Self-hosted models are priced by GPU-hour x wall time
(:class:`GpuHourPrice`). An unknown model prices to ``None`` and warns once: never a
guess, never a crash.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from tcc_plugin.usage import Usage

__all__ = [
    "GpuHourPrice",
    "Price",
    "PriceBook",
    "TokenPrice",
    "UnknownModelWarning",
    "default_price_book",
    "set_price",
]

logger = logging.getLogger("tcc_plugin.pricing")

_MTOK = Decimal(1_000_000)
_SECONDS_PER_HOUR = Decimal(3600)


class UnknownModelWarning(UserWarning):
    """Issued once per model that no price is known for."""


@runtime_checkable
class Price(Protocol):
    """Something that prices a call's usage."""

    def cost(self, usage: Usage, *, seconds: float | None = None, share: int = 1) -> Decimal:
        """USD for ``usage``; ``seconds`` is the call's wall time, ``share`` how many
        calls shared the hardware meanwhile (for time-priced models)."""
        ...

    def worst_case(self, usage: Usage, *, seconds: float | None = None) -> Decimal | None:
        """An upper bound of :meth:`cost` for at most ``usage``, or ``None`` if unbounded."""
        ...


def _dec(value: float | int | str | Decimal) -> Decimal:
    price = value if isinstance(value, Decimal) else Decimal(str(value))
    if not price.is_finite():
        raise ValueError(f"a price must be a finite number of USD, not {value!r}")
    return price


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """USD per million tokens. Unset prices fall back to the nearest general one:
    ``cache_write_1h`` -> ``cache_write`` -> ``input``; ``cached_input`` -> ``input``;
    ``reasoning`` -> ``output``."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None

    @classmethod
    def per_million(
        cls,
        *,
        input: float | str | Decimal,
        output: float | str | Decimal,
        cached_input: float | str | Decimal | None = None,
        cache_write: float | str | Decimal | None = None,
        cache_write_1h: float | str | Decimal | None = None,
        reasoning: float | str | Decimal | None = None,
    ) -> TokenPrice:
        """Build from plain numbers (floats are read through ``str`` to stay exact)."""

        def opt(v: float | str | Decimal | None) -> Decimal | None:
            return None if v is None else _dec(v)

        return cls(
            input=_dec(input),
            output=_dec(output),
            cached_input=opt(cached_input),
            cache_write=opt(cache_write),
            cache_write_1h=opt(cache_write_1h),
            reasoning=opt(reasoning),
        )

    def cost(self, usage: Usage, *, seconds: float | None = None, share: int = 1) -> Decimal:
        cached = self.cached_input if self.cached_input is not None else self.input
        write_5m = self.cache_write if self.cache_write is not None else self.input
        write_1h = self.cache_write_1h if self.cache_write_1h is not None else write_5m
        reasoning = self.reasoning if self.reasoning is not None else self.output
        micro = usage.uncached_input * self.input + usage.visible_output * self.output
        if usage.cached_input:  # the terms below are often zero: skip their arithmetic
            micro += usage.cached_input * cached
        if usage.cache_write:
            micro += (usage.cache_write - usage.cache_write_1h) * write_5m
            micro += usage.cache_write_1h * write_1h
        if usage.reasoning:
            micro += usage.reasoning * reasoning
        return micro / _MTOK

    def worst_case(self, usage: Usage, *, seconds: float | None = None) -> Decimal | None:
        # Worst case of an as-yet-unknown split: all input uncached or cache-written at
        # the dearest input rate, all output at the dearer of output and reasoning.
        input_rates = [
            self.input,
            self.cache_write or self.input,
            self.cache_write_1h or self.input,
        ]
        output_rate = max(
            self.output, self.reasoning if self.reasoning is not None else self.output
        )
        return (usage.input * max(input_rates) + usage.output * output_rate) / _MTOK


@dataclass(frozen=True, slots=True)
class GpuHourPrice:
    """A self-hosted model priced by GPU time: ``usd_per_hour`` x wall seconds, shared
    equally among the calls in flight. ``max_seconds`` bounds one call's wall time for
    budget reservations (``None``: cost caps are checked after the call)."""

    usd_per_hour: Decimal
    max_seconds: float | None = None

    @classmethod
    def of(
        cls, usd_per_hour: float | str | Decimal, max_seconds: float | None = None
    ) -> GpuHourPrice:
        """Build from a plain number of USD per hour."""
        return cls(usd_per_hour=_dec(usd_per_hour), max_seconds=max_seconds)

    def cost(self, usage: Usage, *, seconds: float | None = None, share: int = 1) -> Decimal:
        if seconds is None:
            return Decimal(0)
        return self.usd_per_hour * _dec(seconds) / _SECONDS_PER_HOUR / max(share, 1)

    def worst_case(self, usage: Usage, *, seconds: float | None = None) -> Decimal | None:
        bound = self.max_seconds if seconds is None else seconds
        if bound is None:
            return None
        return self.usd_per_hour * _dec(bound) / _SECONDS_PER_HOUR


class _GenaiPrice:
    """A model price from ``genai-prices``; flat prices are computed directly (the same
    arithmetic the library does, pinned by a test), tiered ones by the library."""

    __slots__ = ("_flat", "_model_price")

    _UNITS = (
        "input_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "cache_write_1h_mtok",
        "output_mtok",
    )

    def __init__(self, model_price: Any) -> None:
        self._model_price = model_price
        values = {unit: getattr(model_price, unit, None) for unit in self._UNITS}
        flat = all(v is None or isinstance(v, Decimal) for v in values.values())
        self._flat: TokenPrice | None = None
        if (
            flat
            and isinstance(values["input_mtok"], Decimal)
            and isinstance(values["output_mtok"], Decimal)
        ):
            self._flat = TokenPrice(
                input=values["input_mtok"],
                output=values["output_mtok"],
                cached_input=values["cache_read_mtok"],
                cache_write=values["cache_write_mtok"],
                cache_write_1h=values["cache_write_1h_mtok"],
            )

    def cost(self, usage: Usage, *, seconds: float | None = None, share: int = 1) -> Decimal:
        if self._flat is not None:
            return self._flat.cost(usage)
        from genai_prices import Usage as GenaiUsage

        calc = self._model_price.calc_price(
            GenaiUsage(
                input_tokens=usage.input,
                cache_read_tokens=usage.cached_input,
                cache_write_tokens=usage.cache_write,
                cache_write_1h_tokens=usage.cache_write_1h,
                output_tokens=usage.output,
            )
        )
        return Decimal(calc["total_price"])

    def worst_case(self, usage: Usage, *, seconds: float | None = None) -> Decimal | None:
        if self._flat is not None:
            return self._flat.worst_case(usage)
        # Tiered prices rise with the input size; every input token priced as a 1-hour
        # cache write (the dearest input rate) bounds any split of the same total.
        candidates = [
            self.cost(Usage(input=usage.input, output=usage.output)),
            self.cost(
                Usage(
                    input=usage.input,
                    cache_write=usage.input,
                    cache_write_1h=usage.input,
                    output=usage.output,
                )
            ),
        ]
        return max(candidates)


class PriceBook:
    """Model prices: user overrides first, then the ``genai-prices`` data."""

    def __init__(self, *, use_genai_prices: bool = True) -> None:
        self._use_genai_prices = use_genai_prices
        self._overrides: dict[tuple[str | None, str], Price] = {}
        self._cache: dict[tuple[str | None, str], Price | None] = {}
        self._warned: set[tuple[str | None, str]] = set()
        self._lock = threading.Lock()

    def override(self, model: str, price: Price, *, provider: str | None = None) -> None:
        """Price ``model`` (from ``provider``, or from any provider) with ``price``."""
        with self._lock:
            self._overrides[(provider, model.lower())] = price
            self._cache.clear()

    def lookup(self, model: str | None, provider: str | None = None) -> Price | None:
        """The price of ``model``, or ``None`` when none is known."""
        if not model:
            return None
        key = (provider, model.lower())
        try:
            return self._cache[key]
        except KeyError:
            pass
        price = self._find(model.lower(), provider)
        with self._lock:
            self._cache[key] = price
        return price

    def cost(
        self,
        usage: Usage,
        model: str | None,
        provider: str | None = None,
        *,
        seconds: float | None = None,
        share: int = 1,
    ) -> Decimal | None:
        """USD for ``usage`` of ``model``; ``None`` (and a warning, once) if unknown."""
        price = self.lookup(model, provider)
        if price is None:
            self.warn_unknown(model, provider)
            return None
        return price.cost(usage, seconds=seconds, share=share)

    def warn_unknown(self, model: str | None, provider: str | None) -> None:
        """Warn, once per model, that its cost is not recorded."""
        key = (provider, (model or "").lower())
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(
            f"no price known for model {model!r} (provider {provider!r}): its cost is not "
            "recorded; add one with tcc_plugin.set_price(...)",
            UnknownModelWarning,
            stacklevel=3,
        )

    def _find(self, model: str, provider: str | None) -> Price | None:
        for key in ((provider, model), (None, model)):
            if key in self._overrides:
                return self._overrides[key]
        if not self._use_genai_prices:
            return None
        return _genai_lookup(model, provider)


def _genai_lookup(model: str, provider: str | None) -> Price | None:
    try:
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover - a core dependency
        return None
    snapshot = data_snapshot.get_snapshot()
    for provider_id in (provider, None) if provider else (None,):
        try:
            _, info = snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            continue
        except Exception:  # the data is third-party: a bad entry must not break a call
            logger.debug("genai-prices lookup failed for %r", model, exc_info=True)
            return None
        return _GenaiPrice(info.get_prices(datetime.now(tz=timezone.utc)))
    return None


_default_book = PriceBook()


def default_price_book() -> PriceBook:
    """The process-wide price book the lifecycle uses."""
    return _default_book


def set_price(
    model: str,
    *,
    input: float | str | Decimal | None = None,
    output: float | str | Decimal | None = None,
    cached_input: float | str | Decimal | None = None,
    cache_write: float | str | Decimal | None = None,
    cache_write_1h: float | str | Decimal | None = None,
    reasoning: float | str | Decimal | None = None,
    usd_per_hour: float | str | Decimal | None = None,
    max_seconds: float | None = None,
    provider: str | None = None,
) -> Price:
    """Set the price of ``model`` in the default price book.

    Token prices are USD per million tokens; ``usd_per_hour`` prices a self-hosted model
    by GPU time instead.
    """
    price: Price
    if usd_per_hour is not None:
        if input is not None or output is not None:
            raise ValueError("give either token prices or usd_per_hour, not both")
        price = GpuHourPrice.of(usd_per_hour, max_seconds)
    else:
        if input is None or output is None:
            raise ValueError("a token price needs both input and output (USD per million)")
        price = TokenPrice.per_million(
            input=input,
            output=output,
            cached_input=cached_input,
            cache_write=cache_write,
            cache_write_1h=cache_write_1h,
            reasoning=reasoning,
        )
    default_price_book().override(model, price, provider=provider)
    return price
