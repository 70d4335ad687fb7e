"""The walkthrough notebooks: written as jupytext percent scripts (notebooks/src/*.py), converted to
notebooks/*.ipynb by tools/make_notebooks.py and committed without outputs; the committed notebooks are
what their sources convert to, the sources keep their checks of key outputs, and every converted
notebook runs headless (nbclient) on small data — a failing cell or check fails the test suite.

The kernel is this interpreter (the project's .venv), whatever kernels are installed elsewhere: a
kernelspec naming ``sys.executable`` is written to a temporary folder that JUPYTER_PATH points at
(nothing is registered globally).
"""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import pytest

from conftest import load_script

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("jupytext")

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NOTEBOOKS = ("01_quickstart.ipynb", "02_bbbc021_moa.ipynb", "03_reading_the_report.ipynb")
CELL_TIMEOUT = 600
# assert statements in each source today (checks of key outputs): a source may gain checks, not lose them
MIN_CHECKS = {"01_quickstart.ipynb": 12, "02_bbbc021_moa.ipynb": 7, "03_reading_the_report.ipynb": 4}


def _generator():
    return load_script(REPO / "tools" / "make_notebooks.py", "make_notebooks")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NB_DIR / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"


def test_notebooks_match_their_sources():
    gen = _generator()
    assert sorted(gen.NOTEBOOKS) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        assert (NB_DIR / name).read_text(encoding="utf-8") == gen.build(name), (
            f"{name} differs from notebooks/src/{name[:-6]}.py: run `.venv/bin/python tools/make_notebooks.py`")
    assert gen.main(["--check"]) == 0


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_source_is_a_percent_script_with_its_checks(name):
    """Cells come from `# %%` markers, markdown cells stay markdown, and the checks of key outputs stay."""
    gen = _generator()
    src = gen.NOTEBOOKS[name].read_text(encoding="utf-8")
    assert src.startswith("# %%"), "the source starts with a cell marker (no header: metadata come from the tool)"
    tree = ast.parse(src)  # the source is Python: code cells as code, markdown cells as comments
    assert sum(isinstance(node, ast.Assert) for node in ast.walk(tree)) >= MIN_CHECKS[name]
    markers = [line for line in src.splitlines() if line.startswith("# %%")]
    kinds = [c.cell_type for c in gen.notebook(name).cells]
    assert kinds == ["markdown" if m == "# %% [markdown]" else "code" for m in markers]
    assert gen.notebook(name).cells[0].source.startswith("# ")  # the title is a heading, not a comment


@pytest.fixture(scope="module")
def venv_kernel(tmp_path_factory):
    """JUPYTER_PATH with a 'python3' kernelspec that runs this interpreter."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cellfusion test kernel", "language": "python"}), encoding="utf-8")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, venv_kernel, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JUPYTER_PATH", str(venv_kernel))
    monkeypatch.setenv("CELLFUSION_NB_SMALL", "1")
    monkeypatch.setenv("CELLFUSION_NB_OUT", str(tmp_path))
    nb = _generator().notebook(name)  # the source, converted (the committed file is the same: checked above)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                                     resources={"metadata": {"path": str(NB_DIR)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    with capsys.disabled():
        print(f"\n{name}: executed in {time.perf_counter() - t0:.0f} s (small mode)")
    # the kernel really was this interpreter
    km_argv = client.km.kernel_spec.argv if client.km is not None else None
    assert km_argv is None or km_argv[0] == sys.executable
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # every notebook wrote its outputs under CELLFUSION_NB_OUT, not into the repository
    assert any(tmp_path.iterdir())
