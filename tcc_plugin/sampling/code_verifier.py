"""A verifier that runs candidate code against unit tests, in a sandbox that holds.

The candidate's code (the last fenced code block of its text, or the whole text) and
its tests run in a fresh interpreter, never in the caller's process, inside the
strongest sandbox this machine offers (see :mod:`tcc_plugin.sampling._sandbox` and
docs/sampling.md, "The code verifier's sandbox"):

- ``bwrap`` (bubblewrap): its own user, mount, PID, network and IPC namespaces; only
  the interpreter, its stdlib and their shared libraries, read-only; a private
  size-capped tmpfs; a fresh ``/proc``; a cleared environment; no capabilities.
- fallbacks ``namespace`` (``unshare``: no network, own PID namespace) and ``audit``
  (a PEP 578 hook refusing sockets, processes, native code and files outside its
  directory) — weaker, with a warning once; ``network="bwrap"`` refuses to run without
  bubblewrap instead.

The verdict: the harness reports each test over a pipe the parent opened before the
candidate ran; the parent counts the results itself (each test once, in order, with a
per-run nonce), reads nothing after the end and clamps the score to [0, 1]. With
``isolate_tests=True`` the tests run in a second sandbox that only calls the
candidate's functions and gets back built-in values: its verdict cannot be forged even
by code that reads the harness's memory. Tests get ``strict_equal`` against permissive
``__eq__``. Limits per
verification: wall time, CPU time, processes and total memory (a cgroup where one can
be made, else rlimits set hard), disk (tmpfs size), file size and output read back.

Score: the fraction of tests that pass (0 when the code does not even run).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tcc_plugin.sampling._run import Run, drive
from tcc_plugin.sampling._sandbox import (
    NetworkMode,
    SandboxUnavailable,
    bwrap_available,
    namespace_prefix,
    warn_fallback_once,
)
from tcc_plugin.sampling.extract import text_of
from tcc_plugin.sampling.result import Candidate, Verdict
from tcc_plugin.sampling.verifiers import Verifier

__all__ = [
    "NetworkMode",
    "SandboxUnavailable",
    "bwrap_available",
    "code_verifier",
    "extract_code",
    "namespace_sandbox_available",
]

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(value: Any) -> str | None:
    """The code in what a sample returned: its last fenced block tagged Python (or
    untagged), else its last fenced block, else its whole text."""
    text = text_of(value)
    if text is None:
        return None
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    python = [str(code) for tag, code in blocks if tag.lower() in ("python", "py", "python3", "")]
    return (python or [str(code) for _, code in blocks])[-1]


def namespace_sandbox_available() -> bool:
    """Whether children can run in their own network namespace here (``unshare``)."""
    return namespace_prefix() is not None


class code_verifier(Verifier):
    """Scores candidate code by the fraction of ``tests`` that pass, run in a sandbox
    (see the module docs and docs/sampling.md for what each layer stops).

    ``tests`` is Python code (a string: one test) or a sequence of snippets (each one
    test), run after the candidate's code in its namespace, e.g.
    ``["assert add(1, 2) == 3", "assert strict_equal(sort([3, 1]), [1, 3])"]``
    (``strict_equal`` compares built-in values without calling any method the candidate
    defined: a permissive ``__eq__`` cannot pass it). ``extract`` finds the code in what
    the sample returned (:func:`extract_code` by default).

    Limits per verification: ``timeout`` (wall seconds; CPU time is capped just above
    it), ``memory_mb`` (per process, and in total where a cgroup can be made),
    ``max_processes``, ``disk_mb`` (its writable directory), ``output_mb`` (stdout and
    stderr read back). ``network`` picks the sandbox: ``"auto"`` (bubblewrap, else the
    weaker namespace/audit sandbox with a warning once), ``"bwrap"`` (bubblewrap or
    :class:`SandboxUnavailable`), ``"namespace"``, ``"audit"``. ``isolate_tests=True``
    runs the tests in a second sandbox that calls the candidate's functions over a pipe
    and gets back only built-in values: the candidate cannot touch the tests, their
    verdict or ``==`` (its functions must take and return plain data). ``python`` is the
    interpreter (this one by default; only its stdlib is visible), ``expose`` extra
    directories made visible read-only and put on ``sys.path`` (e.g. a site-packages
    the candidate may import from), ``env`` extra
    environment variables (the child's environment is otherwise cleared).

    The :class:`~tcc_plugin.sampling.Verdict` details say ``outcome`` (``passed``,
    ``failed``, ``error``, ``memory``, ``timeout``, ``crashed``, ``forged``,
    ``no-code``), ``passed``/``total``, each test's failure, the candidate's error, the
    ``sandbox`` used and the tail of its stderr.
    """

    def __init__(
        self,
        tests: str | Sequence[str],
        *,
        extract: Callable[[Any], str | None] = extract_code,
        timeout: float = 10.0,
        memory_mb: int = 512,
        max_processes: int = 32,
        disk_mb: int = 64,
        output_mb: int = 16,
        network: NetworkMode = "auto",
        isolate_tests: bool = False,
        python: str = sys.executable,
        expose: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.tests: tuple[str, ...] = (tests,) if isinstance(tests, str) else tuple(tests)
        if not self.tests:
            raise ValueError("code_verifier needs at least one test")
        bad = [type(t).__name__ for t in self.tests if not isinstance(t, str)]
        if bad:
            raise TypeError(f"code_verifier tests must be strings of Python code, not {bad}")
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a finite number of seconds > 0")
        if memory_mb < 32:
            raise ValueError("memory_mb must be >= 32 (the interpreter itself needs some)")
        if max_processes < 1 or disk_mb < 1 or output_mb < 1:
            raise ValueError("max_processes, disk_mb and output_mb must be >= 1")
        if shutil.which(python) is None:
            raise ValueError(f"python={python!r} is not an executable interpreter")
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable("code_verifier's sandboxes need Linux (namespaces, memfd)")
        if network not in ("auto", "bwrap", "namespace", "audit"):
            raise ValueError("network must be 'auto', 'bwrap', 'namespace' or 'audit'")
        if network == "bwrap" and not bwrap_available(python):
            raise SandboxUnavailable(
                "network='bwrap' needs bubblewrap (`apt-get install bubblewrap`, user "
                f"namespaces allowed) and {python!r} able to start in it; or choose "
                "network='auto'"
            )
        if network == "namespace" and not namespace_sandbox_available():
            raise SandboxUnavailable(
                "network='namespace' needs `unshare` with network namespaces "
                "(root, or unprivileged user namespaces); use network='audit'"
            )
        self.extract = extract
        self.timeout = float(timeout)
        self.memory_mb = memory_mb
        self.max_processes = max_processes
        self.disk_mb = disk_mb
        self.output_mb = output_mb
        self.network: NetworkMode = network
        self.isolate_tests = isolate_tests
        self.python = python
        self.expose = tuple(os.path.realpath(p) for p in expose)
        self.env: dict[str, str] = dict(env or {})

    def resolved_mode(self) -> NetworkMode:
        """The sandbox a verification runs in now (``auto`` resolved)."""
        if self.network != "auto":
            return self.network
        if bwrap_available(self.python):
            return "bwrap"
        fallback: NetworkMode = "namespace" if namespace_sandbox_available() else "audit"
        warn_fallback_once(fallback)
        return fallback

    def _code(self, candidate: Candidate[Any]) -> str | Verdict:
        """The candidate's code, or the verdict that there is none to run."""
        details: dict[str, Any] = {"outcome": "no-code", "passed": 0, "total": len(self.tests)}
        try:
            code = self.extract(candidate.value)
        except Exception as exc:  # the user's extractor on a model's output: a score of 0
            return Verdict(0.0, {**details, "error": f"extract raised {type(exc).__name__}: {exc}"})
        if not isinstance(code, str) or not code.strip():
            reason = "no code" if not code else f"extract returned {type(code).__name__}"
            return Verdict(0.0, {**details, "error": reason})
        return code

    def verify(self, candidate: Candidate[Any]) -> Verdict:
        code = self._code(candidate)
        if isinstance(code, Verdict):
            return code
        run = Run(self, code)
        try:
            return drive(run, self.timeout)
        finally:
            run.close()

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        code = self._code(candidate)
        if isinstance(code, Verdict):
            return code
        run = Run(self, code)
        cancelled = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(drive, run, self.timeout, cancelled))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The child never outlives its verification: kill it and wait for the
            # driver thread to see it gone before the cancellation completes.
            cancelled.set()
            run.kill()
            with contextlib.suppress(BaseException):
                await asyncio.shield(task)
            raise
        finally:
            if task.done():
                run.close()
            else:  # pragma: no cover - only if the loop itself is torn down
                task.add_done_callback(lambda _: run.close())

    def __repr__(self) -> str:
        return (
            f"code_verifier({len(self.tests)} tests, timeout={self.timeout}, "
            f"network={self.network!r})"
        )
