"""Self-supervised single-cell embeddings on the real BBBC021 crops: NSC / NSCB beside classical
features and a randomly initialised network.

Data: ``bbbc021/crops`` — 9,889 crops of 68 × 68 px (DAPI, tubulin, actin; uint16) with their plate,
well, compound, concentration, MoA and batch. No label is read for training.

Three per-cell representations, one protocol:

* **ssl** — :class:`fusion.cnn.ssl.SSLEmbedder` (``--method simclr`` or ``autoencoder``) trained on
  all crops (``--crops-per-epoch`` of them drawn per epoch), embeddings of every crop.
* **random_init** — the same network with its seeded random initialisation (``epochs=0``; BatchNorm
  statistics re-estimated on the crops exactly as after training): the honest floor.
* **classical** — ``profiler.measure`` on every crop. The crops are tiled into mosaics of up to
  ``--mosaic`` crops with a 2-px zero gap. Nuclei: each crop's own Otsu threshold of its
  Gaussian-smoothed (σ = 1) DAPI, holes filled, connected components (no declumping); the component
  covering most of the crop's central 5 × 5 px (else the one with its centroid nearest the centre,
  ≤ 12 px) is the crop's nucleus, the others are kept only as competing seeds. Cells: ``profiler.segment.segment_cells`` (Propagation on the actin mosaic,
  Otsu, λ = 0.05, the BBBC021 pipeline's settings) from those nuclei, competing seeds dropped;
  cytoplasm = cell − nucleus. Families AreaShape, Intensity, RadialDistribution, Texture,
  Granularity, Correlation on Nuclei, Cells and Cytoplasm (Neighbors and Location, and the
  AreaShape centre / bounding-box columns, are left out: positions in a mosaic mean nothing).
  Granularity's background removal runs on the mosaic, i.e. across neighbouring crops.
  Crops without a nucleus near the centre get no classical row (their count is printed).

Protocol for each representation: per-well mean of the cells → (``normalized``) standardised per
``Metadata_Batch`` to that batch's DMSO wells (mean / s.d.; 8 of the 55 plates hold no DMSO well, so
plates cannot be their own reference) or (``raw``) left as is → treatment profile = median of the
treatment's wells (``profiler.evaluate.treatment_profiles``) → NSC and NSCB 1-NN MoA accuracy
(cosine; ``profiler.evaluate.nsc_nscb``), each with its chance level. Classical columns that are NaN
in any well or constant are dropped first.

Printed (``benchmarks/_common.emit``): per representation × {raw, normalized} × {nsc, nscb} one
line (baseline = chance); for the SSL lines the random-init and classical values ride along; plus
training time, loss per epoch and wall time.

    nice -n 10 .venv/bin/python benchmarks/bbbc021_ssl.py --threads 1 > benchmarks/results/bbbc021_ssl.jsonl
    # quicker: --backbone resnet10t --epochs 3 --crops-per-epoch 2048
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import emit, peak_rss_mb, require_shared  # noqa: E402

CHANNELS = ("DAPI", "Tubulin", "Actin")
FAMILIES = ("AreaShape", "Intensity", "RadialDistribution", "Texture", "Granularity", "Correlation")
DMSO_QUERY = "Metadata_Compound == 'DMSO'"
log = logging.getLogger("bbbc021_ssl")


# ------------------------------------------------------------------------------------------ classical

def _tile(images: np.ndarray, pad: int = 2) -> tuple[np.ndarray, int, int]:
    """(n, h, w, C) → mosaic (rows·(h+pad)+pad, cols·(w+pad)+pad, C), zero gaps; returns (mosaic, cols, pitch)."""
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    pitch = h + pad
    out = np.zeros((rows * pitch + pad, cols * pitch + pad, c), images.dtype)
    for k in range(n):
        r, q = divmod(k, cols)
        out[pad + r * pitch: pad + r * pitch + h, pad + q * pitch: pad + q * pitch + w] = images[k]
    return out, cols, pitch


def _centre_nuclei(dapi: np.ndarray, n: int, cols: int, pitch: int, crop: int, pad: int = 2,
                   max_dist: float = 12.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Per crop its nucleus (label k + 1) and all other DAPI components as competing seeds (> n).

    Each crop is thresholded on its own (Otsu of the σ = 1 smoothed DAPI, holes filled); the crop's
    nucleus is the component covering most of the central 5 × 5 window, else the one whose centroid
    lies nearest the centre (≤ ``max_dist`` px), else none."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    binary = np.zeros(dapi.shape, bool)
    for k in range(n):
        r, q = divmod(k, cols)
        y0, x0 = pad + r * pitch, pad + q * pitch
        tile = ndi.gaussian_filter(dapi[y0:y0 + crop, x0:x0 + crop], 1.0)
        if tile.max() > tile.min():
            binary[y0:y0 + crop, x0:x0 + crop] = ndi.binary_fill_holes(tile > threshold_otsu(tile))
    lab, m = ndi.label(binary)
    lut = np.zeros(m + 1, np.int32)
    found = 0
    if m:
        idx = np.arange(1, m + 1)
        cy, cx = (np.asarray(v) for v in zip(*ndi.center_of_mass(binary, lab, idx)))
        c0 = (crop - 1) / 2
        for k in range(n):
            r, q = divmod(k, cols)
            y0, x0 = pad + r * pitch, pad + q * pitch
            lo, hi = int(c0) - 2, int(c0) + 3
            window = lab[y0 + lo:y0 + hi, x0 + lo:x0 + hi]
            labels, counts = np.unique(window[window > 0], return_counts=True)
            if len(labels):
                pick = int(labels[np.argmax(counts)])
            else:
                inside = np.unique(lab[y0:y0 + crop, x0:x0 + crop])
                inside = inside[inside > 0]
                if not len(inside):
                    continue
                d = np.hypot(cy[inside - 1] - (y0 + c0), cx[inside - 1] - (x0 + c0))
                if d.min() > max_dist:
                    continue
                pick = int(inside[np.argmin(d)])
            if lut[pick] == 0:   # a component spanning two crops cannot happen (zero gaps); guard anyway
                lut[pick] = k + 1
                found += 1
    others = np.flatnonzero(lut[1:] == 0) + 1
    seeds_lut = lut.copy()
    seeds_lut[others] = n + 1 + np.arange(len(others))
    return lut[lab], seeds_lut[lab], found


def classical_features(images: np.ndarray, chunk: int = 1024) -> tuple[pd.DataFrame, int]:
    """profiler.measure on each crop (see module doc) → (features, row i = crop i; NaN rows where no nucleus)."""
    from profiler.measure import ImageCache, measure_objects
    from profiler.segment import cytoplasm, segment_cells

    n, crop = len(images), images.shape[1]
    parts, found = [], 0
    for start in range(0, n, chunk):
        block = images[start:start + chunk]
        mosaic, cols, pitch = _tile(block)
        chans = {name: mosaic[..., i].astype(np.float64) / 65535.0 for i, name in enumerate(CHANNELS)}
        nuclei, seeds, k = _centre_nuclei(chans["DAPI"], len(block), cols, pitch, crop)
        found += k
        cells = segment_cells(nuclei, chans["Actin"], seeds=seeds, threshold_method="otsu", regularization=0.05,
                              fill_holes=True)
        cyto = cytoplasm(cells, nuclei)
        cache = ImageCache()  # the mosaic's whole-image intermediates, shared by its compartments
        tables = [measure_objects(lab, chans, compartment=comp, families=FAMILIES, n_objects=len(block),
                                  image_cache=cache)
                  for comp, lab in (("Nuclei", nuclei), ("Cells", cells), ("Cytoplasm", cyto))]
        part = pd.concat(tables, axis=1)
        present = np.zeros(len(block), bool)
        present[np.unique(nuclei[nuclei > 0]) - 1] = True
        part.loc[~present, :] = np.nan
        parts.append(part)
        log.info("classical: %d/%d crops measured (%d with a centre nucleus)", start + len(block), n, found)
    feats = pd.concat(parts, ignore_index=True)
    drop = [c for c in feats.columns if "Center_" in c or "BoundingBox" in c or "_Location_" in c]
    return feats.drop(columns=drop), found


# ------------------------------------------------------------------------------------------ protocol

def per_well(values: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Mean of the cells per plate × well; the well's Metadata_* columns kept."""
    from cellfusion_core.names import PLATE, WELL

    meta_cols = [c for c in meta.columns if str(c).startswith("Metadata_")]
    table = pd.concat([meta[meta_cols].reset_index(drop=True), values.reset_index(drop=True)], axis=1)
    grouped = table.groupby([PLATE, WELL], sort=True)
    out = grouped[list(values.columns)].mean()
    keep = [c for c in meta_cols if c not in (PLATE, WELL) and (grouped[c].nunique(dropna=False) <= 1).all()]
    return grouped[keep].first().join(out).reset_index()


def clean(wells: pd.DataFrame) -> pd.DataFrame:
    feats = [c for c in wells.columns if not str(c).startswith("Metadata_")]
    x = wells[feats]
    bad = x.columns[x.isna().any() | ~np.isfinite(x.fillna(0)).all() | (x.std() <= 1e-12)]
    return wells.drop(columns=list(bad))


def scores(wells: pd.DataFrame, normalized: bool) -> dict:
    from profiler.evaluate import nsc_nscb, treatment_profiles
    from cellfusion_core.names import BATCH
    from profiler.profiles import normalize

    wells = clean(wells)
    if normalized:
        wells = clean(normalize(wells, method="standardize", samples=DMSO_QUERY, by=BATCH))
    feats = [c for c in wells.columns if not str(c).startswith("Metadata_")]
    nsc, nscb = nsc_nscb(treatment_profiles(wells, features=feats), features=feats)
    return {"nsc": nsc, "nscb": nscb, "n_features": len(feats)}


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["simclr", "autoencoder"], default="simclr")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--crops-per-epoch", type=int, default=None, help="crops drawn per epoch (default all)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N crops (a quick check)")
    ap.add_argument("--mosaic", type=int, default=1024, help="crops per mosaic for the classical features")
    ap.add_argument("--no-classical", action="store_true")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a loaded machine)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    import torch

    from fusion.cnn.ssl import SSLEmbedder
    from fusion.data import load_crops

    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cs = load_crops(require_shared("bbbc021", "crops", "bbbc021_crops.tif"))
    if args.limit:
        cs = cs.subset(np.arange(min(args.limit, len(cs))))
    meta = cs.meta
    extra = dict(method=args.method, backbone=args.backbone, image_size=args.image_size, epochs=args.epochs,
                 crops_per_epoch=args.crops_per_epoch or len(cs), batch_size=args.batch_size, lr=args.lr,
                 temperature=args.temperature, n_crops=len(cs), threads=torch.get_num_threads(), seed=args.seed,
                 protocol="per-well mean -> treatment median -> cosine 1-NN")
    common = dict(method=args.method, backbone=args.backbone, image_size=args.image_size,
                  batch_size=args.batch_size, crops_per_epoch=args.crops_per_epoch, lr=args.lr,
                  temperature=args.temperature, device=args.device, seed=args.seed)

    reps: dict[str, pd.DataFrame] = {}
    t = time.perf_counter()
    floor = SSLEmbedder(epochs=0, **common).fit(cs.images)
    emb0 = floor.embed(cs.images)
    reps["random_init"] = per_well(pd.DataFrame(emb0, columns=[f"Embedding_{i}" for i in range(emb0.shape[1])]), meta)
    log.info("random init embedded in %.0f s", time.perf_counter() - t)

    t = time.perf_counter()
    est = SSLEmbedder(epochs=args.epochs, **common).fit(cs.images)
    train_s = time.perf_counter() - t
    emb = est.embed(cs.images)
    reps["ssl"] = per_well(pd.DataFrame(emb, columns=[f"Embedding_{i}" for i in range(emb.shape[1])]), meta)
    log.info("%s trained in %.0f s; losses %s", args.method, train_s, [round(h["loss"], 4) for h in est.history_])

    n_found = None
    if not args.no_classical:
        t = time.perf_counter()
        feats, n_found = classical_features(cs.images, args.mosaic)
        classical_s = time.perf_counter() - t
        ok = feats.notna().any(axis=1).to_numpy()
        reps["classical"] = per_well(feats[ok].reset_index(drop=True), meta[ok].reset_index(drop=True))
        log.info("classical features: %d columns in %.0f s", feats.shape[1], classical_s)
        emit("bbbc021_ssl_classical_crops_with_nucleus", int(n_found), "crops", len(cs),
             seconds=round(classical_s, 1), n_feature_columns=int(feats.shape[1]), **extra)

    results = {(name, norm): scores(wells, norm) for name, wells in reps.items() for norm in (False, True)}
    for (name, norm), res in results.items():
        for metric in ("nsc", "nscb"):
            sc = res[metric]
            if sc is None:
                continue
            side = {}
            if name == "ssl":
                side = {f"{other}_value": round(results[(other, norm)][metric].accuracy, 4)
                        for other in ("random_init", "classical") if (other, norm) in results}
            emit(f"bbbc021_ssl_{name}_{metric}_{'normalized' if norm else 'raw'}", round(sc.accuracy, 4), "fraction",
                 round(sc.chance, 4), baseline_kind="chance (random allowed neighbour)", n_queries=sc.n_queries,
                 n_features=res["n_features"], n_wells=int(len(reps[name])), **side, **extra)
    emit("bbbc021_ssl_train_time", round(train_s, 1), "s", None,
         losses=[round(h["loss"], 4) for h in est.history_], **extra)
    emit("bbbc021_ssl_wall_time", round(time.perf_counter() - t_start, 1), "s", None, **extra)
    emit("bbbc021_ssl_peak_rss", round(peak_rss_mb(), 1), "MB", None, **extra)


if __name__ == "__main__":
    main()
