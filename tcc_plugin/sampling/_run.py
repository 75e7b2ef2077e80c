"""One code verification: the sandboxed processes, their pipes, and the loop that reads
their report with a deadline on every read.

Inline (the default): one process runs the candidate's code, then the tests, and
reports. Isolated (``isolate_tests=True``): the candidate's code runs in one sandbox
and the tests in another, which calls the candidate's functions over a pipe and gets
back only values of built-in types; the report comes from the tests' process alone.
"""

from __future__ import annotations

import contextlib
import marshal
import math
import os
import secrets
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

from tcc_plugin.sampling._cgroup import Cgroup, cgroup_roots, descendants, leaves
from tcc_plugin.sampling._harness import HARNESS, Report
from tcc_plugin.sampling._sandbox import (
    SANDBOX_DIR,
    bwrap_command,
    interpreter_layout,
    namespace_prefix,
)
from tcc_plugin.sampling.result import Verdict

if TYPE_CHECKING:
    from tcc_plugin.sampling.code_verifier import code_verifier

__all__ = ["Run", "drive"]

_OUTPUT_TAIL = 2000
_REPORT_LIMIT = 1 << 20  # a report longer than this is not the harness's
_CHUNK = 1 << 16
_SANDBOX_NAMES = {"bwrap": "bwrap", "namespace": "namespace", "audit": "audit-hook"}


class _Part:
    """One sandboxed interpreter running the harness: its job, pipes and process."""

    def __init__(self, run: Run, job: dict[str, Any], *, reads_output: bool) -> None:
        self.run = run
        self.reads_output = reads_output
        self.job_fd = run.fd(os.memfd_create("tcc-job"))  # no path to replace
        os.write(self.job_fd, marshal.dumps(job))
        os.lseek(self.job_fd, 0, os.SEEK_SET)
        self.report_r, self.report_w = (run.fd(fd) for fd in os.pipe())
        self.go_r, self.go_w = (run.fd(fd) for fd in os.pipe())
        self.child_fds = [self.job_fd, self.report_w, *job.get("rpc_fds", ())]
        self.command = [
            *run.prefix, "-I", "-S", "-B", "-c", HARNESS, str(self.job_fd), str(self.report_w)
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.ready = False

    def start(self) -> subprocess.Popen[bytes]:
        out = subprocess.PIPE if self.reads_output else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command,
            stdin=self.go_r,
            stdout=out,
            stderr=out,
            pass_fds=tuple(self.child_fds),
            cwd=self.run.cwd,
            env=self.run.env,
            start_new_session=True,  # its own process group, killed as one
            close_fds=True,
        )
        for fd in (*self.child_fds, self.go_r):  # from now on only the child holds these
            self.run.close_fd(fd)
        return self.process


class Run:
    """One verification: its sandbox parts and limits; collects the report."""

    def __init__(self, verifier: code_verifier, code: str) -> None:
        self.verifier = verifier
        self.mode = verifier.resolved_mode()
        self.nonce = secrets.token_hex(16)
        self.report = Report(self.nonce, len(verifier.tests))
        self.tails = {"stdout": bytearray(), "stderr": bytearray()}
        self.output_bytes = 0
        self.fds: list[int] = []
        self.tree: set[int] = set()
        self.lock = threading.Lock()
        self.dir: tempfile.TemporaryDirectory[str] | None = None
        self.cgroup: Cgroup | None = None
        self.parts: list[_Part] = []
        try:
            self._build(verifier, code)
        except BaseException:
            self.close()
            raise

    def _build(self, verifier: code_verifier, code: str) -> None:
        env = {"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}
        # Root without a cgroup: RLIMIT_NPROC does not bind, so in bubblewrap too the
        # hook refuses new processes (and ctypes, which would bypass it).
        if cgroup_roots():
            try:
                self.cgroup = Cgroup(
                    max_processes=verifier.max_processes,
                    memory_bytes=verifier.memory_mb * 1024 * 1024,
                )
            except OSError:  # e.g. a controller refused the limit: rlimits only
                self.cgroup = None
        uncapped = os.geteuid() == 0 and self.cgroup is None
        audit = "full" if self.mode != "bwrap" else ("processes" if uncapped else "off")
        read_roots: list[str] = []
        write_roots: list[str] = []
        if self.mode == "bwrap":
            env.update(HOME=SANDBOX_DIR, TMPDIR=SANDBOX_DIR, **verifier.env)
            disk = verifier.disk_mb * 1024 * 1024
            self.prefix = bwrap_command(
                verifier.python, disk_bytes=disk, expose=verifier.expose, env=env
            )
            self.env: dict[str, str] = {}
            self.cwd: str | None = None
        else:
            self.dir = tempfile.TemporaryDirectory(prefix="tcc-code-", ignore_cleanup_errors=True)
            root = os.path.realpath(self.dir.name)
            real, directories, _ = interpreter_layout(verifier.python)
            read_roots = [*directories, *verifier.expose, "/dev/null", "/dev/urandom"]
            write_roots = [root]
            ns = namespace_prefix() if self.mode == "namespace" else None
            self.prefix = [*(ns or ()), real]
            self.env = {**env, "HOME": root, "TMPDIR": root, **verifier.env}
            self.cwd = root
        self.process_cap = "cgroup" if self.cgroup else ("refused" if audit != "off" else "rlimit")
        base = {
            "memory": verifier.memory_mb * 1024 * 1024,
            "cpu": math.ceil(verifier.timeout) + 1,
            "fsize": min(verifier.disk_mb, verifier.output_mb) * 1024 * 1024,
            "nproc": verifier.max_processes,
            "audit": audit,
            "read_roots": read_roots,
            "write_roots": write_roots,
            "path": list(verifier.expose),
        }
        tests = list(verifier.tests)
        if verifier.isolate_tests:
            to_candidate_r, to_candidate_w = (self.fd(fd) for fd in os.pipe())
            to_tests_r, to_tests_w = (self.fd(fd) for fd in os.pipe())
            candidate = {  # never sees the nonce nor the tests
                **base, "role": "candidate", "code": code, "tests": [], "nonce": "",
                "rpc_in": to_candidate_r, "rpc_out": to_tests_w,
                "rpc_fds": (to_candidate_r, to_tests_w),
            }  # fmt: skip
            checker = {
                **base, "role": "tests", "code": "", "tests": tests, "nonce": self.nonce,
                "rpc_in": to_tests_r, "rpc_out": to_candidate_w,
                "rpc_fds": (to_tests_r, to_candidate_w),
            }  # fmt: skip
            self.parts = [
                _Part(self, candidate, reads_output=True),
                _Part(self, checker, reads_output=False),
            ]
        else:
            job = {**base, "role": "inline", "code": code, "tests": tests, "nonce": self.nonce}
            self.parts = [_Part(self, job, reads_output=True)]

    @property
    def reporter(self) -> _Part:
        """The part whose report is the verdict (the tests' process)."""
        return self.parts[-1]

    def fd(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def close_fd(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.remove(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def on_ready(self, part: _Part) -> None:
        """A harness is up; once all are, cage the candidate's one and let them go."""
        part.ready = True
        if not all(p.ready for p in self.parts):
            return
        candidate = self.parts[0].process
        if self.cgroup is not None and candidate is not None:
            self.cgroup.add(leaves(candidate.pid))  # the harness: the one leaf by now
        for p in self.parts:
            with contextlib.suppress(OSError):
                os.write(p.go_w, b"g")
            self.close_fd(p.go_w)

    def on_report(self, data: bytes, pending: bytearray) -> bool:
        """Feed the reporter's bytes; False once the verdict is settled."""
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
                self.on_ready(self.reporter)
        return True

    def on_output(self, name: str, data: bytes) -> bool:
        """Keep the tail of stdout/stderr; False once the output cap is reached."""
        self.output_bytes += len(data)
        tail = self.tails[name]
        tail += data
        del tail[:-_OUTPUT_TAIL]
        return self.output_bytes <= self.verifier.output_mb * 1024 * 1024

    def kill(self) -> None:
        """Kill every part's process group, sandbox and cgroup: nothing survives.
        Thread-safe: an async cancellation kills while the driver thread may too."""
        with self.lock:
            for part in self.parts:
                if part.process is None:
                    continue
                self.tree.update(descendants(part.process.pid))
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(part.process.pid, signal.SIGKILL)
            for pid in self.tree:  # a sandbox's own session, which the group misses
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if self.cgroup is not None:
                self.cgroup.kill_all()

    def wait_gone(self, limit: float = 2.0) -> None:
        """Reap the parts and wait (briefly) until every process we saw has died."""
        for part in self.parts:
            if part.process is not None:
                part.process.wait()
        end = time.monotonic() + limit
        while time.monotonic() < end:
            with self.lock:
                self.tree = {pid for pid in self.tree if _running(pid)}
                if not self.tree:
                    return
            time.sleep(0.002)

    def verdict(self, timed_out: bool) -> Verdict:
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
        first = self.parts[0].process
        details: dict[str, Any] = {
            "outcome": outcome,
            "passed": passed,
            "total": total,
            "sandbox": _SANDBOX_NAMES[self.mode],
            "isolated_tests": self.verifier.isolate_tests,
            "returncode": first.returncode if first is not None else None,
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
            self.close_fd(fd)
        for part in self.parts:
            if part.process is not None:
                for stream in (part.process.stdout, part.process.stderr):
                    if stream is not None:
                        stream.close()
        if self.cgroup is not None:
            self.cgroup.close()
        if self.dir is not None:
            self.dir.cleanup()


def drive(run: Run, timeout: float, cancelled: threading.Event | None = None) -> Verdict:
    """Run to completion: read the report and output with a deadline on every read."""
    deadline = time.monotonic() + timeout
    timed_out = False
    pending = bytearray()
    pidfd = -1
    with selectors.DefaultSelector() as selector:
        try:
            for part in run.parts:
                process = part.start()
                selector.register(part.report_r, selectors.EVENT_READ, ("report", part))
                if process.stdout is not None and process.stderr is not None:
                    selector.register(process.stdout.fileno(), selectors.EVENT_READ, "stdout")
                    selector.register(process.stderr.fileno(), selectors.EVENT_READ, "stderr")
            reporter = run.reporter.process
            assert reporter is not None
            pidfd = os.pidfd_open(reporter.pid)
            selector.register(pidfd, selectors.EVENT_READ, "exit")
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
                    break  # the reporter is gone and its pipes are drained
                done = False
                for key, _ in events:
                    if key.data == "exit":
                        exited = True
                        selector.unregister(pidfd)
                        run.kill()  # whatever it left behind goes with it
                        continue
                    data = os.read(key.fd, _CHUNK)
                    if isinstance(key.data, tuple):
                        part = key.data[1]
                        if part is run.reporter:
                            if not data:
                                selector.unregister(key.fd)
                                done = True
                            elif not run.on_report(data, pending):
                                done = True
                        else:  # the candidate's harness: "ready", and nothing more is read
                            selector.unregister(key.fd)
                            if data == b"ready\n":
                                run.on_ready(part)
                            else:
                                run.report.forged = "the candidate's harness did not start"
                                done = True
                    elif not data:
                        selector.unregister(key.fd)
                    elif not run.on_output(key.data, data):
                        selector.unregister(key.fd)  # the cap: stop reading, it is killed
                        done = True
                if done:
                    break
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            run.kill()
            run.wait_gone()
    return run.verdict(timed_out)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False
