"""The sweep's plots (``plots`` extra): accuracy against cost with the Pareto frontier
and the sweet spot, and accuracy against reasoning tokens per method. Drawn on bare
``Figure`` objects (no pyplot, no display)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tcc_plugin.sweep.analysis import Analysis, CellStats
from tcc_plugin.sweep.grid import thinking_tokens

__all__ = ["PLOT_INSTALL_HINT", "plot"]

PLOT_INSTALL_HINT = "pip install 'tcc-plugin[plots]'"
SIZE = (12.0, 4.8)
DPI = 100


def _x(a: Analysis, s: CellStats) -> float:
    return (s.cost_usd or 0.0) if a.cost_axis == "usd" else s.total_tokens


def _ring(ax: Any, x: float, y: float) -> None:
    """Mark an overthinking cell."""
    ax.scatter(x, y, s=160, facecolors="none", edgecolors="red", linewidths=1.5, zorder=4)


def plot(a: Analysis, path: str | os.PathLike[str]) -> Path:
    """Write both panels to one PNG of ``SIZE`` inches at ``DPI`` (1200x480 pixels).

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"sweep plots need matplotlib: {PLOT_INSTALL_HINT}") from exc
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    cost_ax, tokens_ax = fig.subplots(1, 2)
    methods = sorted({s.cell.method for s in a.cells})
    colour = {m: f"C{i}" for i, m in enumerate(methods)}

    for s in a.cells:
        err = [[s.accuracy - s.ci_low], [s.ci_high - s.accuracy]]
        cost_ax.errorbar(
            _x(a, s),
            s.accuracy,
            yerr=err,
            fmt="o",
            color=colour[s.cell.method],
            alpha=0.8,
            capsize=2,
            markersize=5,
        )
        if s.overthinking:
            _ring(cost_ax, _x(a, s), s.accuracy)
        cost_ax.annotate(
            s.cell_id,
            (_x(a, s), s.accuracy),
            fontsize=6,
            alpha=0.7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    front = [a.cell(c) for c in a.frontier]
    cost_ax.step(
        [_x(a, s) for s in front],
        [s.accuracy for s in front],
        where="post",
        color="black",
        linewidth=1,
        label="Pareto frontier",
    )
    if a.sweet_spot:
        spot = a.cell(a.sweet_spot)
        cost_ax.scatter(
            _x(a, spot),
            spot.accuracy,
            marker="*",
            s=320,
            color="gold",
            edgecolors="black",
            zorder=5,
            label=f"sweet spot: {spot.cell_id}",
        )
    for m in methods:
        cost_ax.scatter([], [], color=colour[m], label=m)
    if any(s.overthinking for s in a.cells):
        cost_ax.scatter([], [], s=100, facecolors="none", edgecolors="red", label="overthinking")
    xs = [_x(a, s) for s in a.cells]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        cost_ax.set_xscale("log")
    cost_ax.set_xlabel("USD per question" if a.cost_axis == "usd" else "tokens per question")
    cost_ax.set_ylabel("accuracy (95% CI)")
    cost_ax.set_ylim(-0.02, 1.02)
    cost_ax.set_title("accuracy vs cost")
    cost_ax.legend(fontsize=7, loc="best")
    cost_ax.grid(alpha=0.3)

    families: dict[tuple[object, ...], list[CellStats]] = {}
    for s in a.cells:
        families.setdefault(s.cell.family, []).append(s)
    for family, members in sorted(families.items(), key=lambda kv: str(kv[0])):
        members.sort(key=lambda s: (thinking_tokens(s.cell.thinking_budget) or 0, s.cell_id))
        label = "-".join(str(p) for p in family if p is not None)
        # a server that reports no reasoning tokens (llama-server chat): its output tokens
        reported = any(s.reasoning_tokens > 0 for s in members)
        if not reported:
            label += " (output tokens)"

        def tokens(s: CellStats, reported: bool = reported) -> float:
            return s.reasoning_tokens if reported else s.output_tokens

        tokens_ax.plot(
            [tokens(s) for s in members],
            [s.accuracy for s in members],
            marker="o",
            color=colour[members[0].cell.method],
            label=label,
            alpha=0.85,
        )
        for s in members:
            if s.overthinking:
                _ring(tokens_ax, tokens(s), s.accuracy)
    tokens_ax.set_xlabel("reasoning tokens per question")
    tokens_ax.set_ylabel("accuracy")
    tokens_ax.set_ylim(-0.02, 1.02)
    tokens_ax.set_title("accuracy vs reasoning tokens, per method")
    tokens_ax.legend(fontsize=7, loc="best")
    tokens_ax.grid(alpha=0.3)
    fig.suptitle(f"sweep {a.sweep}", fontsize=10)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=DPI)
    return target
