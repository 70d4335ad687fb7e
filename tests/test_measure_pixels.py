"""LabelContext's pixel lists from the numba scan (profiler.measure._labels.label_pixels /
group_pixels_by_label) equal the NumPy definitions they replace."""

import numpy as np

from profiler.measure._labels import group_pixels_by_label, label_pixels
from profiler.measure._util import LabelContext, object_pixels


def _reference(labels, n):
    flat = labels.ravel()
    idx = np.flatnonzero((flat > 0) & (flat <= n))
    lab = flat[idx].astype(np.intp)
    order = np.argsort(lab, kind="stable")
    counts = np.bincount(lab, minlength=n + 1)
    starts = np.zeros(n + 1, np.int64)
    np.cumsum(counts[1:], out=starts[1:])
    return idx, lab, counts, idx[order], lab[order], starts


def test_pixel_lists_equal_the_numpy_definitions():
    rng = np.random.default_rng(31)
    cases = [np.zeros((5, 6), np.int32), np.ones((1, 1), np.int64), np.full((3, 3), 9, np.int16)]
    for _ in range(6):
        lab = rng.integers(-1, 12, (29, 33))
        lab[lab == 4] = 0  # an absent object
        cases.append(lab.astype(rng.choice([np.int32, np.int64, np.uint16, np.uint8])))
    for lab in cases:
        for n in (0, 1, 8, 11, 15):
            idx, lb, counts, gi, gl, starts = _reference(lab, n)
            for got_idx, got_lab in (object_pixels(lab, n), LabelContext(lab, n).pixels()):
                np.testing.assert_array_equal(got_idx, idx)
                np.testing.assert_array_equal(got_lab, lb)
                assert got_lab.dtype == np.intp
            ctx = LabelContext(lab, n)
            np.testing.assert_array_equal(ctx.counts(), counts)
            assert ctx.counts().dtype == np.int64
            for got, want in zip(ctx.grouped(), (gi, gl, starts)):
                np.testing.assert_array_equal(got, want)
            i2, l2, c2 = label_pixels(np.ascontiguousarray(lab, np.int64).ravel(), n)
            for got, want in zip(group_pixels_by_label(i2, l2, c2), (gi, gl, starts)):
                np.testing.assert_array_equal(got, want)
