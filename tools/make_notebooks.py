"""Write the walkthrough notebooks notebooks/*.ipynb (without outputs) from their sources notebooks/src/*.py.

    .venv/bin/python tools/make_notebooks.py           # (re)write notebooks/*.ipynb
    .venv/bin/python tools/make_notebooks.py --check   # exit 1 when a committed notebook differs

The sources are jupytext "percent" scripts — plain Python files, reviewable and diffable as code:
``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell whose lines are comments. Edit a
source (or open it in Jupyter with jupytext), then run this tool; ``tests/test_notebooks.py`` checks
that every committed notebook is what its source converts to, and executes the converted sources.
``notebooks/src/NAME.py`` becomes ``notebooks/NAME.ipynb``.

Every notebook reads two environment variables:

* ``CELLFUSION_NB_SMALL=1`` — shrink the work (8 wells × 1 site × 256 px, fewer rounds/epochs);
  ``tests/test_notebooks.py`` sets it to execute every notebook headless in ``make test``.
* ``CELLFUSION_NB_OUT`` — where outputs go (default: ``<repo>/demo_output/notebooks``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
SRC_DIR = NB_DIR / "src"
# notebook file name → its source
NOTEBOOKS = {f"{p.stem}.ipynb": p for p in sorted(SRC_DIR.glob("[0-9][0-9]_*.py"))}
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (cellfusion .venv)", "language": "python"}


def notebook(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` converted from its percent script: no outputs, stable cell ids, this project's
    kernelspec (the source carries no metadata)."""
    nb = jupytext.read(NOTEBOOKS[name], fmt="py:percent")
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"   # stable ids: regenerating changes nothing
    nbformat.validate(nb)
    return nb


def build(name: str) -> str:
    """The .ipynb text of notebook ``name``."""
    return nbformat.writes(notebook(name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write notebooks/*.ipynb from notebooks/src/*.py")
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a notebook differs")
    args = ap.parse_args(argv)
    bad = 0
    for name, src in NOTEBOOKS.items():
        path, text = NB_DIR / name, build(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                print(f"{path} differs from {src.relative_to(REPO)}", file=sys.stderr)
                bad += 1
        else:
            from cellfusion_core.io import write_text

            write_text(text, path)
            print(f"wrote {path.relative_to(REPO)} from {src.relative_to(REPO)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
