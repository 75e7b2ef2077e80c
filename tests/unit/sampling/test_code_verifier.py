"""The code verifier: candidate code runs against tests in a sandboxed child process.

Proves, in each sandbox mode: it never runs in the caller's process; a runaway
candidate (and what it started) is killed, on timeout and on cancellation; memory is
capped; the child cannot reach a loopback server that the caller itself can reach; the
strong sandbox is refused or falls back as asked. Hostile candidates:
test_code_verifier_hostile.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcc_plugin.sampling import Candidate, best_of_n, code_verifier, extract_code
from tcc_plugin.sampling._harness import Report
from tcc_plugin.sampling.code_verifier import (
    SandboxUnavailable,
    bwrap_available,
    namespace_sandbox_available,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX sandbox")

GUARD = 30.0
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
MODES = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not bwrap_available(), reason="no bwrap")),
    pytest.param(
        "namespace",
        marks=pytest.mark.skipif(not namespace_sandbox_available(), reason="no network namespaces"),
    ),
    "audit",
]


def cand(value: Any) -> Candidate[Any]:
    return Candidate(0, "ok", value=value)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def loopback_server() -> Iterator[tuple[int, list[Any]]]:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted: list[Any] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(GUARD)
    server.close()


@pytest.mark.parametrize("mode", MODES)
def test_scores_the_fraction_of_tests_passed(mode: str) -> None:
    v = code_verifier(ADD_TESTS, network=mode, timeout=GUARD)  # type: ignore[arg-type]
    good = v.verify(cand("def add(a, b):\n    return a + b\n"))
    assert good.score == 1.0 and good.details["outcome"] == "passed"
    assert good.details["sandbox"] == {"audit": "audit-hook"}.get(mode, mode)
    half = v.verify(cand("def add(a, b):\n    return 3\n"))
    assert half.score == pytest.approx(1 / 3) and half.details["outcome"] == "failed"
    assert half.details["passed"] == 1 and half.details["total"] == 3
    assert half.details["failures"][0] is None and "AssertionError" in half.details["failures"][1]
    broken = v.verify(cand("def add(a, b) return a"))
    assert broken.score == 0.0 and broken.details["outcome"] == "error"
    assert "SyntaxError" in broken.details["error"]


def test_code_is_read_from_fenced_blocks() -> None:
    reply = (
        "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n"
        "and a shell:\n```sh\nls\n```"
    )
    assert extract_code(reply) == "def add(a, b):\n    return a + b\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```js\nlet x\n```") == "let x\n"
    assert extract_code("x = 2") == "x = 2"
    assert extract_code(None) is None
    v = code_verifier("assert add(2, 3) == 5", timeout=GUARD)
    assert v.verify(cand(reply)).score == 1.0
    nothing = v.verify(cand(None))
    assert nothing.score == 0.0 and nothing.details["outcome"] == "no-code"


@pytest.mark.parametrize("mode", MODES)
def test_never_runs_in_the_callers_process(mode: str) -> None:
    code = "import os\nos.environ['TCC_LEAK'] = '1'\nPID = os.getpid()\nLEAKED = True"
    v = code_verifier(f"assert LEAKED and PID != {os.getpid()}", network=mode, timeout=GUARD)  # type: ignore[arg-type]
    assert v.verify(cand(code)).score == 1.0
    assert "TCC_LEAK" not in os.environ and "LEAKED" not in globals()


def test_the_candidate_has_a_private_writable_directory() -> None:
    tests = [
        "open('notes.txt', 'w').write('x')\nassert open('notes.txt').read() == 'x'",
        "import os, tempfile\nassert os.getcwd() == os.environ['HOME'] == tempfile.gettempdir()",
        "import os\nassert set(os.environ) <= {'LANG', 'PATH', 'HOME', 'TMPDIR', 'PWD', 'EXTRA',"
        " 'PYTHONHASHSEED', 'PYTHONDONTWRITEBYTECODE', 'LC_CTYPE'}",
        "import os\nassert os.environ['EXTRA'] == '1'",
    ]
    for mode in ["audit", *(["bwrap"] if bwrap_available() else [])]:
        v = code_verifier(tests, network=mode, timeout=GUARD, env={"EXTRA": "1"})  # type: ignore[arg-type]
        verdict = v.verify(cand("pass"))
        assert verdict.score == 1.0, verdict.details


@pytest.mark.parametrize("mode", MODES)
def test_child_cannot_reach_a_loopback_server(
    mode: str, loopback_server: tuple[int, list[Any]]
) -> None:
    port, accepted = loopback_server
    connect = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
    raw = f"import socket\ns = socket.socket()\ns.settimeout(5)\ns.connect(('127.0.0.1', {port}))"
    # The server is reachable: the caller itself connects.
    exec(connect, {})
    assert _eventually(lambda: len(accepted) == 1)
    v = code_verifier([connect, raw], network=mode, timeout=GUARD)  # type: ignore[arg-type]
    verdict = v.verify(cand("pass"))
    assert verdict.score == 0.0 and verdict.details["outcome"] == "failed"
    failures = " ".join(verdict.details["failures"])
    # bwrap: its own loopback, with nothing listening; the fallbacks' hook refuses first
    expected = "Connection refused" if mode == "bwrap" else "sandbox: socket"
    assert expected in failures
    assert len(accepted) == 1  # nothing from the child ever arrived


def test_audit_sandbox_also_blocks_dns_processes_and_ctypes() -> None:
    tests = [
        "import socket\nsocket.getaddrinfo('localhost', 80)",
        "import subprocess\nsubprocess.run(['true'])",
        "import os\nos.system('true')",
        "import ctypes\nctypes.CDLL(None)",
    ]
    verdict = code_verifier(tests, network="audit", timeout=GUARD).verify(cand("pass"))
    assert verdict.score == 0.0
    assert all("PermissionError: sandbox:" in f for f in verdict.details["failures"])


@pytest.mark.parametrize("mode", MODES)
def test_a_runaway_candidate_is_killed(mode: str) -> None:
    marker = f"TCC_RUNAWAY_{uuid.uuid4().hex}"
    v = code_verifier("assert True", network=mode, timeout=0.5, env={marker: "1"})  # type: ignore[arg-type]
    verdict = v.verify(cand("while True:\n    pass\n"))
    assert verdict.score == 0.0 and verdict.details["outcome"] == "timeout"
    assert verdict.details["returncode"] == -9  # SIGKILL
    assert _eventually(lambda: processes_with(marker) == [])


@pytest.mark.skipif(not bwrap_available(), reason="no bwrap")
def test_what_a_runaway_candidate_started_dies_with_it() -> None:
    marker = f"TCC_CHILD_{uuid.uuid4().hex}"
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"  # escapes the process group
        f"    os.execv(sys.executable, [sys.executable, '-c', 'while 1: pass', {marker!r}])\n"
        "while True:\n    time.sleep(0.01)\n"
    )
    v = code_verifier("assert True", network="bwrap", timeout=1.0)
    verdict = v.verify(cand(code))
    if verdict.details["process_cap"] == "refused":  # root without a cgroup: no fork at all
        assert "os.fork is not allowed" in verdict.details["error"]
    else:
        assert verdict.details["outcome"] == "timeout"
    assert _eventually(lambda: processes_with(marker) == [])


def test_memory_is_capped() -> None:
    v = code_verifier("assert len(DATA) > 0", memory_mb=256, timeout=GUARD)
    verdict = v.verify(cand("DATA = bytearray(2 * 1024**3)"))
    assert verdict.score == 0.0 and verdict.details["outcome"] == "memory"
    assert "MemoryError" in verdict.details["error"]
    fine = v.verify(cand("DATA = bytearray(16 * 1024**2)"))
    assert fine.score == 1.0


def test_output_is_capped() -> None:
    v = code_verifier("assert True", timeout=GUARD)
    verdict = v.verify(
        cand("import sys\nsys.stdout.write('x' * (40 * 1024**2))\nsys.stdout.flush()")
    )
    # the file-size limit stops the write (error), or the output cap kills it (crashed)
    assert verdict.score == 0.0 and verdict.details["outcome"] in ("error", "crashed")


def test_a_crashing_child_scores_zero() -> None:
    verdict = code_verifier("assert True", timeout=GUARD).verify(cand("import os\nos._exit(3)"))
    assert verdict.score == 0.0 and verdict.details["outcome"] == "crashed"


@pytest.mark.parametrize("mode", MODES)
async def test_async_verification_kills_on_timeout_and_on_cancellation(mode: str) -> None:
    v = code_verifier("assert True", network=mode, timeout=0.5)  # type: ignore[arg-type]
    timed_out = await v.averify(cand("while True:\n    pass"))
    assert timed_out.details["outcome"] == "timeout"
    assert (await v.averify(cand("x = 1"))).score == 1.0

    marker = f"TCC_ASYNC_{uuid.uuid4().hex}"
    slow = code_verifier("assert True", network=mode, timeout=GUARD, env={marker: "1"})  # type: ignore[arg-type]
    task = asyncio.ensure_future(slow.averify(cand("while True:\n    pass\n")))
    for _ in range(3000):
        if processes_with(marker):
            break
        await asyncio.sleep(0.01)
    pids = processes_with(marker)
    assert pids and all(alive(pid) for pid in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(alive(pid) for pid in pids)  # killed before the cancellation finished


def test_in_a_best_of_n_group() -> None:
    replies = ["def add(a, b): return a - b", "```python\ndef add(a, b):\n    return a + b\n```"]
    result = best_of_n(_cycle(replies), n=2, verifier=code_verifier(ADD_TESTS, timeout=GUARD))
    assert result.winner is not None and result.winner.index == 1 and result.score == 1.0


def _cycle(replies: list[str]) -> Any:
    from .conftest import index

    return lambda: replies[index()]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        code_verifier([])
    with pytest.raises(ValueError):
        code_verifier("assert True", timeout=0)
    with pytest.raises(ValueError):
        code_verifier("assert True", memory_mb=1)
    with pytest.raises(ValueError):
        code_verifier("assert True", network="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        code_verifier("assert True", max_processes=0)
    with pytest.raises(ValueError, match="not an executable"):
        code_verifier("assert True", python="/nonexistent/python3")
    not_python = shutil.which("true")
    assert not_python is not None
    with pytest.raises(SandboxUnavailable, match="able to start"):
        code_verifier("assert True", network="bwrap", python=not_python)
    assert "1 tests" in repr(code_verifier("assert True"))


def test_strict_mode_refuses_without_bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    """network='bwrap' refuses where bubblewrap cannot run; 'auto' falls back, warning once."""
    monkeypatch.setenv("PATH", "/nonexistent")
    from tcc_plugin.sampling import _sandbox

    _sandbox.bwrap_path.cache_clear()
    _sandbox.warn_fallback_once.cache_clear()
    try:
        with pytest.raises(SandboxUnavailable, match="bubblewrap"):
            code_verifier("assert True", network="bwrap")
        v = code_verifier("assert x == 1", timeout=GUARD)
        with pytest.warns(RuntimeWarning, match="bubblewrap"):
            first = v.verify(cand("x = 1"))
        assert first.score == 1.0 and first.details["sandbox"] != "bwrap"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the second time: no warning
            assert v.verify(cand("x = 1")).score == 1.0
    finally:
        monkeypatch.undo()
        _sandbox.bwrap_path.cache_clear()
        _sandbox.warn_fallback_once.cache_clear()


def _eventually(check: Any) -> bool:
    import time

    for _ in range(int(GUARD / 0.02)):
        if check():
            return True
        time.sleep(0.02)
    return False


def test_the_docs_snippet_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    import re

    docs = (Path(__file__).resolve().parents[3] / "docs" / "sampling.md").read_text()
    section = docs[docs.index("### The code verifier's sandbox") :]
    snippet = re.search(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert snippet is not None
    exec(compile(snippet.group(1), "docs/sampling.md", "exec"), {})
    sandbox = (
        "bwrap"
        if bwrap_available()
        else ("namespace" if namespace_sandbox_available() else "audit-hook")
    )
    assert capsys.readouterr().out.split() == ["1.0", sandbox]


@pytest.mark.parametrize("mode", MODES)
def test_exposed_directories_are_importable_and_read_only(mode: str, tmp_path: Path) -> None:
    package = tmp_path / "lib"
    package.mkdir()
    (package / "helper_mod.py").write_text("def triple(x):\n    return 3 * x\n")
    for path in (tmp_path, package, package / "helper_mod.py"):
        path.chmod(0o755)
    tests = [
        "import helper_mod\nassert helper_mod.triple(2) == 6",
        f"open({str(package / 'new.py')!r}, 'w')",
    ]
    v = code_verifier(tests, network=mode, timeout=GUARD, expose=[str(package)])  # type: ignore[arg-type]
    verdict = v.verify(cand("pass"))
    assert verdict.details["failures"][0] is None, verdict.details
    assert verdict.score == 0.5 and not (package / "new.py").exists()


NONCE = "ab" * 16
VERBS = st.sampled_from(
    ["start", "end", "pass 0", "pass 1", "pass 2", "pass 3", "pass -1", "fail 0 0 41",
     "fail 1 1 zz", "error 0 41", "pass 00", "ready", "{\"passed\": 1000000}"]
)  # fmt: skip


@given(
    lines=st.lists(st.one_of(VERBS.map(lambda v: f"{NONCE} {v}"), VERBS, st.text(max_size=40))),
)
def test_the_parent_counts_each_test_once_in_order(lines: list[str]) -> None:
    """Whatever lines arrive, the count is what an honest in-order run would report:
    0 <= passed <= total, and 0 unless the run started and ended with the nonce."""
    report = Report(NONCE, 3)
    assert report.feed(b"ready")
    settled = False
    for line in lines:
        settled = settled or not report.feed(line.encode("utf-8", "surrogatepass"))
    assert 0 <= report.passed <= 3
    if report.passed:
        assert report.started and report.ended and report.forged is None
        assert len(report.results) == 3
        assert report.passed == sum(r is None for r in report.results)
        assert f"{NONCE} end" in lines and f"{NONCE} start" in lines
    if not any(line.startswith(NONCE) for line in lines):
        assert report.passed == 0


@pytest.mark.skipif(not bwrap_available(), reason="no bwrap")
def test_the_strong_sandbox_has_no_privileges_and_sees_almost_nothing() -> None:
    status = "STATUS = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)"  # noqa: E501
    tests = [
        "assert STATUS['Uid'].split() == ['65534'] * 4",
        "assert int(STATUS['CapEff'], 16) == 0 and int(STATUS['CapBnd'], 16) == 0",
        "assert STATUS['NoNewPrivs'].strip() == '1'",
        "import os\nassert os.getpid() < 10  # its own PID namespace",
        "import os\nassert not os.path.exists('/home') and not os.path.exists('/etc/passwd')",
        "import os\nassert len([p for p in os.listdir('/proc') if p.isdigit()]) <= 3",
        "import os, socket\nassert [n for _, n in socket.if_nameindex()] == ['lo']",
        "try:\n    import ctypes\n"
        "except PermissionError:\n    pass  # root without a cgroup: no native code at all\n"
        "else:\n    assert ctypes.CDLL(None).unshare(0x10000000) == -1  # CLONE_NEWUSER",
    ]
    verdict = code_verifier(tests, network="bwrap", timeout=GUARD).verify(cand(status))
    assert verdict.score == 1.0, verdict.details["failures"]


@pytest.mark.parametrize("isolate", [False, True])
def test_concurrent_verifications_keep_their_own_verdicts(isolate: bool) -> None:
    """Threads verifying at once never see each other's pipes or reports."""
    from concurrent.futures import ThreadPoolExecutor

    v = code_verifier(ADD_TESTS, timeout=GUARD, isolate_tests=isolate)
    codes = [f"def add(a, b):\n    return a + b + {k % 3 == 0}" for k in range(9)]
    with ThreadPoolExecutor(6) as pool:
        scores = list(pool.map(lambda c: v.verify(cand(c)).score, codes))
    assert scores == [0.0 if k % 3 == 0 else 1.0 for k in range(9)]
