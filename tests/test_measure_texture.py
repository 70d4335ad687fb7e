"""Texture (MeasureTexture): analytic Haralick values, agreement with mahotas (CellProfiler's engine), degenerate objects."""

from __future__ import annotations

import re

import mahotas
import numba
import numpy as np
import pytest
import skimage.measure
import skimage.util

from profiler.measure import measure_objects
from profiler.measure.texture import HARALICK, haralick_objects, quantize, texture

F = {name: i for i, name in enumerate(HARALICK)}


def _square(value: float, size: int = 12, shape=(30, 30)):
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.int32)
    img[5:5 + size, 5:5 + size] = value
    lab[5:5 + size, 5:5 + size] = 1
    return lab, img


def test_constant_object_has_known_haralick_values():
    lab, img = _square(40 / 255)
    f = haralick_objects(lab, quantize(img), 1, scale=3)[0]  # (4 directions, 13)
    L = 40
    m = L + 1  # matrix size = max level + 1
    assert np.allclose(f[:, F["AngularSecondMoment"]], 1)
    assert np.allclose(f[:, F["Contrast"]], 0)
    assert np.allclose(f[:, F["Entropy"]], 0)
    assert np.allclose(f[:, F["Correlation"]], 1)  # zero variance → 1 (mahotas)
    assert np.allclose(f[:, F["Variance"]], 0)
    assert np.allclose(f[:, F["InverseDifferenceMoment"]], 1)
    assert np.allclose(f[:, F["SumAverage"]], 2 * L)
    assert np.allclose(f[:, F["SumVariance"]], 0)
    assert np.allclose(f[:, F["SumEntropy"]], 0)
    assert np.allclose(f[:, F["DifferenceVariance"]], (m - 1) / m ** 2)
    assert np.allclose(f[:, F["DifferenceEntropy"]], 0)
    assert np.allclose(f[:, F["InfoMeas1"]], 0)
    assert np.allclose(f[:, F["InfoMeas2"]], 0)


@pytest.mark.parametrize("scale", [1, 3])
def test_checkerboard_contrast_and_correlation(scale):
    a, b = 20, 60
    yy, xx = np.mgrid[:40, :40]
    q = np.where((yy + xx) % 2 == 0, a, b).astype(np.uint8)
    lab = np.zeros(q.shape, np.int32)
    lab[4:36, 4:36] = 1
    f = haralick_objects(lab, q, 1, scale=scale)[0]
    # horizontal (00) and vertical (02): odd offsets always pair a with b
    for d in (0, 2):
        assert f[d, F["Contrast"]] == pytest.approx((a - b) ** 2)
        assert f[d, F["Correlation"]] == pytest.approx(-1)
        assert f[d, F["AngularSecondMoment"]] == pytest.approx(0.5)
        assert f[d, F["Entropy"]] == pytest.approx(1)
    # diagonals: same colour on both ends
    for d in (1, 3):
        assert f[d, F["Contrast"]] == pytest.approx(0)
        assert f[d, F["Correlation"]] == pytest.approx(1)


def test_quantization_matches_img_as_ubyte():
    rng = np.random.default_rng(0)
    img = rng.random((50, 60)).astype(np.float32)
    img[0, :5] = [0, 1, 0.5 / 255, 1.5 / 255, 2.5 / 255]
    assert np.array_equal(quantize(img), skimage.util.img_as_ubyte(img))


def test_matches_mahotas_per_object():
    rng = np.random.default_rng(1)
    img = (rng.random((90, 110)) ** 2).astype(np.float32) * 0.4
    img[img < 0.01] = 0  # level-0 pixels inside objects are ignored
    lab = np.zeros(img.shape, np.int32)
    lab[3:40, 4:50] = 1
    lab[45:85, 10:45] = 2
    yy, xx = np.mgrid[:90, :110]
    lab[(yy - 60) ** 2 + (xx - 80) ** 2 < 18 ** 2] = 3
    lab[10:30, 60:66] = 4
    q = quantize(img)
    ours = haralick_objects(lab, q, 4, scale=3)
    for p in skimage.measure.regionprops(lab, q):
        ref = mahotas.features.haralick(p.image_intensity, distance=3, ignore_zeros=True)
        np.testing.assert_allclose(ours[p.label - 1], ref, rtol=1e-9, atol=1e-12)


def test_degenerate_objects_give_cellprofiler_values():
    img = np.full((30, 30), 0.3, np.float32)
    img[20:25, 20:25] = 0  # zero-intensity object
    lab = np.zeros((30, 30), np.int32)
    lab[2, 2] = 1  # one pixel: no pairs → mahotas raises → CellProfiler writes 0
    lab[5:15, 5] = 2  # a vertical line: no horizontal pair → 0 in every direction
    lab[20:25, 20:25] = 3  # all level 0 → 0
    lab[0:8, 22:30] = 5  # touches the border: measured normally
    out = texture(lab, {"DNA": img}, n_objects=5)
    assert len(out) == 13 * 4
    for name, v in out.items():
        assert re.fullmatch(r"Texture_[A-Za-z0-9]+_DNA_3_0[0-3]_256", name)
        assert np.all(v[:3] == 0)
        assert np.isnan(v[3])  # label 4 absent
        assert np.isfinite(v[4])
    assert out["Texture_AngularSecondMoment_DNA_3_00_256"][4] == pytest.approx(1)


def test_invariant_to_relabeling_and_translation():
    rng = np.random.default_rng(2)
    img = rng.random((80, 80)).astype(np.float32)
    lab = np.zeros((80, 80), np.int32)
    lab[5:30, 5:30] = 1
    lab[40:70, 10:35] = 2
    lab[45:75, 45:75] = 3
    base = texture(lab, {"A": img}, n_objects=3)
    perm = np.array([0, 3, 1, 2])  # 1→3, 2→1, 3→2
    relab = texture(perm[lab], {"A": img}, n_objects=3)
    shifted = texture(np.roll(lab, (3, 2), axis=(0, 1)), {"A": np.roll(img, (3, 2), axis=(0, 1))}, n_objects=3)
    for k in base:
        np.testing.assert_allclose(relab[k][perm[1:] - 1], base[k])
        np.testing.assert_allclose(shifted[k], base[k])


def test_names_scales_and_gray_levels_through_measure_objects():
    lab, img = _square(0.5)
    df = measure_objects(lab, {"Actin": img}, compartment="Cells", families=["Texture"],
                         params={"Texture": {"scales": [3, 5], "gray_levels": 64}})
    assert "Cells_Texture_InfoMeas1_Actin_3_00_64" in df.columns
    assert "Cells_Texture_Contrast_Actin_5_03_64" in df.columns
    assert df.shape == (1, 13 * 4 * 2)
    # 0.5 → level 128 of 256 → 128/255·63 → level 31 of 64
    assert df["Cells_Texture_SumAverage_Actin_3_00_64"].iloc[0] == pytest.approx(2 * 31)


# the image scan Texture used before it took LabelContext's grouped pixels: the oracle below
@numba.njit
def _image_scan_pairs(flat: np.ndarray, H: int, W: int, n: int, scale: int):
    """Object pixels grouped by object (raster order within each) and, per direction, the pairs
    (p, p + offset) inside the same object, as positions in that grouped list, grouped by object."""
    counts = np.zeros(n + 1, dtype=np.int64)
    for k in range(flat.shape[0]):
        v = flat[k]
        if v > 0 and v <= n:
            counts[v] += 1
    pix_starts = np.zeros(n + 1, dtype=np.int64)
    for o in range(n):
        pix_starts[o + 1] = pix_starts[o] + counts[o + 1]
    N = pix_starts[n]
    idx = np.empty(N, dtype=np.int64)
    rows = np.empty(N, dtype=np.int32)
    cols = np.empty(N, dtype=np.int32)
    pos = np.empty(flat.shape[0], dtype=np.int32)  # only read at object pixels, all written below
    fill = pix_starts[:n].copy()
    for r in range(H):
        for c in range(W):
            k = r * W + c
            v = flat[k]
            if v > 0 and v <= n:
                t = fill[v - 1]
                idx[t] = k
                rows[t] = r
                cols[t] = c
                pos[k] = t
                fill[v - 1] = t + 1
    a = np.empty((4, N), dtype=np.int32)
    b = np.empty((4, N), dtype=np.int32)
    starts = np.zeros((4, n + 1), dtype=np.int64)
    for d in range(4):
        if d == 0:
            dy, dx = 0, scale
        elif d == 1:
            dy, dx = scale, scale
        elif d == 2:
            dy, dx = scale, 0
        else:
            dy, dx = scale, -scale
        off = dy * W + dx
        m = 0
        for o in range(n):
            for t in range(pix_starts[o], pix_starts[o + 1]):
                rr = rows[t] + dy
                cc = cols[t] + dx
                if rr < H and cc >= 0 and cc < W:
                    q = idx[t] + off
                    if flat[q] == o + 1:
                        a[d, m] = t
                        b[d, m] = pos[q]
                        m += 1
            starts[d, o + 1] = m
    return idx, pix_starts, a, b, starts


def test_pair_geometry_from_the_grouped_pixels_equals_the_image_scan():
    """Texture's pairs found from LabelContext's grouped pixel list (two pointers per object) are the
    image scan's: objects touching every border, holes, absent numbers, 1-pixel objects, all scales."""
    from profiler.measure._util import LabelContext
    from profiler.measure.texture import _pair_geometry

    rng = np.random.default_rng(21)
    for trial in range(6):
        lab = rng.integers(0, 6, (37, 41)).astype(np.int32)
        lab[lab == 3] = 0  # object 3 absent
        if trial % 2:
            lab[:, :5] = 2  # a block touching the left, top and bottom borders
            lab[10, 20] = 7  # a 1-pixel object
        n = 8
        for scale in (1, 2, 3, 5, 40):
            ref = _image_scan_pairs(np.ascontiguousarray(lab).ravel().astype(np.int64), *lab.shape, n, scale)
            got = _pair_geometry(lab, n, scale, LabelContext(lab, n))
            for k in (0, 1, 4):
                np.testing.assert_array_equal(got[k], ref[k])
            for d in range(4):
                m = ref[4][d, -1]
                np.testing.assert_array_equal(got[2][d, :m], ref[2][d, :m])
                np.testing.assert_array_equal(got[3][d, :m], ref[3][d, :m])
