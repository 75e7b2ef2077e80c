"""The report as rich tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tcc_plugin.app.report._summary import (
    CallStats,
    Distribution,
    Report,
    RoutingStats,
    SamplingStats,
)
from tcc_plugin.telemetry import names

__all__ = ["print_report", "render"]

_OUTCOME_ORDER = (
    names.OUTCOME_OK,
    names.OUTCOME_CLAMPED,
    names.OUTCOME_REFUSED,
    names.OUTCOME_NONE,
)
_DASH = "-"


# -- cells -------------------------------------------------------------------------------
def _int(value: int) -> str:
    return f"{value:,}"


def _share(value: float | None) -> str:
    return _DASH if value is None else f"{value:.1%}"


def _usd(value: float | None) -> str:
    """Dollars to four significant digits, never in exponent form: ``$0.00418``."""
    if value is None:
        return _DASH
    if value == 0:
        return "$0"
    digits = min(max(2, 3 - math.floor(math.log10(abs(value)))), 10)
    text = f"{value:,.{digits}f}"
    if digits > 2:
        whole, _, fraction = text.partition(".")
        text = f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def _seconds(value: float | None) -> str:
    """Seconds to the millisecond (tenths from 10 s): ``0.040``, ``1.234``, ``12.3``."""
    if value is None:
        return _DASH
    if value < 10:
        return f"{value:.3f}"
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def _dist(dist: Distribution | None) -> list[str]:
    if dist is None:
        return [_DASH] * 7
    return [
        _int(dist.count),
        _seconds(dist.p50),
        _seconds(dist.p95),
        _seconds(dist.p99),
        _seconds(dist.mean),
        _seconds(dist.stdev),
        _DASH if dist.cv is None else f"{dist.cv:.2f}",
    ]


# -- tables --------------------------------------------------------------------------------
def _rows(report: Report) -> list[tuple[CallStats, bool]]:
    rows = [(s, False) for s in report.by_model]
    if len(report.by_model) > 1:
        rows.append((report.total, True))
    return rows


def _table(title: str, first: Sequence[str], numbers: Sequence[str], caption: str = "") -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        caption=caption or None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for header in first:
        # Names fold when the terminal is narrow; numbers never do.
        table.add_column(header, overflow="fold", min_width=9)
    for header in numbers:
        table.add_column(header, justify="right", no_wrap=True)
    return table


def _model_label(stats: CallStats, report: Report) -> str:
    if stats.model == "*":
        return "all"
    shared = sum(1 for s in report.by_model if s.model == stats.model) > 1
    return f"{stats.model} ({stats.provider or _DASH})" if shared else stats.model


def _per_model(
    title: str,
    report: Report,
    numbers: Sequence[str],
    cells: Sequence[tuple[CallStats, bool, Sequence[str]]],
    caption: str = "",
) -> Table:
    operations = {s.operation for s in report.by_model}
    one_operation = len(operations) == 1
    if one_operation:  # the common case: say it once, in the title, and save a column
        title = f"{title}: {next(iter(operations)) or _DASH} calls"
    table = _table(title, ("Model",) if one_operation else ("Model", "Operation"), numbers, caption)
    for stats, is_total, values in cells:
        if is_total:
            table.add_section()
        label = [_model_label(stats, report)]
        if not one_operation:
            label.append("" if stats.model == "*" else stats.operation or _DASH)
        table.add_row(*label, *values, style="bold" if is_total else None)
    return table


def _cost_table(report: Report) -> Table:
    return _per_model(
        "Calls and cost",
        report,
        ("Calls", "Errors", "Cost", "Cost/call", "Unpriced"),
        [
            (
                s,
                total,
                (
                    _int(s.calls),
                    _int(s.errors),
                    _usd(s.cost_usd if s.priced_calls else None),
                    _usd(s.cost_per_call_usd),
                    _int(s.unpriced_calls),
                ),
            )
            for s, total in _rows(report)
        ],
        "Cost/call: mean over priced calls. Unpriced: calls of a model with no known price.",
    )


def _token_table(report: Report) -> Table:
    return _per_model(
        "Tokens",
        report,
        ("Input", "Cached", "Output", "Reasoning", "Reasoning %"),
        [
            (
                s,
                total,
                (
                    _int(s.input_tokens),
                    _int(s.cached_input_tokens),
                    _int(s.output_tokens),
                    _int(s.reasoning_tokens),
                    _share(s.reasoning_share),
                ),
            )
            for s, total in _rows(report)
        ],
        "Cached is a part of input, reasoning a part of output; reasoning % = reasoning / output.",
    )


_DIST_HEADERS = ("n", "p50", "p95", "p99", "Mean", "Stdev", "CV")


def _latency_table(report: Report) -> Table:
    return _per_model(
        "Latency in seconds",
        report,
        _DIST_HEADERS,
        [(s, total, _dist(s.latency_s)) for s, total in _rows(report)],
        "Calls refused by a budget are left out. CV: coefficient of variation, stdev / mean.",
    )


def _ttft_table(report: Report) -> Table | None:
    if report.total.time_to_first_token_s is None:
        return None
    return _per_model(
        "Time to first token in seconds (streamed calls)",
        report,
        _DIST_HEADERS,
        [(s, total, _dist(s.time_to_first_token_s)) for s, total in _rows(report)],
    )


def _outcomes(report: Report) -> list[str]:
    seen = {key for s in report.by_model for key in s.budget_outcomes}
    known = [o for o in _OUTCOME_ORDER if o in seen]
    return known + sorted(seen - set(known))


def _control_table(report: Report) -> Table | None:
    outcomes = _outcomes(report)
    if not outcomes and not report.total.retries:
        return None
    return _per_model(
        "Retries and budget outcomes",
        report,
        ("Retried calls", "Retries", *outcomes),
        [
            (
                s,
                total,
                (
                    _int(s.retried_calls),
                    _int(s.retries),
                    *(_int(s.budget_outcomes.get(o, 0)) for o in outcomes),
                ),
            )
            for s, total in _rows(report)
        ],
        "Retries: attempts after the first. Budget outcomes: calls per outcome of their budget.",
    )


def _sampling_table(sampling: Sequence[SamplingStats]) -> Table | None:
    if not sampling:
        return None
    table = _table(
        "Sampling",
        ("Group",),
        ("Groups", "Asked", "Done", "Early", "Saved", "Cost", "Est. saved"),
        "Asked: samples requested. Done: completed. Early: groups stopped early. Saved: asked "
        "but not done (share of asked); est. saved prices them at the mean sample cost. "
        "Launched and cancelled samples: --json.",
    )
    for s in sampling:
        saved = _int(s.saved_samples)
        if s.saved_share is not None:
            saved += f" ({s.saved_share:.0%})"
        table.add_row(
            s.name,
            _int(s.groups),
            _int(s.requested),
            _int(s.completed),
            _int(s.stopped_early),
            saved,
            _usd(s.cost_usd),
            _usd(s.est_saved_usd),
        )
    return table


def _routing_table(routing: Sequence[RoutingStats]) -> Table | None:
    if not routing:
        return None
    table = _table(
        "Routing",
        ("Router", "Route"),
        ("Decisions", "Share", "Calls", "Cost", "Cost/decision", "Escalated", "Skipped"),
        "Share: of the router's decisions. Escalated: decisions that tried a cheaper route "
        "first (cascades). Skipped: routes passed over because the budget could not pay.",
    )
    for r in routing:
        table.add_row(
            r.router,
            r.route,
            _int(r.decisions),
            _share(r.share),
            _int(r.calls),
            _usd(r.cost_usd),
            _usd(r.cost_per_decision_usd),
            _share(r.escalation_rate) if r.kind == "cascade" else "-",
            _int(r.skipped),
        )
    return table


def render(report: Report) -> RenderableType:
    """The report as one rich renderable."""
    files = ", ".join(report.files) or "spans"
    total = report.total
    heading = Text.assemble(
        ("tcc report", "bold"),
        f"  {files}: {total.calls:,} LLM call{'s' if total.calls != 1 else ''} in "
        f"{report.traces:,} trace{'s' if report.traces != 1 else ''} ({report.spans:,} spans)\n",
    )
    if not total.calls:
        return Group(heading, Text("No LLM call spans (with gen_ai.operation.name) found."))
    parts: list[RenderableType] = [heading]
    for table in (
        _cost_table(report),
        _token_table(report),
        _latency_table(report),
        _ttft_table(report),
        _control_table(report),
        _sampling_table(report.sampling),
        _routing_table(report.routing),
    ):
        if table is not None:
            parts.append(table)
    return Group(*parts)


def print_report(report: Report, console: Console) -> None:
    """Print ``report`` on ``console``."""
    console.print(render(report))
