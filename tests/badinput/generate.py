"""Generate the bad-input corpus: every way a real plate folder, platemap or model file is broken.

Nothing binary is committed: this script writes the corpus from the synthetic example plate
(:func:`profiler.synthetic.make_example_plate`) by breaking copies of its files. Run it by hand::

    python tests/badinput/generate.py /tmp/badinput      # writes the corpus and corpus.json

or import :func:`generate` (what ``tests/test_badinput.py`` does). ``corpus.json`` lists every
case: where it is, what is broken and what the tools must answer.

Layout of the corpus::

    plate/                one plate folder; wells 0–1 are good, each other well carries one fault
    platemaps/            duplicate_wells.csv, missing_wells.csv, unknown_wells.csv
    layout_csv/           a metadata-CSV layout (images.csv) whose path column points outside the plate folder
    model_pickle/         a "model folder" whose model file is a pickle (with a correct manifest)
    outside/              the file the layout CSV points at
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile

N_WELLS = 11


@dataclass
class Case:
    name: str
    kind: str            # "site" (a site of plate/), "platemap", "layout", "model"
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
    # 4: float64 pixels where 16-bit grayscale is expected
    p = f(4, 1)
    _write_tif(p, tifffile.imread(p).astype(np.float64) / 65535.0)
    site_case("float64", 4, "float64 image", "error: unsupported pixel type float64", p)
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
    # 10: a file name that is not UTF-8 (Latin-1 é): the site is refused with a message
    bad_stem = os.fsencode(f"{prefix}_{wells[10]}_s1_w").replace(prefix.encode(), prefix.encode() + b"\xe9", 1)
    try:
        for w in (1, 2, 3):
            src = f(10, w)
            os.rename(os.fsencode(src), os.path.join(os.fsencode(plate), bad_stem + f"{w}.tif".encode()))
        site_case("non_utf8_name", 10, "file names contain the byte 0xE9 (Latin-1 é)",
                  "error: file name is not valid UTF-8", plate)
    except OSError:  # a file system that refuses such names (macOS APFS, Windows): case not written
        pass

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
    (pm_dir / "unknown_wells.csv").write_text("\n".join([header, *rows, f"P24,{rest}", f"Z99,{rest}"]) + "\n")
    cases.append(Case("unknown_wells", "platemap", "platemaps/unknown_wells.csv",
                      "P24 and Z99 (not a well of a 384-well plate) have no images",
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
    from profiler.io import file_sha256

    (mdir / "manifest.json").write_text(json.dumps({
        "command": "fusion train",
        MODEL_FILES_KEY: {"model.ubj": {"format": "xgboost-ubj", "bytes": len(blob),
                                        "sha256": file_sha256(mdir / "model.ubj")}},
    }, indent=2))
    cases.append(Case("pickle_model", "model", "model_pickle/model.ubj",
                      "a pickle that creates a file when unpickled, named model.ubj, with a matching manifest",
                      "ModelFileError; the marker file is never created"))

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
