"""Statistics over calls: per (provider, model, operation), in total, and per sampler."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tcc_plugin.app.report._load import CallRecord, RoutingRecord, SamplingRecord, Spans

__all__ = ["CallStats", "Distribution", "Report", "SamplingStats", "percentile", "summarize"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ascending ``sorted_values``, interpolated
    linearly between closest ranks (NumPy's default method)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, not {q}")
    position = (len(sorted_values) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of a sample of durations (seconds). ``stdev`` is the sample standard
    deviation (0 for one value); ``cv`` the coefficient of variation, stdev / mean."""

    count: int
    mean: float
    stdev: float
    cv: float | None
    min: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution | None:
        """The distribution of ``values``; ``None`` when there are none."""
        ordered = sorted(values)
        if not ordered:
            return None
        mean = statistics.fmean(ordered)
        stdev = statistics.stdev(ordered) if len(ordered) > 1 else 0.0
        return cls(
            count=len(ordered),
            mean=mean,
            stdev=stdev,
            cv=stdev / mean if mean > 0 else None,
            min=ordered[0],
            p50=percentile(ordered, 50),
            p95=percentile(ordered, 95),
            p99=percentile(ordered, 99),
            max=ordered[-1],
        )


@dataclass(frozen=True, slots=True)
class CallStats:
    """The calls of one (provider, model, operation), or of all of them (``"*"``).

    Token counts follow the GenAI conventions: cached and cache-write tokens are parts
    of input, reasoning a part of output; ``reasoning_share`` is reasoning / output.
    Latency and time to first token leave out calls a budget refused (never sent).
    """

    provider: str
    model: str
    operation: str
    calls: int
    errors: int
    refused: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    reasoning_share: float | None
    cost_usd: float
    priced_calls: int
    unpriced_calls: int
    latency_s: Distribution | None
    time_to_first_token_s: Distribution | None
    retried_calls: int
    retries: int
    budget_outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def cost_per_call_usd(self) -> float | None:
        """Mean cost of the priced calls."""
        return self.cost_usd / self.priced_calls if self.priced_calls else None

    @classmethod
    def of(
        cls, calls: Sequence[CallRecord], provider: str, model: str, operation: str
    ) -> CallStats:
        """Aggregate ``calls`` under the given key."""
        sent = [c for c in calls if not c.refused]
        output = sum(c.output_tokens for c in calls)
        reasoning = sum(c.reasoning_tokens for c in calls)
        priced = [c.cost_usd for c in calls if c.cost_usd is not None]
        outcomes = Counter(c.budget_outcome for c in calls if c.budget_outcome)
        return cls(
            provider=provider,
            model=model,
            operation=operation,
            calls=len(calls),
            errors=sum(1 for c in calls if c.error is not None and not c.refused),
            refused=sum(1 for c in calls if c.refused),
            input_tokens=sum(c.input_tokens for c in calls),
            cached_input_tokens=sum(c.cached_input_tokens for c in calls),
            cache_write_tokens=sum(c.cache_write_tokens for c in calls),
            output_tokens=output,
            reasoning_tokens=reasoning,
            reasoning_share=reasoning / output if output else None,
            cost_usd=math.fsum(priced),
            priced_calls=len(priced),
            unpriced_calls=sum(1 for c in calls if c.has_usage and c.cost_usd is None),
            latency_s=Distribution.of(c.duration_s for c in sent),
            time_to_first_token_s=Distribution.of(
                c.time_to_first_chunk_s for c in sent if c.time_to_first_chunk_s is not None
            ),
            retried_calls=sum(1 for c in calls if c.retries),
            retries=sum(c.retries for c in calls),
            budget_outcomes=dict(sorted(outcomes.items())),
        )


@dataclass(frozen=True, slots=True)
class SamplingStats:
    """Sampling groups of one name (e.g. ``best_of_n``) and what stopping early saved.

    ``saved_samples`` is requested minus completed samples, summed over groups whose
    requested count is known; ``est_saved_usd`` prices them at the mean cost of a
    sample of these groups.
    """

    name: str
    groups: int
    requested: int
    launched: int
    completed: int
    cancelled: int
    stopped_early: int
    saved_samples: int
    saved_share: float | None
    cost_usd: float
    est_saved_usd: float | None

    @classmethod
    def of(cls, name: str, groups: Sequence[SamplingRecord]) -> SamplingStats:
        """Aggregate the sampling ``groups`` called ``name``."""
        requested = launched = completed = cancelled = saved = 0
        for group in groups:
            done = group.completed if group.completed is not None else group.calls
            run = group.launched if group.launched is not None else group.calls
            launched += run
            completed += done
            cancelled += group.cancelled or 0
            if group.requested is not None:
                requested += group.requested
                saved += max(group.requested - done, 0)
        priced = sum(g.priced_calls for g in groups)
        cost = math.fsum(g.cost_usd for g in groups)
        return cls(
            name=name,
            groups=len(groups),
            requested=requested,
            launched=launched,
            completed=completed,
            cancelled=cancelled,
            stopped_early=sum(1 for g in groups if g.stopped_early),
            saved_samples=saved,
            saved_share=saved / requested if requested else None,
            cost_usd=cost,
            est_saved_usd=saved * cost / priced if priced else None,
        )


@dataclass(frozen=True, slots=True)
class RoutingStats:
    """The decisions of one router (or cascade) that chose one route.

    ``share`` is this route's part of the router's decisions; ``escalation_rate`` the
    share of them that escalated at least once (cascades); ``skipped`` how many times a
    route the budget could not pay for was passed over on the way here."""

    router: str
    kind: str
    route: str
    decisions: int
    share: float
    calls: int
    cost_usd: float
    cost_per_decision_usd: float | None
    escalation_rate: float
    skipped: int
    failed: int

    @classmethod
    def of(cls, decisions: Sequence[RoutingRecord], of_router: int) -> RoutingStats:
        first = decisions[0]
        cost = math.fsum(d.cost_usd for d in decisions)
        return cls(
            router=first.router,
            kind=first.kind,
            route=first.route,
            decisions=len(decisions),
            share=len(decisions) / of_router if of_router else 0.0,
            calls=sum(d.calls for d in decisions),
            cost_usd=cost,
            cost_per_decision_usd=cost / len(decisions) if decisions else None,
            escalation_rate=sum(1 for d in decisions if d.escalations) / len(decisions),
            skipped=sum(d.skipped for d in decisions),
            failed=sum(1 for d in decisions if d.failed),
        )


@dataclass(frozen=True, slots=True)
class Report:
    """Everything ``tcc report`` shows; :meth:`to_dict` is its ``--json`` form."""

    files: tuple[str, ...]
    spans: int
    traces: int
    by_model: tuple[CallStats, ...]
    total: CallStats
    sampling: tuple[SamplingStats, ...]
    calls: tuple[CallRecord, ...] = field(repr=False)
    routing: tuple[RoutingStats, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` output), without the per-call records."""

        def stats(s: CallStats) -> dict[str, Any]:
            data = asdict(s)
            data["cost_per_call_usd"] = s.cost_per_call_usd
            return data

        return {
            "files": list(self.files),
            "spans": self.spans,
            "traces": self.traces,
            "calls": self.total.calls,
            "by_model": [stats(s) for s in self.by_model],
            "total": stats(self.total),
            "sampling": [asdict(s) for s in self.sampling],
            "routing": [asdict(r) for r in self.routing],
        }


def summarize(spans: Spans, files: Sequence[str] = ()) -> Report:
    """Aggregate the calls and sampling groups of ``spans``."""
    keyed: dict[tuple[str, str, str], list[CallRecord]] = {}
    for call in spans.calls:
        keyed.setdefault((call.provider, call.model, call.operation), []).append(call)
    by_model = tuple(
        CallStats.of(calls, *key)
        for key, calls in sorted(keyed.items(), key=lambda item: (-len(item[1]), item[0]))
    )
    named: dict[str, list[SamplingRecord]] = {}
    for group in spans.sampling:
        named.setdefault(group.name, []).append(group)
    per_router: dict[str, list[RoutingRecord]] = {}
    for decision in spans.routing:
        per_router.setdefault(decision.router, []).append(decision)
    routing: list[RoutingStats] = []
    for _, decisions in sorted(per_router.items()):
        by_route: dict[str, list[RoutingRecord]] = {}
        for decision in decisions:
            by_route.setdefault(decision.route, []).append(decision)
        for chosen in sorted(by_route.values(), key=len, reverse=True):
            routing.append(RoutingStats.of(chosen, len(decisions)))
    return Report(
        files=tuple(files),
        spans=spans.spans,
        traces=spans.traces,
        by_model=by_model,
        total=CallStats.of(spans.calls, "*", "*", "*"),
        sampling=tuple(SamplingStats.of(name, groups) for name, groups in sorted(named.items())),
        calls=spans.calls,
        routing=tuple(routing),
    )
