"""Shared fixtures: the real data in ../shared (skipped when absent) and a small example plate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLFUSION_SHARED", REPO.parent / "shared")).resolve()
SHARED_DATA = SHARED / "data"


def require_shared(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with a clear reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (../shared is not beside this clone)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def small_plate(tmp_path_factory) -> Path:
    """A small synthetic plate (8 wells × 1 site × 256²), generated once per test session."""
    from profiler.synthetic import make_example_plate

    out = tmp_path_factory.mktemp("plate")
    return make_example_plate(out, n_wells=8, n_sites=1, size=256, seed=0)
