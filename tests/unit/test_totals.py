"""Running totals behind the observable cost and reasoning-token counters: exact sums
per attribute set under concurrency, a bounded number of series, and what a metric
reader collects."""

from __future__ import annotations

import threading
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.metrics import CallbackOptions
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tcc_plugin.telemetry.totals import OVERFLOW_ATTRIBUTES, Totals

MODELS = ({"gen_ai.request.model": "o3"}, {"gen_ai.request.model": "claude-opus-4-1"})
COSTS = st.decimals(min_value=0, max_value=Decimal("0.5"), places=6)
ADDS = st.lists(
    st.tuples(st.sampled_from([0, 1]), COSTS, st.integers(min_value=0, max_value=50_000)),
    max_size=200,
)


@settings(max_examples=60, deadline=None)
@given(adds=ADDS, threads=st.integers(min_value=1, max_value=8))
def test_concurrent_adds_sum_exactly_per_attribute_set(
    adds: list[tuple[int, Decimal, int]], threads: int
) -> None:
    totals = Totals(("cost", "reasoning_tokens"))
    start = threading.Barrier(threads)

    def worker(share: list[tuple[int, Decimal, int]]) -> None:
        start.wait()
        for model, cost, reasoning in share:
            totals.add(MODELS[model], cost, reasoning)

    pool = [threading.Thread(target=worker, args=(adds[i::threads],)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()

    for quantity, index in (("cost", 1), ("reasoning_tokens", 2)):
        got = {attrs["gen_ai.request.model"]: v for attrs, v in totals.snapshot(quantity)}
        expected = {
            MODELS[m]["gen_ai.request.model"]: sum(
                (a[index] for a in adds if a[0] == m), Decimal(0) if index == 1 else 0
            )
            for m in {a[0] for a in adds}
        }
        assert got == expected


def test_series_beyond_the_limit_share_the_overflow_row() -> None:
    totals = Totals(("cost",), max_series=2)
    for i, cost in enumerate(("0.1", "0.2", "0.3", "0.4")):
        totals.add({"gen_ai.request.model": f"m{i}"}, Decimal(cost))
    rows = {tuple(sorted(a.items())): v for a, v in totals.snapshot("cost")}
    assert rows == {
        (("gen_ai.request.model", "m0"),): Decimal("0.1"),
        (("gen_ai.request.model", "m1"),): Decimal("0.2"),
        tuple(OVERFLOW_ATTRIBUTES.items()): Decimal("0.7"),
    }


def test_the_callback_reports_cumulative_totals_to_a_reader() -> None:
    totals = Totals(("cost", "reasoning_tokens"))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    meter.create_observable_counter("cost", callbacks=[totals.callback("cost", as_float=True)])
    meter.create_observable_counter("reasoning", callbacks=[totals.callback("reasoning_tokens")])
    totals.add(MODELS[0], Decimal("0.008064"), 768)
    totals.add(MODELS[0], Decimal("0.000001"), 0)

    def points() -> dict[str, tuple[object, dict[str, object]]]:
        data = reader.get_metrics_data()
        assert data is not None
        return {
            m.name: (p.value, dict(p.attributes or {}))
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
            for p in m.data.data_points
        }

    assert points() == {
        "cost": (0.008065, {"gen_ai.request.model": "o3"}),
        "reasoning": (768, {"gen_ai.request.model": "o3"}),
    }
    totals.add(MODELS[0], Decimal("0.001"), 32)
    assert points()["reasoning"] == (800, {"gen_ai.request.model": "o3"})  # cumulative
    observed = totals.callback("reasoning_tokens")(CallbackOptions())
    assert [(o.value, dict(o.attributes or {})) for o in observed] == [(800, MODELS[0])]
