"""Illumination correction: recovers a planted vignette, robust-minimum scaling, file round trip."""

from __future__ import annotations

import numpy as np
import pytest

from cellfusion_core.errors import ConfigError, InputError
from profiler.illum import (apply_illumination, config_params, illumination_function, load_illumination,
                            save_illumination)


def _vignette(shape=(128, 160)):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r2 = ((yy - shape[0] / 2) / shape[0]) ** 2 + ((xx - shape[1] / 2) / shape[1]) ** 2
    return (1.0 - 1.2 * r2).astype(np.float32)


def _images(n=12, seed=0):
    rng = np.random.default_rng(seed)
    field = _vignette()
    out = []
    for _ in range(n):
        img = np.full(field.shape, 0.05, np.float32)
        for _ in range(20):  # bright "cells" at random places
            y, x = rng.integers(0, field.shape[0]), rng.integers(0, field.shape[1])
            img[max(0, y - 4):y + 4, max(0, x - 4):x + 4] = 0.3
        out.append(img * field)
    return out, field


@pytest.mark.parametrize("method", ["median", "gaussian", "polynomial"])
def test_recovers_vignette(method):
    images, field = _images()
    fn = illumination_function(images, method=method, filter_size=48, downsample=4)
    assert fn.shape == field.shape and fn.dtype == np.float32
    assert fn.min() >= 1.0 - 1e-6                         # robust minimum → function ≥ 1
    assert np.corrcoef(fn.ravel(), field.ravel())[0, 1] > 0.75   # (the dimmest 2 % are clipped)
    corrected = [apply_illumination(im, fn) for im in images]
    bg = [c[c < 0.07 * 1.3] for c in corrected]           # the background, after correction
    raw_bg = [im[im < 0.06] for im in images]
    assert np.mean([b.std() / b.mean() for b in bg]) < 0.6 * np.mean([b.std() / b.mean() for b in raw_bg])


def test_robust_minimum_is_second_percentile():
    flat = [np.linspace(0.1, 1.0, 100 * 100, dtype=np.float32).reshape(100, 100)]
    fn = illumination_function(flat, method="gaussian", filter_size=1, downsample=1)
    assert np.isclose(np.percentile(fn, 2), 1.0, atol=0.01)
    fn_none = illumination_function(flat, method="gaussian", filter_size=1, downsample=1, rescale="none")
    assert np.isclose(fn_none.max(), 1.0, atol=0.01)


def test_errors_and_round_trip(tmp_path):
    with pytest.raises(InputError, match="differ in size"):
        illumination_function([np.ones((4, 4)), np.ones((5, 4))])
    with pytest.raises(InputError, match="does not fit"):
        apply_illumination(np.ones((4, 4)), np.ones((5, 5)))
    with pytest.raises(ConfigError, match="unknown illumination parameter"):
        config_params({"methd": "median"})
    fn = illumination_function(_images(3)[0], filter_size=16)
    path = save_illumination(fn, tmp_path / "illum" / "P_DNA.npy")
    assert np.array_equal(load_illumination(path), fn)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="bad.npy"):
        load_illumination(tmp_path / "bad.npy")


@pytest.mark.parametrize("shape, size", [((128, 160), 17), ((20, 30), 5), ((3, 50), 5), ((9, 9), 3),
                                         ((40, 17), 15), ((33, 34), 1)])
def test_median_filter_is_scipys(shape, size):
    # the illumination function's smoothing: the same values as scipy.ndimage.median_filter (reflect),
    # with ties (few distinct values) and without; windows wider than the image go to SciPy itself
    from scipy import ndimage as ndi

    from profiler.illum import median_filter

    rng = np.random.default_rng(size)
    for a in (rng.random(shape) * 0.1, rng.integers(0, 4, shape) / 4095.0):
        np.testing.assert_array_equal(median_filter(a, size), ndi.median_filter(a, size=size, mode="reflect"))
    small = rng.random((4, 6))
    np.testing.assert_array_equal(median_filter(small, 9), ndi.median_filter(small, size=9, mode="reflect"))
