"""Generate the bad-input corpus: every way a real plate folder, platemap or model file is broken.

Nothing binary is committed: this script writes the corpus from the synthetic example plate
(:func:`profiler.synthetic.make_example_plate`) by breaking copies of its files. Run it by hand::

    python tests/badinput/generate.py /tmp/badinput      # writes the corpus and corpus.json

or import :func:`generate` (what ``tests/test_badinput.py`` does). ``corpus.json`` lists every
case: where it is, what is broken and what the tools must answer.

Layout of the corpus::

    plate/                one plate folder; wells 0–1 (and 10) are good, each other well carries one fault
                          or one accepted variant (float or 8-bit pixels, a 1536-well name)
    nonutf8_plate/        wells 0–1 and well 10 whose file names hold the byte 0xE9 (not UTF-8)
    zstack_plate/         two wells whose every file is a 3-plane OME-TIFF z-stack (the middle plane is
                          the original image); pipelines/zstack_plane2.yaml picks plane 2
    platemaps/            spreadsheet exports and broken platemaps for plate/
    pipelines/            broken pipeline YAMLs (and the good zstack_plane2.yaml / zstack_plane5.yaml)
    layout_csv/           a metadata-CSV layout (images.csv) whose path column points outside the plate folder
    model_pickle/         a "model folder" whose model file is a pickle (with a correct manifest)
    model_*/              model folders written by another cellfusion version; profiles.parquet to predict
    outside/              the file the layout CSV points at
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile

N_WELLS = 24


@dataclass
class Case:
    name: str
    kind: str            # "site" (a site of plate/), "zstack", "platemap", "pipeline", "layout", "model"
    path: str            # relative to the corpus folder
    fault: str           # what is broken
    expect: str          # what the tools must answer
    well: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class _Marker:
    """Unpickling this creates the marker file: proof that a loader executed the pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_tif(path: Path, arr: np.ndarray, **kw) -> None:
    tifffile.imwrite(path, arr, **kw)


def _unit(path: Path) -> np.ndarray:
    """The image at ``path`` as float32 exactly as the reader scales 16-bit files (raw / 65535)."""
    return tifffile.imread(path).astype(np.float32) / np.float32(65535.0)


def _patch_tiff_size(path: Path, width: int, height: int) -> None:
    """Rewrite the ImageWidth/ImageLength tags of a one-page TIFF in place (its pixel data stays small)."""
    import struct

    with tifffile.TiffFile(path) as tf:
        tags = tf.pages[0].tags
        order = tf.byteorder
        spots = [(tags[name].valueoffset, tags[name].dtype, value)
                 for name, value in (("ImageWidth", width), ("ImageLength", height))]
    with open(path, "r+b") as fh:
        for offset, dtype, value in spots:
            fh.seek(offset)
            fh.write(struct.pack(order + ("I" if dtype == 4 else "H"), value))


def _more_site_cases(plate: Path, f, wells: list[str], prefix: str, size: int, site_case) -> Case:
    """Sites 11–23 of plate/ (one fault or accepted variant each) and the 1536-well site AA01."""
    # 11: float32 in [0, 1], a copy of well 0's pixels: must give exactly well 0's cells
    for w in (1, 2, 3):
        _write_tif(f(11, w), _unit(f(0, w)))
    site_case("float32_unit", 11, "all channels float32 in [0, 1]: well 0's pixels as raw / 65535",
              "accepted; the same cells and features as well 0", f(11, 1))
    # 12: float32 raw counts (not scaled to [0, 1])
    p = f(12, 2)
    _write_tif(p, tifffile.imread(p).astype(np.float32))
    site_case("float_out_of_range", 12, "channel w2 is float32 holding raw counts (up to thousands)",
              "error: float32 image has values from … outside [0, 1]", p)
    # 13: NaN pixels, 14: infinite pixels
    p = f(13, 1)
    im = _unit(p)
    im[[1, 5, 9, 20, 40], [2, 3, 50, 60, 70]] = np.nan
    _write_tif(p, im)
    site_case("nan_pixels", 13, "channel w1 is float32 in [0, 1] with 5 NaN pixels", "error: … NaN …", p)
    p = f(14, 3)
    im = _unit(p)
    im[0, :3] = np.inf
    _write_tif(p, im)
    site_case("inf_pixels", 14, "channel w3 is float32 in [0, 1] with 3 +inf pixels", "error: … 3 infinite pixel(s)", p)
    # 15: 8-bit images (every channel)
    for w in (1, 2, 3):
        _write_tif(f(15, w), (tifffile.imread(f(15, w)) >> 8).astype(np.uint8))
    site_case("uint8", 15, "every channel is 8-bit (the 16-bit values >> 8)",
              "accepted (raw / 255); the site is processed", f(15, 1))
    # 16: 32-bit unsigned integers, 17: signed 16-bit integers
    p = f(16, 1)
    _write_tif(p, tifffile.imread(p).astype(np.uint32))
    site_case("uint32", 16, "channel w1 is uint32", "error: unsupported pixel type uint32 (no agreed scale)", p)
    p = f(17, 2)
    _write_tif(p, (tifffile.imread(p) // 2).astype(np.int16))
    site_case("int16", 17, "channel w2 is signed int16", "error: unsupported pixel type int16", p)
    # 18: an OME-TIFF z-stack, 19: a multi-page TIFF (pages appended one by one)
    p = f(18, 1)
    im = tifffile.imread(p)
    _write_tif(p, np.stack([im // 2, im, im // 2]), ome=True, metadata={"axes": "ZYX"})
    site_case("ome_zstack", 18, "channel w1 is a 3-plane OME-TIFF z-stack (ZYX); no image.plane in the pipeline",
              "error: image has 3 planes (axes ZYX …); hint: image: {plane: N}", p)
    p = f(19, 2)
    im = tifffile.imread(p)
    p.unlink()
    for k in range(3):
        tifffile.imwrite(p, im, append=True)
    site_case("multipage", 19, "channel w2 is a TIFF of 3 pages appended one by one (no hyperstack metadata)",
              "error: image has 3 planes (3 pages …)", p)
    # 20: one channel 8-bit, the others 16-bit (files from different acquisitions)
    p = f(20, 3)
    _write_tif(p, (tifffile.imread(p) >> 8).astype(np.uint8))
    site_case("mixed_dtypes", 20, "channel w3 is 8-bit, w1 and w2 16-bit", "error: … different pixel types", p)
    # 21: a TIFF header that claims 60000 × 60000 pixels (3.6 gigapixels)
    p = f(21, 1)
    _patch_tiff_size(p, 60000, 60000)
    site_case("huge_image", 21, "channel w1's header says 60000×60000 pixels (6.7 GiB as 16-bit)",
              "error: image is 60000×60000 pixels …; the limit is image.max_megapixels (refused from the "
              "header, nothing allocated)", p)
    # 22: a JPEG named .tif, 23: an HTML error page named .tif (a failed download)
    from PIL import Image

    p = f(22, 2)
    Image.fromarray((tifffile.imread(p) >> 8).astype(np.uint8)).save(p, format="JPEG")
    site_case("jpeg_named_tif", 22, "channel w2 is a JPEG file named .tif", "error: not a TIFF file (a JPEG image …)", p)
    p = f(23, 3)
    p.write_text("<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n")
    site_case("html_named_tif", 23, "channel w3 is an HTML error page named .tif",
              "error: not a TIFF file (a text/HTML/XML file …)", p)
    # AA01: a 1536-well name (rows AA–AF), a copy of well 0; its platemap row is written as 'aa1'
    for w in (1, 2, 3):
        shutil.copy(f(0, w), plate / f"{prefix}_AA01_s1_w{w}.tif")
    pm = plate / "platemap.csv"
    lines = pm.read_text().splitlines()
    rest = ",".join(lines[1].split(",")[1:])
    pm.write_text("\n".join([*lines, f"aa1,{rest}"]) + "\n")
    return Case("well_1536", "site", str((plate / f"{prefix}_AA01_s1_w1.tif").relative_to(plate.parent)),
                "a 1536-well plate's well AA01 (file EXAMPLE01_AA01_s1_w1.tif, platemap row 'aa1')",
                "accepted: well AA01, the same cells as well 0", well="AA01")


def _platemap_cases(out: Path, plate: Path, wells: list[str], prefix: str, cases: list[Case]) -> None:
    """Spreadsheet exports that must read as plate/platemap.csv, and platemaps that must be refused."""
    pm_dir = out / "platemaps"
    rows = [r.split(",") for r in (plate / "platemap.csv").read_text().splitlines()]
    header, body = rows[0], rows[1:]
    assert header[:3] == ["well", "compound", "concentration"], header

    def write(name: str, text: str, *, encoding: str = "utf-8", newline: str = "\n") -> str:
        path = pm_dir / name
        path.write_bytes(text.replace("\n", newline).encode(encoding))
        return f"platemaps/{name}"

    def csv_text(hdr: list[str], rws: list[list[str]], sep: str = ",") -> str:
        return "\n".join(sep.join(r) for r in [hdr, *rws]) + "\n"

    def add(name: str, path: str, fault: str, expect: str) -> None:
        cases.append(Case(name, "platemap", path, fault, expect))

    # accepted: they must read exactly as plate/platemap.csv does
    n = len(header)
    excel = ['"' + h.capitalize() + '"' for h in header] + [""]
    excel_rows = [[r[0], f'"{r[1]}"', r[2].replace(".", ","), *r[3:], ""] for r in body]
    text = "\ufeff" + csv_text(excel, excel_rows, ";") + ";" * n + "\n" + ";" * n + "\n"
    add("excel_export", write("excel_export.csv", text, newline="\r\n"),
        "Excel 'CSV UTF-8' export: BOM, ';' separators, decimal commas, CRLF, quoted fields, capitalised "
        "headers, a trailing empty column and two trailing ';;;' rows", "read exactly as the plain platemap")
    def variant(w: str, i: int) -> str:
        m = re.fullmatch(r"([A-Za-z]+)(\d+)", w)
        row, col = m.group(1).upper(), int(m.group(2))
        return [f"{row}{col}", f"{row.lower()}{col:02d}", f"{row}{col:03d}"][i % 3]
    add("well_name_variants", write("well_name_variants.csv",
                                    csv_text(header, [[variant(r[0], i), *r[1:]] for i, r in enumerate(body)])),
        "well names written as B2, b03, B004 … (and aa1)", "read as B02, B03, B04 …, AA01")
    unit_rows = []
    for i, r in enumerate(body):
        c = float(r[2])
        unit_rows.append([r[0], r[1], [f"{c:g} µM", f"{c * 1000:g}nM", f"{c / 1000:g} mM"][i % 3], *r[3:]])
    add("concentration_units", write("concentration_units.csv", csv_text(header, unit_rows)),
        "concentrations with units: '1 µM', '1000nM', '0.001 mM'", "converted to µM: the same numbers")
    add("metadata_headers", write("metadata_headers.csv",
                                  csv_text(["Metadata_" + h.capitalize() for h in header], body)),
        "headers Metadata_Well, Metadata_Compound … (pycytominer style)", "read as well, compound …")
    add("windows_1252", write("windows_1252.csv", csv_text(header + ["note"], [[*r, "10 µM stock"] for r in body]),
                              encoding="cp1252"),
        "Windows-1252 text (Excel's plain 'CSV'), 'µ' as byte 0xB5", "read, with a warning naming the encoding")
    add("excel_unicode_text", write("excel_unicode_text.txt", csv_text(header, body, "\t"), encoding="utf-16",
                                    newline="\r\n"),
        "Excel 'Unicode Text' export: UTF-16 with a byte-order mark, tab-separated, CRLF",
        "read exactly as the plain platemap")
    # refused, each naming the platemap and (where there is one) the line
    bad = [r[:] for r in body]
    bad[2][2] = "1 mg/ml"
    add("unknown_unit", write("unknown_unit.csv", csv_text(header, bad)),
        "line 4 concentration '1 mg/ml'", "error: line 4: unknown concentration unit 'mg/ml'")
    bad = [r[:] for r in body]
    bad[1][2] = "high"
    add("concentration_not_number", write("concentration_not_number.csv", csv_text(header, bad)),
        "line 3 concentration 'high'", "error: line 3: concentration 'high' is not a number")
    bad = [r[:] for r in body]
    bad[0][2] = f"{bad[0][2]} uM"
    add("mixed_units", write("mixed_units.csv", csv_text(header, bad)),
        "line 2 has a unit (uM), the other lines none", "error: … has no unit, but line 2 has one")
    add("duplicate_column", write("duplicate_column.csv",
                                  csv_text(header + ["Compound"], [[*r, r[1]] for r in body])),
        "two compound columns ('compound' and 'Compound')", "error: platemap has column 'compound' twice")
    add("missing_column", write("missing_column.csv", csv_text([header[0]] + header[2:], [[r[0], *r[2:]] for r in body])),
        "no compound column", "error: platemap has no 'compound' column (its columns: …)")
    bad = [r[:] for r in body]
    bad[3][0] = "Well 5"
    add("bad_well_name", write("bad_well_name.csv", csv_text(header, bad)),
        "line 5 well 'Well 5'", "error: line 5: 'Well 5' is not a well name")
    bad = [r[:] for r in body]
    bad[2][1] = "Taxol, batch 2"
    add("unquoted_comma", write("unquoted_comma.csv", csv_text(header, bad)),
        "line 4 compound 'Taxol, batch 2' not quoted: one field too many", "error: line 4 has 5 fields, the header has 4")
    import zipfile

    with zipfile.ZipFile(pm_dir / "platemap.xlsx", "w") as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        z.writestr("xl/workbook.xml", '<?xml version="1.0"?><workbook/>')
    add("excel_workbook", "platemaps/platemap.xlsx", "an .xlsx workbook given as the platemap",
        "error: platemap is an Excel workbook, not a CSV file; hint: Save As CSV UTF-8")


PIPELINE = """name: {name}
layout: {{preset: imagexpress}}
channels:
  - {{name: DNA, file: w1, role: nuclei}}
  - {{name: Tubulin, file: w2, role: {cells_role}}}
  - {{name: Actin, file: w3}}
{image}illumination: {{enabled: false}}
segmentation:
  nuclei:
    threshold_method: otsu
    threshold_smoothing_scale: 1.3488
    {diam_key}: {min_diameter}
    max_diameter: 45
    declump: shape
    dividing_lines: shape
    low_res_maxima: false
  cells:
    threshold_method: otsu
    threshold_correction: 0.6
    regularization: 0.05
    threshold_bounds: {bounds}
qc: {{outlier_z: 3.0, min_sites: 5}}
features:
  families: [AreaShape, {family}]
profiles:
  aggregate: median
  normalize: mad_robustize
  feature_select: [variance_threshold, drop_na_columns]
"""


def pipeline_text(name: str, **over: str) -> str:
    """The built-in example pipeline measuring two feature families (fast), as YAML text, with fields
    replaced by ``over``; ``pipelines/fast.yaml`` is the unchanged text (what the plate is run with)."""
    fields = {"name": name, "cells_role": "cells", "image": "", "diam_key": "min_diameter", "min_diameter": "12",
              "bounds": "[0.0, 1.0]", "family": "Intensity", **over}
    return PIPELINE.format(**fields)


def _pipeline_cases(out: Path, cases: list[Case]) -> None:
    pdir = out / "pipelines"
    pdir.mkdir()

    def add(name: str, text: str, fault: str, expect: str) -> None:
        (pdir / f"{name}.yaml").write_text(text)
        cases.append(Case(f"pipeline_{name}", "pipeline", f"pipelines/{name}.yaml", fault, expect))

    good = pipeline_text("fast")
    (pdir / "fast.yaml").write_text(good)
    add("yaml_syntax", good.replace("  families: [AreaShape, Intensity]", "  families: [AreaShape, Intensity"),
        "an unclosed '[' in features.families", "error: not valid YAML (… line …)")
    add("tab_indent", good.replace("    threshold_method: otsu", "\tthreshold_method: otsu"),
        "a tab used for indentation", "error: not valid YAML (… tab …)")
    add("unknown_family", pipeline_text("x", family="Intensty"),
        "feature family 'Intensty'", "error: unknown feature family 'Intensty'; hint: did you mean 'Intensity'?")
    add("unknown_parameter", pipeline_text("x", diam_key="min_diamter"),
        "segmentation.nuclei.min_diamter", "error: unknown segmentation.nuclei key 'min_diamter'; hint: did you mean …")
    add("unknown_section", good.replace("segmentation:", "segmentaton:"),
        "top-level key 'segmentaton'", "error: unknown top-level keys: ['segmentaton']; hint: did you mean 'segmentation'?")
    add("negative_diameter", pipeline_text("x", min_diameter="-5"),
        "min_diameter: -5", "error: segmentation.nuclei.min_diameter must be > 0, got -5")
    add("bounds_reversed", pipeline_text("x", bounds="[0.8, 0.2]"),
        "threshold_bounds: [0.8, 0.2]", "error: … threshold_bounds must satisfy 0 ≤ lower < upper ≤ 1 … (reversed)")
    add("wrong_type", pipeline_text("x", min_diameter="big"),
        "min_diameter: big", "error: segmentation.nuclei.min_diameter must be a number, got 'big'")
    add("no_cells_role", pipeline_text("x", cells_role="other"),
        "no channel has role cells", "error: no channel has role 'cells'")
    add("bad_plane", pipeline_text("x", image="image: {plane: 0}\n"),
        "image.plane: 0 (planes count from 1)", "error: image.plane must be a whole number ≥ 1")
    add("not_a_mapping", "- DNA\n- Tubulin\n", "the YAML is a list", "error: a pipeline must be a YAML mapping")


def _zstack_cases(out: Path, f, wells: list[str], prefix: str, cases: list[Case]) -> None:
    """zstack_plate/: wells 0 and 1 as 3-plane z-stacks (middle plane = the original image)."""
    zdir = out / "zstack_plate"
    zdir.mkdir()
    for i in (0, 1):
        for w in (1, 2, 3):
            im = tifffile.imread(f(i, w))
            _write_tif(zdir / f(i, w).name, np.stack([im // 2, im, im // 3]), ome=True, metadata={"axes": "ZYX"})
    pm = (out / "plate" / "platemap.csv").read_text().splitlines()
    (zdir / "platemap.csv").write_text("\n".join([pm[0], *[r for r in pm[1:] if r.split(",")[0] in wells[:2]]]) + "\n")
    for plane in (2, 5):
        (out / "pipelines" / f"zstack_plane{plane}.yaml").write_text(
            pipeline_text(f"zstack_plane{plane}", image=f"image: {{plane: {plane}}}\n"))
    cases.append(Case("zstack_plane", "zstack", "pipelines/zstack_plane2.yaml",
                      "every file a 3-plane OME-TIFF; the pipeline says image: {plane: 2}",
                      "processed from plane 2: the same cells as the 2-D originals"))
    cases.append(Case("zstack_plane_out_of_range", "zstack", "pipelines/zstack_plane5.yaml",
                      "image: {plane: 5} for 3-plane files",
                      "error records '… has 3 plane(s), but the pipeline asks for image.plane = 5'; "
                      "error: no site yielded any cells, exit 2"))


def _model_cases(out: Path, cases: list[Case]) -> None:
    """Model folders from another cellfusion version, and a profile table to predict with them."""
    import pandas as pd

    from fusion.modelio import MODEL_FILES_KEY, MODEL_FORMAT_KEY
    from cellfusion_core.io import file_sha256

    def folder(name: str, manifest: dict, files: dict[str, bytes]) -> Path:
        d = out / name
        d.mkdir()
        for fname, data in files.items():
            (d / fname).write_bytes(data)
        (d / "manifest.json").write_text(json.dumps(manifest, indent=2))
        return d

    blob = json.dumps({"learner": {}, "version": [1, 7, 0]}).encode()
    entry = {"format": "xgboost-json", "bytes": len(blob), "sha256": None}
    d = folder("model_newer_format", {"command": "fusion train", MODEL_FORMAT_KEY: 2,
                                      "versions": {"cellfusion": "9.0.0"},
                                      MODEL_FILES_KEY: {"gbm.ubj": entry}}, {"gbm.ubj": blob})
    _fix_sha(d, "gbm.ubj", file_sha256)
    cases.append(Case("model_newer_format", "model", "model_newer_format",
                      "manifest says model_format 2, written by cellfusion 9.0.0",
                      "error: model folder has format 2, this cellfusion reads format 1 (written by cellfusion 9.0.0 …)"))
    d = folder("model_old_layout", {"command": "fusion train", "versions": {"cellfusion": "0.0.1"},
                                    MODEL_FILES_KEY: {"xgb_model.json": dict(entry, format="xgboost-json")}},
               {"xgb_model.json": blob})
    _fix_sha(d, "xgb_model.json", file_sha256)
    cases.append(Case("model_old_layout", "model", "model_old_layout",
                      "an older version's folder: model file xgb_model.json, no gbm.ubj; cellfusion 0.0.1",
                      "error: gbm.ubj is not listed in manifest.json (it lists: xgb_model.json) (written by "
                      "cellfusion 0.0.1 …)"))
    folder("model_no_files_key", {"command": "fusion train", "model": "model.json"}, {"model.json": blob})
    cases.append(Case("model_no_files_key", "model", "model_no_files_key",
                      "a manifest without model_files and without versions (written before manifests listed files)",
                      "error: manifest.json lists no model files …; it records no cellfusion version"))
    # a real XGBoost model file beside a gbm.json in an older schema ("nfeat" where this version reads
    # "n_features"): the file verifies and loads, then the configuration lacks a key
    import numpy as _np
    import xgboost as xgb

    booster = xgb.train({"objective": "binary:logistic", "max_depth": 1},
                        xgb.DMatrix(_np.array([[0.0], [1.0], [0.0], [1.0]]), label=[0, 1, 0, 1]), num_boost_round=1)
    gbm = bytes(booster.save_raw(raw_format="ubj"))
    cfg = json.dumps({"params": {}, "classes": ["a", "b"], "feature_names": ["Cells_AreaShape_Area"],
                      "nfeat": 1}).encode()
    folder("model_config_schema", {"command": "fusion train", "versions": {"cellfusion": "0.0.1"},
                                   MODEL_FILES_KEY: {n: {"format": f, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                                                     for n, f, b in (("gbm.ubj", "xgboost-ubj", gbm),
                                                                     ("gbm.json", "json", cfg))}},
           {"gbm.ubj": gbm, "gbm.json": cfg})
    cases.append(Case("model_config_schema", "model", "model_config_schema",
                      "an older version's gbm.json ('nfeat' instead of 'n_features'); valid XGBoost file and hashes",
                      "error: gbm.json: model file has no n_features entry (written by cellfusion 0.0.1 …)"))
    pd.DataFrame({"Metadata_Plate": ["P"], "Metadata_Well": ["B02"], "Cells_AreaShape_Area": [1.0]}).to_parquet(
        out / "profiles.parquet")


def _fix_sha(d: Path, name: str, file_sha256) -> None:
    m = json.loads((d / "manifest.json").read_text())
    m["model_files"][name]["sha256"] = file_sha256(d / name)
    (d / "manifest.json").write_text(json.dumps(m, indent=2))


def generate(out_dir: str | Path, *, size: int = 128, seed: int = 0) -> dict[str, Case]:
    """Write the corpus under ``out_dir``; returns case name → :class:`Case` (also in corpus.json)."""
    from profiler.synthetic import make_example_plate

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; give a new folder")
    plate = make_example_plate(out / "plate", n_wells=N_WELLS, n_sites=1, size=size, seed=seed,
                               write_truth=False)
    files = sorted(plate.glob("*_w1.tif"))
    prefix = files[0].name.split("_")[0]
    wells = [f.name.split("_")[1] for f in files]

    def f(i: int, w: int) -> Path:
        return plate / f"{prefix}_{wells[i]}_s1_w{w}.tif"

    cases: list[Case] = []

    def site_case(name: str, i: int, fault: str, expect: str, path: Path) -> None:
        cases.append(Case(name, "site", str(path.relative_to(out)), fault, expect, well=wells[i]))

    # 2: a TIFF cut off in the middle of its pixel data
    p = f(2, 2)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    site_case("truncated_tiff", 2, "TIFF truncated to a third of its bytes", "error: cannot read image", p)
    # 3: an empty file
    p = f(3, 1)
    p.write_bytes(b"")
    site_case("zero_byte", 3, "zero-byte file", "error: cannot read image", p)
    # 4: float64 pixels in [0, 1] (raw / 65535): read as intensities already on CellProfiler's scale
    for w in (1, 2, 3):
        _write_tif(f(4, w), tifffile.imread(f(4, w)).astype(np.float64) / 65535.0)
    site_case("float64_unit", 4, "every channel float64 with values in [0, 1] (raw / 65535)",
              "accepted as intensities on [0, 1] (CellProfiler's reading); the site is processed", f(4, 1))
    # 5: an RGB image
    p = f(5, 3)
    g = (tifffile.imread(p) >> 8).astype(np.uint8)
    _write_tif(p, np.stack([g, g, g], axis=-1), photometric="rgb")
    site_case("rgb", 5, "RGB image", "error: expected a 2-D grayscale image", p)
    # 6: one channel of another size
    p = f(6, 2)
    _write_tif(p, tifffile.imread(p)[: size // 2])
    site_case("different_shapes", 6, "channel w2 is half as tall as w1 and w3", "error: different shapes", p)
    # 7: a missing channel
    p = f(7, 3)
    p.unlink()
    site_case("missing_channel", 7, "no w3 file", "incomplete: missing channel(s): Actin", p)
    # 8: an all-zero field, 9: a saturated field (all channels)
    for i, value, name in ((8, 0, "all_zero"), (9, 65535, "saturated")):
        for w in (1, 2, 3):
            _write_tif(f(i, w), np.full((size, size), value, np.uint16))
        site_case(name, i, f"every pixel of every channel is {value}",
                  "a record with no cells (not a crash)", f(i, 1))
    # 10: a file name that is not UTF-8 (Latin-1 é): the site is refused with a message. It lives in its
    # own folder (with copies of the good wells 0 and 1): its plate name differs (EXAMPLE01\xe9).
    ndir = out / "nonutf8_plate"
    ndir.mkdir()
    for i in (0, 1):
        for w in (1, 2, 3):
            shutil.copy(f(i, w), ndir / f(i, w).name)
    pm_lines = (plate / "platemap.csv").read_text().splitlines()
    (ndir / "platemap.csv").write_text("\n".join([pm_lines[0], *[r for r in pm_lines[1:]
                                                               if r.split(",")[0] in wells[:2] + [wells[10]]]]) + "\n")
    bad_stem = os.fsencode(f"{prefix}_{wells[10]}_s1_w").replace(prefix.encode(), prefix.encode() + b"\xe9", 1)
    try:
        for w in (1, 2, 3):
            shutil.copy(f(10, w), os.path.join(os.fsencode(ndir), bad_stem + f"{w}.tif".encode()))
        cases.append(Case("non_utf8_name", "site", "nonutf8_plate", "file names contain the byte 0xE9 (Latin-1 é)",
                          "error: file name is not valid UTF-8", well=wells[10]))
    except OSError:  # a file system that refuses such names (macOS APFS, Windows): case not written
        pass

    cases.append(_more_site_cases(plate, f, wells, prefix, size, site_case))

    # platemaps
    pm_dir = out / "platemaps"
    pm_dir.mkdir()
    good = (plate / "platemap.csv").read_text().splitlines()
    header, rows = good[0], good[1:]
    (pm_dir / "duplicate_wells.csv").write_text("\n".join([header, *rows, rows[0]]) + "\n")
    cases.append(Case("duplicate_wells", "platemap", "platemaps/duplicate_wells.csv",
                      f"well {rows[0].split(',')[0]} listed twice", "InputError before any work: more than once"))
    missing = [r for r in rows if not r.startswith(wells[1] + ",")]
    (pm_dir / "missing_wells.csv").write_text("\n".join([header, *missing]) + "\n")
    cases.append(Case("missing_wells", "platemap", "platemaps/missing_wells.csv",
                      f"{wells[1]} has images but no platemap row",
                      "InputError before any work, naming the well", well=wells[1]))
    rest = ",".join(rows[0].split(",")[1:])
    (pm_dir / "unknown_wells.csv").write_text("\n".join([header, *rows, f"P24,{rest}", f"AF48,{rest}"]) + "\n")
    cases.append(Case("unknown_wells", "platemap", "platemaps/unknown_wells.csv",
                      "P24 and AF48 (the last wells of a 384- and a 1536-well plate) have no images",
                      "a warning naming both; listed in manifest.json; the plate is processed"))

    # a metadata-CSV layout (one row per site, one file column per channel) escaping the plate folder
    (out / "outside").mkdir()
    outside = out / "outside" / "secret.tif"
    shutil.copy(f(0, 1), outside)
    lay = out / "layout_csv"
    lay.mkdir()
    for i in (0, 1):
        for w in (1, 2, 3):
            shutil.copy(f(i, w), lay / f(i, w).name)
            shutil.copy(f(i, w), lay / f(i, w).name.replace(f"_{wells[i]}_", f"_G0{i + 2}_"))
    lines = [f"{prefix},{wells[0]},1,{f(0, 1).name},{f(0, 2).name},{f(0, 3).name}",
             f"{prefix},{wells[1]},1,{f(1, 1).name},{f(1, 2).name},{f(1, 3).name}",
             f"{prefix},G02,1,{f(0, 1).name.replace(wells[0], 'G02')},{f(0, 2).name.replace(wells[0], 'G02')},"
             f"{f(0, 3).name.replace(wells[0], 'G02')}",
             f"{prefix},G03,1,../outside/secret.tif,{f(1, 2).name.replace(wells[1], 'G03')},"
             f"{f(1, 3).name.replace(wells[1], 'G03')}"]
    (lay / "images.csv").write_text(
        "Metadata_Plate,Metadata_Well,Metadata_Site,Image_FileName_DNA,Image_FileName_Tubulin,Image_FileName_Actin\n"
        + "\n".join(lines) + "\n")
    pm_rows = [r for r in rows if r.split(",")[0] in wells[:2]]
    pm_rows += [r.replace(wells[0], "G02", 1).replace(wells[1], "G03", 1) for r in pm_rows]
    (lay / "platemap.csv").write_text("\n".join([header, *pm_rows]) + "\n")
    cases.append(Case("path_outside_plate", "layout", "layout_csv/images.csv",
                      "the DNA file of well G03 is ../outside/secret.tif (the three other rows are good)",
                      "error record: file lies outside the plate folder; the good rows are processed",
                      well="G03"))

    # a model folder whose model file is a pickle, named like an XGBoost file, with a correct manifest
    mdir = out / "model_pickle"
    mdir.mkdir()
    marker = out / "model_pickle_was_executed"
    blob = pickle.dumps(_Marker(str(marker)), protocol=4)
    (mdir / "model.ubj").write_bytes(blob)
    from fusion.modelio import MODEL_FILES_KEY
    from cellfusion_core.io import file_sha256

    (mdir / "manifest.json").write_text(json.dumps({
        "command": "fusion train",
        MODEL_FILES_KEY: {"model.ubj": {"format": "xgboost-ubj", "bytes": len(blob),
                                        "sha256": file_sha256(mdir / "model.ubj")}},
    }, indent=2))
    cases.append(Case("pickle_model", "model", "model_pickle/model.ubj",
                      "a pickle that creates a file when unpickled, named model.ubj, with a matching manifest",
                      "ModelFileError; the marker file is never created"))

    _platemap_cases(out, plate, wells, prefix, cases)
    _pipeline_cases(out, cases)
    _zstack_cases(out, f, wells, prefix, cases)
    _model_cases(out, cases)

    by_name = {c.name: c for c in cases}
    (out / "corpus.json").write_text(json.dumps(
        {"cases": [c.to_dict() for c in cases], "good_wells": wells[:2], "marker": marker.name}, indent=2) + "\n")
    return by_name


def corpus_size(out_dir: str | Path) -> tuple[int, int]:
    """(number of files, bytes) under ``out_dir``."""
    files = [p for p in Path(out_dir).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/badinput/generate.py OUT_DIR")
    made = generate(sys.argv[1])
    n_files, n_bytes = corpus_size(sys.argv[1])
    print(f"{len(made)} cases, {n_files} files, {n_bytes / 1e6:.2f} MB in {sys.argv[1]}")
