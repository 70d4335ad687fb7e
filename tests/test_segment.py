"""Segmentation: CellProfiler conventions on small arrays, the synthetic plate's true masks, and
the real BBBC021 field (skipped when ../shared is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.segmentation import clear_border

from profiler.config import load_pipeline
from cellfusion_core.errors import ConfigError
from profiler.plate import discover, read_site
from profiler.segment import (cytoplasm, fill_label_holes, match_objects, propagate, segment_cells,
                              segment_nuclei, segment_site, threshold_value)
from tests.conftest import require_shared


def _disk_image(shape, centres, radius, value=0.5, bg=0.02):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.full(shape, bg, np.float32)
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = value
    return img


def test_border_nuclei_removed_before_numbering():
    img = _disk_image((120, 120), [(3, 60), (40, 40), (80, 80), (60, 117)], 8)
    nuc = segment_nuclei(img, min_diameter=8, max_diameter=40)
    assert nuc.max() == 2
    assert sorted(np.unique(nuc)) == [0, 1, 2]          # 1..N, no gaps
    assert nuc[40, 40] > 0 and nuc[80, 80] > 0
    assert nuc[0].max() == 0 and nuc[:, -1].max() == 0


def test_size_filter_and_touching_nuclei_are_split():
    img = _disk_image((100, 140), [(50, 40), (50, 58), (20, 110)], 10)
    img += _disk_image((100, 140), [(80, 110)], 2, value=0.48, bg=0)   # too small
    nuc = segment_nuclei(img, min_diameter=10, max_diameter=40, declump="shape", dividing_lines="shape",
                         low_res_maxima=False)
    assert nuc.max() == 3                                 # the clump is split in two, the speck is dropped
    assert nuc[80, 110] == 0
    assert nuc[50, 40] != nuc[50, 58]


def test_threshold_methods_and_bounds():
    rng = np.random.default_rng(0)
    img = np.concatenate([rng.normal(0.1, 0.01, 500), rng.normal(0.5, 0.02, 500), rng.normal(0.9, 0.02, 200)])
    t2 = threshold_value(img)
    assert 695 <= (img >= t2).sum() <= 705   # cuts the dim class from the rest
    lo, hi = (threshold_value(img, classes=3, middle_class=m) for m in ("foreground", "background"))
    assert 0.1 < lo < 0.4 and 0.5 < hi < 0.8      # the two cuts of three-class Otsu
    assert 0.1 < threshold_value(img, method="minimum_cross_entropy") < 0.9
    assert threshold_value(img, correction=3.0, bounds=(0, 0.3)) == 0.3
    assert threshold_value(img, correction=0.1, bounds=(0.2, 1)) == 0.2
    with pytest.raises(ConfigError, match="threshold method"):
        threshold_value(img, method="otsu", classes=4)
    with pytest.raises(ConfigError, match="unknown segmentation.nuclei parameter"):
        segment_nuclei(np.zeros((10, 10)), smothing=2)


def test_propagation_follows_the_image_and_keeps_numbers():
    # two seeds; a dark ridge at column 30 separates their territories although seed 1 is closer
    img = np.full((40, 60), 0.5)
    img[:, 30] = 0.0
    seeds = np.zeros((40, 60), np.int32)
    seeds[20, 26] = 1
    seeds[20, 50] = 2
    labels, dist = propagate(img, seeds, np.ones_like(img, bool), 0.05)
    assert set(np.unique(labels)) == {1, 2}
    assert (labels[:, 33:] == 2).all() and (labels[:, :28] == 1).all()
    assert dist[20, 26] == 0
    # Masked pixels are never claimed
    mask = np.ones_like(img, bool)
    mask[:, :10] = False
    labels, _ = propagate(img, seeds, mask, 0.05)
    assert (labels[:, :10] == 0).all()


def test_cells_contain_their_nucleus_and_cytoplasm_keeps_numbers():
    dna = _disk_image((100, 100), [(30, 30), (70, 70)], 7)
    body = _disk_image((100, 100), [(30, 30), (70, 70)], 18, value=0.3)
    nuc = segment_nuclei(dna, min_diameter=8, max_diameter=30)
    cells = segment_cells(nuc, body)
    cyto = cytoplasm(cells, nuc)
    for k in (1, 2):
        assert (cells[nuc == k] == k).all()
        assert (cells == k).sum() > 0.9 * np.pi * 18 ** 2   # the whole cell body
        assert ((cyto == k) == ((cells == k) & (nuc == 0))).all()


def test_fill_label_holes_only_fills_single_owner_pockets():
    lab = np.zeros((20, 30), np.int32)
    lab[2:10, 2:10] = 1
    lab[5, 5] = 0                  # hole inside 1
    lab[2:10, 12:28] = 2
    lab[2:10, 19] = 3              # a column of 3 inside 2 ...
    lab[5, 15] = 0                 # hole inside 2 → filled
    out = fill_label_holes(lab)
    assert out[5, 5] == 1 and out[5, 15] == 2


def test_match_objects():
    a = np.zeros((10, 10), int)
    a[1:4, 1:4] = 1
    a[6:9, 6:9] = 2
    b = np.zeros_like(a)
    b[1:4, 1:4] = 5
    m = match_objects(a, b, min_iou=0.5)
    assert (m["n_reference"], m["n_test"], m["n_matched"]) == (2, 1, 1)
    assert m["recall"] == 0.5 and m["precision"] == 1.0


def test_synthetic_plate_nuclei_f1(small_plate):
    """Against the synthetic plate's true masks (border-touching nuclei removed, CellProfiler's rule)."""
    cfg = load_pipeline("example")
    scan = discover(small_plate, cfg)
    f1 = []
    for site in scan.sites:
        seg = segment_site(read_site(site), nuclei_channel="DNA", cells_channel="Tubulin",
                           params=cfg.section("segmentation"))
        truth = clear_border(tifffile.imread(small_plate / "ground_truth" / f"{site.key}_nuclei.tif"))
        f1.append(match_objects(truth, seg.nuclei, min_iou=0.5)["f1"])
    assert np.mean(f1) >= 0.95, f1


def test_real_bbbc021_site_relationships():
    field = require_shared("bbbc021", "fields", "Week2", "Week2_24381")
    cfg = load_pipeline("bbbc021")
    scan = discover(field, cfg)
    site = scan.complete_sites[0]
    seg = segment_site(read_site(site), nuclei_channel="DAPI", cells_channel="Actin",
                       params=cfg.section("segmentation"))
    n = seg.n_objects
    assert 150 < n < 250          # CellProfiler 5 finds 192 nuclei with bbbc021.cppipe
    rel = seg.relationships()
    assert (rel["Cells_Parent_Nuclei"] == np.arange(1, n + 1)).all()
    assert (rel["Nuclei_Children_Cells_Count"] == 1).all()
    assert set(np.unique(seg.cells)) == set(range(n + 1))


@pytest.mark.parametrize("value", [0.0, 1.0, 0.3])
def test_constant_field_has_no_objects(value):
    """An all-zero, saturated or flat field (every pixel equal) yields no nuclei and no cells.

    With BBBC021's parameters a flat 512² field used to give 2 nuclei (declumping a whole-image mask).
    """
    from profiler.segment import segment_site

    img = np.full((512, 512), value, np.float32)
    seg = segment_site({"DAPI": img, "Actin": img}, nuclei_channel="DAPI", cells_channel="Actin",
                       params=load_pipeline("bbbc021").section("segmentation"))
    assert seg.nuclei.max() == 0 and seg.cells.max() == 0
