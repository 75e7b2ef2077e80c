"""The layering DESIGN promises: the core never imports an integration or the application.

The core is every module of ``tcc_plugin`` outside ``tcc_plugin/app``; integrations are
``tcc_plugin.integrations.*`` (source in ``integrations/``), the application layer
``tcc_plugin.app.*``. Imports are read from the source (module level and inside
functions), and so are dotted names handed to ``import_module``/``__import__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tcc_plugin
import tcc_plugin.exporters

FORBIDDEN = ("tcc_plugin.integrations", "tcc_plugin.app")
PACKAGE = Path(tcc_plugin.__file__).resolve().parent
EXPORTERS = Path(tcc_plugin.exporters.__file__).resolve().parent


def _core_modules() -> list[tuple[Path, str]]:
    """Every core module's file and dotted name (exporters included: they are core)."""
    found: dict[Path, str] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] not in {"app", "integrations", "exporters"}:
            found[path] = ".".join(("tcc_plugin", *parts))
    for path in EXPORTERS.rglob("*.py"):
        parts = path.relative_to(EXPORTERS).with_suffix("").parts
        found[path] = ".".join(("tcc_plugin", "exporters", *parts))
    return sorted(found.items())


def _imported_names(source: str, module: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"import_module", "__import__"}:
                found.append((node.lineno, node.args[0].value))
    return found


def _violations(path: Path, module: str) -> list[str]:
    return [
        f"{module} ({path.name}):{line} imports {name}"
        for line, name in _imported_names(path.read_text(encoding="utf-8"), module)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    ]


def test_core_modules_are_found() -> None:
    names = {module for _, module in _core_modules()}
    assert {
        "tcc_plugin.lifecycle",
        "tcc_plugin.budget",
        "tcc_plugin.instrument",
        "tcc_plugin.sampling.group_plan",
        "tcc_plugin.exporters.jsonl",
    } <= names
    assert not any(name.startswith(FORBIDDEN) for name in names)


def test_the_core_imports_no_integration_and_no_application() -> None:
    violations = [line for path, module in _core_modules() for line in _violations(path, module)]
    assert violations == []


@pytest.mark.parametrize(
    "source",
    [
        "from tcc_plugin.integrations.openai_server import Server",
        "import tcc_plugin.app.local_engine",
        "def f():\n    from ..app import demo",
        "import importlib\nimportlib.import_module('tcc_plugin.integrations.openai')",
    ],
)
def test_the_check_catches_each_form(source: str) -> None:
    # The checker must see module-level, function-level, relative and dynamic imports.
    names = [name for _, name in _imported_names(source, "tcc_plugin.sampling.api")]
    assert any(name.startswith(FORBIDDEN) for name in names), names
