"""The shape scan and the moments restricted to the objects (bounding boxes, pixel lists) equal
whole-image scans: perimeter sums in the same raster order, Euler numbers, moments bit for bit."""

import math

import numba
import numpy as np

from profiler.measure._labels import pixel_scan
from profiler.measure._moments import _add_powers, moments_from_pixels
from profiler.measure._util import LabelContext


# the whole-image scan AreaShape used before moments_from_pixels: the oracle
@numba.njit
def moments(labels: np.ndarray, n: int, bbox: np.ndarray, area: np.ndarray):
    """Spatial moments (relative to the bounding box origin, as scikit-image's regionprops)
    and central moments up to order 3 per axis: arrays (n+1, 4, 4) indexed [label, p, q] for
    Σ row^p col^q."""
    h, w = labels.shape
    m = np.zeros((n + 1, 4, 4))
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if lab <= 0 or lab > n:
                continue
            _add_powers(m[lab], float(i - bbox[lab, 0]), float(j - bbox[lab, 1]))
    mu = np.zeros((n + 1, 4, 4))
    cr = np.zeros(n + 1)
    cc = np.zeros(n + 1)
    for k in range(1, n + 1):
        if area[k] > 0:
            cr[k] = m[k, 1, 0] / m[k, 0, 0]
            cc[k] = m[k, 0, 1] / m[k, 0, 0]
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if lab <= 0 or lab > n:
                continue
            _add_powers(mu[lab], (i - bbox[lab, 0]) - cr[lab], (j - bbox[lab, 1]) - cc[lab])
    return m, mu


def _whole_image_perimeter_euler(labels, n):
    """The former whole-image passes of pixel_scan (plain Python)."""
    h, w = labels.shape
    border = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            lab = labels[i, j]
            if 0 < lab <= n and (i == 0 or labels[i - 1, j] != lab or i == h - 1 or labels[i + 1, j] != lab
                                 or j == 0 or labels[i, j - 1] != lab or j == w - 1 or labels[i, j + 1] != lab):
                border[i, j] = True
    weights = np.zeros(50)
    for c in (5, 7, 15, 17, 25, 27):
        weights[c] = 1.0
    weights[21] = weights[33] = math.sqrt(2.0)
    weights[13] = weights[23] = (1.0 + math.sqrt(2.0)) / 2.0
    perim = np.zeros(n + 1)
    for i in range(h):
        for j in range(w):
            if not border[i, j]:
                continue
            lab = labels[i, j]
            code = 1
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    a, b = i + di, j + dj
                    if (di or dj) and 0 <= a < h and 0 <= b < w and border[a, b] and labels[a, b] == lab:
                        code += 10 if (di and dj) else 2
            if code < 50:
                perim[lab] += weights[code]
    eul = np.zeros(n + 1, np.int64)
    pad = np.zeros((h + 2, w + 2), labels.dtype)
    pad[1:-1, 1:-1] = labels
    for i in range(h + 1):
        for j in range(w + 1):
            win = (pad[i, j], pad[i, j + 1], pad[i + 1, j], pad[i + 1, j + 1])
            for lab in set(int(v) for v in win):
                if not 0 < lab <= n:
                    continue
                b = [v == lab for v in win]
                q = sum(b)
                if q == 1:
                    eul[lab] += 1
                elif q == 3:
                    eul[lab] -= 1
                elif q == 2 and ((b[0] and b[3]) or (b[1] and b[2])):
                    eul[lab] -= 2
    return perim, eul


def _cases():
    rng = np.random.default_rng(41)
    for trial in range(8):
        lab = rng.integers(0, 7, (23, 27)).astype(np.int64)
        lab[lab == 4] = 0  # absent object
        if trial % 2:
            lab[:, :4] = 2  # touching three borders
            lab[5:9, 20:] = 5  # touching the right border, with a hole below
            lab[6, 22] = 0
            lab[12, 12] = 9  # a 1-pixel object beyond n for n = 8
        yield lab
    yield np.zeros((4, 5), np.int64)
    yield np.ones((1, 1), np.int64)


def test_pixel_scan_equals_the_whole_image_passes():
    for lab in _cases():
        for n in (0, 1, 6, 8):
            area, bbox, perim, eul = pixel_scan(lab, n)
            ref_p, ref_e = _whole_image_perimeter_euler(lab, n)
            assert perim.tolist() == ref_p.tolist()  # bit for bit, same summation order
            np.testing.assert_array_equal(eul, ref_e)
            np.testing.assert_array_equal(area, np.bincount(lab[(lab > 0) & (lab <= n)], minlength=n + 1)[:n + 1])


def test_moments_from_the_pixel_list_equal_the_image_scan():
    for lab in _cases():
        for n in (1, 6, 8):
            area, bbox, _, _ = pixel_scan(lab, n)
            ctx = LabelContext(lab, n)
            rows, cols = ctx.rows_cols()
            m1, mu1 = moments_from_pixels(rows, cols, ctx.pixels()[1], n, bbox, area)
            m0, mu0 = moments(lab, n, bbox, area)
            assert m1.tobytes() == m0.tobytes() and mu1.tobytes() == mu0.tobytes()
