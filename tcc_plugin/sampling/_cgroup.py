"""A cgroup per verification, where this process may create one: caps the processes and
the total memory of the candidate's whole process tree, and kills every process in it
at the end (even one that left the process group and the PID namespace's reach).

cgroup v1 (``pids`` and ``memory`` hierarchies) and v2 (a delegated subtree with the
``pids`` and ``memory`` controllers) are both used when writable; otherwise ``None``
and the rlimits of the harness are what remains.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
import uuid
from pathlib import Path

__all__ = ["Cgroup", "cgroup_roots", "descendants", "leaves"]

_BASE = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else ("",):
                paths[name] = path
    return paths


@functools.cache
def cgroup_roots() -> tuple[tuple[str, Path], ...]:
    """(kind, directory under which a child cgroup can be made), for pids and memory."""
    own = _own_paths()
    v1 = [
        (name, _BASE / name / own[name].lstrip("/"))
        for name in ("pids", "memory")
        if name in own and (_BASE / name / "cgroup.procs").exists()
    ]
    if len(v1) == 2 and all(_writable(d) for _, d in v1):
        return tuple(v1)
    for mount in (_BASE, _BASE / "unified"):
        if "" in own and (mount / "cgroup.controllers").exists():
            parent = mount / own[""].lstrip("/")
            with contextlib.suppress(OSError):
                enabled = (parent / "cgroup.subtree_control").read_text().split()
                if {"pids", "memory"} <= set(enabled) and _writable(parent):
                    return (("v2", parent),)
    return ()


def _writable(directory: Path) -> bool:
    probe = directory / f"tcc-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


class Cgroup:
    """One verification's cgroup(s): limits set, processes moved in, all killed."""

    def __init__(self, *, max_processes: int, memory_bytes: int) -> None:
        self.dirs: list[tuple[str, Path]] = []
        name = f"tcc-verify-{uuid.uuid4().hex[:12]}"
        try:
            for kind, root in cgroup_roots():
                directory = root / name
                directory.mkdir()
                self.dirs.append((kind, directory))
                if kind in ("pids", "v2"):
                    (directory / "pids.max").write_text(str(max_processes))
                if kind == "memory":
                    (directory / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    with contextlib.suppress(OSError):  # without swap accounting: absent
                        (directory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                if kind == "v2":
                    (directory / "memory.max").write_text(str(memory_bytes))
                    (directory / "memory.swap.max").write_text("0")
        except OSError:
            self.close()
            raise

    def add(self, pids: list[int]) -> None:
        """Move processes in (before the candidate's code runs: their children follow)."""
        for _, directory in self.dirs:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    (directory / "cgroup.procs").write_text(str(pid))

    def out_of_memory(self) -> bool:
        """Whether the memory limit was hit (the kernel refused or killed)."""
        for kind, directory in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                if kind == "memory":
                    control = (directory / "memory.oom_control").read_text().split()
                    killed = dict(zip(control[::2], control[1::2], strict=False))
                    peak = int((directory / "memory.max_usage_in_bytes").read_text())
                    limit = int((directory / "memory.limit_in_bytes").read_text())
                    failed = int((directory / "memory.failcnt").read_text())
                    if failed or int(killed.get("oom_kill", "0")) or peak >= limit:
                        return True
                elif kind == "v2":
                    events = (directory / "memory.events").read_text().split()
                    counts = dict(zip(events[::2], events[1::2], strict=False))
                    if int(counts.get("oom_kill", "0")) or int(counts.get("max", "0")):
                        return True
        return False

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, until none is left (a fork race)."""
        for _, directory in self.dirs:
            if (directory / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (directory / "cgroup.kill").write_text("1")
            for _ in range(100):
                try:
                    pids = [int(p) for p in (directory / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.002)

    def close(self) -> None:
        """Kill what is left and remove the cgroup(s)."""
        self.kill_all()
        for _, directory in self.dirs:
            for _ in range(250):  # killed processes leave the cgroup once reaped
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.004)
        self.dirs = []


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (read from /proc, children lists)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(_children(current))
    return found


def leaves(pid: int) -> list[int]:
    """The processes of ``pid``'s tree that have no children of their own."""
    return [p for p in descendants(pid) if not _children(p)]
