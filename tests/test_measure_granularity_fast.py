"""Granularity's fast kernels against the straightforward computations they replace, bit for bit:
whole-pixel subsampling vs map_coordinates, the disk opening vs scipy's grey filters, the
table-driven upsampling operator vs the per-pixel one, grouped sums vs np.bincount."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.morphology import disk

from profiler.measure.granularity import (
    _downsample,
    _grouped_sums,
    _open_disk,
    _upsample_weights,
    _upsample_weights_reference,
    granularity,
)


def _map_coordinates_downsample(px, f):
    shape = np.array(px.shape, float) * f
    i, j = np.mgrid[0:shape[0], 0:shape[1]].astype(float) / f
    return ndi.map_coordinates(px, (i, j), order=1), shape


def _bits_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.uint8 if a.dtype.itemsize == 1 else f"u{a.dtype.itemsize}"),
        b.view(np.uint8 if b.dtype.itemsize == 1 else f"u{b.dtype.itemsize}"))


@pytest.mark.parametrize("seed", range(10))
def test_downsample_equals_map_coordinates(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(x) for x in rng.integers(1, 70, 2))
    dtype = (np.float32, np.float64)[seed % 2]
    img = rng.random((h, w)).astype(dtype)
    img[rng.random((h, w)) < 0.2] = 0.0
    if seed % 5 == 2:
        img[rng.random((h, w)) < 0.2] = -0.0       # map_coordinates returns +0.0 there: fallback
    if seed % 5 == 3:
        img[rng.integers(0, h), rng.integers(0, w)] = np.inf  # 0 * inf poisons the neighbours: fallback
    if seed % 5 == 4:
        img = img - 0.5                            # negative values
    for f in (0.25, 0.5, 1 / 3, 0.3, 0.2, 1.0):
        got, gs = _downsample(img, f)
        want, ws = (img.copy(), np.array(img.shape, float)) if f >= 1 else _map_coordinates_downsample(img, f)
        assert np.array_equal(gs, ws)
        assert _bits_equal(got, want), (h, w, f)


@pytest.mark.parametrize("seed", range(8))
def test_open_disk_equals_scipy(seed):
    rng = np.random.default_rng(20 + seed)
    for _ in range(12):
        r = int(rng.integers(0, 13))
        h, w = (int(x) for x in rng.integers(r + 1, r + 60, 2))
        dtype = (np.float32, np.float64)[int(rng.integers(0, 2))]
        img = rng.integers(0, 4, (h, w)).astype(dtype)  # many ties
        if rng.random() < 0.5:
            img = img + rng.random((h, w)).astype(dtype)
        fp = disk(r).astype(bool)
        want = ndi.grey_dilation(ndi.grey_erosion(img, footprint=fp, mode="reflect"), footprint=fp, mode="reflect")
        got = _open_disk(img, r)
        assert _bits_equal(got, want), (h, w, r, dtype)


def _mirror(i, n):
    # scipy's / np.pad's "symmetric" extension: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ... (period 2n)
    i = i % (2 * n)
    return i if i < n else 2 * n - 1 - i


def _brute_open(img, r):
    """Opening by disk(r) with the edges mirrored, one pixel and one footprint offset at a time."""
    fp = disk(r).astype(bool)
    offsets = [(dy - r, dx - r) for dy, dx in zip(*np.nonzero(fp))]
    h, w = img.shape

    def filt(src, pick):
        return np.array([[pick(src[_mirror(i + dy, h), _mirror(j + dx, w)] for dy, dx in offsets)
                          for j in range(w)] for i in range(h)], dtype=src.dtype)

    return filt(filt(img, min), max)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (1, 5), (3, 4), (2, 9), (5, 30), (10, 10)])
def test_open_disk_images_smaller_than_the_footprint_are_mirrored(shape):
    # scipy 1.17's grey_erosion(mode="reflect") reads outside a 2 x 2 image with a radius-10 disk
    # (values left in freed memory); the opening of an image smaller than the footprint must be the
    # mirrored definition, the same on every call
    rng = np.random.default_rng(sum(shape))
    img = rng.random(shape)
    want = _brute_open(img, 10)
    for _ in range(3):
        junk = [np.full(4096, -7.0) for _ in range(50)]  # leave junk in freed memory
        del junk
        assert _bits_equal(_open_disk(img, 10), want), shape
    img32 = img.astype(np.float32)
    assert _bits_equal(_open_disk(img32, 10), _brute_open(img32, 10))


def _grouped(rng, H, W, n):
    lab = rng.integers(0, n + 1, (H, W))
    lab[rng.random((H, W)) < 0.3] = 0
    flat = lab.ravel()
    idx = np.flatnonzero((flat > 0) & (flat <= n))
    lab_of = flat[idx]
    order = np.argsort(lab_of, kind="stable")
    starts = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(lab_of, minlength=n + 1)[1:], out=starts[1:])
    return idx[order], lab_of[order], starts


@pytest.mark.parametrize("seed", range(8))
def test_upsample_weights_equal_per_pixel_reference(seed):
    rng = np.random.default_rng(40 + seed)
    H, W = (int(x) for x in rng.integers(1, 90, 2))
    n = int(rng.integers(1, 30))
    idx, _, starts = _grouped(rng, H, W, n)
    for f in (0.25, 0.5, 1 / 3):
        h, w = max(int(np.ceil(H * f)), 1), max(int(np.ceil(W * f)), 1)
        fr = float(h - 1) / float(H - 1) if H > 1 else 0.0
        fc = float(w - 1) / float(W - 1) if W > 1 else 0.0
        rows, cols = np.divmod(idx, W)
        want = _upsample_weights_reference(rows, cols, starts, h, w, fr, fc)
        got = _upsample_weights(idx, starts, H, W, h, w, fr, fc)
        for a, b in zip(got, want):
            assert _bits_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grouped_sums_equal_bincount(dtype):
    rng = np.random.default_rng(5)
    H, W, n = 50, 60, 25
    idx, lab, starts = _grouped(rng, H, W, n)
    img = (rng.random((H, W)) * 1e3).astype(dtype)
    img[rng.random((H, W)) < 0.1] = -0.0
    want = np.bincount(lab, weights=img.ravel()[idx].astype(np.float64), minlength=n + 1)[1:n + 1]
    assert _bits_equal(_grouped_sums(img.ravel(), idx, starts), want)


def test_granularity_runs_on_tiny_and_odd_images():
    rng = np.random.default_rng(9)
    for shape in ((1, 1), (3, 17), (40, 7), (64, 80)):
        lab = rng.integers(0, 4, shape)
        img = rng.random(shape).astype(np.float32)
        out = granularity(lab, {"C": img}, n_objects=4)
        assert len(out) == 16 and all(v.shape == (4,) for v in out.values())
