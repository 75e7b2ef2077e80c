"""tcc report: statistics over span records, checked against numbers worked out by hand.

Records are written in the JSON-lines exporter's format (see exporters/jsonl.py); the
report of a file produced by the real lifecycle is in test_report_cli.py.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcc_plugin.app.report import (
    Distribution,
    Report,
    classify,
    load,
    main,
    percentile,
    summarize,
)
from tcc_plugin.telemetry import names

_ids = itertools.count(1)
TRACE = "0af7651916cd43dd8448eb211c80319c"


def span(
    name: str = "chat o3",
    *,
    parent: dict[str, Any] | None = None,
    trace_id: str = TRACE,
    duration: float = 1.0,
    start: int = 0,
    error: str | None = None,
    events: list[dict[str, Any]] | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    """One span record; attribute keys use ``__`` for ``.`` (``gen_ai__usage__...``)."""
    attrs = {key.replace("__", "."): value for key, value in attributes.items()}
    start_ns = 1_800_000_000_000_000_000 + start
    return {
        "name": name,
        "trace_id": trace_id,
        "span_id": format(next(_ids), "016x"),
        "parent_span_id": parent["span_id"] if parent else None,
        "kind": "CLIENT",
        "start_time_ns": start_ns,
        "end_time_ns": start_ns + int(duration * 1e9),
        "duration_s": duration,
        "status": {"code": "ERROR" if error else "UNSET", "description": error},
        "attributes": attrs,
        "events": events or [],
        "links": [],
        "resource": {"service.name": "test"},
        "scope": {"name": "tcc_plugin", "version": "0", "schema_url": ""},
    }


def call(
    model: str = "o3",
    *,
    operation: str = "chat",
    provider: str = "openai",
    input_tokens: int = 100,
    cached: int = 0,
    output: int = 50,
    reasoning: int = 0,
    cost: float | None = 0.001,
    outcome: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        names.OPERATION_NAME: operation,
        names.PROVIDER_NAME: provider,
        names.REQUEST_MODEL: model,
        names.USAGE_INPUT_TOKENS: input_tokens,
        names.USAGE_CACHE_READ_INPUT_TOKENS: cached,
        names.USAGE_OUTPUT_TOKENS: output,
        names.USAGE_REASONING_OUTPUT_TOKENS: reasoning,
    }
    if cost is not None:
        attrs[names.COST_USD] = cost
    if outcome is not None:
        attrs[names.BUDGET_OUTCOME] = outcome
    extra = {k: v for k, v in kwargs.items() if k in ("parent", "duration", "start", "error")}
    extra.update({k: v for k, v in kwargs.items() if k in ("events", "trace_id")})
    record = span(f"{operation} {model}", **extra)
    record["attributes"].update(attrs)
    if kwargs.get("error"):
        record["attributes"][names.ERROR_TYPE] = kwargs["error"]
    record["attributes"].update(kwargs.get("attrs", {}))
    return record


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def report_of(records: list[dict[str, Any]]) -> Report:
    return summarize(classify(records))


# -- percentiles and spread -------------------------------------------------------------
def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    # NumPy's default ("linear"): position (n - 1) * q / 100.
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_distribution_reports_sample_stdev_and_coefficient_of_variation() -> None:
    dist = Distribution.of([4.0, 1.0, 3.0, 2.0])
    assert dist is not None
    assert (dist.count, dist.min, dist.max, dist.mean) == (4, 1.0, 4.0, 2.5)
    assert dist.stdev == pytest.approx(math.sqrt(5 / 3))  # sum of squares 5, n - 1 = 3
    assert dist.cv == pytest.approx(math.sqrt(5 / 3) / 2.5)
    one = Distribution.of([0.5])
    assert one is not None and one.stdev == 0.0 and one.cv == 0.0
    assert Distribution.of([]) is None
    zero = Distribution.of([0.0, 0.0])
    assert zero is not None and zero.cv is None


# -- what counts as a call ----------------------------------------------------------------
def test_only_innermost_genai_spans_are_calls() -> None:
    agent = span("invoke_agent planner", **{"gen_ai__operation__name": "invoke_agent"})
    inner = call(parent=agent, input_tokens=10, output=5)
    plain_parent = span("handler")
    under_plain = call(parent=plain_parent, input_tokens=20, output=6)
    orphan = call(input_tokens=30, output=7)
    orphan["parent_span_id"] = "ffffffffffffffff"  # the parent is in another file
    spans = classify([agent, inner, plain_parent, under_plain, orphan])
    assert spans.spans == 5 and spans.traces == 1
    assert sorted(c.input_tokens for c in spans.calls) == [10, 20, 30]


def test_a_parent_cycle_does_not_hang() -> None:
    a = call()
    b = call(parent=a)
    a["parent_span_id"] = b["span_id"]
    assert len(classify([a, b]).calls) <= 2


def test_records_without_ids_are_skipped() -> None:
    good = call()
    assert len(classify([{"name": "metric point", "value": 3}, good]).calls) == 1


# -- per model and operation ----------------------------------------------------------------
def test_tokens_cost_and_reasoning_share_per_model() -> None:
    records = [
        call("o3", input_tokens=1000, cached=400, output=600, reasoning=500, cost=0.0062),
        call("o3", input_tokens=2000, cached=0, output=1400, reasoning=1000, cost=0.0152),
        call("gpt-4o-mini", input_tokens=500, output=100, reasoning=0, cost=0.000135),
        call("local", provider="vllm", output=10, cost=None),  # unknown price
    ]
    report = report_of(records)
    by = {s.model: s for s in report.by_model}
    o3 = by["o3"]
    assert (o3.calls, o3.input_tokens, o3.cached_input_tokens) == (2, 3000, 400)
    assert (o3.output_tokens, o3.reasoning_tokens) == (2000, 1500)
    assert o3.reasoning_share == pytest.approx(0.75)
    assert o3.cost_usd == pytest.approx(0.0214)
    assert o3.cost_per_call_usd == pytest.approx(0.0107)
    assert by["gpt-4o-mini"].reasoning_share == 0.0
    local = by["local"]
    assert (local.priced_calls, local.unpriced_calls, local.cost_per_call_usd) == (0, 1, None)
    total = report.total
    assert total.calls == 4
    assert total.cost_usd == pytest.approx(0.0214 + 0.000135)
    assert total.output_tokens == 2110
    assert total.reasoning_share == pytest.approx(1500 / 2110)
    # Most calls first.
    assert report.by_model[0].model == "o3"


def test_models_are_split_by_provider_and_operation() -> None:
    report = report_of(
        [
            call("m", provider="openai", operation="chat"),
            call("m", provider="vllm", operation="chat"),
            call("m", provider="openai", operation="text_completion"),
        ]
    )
    keys = {(s.provider, s.model, s.operation) for s in report.by_model}
    assert keys == {
        ("openai", "m", "chat"),
        ("vllm", "m", "chat"),
        ("openai", "m", "text_completion"),
    }


def test_latency_percentiles_leave_refused_calls_out() -> None:
    durations = [0.5, 1.0, 1.5, 2.0, 10.0]
    records = [call(duration=d, outcome=names.OUTCOME_OK) for d in durations]
    refused = call(duration=0.0, outcome=names.OUTCOME_REFUSED, output=0, cost=None)
    refused["attributes"].pop(names.USAGE_INPUT_TOKENS)
    refused["attributes"].pop(names.USAGE_OUTPUT_TOKENS)
    stats = report_of([*records, refused]).total
    latency = stats.latency_s
    assert latency is not None
    assert latency.count == 5
    assert latency.p50 == 1.5
    assert latency.p95 == pytest.approx(2.0 + (10.0 - 2.0) * 0.8)  # position 3.8
    assert latency.p99 == pytest.approx(2.0 + (10.0 - 2.0) * 0.96)
    assert latency.mean == pytest.approx(3.0)
    assert latency.stdev == pytest.approx(math.sqrt(sum((d - 3) ** 2 for d in durations) / 4))
    assert stats.refused == 1 and stats.errors == 0
    assert stats.unpriced_calls == 0  # a refused call has no usage to price
    assert stats.budget_outcomes == {names.OUTCOME_OK: 5, names.OUTCOME_REFUSED: 1}


def test_duration_falls_back_to_the_timestamps() -> None:
    record = call()
    del record["duration_s"]
    record["end_time_ns"] = record["start_time_ns"] + 250_000_000
    latency = report_of([record]).total.latency_s
    assert latency is not None and latency.p50 == pytest.approx(0.25)


def test_time_to_first_token_comes_from_streamed_calls_only() -> None:
    records = [
        call(attrs={names.RESPONSE_TIME_TO_FIRST_CHUNK: 0.2}),
        call(attrs={names.RESPONSE_TIME_TO_FIRST_CHUNK: 0.4}),
        call(),
    ]
    ttft = report_of(records).total.time_to_first_token_s
    assert ttft is not None
    assert (ttft.count, ttft.p50) == (2, pytest.approx(0.3))
    assert report_of([call()]).total.time_to_first_token_s is None


def test_retries_from_the_attempts_attribute_or_the_attempt_events() -> None:
    retry_event = {
        "name": names.RETRY_EVENT,
        "timestamp_ns": 0,
        "attributes": {names.RETRY_DECISION: "retry"},
    }
    give_up = {
        "name": names.RETRY_EVENT,
        "timestamp_ns": 0,
        "attributes": {names.RETRY_DECISION: "give_up"},
    }
    records = [
        call(attrs={names.RETRY_ATTEMPTS: 3}),
        call(events=[retry_event]),
        call(
            error="RateLimitError", events=[retry_event, give_up], attrs={names.RETRY_ATTEMPTS: 2}
        ),
        call(attrs={names.RETRY_ATTEMPTS: 1}),
        call(),
    ]
    stats = report_of(records).total
    assert (stats.retried_calls, stats.retries, stats.errors) == (3, 2 + 1 + 1, 1)


def test_an_error_status_without_error_type_after_a_successful_retry_is_not_an_error() -> None:
    retried = call(attrs={names.RETRY_ATTEMPTS: 2})
    retried["status"] = {"code": "ERROR", "description": "ConnectionError: reset"}
    failed = call(error="APIConnectionError")
    no_usage = span("chat o3", **{"gen_ai__operation__name": "chat"})
    no_usage["status"] = {"code": "ERROR", "description": "Timeout"}
    stats = report_of([retried, failed, no_usage]).total
    assert (stats.calls, stats.errors, stats.retried_calls) == (3, 2, 1)


# -- sampling ---------------------------------------------------------------------------------
def test_sampling_savings_from_the_group_spans() -> None:
    early = span(
        "best_of_n",
        **{
            "tcc__sampling__method": "best_of_n",
            "tcc__sampling__requested": 8,
            "tcc__sampling__launched": 5,
            "tcc__sampling__completed": 3,
            "tcc__sampling__cancelled": 2,
            "tcc__sampling__stopped_early": True,
        },
    )
    full = span(
        "best_of_n",
        **{
            "tcc__sampling__method": "best_of_n",
            "tcc__sampling__requested": 4,
            "tcc__sampling__launched": 4,
            "tcc__sampling__completed": 4,
            "tcc__sampling__stopped_early": False,
        },
    )
    vote = span("self_consistency", **{"tcc__sampling__method": "self_consistency"})
    samples = [call(parent=early, cost=0.01) for _ in range(3)]
    samples += [call(parent=full, cost=0.02) for _ in range(4)]
    samples += [call(parent=vote, cost=None) for _ in range(2)]
    report = report_of([early, full, vote, *samples])
    assert report.total.calls == 9  # group spans are not calls
    by = {s.name: s for s in report.sampling}
    best = by["best_of_n"]
    assert (best.groups, best.requested, best.launched, best.completed) == (2, 12, 9, 7)
    assert (best.cancelled, best.stopped_early, best.saved_samples) == (2, 1, 5)
    assert best.saved_share == pytest.approx(5 / 12)
    assert best.cost_usd == pytest.approx(0.11)
    assert best.est_saved_usd == pytest.approx(5 * 0.11 / 7)
    sc = by["self_consistency"]
    # Nothing recorded but the calls under it: counts come from them, savings unknown.
    assert (sc.launched, sc.completed, sc.requested, sc.saved_share) == (2, 2, 0, None)
    assert sc.est_saved_usd is None


# -- JSON -------------------------------------------------------------------------------------
def test_to_dict_is_json_and_carries_the_key_figures() -> None:
    report = report_of([call(output=10, reasoning=4), call("b", output=0)])
    data = json.loads(json.dumps(report.to_dict()))
    assert data["calls"] == 2
    assert {g["model"] for g in data["by_model"]} == {"o3", "b"}
    o3 = next(g for g in data["by_model"] if g["model"] == "o3")
    assert o3["reasoning_share"] == pytest.approx(0.4)
    assert o3["latency_s"]["p99"] == pytest.approx(1.0)
    assert o3["time_to_first_token_s"] is None
    assert o3["cost_per_call_usd"] == pytest.approx(0.001)
    assert next(g for g in data["by_model"] if g["model"] == "b")["reasoning_share"] is None
    assert data["total"]["model"] == "*"


# -- the command ------------------------------------------------------------------------------
@pytest.fixture
def traces(tmp_path: Path) -> Path:
    group = span("best_of_n", **{"tcc__sampling__requested": 4, "tcc__sampling__completed": 2})
    records = [
        call("o3", input_tokens=1000, cached=400, output=600, reasoning=500, cost=0.0062),
        call("o3", output=700, reasoning=650, cost=0.007, outcome="clamped", duration=2.0),
        call("claude-sonnet-4-5", provider="anthropic", reasoning=20, cost=0.002, parent=group),
        call("claude-sonnet-4-5", provider="anthropic", reasoning=30, cost=0.003, parent=group),
        group,
    ]
    return write(tmp_path / "tcc-traces.jsonl", records)


def test_json_output(traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(traces), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["files"] == [str(traces)]
    assert data["calls"] == 4 and data["spans"] == 5 and data["traces"] == 1
    assert data["total"]["cost_usd"] == pytest.approx(0.0182)
    assert data["sampling"][0]["saved_samples"] == 2


def test_tables(traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(traces), "--width", "160"]) == 0
    out = capsys.readouterr().out
    for text in (
        "Calls and cost",
        "Tokens",
        "Latency in seconds: chat calls",
        "Retries and budget outcomes",
        "Sampling",
        "claude-sonnet-4-5",
        "o3",
        "4 LLM calls in 1 trace (5 spans)",
        "$0.0182",  # the total
        f"{(500 + 650) / (600 + 700):.1%}",  # o3's reasoning share
    ):
        assert text in out, text


def test_tables_fit_an_80_column_terminal(traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(traces), "--width", "80"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out  # no cell shortened
    for text in ("Unpriced", "Reasoning %", "CV", "clamped", "Est. saved"):  # nor cropped
        assert text in out, text


def test_the_tcc_command_dispatches_to_report(
    traces: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tcc_plugin.app.cli import main as tcc

    assert tcc(["report", str(traces), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calls"] == 4


def test_several_files_are_read_together(traces: Path, tmp_path: Path) -> None:
    more = write(tmp_path / "more.jsonl", [call("o3", trace_id="1" * 32)])
    report = load(traces, more)
    assert report.total.calls == 5 and report.traces == 2


def test_a_file_with_no_calls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = write(tmp_path / "empty.jsonl", [span("just a span")])
    assert main([str(empty)]) == 0
    assert "No LLM call spans" in capsys.readouterr().out
    assert main([str(empty), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["by_model"] == []


def test_a_torn_last_line_is_skipped(traces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with traces.open("a", encoding="utf-8") as handle:
        handle.write('{"name": "chat o3", "trace_id": ')
    assert main([str(traces), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calls"] == 4


def test_a_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_plot_writes_a_png(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "report.png"
    assert main([str(traces), "--json", "--plot", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["calls"] == 4  # stdout stays pure JSON
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_plot_of_calls_without_prices(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    traces = write(tmp_path / "t.jsonl", [call(cost=None, duration=d) for d in (0.1, 5.0, 20.0)])
    out = tmp_path / "t.png"
    assert main([str(traces), "--plot", str(out)]) == 0
    assert out.stat().st_size > 0


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    yield


@pytest.mark.usefixtures("no_matplotlib")
def test_plot_without_matplotlib_says_how_to_install(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(traces), "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install 'tcc-plugin[plots]'" in capsys.readouterr().err


def test_names_are_not_read_as_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traces = write(tmp_path / "t.jsonl", [call("ft:o3[bold]x[/bold]")])
    assert main([str(traces), "--width", "120"]) == 0
    assert "ft:o3[bold]x[/bold]" in capsys.readouterr().out
