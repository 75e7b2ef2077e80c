"""Where the engine keeps what it builds and assembles, and the lock that guards it."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir", "file_lock"]

CACHE_ENV = "TCC_PLUGIN_CACHE_DIR"
"""Environment variable that overrides the cache directory."""


def cache_dir() -> Path:
    """The user cache directory of tcc-plugin (``$TCC_PLUGIN_CACHE_DIR``, else the
    platform's user cache dir, else ``~/.cache/tcc-plugin``), created if missing."""
    override = os.environ.get(CACHE_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        try:
            from platformdirs import user_cache_dir
        except ImportError:  # pragma: no cover - platformdirs is nearly always there
            path = Path.home() / ".cache" / "tcc-plugin"
        else:
            path = Path(user_cache_dir("tcc-plugin", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def file_lock(
    path: Path, *, on_wait: Callable[[], None] | None = None, poll: float = 0.5
) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (created if missing).

    Concurrent test processes (pytest-xdist workers, two CI jobs on one machine) that
    need the same artefact wait here while one of them builds it. ``on_wait`` is
    called once if the lock is held by someone else. Where ``fcntl`` is missing
    (Windows) the lock degrades to an ``O_EXCL`` lock file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":  # pragma: no cover - no Windows CI
        with _exclusive_file(path, on_wait=on_wait, poll=poll):
            yield
        return
    import fcntl

    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _exclusive_file(
    path: Path, *, on_wait: Callable[[], None] | None, poll: float
) -> Iterator[None]:  # pragma: no cover - no Windows CI
    marker = path.with_suffix(path.suffix + ".held")
    waited = False
    while True:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            time.sleep(poll)
            continue
        os.close(fd)
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()
