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


def run_cli(capsys, tool: str, *args: str) -> tuple[int, str]:
    """Run ``profiler``/``fusion`` ARGS as the console script does (run_main: error → exit 2) in this
    process; returns (exit status, stderr with rich's line wrapping undone). A traceback fails the test."""
    import sys

    from profiler._cli_util import run_main

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
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, " ".join(err.split())
