"""Prices: what a call's usage costs in USD.

Hosted models are priced from the ``genai-prices`` data (a maintained price list, not a
hand-kept table); users override or add models with :meth:`PriceBook.override` or
:func:`set_price`. Self-hosted models are priced by GPU-hour x wall time
(:class:`GpuHourPrice`). An unknown model prices to ``None`` and warns once: never a
guess, never a crash.

What a call is billed beyond its own tokens is priced here too (:func:`bill`): extra
billed steps (Anthropic ``usage.iterations``: context compaction, the advisor tool),
each at its own model's price, and server-side tools billed per request, from a small
fee table (:data:`SERVER_TOOL_FEES`, overridable with :meth:`PriceBook.set_tool_fee`).
A deployment name (Azure OpenAI) is priced as the model it serves with
:meth:`PriceBook.alias`.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Final, Protocol, runtime_checkable

from tcc_plugin.adapter import AttributeValue, ResponseInfo
from tcc_plugin.telemetry import names
from tcc_plugin.usage import Usage

__all__ = [
    "SERVER_TOOL_FEES",
    "Bill",
    "GpuHourPrice",
    "Price",
    "PriceBook",
    "TokenPrice",
    "UnknownModelWarning",
    "bill",
    "default_price_book",
    "set_price",
    "worst_case_usd",
]

logger = logging.getLogger("tcc_plugin.pricing")

_MTOK = Decimal(1_000_000)
_SECONDS_PER_HOUR = Decimal(3600)


class UnknownModelWarning(UserWarning):
    """Issued once per model (or server tool) that no price is known for."""


SERVER_TOOL_FEES: Final[Mapping[str, Decimal]] = {
    # Anthropic's pricing page, "Web search tool": $10 per 1,000 searches.
    "web_search_requests": Decimal("0.01"),
    # Anthropic's web fetch tool docs: no charge beyond the fetched content's tokens.
    "web_fetch_requests": Decimal(0),
    # OpenAI Responses output items have no default fee: OpenAI's web search costs $10
    # or $25 per 1,000 calls by tool version and model, runs sub-searches the response
    # does not show, and bills some models a fixed block of content tokens; so a call
    # with them is flagged tcc.cost.unknown unless the user sets a fee for
    # "web_search_call" / "file_search_call".
}
"""USD per request of a server-side tool, by the name the provider counts it under
(Anthropic ``usage.server_tool_use``). Override or add with
:meth:`PriceBook.set_tool_fee`; a tool used without a known fee leaves the call's
cost unknown (``tcc.cost.unknown``)."""


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
        return self.worst_of(usage.input, usage.output)

    def worst_of(self, input_tokens: int, output_tokens: int) -> Decimal:
        """:meth:`worst_case` of a call of at most these token counts."""
        # Worst case of an as-yet-unknown split: all input uncached or cache-written at
        # the dearest input rate, all output at the dearer of output and reasoning.
        # (Comparisons rather than max() of a list: this runs on every budgeted call.)
        input_rate = self.input
        if self.cache_write and self.cache_write > input_rate:
            input_rate = self.cache_write
        if self.cache_write_1h and self.cache_write_1h > input_rate:
            input_rate = self.cache_write_1h
        output_rate = self.output
        if self.reasoning is not None and self.reasoning > output_rate:
            output_rate = self.reasoning
        return (input_tokens * input_rate + output_tokens * output_rate) / _MTOK


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


def worst_case_usd(
    price: Price, input_tokens: int, output_tokens: int, reasoning_tokens: int
) -> Decimal | None:
    """``price.worst_case`` of a call of at most these tokens (reasoning a part of
    output). A flat token price is computed from the counts directly: every budgeted
    call asks, and a :class:`Usage` costs more to build than the arithmetic."""
    flat: TokenPrice | None = None
    if type(price) is _GenaiPrice:
        flat = price._flat
    elif type(price) is TokenPrice:
        flat = price
    if (
        flat is not None
        and type(input_tokens) is int
        and type(output_tokens) is int
        and input_tokens >= 0
        and output_tokens >= 0
    ):
        return flat.worst_of(input_tokens, output_tokens)
    # anything else (and counts a Usage would refuse, so that it says why)
    return price.worst_case(
        Usage(input=input_tokens, output=output_tokens, reasoning=reasoning_tokens)
    )


class PriceBook:
    """Model prices: user overrides first, then the ``genai-prices`` data."""

    def __init__(self, *, use_genai_prices: bool = True) -> None:
        self._use_genai_prices = use_genai_prices
        self._overrides: dict[tuple[str | None, str], Price] = {}
        self._aliases: dict[tuple[str | None, str], str] = {}
        self._tool_fees: dict[tuple[str | None, str], Decimal] = {
            (None, name): fee for name, fee in SERVER_TOOL_FEES.items()
        }
        self._cache: dict[tuple[str | None, str], Price | None] = {}
        self._warned: set[tuple[str | None, str]] = set()
        self._lock = threading.Lock()

    def override(self, model: str, price: Price, *, provider: str | None = None) -> None:
        """Price ``model`` (from ``provider``, or from any provider) with ``price``."""
        with self._lock:
            self._overrides[(provider, model.lower())] = price
            self._cache.clear()

    def alias(self, name: str, model: str, *, provider: str | None = None) -> None:
        """Price ``name`` (an Azure OpenAI deployment, a proxy's model alias) as
        ``model``: requests naming ``name`` are reserved and priced at ``model``'s
        price (an override of ``name`` itself still wins)."""
        with self._lock:
            self._aliases[(provider, name.lower())] = model.lower()
            self._cache.clear()

    def set_tool_fee(
        self, tool: str, usd_per_request: float | str | Decimal, *, provider: str | None = None
    ) -> None:
        """Set the fee of one request of a server-side ``tool`` (the name the provider
        counts it under, e.g. ``"web_search_requests"``)."""
        with self._lock:
            self._tool_fees[(provider, tool)] = _dec(usd_per_request)

    def tool_fee(self, tool: str, provider: str | None = None) -> Decimal | None:
        """USD per request of ``tool``, or ``None`` when unknown."""
        fee = self._tool_fees.get((provider, tool))
        return fee if fee is not None else self._tool_fees.get((None, tool))

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
        self._warn_once(
            (provider, (model or "").lower()),
            f"no price known for model {model!r} (provider {provider!r}): its cost is not "
            "recorded; add one with tcc_plugin.set_price(...)",
        )

    def warn_unknown_tool(self, tool: str, provider: str | None) -> None:
        """Warn, once per tool, that a call using it has no complete cost."""
        self._warn_once(
            (provider, f"tool:{tool}"),
            f"no fee known for server tool {tool!r} (provider {provider!r}): calls using "
            "it are flagged tcc.cost.unknown; set one with PriceBook.set_tool_fee(...)",
        )

    def _warn_once(self, key: tuple[str | None, str], message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(message, UnknownModelWarning, stacklevel=4)

    def _find(
        self, model: str, provider: str | None, seen: frozenset[str] = frozenset()
    ) -> Price | None:
        for key in ((provider, model), (None, model)):
            if key in self._overrides:
                return self._overrides[key]
        for key in ((provider, model), (None, model)):
            target = self._aliases.get(key)
            if target is not None and target not in seen:  # a cycle of aliases ends
                return self._find(target, provider, seen | {model})
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


@dataclass(frozen=True, slots=True)
class Bill:
    """What one call is billed: ``usd`` sums the parts that could be priced (``None``
    when the call's own model has no price), ``complete`` says whether every part
    could; ``attributes`` describe the extra steps and server tools for its span."""

    usd: Decimal | None
    complete: bool
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


_STEP_FIELDS: Final = (
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read.input_tokens", "cached_input"),
    ("cache_creation.input_tokens", "cache_write"),
)


def bill(
    book: PriceBook,
    price: Price | None,
    usage: Usage,
    response: ResponseInfo | None,
    provider: str | None = None,
    *,
    seconds: float | None = None,
) -> Bill:
    """Price a call: its ``usage`` at ``price`` (the call's model), each extra billed
    step of ``response`` at its own model's price, and its server-tool requests at
    ``book``'s fees. Parts that cannot be priced are warned about (once) and leave
    the bill incomplete: never guessed, never zero."""
    attrs: dict[str, AttributeValue] = {}
    total = price.cost(usage, seconds=seconds) if price is not None else None
    complete = price is not None
    if response is None:
        return Bill(total, complete, attrs)
    for step in response.extra_steps:
        prefix = f"{names.USAGE_STEP_PREFIX}{step.kind}."
        for suffix, name in _STEP_FIELDS:  # steps of one kind add up
            counted = attrs.get(prefix + suffix, 0)
            attrs[prefix + suffix] = getattr(step.usage, name) + (
                counted if isinstance(counted, int) else 0
            )
        step_price = price if step.model is None else book.lookup(step.model, provider)
        if step.model is not None:
            attrs[prefix + "model"] = step.model
        if step_price is None:
            book.warn_unknown(step.model, provider)
            complete = False
            continue
        cost = step_price.cost(step.usage)
        total = cost if total is None else total + cost
    for tool, count in response.server_tools.items():
        attrs[f"{names.SERVER_TOOL_PREFIX}{tool}"] = count
        fee = book.tool_fee(tool, provider)
        if fee is None:
            book.warn_unknown_tool(tool, provider)
            complete = False
            continue
        attrs[f"{names.SERVER_TOOL_PREFIX}{tool}.cost_usd"] = float(fee * count)
        total = fee * count if total is None else total + fee * count
    if not complete:
        attrs[names.COST_UNKNOWN] = True
    return Bill(total, complete, attrs)


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
