"""The sweep's table (``rich``) and its JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from tcc_plugin.sweep.analysis import Analysis, CellStats

__all__ = ["render", "table"]


def _usd(value: float | None) -> str:
    if value is None:
        return "?"
    return f"${value:.6f}" if value < 0.01 else f"${value:.4f}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _flags(a: Analysis, s: CellStats) -> Text:
    text = Text()
    if s.cell_id == a.recommended:
        text.append("✓ recommended ", style="bold green")
    if s.cell_id == a.sweet_spot and a.sweet_spot != a.recommended:
        text.append("★ sweet spot ", style="bold yellow")
    if s.cell_id == a.best:
        text.append("best ", style="cyan")
    if s.pareto:
        text.append("◆ pareto ", style="blue")
    if s.overthinking:
        text.append(
            f"⚠ overthinking vs {s.overthinking_vs} (p={s.overthinking_p:.2g})", style="bold red"
        )
    return text


def table(a: Analysis) -> Table:
    """One row per cell, cheapest first."""
    grid = Table(title=f"sweep {a.sweep}", title_justify="left", header_style="bold")
    for name, justify in (
        ("cell", "left"),
        ("answered", "right"),
        ("accuracy [95% CI]", "right"),
        ("out tok (reasoning)", "right"),
        ("$/question", "right"),
        ("calls", "right"),
        ("p50 s", "right"),
        ("p95 s", "right"),
        ("cv", "right"),
        ("", "left"),
    ):
        grid.add_column(name, justify=justify)  # type: ignore[arg-type]

    def key(s: CellStats) -> tuple[float, str]:
        return ((s.cost_usd or 0.0) if a.cost_axis == "usd" else s.total_tokens, s.cell_id)

    for s in sorted(a.cells, key=key):
        share = "" if s.reasoning_share is None else f" ({s.reasoning_share:.0%})"
        grid.add_row(
            s.cell_id,
            f"{s.answered}" + (f" ({s.errors} err)" if s.errors else ""),
            f"{s.accuracy:.1%} [{s.ci_low:.0%}, {s.ci_high:.0%}]",
            f"{s.output_tokens:,.0f}{share}",
            _usd(s.cost_usd),
            f"{s.calls:.1f}",
            _secs(s.latency_p50),
            _secs(s.latency_p95),
            "-" if s.latency_cv is None else f"{s.latency_cv:.2f}",
            _flags(a, s),
        )
    return grid


def render(a: Analysis, console: Console, refused: Mapping[str, str] | None = None) -> None:
    """Print the table and the verdicts."""
    lines = [
        Text.assemble(("best: ", "bold"), a.best or "-"),
        Text.assemble(
            ("sweet spot: ", "bold"),
            a.sweet_spot or "-",
            " (cheapest cell not significantly below the best)",
        ),
    ]
    if a.constraints:
        shown = ", ".join(f"{k}={v}" for k, v in a.constraints.items())
        lines.append(
            Text.assemble(("recommended: ", "bold"), a.recommended or "none", f" (under {shown})")
        )
    lines.append(Text.assemble(("overthinking: ", "bold"), ", ".join(a.overthinking) or "none"))
    lines.append(Text.assemble(("pareto frontier: ", "bold"), " → ".join(a.frontier)))
    lines.append(Text(f"test: {a.test}", style="dim"))
    for note in a.notes:
        lines.append(Text(f"note: {note}", style="yellow"))
    for cell, reason in (refused or {}).items():
        lines.append(Text(f"refused {cell}: {reason}", style="red"))
    console.print(Group(table(a), *lines))


def as_json(a: Analysis, refused: Mapping[str, str] | None = None) -> dict[str, Any]:
    data = a.to_dict()
    data["refused"] = dict(refused or {})
    return data
