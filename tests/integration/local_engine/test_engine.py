"""The embedded engine for real: the cached build, the verified models, the server."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import urllib.request
from pathlib import Path

import pytest

from tcc_plugin.app.local_engine import (
    CMAKE_FLAGS,
    GEMMA3_270M,
    QWEN25_CODER_05B,
    SERVER_ENV,
    EngineBuildError,
    LocalEngine,
    ModelAssemblyError,
    ensure_model,
    ensure_server,
)
from tcc_plugin.integrations.server_dialect import reasoning_of


def _get(url: str) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.load(response)


def test_the_server_binary_is_built_once_and_cached(qwen_engine: LocalEngine) -> None:
    if os.environ.get(SERVER_ENV):
        pytest.skip(f"${SERVER_ENV} names a prebuilt server")
    first = ensure_server()
    assert first == ensure_server()  # the cache answers; nothing is rebuilt
    info = json.loads((first.parent / "build.json").read_text())
    assert info["flags"] == list(CMAKE_FLAGS)
    assert "-DGGML_NATIVE=OFF" in info["flags"]
    assert first.stat().st_mode & 0o111


def test_the_models_are_joined_and_verified(qwen_engine: LocalEngine) -> None:
    path = ensure_model(GEMMA3_270M)
    assert path.stat().st_size == GEMMA3_270M.size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    assert digest.hexdigest() == GEMMA3_270M.sha256
    qwen = ensure_model(QWEN25_CODER_05B)
    assert qwen.stat().st_size == QWEN25_CODER_05B.size
    assert qwen.with_name(qwen.name + ".sha256").read_text().strip() == QWEN25_CODER_05B.sha256


def test_a_wrong_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCC_PLUGIN_CACHE_DIR", str(tmp_path))
    bogus = dataclasses.replace(GEMMA3_270M, sha256="0" * 64)
    with pytest.raises(ModelAssemblyError, match="expected 0000"):
        ensure_model(bogus)
    assert not list(tmp_path.rglob("*.gguf"))  # nothing half-made is left to be trusted


def test_the_engine_is_healthy_on_loopback(qwen_engine: LocalEngine) -> None:
    assert qwen_engine.running
    assert qwen_engine.base_url.startswith("http://127.0.0.1:")
    status, body = _get(qwen_engine.base_url + "/health")
    assert (status, body["status"]) == (200, "ok")
    _, models = _get(qwen_engine.base_url + "/v1/models")
    assert qwen_engine.alias in json.dumps(models)


def test_an_engine_starts_and_stops_cleanly() -> None:
    engine = LocalEngine(GEMMA3_270M, parallel=1, ctx_size=256, progress=False)
    with engine:
        url = engine.base_url
        pid = engine.pid
        assert _get(url + "/health")[0] == 200
    assert not engine.running
    assert pid is not None
    with pytest.raises(OSError):
        _get(url + "/health")


def test_the_chat_template_makes_the_server_split_reasoning(qwen_engine: LocalEngine) -> None:
    with qwen_engine.client(gpu_price=1) as client:  # a standard openai.OpenAI
        response = client.chat.completions.create(
            model=qwen_engine.alias,
            messages=[{"role": "user", "content": "What is 2+2?"}],
            max_tokens=12,
            temperature=0,
        )
    message = response.choices[0].message
    # what the model wrote after <think>\n, split out by the server
    assert reasoning_of(message)
    assert "<think>" not in (message.content or "")


def test_a_failing_build_reports_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the detached builder downloads and unpacks the sdist, then cmake refuses the
    # flags: the caller gets the step that failed and the tail of the build log
    monkeypatch.setenv("TCC_PLUGIN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(SERVER_ENV, raising=False)
    flags = (*CMAKE_FLAGS, "-DCMAKE_TOOLCHAIN_FILE=/nonexistent/toolchain.cmake")
    with pytest.raises(EngineBuildError, match="cmake configure failed"):
        ensure_server(flags=flags, poll=0.2)
    logs = list((tmp_path / "llama-server").glob("*.log"))
    assert logs and "== cmake" in logs[0].read_text()
    assert not list((tmp_path / "llama-server").glob("tcc-llama-build-*"))  # cleaned up
