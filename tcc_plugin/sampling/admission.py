"""Budget admission: launch a sample only when the budgets can pay for its worst case.

With a per-sample worst case (``per_sample``), each sample, before it launches,
reserves that worst case in every active budget (all or nothing); a sample that does
not fit is not launched. The launched sample then runs confined to a *slice*: a budget
scope whose limits are exactly what was reserved, so its calls can never spend more,
and the caller's budgets see the reservation, not the calls. When the sample finishes
(or is cancelled), the reservation is settled to what the slice really spent, and the
rest is free again: launching resumes if it makes room, and ends when nothing is left
running and the next sample still does not fit.
Guarantee: the group never launches a sample the budgets cannot pay for in full, and
concurrent samples (and any other calls sharing the budgets) can never jointly
overshoot a cap.

Without ``per_sample``, a sample launches while every budget has something left in
every limit (and time before its deadline), likewise waiting for running samples to
settle before giving up. Each call still reserves its own worst case before it starts,
so caps hold exactly, but a sample launched at the margin may be refused
(``status="refused"``, nothing sent to the provider), which ends launching.
"""

from __future__ import annotations

from dataclasses import replace

from tcc_plugin.budget import Budget, Charge, Demand, Reservation, reserve
from tcc_plugin.errors import BudgetExceeded, PriceUnknown
from tcc_plugin.pricing import PriceBook, default_price_book
from tcc_plugin.usage import Usage

__all__ = ["Admission", "Slot", "has_room", "worst_case"]

_TOKENS = ("total_tokens", "output_tokens", "reasoning_tokens")


def worst_case(
    model: str,
    *,
    max_output_tokens: int,
    input_tokens: int,
    max_reasoning_tokens: int | None = None,
    provider: str | None = None,
    calls: int = 1,
    price_book: PriceBook | None = None,
) -> Charge:
    """The worst case of a sample of ``calls`` calls to ``model``, each with at most
    ``input_tokens`` in and ``max_output_tokens`` out (``max_reasoning_tokens`` of it
    thinking), priced from the price book: a ``per_sample`` for sampling groups.

    It must cover what the sample's calls reserve for themselves: their output cap,
    and their input *estimate* (instrumented clients bound a prompt's tokens by its
    size in bytes, so be generous: what is not spent is released when the sample ends).
    Raises :class:`~tcc_plugin.PriceUnknown` when the model has no price."""
    if calls < 1 or max_output_tokens < 0 or input_tokens < 0:
        raise ValueError("calls must be >= 1 and token counts >= 0")
    price = (price_book or default_price_book()).lookup(model, provider)
    thinking = max_output_tokens if max_reasoning_tokens is None else max_reasoning_tokens
    thinking = min(thinking, max_output_tokens)
    usd = None
    if price is not None:
        usd = price.worst_case(
            Usage(input=input_tokens, output=max_output_tokens, reasoning=thinking)
        )
    if usd is None:
        raise PriceUnknown(model, provider, " (needed for a sample's worst case)")
    return Charge(
        total_tokens=(input_tokens + max_output_tokens) * calls,
        output_tokens=max_output_tokens * calls,
        reasoning_tokens=thinking * calls,
        usd=usd * calls,
        calls=calls,
    )


def _as_charge(per_sample: Demand | Charge) -> tuple[Charge, set[str]]:
    """The charge of ``per_sample`` and the limits it bounds."""
    if isinstance(per_sample, Charge):
        bounded = {"calls", *_TOKENS}
        if per_sample.usd > 0:
            bounded.add("usd")
        return per_sample, bounded
    charge = per_sample.charge(per_sample.max_output_tokens, per_sample.max_reasoning_tokens)
    bounded = {limit for limit in ("calls", "usd", *_TOKENS) if per_sample.bounded(limit)}
    return charge, bounded


class Slot:
    """One admitted sample: its reservation in the caller's budgets and its slice."""

    __slots__ = ("budget", "reservation")

    def __init__(self, reservation: Reservation, budget: Budget) -> None:
        self.reservation = reservation
        self.budget = budget

    def settle(self) -> None:
        """Charge the caller's budgets what the slice spent (only the first time)."""
        self.reservation.settle(self.budget.spent)


class Admission:
    """Reserves each sample's worst case in ``chain`` before it launches."""

    def __init__(self, per_sample: Demand | Charge, chain: tuple[Budget, ...]) -> None:
        charge, bounded = _as_charge(per_sample)
        c = charge
        if c.reasoning_tokens > c.output_tokens or c.output_tokens > c.total_tokens:
            raise ValueError("per_sample: reasoning <= output <= total tokens")
        if charge.calls < 1:
            raise ValueError("per_sample must allow at least one call")
        for b in chain:
            for limit in b.limits:
                if limit not in bounded:
                    what = "an output cap (max_output_tokens)"
                    if limit == "usd":
                        what = "a price (Demand.worst_usd, or worst_case())"
                    raise ValueError(
                        f"per_sample has no worst case for {limit}, which {b!r} limits: "
                        f"give it {what}"
                    )
        self.charge = charge
        self.chain = chain
        usd = charge.usd
        # A demand whose reservation is exactly ``charge``, all at once.
        self._demand = Demand(
            input_tokens=charge.total_tokens - charge.output_tokens,
            max_output_tokens=charge.output_tokens,
            max_reasoning_tokens=charge.reasoning_tokens,
            clampable=False,
            calls=charge.calls,
            worst_usd=lambda output, reasoning: usd,
        )

    def admit(self, index: int, size: int = 1) -> Slot:
        """Reserve the worst case of ``size`` samples (a batch drawn at once) in every
        budget at once; raises :class:`BudgetExceeded` if it does not fit (nothing is
        reserved then)."""
        demand = self._demand if size == 1 else _times(self._demand, self.charge, size)
        return Slot(reserve(demand, self.chain), self._slice(index, size))

    def _slice(self, index: int, size: int = 1) -> Budget:
        limits = {limit for b in self.chain for limit in b.limits}
        c = _scaled(self.charge, size)
        lefts = [t for t in (b.time_left() for b in self.chain) if t is not None]
        inner = self.chain[-1]
        return Budget(
            total_tokens=c.total_tokens if "total_tokens" in limits else None,
            output_tokens=c.output_tokens if "output_tokens" in limits else None,
            reasoning_tokens=c.reasoning_tokens if "reasoning_tokens" in limits else None,
            usd=c.usd if "usd" in limits else None,
            calls=c.calls if "calls" in limits else None,
            deadline=max(0.0, min(lefts)) if lefts else None,
            policy=inner.policy,
            min_output_tokens=max(b.min_output_tokens for b in self.chain),
            name=f"{inner.name or 'budget'}[sample {index}]"
            if size == 1
            else f"{inner.name or 'budget'}[samples {index}-{index + size - 1}]",
        )


def _scaled(charge: Charge, size: int) -> Charge:
    """``size`` times ``charge``."""
    if size == 1:
        return charge
    return Charge(
        charge.total_tokens * size,
        charge.output_tokens * size,
        charge.reasoning_tokens * size,
        charge.usd * size,
        charge.calls * size,
    )


def _times(demand: Demand, charge: Charge, size: int) -> Demand:
    """A demand whose reservation is exactly ``size`` times ``charge``."""
    c = _scaled(charge, size)
    usd = c.usd
    return replace(
        demand,
        input_tokens=c.total_tokens - c.output_tokens,
        max_output_tokens=c.output_tokens,
        max_reasoning_tokens=c.reasoning_tokens,
        calls=c.calls,
        worst_usd=lambda output, reasoning: usd,
    )


def has_room(chain: tuple[Budget, ...]) -> BudgetExceeded | None:
    """Why ``chain`` cannot pay for anything more (``None``: it has room in every limit
    and time before every deadline)."""
    for b in chain:
        left = b.time_left()
        if left is not None and left <= 0:
            return BudgetExceeded(
                "deadline", limit_value=b.deadline or 0.0, spent=b.elapsed(), budget_name=b.name
            )
        for limit, amount in b.remaining().items():
            if amount <= 0:
                return BudgetExceeded(
                    limit,
                    limit_value=b.limits[limit],
                    spent=b.spent.get(limit),
                    reserved=b.reserved.get(limit),
                    budget_name=b.name,
                )
    return None


def needs_admission(chain: tuple[Budget, ...]) -> bool:
    """Whether any budget of ``chain`` limits anything (or has a deadline)."""
    return any(b.limits or b.deadline is not None for b in chain)
