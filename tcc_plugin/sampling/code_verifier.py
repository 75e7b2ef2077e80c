"""A verifier that runs candidate code against unit tests, in a sandboxed subprocess.

The candidate's code (the last fenced code block of its text, or the whole text) and
each test run in a fresh Python interpreter, never in the caller's process:

- **time**: a wall-clock ``timeout``; then the child's whole process group is killed
  (``SIGKILL``), and with the namespace sandbox the whole PID namespace dies with it.
  A CPU-time limit (``RLIMIT_CPU``) backs it up.
- **memory**: an address-space limit (``RLIMIT_AS``, ``memory_mb``); the candidate
  sees ``MemoryError``. File writes are capped too (``RLIMIT_FSIZE``) and so is the
  output the caller reads back.
- **network**: with ``network="namespace"`` the child runs in new network and PID
  namespaces (``unshare``; as root or through an unprivileged user namespace): it has
  no network interface at all, loopback included. Where namespaces are unavailable,
  ``network="audit"`` installs an audit hook (PEP 578) in the child before any
  candidate code runs, refusing socket connections, DNS, and starting processes or
  loading native code through ctypes (which would bypass the hook). ``"auto"``
  (default) takes the namespace when it works, else the hook.

The limits are set by the child's bootstrap code before the candidate's code is even
compiled (not in a ``preexec_fn``, which is unsafe in threaded programs such as a
sampling group). This is isolation against runaway, greedy or network-hungry code,
not a security boundary against code crafted to attack the host: run untrusted code
in a container or VM as well.

Score: the fraction of tests that pass (0 when the code does not even run).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tcc_plugin.sampling.extract import text_of
from tcc_plugin.sampling.result import Candidate, Verdict
from tcc_plugin.sampling.verifiers import Verifier

__all__ = ["NetworkMode", "code_verifier", "extract_code", "namespace_sandbox_available"]

NetworkMode = Literal["auto", "namespace", "audit"]

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_OUTPUT_TAIL = 2000
_FILE_LIMIT = 16 * 1024 * 1024

# The child's bootstrap. Standalone (it imports nothing from tcc_plugin); it reads its
# job, drops it from disk, sets its limits, installs the audit hook if asked, then runs
# the candidate's code and each test in one namespace and writes the result file.
_HARNESS = r"""
import json, os, resource, signal, sys, traceback

job_path = sys.argv[1]
with open(job_path, encoding="utf-8") as f:
    job = json.load(f)
os.remove(job_path)
result_path = job["result"]

def limit(kind, value):
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass

limit(resource.RLIMIT_AS, job["memory"])
limit(resource.RLIMIT_CPU, job["cpu"])
limit(resource.RLIMIT_FSIZE, job["fsize"])
limit(resource.RLIMIT_CORE, 0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write raises OSError instead

if job["audit"]:
    BLOCKED = (
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "os.fork", "os.forkpty", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym",
        "ctypes.cdata", "sys.addaudithook",
    )

    def guard(event, args):
        if event in BLOCKED:
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(guard)

def tail(text, size=500):
    return text if len(text) <= size else "..." + text[-size:]

out = {"passed": 0, "results": [], "error": None, "memory_error": False}
namespace = {"__name__": "__candidate__"}
try:
    exec(compile(job["code"], "<candidate>", "exec"), namespace)
except BaseException as exc:
    out["error"] = tail(traceback.format_exc())
    out["memory_error"] = isinstance(exc, MemoryError)
else:
    for i, test in enumerate(job["tests"]):
        try:
            exec(compile(test, f"<test {i}>", "exec"), namespace)
        except BaseException as exc:
            out["results"].append(tail(f"{type(exc).__name__}: {exc}"))
            out["memory_error"] = out["memory_error"] or isinstance(exc, MemoryError)
        else:
            out["results"].append(None)
            out["passed"] += 1
with open(result_path, "w", encoding="utf-8") as f:
    json.dump(out, f)
"""


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


@functools.cache
def _namespace_prefix() -> tuple[str, ...] | None:
    """The ``unshare`` command that gives a child no network, if it works here."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return None
    base = ("--net", "--pid", "--fork", "--kill-child")
    for extra in ((), ("--user", "--map-root-user")):
        command = (unshare, *extra, *base)
        try:
            done = subprocess.run([*command, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return command
    return None


def namespace_sandbox_available() -> bool:
    """Whether children can run in their own network namespace here."""
    return _namespace_prefix() is not None


class _Run:
    """One sandboxed run: its files, command and environment; reads its verdict."""

    def __init__(self, verifier: code_verifier, code: str) -> None:
        self.verifier = verifier
        self.dir = tempfile.TemporaryDirectory(prefix="tcc-code-", ignore_cleanup_errors=True)
        root = Path(self.dir.name)
        self.result = root / "result.json"
        job = root / "job.json"
        prefix: tuple[str, ...] = ()
        audit = verifier.network == "audit"
        if verifier.network in ("auto", "namespace"):
            found = _namespace_prefix()
            if found is not None:
                prefix = found
            elif verifier.network == "namespace":
                self.dir.cleanup()
                raise RuntimeError(
                    "network='namespace' needs `unshare` with network namespaces "
                    "(root, or unprivileged user namespaces); use network='audit'"
                )
            else:
                audit = True
        self.sandbox = "audit-hook" if audit else "namespace"
        job.write_text(
            json.dumps(
                {
                    "code": code,
                    "tests": list(verifier.tests),
                    "result": str(self.result),
                    "memory": verifier.memory_mb * 1024 * 1024,
                    "cpu": math.ceil(verifier.timeout) + 1,
                    "fsize": _FILE_LIMIT,
                    "audit": audit,
                }
            ),
            encoding="utf-8",
        )
        harness = root / "harness.py"
        harness.write_text(_HARNESS, encoding="utf-8")
        self.command = [*prefix, verifier.python, "-I", "-B", str(harness), str(job)]
        self.env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": "C.UTF-8",
            "HOME": str(root),
            "TMPDIR": str(root),
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            **verifier.env,
        }
        self.cwd = str(root)
        self.stdout = open(root / "stdout.txt", "wb")  # noqa: SIM115 - closed in close()
        self.stderr = open(root / "stderr.txt", "wb")  # noqa: SIM115

    def popen_kwargs(self) -> dict[str, Any]:
        return {
            "stdin": subprocess.DEVNULL,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "cwd": self.cwd,
            "env": self.env,
            "start_new_session": True,  # its own process group, killed as one
            "close_fds": True,
        }

    @staticmethod
    def kill(pid: int) -> None:
        """Kill the child's whole process group (it may have started others)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)

    def _tail(self, name: str) -> str:
        path = Path(self.cwd) / name
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - _OUTPUT_TAIL))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def verdict(self, returncode: int | None, timed_out: bool) -> Verdict:
        total = len(self.verifier.tests)
        details: dict[str, Any] = {
            "total": total,
            "sandbox": self.sandbox,
            "returncode": returncode,
            "stderr": self._tail("stderr.txt"),
        }
        try:
            out = json.loads(self.result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            out = None
        if timed_out:
            outcome = "timeout"
        elif out is None:
            outcome = "crashed"
        elif out.get("memory_error"):
            outcome = "memory"
        elif out.get("error"):
            outcome = "error"
        else:
            outcome = "passed" if out["passed"] == total else "failed"
        passed = int(out["passed"]) if out is not None and not timed_out else 0
        details.update(outcome=outcome, passed=passed)
        if out is not None:
            details["error"] = out.get("error")
            details["failures"] = tuple(out.get("results", ()))
        return Verdict(passed / total, details)

    def close(self) -> None:
        self.stdout.close()
        self.stderr.close()
        self.dir.cleanup()


class code_verifier(Verifier):
    """Scores candidate code by the fraction of ``tests`` that pass, run in a sandboxed
    subprocess (see the module docs for the guarantees).

    ``tests`` is Python code (a string: one test) or a sequence of snippets (each one
    test), run after the candidate's code in its namespace, e.g.
    ``["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]``. ``extract`` finds the code
    in what the sample returned (:func:`extract_code` by default). ``timeout`` is the
    wall-clock limit in seconds for the whole run, ``memory_mb`` its address-space
    limit. ``network`` picks the sandbox (``"auto"``, ``"namespace"``, ``"audit"``).
    ``python`` is the interpreter (this one by default); ``env`` adds environment
    variables (the child otherwise gets only ``PATH``, ``LANG``, ``HOME``).

    The :class:`~tcc_plugin.sampling.Verdict` details say ``outcome`` (``passed``,
    ``failed``, ``error``, ``memory``, ``timeout``, ``crashed``), ``passed``/``total``,
    each test's failure, the candidate's error and the tail of its stderr.
    """

    def __init__(
        self,
        tests: str | Sequence[str],
        *,
        extract: Callable[[Any], str | None] = extract_code,
        timeout: float = 10.0,
        memory_mb: int = 512,
        network: NetworkMode = "auto",
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.tests: tuple[str, ...] = (tests,) if isinstance(tests, str) else tuple(tests)
        if not self.tests:
            raise ValueError("code_verifier needs at least one test")
        if not timeout > 0:
            raise ValueError("timeout must be > 0 seconds")
        if memory_mb < 32:
            raise ValueError("memory_mb must be >= 32 (the interpreter itself needs some)")
        if network not in ("auto", "namespace", "audit"):
            raise ValueError("network must be 'auto', 'namespace' or 'audit'")
        self.extract = extract
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.network: NetworkMode = network
        self.python = python
        self.env: dict[str, str] = dict(env or {})

    def _no_code(self) -> Verdict:
        return Verdict(0.0, {"outcome": "no-code", "passed": 0, "total": len(self.tests)})

    def verify(self, candidate: Candidate[Any]) -> Verdict:
        code = self.extract(candidate.value)
        if not code:
            return self._no_code()
        run = _Run(self, code)
        try:
            process = subprocess.Popen(run.command, **run.popen_kwargs())
            timed_out = False
            try:
                process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _Run.kill(process.pid)  # also whatever it left running in the background
                process.wait()
            return run.verdict(process.returncode, timed_out)
        finally:
            run.close()

    async def averify(self, candidate: Candidate[Any]) -> Verdict:
        code = self.extract(candidate.value)
        if not code:
            return self._no_code()
        run = _Run(self, code)
        try:
            process = await asyncio.create_subprocess_exec(*run.command, **run.popen_kwargs())
            timed_out = False
            try:
                await asyncio.wait_for(process.wait(), self.timeout)
            except asyncio.TimeoutError:
                timed_out = True
            finally:  # on cancellation too: the child never outlives its verification
                _Run.kill(process.pid)
                await asyncio.shield(process.wait())
            return run.verdict(process.returncode, timed_out)
        finally:
            run.close()

    def __repr__(self) -> str:
        return f"code_verifier({len(self.tests)} tests, timeout={self.timeout})"
