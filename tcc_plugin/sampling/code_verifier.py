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
per-run nonce), reads nothing after the end and clamps the score to [0, 1]. Limits per
verification: wall time, CPU time, processes and total memory (a cgroup where one can
be made, else rlimits set hard), disk (tmpfs size), file size and output read back.

Score: the fraction of tests that pass (0 when the code does not even run).
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import math
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tcc_plugin.sampling._cgroup import Cgroup, cgroup_roots, descendants, leaves
from tcc_plugin.sampling._harness import HARNESS, Report
from tcc_plugin.sampling._sandbox import (
    SANDBOX_DIR,
    NetworkMode,
    SandboxUnavailable,
    bwrap_available,
    bwrap_command,
    interpreter_layout,
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
_OUTPUT_TAIL = 2000
_REPORT_LIMIT = 1 << 20  # a report longer than this is not the harness's
_CHUNK = 1 << 16


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


class _Run:
    """One verification: its pipes, command and limits; collects the report."""

    def __init__(self, verifier: code_verifier, code: str) -> None:
        self.verifier = verifier
        self.mode = verifier.resolved_mode()
        self.nonce = secrets.token_hex(16)
        self.report = Report(self.nonce, len(verifier.tests))
        self.tails = {"stdout": bytearray(), "stderr": bytearray()}
        self.output_bytes = 0
        self.dir: tempfile.TemporaryDirectory[str] | None = None
        self.cgroup: Cgroup | None = None
        self.fds: list[int] = []
        env = {
            "LANG": "C.UTF-8",
            "PATH": "/usr/bin:/bin",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        # Root without a cgroup: RLIMIT_NPROC does not bind, so in bubblewrap too the
        # hook refuses new processes (and ctypes, which would bypass it).
        uncapped = os.geteuid() == 0 and not cgroup_roots()
        audit = "full" if self.mode != "bwrap" else ("processes" if uncapped else "off")
        read_roots: list[str] = []
        if self.mode == "bwrap":
            env.update(HOME=SANDBOX_DIR, TMPDIR=SANDBOX_DIR, **verifier.env)
            prefix = bwrap_command(
                verifier.python,
                disk_bytes=verifier.disk_mb * 1024 * 1024,
                expose=verifier.expose,
                env=env,
            )
            self.command = [*prefix]
            self.env: dict[str, str] = {}
            self.cwd: str | None = None
            write_roots: list[str] = []
        else:
            self.dir = tempfile.TemporaryDirectory(prefix="tcc-code-", ignore_cleanup_errors=True)
            root = os.path.realpath(self.dir.name)
            real, directories, _ = interpreter_layout(verifier.python)
            read_roots = [*directories, *verifier.expose, "/dev/null", "/dev/urandom"]
            write_roots = [root]
            ns = namespace_prefix() if self.mode == "namespace" else ()
            self.command = [*(ns or ()), real]
            self.env = {**env, "HOME": root, "TMPDIR": root, **verifier.env}
            self.cwd = root
        job = {
            "code": code,
            "tests": list(verifier.tests),
            "nonce": self.nonce,
            "memory": verifier.memory_mb * 1024 * 1024,
            "cpu": math.ceil(verifier.timeout) + 1,
            "fsize": min(verifier.disk_mb, verifier.output_mb) * 1024 * 1024,
            "nproc": verifier.max_processes,
            "audit": audit,
            "read_roots": read_roots,
            "write_roots": write_roots,
        }
        # The job travels on a memfd: no path in the sandbox the candidate could replace.
        self.job_fd = os.memfd_create("tcc-job", 0)
        self.fds.append(self.job_fd)
        os.write(self.job_fd, marshal.dumps(job))
        os.lseek(self.job_fd, 0, os.SEEK_SET)
        self.report_r, self.report_w = os.pipe()
        self.go_r, self.go_w = os.pipe()
        self.fds += [self.report_r, self.report_w, self.go_r, self.go_w]
        self.command += ["-I", "-S", "-B", "-c", HARNESS, str(self.job_fd), str(self.report_w)]
        if cgroup_roots():
            self.cgroup = Cgroup(
                max_processes=verifier.max_processes,
                memory_bytes=verifier.memory_mb * 1024 * 1024,
            )
        self.process: subprocess.Popen[bytes] | None = None
        self.tree: set[int] = set()
        self.process_cap = "cgroup" if self.cgroup else ("refused" if audit != "off" else "rlimit")

    def start(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen(
            self.command,
            stdin=self.go_r,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(self.job_fd, self.report_w),
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,  # its own process group, killed as one
            close_fds=True,
        )
        for fd in (self.job_fd, self.report_w, self.go_r):  # only the child holds these
            self._close(fd)
        return self.process

    def _close(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.remove(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def on_report(self, data: bytes, pending: bytearray) -> bool:
        """Feed report bytes; False once the verdict is settled."""
        pending += data
        if len(pending) > _REPORT_LIMIT:
            self.report.forged = "a report larger than any harness writes"
            return False
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            was_ready = self.report.ready
            if not self.report.feed(line):
                return False
            if self.report.ready and not was_ready:
                self.go()
        return True

    def go(self) -> None:
        """The harness is up and nothing of the candidate has run: cage it, start it."""
        assert self.process is not None
        if self.cgroup is not None:  # the harness: the one leaf of the tree by now
            self.cgroup.add(leaves(self.process.pid))
        with contextlib.suppress(OSError):
            os.write(self.go_w, b"g")
        self._close(self.go_w)

    def on_output(self, name: str, data: bytes) -> bool:
        """Keep the tail of stdout/stderr; False once the output cap is reached."""
        self.output_bytes += len(data)
        tail = self.tails[name]
        tail += data
        del tail[:-_OUTPUT_TAIL]
        return self.output_bytes <= self.verifier.output_mb * 1024 * 1024

    def kill(self) -> None:
        """Kill the child's process group, its sandbox and its cgroup: nothing survives."""
        if self.process is not None:
            self.tree.update(descendants(self.process.pid))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            for pid in self.tree:  # the sandbox's own session, which the group misses
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill_all()

    def wait_gone(self, limit: float = 2.0) -> None:
        """Wait (briefly) until every process of the sandbox that we saw has died."""
        end = time.monotonic() + limit
        while self.tree and time.monotonic() < end:
            self.tree = {pid for pid in self.tree if _running(pid)}
            if self.tree:
                time.sleep(0.002)

    def verdict(self, returncode: int | None, timed_out: bool) -> Verdict:
        report, total = self.report, len(self.verifier.tests)
        memory = report.memory_error or (self.cgroup is not None and self.cgroup.out_of_memory())
        if memory and report.passed < total:  # also when it then ran out of time
            outcome = "memory"
        elif timed_out:
            outcome = "timeout"
        elif report.forged is not None:
            outcome = "forged"
        elif report.error is not None:
            outcome = "error"
        elif not report.ended:
            outcome = "crashed"
        else:
            outcome = "passed" if report.passed == total else "failed"
        passed = 0 if timed_out else report.passed
        details: dict[str, Any] = {
            "outcome": outcome,
            "passed": passed,
            "total": total,
            "sandbox": {"bwrap": "bwrap", "namespace": "namespace", "audit": "audit-hook"}[
                self.mode
            ],
            "returncode": returncode,
            "process_cap": self.process_cap,
            "stderr": self.tails["stderr"].decode("utf-8", "replace"),
            "error": report.error,
            "failures": tuple(report.results),
        }
        if report.forged is not None:
            details["forged"] = report.forged
        return Verdict(min(1.0, max(0.0, passed / total)), details)

    def close(self) -> None:
        for fd in list(self.fds):
            self._close(fd)
        if self.process is not None:
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
        if self.cgroup is not None:
            self.cgroup.close()
        if self.dir is not None:
            self.dir.cleanup()


def _drive(run: _Run, timeout: float, cancelled: threading.Event | None = None) -> Verdict:
    """Run to completion: read the report and output with a deadline on every read."""
    process = run.start()
    deadline = time.monotonic() + timeout
    timed_out = False
    pending = bytearray()
    assert process.stdout is not None and process.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(run.report_r, selectors.EVENT_READ, "report")
        selector.register(process.stdout.fileno(), selectors.EVENT_READ, "stdout")
        selector.register(process.stderr.fileno(), selectors.EVENT_READ, "stderr")
        pidfd = os.pidfd_open(process.pid)
        selector.register(pidfd, selectors.EVENT_READ, "exit")
        try:
            exited = False
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if cancelled is not None and cancelled.is_set():
                    break
                events = selector.select(min(left, 0.05) if cancelled is not None else left)
                if exited and not events:
                    break  # the child is gone and its pipes are drained
                done = False
                for key, _ in events:
                    if key.data == "exit":
                        exited = True
                        selector.unregister(pidfd)
                        run.kill()  # whatever it left behind goes with it
                        continue
                    data = os.read(key.fd, _CHUNK)
                    if not data:
                        selector.unregister(key.fd)
                        done = done or key.data == "report"
                    elif key.data == "report":
                        done = done or not run.on_report(data, pending)
                    elif not run.on_output(key.data, data):
                        selector.unregister(key.fd)  # the cap: stop reading, it is killed
                        done = True
                if done:
                    break
        finally:
            os.close(pidfd)
            run.kill()
            process.wait()
            run.wait_gone()
    return run.verdict(process.returncode, timed_out)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


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
    :class:`SandboxUnavailable`), ``"namespace"``, ``"audit"``. ``python`` is the
    interpreter (this one by default; only its stdlib is visible), ``expose`` extra
    directories made visible read-only (e.g. a site-packages), ``env`` extra
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
        if network not in ("auto", "bwrap", "namespace", "audit"):
            raise ValueError("network must be 'auto', 'bwrap', 'namespace' or 'audit'")
        if network == "bwrap" and not bwrap_available():
            raise SandboxUnavailable(
                "network='bwrap' needs bubblewrap: `apt-get install bubblewrap` "
                "(and user namespaces allowed); or choose network='auto'"
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
        self.python = python
        self.expose = tuple(os.path.realpath(p) for p in expose)
        self.env: dict[str, str] = dict(env or {})

    def resolved_mode(self) -> NetworkMode:
        """The sandbox a verification runs in now (``auto`` resolved)."""
        if self.network != "auto":
            return self.network
        if bwrap_available():
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
        run = _Run(self, code)
        try:
            return _drive(run, self.timeout)
        finally:
            run.close()

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        code = self._code(candidate)
        if isinstance(code, Verdict):
            return code
        run = _Run(self, code)
        cancelled = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(_drive, run, self.timeout, cancelled))
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
