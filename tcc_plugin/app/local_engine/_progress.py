"""Progress of the slow, one-off steps: building llama-server, assembling a model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["NullProgress", "Progress", "RichProgress", "Task", "default_progress"]


class Task(Protocol):
    """One step with a known (or unknown) amount of work."""

    def update(self, completed: float | None = None, *, description: str | None = None) -> None:
        """Set how much of the step is done (absolute), or its description."""

    def advance(self, amount: float) -> None:
        """Add ``amount`` to what is done."""


class Progress(Protocol):
    """Shows steps as they go. ``task`` is a context manager yielding a :class:`Task`."""

    def task(
        self, description: str, total: float | None = None
    ) -> contextlib.AbstractContextManager[Task]:
        """A step of ``total`` units of work (``None``: unknown)."""

    def note(self, message: str) -> None:
        """A one-line message (e.g. "waiting for another process to finish the build")."""


class _NullTask:
    def update(self, completed: float | None = None, *, description: str | None = None) -> None:
        return None

    def advance(self, amount: float) -> None:
        return None


class NullProgress:
    """Shows nothing."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        yield _NullTask()

    def note(self, message: str) -> None:
        return None


class _RichTask:
    def __init__(self, progress: Any, task_id: Any) -> None:
        self._progress = progress
        self._id = task_id

    def update(self, completed: float | None = None, *, description: str | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if completed is not None:
            kwargs["completed"] = completed
        if description is not None:
            kwargs["description"] = description
        self._progress.update(self._id, **kwargs)

    def advance(self, amount: float) -> None:
        self._progress.advance(self._id, amount)


class RichProgress:
    """Progress bars on a rich console (stderr by default)."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        from rich.progress import (
            BarColumn,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as _Progress

        columns = [
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
        ]
        with _Progress(*columns, console=self.console, transient=False) as bar:
            task_id = bar.add_task(description, total=total)
            yield _RichTask(bar, task_id)
            if total is not None:
                bar.update(task_id, completed=total)

    def note(self, message: str) -> None:
        self.console.print(message)


def default_progress(show: bool | None = None) -> Progress:
    """Rich progress when ``show`` (default: when stderr is a terminal), else none."""
    if show is None:
        import sys

        show = sys.stderr.isatty()
    return RichProgress() if show else NullProgress()
