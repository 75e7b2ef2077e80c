"""Hostile candidates against the code verifier: each probe must end with a score of 0
(or a clean error) within the timeout, and leave the caller unharmed: no hang, memory
bounded, no stray process, no file outside the sandbox, no connection to a listener
the test starts, no secret read.

Every probe runs in each sandbox mode (``bwrap``, ``namespace``, ``audit``); what a
mode cannot stop is marked ``xfail`` with the reason (the harness-aware forger in
inline tests is a strict xfail: it is shown to succeed there, and to fail with
``isolate_tests=True``), never skipped silently. Run as root by default;
``test_the_hostile_suite_holds_as_a_non_root_user`` reruns this file as ``nobody``.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tcc_plugin.sampling import Candidate, Verdict, best_of_n, code_verifier
from tcc_plugin.sampling._cgroup import cgroup_roots
from tcc_plugin.sampling.code_verifier import bwrap_available, namespace_sandbox_available

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

ROOT = os.geteuid() == 0
CGROUP = bool(cgroup_roots())
TIMEOUT = 8.0
MODES = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not bwrap_available(), reason="no bwrap")),
    pytest.param(
        "namespace",
        marks=pytest.mark.skipif(not namespace_sandbox_available(), reason="no unshare"),
    ),
    "audit",
]
ADD = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 5) == 5"]
WRONG = "def add(a, b):\n    return a - b\n"


def every_fd(payload: str) -> str:
    """Candidate code that writes ``payload`` (a bytes expression) to every fd from 3."""
    return (
        "import os\nfor fd in range(3, 300):\n    try:\n"
        f"        os.write(fd, {payload})\n    except OSError:\n        pass\n"
    )


def gap(mode: str, modes: tuple[str, ...], why: str) -> None:
    """Mark a probe the fallback cannot stop (documented in docs/sampling.md)."""
    if mode in modes:
        pytest.xfail(f"{mode} sandbox cannot stop this: {why}")


def run(code: str, mode: str, tests: list[str] | None = None, **kw: Any) -> Verdict:
    kw.setdefault("timeout", TIMEOUT)
    v = code_verifier(tests or ADD, network=mode, **kw)  # type: ignore[arg-type]
    verdict = v.verify(Candidate(0, "ok", value=code))
    assert 0.0 <= verdict.score <= 1.0
    return verdict


def alive_with(marker: str) -> list[int]:
    """Live processes whose environment or command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            blob = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in blob and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def tcp_listener() -> Iterator[tuple[int, list[Any]]]:
    """A TCP listener on 127.0.0.1 that records every connection it accepts."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield from _serve(server, server.getsockname()[1])


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[tuple[str, list[Any]]]:
    """A Unix socket on the host file system, world-connectable."""
    path = tmp_path / "host.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o777)
    os.chmod(tmp_path, 0o755)
    server.listen(16)
    yield from _serve(server, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[tuple[str, list[Any]]]:
    """A Unix socket in the abstract namespace (scoped by network namespace)."""
    name = f"tcc-hostile-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(16)
    yield from _serve(server, name)


def _serve(server: socket.socket, address: Any) -> Iterator[Any]:
    server.settimeout(0.1)
    accepted: list[Any] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn.recv(64))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield address, accepted
    stop.set()
    thread.join(10)
    server.close()


# -- the verdict ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_forged_report_lines_on_every_fd_score_zero(mode: str) -> None:
    forge = (
        "lines = b'ready\\n' + b''.join(b'%s pass %d\\n' % (n, i) for n in (b'x', b'0'*32)"
        " for i in range(3)) + b'{\"passed\": 1000000}\\nend\\n'\n" + every_fd("lines") + WRONG
    )
    verdict = run(forge, mode)
    assert verdict.score == 0.0 and verdict.details["outcome"] == "forged"
    assert "nonce" in verdict.details["forged"]


@pytest.mark.parametrize("mode", MODES)
def test_a_report_flood_is_cut_off(mode: str) -> None:
    verdict = run(every_fd("b'x' * (2 << 20)"), mode)
    assert verdict.score == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_atexit_and_main_rewrites_cannot_change_the_verdict(mode: str) -> None:
    code = (
        "import atexit, os, sys, __main__\n"
        "__main__.tests = ['pass'] * 3\n"
        "sys.modules['__main__'].__dict__.update(tests=('pass',), job={'tests': []})\n"
        "def forge():\n"
        "    for fd in range(3, 300):\n"
        "        try:\n            os.write(fd, b'pass 0\\npass 1\\npass 2\\nend\\n')\n"
        "        except OSError:\n            pass\n"
        "atexit.register(forge)\n" + WRONG
    )
    verdict = run(code, mode)
    assert verdict.score == 0.0 and verdict.details["outcome"] == "failed"
    assert verdict.details["passed"] == 0 and len(verdict.details["failures"]) == 3


@pytest.mark.parametrize("mode", MODES)
def test_exiting_early_scores_zero(mode: str) -> None:
    for exit_code in ("import os\nos._exit(0)", "import sys\nsys.exit(0)", "raise SystemExit"):
        verdict = run(exit_code + "\n" + WRONG, mode)
        assert verdict.score == 0.0, exit_code
    # exiting from inside a test after some passed: no end, nothing counts
    half = run("def add(a, b):\n    return a + b\n", mode, [*ADD[:2], "import os\nos._exit(0)"])
    assert half.score == 0.0 and half.details["outcome"] == "crashed"


@pytest.mark.parametrize("mode", MODES)
def test_permissive_eq_is_a_known_limit_and_strict_equal_stops_it(mode: str) -> None:
    cheat = (
        "class Anything(int):\n"
        "    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return Anything(0)\n"
    )
    assert run(cheat, mode).score == 1.0  # plain == calls the candidate's __eq__
    strict = [
        "assert strict_equal(add(1, 2), 3)",
        "assert strict_equal([add(1, 2)], [3])",
        "assert strict_equal({'k': add(1, 2)}, {'k': 3})",
    ]
    assert run(cheat, mode, strict).score == 0.0
    honest = run("def add(a, b):\n    return a + b\n", mode, strict)
    assert honest.score == 1.0
    # the helper cannot be replaced for the tests, nor its builtins patched
    patched = "import builtins\nbuiltins.all = lambda *a: True\nstrict_equal = lambda a, b: True\n"
    assert run(patched + cheat, mode, strict).score == 0.0


INTROSPECT = (
    "import os, sys\n"
    "frame, say, nonce = sys._getframe(), None, None\n"
    "while frame is not None:\n"
    "    if 'nonce' in frame.f_locals and 'say' in frame.f_locals:\n"
    "        say, nonce = frame.f_locals['say'], frame.f_locals['nonce']\n"
    "    frame = frame.f_back\n"
    "if say is not None:\n"
    "    for i in range(3):\n        say(nonce + ' pass %d' % i)\n"
    "    say(nonce + ' end')\n"
    "    os._exit(0)\n" + WRONG
)
INLINE_LIMIT = pytest.mark.xfail(
    strict=True, reason="inline tests share the candidate's process (documented limit)"
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("isolate", [pytest.param(False, marks=INLINE_LIMIT), True])
def test_a_harness_aware_forger_needs_isolated_tests(mode: str, isolate: bool) -> None:
    verdict = run(INTROSPECT, mode, isolate_tests=isolate)
    assert verdict.score == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_isolated_tests_see_only_built_in_values(mode: str) -> None:
    cheat = (
        "class Anything:\n"
        "    def __eq__(self, other):\n        return True\n"
        "class Int(int):\n"
        "    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Anything() if a else Int(0)\n"
    )
    verdict = run(cheat, mode, isolate_tests=True)  # plain ==, no strict_equal
    assert verdict.score == 0.0 and "cannot leave the candidate's process" in str(
        verdict.details["failures"]
    )
    honest = (
        "def add(a, b):\n    if not isinstance(a, int):\n        raise TypeError(a)\n"
        "    return a + b\n"
    )
    raises = "try:\n    add('x', 1)\nexcept TypeError:\n    pass\nelse:\n    raise AssertionError\n"
    assert run(honest, mode, [*ADD, raises], isolate_tests=True).score == 1.0
    for forger in (every_fd("b'ready\\n'") + WRONG, "import os\nos._exit(0)"):
        assert run(forger, mode, isolate_tests=True).score == 0.0


# -- the host ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_host_secrets_are_unreadable(mode: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    os.chmod(tmp_path, 0o755)
    os.chmod(secret, 0o644)
    tests = [
        f"assert 's3cret' in open({str(secret)!r}).read()",
        "assert open('/etc/shadow').read()",
        "assert open('/etc/passwd').read()",
    ]
    verdict = run("pass", mode, tests)
    assert verdict.score == 0.0, verdict.details


@pytest.mark.parametrize("mode", MODES)
def test_a_secret_in_the_callers_environment_stays_there(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = uuid.uuid4().hex
    monkeypatch.setenv("TCC_HOSTILE_SECRET", secret)
    code = (
        "import os\nFOUND = []\n"
        f"FOUND += [k for k, v in os.environ.items() if v == {secret!r}]\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        f"        if {secret!r}.encode() in open('/proc/%s/environ' % pid, 'rb').read():\n"
        "            FOUND.append(pid)\n"
        "    except Exception:\n        pass\n"
    )
    verdict = run(code, mode, ["assert FOUND"])
    assert verdict.score == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_writes_outside_the_sandbox_never_land(mode: str, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)
    targets = [tmp_path / "outside.txt", Path("/tmp") / f"tcc-hostile-{uuid.uuid4().hex}"]
    tests = [f"open({str(t)!r}, 'w').write('x')" for t in targets]
    verdict = run("pass", mode, tests)
    assert verdict.score == 0.0
    assert not any(t.exists() for t in targets)


@pytest.mark.parametrize("mode", MODES)
def test_no_network_even_through_nsenter_or_setns(
    mode: str,
    tcp_listener: tuple[int, list[Any]],
    unix_listener: tuple[str, list[Any]],
    abstract_listener: tuple[str, list[Any]],
) -> None:
    port, tcp = tcp_listener
    path, unix = unix_listener
    name, abstract = abstract_listener
    probe = socket.create_connection(("127.0.0.1", port), timeout=5)  # reachable from here
    probe.sendall(b"caller")
    probe.close()
    connect = (
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).send(b'x')"
    )
    tests = [
        connect,
        f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\ns.send(b'x')",
        f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0{name}')\ns.send(b'x')",
        # join the host's network namespace, then connect
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = os.open('/proc/1/ns/net', os.O_RDONLY)\n"
        "assert libc.setns(fd, 0) == 0, os.strerror(ctypes.get_errno())\n" + connect,
        "import os\nos.execv('/usr/bin/nsenter', ['nsenter', '-t', '1', '-n', '/bin/true'])",
    ]
    verdict = run("pass", mode, tests)
    assert verdict.score == 0.0, verdict.details
    import time

    time.sleep(0.3)  # let the listener threads record anything that did arrive
    assert tcp == [b"caller"] and unix == [] and abstract == []


@pytest.mark.parametrize("mode", MODES)
def test_the_caller_cannot_be_signalled(mode: str) -> None:
    me = os.getpid()
    tests = [f"import os, signal\nos.kill({me}, signal.SIGKILL)", "import os\nos.kill(-1, 9)"]
    run("pass", mode, tests)
    assert os.getpid() == me  # still here


# -- resources --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_fifo_or_a_blocking_read_cannot_hang_the_caller(mode: str) -> None:
    code = (
        "import os\n"
        "for name in ('result.json', 'stderr.txt', 'stdout.txt'):\n"
        "    try:\n        os.mkfifo(name)\n    except OSError:\n        pass\n"
        "try:\n    os.read(0, 1)\nexcept OSError:\n    pass\n"
        "import time\ntime.sleep(3600)\n"
    )
    verdict = run(code, mode, timeout=1.0)
    assert verdict.score == 0.0 and verdict.details["outcome"] == "timeout"


@pytest.mark.parametrize("mode", MODES)
def test_an_output_flood_stays_out_of_the_callers_memory(mode: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = (
        "import os\n"
        "try:\n    os.symlink('/dev/zero', 'stderr.txt')\nexcept OSError:\n    pass\n"
        "while True:\n    os.write(2, b'\\xff' * 65536)\n    os.write(1, b'y' * 65536)\n"
    )
    verdict = run(code, mode, output_mb=4)
    assert verdict.score == 0.0 and verdict.details["outcome"] in ("crashed", "timeout")
    assert len(verdict.details["stderr"]) <= 2000 * 4  # a tail, decoded (non-UTF-8: replaced)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024


@pytest.mark.parametrize("mode", MODES)
def test_processes_it_starts_never_survive(mode: str) -> None:
    marker = f"TCC_STRAY_{uuid.uuid4().hex}"
    code = (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)',"
        f" {marker!r}], {{'{marker}': '1'}})\n"
        "    os._exit(0)\n" + WRONG
    )
    bypass = (
        "import _posixsubprocess, os, sys\n"
        f"args = [sys.executable.encode(), b'-c', b'import time; time.sleep(600)', b{marker!r}]\n"
        "r, w = os.pipe()\n"
        "base = [args, [args[0]], True, (), None, None] + [-1] * 6 + [r, w, True, True]\n"
        "base += [-1, None, None, -1, -1, None]\n"
        "try:\n    _posixsubprocess.fork_exec(*base, False)\n"
        "except TypeError:\n    _posixsubprocess.fork_exec(*base)\n" + WRONG
    )
    for candidate in (code, bypass):
        verdict = run(candidate, mode, timeout=3.0)
        assert verdict.score == 0.0
        assert _eventually(lambda: alive_with(marker) == []), alive_with(marker)


@pytest.mark.parametrize("mode", MODES)
def test_a_fork_bomb_is_contained(mode: str) -> None:
    marker = f"TCC_BOMB_{uuid.uuid4().hex}"
    code = (
        "import os\n"
        f"os.environ['{marker}'] = '1'\n"
        "while True:\n"
        "    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    verdict = run(code, mode, timeout=2.0, max_processes=16)
    assert verdict.score == 0.0
    assert _eventually(lambda: alive_with(marker) == [])


@pytest.mark.parametrize("mode", MODES)
def test_memory_is_capped_in_total_not_only_per_process(mode: str) -> None:
    # without a cgroup, only bubblewrap run by a non-root user lets the candidate fork
    # (as root, and in the fallbacks, the hook refuses it): memory is then per process
    gap(mode, ("bwrap",) if not CGROUP and not ROOT else (),
        "no writable cgroup: memory is capped per process (max_processes x memory_mb)")  # fmt: skip
    code = (
        "import os, time\n"
        "for _ in range(6):\n"
        "    if os.fork() == 0:\n"
        "        data = bytearray(150 * 1024 * 1024)\n"
        "        for i in range(0, len(data), 4096):\n            data[i] = 1\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "time.sleep(30)\n"
    )
    verdict = run(code, mode, timeout=6.0, memory_mb=256)
    assert verdict.score == 0.0
    if mode == "bwrap" and verdict.details["process_cap"] == "cgroup":
        assert verdict.details["outcome"] == "memory", verdict.details
    else:  # the audit hook refuses os.fork before anything is allocated
        assert "os.fork is not allowed" in verdict.details["error"]


@pytest.mark.parametrize("mode", MODES)
def test_single_process_memory_bomb(mode: str) -> None:
    verdict = run("data = bytearray(8 * 1024**3)\n" + WRONG, mode, memory_mb=128)
    assert verdict.score == 0.0 and verdict.details["outcome"] == "memory"


@pytest.mark.parametrize("mode", MODES)
def test_disk_fill_is_capped_in_total(mode: str) -> None:
    gap(mode, ("namespace", "audit"), "a host directory: only each file's size is capped")
    code = (
        "import os\nWRITTEN = 0\n"
        "try:\n"
        "    for i in range(64):\n"
        "        with open('fill%d' % i, 'wb') as f:\n"
        "            for _ in range(4):\n"
        "                f.write(b'x' * (1 << 20))\n                f.flush()\n"
        "                WRITTEN += 1 << 20\n"
        "except OSError:\n    pass\n"
    )
    verdict = run(code, mode, ["assert WRITTEN > 32 * (1 << 20)"], disk_mb=16)
    assert verdict.score == 0.0


@pytest.mark.skipif(not ROOT or not bwrap_available(), reason="root and bwrap only")
def test_root_without_a_cgroup_refuses_new_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, RLIMIT_NPROC does not bind: without a cgroup, even the strong sandbox
    refuses to start processes (through the hook) rather than let a fork bomb loose."""
    monkeypatch.setattr(sys.modules["tcc_plugin.sampling._run"], "cgroup_roots", lambda: ())
    bomb = "import os\nwhile True:\n    os.fork()\n"
    verdict = run(bomb, "bwrap", timeout=2.0)
    assert verdict.score == 0.0 and verdict.details["process_cap"] == "refused"
    assert "os.fork is not allowed" in verdict.details["error"]
    via_ctypes = "import ctypes\nctypes.CDLL(None).fork()\n"
    assert "not allowed" in run(via_ctypes, "bwrap").details["error"]


# -- bad input --------------------------------------------------------------------------


def test_bad_input_gets_a_clear_error_or_a_zero_with_a_reason() -> None:
    with pytest.raises(TypeError, match="strings"):
        code_verifier(["assert True", 3])  # type: ignore[list-item]
    for timeout in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            code_verifier("assert True", timeout=timeout)
    v = code_verifier("assert True", timeout=TIMEOUT)
    for value in (None, "", "   ", b"\xff\xfe"):
        verdict = v.verify(Candidate(0, "ok", value=value))
        assert verdict.score == 0.0 and verdict.details["outcome"] == "no-code"

    def explode(value: Any) -> str:
        raise RuntimeError("bad extractor")

    boom = code_verifier("assert True", extract=explode).verify(Candidate(0, "ok", value="x"))
    assert boom.score == 0.0 and "bad extractor" in boom.details["error"]
    odd = "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe')\nsys.stderr.buffer.write(b'\\xc3')\nx = '\\udcff'\n"  # noqa: E501
    assert v.verify(Candidate(0, "ok", value=odd)).score == 1.0
    nul = v.verify(Candidate(0, "ok", value="x = 1\0"))
    assert nul.score == 0.0 and nul.details["outcome"] == "error"


def test_a_hostile_group_still_picks_the_honest_candidate() -> None:
    replies = [
        every_fd("b'ready\\n'") + WRONG,
        None,
        "while True:\n    pass",
        "def add(a, b):\n    return a + b\n",
    ]
    it = iter(range(len(replies)))
    lock = threading.Lock()

    def sample() -> Any:
        with lock:
            return replies[next(it)]

    result = best_of_n(sample, n=4, concurrency=1, verifier=code_verifier(ADD, timeout=2.0))
    assert result.winner is not None and result.winner.value == replies[3]
    assert result.score == 1.0


# -- as a non-root user -----------------------------------------------------------------


@pytest.mark.skipif(
    not ROOT or os.environ.get("TCC_HOSTILE_NONROOT") == "1", reason="reruns as root only"
)
def test_the_hostile_suite_holds_as_a_non_root_user() -> None:
    """The whole file again as ``nobody`` (uid 65534), through ``setpriv``."""
    setpriv = shutil.which("setpriv")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if setpriv is None or python is None:
        pytest.skip("needs setpriv and a system python3 readable by nobody")
    import pytest as pytest_module

    import tcc_plugin

    sources = {
        str(Path(tcc_plugin.__file__).resolve().parents[1]),  # the package's import root
        str(Path(pytest_module.__file__).resolve().parents[1]),  # site-packages
    }
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="tcc-nonroot-"))  # pytest's own is root-only
    os.chmod(tmp_path, 0o777)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(sorted(sources)),
        "TCC_HOSTILE_NONROOT": "1",
        "HOME": str(tmp_path),
    }
    here = Path(__file__).resolve()
    done = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--",
         python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--noconftest",
         f"--basetemp={tmp_path / 'base'}", f"--rootdir={here.parent}", str(here)],
        capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path, check=False,
    )  # fmt: skip
    shutil.rmtree(tmp_path, ignore_errors=True)
    tail = done.stdout[-3000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    import re

    assert re.search(r"\d+ passed", done.stdout) and not re.search(r"\d+ failed", tail), tail


def _eventually(check: Any, tries: int = 500) -> bool:
    import time

    for _ in range(tries):
        if check():
            return True
        time.sleep(0.02)
    return False
