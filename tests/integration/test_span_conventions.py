"""Backend conventions (OpenInference, Langfuse) and values a backend would reject.

A real ``openai.OpenAI`` client, instrumented, answered by ``httpx2.MockTransport``; the
spans are read back from the session's in-memory exporter. The OTLP protobuf encoder and
the JSON-lines exporter then show that a cleaned span can be sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

import tcc_plugin
from tcc_plugin import configure, llm_call
from tcc_plugin.exporters import JsonLinesSpanExporter, read_spans
from tcc_plugin.pricing import default_price_book, set_price
from tcc_plugin.sampling import best_of_n
from tcc_plugin.telemetry import conventions, names, recorder
from tcc_plugin.telemetry.cleaning import CLEANED, DEFAULT_MAX_TEXT_LENGTH

from ..conftest import Telemetry
from .conftest import MockAPI, chat_completion, chat_usage, json_response

# o3: $2 input, $0.50 cached input, $8 output per million tokens.
O3_COST = ((1200 - 1024) * 2 + 1024 * 0.5 + 900 * 8) / 1e6  # 0.008064


@pytest.fixture
def chosen() -> Iterator[Any]:
    """Activate conventions for one test; none afterwards."""
    yield conventions.activate
    conventions.activate(())


def ask(client: Any, api: MockAPI, content: str = "What is 2+2?") -> None:
    api.queue(json_response(chat_completion(chat_usage(1200, 900, cached=1024, reasoning=768))))
    tcc_plugin.instrument(client)
    client.chat.completions.create(
        model="o3", messages=[{"role": "user", "content": content}], max_completion_tokens=2000
    )


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_openinference_names_carry_reasoning_cache_and_cost(
    telemetry: Telemetry, openai_client: Any, api: MockAPI, chosen: Any
) -> None:
    chosen(["openinference"])
    ask(openai_client, api)
    a = attrs(telemetry.span())
    assert a["openinference.span.kind"] == "LLM"
    assert a["llm.model_name"] == "o3-2025-04-16"
    assert (a["llm.provider"], a["llm.system"]) == ("openai", "openai")
    assert a["llm.token_count.prompt"] == 1200
    assert a["llm.token_count.completion"] == 900
    assert a["llm.token_count.total"] == 2100
    assert a["llm.token_count.prompt_details.cache_read"] == 1024
    assert a["llm.token_count.prompt_details.cache_write"] == 0
    assert a["llm.token_count.completion_details.reasoning"] == 768
    assert a["llm.cost.total"] == pytest.approx(O3_COST, rel=1e-12)
    assert a[names.USAGE_REASONING_OUTPUT_TOKENS] == 768  # the GenAI names stay
    assert not any(k.startswith("langfuse.") for k in a)


def test_langfuse_usage_and_cost_details_are_disjoint_buckets(
    telemetry: Telemetry, openai_client: Any, api: MockAPI, chosen: Any
) -> None:
    chosen(["langfuse"])
    ask(openai_client, api)
    a = attrs(telemetry.span())
    assert a["langfuse.observation.type"] == "generation"
    assert a["langfuse.observation.model.name"] == "o3-2025-04-16"
    usage = json.loads(a["langfuse.observation.usage_details"])
    assert usage == {
        "input": 176,  # 1,200 input, 1,024 of them read from the cache
        "input_cache_read": 1024,
        "output": 132,  # 900 output, 768 of them reasoning
        "output_reasoning": 768,
        "total": 2100,
    }
    assert sum(v for k, v in usage.items() if k != "total") == usage["total"]
    cost = json.loads(a["langfuse.observation.cost_details"])
    assert cost["total"] == pytest.approx(O3_COST, rel=1e-12)
    assert "openinference.span.kind" not in a


def test_no_convention_by_default(telemetry: Telemetry, openai_client: Any, api: MockAPI) -> None:
    assert conventions.active() == ()
    ask(openai_client, api)
    a = attrs(telemetry.span())
    assert not any(k.startswith(("llm.", "openinference.", "langfuse.")) for k in a)


def test_a_sampling_group_is_a_chain(telemetry: Telemetry, chosen: Any) -> None:
    chosen(["openinference", "langfuse"])

    @llm_call(model="o3", provider="openai")
    def answer(max_tokens: int = 100) -> dict[str, Any]:
        return chat_completion(chat_usage(10, 5))

    best_of_n(answer, n=2, concurrency=1, verifier=lambda candidate: 1.0)
    spans = telemetry.spans()
    group = next(s for s in spans if names.OPERATION_NAME not in attrs(s))
    calls = [s for s in spans if s is not group]
    assert attrs(group)["openinference.span.kind"] == "CHAIN"
    assert attrs(group)["langfuse.observation.type"] == "chain"
    assert [attrs(s)["openinference.span.kind"] for s in calls] == ["LLM", "LLM"]
    assert [attrs(s)["llm.token_count.total"] for s in calls] == [15, 15]


@pytest.mark.parametrize("given", [["phoenix"], "openinference,arize", ["OpenInference", " "]])
def test_an_unknown_convention_fails_configure_with_the_valid_ones(given: Any) -> None:
    if given == ["OpenInference", " "]:  # case and blanks are forgiven
        assert conventions.resolve(given) == ("openinference",)
        return
    with pytest.raises(ValueError, match=r"expected one of openinference, langfuse"):
        configure("none", conventions=given)
    assert conventions.active() == ()


def test_an_unknown_convention_in_the_environment_fails_configure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(conventions.CONVENTIONS_ENV, "openinference,langsmith")
    with pytest.raises(ValueError, match=r"TCC_CONVENTIONS='langsmith'.*openinference, langfuse"):
        configure("none")
    monkeypatch.setenv(conventions.CONVENTIONS_ENV, "langfuse, openinference")
    assert conventions.resolve(None) == ("langfuse", "openinference")


# -- values a backend would reject --------------------------------------------------------------
def encodable(span: ReadableSpan, tmp_path: Path) -> None:
    """The span goes through the OTLP protobuf encoder and into a JSON-lines file."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    assert encode_spans([span]).SerializeToString()
    path = tmp_path / "spans.jsonl"
    assert JsonLinesSpanExporter(path).export([span]) is SpanExportResult.SUCCESS
    [record] = list(read_spans(path))
    assert record["span_id"] == format(span.context.span_id, "016x")


def test_text_that_is_not_utf8_and_a_huge_prompt_are_cleaned(
    telemetry: Telemetry,
    openai_client: Any,
    api: MockAPI,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(names.CAPTURE_CONTENT_ENV, "true")
    monkeypatch.delenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", raising=False)
    # A provider answer escaping a lone surrogate: valid JSON, not valid UTF-8 text.
    body = chat_completion(
        chat_usage(1200, 900, cached=1024, reasoning=768), contents=["caf\udce9"]
    )
    api.queue(
        httpx2.Response(
            200, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
    )
    tcc_plugin.instrument(openai_client)
    prompt = "x" * (3 * DEFAULT_MAX_TEXT_LENGTH)
    response = openai_client.chat.completions.create(
        model="o3", messages=[{"role": "user", "content": prompt}], max_completion_tokens=2000
    )
    assert response.choices[0].message.content == "caf\udce9"  # the caller's data untouched
    span = telemetry.span()
    a = attrs(span)
    captured_in = a[names.INPUT_MESSAGES]
    recorded = json.dumps([{"role": "user", "content": prompt}], ensure_ascii=False)
    assert len(captured_in) == DEFAULT_MAX_TEXT_LENGTH
    kept, marker = captured_in.split("…[tcc: ")
    assert recorded.startswith(kept)
    assert marker == f"{len(recorded) - len(kept)} characters truncated]"
    out = a[names.OUTPUT_MESSAGES]
    out.encode("utf-8")  # valid now
    assert "caf\ufffd" in out
    assert set(a[CLEANED]) >= {names.OUTPUT_MESSAGES}
    assert a[names.USAGE_REASONING_OUTPUT_TOKENS] == 768  # the rest of the record intact
    encodable(span, tmp_path)


def test_a_nan_price_is_refused_where_it_is_set() -> None:
    with pytest.raises(ValueError, match="a price must be a finite number of USD, not nan"):
        set_price("tcc-test-nan-model", input=float("nan"), output=1.0)


class NanPrice:
    """A user's own price object that goes wrong."""

    def cost(self, usage: Any, *, seconds: float | None = None, share: int = 1) -> Decimal:
        return Decimal("NaN")

    def worst_case(self, usage: Any, *, seconds: float | None = None) -> Decimal | None:
        return None


def test_a_nan_cost_is_unknown_not_raised(telemetry: Telemetry) -> None:
    default_price_book().override("tcc-test-nan-model", NanPrice())

    @llm_call(model="tcc-test-nan-model", provider="openai")
    def ask_nan(max_tokens: int = 100) -> dict[str, Any]:
        return chat_completion(chat_usage(10, 5), model="tcc-test-nan-model")

    with tcc_plugin.budget(usd=1, calls=5) as spent:
        ask_nan()  # nothing raised into the caller, the ledger stays exact
    assert (spent.spent.calls, spent.spent.usd, spent.spent.total_tokens) == (1, 0, 15)
    a = attrs(telemetry.span())
    assert names.COST_USD not in a
    assert a[names.USAGE_INPUT_TOKENS] == 10


def test_a_nan_attribute_is_left_out_and_said(telemetry: Telemetry, tmp_path: Path) -> None:
    span = recorder.tracer().start_span("chat m")
    recorder.set_attributes(span, {names.COST_USD: float("nan"), "tcc.x": (1.0, float("inf"))})
    recorder.end_span(span)
    ended = telemetry.span("chat m")
    a = attrs(ended)
    assert names.COST_USD not in a
    assert a["tcc.x"] == (1.0,)
    assert set(a[CLEANED]) == {names.COST_USD, "tcc.x"}
    encodable(ended, tmp_path)


def test_the_length_limit_follows_the_otel_variable(
    telemetry: Telemetry, openai_client: Any, api: MockAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(names.CAPTURE_CONTENT_ENV, "true")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "100")
    ask(openai_client, api, content="y" * 500)
    captured = attrs(telemetry.span())[names.INPUT_MESSAGES]
    recorded = json.dumps([{"role": "user", "content": "y" * 500}])
    assert len(captured) == 100
    kept, marker = captured.split("…[tcc: ")
    assert recorded.startswith(kept) and kept.endswith("yyy")
    assert marker == f"{len(recorded) - len(kept)} characters truncated]"


def test_an_error_whose_text_is_not_utf8_is_recorded_cleanly(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    @llm_call(model="o3", provider="openai")
    def broken(max_tokens: int = 100) -> dict[str, Any]:
        raise ValueError("bad byte caf\udce9")

    with pytest.raises(ValueError, match="caf\udce9"):  # the caller's error, untouched
        broken()
    span = telemetry.span()
    [event] = [e for e in span.events if e.name == "exception"]
    assert dict(event.attributes or {})["exception.message"] == "bad byte caf\ufffd"
    assert "caf\ufffd" in str(dict(event.attributes or {})["exception.stacktrace"])
    assert span.status.description == "bad byte caf\ufffd"
    encodable(span, tmp_path)
