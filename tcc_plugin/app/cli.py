"""The ``tcc`` command: ``tcc demo`` (the main job), ``tcc report FILE``, ``tcc sweep``,
``tcc --version``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

__all__ = ["main"]

# subcommand -> (module, one-line help); each module has main(argv) -> int
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("tcc_plugin.app.demo", "run a small agent task on the embedded local engine"),
    "report": ("tcc_plugin.app.report", "summarise a JSON-lines trace file"),
    "sweep": ("tcc_plugin.app.sweep.cli", "find the sweet spot of thinking budget x method"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tcc`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="tcc", description="tcc-plugin: test-time compute control"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in _COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if args and args[0] == "--version":
        parser.parse_args(args[:1])  # prints the version and exits
    if not args or args[0] in ("-h", "--help") or args[0] not in _COMMANDS:
        parser.print_help()
        return 0 if not args or args[0] in ("-h", "--help") else 2
    module = importlib.import_module(_COMMANDS[args[0]][0])
    run: Callable[[list[str]], int] = module.main
    return run(args[1:])


def _version() -> str:
    try:
        return version("tcc-plugin")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
