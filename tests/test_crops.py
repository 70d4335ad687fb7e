"""profiler.crops: fixed-size crops around each object, and the crop stack files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusion.data import load_crops
from profiler.crops import cut_crops, to_uint16, write_crops
from profiler.errors import ConfigError, InputError


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
