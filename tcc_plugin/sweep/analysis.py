"""What a sweep's results say: accuracy, spend and latency per cell, overthinking, the
sweet spot and the Pareto frontier.

- **Accuracy** is over the answered (question, seed) pairs of a cell (an answer that
  failed counts as wrong; budget refusals are left out), with a Wilson 95 % interval.
- **Overthinking**: within a family (same method, N and stop rule), a cell is flagged
  when its accuracy is significantly *lower* than at a smaller thinking budget, by the
  exact one-sided McNemar test on the pairs both cells answered, with Holm's
  correction over every such comparison of the sweep: the chance that any flag of a
  sweep is noise is at most ``alpha`` (default 5 %).
- **Sweet spot**: the cheapest cell whose accuracy is statistically indistinguishable
  from the best cell's (exact two-sided McNemar on the paired answers, p >= alpha).
  Under constraints (USD per question, p95 latency, minimum accuracy) the same rule
  runs among the cells that satisfy them: the *recommended* cell.
- **Pareto frontier**: cells no other cell beats on both accuracy and cost.

"Cost" is USD per question when every cell is priced, else mean tokens per question.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tcc_plugin.sweep.grid import Cell, thinking_tokens
from tcc_plugin.sweep.stats import (
    holm,
    mcnemar_greater,
    mcnemar_two_sided,
    percentile,
    wilson_interval,
)

__all__ = ["TEST_DESCRIPTION", "Analysis", "CellStats", "Comparison", "analyze"]

TEST_DESCRIPTION = (
    "exact one-sided McNemar test on paired (question, seed) answers, Holm-corrected "
    "over all smaller-vs-larger budget comparisons; family-wise error rate {alpha:.0%}"
)

Unit = tuple[str, int]


@dataclass(frozen=True, slots=True)
class CellStats:
    """One cell's figures (means are per question)."""

    cell_id: str
    cell: Cell
    answered: int
    correct: int
    errors: int
    accuracy: float
    ci_low: float
    ci_high: float
    input_tokens: float
    output_tokens: float
    reasoning_tokens: float
    reasoning_share: float | None
    cost_usd: float | None
    calls: float
    latency_p50: float | None
    latency_p95: float | None
    latency_cv: float | None
    overthinking: bool = False
    overthinking_vs: str | None = None
    overthinking_p: float | None = None
    pareto: bool = False

    @property
    def total_tokens(self) -> float:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Comparison:
    """A paired comparison of a ``larger`` budget with a ``smaller`` one of its family:
    ``worse`` pairs the larger got wrong and the smaller right, ``better`` the other
    way, the one-sided p-value and whether Holm's procedure rejects it."""

    smaller: str
    larger: str
    worse: int
    better: int
    p_value: float
    significant: bool


@dataclass(frozen=True, slots=True)
class Analysis:
    """The analysis of a sweep (see the module docs)."""

    sweep: str
    alpha: float
    cost_axis: str
    cells: tuple[CellStats, ...]
    comparisons: tuple[Comparison, ...]
    best: str | None
    sweet_spot: str | None
    recommended: str | None
    constraints: Mapping[str, float]
    frontier: tuple[str, ...]
    test: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def cell(self, cell_id: str) -> CellStats:
        for stats in self.cells:
            if stats.cell_id == cell_id:
                return stats
        raise KeyError(cell_id)

    @property
    def overthinking(self) -> tuple[str, ...]:
        return tuple(c.cell_id for c in self.cells if c.overthinking)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["overthinking"] = list(self.overthinking)
        return data


def _cost(stats: CellStats, axis: str) -> float:
    if axis == "usd":
        assert stats.cost_usd is not None
        return stats.cost_usd
    return stats.total_tokens


def _cell_stats(cell_id: str, cell: Cell, rows: list[Mapping[str, Any]]) -> CellStats:
    answered = len(rows)
    correct = sum(1 for r in rows if r["correct"])
    low, high = wilson_interval(correct, answered)
    costs = [r["cost_usd"] for r in rows]
    latencies = [float(r["latency_s"]) for r in rows]
    mean_latency = statistics.fmean(latencies) if latencies else 0.0

    def mean(key: str) -> float:
        return statistics.fmean(float(r[key] or 0) for r in rows) if rows else 0.0

    output, reasoning = mean("output_tokens"), mean("reasoning_tokens")
    return CellStats(
        cell_id=cell_id,
        cell=cell,
        answered=answered,
        correct=correct,
        errors=sum(1 for r in rows if r["error"]),
        accuracy=correct / answered if answered else 0.0,
        ci_low=low,
        ci_high=high,
        input_tokens=mean("input_tokens"),
        output_tokens=output,
        reasoning_tokens=reasoning,
        reasoning_share=reasoning / output if output else None,
        cost_usd=None if any(c is None for c in costs) or not costs else statistics.fmean(costs),
        calls=mean("calls"),
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        latency_cv=(statistics.pstdev(latencies) / mean_latency) if mean_latency > 0 else None,
    )


def _pairs(a: Mapping[Unit, bool], b: Mapping[Unit, bool]) -> tuple[int, int]:
    """(a right and b wrong, a wrong and b right) over the units both answered."""
    shared = a.keys() & b.keys()
    return (
        sum(1 for u in shared if a[u] and not b[u]),
        sum(1 for u in shared if b[u] and not a[u]),
    )


def _overthinking(
    stats: dict[str, CellStats], outcomes: dict[str, dict[Unit, bool]], alpha: float
) -> list[Comparison]:
    families: dict[tuple[Any, ...], list[CellStats]] = {}
    for s in stats.values():
        if s.cell.thinking_budget is not None:
            families.setdefault(s.cell.family, []).append(s)
    tests: list[tuple[str, str, int, int, float]] = []
    for members in families.values():
        members.sort(key=lambda s: thinking_tokens(s.cell.thinking_budget) or 0)
        for i, small in enumerate(members):
            for large in members[i + 1 :]:
                if thinking_tokens(large.cell.thinking_budget) == thinking_tokens(
                    small.cell.thinking_budget
                ):
                    continue
                worse, better = _pairs(outcomes[small.cell_id], outcomes[large.cell_id])
                tests.append(
                    (small.cell_id, large.cell_id, worse, better, mcnemar_greater(worse, better))
                )
    rejected = holm([t[4] for t in tests], alpha)
    return [Comparison(*t, significant=r) for t, r in zip(tests, rejected, strict=True)]


def _sweet_spot(
    candidates: list[CellStats], outcomes: dict[str, dict[Unit, bool]], alpha: float, axis: str
) -> tuple[str | None, str | None]:
    """(best, cheapest indistinguishable from best) among ``candidates``."""
    if not candidates:
        return None, None
    best = max(candidates, key=lambda s: (s.accuracy, -_cost(s, axis)))
    tied = []
    for s in candidates:
        worse, better = _pairs(outcomes[best.cell_id], outcomes[s.cell_id])
        if s is best or mcnemar_two_sided(worse, better) >= alpha:
            tied.append(s)
    spot = min(tied, key=lambda s: (_cost(s, axis), -s.accuracy))
    return best.cell_id, spot.cell_id


def _frontier(cells: list[CellStats], axis: str) -> set[str]:
    keep = set()
    for s in cells:
        dominated = any(
            o is not s
            and _cost(o, axis) <= _cost(s, axis)
            and o.accuracy >= s.accuracy
            and (_cost(o, axis) < _cost(s, axis) or o.accuracy > s.accuracy)
            for o in cells
        )
        if not dominated:
            keep.add(s.cell_id)
    return keep


def analyze(
    rows: Iterable[Mapping[str, Any]],
    *,
    alpha: float = 0.05,
    max_usd_per_question: float | None = None,
    max_p95_seconds: float | None = None,
    min_accuracy: float | None = None,
    sweep: str | None = None,
) -> Analysis:
    """Analyse results rows (of one sweep: ``sweep`` picks it when the rows hold
    several). Raises ``ValueError`` when there is nothing to analyse."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    rows = [r for r in rows if not r.get("refused")]
    names = sorted({str(r["sweep"]) for r in rows})
    if sweep is None:
        if len(names) > 1:
            raise ValueError(f"the rows hold several sweeps ({', '.join(names)}): pick one")
        sweep = names[0] if names else ""
    rows = [r for r in rows if r["sweep"] == sweep]
    if not rows:
        raise ValueError(f"no answered rows for sweep {sweep!r}")
    by_cell: dict[str, list[Mapping[str, Any]]] = {}
    cells: dict[str, Cell] = {}
    outcomes: dict[str, dict[Unit, bool]] = {}
    for r in rows:
        cid = str(r["cell_id"])
        by_cell.setdefault(cid, []).append(r)
        cells.setdefault(cid, Cell.from_dict(r["cell"]))
        outcomes.setdefault(cid, {})[(str(r["question_id"]), int(r["seed"]))] = bool(r["correct"])
    stats = {cid: _cell_stats(cid, cells[cid], by_cell[cid]) for cid in sorted(by_cell)}
    axis = "usd" if all(s.cost_usd is not None for s in stats.values()) else "tokens"
    notes = [] if axis == "usd" else ["cost unknown for some cell: comparing mean tokens"]
    comparisons = _overthinking(stats, outcomes, alpha)
    for cid, s in list(stats.items()):
        hits = [c for c in comparisons if c.larger == cid and c.significant]
        if hits:
            worst = min(hits, key=lambda c: c.p_value)
            stats[cid] = _replace(s, overthinking=True, overthinking_vs=worst.smaller,
                                  overthinking_p=worst.p_value)  # fmt: skip
    on_frontier = _frontier(list(stats.values()), axis)
    stats = {cid: _replace(s, pareto=cid in on_frontier) for cid, s in stats.items()}
    everything = list(stats.values())
    best, spot = _sweet_spot(everything, outcomes, alpha, axis)
    constraints = {
        k: v
        for k, v in (
            ("max_usd_per_question", max_usd_per_question),
            ("max_p95_seconds", max_p95_seconds),
            ("min_accuracy", min_accuracy),
        )
        if v is not None
    }
    eligible = [s for s in everything if _meets(s, constraints)]
    if constraints and not eligible:
        notes.append("no cell meets the constraints")
    _, recommended = _sweet_spot(eligible, outcomes, alpha, axis)
    return Analysis(
        sweep=sweep,
        alpha=alpha,
        cost_axis=axis,
        cells=tuple(everything),
        comparisons=tuple(comparisons),
        best=best,
        sweet_spot=spot,
        recommended=recommended,
        constraints=constraints,
        frontier=tuple(sorted(on_frontier, key=lambda c: _cost(stats[c], axis))),
        test=TEST_DESCRIPTION.format(alpha=alpha),
        notes=tuple(notes),
    )


def _meets(s: CellStats, constraints: Mapping[str, float]) -> bool:
    usd = constraints.get("max_usd_per_question")
    if usd is not None and (s.cost_usd is None or s.cost_usd > usd):
        return False
    p95 = constraints.get("max_p95_seconds")
    if p95 is not None and (s.latency_p95 is None or s.latency_p95 > p95):
        return False
    low = constraints.get("min_accuracy")
    return low is None or s.accuracy >= low


def _replace(s: CellStats, **changes: Any) -> CellStats:
    from dataclasses import replace

    return replace(s, **changes)
