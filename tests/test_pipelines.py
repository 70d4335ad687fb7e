"""The built-in pipelines: shipped inside the package, every feature family by default."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

import profiler
from profiler.config import PIPELINES_DIR, builtin_pipelines, load_pipeline
from cellfusion_core.errors import ConfigError
from profiler.measure import DEFAULT_FAMILIES, families

BUILTIN = ["bbbc021", "cellpainting", "example"]
# the eight CellProfiler measurement modules, by their registry names
EIGHT = {"AreaShape", "Intensity", "Texture", "Granularity", "RadialDistribution", "Correlation",
         "Neighbors", "Location"}
COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")
# a column name (after the compartment) only that family writes: Intensity also writes
# Location_CenterMassIntensity_*, so the Location family is recognised by its centre
MARK = {fam: f"{fam}_" for fam in EIGHT} | {"Location": "Location_Center_X"}


def _columns(path: Path) -> list[str]:
    """Column names of a Parquet file or dataset folder."""
    return ds.dataset(path, format="parquet").schema.names


def test_builtin_pipelines_live_in_the_package():
    assert builtin_pipelines() == BUILTIN
    pkg = Path(profiler.__file__).resolve().parent
    assert Path(str(PIPELINES_DIR)).resolve() == pkg / "pipelines"
    for name in BUILTIN:
        cfg = load_pipeline(name)
        assert cfg.name == name
        assert Path(cfg.source).resolve() == pkg / "pipelines" / f"{name}.yaml"
    for cppipe in ("bbbc021", "measure_bbbc021", "measure_example_human"):
        assert (pkg / "pipelines" / "cellprofiler" / f"{cppipe}.cppipe").is_file()


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(ConfigError, match="not found") as info:
        load_pipeline("no_such_pipeline")
    assert all(name in str(info.value) for name in BUILTIN)


def test_default_families_are_every_registered_family():
    assert set(families()) == EIGHT
    assert set(DEFAULT_FAMILIES) == set(families())
    assert len(DEFAULT_FAMILIES) == len(set(DEFAULT_FAMILIES))


@pytest.mark.parametrize("name", BUILTIN)
def test_shipped_pipelines_measure_every_family(name):
    """A shipped YAML either leaves `families` out (= all) or lists every registered family."""
    raw = yaml.safe_load((Path(str(PIPELINES_DIR)) / f"{name}.yaml").read_text(encoding="utf-8"))
    chosen = (raw.get("features") or {}).get("families")
    assert chosen is None or set(chosen) == set(families()), chosen


@pytest.fixture(scope="module")
def default_run(small_plate, tmp_path_factory):
    from profiler.extract import extract

    return extract(small_plate, tmp_path_factory.mktemp("default"), pipeline="example", workers=0,
                   progress=False)


def test_example_pipeline_writes_all_eight_families(default_run):
    cols = _columns(Path(default_run) / "single_cell.parquet")
    for fam in sorted(EIGHT):
        for comp in COMPARTMENTS:
            assert any(c.startswith(f"{comp}_{MARK[fam]}") for c in cols), f"no {comp}_{MARK[fam]}* column"


def test_a_yaml_can_switch_families_off(small_plate, default_run, tmp_path):
    from profiler.extract import extract

    cfg = load_pipeline("example").to_dict()
    cfg["features"] = {"families": ["AreaShape", "Intensity"]}
    out = extract(small_plate, tmp_path / "pinned", pipeline=cfg, workers=0, progress=False)
    cols = _columns(Path(out) / "single_cell.parquet")
    measured = {fam for fam in EIGHT for comp in COMPARTMENTS
                if any(c.startswith(f"{comp}_{MARK[fam]}") for c in cols)}
    assert measured == {"AreaShape", "Intensity"}
    # the same cells as with every family
    assert len(ds.dataset(Path(out) / "single_cell.parquet").to_table(columns=["Metadata_Well"])) == \
        len(ds.dataset(Path(default_run) / "single_cell.parquet").to_table(columns=["Metadata_Well"]))
