"""The package boundaries of docs/architecture.md, checked on the sources (no imports run).

- ``cellfusion_core`` imports neither ``profiler`` nor ``fusion``;
- ``fusion`` never imports ``profiler`` (what both need lives in ``cellfusion_core``);
- no module of ``profiler`` or ``fusion`` spells a file name of an output folder itself: every
  writer and reader takes it from :mod:`cellfusion_core.layout`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cellfusion_core import layout

REPO = Path(__file__).resolve().parents[1]


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, function-local imports included (relative ones are its own)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def file_name_literals(path: Path, names: set[str]) -> list[tuple[int, str]]:
    """``(line, literal)`` for every string constant equal to one of ``names`` (docstrings are prose, skipped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
            and id(node) not in docstrings]


#: the layout's file names (folder names such as "cnn" or "figures" are also ordinary words: not scanned for)
LAYOUT_NAMES = {value for key, value in vars(layout).items()
                if key.isupper() and isinstance(value, str) and "." in value.lstrip(".")}


@pytest.mark.parametrize("package, forbidden", [("cellfusion_core", {"profiler", "fusion"}), ("fusion", {"profiler"})])
def test_package_does_not_import(package, forbidden):
    offenders = {str(p.relative_to(REPO)): sorted(imported_packages(p) & forbidden) for p in _modules(package)}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_output_file_names_come_from_the_layout():
    assert {"single_cell.parquet", "profiles.parquet", "manifest.json", "gbm.ubj", "crops.tif"} <= LAYOUT_NAMES
    spelled = {str(p.relative_to(REPO)): file_name_literals(p, LAYOUT_NAMES)
               for package in ("profiler", "fusion") for p in _modules(package)}
    assert {k: v for k, v in spelled.items() if v} == {}


def test_the_checks_find_what_they_look_for(tmp_path):
    """The two scanners see an import (also inside a function) and a spelled name (but not in a docstring)."""
    src = tmp_path / "mod.py"
    src.write_text('"""Writes profiles.parquet."""\nimport os\n\n\ndef f(out):\n    """profiles.parquet"""\n'
                   '    from profiler.io import x\n    return out / "profiles.parquet"\n', encoding="utf-8")
    assert imported_packages(src) == {"os", "profiler"}
    assert file_name_literals(src, LAYOUT_NAMES) == [(8, "profiles.parquet")]
