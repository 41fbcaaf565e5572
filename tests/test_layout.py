"""The package layering the README's "How the code is laid out" states: each package imports only the
packages below it, so data flows one way and there are no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lmadapt"
BOTTOM = {"config", "errors", "store", "faults"}
# What each top-level part may import (besides itself and BOTTOM), as the README lists it.
ALLOWED = {
    "losses": set(),
    "data": set(),
    "models": {"data"},
    "eval": {"models", "data", "losses"},
    "train": {"eval", "models", "data", "losses"},
    "hint": {"eval", "models", "data"},
    "selection": {"eval", "models", "data"},
    "rl": {"train", "eval", "models", "data", "losses"},
    "recipes": {"hint", "rl", "selection", "train", "eval", "models", "data", "losses"},
    "demo": {"recipes", "hint", "rl", "selection", "train", "eval", "models", "data", "losses"},
}
BOTTOM_ALLOWED = {"config": {"errors"}, "errors": set(), "store": {"errors", "faults"}, "faults": set()}


def _part(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imported_parts(path: Path) -> set[str]:
    """The top-level lmadapt parts a module imports, at module level or inside functions."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            pieces = name.split(".")
            if pieces[0] == "lmadapt" and len(pieces) > 1:
                parts.add(pieces[1])
    return parts


def test_every_package_imports_only_the_layers_below_it():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        part = _part(path)
        if part in {"cli", "__init__", "__main__"}:
            continue
        allowed = ALLOWED.get(part, set()) | (BOTTOM if part in ALLOWED else BOTTOM_ALLOWED[part]) | {part}
        wrong += [f"{path.relative_to(SRC)} imports lmadapt.{p}" for p in _imported_parts(path) - allowed]
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from lmadapt.recipes import sft\n", encoding="utf-8")
    assert _imported_parts(module) == {"recipes"}
