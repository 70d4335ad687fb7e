"""The wheel: built from the sources, installed outside the checkout, it runs the example chain.

No network: the wheel is built without build isolation (setuptools from this environment) and
installed without dependencies into a folder of its own; the dependencies come from this
environment. ``profiler.__file__`` must lie in that folder (not in the checkout, which the
development install points to), and the built-in ``example`` pipeline must be found there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
ALL_FAMILIES = ("AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation",
                "Neighbors", "Location")

# ≈ 50 s CPU on an idle 2-core machine, most of it numba compiling the measurement kernels afresh
# for the new install (its cache lives beside the installed sources)
pytestmark = pytest.mark.slow


def _sources(dest: Path) -> Path:
    """A copy of what the wheel is built from, so the build leaves nothing in the checkout."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "setup.cfg", "setup.py", "MANIFEST.in"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    for lic in REPO.glob("LICEN[CS]E*"):
        shutil.copy2(lic, dest / lic.name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for pkg in ("cellfusion_core", "profiler", "fusion"):
        shutil.copytree(REPO / pkg, dest / pkg, ignore=skip)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel, built and installed with ``pip install --no-deps --target``: the target folder."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip(f"pip is not available in {sys.executable}")
    root = tmp_path_factory.mktemp("wheel")
    src = _sources(root / "src")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
         str(src)], capture_output=True, text=True, env=env, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list((root / "dist").glob("cellfusion-*.whl"))
    assert len(wheels) == 1, wheels
    names = zipfile.ZipFile(wheels[0]).namelist()
    for required in ("profiler/pipelines/example.yaml", "profiler/pipelines/bbbc021.yaml",
                     "profiler/pipelines/cellpainting.yaml", "profiler/pipelines/cellprofiler/bbbc021.cppipe",
                     "profiler/cli.py", "fusion/cli.py", "fusion/templates/report.html.j2",
                     "fusion/templates/plate.html.j2", "fusion/templates/_macros.html.j2",
                     "fusion/templates/report.css"):
        assert required in names, f"{required} is not in the wheel"
    # every module of the three packages (a folder without __init__.py would be left out) and pipeline
    sources = {f.relative_to(src).as_posix() for pkg in ("cellfusion_core", "profiler", "fusion")
               for f in (src / pkg).rglob("*")
               if f.suffix in (".py", ".yaml", ".cppipe", ".j2", ".css") and "__pycache__" not in f.parts}
    assert sources - set(names) == set(), f"not in the wheel: {sorted(sources - set(names))}"
    target = root / "site"
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheels[0])],
        capture_output=True, text=True, env=env, timeout=600)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return target


def _env(target: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, "PYTHONPATH": str(target), "COLUMNS": "120"}


def _run(installed: Path, args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """``args`` run in ``cwd`` with only the installed copy on the path (output captured as text)."""
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=_env(installed), timeout=timeout)


def test_installed_copy_is_imported_not_the_checkout(installed, tmp_path):
    code = ("import cellfusion_core, profiler, fusion, profiler.config as c; print(cellfusion_core.__file__); "
            "print(profiler.__file__); print(fusion.__file__); print(c.PIPELINES_DIR); "
            "print(','.join(c.builtin_pipelines()))")
    run = _run(installed, [sys.executable, "-c", code], tmp_path)
    assert run.returncode == 0, run.stderr
    core, prof, fus, pipes, names = run.stdout.strip().splitlines()
    for path in (core, prof, fus, pipes):
        assert Path(path).resolve().is_relative_to(installed.resolve()), f"{path} is not in {installed}"
        assert not Path(path).resolve().is_relative_to(REPO), f"{path} comes from the checkout"
    assert names.split(",") == ["bbbc021", "cellpainting", "example"]
    # both console scripts of the wheel: help renders, a usage error is a usage message
    for tool in ("profiler", "fusion"):
        ok = _run(installed, [str(installed / "bin" / tool), "--help"], tmp_path)
        assert ok.returncode == 0 and "Usage:" in ok.stdout, ok.stdout + ok.stderr
        bad = _run(installed, [str(installed / "bin" / tool), "--bogus-option"], tmp_path)
        assert bad.returncode == 2 and "No such option" in bad.stderr, bad.stdout + bad.stderr
        assert "Traceback" not in bad.stderr


def test_installed_report_templates_render(installed, tmp_path):
    """fusion.report's jinja2 templates are package data: found and rendered from the installed copy."""
    code = ("from fusion.report import _env, _render; "
            "print(_env().loader.get_source(_env(), 'report.html.j2')[1]); "
            "print(_render('plate.html.j2', plate={'missing_column': 'Metadata_<Well>'}))")
    run = _run(installed, [sys.executable, "-c", code], tmp_path)
    assert run.returncode == 0, run.stderr
    template, html = run.stdout.split("\n", 1)
    assert Path(template).resolve().is_relative_to(installed.resolve()), template
    assert "No plate view: the table has no <code>Metadata_&lt;Well&gt;</code> column." in html


def test_wheel_runs_example_plate_and_extract_elsewhere(installed, tmp_path):
    """``profiler example-plate`` + ``profiler extract --pipeline example`` from another folder."""
    exe = installed / "bin" / "profiler"
    assert exe.exists(), f"console script not installed: {sorted(p.name for p in installed.iterdir())}"
    work = tmp_path / "work"
    work.mkdir()
    plate = _run(installed, [str(exe), "example-plate", "plate", "--n-wells", "8", "--n-sites", "1", "--size", "256"],
                 work, timeout=300)
    assert plate.returncode == 0, plate.stdout + plate.stderr
    assert (work / "plate" / "platemap.csv").is_file()
    ext = _run(installed, [str(exe), "extract", "plate", "--pipeline", "example", "-o", "out", "--workers", "0",
                           "--no-progress"], work, timeout=600)
    assert ext.returncode == 0, ext.stdout + ext.stderr
    assert "Traceback" not in ext.stderr
    out = work / "out"
    for name in ("single_cell.parquet", "profiles.parquet", "manifest.json"):
        assert (out / name).exists(), f"{name} missing; outputs: {sorted(p.name for p in out.iterdir())}"
    cells = pd.read_parquet(out / "single_cell.parquet")
    profiles = pd.read_parquet(out / "profiles.parquet")
    assert len(cells) > 50
    assert profiles["Metadata_Well"].nunique() == 8
    # the built-in pipeline measures every registered family in every compartment
    for fam in ALL_FAMILIES:
        mark = "Location_Center_X" if fam == "Location" else f"{fam}_"  # Intensity writes Location_CenterMass*
        for comp in ("Nuclei", "Cells", "Cytoplasm"):
            assert any(c.startswith(f"{comp}_{mark}") for c in cells.columns), f"no {comp}_{mark}* column"
    # the installed package ran (its manifest names the installed pipeline file)
    manifest = (out / "manifest.json").read_text()
    assert str(REPO / "profiler") not in manifest
