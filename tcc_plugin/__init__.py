"""tcc-plugin: test-time compute control for LLM calls.

Budgets, pricing and OpenTelemetry for every call, through one lifecycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tcc_plugin.budget import Budget, active_budgets, budget, shared_budget
from tcc_plugin.decorator import llm_call
from tcc_plugin.errors import (
    BudgetExceeded,
    BudgetUnavailable,
    PriceUnknown,
    ResponseError,
    TCCError,
    UsageError,
)
from tcc_plugin.forcing import ForcingResult, abudget_forcing, budget_forcing
from tcc_plugin.instrument import instrument, thinking
from tcc_plugin.pricing import GpuHourPrice, PriceBook, TokenPrice, default_price_book, set_price
from tcc_plugin.retry import RetriesExhausted, RetryPolicy
from tcc_plugin.sampling import (
    SamplingResult,
    abest_of_n,
    aself_consistency,
    best_of_n,
    self_consistency,
)

# last: binds the name `sweep` to the function (the subpackage stays importable by path)
from tcc_plugin.sweep import Policy, load_policy, sweep
from tcc_plugin.usage import Usage

if TYPE_CHECKING:
    from tcc_plugin.telemetry.configure import TelemetryHandle, configure

__all__ = [
    "Budget",
    "BudgetExceeded",
    "BudgetUnavailable",
    "ForcingResult",
    "GpuHourPrice",
    "Policy",
    "PriceBook",
    "PriceUnknown",
    "ResponseError",
    "RetriesExhausted",
    "RetryPolicy",
    "SamplingResult",
    "TCCError",
    "TelemetryHandle",
    "TokenPrice",
    "Usage",
    "UsageError",
    "abest_of_n",
    "abudget_forcing",
    "active_budgets",
    "aself_consistency",
    "best_of_n",
    "budget",
    "budget_forcing",
    "configure",
    "default_price_book",
    "instrument",
    "llm_call",
    "load_policy",
    "self_consistency",
    "set_price",
    "shared_budget",
    "sweep",
    "thinking",
]


def __getattr__(name: str) -> Any:
    # The exporter setup imports the OpenTelemetry SDK: load it only when asked for.
    if name in ("configure", "TelemetryHandle"):
        from tcc_plugin.telemetry import configure as _configure

        return getattr(_configure, name)
    raise AttributeError(f"module 'tcc_plugin' has no attribute {name!r}")
