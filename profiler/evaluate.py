"""How well do profiles separate mechanisms? The BBBC021 protocol and copairs mAP.

* :func:`treatment_profiles` — one profile per treatment (compound × concentration) = the median of
  its wells (Ljosa et al. 2013).
* :func:`nsc_nscb` — cosine 1-nearest-neighbour MoA accuracy where the neighbour may not be the same
  compound (NSC) and, additionally, may not share a batch with the query (NSCB; MoAs whose
  treatments all sit in one batch are dropped). Negative controls are neither queries nor neighbours.
  Each accuracy comes with its chance baseline: the expected accuracy of a neighbour drawn at random
  from the allowed candidates.
* :func:`map_scores` — mean average precision with copairs for phenotypic activity (a treatment's
  replicate wells vs negative-control wells) and phenotypic consistency (treatments of the same MoA
  vs treatments of other MoAs, other compounds only), each beside the chance mAP (the mean fraction of
  positives among the ranked pairs).
* :func:`evaluate` — all of the above on a per-well profile table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from profiler.errors import InputError
from profiler.names import BATCH, COMPOUND, CONCENTRATION, CONTROL, MOA, PLATE, WELL, feature_columns

TREATMENT = (COMPOUND, CONCENTRATION)


@dataclass
class NNScore:
    """A 1-NN accuracy, its chance baseline and how many queries it was computed on."""

    accuracy: float
    chance: float
    n_queries: int
    dropped_moas: list[str] = field(default_factory=list)
    per_moa: dict[str, float] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measures."""

    nsc: NNScore
    nscb: NNScore | None
    map_activity: float | None = None
    map_activity_chance: float | None = None
    fraction_active: float | None = None
    map_consistency: float | None = None
    map_consistency_chance: float | None = None
    n_wells: int = 0
    n_features: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable summary, one metric per line, each beside its chance baseline."""
        out = [f"wells: {self.n_wells}, features: {self.n_features}",
               f"NSC   1-NN MoA accuracy {self.nsc.accuracy:.3f}  (chance {self.nsc.chance:.3f}, "
               f"{self.nsc.n_queries} treatments)"]
        if self.nscb is not None:
            drop = f"; dropped MoAs in one batch: {', '.join(self.nscb.dropped_moas)}" if self.nscb.dropped_moas else ""
            out.append(f"NSCB  1-NN MoA accuracy {self.nscb.accuracy:.3f}  (chance {self.nscb.chance:.3f}, "
                       f"{self.nscb.n_queries} treatments{drop})")
        if self.map_activity is not None:
            out.append(f"mAP phenotypic activity    {self.map_activity:.3f}  (chance {self.map_activity_chance:.3f}; "
                       f"{self.fraction_active:.0%} of treatments active at p<0.05)")
        if self.map_consistency is not None:
            out.append(f"mAP phenotypic consistency {self.map_consistency:.3f}  (chance {self.map_consistency_chance:.3f})")
        return out


def _check_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{what} needs columns {missing}, the table has none of them",
                         hint="annotate the profiles with the platemap/MoA table first "
                              "(Metadata_Compound, Metadata_Concentration, Metadata_MoA, Metadata_Batch)")


def _features(df: pd.DataFrame, features: Sequence[str] | None) -> list[str]:
    feats = list(features) if features is not None else feature_columns(df)
    if not feats:
        raise InputError("the profile table has no feature columns")
    bad = [c for c in feats if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise InputError(f"non-numeric feature columns: {bad[:5]}",
                         hint="metadata columns must start with 'Metadata_'")
    return feats


def is_control(df: pd.DataFrame, control_compound: str = "DMSO") -> pd.Series:
    """Negative-control rows: ``Metadata_Control == 'negative'`` or the control compound."""
    mask = pd.Series(False, index=df.index)
    if CONTROL in df:
        mask |= df[CONTROL].astype(str).str.lower().eq("negative")
    if COMPOUND in df:
        mask |= df[COMPOUND].astype(str).eq(control_compound)
    return mask


def treatment_profiles(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
                       treatment: Sequence[str] = TREATMENT, operation: str = "median") -> pd.DataFrame:
    """One row per treatment: ``operation`` (median/mean) of its wells' features.

    ``Metadata_MoA`` is carried over (it must be constant within a treatment); ``Metadata_Batch``
    becomes the ``;``-joined sorted set of batches the treatment's wells come from.
    """
    feats = _features(profiles, features)
    _check_columns(profiles, treatment, "treatment profiles")
    grouped = profiles.groupby(list(treatment), sort=True, dropna=False)
    out = getattr(grouped[feats], operation)()
    if MOA in profiles:
        n_moa = grouped[MOA].nunique()
        if (n_moa > 1).any():
            raise InputError(f"treatments with more than one MoA: {list(n_moa[n_moa > 1].index[:5])}")
        out.insert(0, MOA, grouped[MOA].first())
    if BATCH in profiles:
        out.insert(0, BATCH, grouped[BATCH].agg(lambda s: ";".join(sorted(set(map(str, s))))))
    out.insert(0, "Metadata_Wells", grouped.size())
    return out.reset_index()


def _cosine(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    x = x / norm
    return x @ x.T


def _nn_accuracy(sim: np.ndarray, moa: np.ndarray, allowed: np.ndarray) -> tuple[float, float, dict[str, float]]:
    sim = np.where(allowed, sim, -np.inf)
    nn = np.argmax(sim, axis=1)
    has = allowed.any(axis=1)
    hit = (moa[nn] == moa) & has
    same = (moa[:, None] == moa[None, :]) & allowed
    chance = np.where(has, same.sum(1) / np.maximum(allowed.sum(1), 1), 0.0)
    per = {str(m): float(hit[moa == m].mean()) for m in np.unique(moa)}
    return float(hit[has].mean()), float(chance[has].mean()), per


def nsc_nscb(treatments: pd.DataFrame, *, features: Sequence[str] | None = None,
             control_compound: str = "DMSO") -> tuple[NNScore, NNScore | None]:
    """NSC and NSCB 1-NN accuracies (cosine) on a treatment table from :func:`treatment_profiles`."""
    _check_columns(treatments, [COMPOUND, MOA], "NSC")
    t = treatments[~is_control(treatments, control_compound)].reset_index(drop=True)
    t = t[t[MOA].notna()].reset_index(drop=True)
    if len(t) < 2:
        raise InputError("fewer than two annotated non-control treatments to evaluate")
    feats = _features(t, features)
    x = t[feats].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise InputError("treatment profiles contain NaN/inf values",
                         hint="drop NaN columns (feature_select drop_na_columns) before evaluating")
    sim = _cosine(x)
    moa = t[MOA].astype(str).to_numpy()
    comp = t[COMPOUND].astype(str).to_numpy()
    allowed = comp[:, None] != comp[None, :]
    acc, chance, per = _nn_accuracy(sim, moa, allowed)
    nsc = NNScore(acc, chance, len(t), per_moa=per)
    if BATCH not in t:
        return nsc, None
    batches = [set(b.split(";")) for b in t[BATCH].astype(str)]
    moa_batches: dict[str, set[str]] = {}
    for m, b in zip(moa, batches):
        moa_batches.setdefault(m, set()).update(b)
    dropped = sorted(m for m, b in moa_batches.items() if len(b) < 2)
    keep = ~np.isin(moa, dropped)
    share = np.array([[bool(bi & bj) for bj in batches] for bi in batches])
    allowed_b = allowed & ~share
    idx = np.flatnonzero(keep)
    acc_b, chance_b, per_b = _nn_accuracy(sim[np.ix_(idx, idx)], moa[idx], allowed_b[np.ix_(idx, idx)])
    return nsc, NNScore(acc_b, chance_b, int(keep.sum()), dropped_moas=dropped, per_moa=per_b)


def _chance_map(ap: pd.DataFrame, sameby: str) -> float:
    frac = ap["n_pos_pairs"] / ap["n_total_pairs"]
    return float(frac.groupby(ap[sameby]).mean().mean())


def map_scores(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
               treatment: Sequence[str] = TREATMENT, control_compound: str = "DMSO",
               null_size: int = 10000, seed: int = 0) -> dict[str, float | None]:
    """copairs mAP: phenotypic activity (wells) and consistency (treatment profiles), with chance."""
    from copairs.map import average_precision, mean_average_precision

    feats = _features(profiles, features)
    _check_columns(profiles, treatment, "mAP")
    df = profiles.reset_index(drop=True)
    ctrl = is_control(df, control_compound).to_numpy()
    out: dict[str, float | None] = {}
    tkey = df[list(treatment)].astype(str).agg("|".join, axis=1)
    if ctrl.any():
        meta = pd.DataFrame({"treatment": tkey, "ref": np.where(ctrl, np.arange(len(df)), -1)})
        x = df[feats].to_numpy(dtype=np.float64)
        ap = average_precision(meta, x, pos_sameby=["treatment", "ref"], pos_diffby=[],
                               neg_sameby=[], neg_diffby=["treatment", "ref"], progress_bar=False)
        ap = ap[(ap["ref"] == -1) & (ap["n_pos_pairs"] > 0)]
        if len(ap):
            m = mean_average_precision(ap, sameby=["treatment"], null_size=null_size, threshold=0.05,
                                       seed=seed, progress_bar=False)
            out["map_activity"] = float(m["mean_average_precision"].mean())
            out["map_activity_chance"] = _chance_map(ap, "treatment")
            out["fraction_active"] = float(m["below_corrected_p"].mean())
    if MOA in df:
        t = treatment_profiles(df[~ctrl], features=feats, treatment=treatment)
        t = t[t[MOA].notna()].reset_index(drop=True)
        if len(t) > 2:
            meta = t[[MOA, COMPOUND]].astype(str).reset_index(drop=True)
            ap = average_precision(meta, t[feats].to_numpy(dtype=np.float64), pos_sameby=[MOA],
                                   pos_diffby=[COMPOUND], neg_sameby=[], neg_diffby=[MOA], progress_bar=False)
            ap = ap[ap["n_pos_pairs"] > 0]
            if len(ap):
                m = mean_average_precision(ap, sameby=[MOA], null_size=null_size, threshold=0.05,
                                           seed=seed, progress_bar=False)
                out["map_consistency"] = float(m["mean_average_precision"].mean())
                out["map_consistency_chance"] = _chance_map(ap, MOA)
    return out


def replicate_map(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
                  treatment: Sequence[str] = TREATMENT, control_compound: str = "DMSO") -> float:
    """Label-free replicate reproducibility: copairs mAP (cosine) of retrieving a well's replicate
    wells (same compound and concentration) among all other wells (controls and other treatments),
    averaged per treatment over non-control treatments. Uses no MoA labels, so it may choose recipes.
    """
    from copairs.map import average_precision

    feats = _features(profiles, features)
    _check_columns(profiles, treatment, "replicate mAP")
    df = profiles.reset_index(drop=True)
    x = df[feats].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise InputError("profiles contain NaN/inf values", hint="drop NaN columns before scoring")
    meta = pd.DataFrame({"treatment": df[list(treatment)].astype(str).agg("|".join, axis=1)})
    ap = average_precision(meta, x, pos_sameby=["treatment"], pos_diffby=[], neg_sameby=[],
                           neg_diffby=["treatment"], progress_bar=False)
    ap = ap[~is_control(df, control_compound).to_numpy() & (ap["n_pos_pairs"] > 0).to_numpy()]
    if ap.empty:
        raise InputError("no treatment has two or more replicate wells: replicate mAP is undefined")
    return float(ap.groupby("treatment")["average_precision"].mean().mean())


def evaluate(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
             control_compound: str = "DMSO", with_map: bool = True, null_size: int = 10000,
             seed: int = 0) -> Evaluation:
    """NSC/NSCB on treatment medians (+ copairs mAP) for a per-well profile table."""
    feats = _features(profiles, features)
    x = profiles[feats].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        bad = [c for c, ok in zip(feats, np.isfinite(x).all(0)) if not ok]
        raise InputError(f"{len(bad)} feature columns contain NaN/inf, e.g. {bad[:3]}",
                         hint="run feature selection with drop_na_columns, or drop these columns")
    t = treatment_profiles(profiles, features=feats)
    nsc, nscb = nsc_nscb(t, features=feats, control_compound=control_compound)
    ev = Evaluation(nsc=nsc, nscb=nscb, n_wells=len(profiles), n_features=len(feats))
    if with_map:
        for k, v in map_scores(profiles, features=feats, control_compound=control_compound,
                               null_size=null_size, seed=seed).items():
            setattr(ev, k, v)
    return ev


def read_profiles(path: str | Path) -> pd.DataFrame:
    """Read a profile table (Parquet or CSV[.gz]) with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise InputError("profile table not found", path=path)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a user input problem
        raise InputError(f"cannot read the profile table ({exc})", path=path) from exc
