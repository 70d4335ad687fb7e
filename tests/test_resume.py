"""Resume: a rerun reuses complete sites only, and a run killed with SIGKILL finishes identically."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import assert_same_outputs
from profiler.config import load_pipeline
from profiler.extract import extract

PROFILER = Path(sys.executable).with_name("profiler")


@pytest.fixture(scope="module")
def reference(small_plate, tmp_path_factory) -> Path:
    """An uninterrupted run."""
    return extract(small_plate, tmp_path_factory.mktemp("reference"), workers=0, progress=False)


def sites_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["sites"]


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_outputs(small_plate, reference, tmp_path):
    out = tmp_path / "killed"
    cmd = [str(PROFILER), "extract", str(small_plate), "-o", str(out), "--workers", "0", "--no-progress"]
    n_sites = len(pd.read_parquet(reference / "image.parquet"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = 0
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            done = len(list((out / "sites").glob("*.json"))) if (out / "sites").is_dir() else 0
            if done >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= done < n_sites
    assert not (out / "single_cell.parquet").exists()  # killed before the merge

    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert_same_outputs(reference, out)
    sites = sites_of(out)
    assert sites["reused"] >= 2 and sites["reused"] + sites["processed"] == n_sites
    assert not list(out.rglob("*.tmp"))


def test_rerun_reuses_only_complete_and_intact_sites(small_plate, reference, tmp_path):
    out = tmp_path / "out"
    extract(small_plate, out, workers=0, progress=False)
    extract(small_plate, out, workers=0, progress=False)
    n = sites_of(out)["found"]
    assert sites_of(out)["reused"] == n and sites_of(out)["processed"] == 0
    assert_same_outputs(reference, out)

    parts = sorted((out / "sites").glob("*.parquet"))
    # 1) a partition whose bytes changed (same size) is recomputed
    data = bytearray(parts[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    parts[0].write_bytes(bytes(data))
    # 2) a partition without its record (killed between the two writes) is recomputed
    parts[1].with_suffix(".json").unlink()
    # 3) a record whose partition vanished is recomputed
    parts[2].unlink()
    # 4) a record that is not valid JSON is recomputed
    parts[3].with_suffix(".json").write_text('{"site": ')
    extract(small_plate, out, workers=0, progress=False)
    assert sites_of(out)["processed"] == 4 and sites_of(out)["reused"] == n - 4
    assert_same_outputs(reference, out)


def test_changed_parameters_never_reuse_old_partitions(small_plate, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    cfg = load_pipeline("example").to_dict()
    cfg["features"] = {**cfg.get("features", {}), "families": ["AreaShape"]}
    extract(small_plate, out, pipeline=cfg, workers=0, progress=False)
    assert sites_of(out)["reused"] == 0
    cols = pd.read_parquet(out / "single_cell.parquet").columns
    assert not [c for c in cols if "_Intensity_" in c]
    # and back: the original parameters are recomputed too (their partitions were replaced)
    extract(small_plate, out, workers=0, progress=False)
    assert sites_of(out)["reused"] == 0
    assert_same_outputs(reference, out)


def test_no_resume_recomputes_everything(small_plate, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    extract(small_plate, out, workers=0, progress=False, resume=False)
    assert sites_of(out)["reused"] == 0
    assert_same_outputs(reference, out)


def test_changed_input_file_is_recomputed(small_plate, reference, tmp_path):
    plate = tmp_path / "plate"
    shutil.copytree(small_plate, plate)
    out = tmp_path / "out"
    extract(plate, out, workers=0, progress=False)
    first = sorted(plate.glob("*_w1.tif"))[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 1_000_000_000))
    extract(plate, out, workers=0, progress=False)
    assert sites_of(out)["processed"] == 1


def test_code_hash_covers_the_shared_core(tmp_path):
    """An edit to cellfusion_core (column names, file I/O a site's table is written with) recomputes
    the sites; an edit to a module that never runs in a site (cli.py) keeps them."""
    from profiler.partitions import _code_hash

    prof, core = tmp_path / "profiler", tmp_path / "cellfusion_core"
    for folder in (prof, core):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        (folder / "cli.py").write_text("HELP = 'a'\n")
    (prof / "site.py").write_text("def f():\n    return 1\n")
    (core / "names.py").write_text("PLATE = 'Metadata_Plate'\n")
    before = _code_hash((prof, core))
    assert _code_hash((prof, core)) == before
    (core / "names.py").write_text("PLATE = 'Metadata_Plate_'\n")
    edited = _code_hash((prof, core))
    assert edited != before
    (core / "cli.py").write_text("HELP = 'b'\n")
    assert _code_hash((prof, core)) == edited
