"""The isolation layers a code verification runs in, and how each is started.

- ``bwrap`` (bubblewrap): new user, mount, PID, network, IPC, UTS and cgroup
  namespaces; a root file system holding only the interpreter, its stdlib and the
  shared libraries they load (read-only), a private size-capped tmpfs as the only
  writable place, a fresh ``/proc`` for the sandbox's own PID namespace, a minimal
  ``/dev``; no capabilities, no further user namespaces, a new session (no terminal
  injection), and the sandbox dies with its parent.
- ``namespace``: ``unshare`` with new network and PID namespaces, plus the audit hook.
- ``audit``: a PEP 578 audit hook in the child only.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

__all__ = [
    "NetworkMode",
    "SandboxUnavailable",
    "bwrap_available",
    "bwrap_command",
    "interpreter_layout",
    "namespace_prefix",
    "warn_fallback_once",
]

NetworkMode = Literal["auto", "bwrap", "namespace", "audit"]

SANDBOX_DIR = "/sandbox"  # the candidate's private tmpfs, its cwd and HOME


class SandboxUnavailable(RuntimeError):
    """The sandbox the verifier was asked for cannot run on this machine."""


@functools.cache
def interpreter_layout(python: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(real executable, read-only directories, read-only files) that ``python``
    needs: its stdlib, and the shared libraries it and its extension modules load."""
    probe = (
        "import json, sys, sysconfig; p = sysconfig.get_paths(); "
        "print(json.dumps([sys.executable, p['stdlib'], p['platstdlib'], "
        "sysconfig.get_config_var('DESTSHARED') or '']))"
    )
    done = subprocess.run(
        [python, "-I", "-S", "-c", probe], capture_output=True, timeout=30, check=True
    )
    executable, *dirs = json.loads(done.stdout)
    real = os.path.realpath(executable)
    directories = tuple(sorted({os.path.realpath(d) for d in dirs if d and os.path.isdir(d)}))
    objects = [real]
    for d in directories:  # (no GUI toolkit in a sandbox: _tkinter's X11 stack is left out)
        for found in (*Path(d).glob("lib-dynload/*.so"), *Path(d).glob("*.so")):
            if not found.name.startswith("_tkinter"):
                objects.append(str(found))
    files = {"/etc/ld.so.cache"} if os.path.exists("/etc/ld.so.cache") else set()
    ldd = shutil.which("ldd")
    if ldd is not None:
        linked = subprocess.run(
            [ldd, *objects], capture_output=True, timeout=60, check=False, text=True
        )
        for line in linked.stdout.splitlines():
            for word in line.split():
                if word.startswith("/") and os.path.exists(word):
                    files.add(word)  # bound at the path the loader asks for
    files.discard(real)
    return real, directories, tuple(sorted(f for f in files if not f.startswith(directories)))


@functools.cache
def bwrap_path() -> str | None:
    """The bubblewrap binary, if it can actually start a sandbox here."""
    found = shutil.which("bwrap")
    if found is None or not sys.platform.startswith("linux"):
        return None
    try:
        done = subprocess.run(
            [found, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found if done.returncode == 0 else None


def bwrap_available(python: str = sys.executable) -> bool:
    """Whether the bubblewrap sandbox works on this machine, for ``python``: bwrap runs,
    and the interpreter starts inside the sandbox built for it (checked once)."""
    return bwrap_path() is not None and _starts_in_bwrap(python)


@functools.cache
def _starts_in_bwrap(python: str) -> bool:
    try:
        command = bwrap_command(python, disk_bytes=1 << 20, expose=(), env={})
        done = subprocess.run(
            [*command, "-I", "-S", "-B", "-c", "import marshal, resource, _signal"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, ValueError, subprocess.SubprocessError, SandboxUnavailable):
        return False
    return done.returncode == 0


def bwrap_command(
    python: str, *, disk_bytes: int, expose: Sequence[str], env: dict[str, str]
) -> list[str]:
    """The bwrap prefix and interpreter that run the harness in the strong sandbox."""
    bwrap = bwrap_path()
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (`bwrap`) is not installed or cannot run here")
    real, directories, files = interpreter_layout(python)
    command = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--uid", "65534",
        "--gid", "65534",
        "--hostname", "sandbox",
        "--ro-bind", real, real,
    ]  # fmt: skip
    for path in (*directories, *files, *expose):
        command += ["--ro-bind", path, path]
    command += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(disk_bytes), "--perms", "0700", "--tmpfs", SANDBOX_DIR,
        "--chdir", SANDBOX_DIR,
        "--clearenv",
    ]  # fmt: skip
    for name, value in env.items():
        command += ["--setenv", name, value]
    command.append(real)
    return command


@functools.cache
def namespace_prefix() -> tuple[str, ...] | None:
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


@functools.cache
def warn_fallback_once(mode: str) -> None:
    """Say once per process that the strong sandbox is missing and which one runs."""
    warnings.warn(
        "code_verifier: bubblewrap (`bwrap`) is unavailable; candidates run in the "
        f"weaker {mode!r} sandbox (an audit hook that a determined candidate can undo, "
        "no cap on total disk use). Install bubblewrap (apt-get install bubblewrap), "
        "or pass network='bwrap' to refuse to run without it.",
        RuntimeWarning,
        stacklevel=4,
    )
