"""``--plot``: latency distribution per model, and cost against reasoning tokens.

Needs matplotlib (``pip install 'tcc-plugin[plots]'``). Draws on a bare ``Figure``, never
through pyplot, so it neither needs a display nor touches an application's backend.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

from tcc_plugin.app.report._load import CallRecord

__all__ = ["PLOT_INSTALL_HINT", "plot"]

PLOT_INSTALL_HINT = "pip install 'tcc-plugin[plots]'"
_MAX_POINTS_PER_MODEL = 2000


def _by_model(calls: Sequence[CallRecord]) -> dict[str, list[CallRecord]]:
    grouped: dict[str, list[CallRecord]] = {}
    for call in calls:
        if not call.refused:
            grouped.setdefault(call.model, []).append(call)
    # Most-used model on top of the latency panel.
    return dict(sorted(grouped.items(), key=lambda item: (len(item[1]), item[0])))


def plot(calls: Sequence[CallRecord], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write a PNG (or any format matplotlib knows from the suffix) to ``path``.

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter
    except ImportError as exc:
        raise ImportError(f"--plot needs matplotlib: {PLOT_INSTALL_HINT}") from exc

    grouped = _by_model(calls)
    models = list(grouped)
    fig = Figure(figsize=(13, max(4.5, 0.5 * len(models) + 2.5)), layout="constrained")
    latency_ax, cost_ax = fig.subplots(1, 2, width_ratios=(1.1, 1))
    colors = [f"C{i % 10}" for i in range(len(models))]
    rng = random.Random(0)  # deterministic jitter

    # -- latency distribution per model ------------------------------------------------
    durations = [[c.duration_s for c in grouped[m]] for m in models]
    if models:
        boxes = latency_ax.boxplot(
            durations,
            orientation="horizontal",
            tick_labels=[f"{m}\n(n={len(grouped[m])})" for m in models],
            showfliers=False,
            whis=(5, 95),
            patch_artist=True,
            widths=0.6,
        )
        for patch, color in zip(boxes["boxes"], colors, strict=True):
            patch.set_facecolor(color)
            patch.set_alpha(0.25)
        for row, (values, color) in enumerate(zip(durations, colors, strict=True), start=1):
            shown = (
                values
                if len(values) <= _MAX_POINTS_PER_MODEL
                else rng.sample(values, _MAX_POINTS_PER_MODEL)
            )
            jitter = [row + rng.uniform(-0.18, 0.18) for _ in shown]
            latency_ax.scatter(shown, jitter, s=9, color=color, alpha=0.55, linewidths=0)
        positive = [v for values in durations for v in values if v > 0]
        if positive and max(positive) / min(positive) > 50:
            latency_ax.set_xscale("log")
    else:
        latency_ax.text(0.5, 0.5, "no calls", ha="center", va="center")
    latency_ax.set_title("Latency per model (box: p25-p75, whiskers: p5-p95)")
    latency_ax.set_xlabel("seconds")
    latency_ax.grid(axis="x", alpha=0.3)

    # -- cost against reasoning tokens -----------------------------------------------------
    priced = 0
    for model, color in zip(models, colors, strict=True):
        points = [
            (c.reasoning_tokens, c.cost_usd) for c in grouped[model] if c.cost_usd is not None
        ]
        if not points:
            continue
        priced += len(points)
        xs, ys = zip(*points, strict=True)
        cost_ax.scatter(xs, ys, s=16, color=color, alpha=0.7, label=model, linewidths=0)
    if priced:
        cost_ax.legend(loc="upper left", fontsize="small", frameon=False)
        cost_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.4g}"))
    else:
        cost_ax.text(0.5, 0.5, "no priced calls", ha="center", va="center")
    cost_ax.set_title("Cost per call against reasoning tokens")
    cost_ax.set_xlabel("reasoning tokens")
    cost_ax.set_ylabel("cost (USD)")
    cost_ax.grid(alpha=0.3)

    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
