"""End to end: tcc spans exported to a real trace backend, Arize Phoenix, and read back.

An application process records a best-of-N sampling group (three decorated LLM calls
under the group's span, priced, with reasoning and cached tokens) and one budgeted call,
through the real lifecycle and ``tcc_plugin.configure``, exporting to Phoenix over
OTLP http/protobuf and over gRPC, directly and through a real OpenTelemetry collector
(rotel) in between. It also writes the same spans to a JSON-lines file: the test reads
the spans back from Phoenix's REST API (``/v1/projects/{project}/spans``) and checks
that every span, its parent, its tokens and its cost arrived unchanged, and that the
OpenInference names Phoenix reads (``configure(conventions=["openinference"])``) carry
the reasoning tokens and the cost.

Phoenix and rotel live in a virtualenv of their own, installed on first use by
``scripts/phoenix.sh`` into the user's cache directory (about a minute, once). The
servers run on free loopback ports, with Phoenix's SQLite database in a temporary
directory, and are stopped at the end. ``TCC_SKIP_PHOENIX=1`` skips these tests (for a
machine without access to the package index); otherwise a failed install fails them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tcc_plugin.exporters import read_spans
from tcc_plugin.telemetry import names

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240.0  # a cold first start runs Phoenix's database migrations
ARRIVAL_TIMEOUT_S = 60.0

APP = textwrap.dedent(
    """
    import json, sys
    import tcc_plugin
    from tcc_plugin.sampling import best_of_n

    exporter, endpoint, path = sys.argv[1], sys.argv[2], sys.argv[3]
    handle = tcc_plugin.configure(
        [exporter, "jsonl"], endpoint=endpoint, path=path, metrics=False,
        service_name="tcc-e2e", conventions=["openinference"],
    )
    reasoning = iter([700, 1500, 300])

    @tcc_plugin.llm_call(provider="openai")
    def ask(question, model="o3", max_tokens=4000):
        thought = next(reasoning, 100)
        return {"id": "chatcmpl-e2e", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": str(thought)}}],
                "usage": {"prompt_tokens": 1200, "completion_tokens": thought + 80,
                          "prompt_tokens_details": {"cached_tokens": 1024},
                          "completion_tokens_details": {"reasoning_tokens": thought}}}

    result = best_of_n(lambda: ask("17 * 23?"), n=3, concurrency=1,
                       verifier=lambda candidate: float(candidate.text))
    with tcc_plugin.budget(usd=1.0, name="e2e"):
        ask("and once more", model="o4-mini", max_tokens=2000)
    handle.shutdown()
    stats = handle.span_delivery()[exporter]
    print("RESULT " + json.dumps({"winner": result.winner.index, "exported": stats.exported,
                                  "dropped": stats.dropped}), flush=True)
    """
)


# -- the backends ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a server we started (its own process group), politely, then not."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def backend_venv() -> Path:
    if os.environ.get("TCC_SKIP_PHOENIX"):
        pytest.skip("TCC_SKIP_PHOENIX is set")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "phoenix.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/phoenix.sh could not install Phoenix and rotel:\n{proc.stderr[-3000:]}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass
class Phoenix:
    http_port: int
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def span_cost(self, span_id: str) -> dict[str, Any]:
        """The cost Phoenix itself computed for a span (its UI's figure), by GraphQL: the
        REST API has none."""
        query = (
            "query($id: ID!) { node(id: $id) { ... on Span { costSummary {"
            " total { cost tokens } prompt { tokens } completion { tokens } } } } }"
        )
        request = urllib.request.Request(
            self.url + "/graphql",
            data=json.dumps({"query": query, "variables": {"id": span_id}}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
        assert not body.get("errors"), body
        summary: dict[str, Any] = body["data"]["node"]["costSummary"]
        return summary

    def spans(self, project: str) -> list[dict[str, Any]]:
        """Every span of ``project`` (empty while the project does not exist yet)."""
        found: list[dict[str, Any]] = []
        cursor = ""
        while True:
            query = f"/v1/projects/{project}/spans?limit=100" + (
                f"&cursor={cursor}" if cursor else ""
            )
            try:
                page = self.get(query)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return []
                raise
            found.extend(page["data"])
            cursor = page.get("next_cursor") or ""
            if not cursor:
                return found


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}


@pytest.fixture(scope="module")
def phoenix(backend_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phoenix]:
    workdir = tmp_path_factory.mktemp("phoenix")
    server = Phoenix(free_port(), free_port())
    env = _clean_env()
    env.update(
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(server.http_port),
        PHOENIX_GRPC_PORT=str(server.grpc_port),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        PHOENIX_DISABLE_AGENT_ASSISTANT="true",
        PHOENIX_ENABLE_MCP_SERVER="false",
    )
    log = workdir / "phoenix.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(backend_venv / "bin" / "phoenix"), "serve"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"phoenix serve exited with {proc.returncode}:\n{tail(log)}")
            try:
                with urllib.request.urlopen(server.url + "/healthz", timeout=2) as response:
                    if response.status == 200 and listening(server.grpc_port):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"phoenix serve did not answer in {START_TIMEOUT_S:.0f} s:\n{tail(log)}"
                )
            time.sleep(0.25)
        yield server
    finally:
        stop(proc)


@dataclass
class Collector:
    http_port: int
    grpc_port: int


@pytest.fixture(scope="module")
def rotel(
    backend_venv: Path, phoenix: Phoenix, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Collector]:
    """A real OpenTelemetry collector: OTLP receivers in, OTLP/gRPC out to Phoenix."""
    workdir = tmp_path_factory.mktemp("rotel")
    found = sorted((backend_venv / "lib").glob("python*/site-packages/rotel/rotel-agent"))
    assert found, "the rotel package ships no rotel-agent binary"
    collector = Collector(free_port(), free_port())
    log = workdir / "rotel.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(found[0]),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{collector.grpc_port}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{collector.http_port}",
                "--exporter",
                "otlp",
                "--otlp-exporter-endpoint",
                f"http://127.0.0.1:{phoenix.grpc_port}",
                "--pid-file",
                str(workdir / "rotel.pid"),
                "--log-file",
                str(workdir / "rotel-agent.log"),
            ],
            cwd=workdir,
            env=_clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not (listening(collector.grpc_port) and listening(collector.http_port)):
            if proc.poll() is not None:
                pytest.fail(f"rotel-agent exited with {proc.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"rotel-agent did not listen in 30 s:\n{tail(log)}")
            time.sleep(0.1)
        yield collector
    finally:
        stop(proc)


# -- the test ---------------------------------------------------------------------------------
ROUTES = [
    ("otlp-http", "phoenix"),
    ("otlp-grpc", "phoenix"),
    ("otlp-http", "rotel"),
    ("otlp-grpc", "rotel"),
]

# Attributes that must arrive exactly as recorded.
CHECKED = (
    names.OPERATION_NAME,
    names.PROVIDER_NAME,
    names.REQUEST_MODEL,
    names.REQUEST_MAX_TOKENS,
    names.USAGE_INPUT_TOKENS,
    names.USAGE_CACHE_READ_INPUT_TOKENS,
    names.USAGE_OUTPUT_TOKENS,
    names.USAGE_REASONING_OUTPUT_TOKENS,
    names.COST_USD,
    names.BUDGET_OUTCOME,
    names.BUDGET_NAME,
    names.BUDGET_LIMIT_PREFIX + "usd",
    names.BUDGET_SPENT_PREFIX + "usd",
    "tcc.sampling.method",
    "tcc.sampling.requested",
    "tcc.sampling.launched",
    "tcc.sampling.completed",
    "tcc.sampling.cost.usd",
    "tcc.sampling.usage.reasoning_tokens",
    "tcc.sampling.winner.index",
)


def same(expected: Any, got: Any) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        return isinstance(got, (int, float)) and got == pytest.approx(expected, rel=1e-12)
    return bool(expected == got)


@pytest.mark.parametrize(("exporter", "route"), ROUTES, ids=[f"{e}-{r}" for e, r in ROUTES])
def test_spans_arrive_intact(
    exporter: str, route: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    phoenix: Phoenix = request.getfixturevalue("phoenix")
    if route == "rotel":
        collector: Collector = request.getfixturevalue("rotel")
        port = collector.http_port if exporter == "otlp-http" else collector.grpc_port
    else:
        port = phoenix.http_port if exporter == "otlp-http" else phoenix.grpc_port
    project = f"tcc-e2e-{exporter}-{route}"
    local = tmp_path / "spans.jsonl"

    env = _clean_env()
    env["OTEL_RESOURCE_ATTRIBUTES"] = f"openinference.project.name={project}"
    proc = subprocess.run(
        [sys.executable, "-c", APP, exporter, f"http://127.0.0.1:{port}", str(local)],
        cwd=tmp_path,  # not the repository (its tcc_plugin/ would shadow the install)
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    result = json.loads(lines[-1].removeprefix("RESULT "))
    expected = {s["span_id"]: s for s in read_spans(local)}
    assert len(expected) == 5  # the group, its three samples, the budgeted call
    assert (result["exported"], result["dropped"]) == (5, 0)

    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while len(got := phoenix.spans(project)) < len(expected):
        assert time.monotonic() < deadline, f"{len(got)} of {len(expected)} spans arrived"
        time.sleep(0.5)
    arrived = {s["context"]["span_id"]: s for s in got}
    assert arrived.keys() == expected.keys()

    for span_id, mine in expected.items():
        theirs = arrived[span_id]
        assert theirs["name"] == mine["name"]
        assert theirs["context"]["trace_id"] == mine["trace_id"]
        assert theirs["parent_id"] == mine["parent_span_id"]
        for key in CHECKED:
            if key in mine["attributes"]:
                assert same(mine["attributes"][key], theirs["attributes"].get(key)), (
                    span_id,
                    key,
                    mine["attributes"][key],
                    theirs["attributes"].get(key),
                )

    # The sampling group's structure: one root, its three samples as its children.
    group = next(s for s in got if "tcc.sampling.requested" in s["attributes"])
    assert group["parent_id"] is None
    samples = [s for s in got if s["parent_id"] == group["context"]["span_id"]]
    assert len(samples) == 3
    assert sorted(s["attributes"][names.USAGE_REASONING_OUTPUT_TOKENS] for s in samples) == [
        300,
        700,
        1500,
    ]
    assert {s["context"]["trace_id"] for s in samples} == {group["context"]["trace_id"]}
    assert group["attributes"]["tcc.sampling.completed"] == 3
    assert group["attributes"]["tcc.sampling.winner.index"] == result["winner"] == 1
    costs = sum(s["attributes"][names.COST_USD] for s in samples)
    assert group["attributes"]["tcc.sampling.cost.usd"] == pytest.approx(costs)
    # The OpenInference names Phoenix reads: reasoning tokens and cost, not only tokens.
    for sample in samples:
        theirs = sample["attributes"]
        mine = expected[sample["context"]["span_id"]]["attributes"]
        assert sample["span_kind"] == "LLM"  # Phoenix lifts openinference.span.kind out
        assert theirs["llm.model_name"] == "o3"
        assert theirs["llm.provider"] == "openai"
        assert theirs["llm.token_count.prompt"] == 1200
        assert theirs["llm.token_count.prompt_details.cache_read"] == 1024
        reasoning = mine[names.USAGE_REASONING_OUTPUT_TOKENS]
        assert theirs["llm.token_count.completion_details.reasoning"] == reasoning
        assert theirs["llm.token_count.completion"] == reasoning + 80
        assert theirs["llm.token_count.total"] == 1200 + reasoning + 80
        # o3: $2 input, $0.50 cached input, $8 output per million tokens.
        cost = (176 * 2 + 1024 * 0.5 + (reasoning + 80) * 8) / 1e6
        assert theirs["llm.cost.total"] == pytest.approx(cost, rel=1e-12)
        # Phoenix prices the OpenInference token counts itself (its model table, which
        # the UI shows): the same o3 prices, reasoning at the output rate.
        computed = phoenix.span_cost(sample["id"])
        assert computed["prompt"]["tokens"] == 1200
        assert computed["completion"]["tokens"] == reasoning + 80
        assert computed["total"]["cost"] == pytest.approx(cost, rel=1e-9)
    assert group["span_kind"] == "CHAIN"
    budgeted = next(s for s in got if s["attributes"].get(names.BUDGET_NAME) == "e2e")
    assert budgeted["attributes"][names.BUDGET_OUTCOME] == names.OUTCOME_OK
    assert budgeted["parent_id"] is None
