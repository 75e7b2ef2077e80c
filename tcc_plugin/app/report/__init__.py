"""``tcc report``: what a JSON-lines trace file says, per model and operation.

Calls, tokens (input, cached, output, reasoning and its share), cost, latency
percentiles with their spread, time to first token, retries, budget outcomes and what
sampling saved, routing decisions per route, as rich tables, JSON (``--json``) or a
plot (``--plot out.png``).

    from tcc_plugin.app.report import load
    report = load("tcc-traces.jsonl")
    report.total.latency_s.p95
"""

from tcc_plugin.app.report._cli import load, main
from tcc_plugin.app.report._load import (
    CallRecord,
    RoutingRecord,
    SamplingRecord,
    Spans,
    classify,
)
from tcc_plugin.app.report._plot import plot
from tcc_plugin.app.report._render import render
from tcc_plugin.app.report._summary import (
    CallStats,
    Distribution,
    Report,
    RoutingStats,
    SamplingStats,
    percentile,
    summarize,
)

__all__ = [
    "CallRecord",
    "CallStats",
    "Distribution",
    "Report",
    "RoutingRecord",
    "RoutingStats",
    "SamplingRecord",
    "SamplingStats",
    "Spans",
    "classify",
    "load",
    "main",
    "percentile",
    "plot",
    "render",
    "summarize",
]
