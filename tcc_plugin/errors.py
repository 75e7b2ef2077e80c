"""Exceptions raised by tcc-plugin."""

from __future__ import annotations

from decimal import Decimal

__all__ = [
    "BudgetExceeded",
    "BudgetUnavailable",
    "LedgerConflict",
    "PriceUnknown",
    "ResponseError",
    "TCCError",
    "UsageError",
]

Amount = int | float | Decimal


class TCCError(Exception):
    """Base class of every error tcc-plugin raises itself."""


class UsageError(TCCError, ValueError):
    """A token count is negative, not an integer, or inconsistent."""


class ResponseError(TCCError):
    """A provider response could not be read (malformed, or missing what the call needs)."""


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


class BudgetExceeded(TCCError):
    """A call would exceed, or has exceeded, a budget limit.

    Attributes say which ``limit`` (``"total_tokens"``, ``"output_tokens"``,
    ``"reasoning_tokens"``, ``"usd"``, ``"calls"`` or ``"deadline"``), its value
    ``limit_value``, what the scope had ``spent`` and had ``reserved`` for calls in
    flight, and what the refused call ``needed``.
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
            msg = (
                f"{scope}: deadline of {limit_value:g}s reached "
                f"({spent:.3f}s elapsed, call needs {needed:.3f}s more)"
            )
        else:
            msg = (
                f"{scope}: {limit} limit {limit_value} exceeded: spent {spent}, "
                f"reserved in flight {reserved}, this call needs {needed}"
            )
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
