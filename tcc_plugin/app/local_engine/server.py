"""``LocalEngine``: a managed ``llama-server`` on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from tcc_plugin.app.local_engine._progress import Progress, default_progress
from tcc_plugin.app.local_engine.build import ensure_server
from tcc_plugin.app.local_engine.models import MODELS, QWEN25_CODER_05B, ModelSpec, ensure_model

if TYPE_CHECKING:
    import openai

__all__ = ["CHATML_THINK_TEMPLATE", "THINK_END", "THINK_START", "EngineStartError", "LocalEngine"]

THINK_START = "<think>\n"
THINK_END = "</think>"

CHATML_THINK_TEMPLATE = """\
{%- for message in messages -%}
{%- if message['role'] == 'assistant' -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if message.reasoning_content is defined and message.reasoning_content -%}
{{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' -}}
{%- endif -%}
{{- message['content'] + '<|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{%- if enable_thinking is defined and enable_thinking is false -%}
{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' -}}
{%- else -%}
{{- '<|im_start|>assistant\\n<think>\\n' -}}
{%- endif -%}
{%- endif -%}
"""
"""ChatML whose generation prompt opens a thought (``<think>\\n``): with
``--reasoning-format deepseek`` the server returns what precedes ``</think>`` as
``reasoning_content`` and the rest as ``content``."""


class EngineStartError(RuntimeError):
    """``llama-server`` did not become healthy (the message ends with its log)."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: have the kernel terminate the server if the Python process dies without
    stopping it (killed, crashed), so no orphan keeps the port and the CPU."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class LocalEngine:
    """A ``llama-server`` serving one model on ``127.0.0.1``, managed for you.

    ``start()`` (or entering the context) builds or reuses the cached server binary,
    assembles or reuses the cached model, starts the server on a free loopback port and
    waits until ``/health`` answers; ``stop()`` (or leaving the context) terminates it.
    Chat models are served with :data:`CHATML_THINK_TEMPLATE` and
    ``--reasoning-format deepseek``, so chat responses carry the thought as
    ``reasoning_content``. ``parallel`` is the number of server slots (concurrent
    sequences, e.g. for ``n`` or parallel samples); ``ctx_size`` is per slot.
    """

    def __init__(
        self,
        model: ModelSpec | str = QWEN25_CODER_05B,
        *,
        model_path: str | Path | None = None,
        chat_template: str | None = None,
        reasoning_format: str = "deepseek",
        ctx_size: int = 2048,
        parallel: int = 4,
        threads: int | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 180.0,
        progress: Progress | bool | None = None,
        server_binary: str | Path | None = None,
    ) -> None:
        self.spec = MODELS[model] if isinstance(model, str) else model
        self.model_path = Path(model_path) if model_path is not None else None
        if chat_template is None and self.spec.chat:
            chat_template = CHATML_THINK_TEMPLATE
        self.chat_template = chat_template
        self.reasoning_format = reasoning_format
        self.ctx_size = ctx_size
        self.parallel = parallel
        self.threads = threads
        self.host = host
        self.port = port
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.progress = (
            progress if not isinstance(progress, bool) and progress is not None
            else default_progress(progress)
        )  # fmt: skip
        self.server_binary = Path(server_binary) if server_binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_path: Path | None = None
        self._template_path: Path | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], LocalEngine] | None = None

    # -- what a client needs ------------------------------------------------------------
    @property
    def alias(self) -> str:
        """The model name the server answers to (``model`` in requests and responses)."""
        return self.spec.alias

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        if self.port is None or self._proc is None:
            raise RuntimeError("the engine is not running: start() it first")
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def openai_base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the ``base_url`` of an ``openai`` client."""
        return self.base_url + "/v1"

    def client(
        self, *, http_client: Any = None, max_retries: int = 2, **options: Any
    ) -> openai.OpenAI:
        """A standard ``openai.OpenAI`` client of this server, instrumented
        (:func:`tcc_plugin.instrument`, llama.cpp dialect): ``options`` go to
        ``instrument`` (e.g. ``gpu_price``, ``retry``). Its model is :attr:`alias`."""
        import openai

        from tcc_plugin.instrument import instrument

        client = openai.OpenAI(
            base_url=self.openai_base_url,
            api_key="local",  # llama-server checks no key unless started with --api-key
            http_client=http_client,
            max_retries=max_retries,
        )
        return instrument(client, server="llama.cpp", **options)

    def async_client(
        self, *, http_client: Any = None, max_retries: int = 2, **options: Any
    ) -> openai.AsyncOpenAI:
        """The async twin of :meth:`client` (an ``openai.AsyncOpenAI``)."""
        import openai

        from tcc_plugin.instrument import instrument

        client = openai.AsyncOpenAI(
            base_url=self.openai_base_url,
            api_key="local",
            http_client=http_client,
            max_retries=max_retries,
        )
        return instrument(client, server="llama.cpp", **options)

    def log_text(self) -> str:
        """The server's log so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    # -- lifecycle ----------------------------------------------------------------------
    def prepare(self) -> tuple[Path, Path]:
        """Build (or reuse) the server binary and assemble (or reuse) the model."""
        binary = self.server_binary or ensure_server(progress=self.progress)
        model = self.model_path or ensure_model(self.spec, progress=self.progress)
        return binary, model

    def start(self) -> LocalEngine:
        """Start the server and wait until it is healthy; returns ``self``."""
        if self.running:
            return self
        binary, model = self.prepare()
        fixed_port = self.port is not None
        last: EngineStartError | None = None
        for _ in range(1 if fixed_port else 3):
            if not fixed_port:
                self.port = _free_port(self.host)
            try:
                self._launch(binary, model)
                return self
            except EngineStartError as exc:  # e.g. the port was taken meanwhile
                last = exc
                self.stop()
        assert last is not None
        raise last

    def _command(self, binary: Path, model: Path) -> list[str]:
        cmd = [
            str(binary), "-m", str(model), "--alias", self.alias,
            "--host", self.host, "--port", str(self.port),
            "-c", str(self.ctx_size * self.parallel), "--parallel", str(self.parallel),
            "--no-webui", "--metrics",
        ]  # fmt: skip
        # One compute thread per two cores: llama.cpp's threads spin at barriers, and on
        # a small machine shared with other work (a test runner, the client) two
        # threads on two cores run ~10x slower than one (measured on 2 cores).
        threads = self.threads if self.threads is not None else max(1, (os.cpu_count() or 2) // 2)
        cmd += ["--threads", str(threads)]
        if self.chat_template is not None:
            fd, name = tempfile.mkstemp(prefix="tcc-template-", suffix=".jinja")
            with os.fdopen(fd, "w") as handle:
                handle.write(self.chat_template)
            self._template_path = Path(name)
            cmd += ["--jinja", "--chat-template-file", name]
            cmd += ["--reasoning-format", self.reasoning_format]
        return cmd + list(self.extra_args)

    def _launch(self, binary: Path, model: Path) -> None:
        fd, log_name = tempfile.mkstemp(prefix="tcc-llama-server-", suffix=".log")
        os.close(fd)
        self._log_path = Path(log_name)
        self._log = open(self._log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self._command(binary, model),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self._finalizer = weakref.finalize(self, _stop_process, self._proc)
        with self.progress.task(f"starting llama-server ({self.alias})") as task:
            self._wait_healthy()
            task.update(1)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{self.host}:{self.port}/health"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise EngineStartError(
                    f"llama-server exited with code {self._proc.returncode}:\n"
                    + self.log_text()[-3000:]
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200 and json.load(response).get("status") == "ok":
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.2)
        raise EngineStartError(
            f"llama-server did not become healthy in {self.startup_timeout:.0f}s:\n"
            + self.log_text()[-3000:]
        )

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop_process(proc)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._template_path is not None:
            with contextlib.suppress(OSError):
                self._template_path.unlink()
            self._template_path = None

    def __enter__(self) -> LocalEngine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalEngine({self.alias!r}, {state})"
