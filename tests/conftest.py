"""Shared fixtures and helpers: the real data in ../shared (skipped when absent), a small example plate,
the fast example pipeline, in-process CLI runs, synthetic per-well profiles with planted effects, and
the comparison of two extract runs' outputs."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellfusion_core.shared_data import SHARED_DATA, shared_path

REPO = Path(__file__).resolve().parents[1]
SHARED = SHARED_DATA.parent


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a clear reason when it is absent."""
    path, missing = shared_path(*parts)
    if missing:
        pytest.skip(f"real data not available: {missing}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


def load_script(path: Path, name: str):
    """A script that is not in a package (tools/*.py, tests/badinput/generate.py) imported as module ``name``
    (registered in sys.modules first: dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def small_plate(tmp_path_factory) -> Path:
    """A small synthetic plate (8 wells × 1 site × 256²), generated once per test session."""
    from profiler.synthetic import make_example_plate

    out = tmp_path_factory.mktemp("plate")
    return make_example_plate(out, n_wells=8, n_sites=1, size=256, seed=0)


def example_pipeline(*families: str) -> dict:
    """The built-in ``example`` pipeline measuring only ``families`` (default: AreaShape, Intensity).

    For tests about something other than the features (resume, atomic writes, crops …): one site of
    the small plate costs ≈ 0.25 s CPU with these two families and ≈ 0.85 s with all eight (the
    built-in default, which tests/test_pipelines.py and tests/test_packaging.py exercise).
    """
    from profiler.config import load_pipeline

    cfg = load_pipeline("example").to_dict()
    cfg["features"] = {"families": list(families or ("AreaShape", "Intensity"))}
    return cfg


@pytest.fixture(scope="session")
def fast_pipeline(tmp_path_factory) -> Path:
    """:func:`example_pipeline` (AreaShape + Intensity) as a YAML file, for command-line runs."""
    import yaml

    path = tmp_path_factory.mktemp("pipelines") / "example_fast.yaml"
    path.write_text(yaml.safe_dump(example_pipeline(), sort_keys=False), encoding="utf-8")
    return path


def run_cli_out(capsys, tool: str, *args: str) -> tuple[int, str, str]:
    """Run ``profiler``/``fusion`` ARGS as the console script does (run_main: error → exit 2) in this
    process; returns (exit status, stdout, stderr with rich's line wrapping undone). A traceback fails the test."""
    import sys

    from cellfusion_core.cli import run_main

    if tool == "profiler":
        from profiler.cli import app
    else:
        from fusion.cli import app
    capsys.readouterr()
    old = sys.argv
    sys.argv = [tool, *map(str, args)]
    try:
        run_main(app)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, " ".join(cap.err.split())


def run_cli(capsys, tool: str, *args: str) -> tuple[int, str]:
    """:func:`run_cli_out` without stdout: (exit status, stderr with rich's line wrapping undone)."""
    code, _, err = run_cli_out(capsys, tool, *args)
    return code, err


# --- synthetic per-well profiles (fusion tests) -----------------------------------------------------

# planted signal of each synthetic class: (feature, shift in control-MAD units)
PLANTED = {"Big": ("Nuclei_AreaShape_Area", 4.0), "Bright": ("Cells_Intensity_MeanIntensity_Tubulin", 4.0),
           "Long": ("Cells_AreaShape_Eccentricity", -4.0)}
NOISE = ("Nuclei_Intensity_MeanIntensity_DNA", "Cytoplasm_Texture_Contrast_Actin_3_00_256",
         "Cells_AreaShape_Solidity", "Nuclei_Granularity_2_DNA", "Cells_Correlation_Correlation_DNA_Tubulin")


def make_profiles(n_per_class: int = 8, seed: int = 0, n_plates: int = 1) -> pd.DataFrame:
    """A normalized per-well profile table with planted effects (DMSO = control)."""
    rng = np.random.default_rng(seed)
    rows = []
    classes = ["DMSO", *PLANTED]
    wells = [f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25)]
    k = 0
    for plate in range(n_plates):
        for cls in classes:
            for _ in range(n_per_class * (2 if cls == "DMSO" else 1)):
                row = {"Metadata_Plate": f"P{plate}", "Metadata_Well": wells[k % len(wells)],
                       "Metadata_Compound": cls, "Metadata_Control": "negative" if cls == "DMSO" else "",
                       "Metadata_Object_Count": int(rng.integers(80, 120))}
                for f in [p[0] for p in PLANTED.values()] + list(NOISE):
                    row[f] = rng.normal()
                if cls in PLANTED:
                    f, shift = PLANTED[cls]
                    row[f] += shift
                rows.append(row)
                k += 1
    return pd.DataFrame(rows)


# --- extract outputs ----------------------------------------------------------------------------------

EXTRACT_OUTPUTS = ("single_cell.parquet", "image.parquet", "profiles.parquet")


def assert_same_outputs(a: Path, b: Path, names: tuple[str, ...] = EXTRACT_OUTPUTS) -> None:
    """The extract output tables ``names`` of run folders ``a`` and ``b`` are equal, value for value."""
    for name in names:
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name), check_exact=True)


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the test (CPU tests stay repeatable and do not fight over the cores)."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
