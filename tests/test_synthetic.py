"""The synthetic example plate: layout, file contract, determinism, ground truth, planted effects."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage.filters import threshold_otsu
from skimage.measure import regionprops

from cellfusion_core.errors import ConfigError
from profiler.synthetic import (
    CAMERA_OFFSET, CHANNELS, CONTROL_COMPOUND, PHENOTYPES, make_example_plate,
    phenotypes_markdown, plate_layout,
)

PLATE = "EXAMPLE01"
IMAGEXPRESS = re.compile(rf"^{PLATE}_(?P<well>[A-P]\d{{2}})_s(?P<site>\d+)_w(?P<ch>[1-3])\.tif$")
N_WELLS, N_SITES, SIZE = 12, 2, 256     # 12 wells: DMSO 4, each compound at both doses
DOC = Path(__file__).resolve().parents[1] / "docs" / "synthetic_plate.md"


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plate") / "plate"
    return make_example_plate(out, n_wells=N_WELLS, n_sites=N_SITES, size=SIZE, seed=0)


def _platemap(plate: Path) -> list[dict[str, str]]:
    with open(plate / "platemap.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _sites(plate: Path):
    """(well, site, compound, concentration, images by channel key, nuclei, cells) per site."""
    rows = {r["well"]: r for r in _platemap(plate)}
    for well, r in rows.items():
        for site in range(1, N_SITES + 1):
            stem = f"{PLATE}_{well}_s{site}"
            imgs = {ch: tifffile.imread(plate / f"{stem}_{ch}.tif") for ch in CHANNELS}
            nuc = tifffile.imread(plate / "ground_truth" / f"{stem}_nuclei.tif")
            cells = tifffile.imread(plate / "ground_truth" / f"{stem}_cells.tif")
            yield well, site, r["compound"], float(r["concentration"]), imgs, nuc, cells


@pytest.fixture(scope="module")
def per_compound(plate):
    """compound → per-cell truth measurements pooled over its wells, plus cells per site."""
    out: dict[str, dict[str, list]] = {}
    for _, _, compound, _, imgs, nuc, cells in _sites(plate):
        d = out.setdefault(compound, {"nuc_area": [], "tub_mean": [], "ecc": [], "cell_area": [],
                                      "count": []})
        n = int(nuc.max())
        d["count"].append(n)
        d["nuc_area"] += list(np.bincount(nuc.ravel(), minlength=n + 1)[1:])
        tub = imgs["w2"].astype(float) - CAMERA_OFFSET
        area = np.bincount(cells.ravel(), minlength=n + 1)[1:]
        d["cell_area"] += list(area)
        d["tub_mean"] += list(np.bincount(cells.ravel(), tub.ravel(), minlength=n + 1)[1:] / area)
        d["ecc"] += [p.eccentricity for p in regionprops(cells.astype(np.int32))]
    return {c: {k: np.asarray(v, float) for k, v in d.items()} for c, d in out.items()}


# --- layout -----------------------------------------------------------------------------------

def test_default_layout_has_more_controls_and_both_doses():
    layout = plate_layout(24)
    counts = Counter(w.compound for w in layout)
    assert counts == {"DMSO": 8, "Enlargin": 4, "Tubulor": 4, "Elongatin": 4, "Sparsin": 4}
    for name, ph in PHENOTYPES.items():
        doses = Counter(w.concentration for w in layout if w.compound == name)
        assert doses == {c: 2 for c in ph.concentrations}
    assert [w.well for w in layout[:3]] == ["B02", "B03", "B04"]
    assert len({w.well for w in layout}) == 24
    assert all(w.control == ("negative" if w.compound == "DMSO" else "") for w in layout)
    assert all(w.concentration == 0.0 for w in layout if w.compound == "DMSO")


@pytest.mark.parametrize("n", [5, 8, 13])
def test_small_layouts_hold_every_treatment(n):
    assert {w.compound for w in plate_layout(n)} == {CONTROL_COMPOUND, *PHENOTYPES}


@pytest.mark.parametrize("bad", [0, 4, 10_000, 2.5])
def test_bad_well_count_is_a_config_error(bad, tmp_path):
    with pytest.raises(ConfigError):
        plate_layout(bad)
    with pytest.raises(ConfigError):
        make_example_plate(tmp_path, n_wells=bad, size=64)


def test_bad_plate_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        make_example_plate(tmp_path, plate="MY_PLATE", n_wells=5, n_sites=1, size=64)


# --- files ------------------------------------------------------------------------------------

def test_files_follow_imagexpress_naming(plate):
    tifs = sorted(p.name for p in plate.glob("*.tif"))
    assert len(tifs) == N_WELLS * N_SITES * len(CHANNELS)
    assert all(IMAGEXPRESS.match(n) for n in tifs), [n for n in tifs if not IMAGEXPRESS.match(n)]
    wells = {IMAGEXPRESS.match(n)["well"] for n in tifs}
    assert wells == {r["well"] for r in _platemap(plate)}
    # everything else at the top level is the platemap and the manifest (truth in a subfolder)
    others = {p.name for p in plate.iterdir() if p.suffix != ".tif"}
    assert others == {"platemap.csv", "manifest.json", "ground_truth"}
    assert not list(plate.glob(".*.tmp"))                       # atomic writes left no debris


def test_images_are_16bit_12bit_range_without_timestamp(plate):
    path = plate / f"{PLATE}_B02_s1_w1.tif"
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        img = page.asarray()
        assert 306 not in page.tags                              # no DateTime tag
    assert img.dtype == np.uint16 and img.shape == (SIZE, SIZE)
    assert CAMERA_OFFSET - 20 < img.min() and img.max() <= 4095


def test_platemap_columns_and_control_flag(plate):
    with open(plate / "platemap.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert header == ["well", "compound", "concentration", "control"]
    rows = _platemap(plate)
    assert len(rows) == N_WELLS
    for r in rows:
        assert r["control"] == ("negative" if r["compound"] == "DMSO" else "")
        float(r["concentration"])
    assert {r["compound"] for r in rows} == {"DMSO", *PHENOTYPES}


def test_plate_discovery_reads_the_plate(plate):
    from profiler.config import load_pipeline
    from profiler.plate import discover, read_platemap

    scan = discover(plate, load_pipeline("example"))
    assert len(scan.complete_sites) == N_WELLS * N_SITES
    assert scan.plates == [PLATE]
    assert len(read_platemap(plate / "platemap.csv")) == N_WELLS


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.is_file() and p.name != "manifest.json")


def test_same_seed_same_bytes_other_seed_other_images(plate, tmp_path):
    kw = {"n_wells": 6, "n_sites": 1, "size": 128}
    first = make_example_plate(tmp_path / "first", seed=3, **kw)
    again = make_example_plate(tmp_path / "again", seed=3, **kw)
    files = _files(first)
    assert files == _files(again) and len(files) == 6 * 3 + 6 * 2 + 3 + 3
    for rel in files:
        assert (first / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = make_example_plate(tmp_path / "other", seed=4, **kw)
    for ch in CHANNELS:
        name = f"{PLATE}_B02_s1_{ch}.tif"
        assert (first / name).read_bytes() != (other / name).read_bytes()
    assert (first / "platemap.csv").read_bytes() == (other / "platemap.csv").read_bytes()
    # the first wells of a bigger plate are the same wells (a well's draws depend on its
    # position and the seed only)
    name = f"{PLATE}_B03_s1_w1.tif"
    assert (plate / name).read_bytes() == (make_example_plate(
        tmp_path / "big", n_wells=5, n_sites=1, size=SIZE, seed=0) / name).read_bytes()
    manifest = json.loads((other / "manifest.json").read_text())
    assert manifest["command"] == "profiler example-plate"
    assert manifest["parameters"]["seed"] == 4


# --- ground truth -----------------------------------------------------------------------------

def test_ground_truth_masks_are_consistent(plate):
    sites = {(r["well"], int(r["site"])): int(r["n_cells"])
             for r in csv.DictReader(open(plate / "ground_truth" / "sites.csv"))}
    touching = 0
    for well, site, _, _, _, nuc, cells in _sites(plate):
        n = int(nuc.max())
        assert sites[(well, site)] == n and n > 0
        assert set(np.unique(nuc)) == set(range(n + 1))          # labels 1..n, no gaps
        assert set(np.unique(cells)) == set(range(n + 1))        # same numbers in cells
        inside = nuc > 0
        assert np.array_equal(cells[inside], nuc[inside])        # nucleus i inside cell i
        for i in range(1, n + 1):
            assert np.count_nonzero(cells == i) > np.count_nonzero(nuc == i)
        # nuclei touching each other (so declumping matters): horizontally adjacent labels
        a, b = nuc[:, :-1], nuc[:, 1:]
        touching += np.count_nonzero((a > 0) & (b > 0) & (a != b))
    assert touching > 0


def test_nuclei_stand_out_for_otsu(plate):
    """Otsu on the raw DNA image finds the truth nuclei (IoU > 0.75 on every site)."""
    for _, _, _, _, imgs, nuc, _ in _sites(plate):
        dna = imgs["w1"].astype(float)
        fg = dna > threshold_otsu(dna)
        truth = nuc > 0
        iou = np.count_nonzero(fg & truth) / np.count_nonzero(fg | truth)
        assert iou > 0.75


def test_illumination_field_is_shared_and_visible(plate):
    """Background pixels, averaged over all sites, follow the plate's illumination field."""
    for ch in CHANNELS:
        field = tifffile.imread(plate / "ground_truth" / f"{PLATE}_illumination_{ch}.tif")
        assert field.max() == pytest.approx(1.0) and 0.4 < field.min() < 0.9
        total = np.zeros((SIZE, SIZE))
        count = np.zeros((SIZE, SIZE))
        for _, _, _, _, imgs, _, cells in _sites(plate):
            bg = cells == 0
            total[bg] += imgs[ch][bg] - CAMERA_OFFSET
            count[bg] += 1
        ok = count > 5
        r = np.corrcoef((total[ok] / count[ok]), field[ok])[0, 1]
        assert r > 0.5, (ch, r)


def test_phenotypes_json_matches_code(plate):
    data = json.loads((plate / "ground_truth" / "phenotypes.json").read_text())
    assert data["control"] == CONTROL_COMPOUND and data["channels"] == CHANNELS
    assert set(data["phenotypes"]) == set(PHENOTYPES)
    for name, ph in PHENOTYPES.items():
        assert data["phenotypes"][name]["features"] == list(ph.features)


def test_phenotype_feature_names_follow_the_contract():
    from cellfusion_core.names import parse_feature

    for ph in PHENOTYPES.values():
        assert ph.features and len(set(ph.features)) == len(ph.features)
        for f in ph.features:
            parsed = parse_feature(f, channels=list(CHANNELS.values()))
            assert parsed.compartment in ("Nuclei", "Cells", "Cytoplasm")
            assert parsed.category in ("AreaShape", "Intensity")
            assert not re.search(r"Center|BoundingBoxM|SpatialMoment_(?!0_0)", f)
        assert all(f.startswith("Metadata_") for f in ph.well_features)
        assert set(ph.changes) and all(v != 1.0 for v in ph.changes.values())


# --- planted effects --------------------------------------------------------------------------

def test_enlargin_enlarges_nuclei(per_compound):
    ratio = per_compound["Enlargin"]["nuc_area"].mean() / per_compound["DMSO"]["nuc_area"].mean()
    assert ratio >= 1.3


def test_tubulor_brightens_tubulin(per_compound):
    ratio = per_compound["Tubulor"]["tub_mean"].mean() / per_compound["DMSO"]["tub_mean"].mean()
    assert ratio >= 1.3


def test_elongatin_elongates_cells(per_compound):
    diff = per_compound["Elongatin"]["ecc"].mean() - per_compound["DMSO"]["ecc"].mean()
    assert diff >= 0.08


def test_sparsin_thins_and_spreads_cells(per_compound):
    sp, dm = per_compound["Sparsin"], per_compound["DMSO"]
    assert sp["count"].mean() <= 0.7 * dm["count"].mean()
    assert sp["cell_area"].mean() >= 1.25 * dm["cell_area"].mean()


def test_effects_are_specific(per_compound):
    """Nucleus size and tubulin brightness move only with their own compound (within 20 % of
    DMSO elsewhere; sampling noise of a few small sites). Cell counts are too few at this size
    for such a check."""
    dm = {k: v.mean() for k, v in per_compound["DMSO"].items()}
    for compound in PHENOTYPES:
        for key, owner in (("nuc_area", "Enlargin"), ("tub_mean", "Tubulor")):
            if compound != owner:
                r = per_compound[compound][key].mean() / dm[key]
                assert 0.8 < r < 1.2, (compound, key, r)


def test_cells_overlap_between_classes(per_compound):
    """Per cell the classes overlap: a good share of Enlargin nuclei are no larger than the
    largest quarter of DMSO nuclei."""
    q75 = np.quantile(per_compound["DMSO"]["nuc_area"], 0.75)
    assert np.mean(per_compound["Enlargin"]["nuc_area"] <= q75) > 0.15


# --- documentation ----------------------------------------------------------------------------

def test_doc_holds_the_table_generated_from_phenotypes():
    assert phenotypes_markdown() in DOC.read_text(encoding="utf-8")
