"""Per-cell outlier scores from the negative-control distribution (debris, out-of-focus, mis-segmented cells).

The model is a robust Mahalanobis distance in two parts (the score and orthogonal distances of
ROBPCA, Hubert, Rousseeuw & Vanden Branden 2005), fitted on a sample of negative-control cells:

1. every profile feature is centred on the controls' median and divided by their MAD (× 1.4826;
   the standard deviation where the MAD is 0; features constant or empty in the controls are left
   out); a missing value (NaN) is imputed with the control median, i.e. a robust z of 0; then
   ``z → sign(z)·log(1 + |z|)``: many cell features are heavy-tailed (a MAD far smaller than the
   spread of the tail), and without this a handful of such features decide every distance. On the
   planted-defect plate (15 % defects, k = 10) it lifts the ROC AUC of blurred cells from 0.60 to
   0.98 (debris 0.90 → 1.00, fused nuclei 0.89 → 0.96; ``benchmarks/outliers_synthetic.py``);
2. :class:`sklearn.decomposition.PCA` on the controls' transformed z-scores gives ``k`` components
   (default 40: with 3 % planted defects, k = 10 / 20 / 40 gave ROC AUC 0.88 / 0.93 / 0.95 for any
   defect, blurred cells 0.71 / 0.84 / 0.89; with 15 % all three 0.98);
3. :class:`sklearn.covariance.MinCovDet` on the controls' component scores gives a robust centre
   and covariance: the *score distance* SD² is the Mahalanobis distance² of a cell's scores;
4. the *orthogonal distance* OD² is the squared residual of the cell's z-scores off the
   ``k``-component subspace — what the ``k`` components do not describe (a bright speck moves
   features the controls never vary together);
5. ``score = sqrt(SD² / median_controls(SD²) + OD² / median_controls(OD²))`` (≈ √2 for a typical
   control cell), and a cell is an outlier when its score exceeds the ``1 − contamination``
   quantile of the control cells' scores.

Why robust Mahalanobis and not IsolationForest: the score is a smooth, deterministic function of a
few arrays, so the fitted model is plain JSON (:meth:`OutlierModel.to_dict`; no pickle, no tree
ensemble), scoring a site is two matrix products (no scikit-learn at scoring time), and the score
is exactly invariant to any per-feature affine rescaling (units, gain, offset: step 1 removes them
before the monotone transform), which tests check. It also separates defects better: on the
planted-defect plate (10 wells × 512 px, 554 cells, fitted on the 174 DMSO cells) an
IsolationForest (300 trees) on the same transformed z-scores reached ROC AUC 0.91 for any defect
(debris 0.98, blurred 0.85, fused nuclei 0.89) against 0.98 for this model with k = 10 (1.00,
0.98, 0.96). MinCovDet keeps the fit robust to the defective cells that are also in control
wells; the orthogonal distance adds what lies off the controls' main axes of variation (3 %
defects, k = 40: ROC AUC 0.95 with it, 0.94 with the score distance alone; fused nuclei 0.96 / 0.93).

The control cells of a plate come from the platemap by the project's one negative-control rule
(:func:`cellfusion_core.columns.control_mask`); :func:`sample_partitions` draws a bounded, seeded sample
of them from the per-site partitions (one site in memory at a time).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellfusion_core.errors import ConfigError, ModelFileError
from cellfusion_core.names import PLATE, WELL, is_profile_feature
from profiler.nanstats import nanmedian_columns

__all__ = ["SCORE", "FLAG", "FRACTION", "WELL_SCORE", "DEFAULTS", "OutlierModel",
           "outlier_params", "fit_outlier_model", "score_matrix", "score_cells", "sample_partitions",
           "control_wells", "OutlierTally", "well_outlier_scores", "add_well_columns", "load_model"]

SCORE = "Metadata_Outlier_Score"
FLAG = "Metadata_Outlier"
FRACTION = "Metadata_Outlier_Fraction"
WELL_SCORE = "Metadata_Outlier_Well_Score"
FORMAT_VERSION = 2   # 2: z-scores squashed (sign · log1p) before PCA
_MAD_TO_SD = 1.4826

#: the pipeline's ``outliers:`` section, with its defaults
DEFAULTS: dict[str, Any] = {
    "enabled": True,          # score every cell (profiler extract)
    "remove": False,          # leave flagged cells out of the per-well profiles
    "contamination": 0.01,    # the share of control cells above the threshold
    "n_components": 40,       # PCA components of the score distance
    "max_cells": 10000,       # the most control cells sampled for the fit
    "seed": 0,
}


def outlier_params(section: Mapping[str, Any] | None = None, *, remove: bool | None = None) -> dict[str, Any]:
    """The ``outliers:`` section merged over :data:`DEFAULTS` and checked (a :class:`ConfigError` names
    the key); ``remove`` (``--remove-outliers``) overrides the section's when given."""
    section = dict(section or {})
    unknown = [k for k in section if k not in DEFAULTS]
    if unknown:
        raise ConfigError(f"unknown outliers key {unknown[0]!r}", hint=f"allowed: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **section}
    if remove is not None:
        p["remove"] = bool(remove)
    for key in ("enabled", "remove"):
        if not isinstance(p[key], bool):
            raise ConfigError(f"outliers.{key} must be true or false, got {p[key]!r}")
    c = p["contamination"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 < c < 0.5:
        raise ConfigError(f"outliers.contamination must be a number > 0 and < 0.5, got {c!r}",
                          hint="the share of control cells flagged, e.g. 0.01")
    for key, lo in (("n_components", 1), ("max_cells", 50), ("seed", 0)):
        v = p[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"outliers.{key} must be a whole number ≥ {lo}, got {v!r}")
    if p["remove"] and not p["enabled"]:
        raise ConfigError("outliers.remove needs outliers.enabled: true (cells are removed by their flag)")
    return p


@dataclass
class OutlierModel:
    """A fitted per-cell outlier model: every array needed to score, as plain lists in JSON."""

    features: list[str]
    center: np.ndarray            # (p,) control medians
    scale: np.ndarray             # (p,) control MAD × 1.4826 (or SD)
    pca_mean: np.ndarray          # (p,) mean of the controls' robust z
    components: np.ndarray        # (k, p)
    location: np.ndarray          # (k,) MinCovDet centre of the scores
    precision: np.ndarray         # (k, k) MinCovDet inverse covariance
    sd_ref: float                 # median SD² of the control sample
    od_ref: float                 # median OD² of the control sample (0: no residual term)
    threshold: float
    contamination: float
    n_fit: int
    fit_on: str = "control wells"
    dropped: list[str] = field(default_factory=list)   # features left out (constant or empty in the fit sample)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "cellfusion-outliers", "version": FORMAT_VERSION, "method": "robust Mahalanobis "
                "(median/MAD z → sign·log1p → PCA → MinCovDet score distance + orthogonal distance)",
                "features": list(self.features), "center": self.center.tolist(), "scale": self.scale.tolist(),
                "pca_mean": self.pca_mean.tolist(), "components": self.components.tolist(),
                "location": self.location.tolist(), "precision": self.precision.tolist(),
                "sd_ref": float(self.sd_ref), "od_ref": float(self.od_ref), "threshold": float(self.threshold),
                "contamination": float(self.contamination), "n_fit": int(self.n_fit), "fit_on": self.fit_on,
                "dropped": list(self.dropped)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | Path | None = None) -> OutlierModel:
        if not isinstance(d, Mapping) or d.get("format") != "cellfusion-outliers":
            raise ModelFileError("not a cellfusion outlier model (format key missing)", path=path)
        if d.get("version") != FORMAT_VERSION:
            raise ModelFileError(f"outlier model version {d.get('version')!r}, this cellfusion reads {FORMAT_VERSION}",
                                 path=path, hint="rerun profiler extract to refit it")
        try:
            arr = {k: np.asarray(d[k], dtype=np.float64) for k in
                   ("center", "scale", "pca_mean", "components", "location", "precision")}
            model = cls(features=[str(f) for f in d["features"]], **arr, sd_ref=float(d["sd_ref"]),
                        od_ref=float(d["od_ref"]), threshold=float(d["threshold"]),
                        contamination=float(d["contamination"]), n_fit=int(d["n_fit"]),
                        fit_on=str(d.get("fit_on", "")), dropped=list(d.get("dropped", [])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"outlier model is incomplete ({type(exc).__name__}: {exc})", path=path) from None
        p, k = len(model.features), len(model.location)
        if model.components.shape != (k, p) or model.precision.shape != (k, k) or model.center.shape != (p,):
            raise ModelFileError("outlier model arrays have inconsistent shapes", path=path)
        return model


def load_model(path: str | Path) -> OutlierModel:
    """Read ``outliers.json``."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"cannot read the outlier model ({exc})", path=path) from None
    return OutlierModel.from_dict(d, path)


# ---------------------------------------------------------------------------------------------
# fit and score (pure functions of arrays)

def _robust_scale(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column median, MAD × 1.4826 (SD where the MAD is 0) and which columns are usable."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            center = nanmedian_columns(a)
            scale = nanmedian_columns(np.abs(a - center)) * _MAD_TO_SD
            sd = np.nanstd(a, axis=0)
    scale = np.where((scale > 0) & np.isfinite(scale), scale, sd)
    ok = np.isfinite(center) & np.isfinite(scale) & (scale > 1e-12 * np.maximum(1.0, np.abs(center)))
    return center, scale, ok


def _z(a: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = (a - center) / scale
    z[~np.isfinite(z)] = 0.0   # NaN (and ±inf) → the control median
    return z


def _squash(z: np.ndarray) -> np.ndarray:
    """``sign(z)·log(1 + |z|)``: monotone, odd, ≈ z near 0, logarithmic in the tails."""
    return np.sign(z) * np.log1p(np.abs(z))


def _distances(z: np.ndarray, pca_mean, components, location, precision) -> tuple[np.ndarray, np.ndarray]:
    t = (z - pca_mean) @ components.T
    d = t - location
    sd2 = np.einsum("ij,jk,ik->i", d, precision, d)
    resid = (z - pca_mean) - t @ components
    od2 = np.einsum("ij,ij->i", resid, resid)
    return np.maximum(sd2, 0.0), od2


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """A :class:`threadpoolctl.ThreadpoolController` of the BLAS libraries NumPy and SciPy load
    (made once: creating one scans the process's libraries, ≈ 10 ms)."""
    import scipy.linalg  # noqa: F401  (SciPy's own OpenBLAS is loaded before the scan)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """Run a block on one BLAS thread: the matrix products of the fit and of the scores then give
    the same bits on any machine and in any process (OpenBLAS splits a product differently with
    more threads, and Dask workers run on one thread while ``profiler extract`` itself may not)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def score_matrix(model: OutlierModel, a: np.ndarray) -> np.ndarray:
    """Outlier scores of the rows of ``a`` (n, p): columns in ``model.features`` order (computed on
    one BLAS thread: :func:`one_blas_thread`)."""
    z = _squash(_z(np.asarray(a, dtype=np.float64), model.center, model.scale))
    with one_blas_thread():
        sd2, od2 = _distances(z, model.pca_mean, model.components, model.location, model.precision)
    return _combine(sd2, od2, model.sd_ref, model.od_ref)


def _combine(sd2: np.ndarray, od2: np.ndarray, sd_ref: float, od_ref: float) -> np.ndarray:
    """The score from the two squared distances (module docstring, step 5)."""
    total = sd2 / sd_ref
    if od_ref > 0:
        total = total + od2 / od_ref
    return np.sqrt(total)


def _matrix(df: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """``df``'s ``features`` as float64 (a column the table lacks is all NaN, i.e. imputed)."""
    features = list(features)
    if (features and df.columns.is_unique and set(features) <= set(df.columns)
            and all(dt == np.float64 for dt in df.dtypes[features])):
        # all float64 (e.g. the outlier sample): one block copy instead of a to_numeric per column
        return np.array(df[features].to_numpy(dtype=np.float64), dtype=np.float64, order="C", copy=True)
    out = np.full((len(df), len(features)), np.nan)
    for j, f in enumerate(features):
        if f in df.columns:
            out[:, j] = pd.to_numeric(df[f], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def arrow_matrix(table, features: Sequence[str]) -> np.ndarray:
    """:func:`_matrix` of a :class:`pyarrow.Table`: ``table``'s ``features`` as float64 (n, p), null
    and missing columns NaN — the same values as ``_matrix(table.to_pandas(), features)`` without
    building a DataFrame (a column of another type goes through pandas' coercion)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = set(table.column_names)
    features = list(features)
    if (table.num_rows and features and len(set(features)) == len(features) and set(features) <= names
            and all(table.schema.field(f).type == pa.float64() for f in features)):
        # every column float64: one row-major copy in Arrow's C++ (nulls → NaN), not one per column
        batch = table.select(features).combine_chunks().to_batches()[0]
        return np.array(batch.to_tensor(null_to_nan=True, row_major=True), dtype=np.float64, copy=True)
    out = np.full((table.num_rows, len(features)), np.nan)
    for j, f in enumerate(features):
        if f not in names:
            continue
        col = table[f]
        t = col.type
        if t == pa.float64():  # nulls → NaN (Arrow's own conversion of a float column)
            out[:, j] = col.to_numpy()
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            out[:, j] = pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()
        else:
            out[:, j] = pd.to_numeric(col.to_pandas(), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def score_cells(model: OutlierModel, cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(score, flag)`` of every row of a per-cell table (a DataFrame or a :class:`pyarrow.Table`)."""
    a = _matrix(cells, model.features) if isinstance(cells, pd.DataFrame) else arrow_matrix(cells, model.features)
    s = score_matrix(model, a)
    return s, s > model.threshold


def _empirical_covariance(X: np.ndarray, *, assume_centered: bool = False) -> np.ndarray:
    """:func:`sklearn.covariance.empirical_covariance` of a 2-D float array (what MinCovDet hands it),
    the same arithmetic without its argument validation: FastMCD calls it ~2,000 times a fit."""
    if X.ndim == 1:
        X = np.reshape(X, (1, -1))
    if assume_centered:
        covariance = np.dot(X.T, X) / X.shape[0]
    else:
        covariance = np.cov(X.T, bias=1)
    if covariance.ndim == 0:
        covariance = np.array([[covariance]])
    return covariance


@functools.lru_cache(maxsize=1)
def _min_cov_det():
    from sklearn.covariance import MinCovDet
    from sklearn.utils import check_random_state

    from profiler._fast_mcd import fast_mcd

    class _Fast(MinCovDet):
        """:class:`sklearn.covariance.MinCovDet` (default support fraction, not assuming a centred
        sample) with :func:`_empirical_covariance` and :func:`profiler._fast_mcd.fast_mcd`: the same
        results bit for bit (tests/test_outliers.py) in about half the time."""

        _nonrobust_covariance = staticmethod(_empirical_covariance)

        def fit(self, X, y=None):
            # MinCovDet.fit's steps for support_fraction=None, assume_centered=False (its rank warning
            # is left out: the caller silences it)
            if self.support_fraction is not None or self.assume_centered:
                return super().fit(X, y)
            X = np.asarray(X, dtype=np.float64)
            if X.ndim != 2 or len(X) < 2 or not np.isfinite(X).all():
                return super().fit(X, y)  # scikit-learn's own message
            self.n_features_in_ = X.shape[1]
            location, covariance, support, dist = fast_mcd(X, check_random_state(self.random_state))
            self.raw_location_, self.raw_covariance_, self.raw_support_ = location, covariance, support
            self.location_, self.support_, self.dist_ = location, support, dist
            self.correct_covariance(X)
            self.reweight_covariance(X)
            return self

    return _Fast


def fit_outlier_model(sample: pd.DataFrame, *, contamination: float = 0.01, n_components: int = 40,
                      seed: int = 0, fit_on: str = "control wells") -> OutlierModel:
    """Fit the model of the module docstring on a sample of (control) cells.

    ``sample``: the cells' profile features (numeric; metadata and position columns are ignored).
    Needs at least 10 cells; ``k = min(n_components, usable features, (cells − 1) // 3)``.
    """
    from sklearn.decomposition import PCA

    _MinCovDet = _min_cov_det()

    feats = [c for c, dt in zip(sample.columns, sample.dtypes) if is_profile_feature(c)
             and pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)]
    n = len(sample)
    if n < 10 or not feats:
        raise ConfigError(f"an outlier model needs at least 10 cells and one numeric feature, got {n} cells "
                          f"and {len(feats)} features")
    a = _matrix(sample, feats)
    center, scale, ok = _robust_scale(a)
    dropped = [f for f, good in zip(feats, ok) if not good]
    feats = [f for f, good in zip(feats, ok) if good]
    if not feats:
        raise ConfigError("every feature is constant or empty in the outlier model's fit sample")
    a, center, scale = a[:, ok], center[ok], scale[ok]
    z = _squash(_z(a, center, scale))
    k = int(max(1, min(n_components, len(feats), (n - 1) // 3)))
    # randomized SVD (seeded) for wide samples: the full SVD of 10,000 cells x 1,500 features holds
    # several copies of the sample; the leading k components are what the model keeps
    solver = "randomized" if min(z.shape) > 500 and k < 0.5 * min(z.shape) else "full"
    import warnings

    # One BLAS thread for the whole fit: the PCA's LAPACK factorizations change in their last bits
    # with the number of BLAS threads, so on the default threads the model (and every cell's score)
    # depended on the machine's core count and on whatever thread limit the calling process had set
    # (a test process that had lowered it got other scores than a fresh `profiler extract`). On one
    # thread the fit gives the same bits everywhere; MinCovDet's thousands of small BLAS calls also
    # take about half the CPU time without thread hand-offs.
    with warnings.catch_warnings(), one_blas_thread():
        pca = PCA(n_components=k, svd_solver=solver, random_state=seed).fit(z)
        comps = pca.components_
        t = (z - pca.mean_) @ comps.T
        warnings.simplefilter("ignore", RuntimeWarning)  # "covariance matrix not full rank" on tiny samples
        mcd = _MinCovDet(random_state=seed).fit(t)
        precision = np.linalg.pinv(mcd.covariance_)
        sd2, od2 = _distances(z, pca.mean_, comps, mcd.location_, precision)
    sd_ref = float(np.median(sd2)) or 1.0
    od_ref = float(np.median(od2)) if k < len(feats) else 0.0
    model = OutlierModel(features=feats, center=center, scale=scale, pca_mean=pca.mean_, components=comps,
                         location=mcd.location_, precision=precision, sd_ref=sd_ref,
                         od_ref=od_ref if od_ref > 1e-12 else 0.0, threshold=np.inf,
                         contamination=float(contamination), n_fit=n, fit_on=fit_on, dropped=dropped)
    ctrl = _combine(sd2, od2, model.sd_ref, model.od_ref)  # = score_matrix(model, a): the same z and distances
    model.threshold = float(np.quantile(ctrl, 1.0 - contamination))
    return model


# ---------------------------------------------------------------------------------------------
# the plate: control wells, the bounded sample, per-well tallies and scores

def control_wells(platemap: pd.DataFrame | None) -> set[str] | None:
    """The platemap's negative-control wells (:func:`cellfusion_core.columns.control_mask`); ``None``
    without a platemap or when it marks no control well."""
    if platemap is None or WELL not in platemap.columns:
        return None
    from cellfusion_core.columns import control_mask

    mask = control_mask(platemap)
    wells = set(platemap.loc[mask, WELL].astype(str))
    return wells or None


def sample_partitions(partitions: Iterable[str | Path], features: Sequence[str], *, wells: set[str] | None,
                      max_cells: int = 10000, seed: int = 0, tables: Mapping[Path, Any] | None = None,
                      indices: Sequence[int] | None = None) -> pd.DataFrame:
    """A seeded, bounded random sample of the cells of ``partitions`` (one site read at a time),
    only those in ``wells`` when given.

    Every cell draws a key from ``default_rng([seed, i])`` (``i`` the partition's position, or its
    entry of ``indices``: ``profiler extract`` passes each site's position in the plate scan, so
    the sample of the control wells can be drawn before the other sites are done); the
    ``max_cells`` smallest keys are kept — a uniform sample without replacement, memory bounded by
    ``max_cells`` plus one site. Returns the features (float32→float64 on use) of the sampled cells.
    ``tables``: partitions already in memory (path → :class:`pyarrow.Table`; the others are read).
    """
    import pyarrow.parquet as pq

    partitions = list(partitions)
    indices = list(range(len(partitions))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(partitions):
        raise ValueError(f"{len(indices)} indices for {len(partitions)} partitions")
    kept = np.empty((0, len(features)), dtype=np.float32)
    keys = np.empty(0)
    for i, path in zip(indices, partitions):
        table = tables.get(Path(path)) if tables is not None else None
        if table is not None:
            names = set(table.column_names)
            cols = [c for c in features if c in names]
            part = table.select(cols)
            if wells is not None:
                inside = np.array([str(w) in wells for w in table[WELL].to_pylist()], dtype=bool)
                if not inside.any():
                    continue
                if not inside.all():  # (a site is one well: all or none of its cells, as a rule)
                    part = part.filter(inside)
        else:
            pf = pq.ParquetFile(path)
            names = set(pf.schema_arrow.names)
            cols = [c for c in features if c in names]
            if wells is not None:  # a site is one well: most partitions are skipped after reading the well column
                well_col = pf.read(columns=[WELL], use_threads=False)[WELL]
                inside = np.array([str(w) in wells for w in well_col.to_pylist()], dtype=bool)
                if not inside.any():
                    continue
                part = pf.read(columns=cols, use_threads=False)
                if not inside.all():
                    part = part.filter(inside)
            else:
                part = pf.read(columns=cols, use_threads=False)
        if not part.num_rows:
            continue
        x = arrow_matrix(part, features).astype(np.float32)
        kk = np.random.default_rng([int(seed), i]).random(part.num_rows)
        kept, keys = np.vstack([kept, x]), np.concatenate([keys, kk])
        if len(keys) > max_cells:
            best = np.argpartition(keys, max_cells - 1)[:max_cells]
            best.sort()
            kept, keys = kept[best], keys[best]
    return pd.DataFrame(kept.astype(np.float64), columns=list(features))


class OutlierTally:
    """Cells and flagged cells per (plate, well), added site by site as the per-cell table streams."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[int]] = {}

    def add(self, cells: pd.DataFrame, flags: np.ndarray) -> None:
        """Count ``cells`` (a DataFrame or a :class:`pyarrow.Table` with plate and well) and their ``flags``."""
        if isinstance(cells, pd.DataFrame):
            keys = list(zip(cells[PLATE].astype(str), cells[WELL].astype(str)))
        else:
            keys = list(zip(map(str, cells[PLATE].to_pylist()), map(str, cells[WELL].to_pylist())))
        for key, f in zip(keys, flags):
            c = self.counts.setdefault(key, [0, 0])
            c[0] += 1
            c[1] += int(bool(f))

    @property
    def flagged(self) -> int:
        return sum(c[1] for c in self.counts.values())

    def fractions(self) -> pd.DataFrame:
        """``Metadata_Plate, Metadata_Well, Metadata_Outlier_Fraction``."""
        rows = [(p, w, c[1] / c[0]) for (p, w), c in self.counts.items()]
        return pd.DataFrame(rows, columns=[PLATE, WELL, FRACTION])


def well_outlier_scores(profiles: pd.DataFrame, controls: np.ndarray | None = None) -> np.ndarray:
    """Per-well outlier score of aggregated (not yet normalized) profiles: the root mean square over
    the profile features of each well's robust z-score against the control wells (median, MAD × 1.4826
    per feature; all wells when ``controls`` is ``None`` or selects fewer than 3 wells). A diagonal
    robust Mahalanobis distance per feature: ≈ 1 for a typical control well, large for a well whose
    features sit far from the controls'. Features constant across the reference wells are left out."""
    feats = [c for c, dt in zip(profiles.columns, profiles.dtypes)
             if is_profile_feature(c) and pd.api.types.is_numeric_dtype(dt)]
    a = _matrix(profiles, feats)
    ref = a if controls is None or int(np.sum(controls)) < 3 else a[np.asarray(controls, dtype=bool)]
    center, scale, ok = _robust_scale(ref)
    if not ok.any():
        return np.full(len(profiles), np.nan)
    z = _z(a[:, ok], center[ok], scale[ok])
    return np.sqrt(np.mean(z * z, axis=1))


def add_well_columns(profiles: pd.DataFrame, fractions: pd.DataFrame) -> pd.DataFrame:
    """Aggregated per-well ``profiles`` (before normalization) with ``Metadata_Outlier_Fraction``
    (from ``fractions``: plate, well, fraction — :meth:`OutlierTally.fractions`) and
    ``Metadata_Outlier_Well_Score`` (:func:`well_outlier_scores` against the negative-control wells
    of :func:`cellfusion_core.columns.control_mask`; all wells when fewer than 3 are controls), inserted
    after the metadata columns."""
    from cellfusion_core.columns import control_mask

    prof = profiles.copy()
    n_meta = sum(c.startswith("Metadata_") for c in prof.columns)
    frac = prof[[PLATE, WELL]].astype(str).merge(fractions.astype({PLATE: str, WELL: str}),
                                                 on=[PLATE, WELL], how="left")[FRACTION]
    prof.insert(n_meta, FRACTION, frac.to_numpy(dtype=float))
    prof.insert(n_meta + 1, WELL_SCORE, well_outlier_scores(prof, control_mask(prof)))
    return prof


def cell_fractions(cells: pd.DataFrame) -> pd.DataFrame:
    """Per-well flagged fraction of an in-memory per-cell table with ``Metadata_Outlier``."""
    g = cells.assign(**{PLATE: cells[PLATE].astype(str), WELL: cells[WELL].astype(str)})
    return (g.groupby([PLATE, WELL], sort=False)[FLAG].mean().astype(float).rename(FRACTION).reset_index())
