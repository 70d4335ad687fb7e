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
* :func:`phenotypic_activity` — "is this treatment perturbed?": per non-control treatment, the
  copairs mAP of its replicate wells against the control wells, the permutation p-value and the
  FDR-corrected p-value (the per-treatment table behind the activity mAP; ``activity.parquet``).
* :func:`evaluate` — all of the above on a per-well profile table.

Every function takes a :class:`cellfusion_core.columns.ColumnSpec` (``columns=``): which columns hold the
compound, concentration, MoA and batch, and which rows are negative controls (the one definition,
:func:`cellfusion_core.columns.control_mask`). Without it the columns are resolved from the table — ours
(``Metadata_Compound`` …) or the common pycytominer/JUMP/LINCS names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cellfusion_core.columns import ColumnSpec, control_mask, resolve_columns
from cellfusion_core.errors import InputError
from cellfusion_core.names import COMPOUND, CONCENTRATION, feature_columns

TREATMENT = (COMPOUND, CONCENTRATION)


def _spec(df: pd.DataFrame, columns: ColumnSpec | None, control: str | None = None) -> ColumnSpec:
    return columns if columns is not None else resolve_columns(df, control=control)


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
    map_activity_scored: int | None = None      # treatments with >= 2 replicate wells (scored)
    map_activity_treatments: int | None = None  # non-control treatments in the table
    map_consistency: float | None = None
    map_consistency_chance: float | None = None
    n_wells: int = 0
    n_features: int = 0
    n_controls: int = 0
    columns: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    activity: pd.DataFrame | None = field(default=None, repr=False)  # phenotypic_activity's table

    def to_dict(self) -> dict:
        """The scores as JSON-able values (the per-treatment activity table is left out: see ``activity``)."""
        d = asdict(replace(self, activity=None))
        d.pop("activity")
        return d

    def activity_lines(self) -> list[str]:
        """One line per non-control treatment: does it differ from the controls (mAP activity)?"""
        if self.activity is None:
            return []
        a = self.activity
        keys = [c for c in a.columns if c not in ACTIVITY_COLUMNS]
        out = []
        for _, r in a.iterrows():
            name = " @ ".join(str(r[c]) for c in keys)
            if not r["scored"]:
                out.append(f"  {name}: not scored ({int(r['n_wells'])} well; needs >= 2 replicate wells)")
                continue
            verdict = "differs from controls" if r["active"] else "not distinguishable from controls"
            out.append(f"  {name}: mAP {r['mAP']:.3f} (chance {r['chance_mAP']:.3f}), corrected p "
                       f"{r['corrected_p_value']:.3g}, {int(r['n_wells'])} wells -> {verdict}")
        return out

    def lines(self) -> list[str]:
        """Human-readable summary, one metric per line, each beside its chance baseline."""
        out = [f"wells: {self.n_wells} ({self.n_controls} negative controls), features: {self.n_features}",
               f"NSC   1-NN MoA accuracy {self.nsc.accuracy:.3f}  (chance {self.nsc.chance:.3f}, "
               f"{self.nsc.n_queries} treatments)"]
        if self.nscb is not None:
            drop = f"; dropped MoAs in one batch: {', '.join(self.nscb.dropped_moas)}" if self.nscb.dropped_moas else ""
            out.append(f"NSCB  1-NN MoA accuracy {self.nscb.accuracy:.3f}  (chance {self.nscb.chance:.3f}, "
                       f"{self.nscb.n_queries} treatments{drop})")
        if self.map_activity is not None:
            out.append(f"mAP phenotypic activity    {self.map_activity:.3f}  (chance {self.map_activity_chance:.3f}; "
                       f"{self.fraction_active:.0%} of scored treatments active at p<0.05; "
                       f"{self.map_activity_scored} of {self.map_activity_treatments} treatments had >= 2 "
                       "replicate wells to score)")
        if self.map_consistency is not None:
            out.append(f"mAP phenotypic consistency {self.map_consistency:.3f}  (chance {self.map_consistency_chance:.3f})")
        out.extend(f"note: {n}" for n in self.notes)
        return out


def _check_columns(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{what} needs columns {missing}, the table has none of them",
                         hint="name your table's columns with --compound/--concentration/--moa/--batch, or "
                              "annotate the profiles with the platemap/MoA table first")


def _features(df: pd.DataFrame, features: Sequence[str] | None) -> list[str]:
    feats = list(features) if features is not None else feature_columns(df)
    if not feats:
        raise InputError("the profile table has no feature columns")
    bad = [c for c in feats if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise InputError(f"non-numeric feature columns: {bad[:5]}",
                         hint="metadata columns must start with 'Metadata_'")
    return feats


def is_control(df: pd.DataFrame, control: str | None = None, columns: ColumnSpec | None = None) -> np.ndarray:
    """Negative-control rows (:func:`cellfusion_core.columns.control_mask`); ``control`` as ``--control``."""
    if columns is not None and control is not None:
        columns = ColumnSpec(**{**columns.to_dict(), "control": control})
    return control_mask(df, _spec(df, columns, control))


def _treatment_columns(df: pd.DataFrame, spec: ColumnSpec, treatment: Sequence[str] | None, what: str) -> list[str]:
    if treatment is not None:
        cols = list(treatment)
    else:
        spec.require("compound", what=what)
        cols = list(spec.treatment)
    _check_columns(df, cols, what)
    return cols


def treatment_profiles(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
                       treatment: Sequence[str] | None = None, operation: str = "median",
                       columns: ColumnSpec | None = None) -> pd.DataFrame:
    """One row per treatment (compound × concentration): ``operation`` (median/mean) of its wells.

    The MoA column is carried over (it must be constant within a treatment); the batch column
    becomes the ``;``-joined sorted set of batches the treatment's wells come from. Column names
    are kept as in the table.
    """
    spec = _spec(profiles, columns)
    feats = _features(profiles, features)
    treatment = _treatment_columns(profiles, spec, treatment, "treatment profiles")
    grouped = profiles.groupby(list(treatment), sort=True, dropna=False)
    out = getattr(grouped[feats], operation)()
    moa, batch = spec.moa, spec.batch
    if moa is not None and moa in profiles and moa not in treatment:
        n_moa = grouped[moa].nunique()
        if (n_moa > 1).any():
            raise InputError(f"treatments with more than one MoA ({moa}): {list(n_moa[n_moa > 1].index[:5])}")
        out.insert(0, moa, grouped[moa].first())
    if batch is not None and batch in profiles and batch not in treatment:
        out.insert(0, batch, grouped[batch].agg(lambda s: ";".join(sorted(set(map(str, s))))))
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
             control: str | None = None, columns: ColumnSpec | None = None,
             controls: np.ndarray | None = None) -> tuple[NNScore, NNScore | None]:
    """NSC and NSCB 1-NN accuracies (cosine) on a treatment table from :func:`treatment_profiles`.

    ``controls`` marks the control treatments (default: :func:`cellfusion_core.columns.control_mask` on
    the treatment table); they are neither queries nor neighbours.
    """
    spec = _spec(treatments, columns, control)
    spec.require("compound", "moa", what="NSC")
    comp_col, moa_col, batch_col = spec.compound, spec.moa, spec.batch
    _check_columns(treatments, [comp_col, moa_col], "NSC")
    ctrl = control_mask(treatments, spec) if controls is None else np.asarray(controls, dtype=bool)
    t = treatments[~ctrl].reset_index(drop=True)
    t = t[t[moa_col].notna()].reset_index(drop=True)
    if len(t) < 2:
        raise InputError("fewer than two annotated non-control treatments to evaluate")
    feats = _features(t, features)
    x = t[feats].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise InputError("treatment profiles contain NaN/inf values",
                         hint="drop NaN columns (feature_select drop_na_columns) before evaluating")
    sim = _cosine(x)
    moa = t[moa_col].astype(str).to_numpy()
    comp = t[comp_col].astype(str).to_numpy()
    allowed = comp[:, None] != comp[None, :]
    acc, chance, per = _nn_accuracy(sim, moa, allowed)
    nsc = NNScore(acc, chance, len(t), per_moa=per)
    if batch_col is None or batch_col not in t:
        return nsc, None
    batches = [set(b.split(";")) for b in t[batch_col].astype(str)]
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


ACTIVITY_COLUMNS = ("n_wells", "mAP", "chance_mAP", "p_value", "corrected_p_value", "active", "scored")


def phenotypic_activity(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
                        treatment: Sequence[str] | None = None, control: str | None = None,
                        columns: ColumnSpec | None = None, null_size: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Is each treatment different from the negative controls? One row per non-control treatment.

    copairs, cosine: every well of a treatment ranks the treatment's other wells (positives) among
    them and the control wells (negatives); ``mAP`` is the mean of these average precisions,
    ``chance_mAP`` the mean fraction of positives among a well's ranked pairs (the AP of a random
    ranking), ``p_value`` copairs' permutation p-value (``null_size`` draws) and
    ``corrected_p_value`` Benjamini–Hochberg over the scored treatments; ``active`` = corrected
    p < 0.05. A treatment with one well (or a table without control wells) has ``scored`` False and
    no score. Columns: the treatment columns as named in the table, then :data:`ACTIVITY_COLUMNS`.
    """
    from copairs.map import average_precision, mean_average_precision

    spec = _spec(profiles, columns, control)
    feats = _features(profiles, features)
    treatment = _treatment_columns(profiles, spec, treatment, "mAP activity")
    df = profiles.reset_index(drop=True)
    ctrl = control_mask(df, spec)
    tkey = df[list(treatment)].astype(object).fillna("").astype(str).agg("|".join, axis=1)
    treated = df.loc[~ctrl, list(treatment)].assign(_t=tkey[~ctrl])
    table = treated.groupby("_t", sort=True).agg(**{c: (c, "first") for c in treatment},
                                                 n_wells=("_t", "size"))
    for c in ACTIVITY_COLUMNS[1:5]:
        table[c] = np.nan
    table["active"] = pd.array([pd.NA] * len(table), dtype="boolean")
    table["scored"] = False
    if ctrl.any() and (table["n_wells"] >= 2).any():  # copairs refuses a table without positive pairs
        meta = pd.DataFrame({"treatment": tkey, "ref": np.where(ctrl, np.arange(len(df)), -1)})
        x = df[feats].to_numpy(dtype=np.float64)
        ap = average_precision(meta, x, pos_sameby=["treatment", "ref"], pos_diffby=[],
                               neg_sameby=[], neg_diffby=["treatment", "ref"], progress_bar=False)
        ap = ap[(ap["ref"] == -1) & (ap["n_pos_pairs"] > 0)]
        if len(ap):
            m = mean_average_precision(ap, sameby=["treatment"], null_size=null_size, threshold=0.05,
                                       seed=seed, progress_bar=False).set_index("treatment")
            chance = (ap["n_pos_pairs"] / ap["n_total_pairs"]).groupby(ap["treatment"]).mean()
            idx = m.index
            table.loc[idx, "mAP"] = m["mean_average_precision"].astype(float)
            table.loc[idx, "chance_mAP"] = chance.reindex(idx).astype(float)
            table.loc[idx, "p_value"] = m["p_value"].astype(float)
            table.loc[idx, "corrected_p_value"] = m["corrected_p_value"].astype(float)
            table.loc[idx, "active"] = m["below_corrected_p"].astype(bool).to_numpy()
            table.loc[idx, "scored"] = True
    return table.reset_index(drop=True)


def map_scores(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
               treatment: Sequence[str] | None = None, control: str | None = None,
               columns: ColumnSpec | None = None, null_size: int = 10000, seed: int = 0,
               activity: pd.DataFrame | None = None) -> dict[str, float | None]:
    """copairs mAP: phenotypic activity (wells) and consistency (treatment profiles), with chance.

    Activity is scored for the treatments with at least two replicate wells (a well's positives
    are its replicates, its negatives the control wells); ``map_activity_scored`` and
    ``map_activity_treatments`` say how many of the non-control treatments that was. ``activity``:
    :func:`phenotypic_activity`'s table when already computed.
    """
    from copairs.map import average_precision, mean_average_precision

    spec = _spec(profiles, columns, control)
    feats = _features(profiles, features)
    treatment = _treatment_columns(profiles, spec, treatment, "mAP")
    moa_col, comp_col = spec.moa, treatment[0]
    df = profiles.reset_index(drop=True)
    ctrl = control_mask(df, spec)
    out: dict[str, float | None] = {}
    act = activity if activity is not None else phenotypic_activity(
        df, features=feats, treatment=treatment, columns=spec, null_size=null_size, seed=seed)
    scored = act[act["scored"]]
    out["map_activity_treatments"] = len(act)
    out["map_activity_scored"] = len(scored)
    if len(scored):
        out["map_activity"] = float(scored["mAP"].mean())
        out["map_activity_chance"] = float(scored["chance_mAP"].mean())
        out["fraction_active"] = float(scored["active"].astype(bool).mean())
    if moa_col is not None and moa_col in df:
        t = treatment_profiles(df[~ctrl], features=feats, treatment=treatment, columns=spec)
        t = t[t[moa_col].notna()].reset_index(drop=True)
        if len(t) > 2 and (t.groupby(moa_col)[comp_col].nunique() >= 2).any():
            meta = t[[moa_col, comp_col]].astype(str).reset_index(drop=True)
            ap = average_precision(meta, t[feats].to_numpy(dtype=np.float64), pos_sameby=[moa_col],
                                   pos_diffby=[comp_col], neg_sameby=[], neg_diffby=[moa_col], progress_bar=False)
            ap = ap[ap["n_pos_pairs"] > 0]
            if len(ap):
                m = mean_average_precision(ap, sameby=[moa_col], null_size=null_size, threshold=0.05,
                                           seed=seed, progress_bar=False)
                out["map_consistency"] = float(m["mean_average_precision"].mean())
                out["map_consistency_chance"] = _chance_map(ap, moa_col)
    return out


def replicate_map(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
                  treatment: Sequence[str] | None = None, control: str | None = None,
                  columns: ColumnSpec | None = None) -> float:
    """Label-free replicate reproducibility: copairs mAP (cosine) of retrieving a well's replicate
    wells (same compound and concentration) among all other wells (controls and other treatments),
    averaged per treatment over non-control treatments. Uses no MoA labels, so it may choose recipes.
    """
    from copairs.map import average_precision

    spec = _spec(profiles, columns, control)
    feats = _features(profiles, features)
    treatment = _treatment_columns(profiles, spec, treatment, "replicate mAP")
    df = profiles.reset_index(drop=True)
    x = df[feats].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise InputError("profiles contain NaN/inf values", hint="drop NaN columns before scoring")
    meta = pd.DataFrame({"treatment": df[list(treatment)].astype(object).fillna("").astype(str).agg("|".join, axis=1)})
    if not (meta["treatment"][~control_mask(df, spec)].value_counts() >= 2).any():
        raise InputError("no treatment has two or more replicate wells: replicate mAP is undefined")
    ap = average_precision(meta, x, pos_sameby=["treatment"], pos_diffby=[], neg_sameby=[],
                           neg_diffby=["treatment"], progress_bar=False)
    ap = ap[~control_mask(df, spec) & (ap["n_pos_pairs"] > 0).to_numpy()]
    if ap.empty:
        raise InputError("no treatment has two or more replicate wells: replicate mAP is undefined")
    return float(ap.groupby("treatment")["average_precision"].mean().mean())


def evaluate(profiles: pd.DataFrame, *, features: Sequence[str] | None = None,
             control: str | None = None, columns: ColumnSpec | None = None, with_map: bool = True,
             null_size: int = 10000, seed: int = 0) -> Evaluation:
    """NSC/NSCB on treatment medians (+ copairs mAP) for a per-well profile table.

    ``columns`` (from :func:`cellfusion_core.columns.resolve_columns`) names the table's compound,
    concentration, MoA and batch columns and the control rule; ``control`` alone overrides the
    control rule of the resolved columns.
    """
    spec = _spec(profiles, columns, control)
    if columns is not None and control is not None:
        spec = ColumnSpec(**{**spec.to_dict(), "control": control})
    spec.require("compound", "moa", what="evaluate (NSC)")
    feats = _features(profiles, features)
    x = profiles[feats].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        bad = [c for c, ok in zip(feats, np.isfinite(x).all(0)) if not ok]
        raise InputError(f"{len(bad)} feature columns contain NaN/inf, e.g. {bad[:3]}",
                         hint="run feature selection with drop_na_columns, or drop these columns")
    well_ctrl = control_mask(profiles, spec)
    t = treatment_profiles(profiles[~well_ctrl], features=feats, columns=spec)
    nsc, nscb = nsc_nscb(t, features=feats, columns=spec, controls=np.zeros(len(t), dtype=bool))
    n_ctrl = int(well_ctrl.sum())
    ev = Evaluation(nsc=nsc, nscb=nscb, n_wells=len(profiles), n_features=len(feats), n_controls=n_ctrl,
                    columns=spec.to_dict())
    if spec.batch is None:
        ev.notes.append("no batch column (--batch): NSCB not computed")
    if with_map:
        ev.activity = phenotypic_activity(profiles, features=feats, columns=spec, null_size=null_size, seed=seed)
        for k, v in map_scores(profiles, features=feats, columns=spec, null_size=null_size, seed=seed,
                               activity=ev.activity).items():
            setattr(ev, k, v)
        if n_ctrl == 0:
            ev.notes.append("no negative-control wells (--control): mAP phenotypic activity not computed")
        elif ev.map_activity is None:
            ev.notes.append(f"no treatment has >= 2 replicate wells (0 of {ev.map_activity_treatments}): "
                            "mAP phenotypic activity not computed")
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
