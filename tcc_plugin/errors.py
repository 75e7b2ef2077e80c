"""Exceptions raised by tcc-plugin."""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "BudgetExceeded",
    "BudgetUnavailable",
    "LedgerConflict",
    "PriceUnknown",
    "ResponseError",
    "ScoringFailed",
    "TCCError",
    "UsageError",
    "format_seconds",
    "format_usd",
]

Amount = int | float | Decimal


class TCCError(Exception):
    """Base class of every error tcc-plugin raises itself."""


class UsageError(TCCError, ValueError):
    """A token count is negative, not an integer, or inconsistent."""


class ResponseError(TCCError):
    """A provider response could not be read (malformed, or missing what the call needs)."""


class ScoringFailed(TCCError, RuntimeError):
    """A sampling group's verifier (or vote weight) raised on every candidate, so none
    could be scored; the first error is the ``__cause__``."""


class PriceUnknown(TCCError, LookupError):
    """No price is known for a model, and the call needs one (a USD budget is active)."""

    def __init__(self, model: str, provider: str | None, reason: str = "") -> None:
        self.model = model
        self.provider = provider
        where = f" from provider {provider!r}" if provider else ""
        hint = (
            "give it a price with tcc_plugin.set_price(...) or "
            "PriceBook.override(...), or run without a USD limit"
        )
        super().__init__(f"no price known for model {model!r}{where}{reason}; {hint}")


def format_usd(amount: Amount) -> str:
    """Dollars rounded for people: ``$1.25``, ``$0.0037`` (two significant digits
    below a dollar), ``$0``."""
    value = amount if isinstance(amount, Decimal) else Decimal(str(amount))
    if not value.is_finite():
        return f"${value}"
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    rounded = value.quantize(Decimal(1).scaleb(value.adjusted() - 1)).normalize()
    return f"${rounded:f}"


def format_seconds(seconds: Amount) -> str:
    """A duration rounded for people: ``0.2 s``, ``12 s``, ``35 ms``."""
    value = float(seconds)
    if 0 < abs(value) < 0.1:
        return f"{value * 1000:.0f} ms"
    if abs(value) >= 10:
        return f"{value:.0f} s"
    return f"{value:.1f} s"


def _amount(limit: str, value: Amount) -> str:
    if limit == "usd":
        return format_usd(value)
    if isinstance(value, Decimal):
        value = int(value) if value == value.to_integral_value() else float(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


class BudgetExceeded(TCCError):
    """A call would exceed, or has exceeded, a budget limit.

    Attributes say which ``limit`` (``"total_tokens"``, ``"output_tokens"``,
    ``"reasoning_tokens"``, ``"usd"``, ``"calls"`` or ``"deadline"``), its value
    ``limit_value``, what the scope had ``spent`` and had ``reserved`` for calls in
    flight, and what the refused call ``needed``. ``reason`` says why:
    ``"call_too_large"`` (the call alone needs more than the whole limit),
    ``"used_up"`` (earlier spend, and calls in flight, used the limit up) or
    ``"deadline"``. The message rounds amounts for people (``$0.0037``, ``0.2 s``);
    the attributes are exact.
    """

    def __init__(
        self,
        limit: str,
        *,
        limit_value: Amount,
        spent: Amount,
        reserved: Amount = 0,
        needed: Amount = 0,
        budget_name: str | None = None,
    ) -> None:
        self.limit = limit
        self.limit_value = limit_value
        self.spent = spent
        self.reserved = reserved
        self.needed = needed
        self.budget_name = budget_name
        scope = f"budget {budget_name!r}" if budget_name else "budget"
        if limit == "deadline":
            self.reason = "deadline"
            msg = (
                f"{scope}: deadline of {format_seconds(limit_value)} reached "
                f"({format_seconds(spent)} elapsed)"
            )
        else:
            cap, need = _amount(limit, limit_value), _amount(limit, needed)
            if needed > limit_value:
                self.reason = "call_too_large"
                msg = (
                    f"{scope}: {limit} limit {cap} exceeded: this call alone needs {need}, "
                    "more than the whole limit"
                )
            else:
                self.reason = "used_up"
                used = f"spent {_amount(limit, spent)}"
                if reserved:
                    used += f" and {_amount(limit, reserved)} reserved by calls in flight"
                msg = f"{scope}: {limit} limit {cap} exceeded: earlier calls used it up ({used})"
                if needed:
                    msg += f"; this call needs {need}"
        super().__init__(msg)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_budget_exceeded,
            (
                self.limit,
                self.limit_value,
                self.spent,
                self.reserved,
                self.needed,
                self.budget_name,
            ),
        )


def _rebuild_budget_exceeded(
    limit: str,
    limit_value: Amount,
    spent: Amount,
    reserved: Amount,
    needed: Amount,
    budget_name: str | None,
) -> BudgetExceeded:
    return BudgetExceeded(
        limit,
        limit_value=limit_value,
        spent=spent,
        reserved=reserved,
        needed=needed,
        budget_name=budget_name,
    )


class BudgetUnavailable(TCCError):
    """A shared budget's store cannot be reached (or refused our credentials), and its
    ledger fails closed: the call is refused rather than run uncounted.

    ``budget_name`` and ``where`` (the store, without credentials) say which budget and
    where; the cause is chained."""

    def __init__(self, budget_name: str | None, where: str, reason: str) -> None:
        self.budget_name = budget_name
        self.where = where
        self.reason = reason
        scope = f"budget {budget_name!r}" if budget_name else "a shared budget"
        super().__init__(
            f"{scope} is unavailable: {reason} ({where}); the call was refused "
            "(the ledger fails closed; see docs/shared-budgets.md for fail_open)"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (BudgetUnavailable, (self.budget_name, self.where, self.reason))


class LedgerConflict(TCCError, ValueError):
    """A shared budget's store disagrees with this process's budget: its key holds a
    value of another type, or its caps were changed while reservations are open."""
