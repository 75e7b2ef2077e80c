"""The results file: one JSON line per (cell, question, seed), written as it arrives.

Each line is flushed and fsynced before the next answer is recorded, so a sweep killed
at any moment keeps every answer it recorded; a line cut short by the kill is dropped
(and truncated away) when the file is opened again. Rows are keyed by
``(sweep, cell_id, question_id, seed)``: a re-run skips every key already present, so
nothing recorded is paid for twice, and a changed grid reuses the cells it shares.
Rows a budget refused are not kept as done (``refused: true``): a re-run with more
budget answers them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ROW_FIELDS", "Key", "ResultsStore", "key_of", "read_rows"]

logger = logging.getLogger(__name__)

Key = tuple[str, str, str, int]

ROW_FIELDS = (
    "sweep", "cell_id", "cell", "question_id", "seed", "question", "expected", "answer",
    "correct", "score", "cost_usd", "input_tokens", "output_tokens", "reasoning_tokens",
    "latency_s", "calls", "error",
)  # fmt: skip
"""Every row has these fields (a difficulty router is trained from them later)."""


def key_of(row: Mapping[str, Any]) -> Key:
    return (str(row["sweep"]), str(row["cell_id"]), str(row["question_id"]), int(row["seed"]))


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete row of a results file (later rows win for a repeated key; a
    malformed line raises ``ValueError`` naming it, except a cut-off last line)."""
    rows: dict[Key, dict[str, Any]] = {}
    with Path(path).open(encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    last = len(lines) - 1
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            missing = [f for f in ROW_FIELDS if f not in row]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            rows[key_of(row)] = row
        except ValueError as exc:
            if number - 1 == last:  # no newline after it: cut off by a kill mid-write
                logger.warning("%s:%d: ignoring an incomplete last line", path, number)
                continue
            raise ValueError(f"{path}:{number}: not a results row: {exc}") from None
    return list(rows.values())


class ResultsStore:
    """An append-only results file, safe to share among the sweep's worker threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.rows: dict[Key, dict[str, Any]] = {}
        if self.path.exists():
            self._repair()
            for row in read_rows(self.path):
                self.rows[key_of(row)] = row

    def _repair(self) -> None:
        """Truncate a last line left incomplete by a kill, so appends stay whole lines."""
        with self.path.open("rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                logger.warning("%s: dropping an incomplete last line", self.path)
                handle.truncate(cut)

    def done(self, key: Key) -> bool:
        """Whether ``key`` has a recorded answer (budget refusals do not count)."""
        row = self.rows.get(key)
        return row is not None and not row.get("refused", False)

    def append(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            self.rows[key_of(row)] = dict(row)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self.rows.values()))
