"""``tcc report FILE...``: summarise JSON-lines trace files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from tcc_plugin.app.report._load import classify
from tcc_plugin.app.report._plot import plot
from tcc_plugin.app.report._render import print_report
from tcc_plugin.app.report._summary import Report, summarize
from tcc_plugin.exporters.jsonl import read_spans

__all__ = ["load", "main"]


def _records(paths: Iterable[str | os.PathLike[str]]) -> Iterator[dict[str, Any]]:
    for path in paths:
        yield from read_spans(path)


def load(*paths: str | os.PathLike[str]) -> Report:
    """The report of the span files ``paths`` (written by ``configure("jsonl")``).

    Raises:
        OSError: a file cannot be read.
    """
    return summarize(classify(_records(paths)), [str(p) for p in paths])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcc report",
        description="Summarise JSON-lines trace files (tcc_plugin.configure('jsonl')): "
        "per model and operation, calls, tokens, cost, latency, retries, budget outcomes "
        "and sampling savings.",
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="span file(s), e.g. tcc-traces.jsonl"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also draw latency per model and cost against reasoning tokens "
        "(needs matplotlib: pip install 'tcc-plugin[plots]')",
    )
    parser.add_argument("--width", type=int, help="terminal width for the tables")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tcc report``; returns the exit status (0 ok, 2 a usage or file error)."""
    parser = _parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    err = Console(stderr=True, highlight=False, markup=False)
    for name in args.files:
        if not Path(name).is_file():
            err.print(f"tcc report: no such file: {name}")
            return 2
    try:
        report = load(*args.files)
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"tcc report: cannot read {exc}")
        return 2

    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report, Console(width=args.width, highlight=False, markup=False))

    if args.plot:
        try:
            out = plot(report.calls, args.plot, title=", ".join(report.files))
        except ImportError as exc:
            err.print(f"tcc report: {exc}")
            return 2
        except (OSError, ValueError) as exc:
            err.print(f"tcc report: cannot write the plot: {exc}")
            return 2
        err.print(f"plot written to {out}")
    return 0
