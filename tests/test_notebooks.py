"""The walkthrough notebooks: committed without outputs, in sync with their generator, and every cell
runs headless (nbclient) on small data — a failing cell fails the test suite.

The kernel is this interpreter (the project's .venv), whatever kernels are installed elsewhere: a
kernelspec naming ``sys.executable`` is written to a temporary folder that JUPYTER_PATH points at
(nothing is registered globally).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NOTEBOOKS = ("01_quickstart.ipynb", "02_bbbc021_moa.ipynb", "03_reading_the_report.ipynb")
CELL_TIMEOUT = 600


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", REPO / "tools" / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NB_DIR / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"


def test_notebooks_match_their_generator():
    gen = _generator()
    assert sorted(gen.NOTEBOOKS) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        assert (NB_DIR / name).read_text(encoding="utf-8") == gen.build(name), (
            f"{name} differs from tools/make_notebooks.py: run `.venv/bin/python tools/make_notebooks.py`")


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
    nb = nbformat.read(NB_DIR / name, as_version=4)
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
