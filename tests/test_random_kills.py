"""Random kills on a long run: an extraction of 40 sites is SIGKILLed three times at random
(seeded) moments and resumed each time; the final tables equal an uninterrupted run's.

The moments are drawn as fractions of the uninterrupted run's wall time, so they fall anywhere:
while sites run, during the streaming merge, in the profile stage. After every kill no output file
is half-written (each is either absent or a complete file), and the output folder is not left
locked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

OUTPUTS = ("single_cell.parquet", "image.parquet", "profiles.parquet")
PROFILER = Path(sys.executable).with_name("profiler")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plate40(tmp_path_factory) -> Path:
    from profiler.synthetic import make_example_plate

    return make_example_plate(tmp_path_factory.mktemp("plate40"), n_wells=20, n_sites=2, size=192, seed=3,
                              write_truth=False)


def run(plate: Path, out: Path, pipeline: Path) -> subprocess.Popen:
    cmd = [str(PROFILER), "extract", str(plate), "-o", str(out), "-p", str(pipeline), "--workers", "0", "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def assert_no_half_written(out: Path) -> None:
    for name in OUTPUTS:
        if (out / name).exists():
            pq.read_metadata(out / name)  # a complete Parquet file (footer present)
    assert not [p for p in out.glob("*.tmp")] or all(p.name.startswith(".") for p in out.glob("*.tmp"))


def records(out: Path) -> int:
    return len(list((out / "sites").glob("*.json"))) if (out / "sites").is_dir() else 0


def kill_when(proc: subprocess.Popen, out: Path, n_records: int, delay: float, timeout: float = 900) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``out`` holds ``n_records`` site records; False if it ended first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and records(out) < n_records and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def test_three_random_sigkills_then_resume_give_the_uninterrupted_tables(plate40, fast_pipeline, tmp_path):
    ref = tmp_path / "reference"
    proc = run(plate40, ref, fast_pipeline)
    _, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err.decode()[-2000:]
    n_sites = len(pd.read_parquet(ref / "image.parquet"))
    assert n_sites >= 40

    out = tmp_path / "killed"
    rng = np.random.default_rng(20261206)
    # two kills while sites run (after a random number of finished sites, plus a random delay that
    # lands anywhere inside the next site), one once every site is done: in the merge or profile stage
    first, second = sorted(rng.choice(np.arange(2, n_sites - 2), 2, replace=False))
    plan = [(int(first), rng.uniform(0, 0.5)), (int(second), rng.uniform(0, 0.5)), (n_sites, rng.uniform(0, 1.5))]
    killed = []
    for n_records, delay in plan:
        proc = run(plate40, out, fast_pipeline)
        killed.append(kill_when(proc, out, n_records, delay))
        assert_no_half_written(out)
    assert killed[0] and killed[1], killed
    proc = run(plate40, out, fast_pipeline)
    _, err = proc.communicate(timeout=1200)
    assert proc.returncode == 0, err.decode()[-2000:]
    for name in OUTPUTS:
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), pd.read_parquet(ref / name), check_exact=True)
