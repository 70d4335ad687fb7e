"""XGBoost, the CNN and their stack on real BBBC021: treatment-level MoA accuracy beside baselines.

Part ``ljosa`` — the Ljosa et al. (2013) per-well mean profiles
(``bbbc021/ljosa2013_per_well_mean.csv.gz`` + ``BBBC021_v1_image.csv.gz`` + ``BBBC021_v1_moa.csv``):
wells normalized per plate to their DMSO wells (pycytominer mad_robustize), annotated non-control
wells only; XGBoost with leave-one-compound-out (every compound is predicted by a model that never saw
it); a treatment (compound × concentration) is called by its wells' mean probabilities. Printed beside
the majority-MoA baseline and the 1-NN NSC accuracy of :mod:`profiler.evaluate` on the same profiles.

Part ``crops`` — the design's fusion on the real BBBC021 single-cell crops (``bbbc021/crops``, 68×68,
DNA/Tubulin/Actin; the first ``--max-cells-per-well`` crops of each well, default 20): nucleus and
cell segmented inside each crop with :func:`profiler.segment.segment_site`, the object at the crop's
centre measured with :func:`profiler.measure.measure_objects` (AreaShape, Intensity, Texture,
Correlation, RadialDistribution per compartment), medians per well, normalized per batch (week; not
every plate of the crop set keeps a DMSO well) to DMSO. Then, for each fold seed (``--seeds``,
default 0 1 2; StratifiedGroupKFold over compounds, DMSO wells grouped by plate), on the same folds
(:mod:`fusion.chain`): ``gbm`` — XGBoost on the well profiles; inside each fold the CNN ensemble
(:class:`fusion.cnn.ensemble.CNNEnsemble`, CPU-sized: the ``cpu`` preset with the ``--cnn-*``
overrides) trained on the training wells' crops only, which embeds every crop; ``gbm_embeddings`` —
XGBoost on the profiles + per-well mean embeddings; ``cnn`` — its soft vote per well; ``stack`` —
:mod:`fusion.stack`'s default meta-learner on the three models' out-of-fold probabilities, itself
evaluated out of fold on the same folds. Treatment-level MoA accuracy over the non-control
treatments with a bootstrap 95 % CI (treatments resampled), beside the majority baseline; then the
mean over the seeds and the two targets (``gbm_embeddings`` over ``gbm``; the stack ≥ 5 points over
the best single model on the mean, ≥ 2 in each seed).

    nice -n 10 .venv/bin/python benchmarks/bbbc021_fusion.py --part all | tee benchmarks/results/bbbc021_fusion.jsonl
    .venv/bin/python benchmarks/bbbc021_fusion.py --part crops --cnn-size 32 --cnn-epochs 4 --cnn-per-class 100

Per-crop features are cached (``--cache``, default ``~/.cache/cellfusion/bbbc021_crop_features_{n}.parquet``):
measuring is ~0.5 CPU-s per crop, so the first run of a ``--max-cells-per-well`` value pays it once.
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
from fusion.cnn.ensemble import CNNEnsemble  # noqa: E402
from fusion.cnn.presets import PRESETS  # noqa: E402

log = logging.getLogger("bbbc021_fusion")
CHANNELS = ("DNA", "Tubulin", "Actin")
FAMILIES = ("AreaShape", "Intensity", "Texture", "Correlation", "RadialDistribution")


# --------------------------------------------------------------------------------------- shared
def _normalize(wells: pd.DataFrame, by: str = "Metadata_Plate") -> pd.DataFrame:
    """mad_robustize to the DMSO wells of each ``by`` group (plate; batch where plates lack DMSO)."""
    from cellfusion_core.names import CONTROL, feature_columns
    from profiler.profiles import normalize

    wells = wells.copy()
    wells[CONTROL] = np.where(wells["Metadata_Compound"] == "DMSO", "negative", "")
    out = normalize(wells, method="mad_robustize", by=by)
    feats = feature_columns(out)
    x = out[feats].replace([np.inf, -np.inf], np.nan)
    keep = [f for f in feats if x[f].notna().mean() > 0.95 and x[f].std() > 0]
    out[keep] = x[keep].fillna(0.0).clip(-50, 50)
    return out.drop(columns=[f for f in feats if f not in keep])


def _treatment_accuracy(y: np.ndarray, proba: np.ndarray, classes: np.ndarray, treatment: np.ndarray,
                        mask: np.ndarray) -> tuple[float, int]:
    from fusion.metrics import treatment_level

    ty, tpred, _ = treatment_level(y[mask], proba[mask], classes, treatment[mask])
    return float(np.mean(ty == tpred)), len(ty)


# --------------------------------------------------------------------------------------- ljosa
def ljosa(args) -> None:
    from fusion.gbm import GBMClassifier
    from profiler.evaluate import nsc_nscb, treatment_profiles
    from cellfusion_core.names import feature_columns

    base = require_shared("bbbc021")
    t0 = time.perf_counter()
    prof = pd.read_csv(base / "ljosa2013_per_well_mean.csv.gz")
    prof = prof.rename(columns={"Image_Metadata_Plate": "Metadata_Plate", "Image_Metadata_Well": "Metadata_Well"})
    img = pd.read_csv(base / "BBBC021_v1_image.csv.gz")
    img = img.rename(columns={"Image_Metadata_Plate_DAPI": "Metadata_Plate", "Image_Metadata_Well_DAPI": "Metadata_Well",
                              "Image_Metadata_Compound": "Metadata_Compound",
                              "Image_Metadata_Concentration": "Metadata_Concentration"})
    img = img[["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration"]].drop_duplicates(
        ["Metadata_Plate", "Metadata_Well"])
    moa = pd.read_csv(base / "BBBC021_v1_moa.csv").rename(
        columns={"compound": "Metadata_Compound", "concentration": "Metadata_Concentration", "moa": "Metadata_MoA"})
    prof = img.merge(prof, on=["Metadata_Plate", "Metadata_Well"], how="inner")
    prof = prof.merge(moa, on=["Metadata_Compound", "Metadata_Concentration"], how="left")
    prof["Metadata_Batch"] = prof["Metadata_Plate"].str.split("_").str[0]
    drop = [c for c in feature_columns(prof) if "Location" in c or "Center" in c or "Number" in c
            or not pd.api.types.is_numeric_dtype(prof[c])]
    prof = _normalize(prof.drop(columns=drop))
    ann = prof[prof["Metadata_MoA"].notna()].reset_index(drop=True)
    feats = feature_columns(ann)

    # NSC on the same normalized profiles (treatment medians)
    nsc, nscb = nsc_nscb(treatment_profiles(ann, features=feats), features=feats)

    # XGBoost, leave-one-compound-out, non-control wells
    wells = ann[ann["Metadata_Compound"] != "DMSO"].reset_index(drop=True)
    y = wells["Metadata_MoA"].astype(str).to_numpy()
    comp = wells["Metadata_Compound"].astype(str).to_numpy()
    treatment = (wells["Metadata_Compound"].astype(str) + "@" + wells["Metadata_Concentration"].astype(str)).to_numpy()
    classes = np.unique(y)
    proba = np.zeros((len(y), len(classes)))
    base_pred = np.empty(len(y), dtype=object)
    X = wells[feats].astype(np.float32)
    for i, c in enumerate(np.unique(comp)):
        te = comp == c
        tr = ~te
        est = GBMClassifier(n_estimators=args.rounds, learning_rate=args.lr, random_state=args.seed).fit(X[tr], y[tr])
        p = est.predict_proba(X[te])
        for j, k in enumerate(est.classes_):
            proba[te, np.searchsorted(classes, k)] = p[:, j]
        # majority baseline: the training treatments' most frequent MoA
        tt = pd.Series(y[tr]).groupby(treatment[tr]).first()
        base_pred[te] = tt.value_counts().index[0]
        log.info("ljosa LOCO %d/%d %s", i + 1, len(np.unique(comp)), c)
    acc, n_t = _treatment_accuracy(y, proba, classes, treatment, np.ones(len(y), bool))
    tb = pd.DataFrame({"t": treatment, "y": y, "b": base_pred}).groupby("t").first()
    base_acc = float(np.mean(tb["y"] == tb["b"]))
    extra = dict(xgb_rounds=args.rounds, xgb_lr=args.lr, n_wells=len(wells), n_treatments=n_t, n_compounds=int(len(np.unique(comp))), n_moas=len(classes),
                 n_features=len(feats), cv="leave-one-compound-out", seconds=round(time.perf_counter() - t0, 1))
    emit("bbbc021_ljosa_xgb_loco_treatment_moa_accuracy", round(acc, 4), "fraction", round(base_acc, 4),
         baseline_kind="majority MoA", nsc_1nn=round(nsc.accuracy, 4), nsc_chance=round(nsc.chance, 4),
         nscb_1nn=None if nscb is None else round(nscb.accuracy, 4), **extra)
    emit("bbbc021_ljosa_nsc_1nn_treatment_moa_accuracy", round(nsc.accuracy, 4), "fraction", round(nsc.chance, 4),
         baseline_kind="chance (random allowed neighbour)", n_treatments=nsc.n_queries, n_features=len(feats))


# --------------------------------------------------------------------------------------- crops
def _central_object(labels: np.ndarray) -> int:
    h, w = labels.shape
    v = int(labels[h // 2, w // 2])
    if v:
        return v
    ii, jj = np.nonzero(labels)
    if not len(ii):
        return 0
    k = np.argmin((ii - h / 2) ** 2 + (jj - w / 2) ** 2)
    return int(labels[ii[k], jj[k]])


def crop_features(images: np.ndarray, seg_params: dict) -> pd.DataFrame:
    """One row of features per crop (the object at the centre); NaN rows where nothing was found."""
    from rich.progress import Progress

    from profiler.measure import ImageCache, measure_objects
    from profiler.segment import segment_site

    rows: list[dict] = []
    with Progress() as bar:
        task = bar.add_task("measuring crops", total=len(images))
        for crop in images:
            im = {k: crop[..., i].astype(np.float32) / 65535 for i, k in enumerate(CHANNELS)}
            seg = segment_site(im, nuclei_channel="DNA", cells_channel="Actin", params=seg_params)
            obj = _central_object(seg.nuclei)
            row: dict = {}
            if obj:
                cache = ImageCache()  # the crop's whole-image intermediates, shared by its compartments
                for comp, lab in (("Nuclei", seg.nuclei), ("Cells", seg.cells), ("Cytoplasm", seg.cytoplasm)):
                    df = measure_objects(lab, im, compartment=comp, families=FAMILIES, n_objects=seg.n_objects,
                                         image_cache=cache)
                    row.update(df.iloc[obj - 1].to_dict())
            rows.append(row)
            bar.advance(task)
    return pd.DataFrame(rows)


def _crop_wells(args):
    """The crop set (first N crops per well), its per-well profiles (normalized) and the feature names."""
    from fusion.data import load_crops
    from cellfusion_core.names import feature_columns
    from profiler.profiles import aggregate

    path = require_shared("bbbc021", "crops", "bbbc021_crops.tif")
    cs = load_crops(path)
    if args.max_cells_per_well:
        # the first N crops of every well (a fixed, seed-free subset) to bound the measuring time
        rank = cs.meta.groupby(["Metadata_Plate", "Metadata_Well"]).cumcount().to_numpy()
        cs = cs.subset(np.flatnonzero(rank < args.max_cells_per_well))
    meta = cs.meta.reset_index(drop=True)
    cache = Path(args.cache.format(n=args.max_cells_per_well or "all")).expanduser()
    if cache.is_file():
        feats_df = pd.read_parquet(cache)
        log.info("crop features from cache %s", cache)
    else:
        feats_df = crop_features(cs.images, {"nuclei": {"min_diameter": 8, "max_diameter": 60}})
        cache.parent.mkdir(parents=True, exist_ok=True)
        from cellfusion_core.io import write_parquet

        write_parquet(feats_df, cache)
    feats_df = feats_df.replace([np.inf, -np.inf], np.nan)  # e.g. FormFactor of a zero-perimeter cytoplasm
    found = feats_df.notna().any(axis=1).to_numpy()
    keys = ["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]
    sc = pd.concat([meta[keys], feats_df], axis=1)[found].reset_index(drop=True)
    wells = aggregate(sc, operation="median")
    # the crop set's wells: not every plate keeps a DMSO well, so normalize per batch (week)
    wells["Metadata_Batch"] = wells["Metadata_Plate"].astype(str).str.split("_").str[0]
    wells = _normalize(wells, by="Metadata_Batch").sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
    feats = [f for f in feature_columns(wells) if "Location" not in f]
    return cs, wells, feats, int(found.sum())


def _treatment_ci(y, proba, classes, treatment, mask, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95 % CI of the treatment-level accuracy (treatments resampled)."""
    from fusion.metrics import bootstrap_ci, treatment_level

    ty, tpred, _ = treatment_level(y[mask], proba[mask], classes, treatment[mask])
    return bootstrap_ci(ty, tpred, None, classes, "accuracy", n_boot=n_boot, seed=seed)


def crops(args) -> None:
    """The design's chain on the real crops, per fold seed: gbm, gbm_embeddings, cnn, stack (+ majority)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from fusion.chain import BASE_MODELS, chain_out_of_fold, match_crops
    from fusion.gbm import GBMClassifier
    from fusion.oof import cross_val_proba, fold_index
    from fusion.stack import meta_out_of_fold_proba, stack_inputs

    t0 = time.perf_counter()
    cs, wells, feats, n_measured = _crop_wells(args)
    t_feat = time.perf_counter() - t0
    y = wells["Metadata_MoA"].astype(str).to_numpy()
    comp = wells["Metadata_Compound"].astype(str).to_numpy()
    groups = np.where(comp == "DMSO", "DMSO|" + wells["Metadata_Plate"].astype(str).to_numpy(), comp)
    treatment = (wells["Metadata_Compound"].astype(str) + "@" + wells["Metadata_Concentration"].astype(str)).to_numpy()
    classes = np.unique(y)
    treated = comp != "DMSO"
    X = wells[feats].astype(np.float32)
    cell_row, keys = match_crops(cs.meta, wells)
    keep = cell_row >= 0
    images, cell_row = cs.images[keep], cell_row[keep]
    overrides = {"image_size": args.cnn_size, "epochs": args.cnn_epochs, "target_per_class": args.cnn_per_class,
                 "backbones": args.cnn_backbone}
    base_cnn = {**PRESETS["cpu"], **{k: v for k, v in overrides.items() if v is not None}, "device": "cpu"}
    extra = dict(max_cells_per_well=args.max_cells_per_well, xgb_rounds=args.rounds, xgb_lr=args.lr,
                 n_wells=len(wells), n_cells=int(len(images)), n_cells_measured=n_measured, n_features=len(feats),
                 folds=args.folds, cv="StratifiedGroupKFold by compound (DMSO wells by plate)",
                 cnn={k: v for k, v in base_cnn.items() if k != "dropouts"}, feature_seconds=round(t_feat, 1))
    accs: dict[str, list[float]] = {m: [] for m in (*BASE_MODELS, "stack", "majority")}
    for seed in args.seeds:
        t = time.perf_counter()
        cv = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=seed)
        splits = list(cv.split(np.zeros(len(y)), y, groups))
        fold = fold_index(splits, len(y))

        def make_gbm(seed=seed):
            return GBMClassifier(n_estimators=args.rounds, learning_rate=args.lr, random_state=seed)

        saved = _load_base_oof(args.base_oof.format(seed=seed), y, classes, treatment, fold) if args.base_oof else None
        if saved is not None:
            results = dict(saved)
        else:
            results = {"gbm": cross_val_proba(make_gbm(), X, y, classes, splits, groups=groups)}
            results.update(chain_out_of_fold(lambda: CNNEnsemble(**base_cnn, seed=seed), make_gbm, wells, X, y,
                                             groups, classes, splits, images, cell_row, keys,
                                             progress=lambda: log.info("seed %d: a fold of the chain done", seed)))
            if args.save_oof:
                np.savez_compressed(Path(args.save_oof.format(seed=seed)).expanduser(), y=y.astype(str),
                                    classes=classes.astype(str), treatment=treatment.astype(str),
                                    compound=comp.astype(str), fold=fold, **{b: results[b] for b in BASE_MODELS})
        results["stack"] = meta_out_of_fold_proba(stack_inputs({b: results[b] for b in BASE_MODELS}, classes), y,
                                                  classes, splits)
        majority = np.empty(len(y), dtype=object)
        for tr, te in splits:
            majority[te] = pd.Series(y[tr]).value_counts().index[0]
        results["majority"] = (majority[:, None] == classes[None, :]).astype(float)
        seconds = round(time.perf_counter() - t, 1)
        for name, p in results.items():
            acc, n_t = _treatment_accuracy(y, p, classes, treatment, treated)
            accs[name].append(acc)
            if name == "majority":
                continue
            lo, hi = _treatment_ci(y, p, classes, treatment, treated, seed=seed)
            emit(f"bbbc021_crops_{name}_treatment_moa_accuracy", round(acc, 4), "fraction",
                 round(_treatment_accuracy(y, results["majority"], classes, treatment, treated)[0], 4),
                 baseline_kind="majority MoA of the training folds", seed=seed, ci95=[round(lo, 4), round(hi, 4)],
                 well_accuracy=round(float(np.mean(classes[p.argmax(1)] == y)), 4), n_treatments=n_t,
                 seed_seconds=seconds, base_oof_from=args.base_oof.format(seed=seed) if saved is not None else None,
                 **extra)
    mean = {m: float(np.mean(v)) for m, v in accs.items()}
    per_seed_gain = [100 * (s - max(g, e, c)) for s, g, e, c in zip(accs["stack"], accs["gbm"],
                                                                       accs["gbm_embeddings"], accs["cnn"])]
    best_single = max(("gbm", "gbm_embeddings", "cnn"), key=lambda m: mean[m])
    common = dict(seeds=list(args.seeds), per_seed={m: [round(a, 4) for a in v] for m, v in accs.items()},
                  mean={m: round(v, 4) for m, v in mean.items()}, seconds=round(time.perf_counter() - t0, 1),
                  peak_rss_mb=round(peak_rss_mb()), **extra)
    emit("bbbc021_crops_gbm_embeddings_gain_over_gbm", round(100 * (mean["gbm_embeddings"] - mean["gbm"]), 2),
         "points", 0.0, baseline_kind="target: > 0 (mean of the seeds)",
         per_seed_points=[round(100 * (e - g), 2) for e, g in zip(accs["gbm_embeddings"], accs["gbm"])], **common)
    emit("bbbc021_crops_stack_gain_over_best_single", round(100 * (mean["stack"] - mean[best_single]), 2), "points",
         5.0, baseline_kind="target: >= 5 points on the mean of the seeds and >= 2 in each seed (vs that seed's "
         "best single model)", best_single_on_mean=best_single,
         per_seed_points=[round(g, 2) for g in per_seed_gain], **common)


def _load_base_oof(path: str, y: np.ndarray, classes: np.ndarray, treatment: np.ndarray,
                   fold: np.ndarray) -> dict[str, np.ndarray]:
    """Base-model OOF probabilities written by ``--save-oof``, checked against this run's rows and folds."""
    from fusion.chain import BASE_MODELS

    d = np.load(Path(path).expanduser())
    for key, ours in (("y", y.astype(str)), ("classes", classes.astype(str)), ("treatment", treatment.astype(str)),
                      ("fold", fold)):
        if d[key].shape != ours.shape or not np.array_equal(d[key], ours):
            raise SystemExit(f"{path}: its {key!r} differs from this run's (other data, folds or seed); "
                             "rerun without --base-oof")
    missing = [b for b in BASE_MODELS if b not in d.files]
    if missing:
        raise SystemExit(f"{path}: no {', '.join(missing)} probabilities (written by an older version); "
                         "rerun without --base-oof")
    log.info("base-model out-of-fold probabilities from %s (XGBoost and CNN not retrained)", path)
    return {b: d[b] for b in BASE_MODELS}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["ljosa", "crops", "all"], default="all")
    ap.add_argument("--cnn-epochs", type=int, default=None, help="default: the cpu preset's")
    ap.add_argument("--cnn-size", type=int, default=None, help="default: the cpu preset's")
    ap.add_argument("--cnn-per-class", type=int, default=None, help="default: the cpu preset's")
    ap.add_argument("--cnn-backbone", nargs="+", default=None, help="timm backbone per member (default: the cpu "
                                                                   "preset's resnet18)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=200, help="XGBoost rounds")
    ap.add_argument("--lr", type=float, default=0.1, help="XGBoost learning rate")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0, help="ljosa part: XGBoost seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="crops part: fold seeds")
    ap.add_argument("--cache", default="~/.cache/cellfusion/bbbc021_crop_features_{n}.parquet",
                    help="per-crop feature cache; {n} = --max-cells-per-well")
    ap.add_argument("--max-cells-per-well", type=int, default=20,
                    help="measure and use only the first N crops of each well (0 = all 9,889)")
    ap.add_argument("--base-oof", default=None, metavar="NPZ",
                    help="reuse the base models' out-of-fold probabilities from --save-oof files of the same "
                         "data, folds and seed ('{seed}' in the name; rows and folds are checked)")
    ap.add_argument("--save-oof", default=None, metavar="NPZ",
                    help="also write the base models' out-of-fold probabilities and the folds ('{seed}' in the name)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import torch

    torch.set_num_threads(args.threads)
    if args.part in ("ljosa", "all"):
        ljosa(args)
    if args.part in ("crops", "all"):
        crops(args)


if __name__ == "__main__":
    main()
