"""Granularity (MeasureGranularity): analytic cases and a transcription of CellProfiler's algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.morphology

from profiler.measure.granularity import _reconstruct_by_dilation, granularity


def _cp_reference(img, labels, n, subsample=0.25, image_sample=0.25, element=10, length=16):
    """CellProfiler's measure_granularity, transcribed literally (slow: full-resolution restore per step)."""

    def down(px, f):
        shape = np.array(px.shape, float) * f
        i, j = np.mgrid[0:shape[0], 0:shape[1]].astype(float) / f
        return ndi.map_coordinates(px, (i, j), order=1), shape

    def restore(px, scaled_shape, orig):
        i, j = np.mgrid[0:orig[0], 0:orig[1]].astype(float)
        i *= float(scaled_shape[0] - 1) / float(orig[0] - 1)
        j *= float(scaled_shape[1] - 1) / float(orig[1] - 1)
        return ndi.map_coordinates(px, (i, j), order=1).astype(float)

    pixels, new_shape = down(img, subsample)
    back, back_shape = down(pixels, image_sample)
    fp = skimage.morphology.disk(element).astype(bool)
    back = skimage.morphology.dilation(skimage.morphology.erosion(back, fp), fp)
    back = restore(back, back_shape, new_shape)
    pixels = pixels - back
    pixels[pixels < 0] = 0
    rng = np.arange(1, n + 1)
    current = np.array(ndi.mean(img, labels, rng))
    start = np.maximum(current, np.finfo(float).eps)
    ero = pixels.copy()
    cross = skimage.morphology.disk(1).astype(bool)
    out = []
    for _ in range(length):
        ero = skimage.morphology.erosion(ero, cross)
        rec = skimage.morphology.reconstruction(ero, pixels, footprint=cross)
        new = np.array(ndi.mean(restore(rec, new_shape, img.shape), labels, rng))
        out.append((current - new) * 100 / start)
        current = new
    return np.array(out)


def _scene(seed=0, shape=(96, 120)):
    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.random(shape), 1.5).astype(np.float32) * 0.5
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img += (0.3 * ((yy - 40) ** 2 + (xx - 50) ** 2 < 100)).astype(np.float32)
    lab = np.zeros(shape, np.int32)
    lab[5:45, 5:60] = 1
    lab[50:90, 10:50] = 2
    lab[(yy - 60) ** 2 + (xx - 90) ** 2 < 20 ** 2] = 3
    lab[0:6, 110:120] = 4  # touches the border
    return img, lab


def test_matches_cellprofiler_transcription():
    img, lab = _scene()
    ours = granularity(lab, {"DNA": img}, n_objects=4)
    ref = _cp_reference(img, lab, 4)
    got = np.array([ours[f"Granularity_{k}_DNA"] for k in range(1, 17)])
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_reconstruction_equals_skimage():
    rng = np.random.default_rng(3)
    cross = skimage.morphology.disk(1).astype(bool)
    for _ in range(10):
        mask = rng.random((23, 31))
        seed = skimage.morphology.erosion(mask, cross)
        seed = skimage.morphology.erosion(seed, cross)
        np.testing.assert_array_equal(_reconstruct_by_dilation(seed, mask),
                                      skimage.morphology.reconstruction(seed, mask, footprint=cross))


def test_reconstruction_with_plateaus_equals_skimage():
    """Few grey levels: large ties (plateaus) in the max-tree, thin shapes, one-row/one-column images."""
    rng = np.random.default_rng(5)
    cross = skimage.morphology.disk(1).astype(bool)
    for t in range(60):
        h, w = (1, 17) if t == 0 else (13, 1) if t == 1 else rng.integers(2, 30, 2)
        mask = rng.integers(0, rng.integers(1, 5), (h, w)).astype(float)
        seed = (np.minimum(mask, rng.integers(0, 5, (h, w)).astype(float)) if t % 2
                else skimage.morphology.erosion(mask, cross))
        np.testing.assert_array_equal(_reconstruct_by_dilation(seed, mask),
                                      skimage.morphology.reconstruction(seed, mask, footprint=cross))


def test_constant_and_empty_images():
    lab = np.zeros((64, 64), np.int32)
    lab[10:30, 10:30] = 1
    lab[40:60, 35:60] = 2
    const = granularity(lab, {"A": np.full((64, 64), 0.25, np.float32)}, n_objects=2)
    # background removal leaves nothing: the whole mean goes at the first step (CellProfiler's convention)
    np.testing.assert_allclose(const["Granularity_1_A"], 100)
    for k in range(2, 17):
        np.testing.assert_allclose(const[f"Granularity_{k}_A"], 0, atol=1e-9)
    empty = granularity(lab, {"A": np.zeros((64, 64), np.float32)}, n_objects=2)
    for v in empty.values():
        np.testing.assert_array_equal(v, 0)


def test_absent_and_tiny_objects_and_relabeling():
    img, lab = _scene(1)
    lab[93, 3] = 6  # a one-pixel object; label 5 is absent
    out = granularity(lab, {"A": img}, n_objects=6)
    assert np.all(np.isnan([out[f"Granularity_{k}_A"][4] for k in range(1, 17)]))
    assert np.all(np.isfinite([out[f"Granularity_{k}_A"][5] for k in range(1, 17)]))
    perm = np.array([0, 2, 1, 4, 3, 5, 6])
    relab = granularity(perm[lab], {"A": img}, n_objects=6)
    for k, v in out.items():
        np.testing.assert_allclose(relab[k][perm[1:] - 1], v)


@pytest.mark.parametrize("length", [4, 16])
def test_spectrum_length_and_names(length):
    img, lab = _scene(2)
    out = granularity(lab, {"Actin": img, "DNA": img * 0.5}, n_objects=4, spectrum_length=length)
    assert sorted(out) == sorted(f"Granularity_{k}_{ch}" for k in range(1, length + 1) for ch in ("Actin", "DNA"))
    # granularity is scale invariant (percent of the object's mean)
    for k in range(1, length + 1):
        np.testing.assert_allclose(out[f"Granularity_{k}_Actin"], out[f"Granularity_{k}_DNA"], rtol=1e-5, atol=1e-6)


def test_tiny_images_do_not_raise():
    """Heavy subsampling of a tiny image leaves one-pixel dimensions: values, never ZeroDivisionError."""
    from profiler.measure import measure_objects

    for n in (2, 4, 5, 7):
        lab = np.zeros((n, n), np.int32)
        lab[: n // 2 + 1, : n // 2 + 1] = 1
        img = np.random.default_rng(n).random((n, n), dtype=np.float32)
        table = measure_objects(lab, {"A": img}, compartment="Cells", families=["Granularity"])
        assert len(table) == 1 and not np.isinf(table.to_numpy()).any()
