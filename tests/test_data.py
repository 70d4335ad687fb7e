"""fusion.data: loading crop stacks (TIFF + CSV/Parquet, folders) and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from fusion.data import load_crops
from cellfusion_core.errors import InputError

from conftest import require_shared


def _write(tmp_path, n=5, rows=None, ext="csv", channels=3):
    arr = np.arange(n * 6 * 6 * channels, dtype=np.uint16).reshape(n, 6, 6, channels)
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, arr, photometric="minisblack")
    df = pd.DataFrame({"plate": "P1", "well": "B02", "site": 1,
                       "moa": (["DMSO", "Microtubule stabilizers"] * 10)[: rows or n]})
    if ext == "csv":
        df.to_csv(tmp_path / "stack.csv", index=False)
    else:
        df.to_parquet(tmp_path / "stack.parquet")
    return tif, arr


@pytest.mark.parametrize("ext", ["csv", "parquet"])
def test_tiff_with_table_beside(tmp_path, ext):
    tif, arr = _write(tmp_path, ext=ext)
    cs = load_crops(tif)
    np.testing.assert_array_equal(cs.images, arr)
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_MoA"} <= set(cs.meta.columns)
    assert cs.labels("moa")[:2].tolist() == ["DMSO", "Microtubule stabilizers"]
    assert cs.labels("Metadata_MoA").tolist() == cs.labels("moa").tolist()
    assert len(cs.subset(np.array([0, 2]))) == 2


def test_single_channel_stack_gets_channel_axis(tmp_path):
    tif, _ = _write(tmp_path, channels=1)
    tifffile.imwrite(tif, np.zeros((5, 6, 6), np.uint16))
    assert load_crops(tif).images.shape == (5, 6, 6, 1)


def test_errors(tmp_path):
    tif, _ = _write(tmp_path, rows=4)
    with pytest.raises(InputError, match="5 crops but .* 4 rows"):
        load_crops(tif)
    with pytest.raises(InputError, match="not found"):
        load_crops(tmp_path / "nope.tif")
    with pytest.raises(InputError, match="no crops.tif"):
        load_crops(tmp_path)
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, np.zeros((2, 4, 4, 3), np.uint16), photometric="minisblack")
    with pytest.raises(InputError, match="no table found"):
        load_crops(other)
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="cannot read the crop stack"):
        load_crops(tmp_path / "bad.tif", table=pd.DataFrame({"a": [1]}))
    tif2, _ = _write(tmp_path)
    with pytest.raises(InputError, match="no column 'compound'"):
        load_crops(tif2).labels("compound")


def test_real_bbbc021_crops():
    path = require_shared("bbbc021", "crops", "bbbc021_crops.tif")
    cs = load_crops(path)
    assert cs.images.shape == (9889, 68, 68, 3) and cs.images.dtype == np.uint16
    assert cs.meta["Metadata_MoA"].nunique() == 13
