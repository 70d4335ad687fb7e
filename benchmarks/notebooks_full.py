"""Execute each walkthrough notebook at full size, top to bottom, and print its wall time.

The same run a new user does after ``make demo`` (open the notebook, run all cells): no
CELLFUSION_NB_SMALL, outputs under ``demo_output/notebooks/``. The kernel is this interpreter
(a temporary kernelspec that JUPYTER_PATH points at; nothing is registered globally).

    .venv/bin/python benchmarks/notebooks_full.py [--only 01_quickstart.ipynb …]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, emit  # noqa: E402

NOTEBOOKS = ("01_quickstart.ipynb", "02_bbbc021_moa.ipynb", "03_reading_the_report.ipynb")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=list(NOTEBOOKS))
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = ap.parse_args()
    os.environ.pop("CELLFUSION_NB_SMALL", None)
    with tempfile.TemporaryDirectory() as root:
        spec = Path(root, "kernels", "python3")
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "cellfusion", "language": "python"}), encoding="utf-8")
        os.environ["JUPYTER_PATH"] = root
        for name in args.only:
            nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
            client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=args.timeout,
                                             resources={"metadata": {"path": str(REPO / "notebooks")}})
            t0 = time.perf_counter()
            client.execute()  # raises CellExecutionError naming the failing cell
            emit(f"notebook_full_size.{name}", round(time.perf_counter() - t0, 1), "s wall",
                 cells=sum(c.cell_type == "code" for c in nb.cells))


if __name__ == "__main__":
    main()
