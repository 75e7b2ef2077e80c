from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tcc_plugin

# The public surface. Contract names (DESIGN.md) must never disappear; adding a name
# is a deliberate act that updates this list.
PUBLIC = [
    "Budget",
    "BudgetExceeded",
    "BudgetUnavailable",
    "GpuHourPrice",
    "PriceBook",
    "PriceUnknown",
    "ResponseError",
    "RetriesExhausted",
    "RetryPolicy",
    "TCCError",
    "TelemetryHandle",
    "TokenPrice",
    "Usage",
    "UsageError",
    "SamplingResult",
    "ForcingResult",
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
    "self_consistency",
    "set_price",
    "shared_budget",
    "thinking",
    "Policy",
    "load_policy",
    "sweep",
]


def test_all_is_pinned() -> None:
    assert sorted(tcc_plugin.__all__) == sorted(PUBLIC)


def test_every_public_name_resolves() -> None:
    for name in tcc_plugin.__all__:
        assert getattr(tcc_plugin, name) is not None, name


def test_importing_tcc_plugin_imports_no_provider_sdk(tmp_path: Path) -> None:
    code = (
        "import sys, tcc_plugin\n"
        "tcc_plugin.configure\n"  # the lazy attribute must stay light too
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'openai', 'anthropic', 'langchain', 'langchain_core', 'langchain_openai', "
        "'langchain_anthropic', 'vllm', 'httpx', 'httpx2', 'grpc'})\n"
        "print(','.join(bad))\n"
    )
    # cwd elsewhere: the repository root is not an import root (see the README).
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == ""


def test_exporters_and_integrations_live_inside_the_namespace() -> None:
    import importlib.util

    assert importlib.util.find_spec("tcc_plugin.exporters") is not None
    assert importlib.util.find_spec("tcc_plugin.integrations") is not None
    # nothing named plain `exporters` comes from this distribution
    from importlib.metadata import files

    top_level = {str(f).split("/")[0] for f in files("tcc-plugin") or []}
    assert "exporters" not in top_level and "integrations" not in top_level
