"""TccInstrumentor: OpenAI and Anthropic clients instrumented with no code change.

In this process: clients built after ``instrument()`` are traced like clients passed to
``tcc_plugin.instrument`` by hand (their HTTP answered by ``httpx2.MockTransport``).
Then for real: an unchanged script run under ``opentelemetry-instrument``, talking to a
loopback stand-in for the OpenAI and Anthropic APIs, its spans exported over OTLP/HTTP
to a loopback receiver that decodes them.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Telemetry

# The model is deprecated in this anthropic release, which warns on each call.
pytestmark = pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")

httpx2 = pytest.importorskip("httpx2")
openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("opentelemetry.instrumentation")

from tcc_plugin.integrations.instrumentor import TccInstrumentor  # noqa: E402
from tcc_plugin.telemetry import names  # noqa: E402

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "o3-2025-04-16",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "4", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 600,
        "total_tokens": 1600,
        "prompt_tokens_details": {"cached_tokens": 400, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 500, "audio_tokens": 0},
    },
}

MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "4"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "output_tokens": 120,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    },
}


def ours(telemetry: Telemetry) -> list[Any]:
    """tcc spans (the anthropic SDK records spans of its own too)."""
    return [
        s
        for s in telemetry.spans()
        if s.instrumentation_scope is not None and s.instrumentation_scope.name == "tcc_plugin"
    ]


def answer(request: Any) -> Any:
    body = CHAT if request.url.path.endswith("/chat/completions") else MESSAGE
    return httpx2.Response(200, json=body)


def sync_http() -> Any:
    return httpx2.Client(transport=httpx2.MockTransport(answer))


def async_http() -> Any:
    return httpx2.AsyncClient(transport=httpx2.MockTransport(answer))


def ask_openai(client: Any) -> Any:
    return client.chat.completions.create(
        model="o3", messages=[{"role": "user", "content": "2+2?"}], max_completion_tokens=2000
    )


def ask_anthropic(client: Any) -> Any:
    return client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1000,
        messages=[{"role": "user", "content": "2+2?"}],
    )


@pytest.fixture
def instrumentor() -> Iterator[TccInstrumentor]:
    instance = TccInstrumentor()
    instance.instrument()
    yield instance
    instance.uninstrument()


def test_the_entry_point_is_registered() -> None:
    found = entry_points(group="opentelemetry_instrumentor", name="tcc_plugin")
    assert [ep.load() for ep in found] == [TccInstrumentor]
    assert TccInstrumentor().instrumentation_dependencies() == ()


@pytest.mark.usefixtures("instrumentor")
def test_a_new_openai_client_is_traced(telemetry: Telemetry) -> None:
    client = openai.OpenAI(api_key="sk-test", http_client=sync_http())
    ask_openai(client)
    [span] = ours(telemetry)
    attrs = span.attributes or {}
    assert attrs[names.REQUEST_MODEL] == "o3"
    assert attrs[names.USAGE_INPUT_TOKENS] == 1000
    assert attrs[names.USAGE_CACHE_READ_INPUT_TOKENS] == 400
    assert attrs[names.USAGE_OUTPUT_TOKENS] == 600
    assert attrs[names.USAGE_REASONING_OUTPUT_TOKENS] == 500
    assert attrs[names.COST_USD] > 0


@pytest.mark.usefixtures("instrumentor")
def test_a_new_anthropic_client_is_traced(telemetry: Telemetry) -> None:
    client = anthropic.Anthropic(api_key="sk-ant-test", http_client=sync_http())
    ask_anthropic(client)
    [span] = ours(telemetry)
    attrs = span.attributes or {}
    assert attrs[names.PROVIDER_NAME] == "anthropic"
    assert (attrs[names.USAGE_INPUT_TOKENS], attrs[names.USAGE_OUTPUT_TOKENS]) == (50, 120)


@pytest.mark.usefixtures("instrumentor")
async def test_async_clients_are_traced(telemetry: Telemetry) -> None:
    oa = openai.AsyncOpenAI(api_key="sk-test", http_client=async_http())
    an = anthropic.AsyncAnthropic(api_key="sk-ant-test", http_client=async_http())
    await oa.chat.completions.create(model="o3", messages=[{"role": "user", "content": "hi"}])
    await an.messages.create(
        model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    providers = sorted(str((s.attributes or {})[names.PROVIDER_NAME]) for s in ours(telemetry))
    assert providers == ["anthropic", "openai"]


@pytest.mark.usefixtures("instrumentor")
def test_subclasses_and_copies_are_traced(telemetry: Telemetry) -> None:
    azure = openai.AzureOpenAI(
        api_key="sk-test",
        api_version="2025-04-01-preview",
        azure_endpoint="https://example.openai.azure.com",
        http_client=sync_http(),
    )
    ask_openai(azure)
    copy = openai.OpenAI(api_key="sk-test", http_client=sync_http()).with_options(timeout=5)
    ask_openai(copy)
    assert len(ours(telemetry)) == 2


def test_uninstrument_restores_the_constructors_and_the_clients(telemetry: Telemetry) -> None:
    originals = (openai.OpenAI.__init__, anthropic.AsyncAnthropic.__init__)
    instance = TccInstrumentor()
    instance.instrument()
    assert set(instance.patched) == {
        openai.OpenAI,
        openai.AsyncOpenAI,
        anthropic.Anthropic,
        anthropic.AsyncAnthropic,
    }
    made_before = openai.OpenAI(api_key="sk-test", http_client=sync_http())
    instance.instrument()  # a second call is a no-op (BaseInstrumentor)
    instance.uninstrument()
    assert (openai.OpenAI.__init__, anthropic.AsyncAnthropic.__init__) == originals
    assert instance.patched == ()
    ask_openai(made_before)
    ask_openai(openai.OpenAI(api_key="sk-test", http_client=sync_http()))
    assert ours(telemetry) == []


def test_a_failing_hook_never_breaks_client_construction(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(client: Any) -> Any:
        raise RuntimeError("boom")

    instance = TccInstrumentor()
    instance.instrument(wrap=broken)
    try:
        with caplog.at_level(logging.WARNING, logger="tcc_plugin"):
            client = openai.OpenAI(api_key="sk-test", http_client=sync_http())
        assert "could not instrument a OpenAI client" in caplog.text
        ask_openai(client)  # works, untraced
        assert ours(telemetry) == []
    finally:
        instance.uninstrument()


def test_custom_hooks(telemetry: Telemetry) -> None:
    seen: list[str] = []
    instance = TccInstrumentor()
    instance.instrument(
        wrap=lambda c: seen.append(f"wrap {type(c).__name__}"),
        unwrap=lambda c: seen.append(f"unwrap {type(c).__name__}"),
    )
    try:
        client = anthropic.Anthropic(api_key="sk-ant-test", http_client=sync_http())
    finally:
        instance.uninstrument()
    assert seen == ["wrap Anthropic", "unwrap Anthropic"]
    del client


# -- opentelemetry-instrument, for real ---------------------------------------------------
APP = textwrap.dedent(
    """
    # An application that knows nothing of us.
    import sys
    import anthropic
    import openai

    base = sys.argv[1]
    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0)
    reply = client.chat.completions.create(
        model="o3", messages=[{"role": "user", "content": "2+2?"}], max_completion_tokens=2000
    )
    claude = anthropic.Anthropic(base_url=base, api_key="sk-ant-test", max_retries=0)
    message = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=1000, messages=[{"role": "user", "content": "2+2?"}]
    )
    print(reply.choices[0].message.content, message.content[0].text)
    """
)


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Plays both the provider APIs (POST /v1/chat/completions, /v1/messages) and the
    OTLP/HTTP receiver (POST /v1/traces, protobuf)."""

    spans: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/traces":
            self.server.spans.extend(_decode(body))  # type: ignore[attr-defined]
            self._reply(b"", "application/x-protobuf")
        elif self.path.endswith("/chat/completions"):
            self._reply(json.dumps(CHAT).encode(), "application/json")
        elif self.path.endswith("/messages"):
            self._reply(json.dumps(MESSAGE).encode(), "application/json")
        else:
            self.send_error(404)

    def do_GET(self) -> None:
        self.send_error(404)

    def _reply(self, data: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _decode(body: bytes) -> list[dict[str, Any]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "scope": scope_spans.scope.name,
                        "resource": resource,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                    }
                )
    return spans


@pytest.fixture
def loopback() -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.spans = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_opentelemetry_instrument_traces_an_unchanged_app(tmp_path: Path, loopback: Any) -> None:
    base = f"http://127.0.0.1:{loopback.server_address[1]}"
    app = tmp_path / "app.py"
    app.write_text(APP, encoding="utf-8")
    assert "tcc" not in APP
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_SERVICE_NAME="unchanged-app",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{base}/v1/traces",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="",
    )
    command = Path(sys.executable).parent / "opentelemetry-instrument"
    proc = subprocess.run(
        [str(command), sys.executable, str(app), base],
        cwd=tmp_path,  # not the repository (its tcc_plugin/ would shadow the install)
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["4", "4"]
    ours = {
        s["attributes"][names.PROVIDER_NAME]: s
        for s in loopback.spans
        if s["scope"] == "tcc_plugin"
    }
    assert set(ours) == {"openai", "anthropic"}, loopback.spans
    chat = ours["openai"]
    assert chat["resource"]["service.name"] == "unchanged-app"
    assert chat["attributes"][names.USAGE_REASONING_OUTPUT_TOKENS] == 500
    assert chat["attributes"][names.USAGE_CACHE_READ_INPUT_TOKENS] == 400
    assert chat["attributes"][names.COST_USD] > 0
    claude = ours["anthropic"]["attributes"]
    assert (claude[names.USAGE_INPUT_TOKENS], claude[names.USAGE_OUTPUT_TOKENS]) == (50, 120)
