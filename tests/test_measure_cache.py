"""The site's image cache (:class:`profiler.measure.ImageCache`): one object with a one-site lifetime
holds every whole-image intermediate (Granularity's spectrum, Correlation's levels, dense codes and
Costes thresholds); nothing is kept at module level; sharing it changes no number."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import profiler.measure
from profiler.measure import ImageCache, measure_objects
from profiler.measure._util import LabelContext, label_context

FAMILIES = ["Granularity", "Correlation", "Intensity"]


def _site(seed: int = 0, off_grid: bool = False):
    """Three compartments of one small site (nuclei inside cells), two channels."""
    rng = np.random.default_rng(seed)
    cells = np.zeros((64, 72), np.int32)
    nuclei = np.zeros_like(cells)
    for k, (i, j) in enumerate([(4, 4), (4, 38), (34, 10), (34, 44)], start=1):
        cells[i:i + 24, j:j + 26] = k
        nuclei[i + 6:i + 16, j + 7:j + 18] = k
    cyto = np.where(nuclei > 0, 0, cells)
    images = {}
    for ch in ("DNA", "Actin"):
        raw = rng.integers(0, 4096, cells.shape)
        img = (raw / 65535).astype(np.float32)  # on the 16-bit grid, as read from 12-bit data
        if off_grid:  # e.g. illumination-corrected
            img = (img * rng.uniform(0.9, 1.1, cells.shape)).astype(np.float32)
        images[ch] = img
    return {"Nuclei": nuclei, "Cells": cells, "Cytoplasm": cyto}, images, 4


def _measure(labels, images, n, cache=None):
    return {comp: measure_objects(lab, images, compartment=comp, families=FAMILIES, n_objects=n,
                                  image_cache=cache) for comp, lab in labels.items()}


@pytest.mark.parametrize("off_grid", [False, True], ids=["16-bit grid", "off the grid"])
def test_one_cache_per_site_changes_no_number_and_is_filled_once(off_grid):
    labels, images, n = _site(off_grid=off_grid)
    cache = ImageCache()
    shared = _measure(labels, images, n, cache)
    alone = _measure(labels, images, n)
    for comp in labels:
        np.testing.assert_array_equal(shared[comp].to_numpy(), alone[comp].to_numpy(), err_msg=comp)
    # per channel: a spectrum, levels and the float32 variance/mean of the Costes regression (plus
    # the value sort and the float64 pixels off the grid), and one Costes pair
    want = 2 * 3 + (2 * 2 if off_grid else 0) + 1
    assert len(cache) == want
    # the whole-image intermediates are computed for the first compartment only
    before = len(cache)
    measure_objects(labels["Cells"], images, compartment="Cells", families=FAMILIES, n_objects=n,
                    image_cache=cache)
    assert len(cache) == before


def test_get_computes_once_per_image_object_and_settings():
    cache = ImageCache()
    a, b = np.zeros(4), np.zeros(4)  # equal content, different objects
    calls = []

    def make(tag):
        return lambda: calls.append(tag) or tag

    assert cache.get("k", (a,), (1,), make("a1")) == "a1"
    assert cache.get("k", (a,), (1,), make("again")) == "a1"
    assert cache.get("k", (a,), (2,), make("a2")) == "a2"
    assert cache.get("k", (b,), (1,), make("b1")) == "b1"
    assert cache.get("other", (a,), (1,), make("o")) == "o"
    assert cache.get("k", (a, b), (1,), make("ab")) == "ab"
    assert calls == ["a1", "a2", "b1", "o", "ab"]


def test_label_context_keeps_the_site_cache():
    labels, _, n = _site()
    cache = ImageCache()
    ctx = LabelContext(labels["Cells"], n, cache)
    assert label_context(labels["Cells"], n, ctx) is ctx
    other = label_context(labels["Nuclei"], n, ctx)  # another label image: new context, same site
    assert other is not ctx and other.images is cache
    assert label_context(labels["Cells"], n).images is not cache


def _module_state() -> dict[str, int]:
    """Size of every dict/list/set held at module level by the measure package."""
    out = {}
    for name, mod in sys.modules.items():
        if name == "profiler.measure" or name.startswith("profiler.measure."):
            for attr, val in vars(mod).items():
                if isinstance(val, (dict, list, set)) and not attr.startswith("__"):
                    out[f"{name}.{attr}"] = len(val)
    return out


def test_no_module_level_state_grows():
    """Measuring new images leaves no trace at module level (the former caches were module dicts
    keyed by image hashes): everything lives in the ImageCache, dropped with the site."""
    assert profiler.measure.families()  # every family module imported
    labels, images, n = _site(seed=1, off_grid=True)
    _measure(labels, images, n)  # compile / first use
    before = _module_state()
    for seed in (2, 3):
        labels, images, n = _site(seed=seed, off_grid=bool(seed % 2))
        _measure(labels, images, n, ImageCache())
        _measure(labels, images, n)
    assert _module_state() == before


def test_radial_zernike_weights_are_stacked_once_per_site():
    labels, images, n = _site(off_grid=True)
    cache = ImageCache()
    shared = {comp: measure_objects(lab, images, compartment=comp, families=["RadialDistribution"], n_objects=n,
                                    image_cache=cache) for comp, lab in labels.items()}
    alone = {comp: measure_objects(lab, images, compartment=comp, families=["RadialDistribution"], n_objects=n)
             for comp, lab in labels.items()}
    for comp in labels:
        np.testing.assert_array_equal(shared[comp].to_numpy(), alone[comp].to_numpy(), err_msg=comp)
    kinds = [key[0] for key in cache._store]
    assert kinds.count("zernike_weights") == 1
