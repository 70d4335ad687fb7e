"""profiler.crops: fixed-size crops around each object, and the crop stack files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.data import load_crops
from profiler.crops import cut_crops, to_uint16, write_crops
from cellfusion_core.errors import ConfigError, InputError


def _scene():
    labels = np.zeros((40, 50), np.int32)
    labels[10:15, 20:25] = 1       # centroid (12, 22)
    labels[0:3, 0:3] = 3           # at the corner: the crop is zero-padded; object 2 is absent
    dna = np.arange(40 * 50, dtype=np.float32).reshape(40, 50) / 4000
    return labels, {"DNA": dna, "Actin": dna * 0 + 0.5}


def test_cut_crops_centred_all_channels_padded():
    labels, images = _scene()
    crops, numbers = cut_crops(labels, images, size=8)
    assert crops.shape == (2, 8, 8, 2) and numbers.tolist() == [1, 3]
    np.testing.assert_array_equal(crops[0, :, :, 0], images["DNA"][8:16, 18:26])
    assert np.all(crops[0, :, :, 1] == 0.5)
    assert crops[1, 0, 0, 1] == 0 and crops[1, -1, -1, 1] == 0.5  # padded corner, image inside
    masked, _ = cut_crops(labels, images, size=8, mask_background=True)
    assert np.count_nonzero(masked[0, :, :, 1]) == 25
    stack, _ = cut_crops(labels, np.stack([images["DNA"], images["Actin"]], -1), size=8)
    np.testing.assert_array_equal(stack, crops)
    empty, none = cut_crops(np.zeros((5, 5), int), images["DNA"][:5, :5], size=4)
    assert empty.shape == (0, 4, 4, 1) and none.size == 0
    with pytest.raises(ConfigError):
        cut_crops(labels, images, size=1)
    with pytest.raises(InputError):
        cut_crops(labels[:10], images, size=8)


def test_write_and_load_round_trip(tmp_path):
    labels, images = _scene()
    crops, numbers = cut_crops(labels, images, size=8)
    table = pd.DataFrame({"Metadata_Plate": "P", "Metadata_Well": "A01", "Metadata_Site": 1,
                          "Metadata_ObjectNumber": numbers})
    write_crops(crops, table, tmp_path, channels=["DNA", "Actin"])
    cs = load_crops(tmp_path)
    assert cs.images.shape == (2, 8, 8, 2) and cs.images.dtype == np.uint16
    np.testing.assert_array_equal(cs.images, to_uint16(crops))
    assert cs.meta["Metadata_ObjectNumber"].tolist() == [1, 3]
    with pytest.raises(InputError):
        write_crops(crops, table.iloc[:1], tmp_path)


def test_extract_crops_partitions_resume_and_cnn(small_plate, tmp_path):
    """`profiler extract --crops` → crops.tif/parquet in single_cell order → fusion.data → CNN fit/predict."""
    import json

    import torch
    from typer.testing import CliRunner

    import yaml
    from conftest import example_pipeline

    from fusion.cnn.ensemble import CNNEnsemble
    from profiler.cli import app

    # crops do not depend on the feature families: two of them keep the three extracts short
    pipeline = example_pipeline()
    (tmp_path / "example.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["extract", str(small_plate), "-o", str(out), "--workers", "0", "--no-progress",
                                   "--crops", "--crop-size", "32", "--pipeline", str(tmp_path / "example.yaml")])
    assert res.exit_code == 0, res.output
    cells = pd.read_parquet(out / "single_cell.parquet")
    cs = load_crops(out)
    assert cs.images.shape == (len(cells), 32, 32, 3) and cs.images.dtype == np.uint16
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]
    pd.testing.assert_frame_equal(cs.meta[keys], cells[keys])
    assert "Metadata_Compound" in cs.meta.columns
    # each crop is centred on its cell: the centre pixels are brighter in DNA than the crop's corners on average
    centre = cs.images[:, 14:18, 14:18, 0].astype(float).mean((1, 2))
    corners = cs.images[:, :4, :4, 0].astype(float).mean((1, 2))
    assert np.mean(centre > corners) > 0.8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"]["crops.tif"]["shape"] == [len(cells), 32, 32, 3]
    parts = sorted((out / "sites").glob("*.crops.npy"))
    assert len(parts) == manifest["sites"]["with_cells"]

    # resume: every site is reused with its crops; a damaged crop partition recomputes that site only
    first = cs.images.copy()
    np.save(parts[0], np.zeros((1, 32, 32, 3), np.uint16))
    from profiler.extract import extract

    extract(small_plate, out, pipeline=pipeline, workers=0, progress=False, crops=True, crop_size=32)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sites"]["processed"] == 1
    assert np.array_equal(load_crops(out).images, first)
    # another crop size is not reused
    extract(small_plate, out, pipeline=pipeline, workers=0, progress=False, crops=True, crop_size=24)
    assert json.loads((out / "manifest.json").read_text())["sites"]["reused"] == 0
    assert load_crops(out).images.shape == (len(cells), 24, 24, 3)

    torch.set_num_threads(1)
    y = cs.labels("Metadata_Compound")
    est = CNNEnsemble(backbones=["resnet10t"], dropouts=[(0.5, 0.3, 0.1)], image_size=32, epochs=1, batch_size=32,
                      val_fraction=0.0, target_per_class=16, device="cpu", seed=0).fit(cs.images, y)
    pred = est.predict(cs.images[:50])
    assert len(pred) == 50 and set(pred) <= set(np.unique(y))


def test_crop_params():
    from profiler.crops import crop_params

    assert crop_params(None) == {"enabled": False, "size": 64, "mask_background": False}
    assert crop_params({"enabled": True, "size": 48}, size=32)["size"] == 32
    assert crop_params({"enabled": True}, enabled=False)["enabled"] is False
    with pytest.raises(ConfigError, match="unknown"):
        crop_params({"sise": 3})
    with pytest.raises(ConfigError, match="between"):
        crop_params({}, size=4)
