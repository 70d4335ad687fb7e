"""Which column of a user's table plays which role — and which rows are negative controls.

Users' tables keep their column names (DESIGN.md). A command that needs the compound, the
concentration, the mechanism of action, the batch, the plate or the well finds it with
:func:`resolve_columns`: a name the user gave (``--compound`` …) wins; otherwise ours
(``Metadata_Compound`` …), then the common pycytominer / JUMP / LINCS names (:data:`CANDIDATES`),
each first exactly, then ignoring case.

The negative-control definition lives here, once (:func:`control_mask`):

* ``control`` given (``--control``): a value of the compound column (``DMSO``) selects the rows with
  that compound; anything else is a pandas query (``Metadata_pert_type == 'control'``).
* by default, a row is a negative control when a control-marker column says so
  (``Metadata_Control == 'negative'``, ours; ``Metadata_control_type == 'negcon'``, JUMP; case
  ignored), when its compound is ``DMSO``, or when its compound is empty (pycytominer/LINCS tables
  leave the compound of DMSO wells empty).

The profile steps (:mod:`profiler.profiles`) fit on :func:`control_mask`'s rows by default
(``samples="controls"``). :data:`NEGATIVE_CONTROL_QUERY` is the marker alone as a pycytominer
``samples`` query; :func:`mark_controls` writes any rule's mask into that marker column, so the
query then selects the rows of that rule (e.g. a ``--control`` given by the user).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.names import BATCH, COMPOUND, CONCENTRATION, CONTROL, MOA, PLATE, WELL

__all__ = ["ROLES", "CANDIDATES", "CONTROL_MARKERS", "DEFAULT_CONTROL_COMPOUNDS", "NEGATIVE_CONTROL_QUERY",
           "ColumnSpec", "resolve_columns", "control_mask", "mark_controls"]

#: The roles a command may need, in the order they are reported.
ROLES = ("compound", "concentration", "moa", "batch", "plate", "well")

#: Names tried for each role when the user names none: ours first, then pycytominer/JUMP/LINCS ones.
CANDIDATES: Mapping[str, tuple[str, ...]] = {
    "compound": (COMPOUND, "Metadata_pert_iname", "Metadata_broad_sample", "Metadata_JCP2022",
                 "Metadata_pert_id", "Metadata_InChIKey"),
    "concentration": (CONCENTRATION, "Metadata_mmoles_per_liter", "Metadata_dose_recode", "Metadata_pert_dose",
                      "Metadata_mg_per_ml"),
    "moa": (MOA, "Metadata_moa", "Metadata_MOA", "Metadata_mechanism"),
    "batch": (BATCH, "Metadata_Batch_Number"),
    "plate": (PLATE, "Metadata_Assay_Plate_Barcode", "Metadata_Plate_Map_Name"),
    "well": (WELL, "Metadata_well_position", "Metadata_Well_Position"),
}

#: Columns that mark control rows, and the value (case ignored) that means "negative control".
CONTROL_MARKERS: Mapping[str, str] = {CONTROL: "negative", "Metadata_control_type": "negcon"}

#: Compounds that are negative controls when no ``control`` is given.
DEFAULT_CONTROL_COMPOUNDS = ("DMSO",)

#: The default marker rule as a pycytominer ``samples`` query (``Metadata_Control == 'negative'``).
NEGATIVE_CONTROL_QUERY = f"{CONTROL} == 'negative'"


@dataclass(frozen=True)
class ColumnSpec:
    """The column of each role in one table (``None``: the table has none) and the control rule.

    ``sources`` says how each role was found: ``"given"`` (named by the user), ``"default"`` (our
    name) or ``"recognised"`` (a pycytominer/JUMP/LINCS name). ``control`` is the user's
    ``--control`` (``None``: the default rule of :func:`control_mask`).
    """

    compound: str | None = None
    concentration: str | None = None
    moa: str | None = None
    batch: str | None = None
    plate: str | None = None
    well: str | None = None
    control: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def treatment(self) -> tuple[str, ...]:
        """The columns that define a treatment: compound (+ concentration when present)."""
        return tuple(c for c in (self.compound, self.concentration) if c is not None)

    def role_of(self, column: str) -> str | None:
        """The role a column plays (``"compound"`` …), or ``None``."""
        return next((r for r in ROLES if getattr(self, r) == column), None)

    def require(self, *roles: str, what: str, path=None) -> None:
        """An :class:`InputError` naming the option to pass when a needed role has no column."""
        missing = [r for r in roles if getattr(self, r) is None]
        if missing:
            tried = "; ".join(f"--{r}: tried {', '.join(CANDIDATES[r])}" for r in missing)
            raise InputError(f"{what} needs a {' and a '.join(missing)} column, and none was found ({tried})",
                             path=path, hint="name the column(s) with " + ", ".join(f"--{r} COLUMN" for r in missing))

    def describe(self) -> str:
        """One line: ``compound=Metadata_broad_sample (recognised), …, control: default rule``."""
        parts = [f"{r}={getattr(self, r)} ({self.sources.get(r, '?')})" for r in ROLES if getattr(self, r)]
        parts.append(f"control: {self.control!r}" if self.control is not None else
                     "control: default rule (Metadata_Control/control_type marker, DMSO or empty compound)")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = dict(self.sources)
        return d


def _find(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    columns = list(columns)
    for name in candidates:
        if name in columns:
            return name
    lower = {c.lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def resolve_columns(df: pd.DataFrame | Iterable[str], *, compound: str | None = None,
                    concentration: str | None = None, moa: str | None = None, batch: str | None = None,
                    plate: str | None = None, well: str | None = None, control: str | None = None,
                    path=None) -> ColumnSpec:
    """The :class:`ColumnSpec` of a table: given names (checked), else ours, else recognised ones.

    A given name that is not a column is an :class:`InputError` listing the table's metadata
    columns. ``control`` is kept as given (checked when :func:`control_mask` applies it).
    """
    columns = list(df.columns) if isinstance(df, pd.DataFrame) else list(df)
    given = {"compound": compound, "concentration": concentration, "moa": moa, "batch": batch,
             "plate": plate, "well": well}
    found: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    for role in ROLES:
        name = given[role]
        if name is not None and name != "":
            if name not in columns:
                meta = [c for c in columns if c.startswith("Metadata_")] or columns[:10]
                raise InputError(f"--{role} column {name!r} is not in the table",
                                 path=path, hint=f"choose one of: {', '.join(meta)}")
            found[role], sources[role] = name, "given"
            continue
        hit = _find(columns, CANDIDATES[role])
        found[role] = hit
        if hit is not None:
            sources[role] = "default" if hit == CANDIDATES[role][0] else "recognised"
    if control is not None and not str(control).strip():
        control = None
    return ColumnSpec(**found, control=control, sources=sources)


def _is_empty(values: pd.Series) -> np.ndarray:
    return (values.isna() | values.astype(str).str.strip().isin(["", "nan", "None", "<NA>"])).to_numpy()


def control_mask(df: pd.DataFrame, columns: ColumnSpec | None = None) -> np.ndarray:
    """Boolean mask of the negative-control rows of ``df`` (see the module docstring for the rule)."""
    spec = columns if columns is not None else resolve_columns(df)
    n = len(df)
    if spec.control is not None:
        ctl = str(spec.control)
        if spec.compound is not None and spec.compound in df.columns and \
                df[spec.compound].astype(str).eq(ctl).any():
            return df[spec.compound].astype(str).eq(ctl).to_numpy()
        try:
            picked = df.reset_index(drop=True).query(ctl, engine="python")
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad query
            where = f"a value of the compound column {spec.compound!r}" if spec.compound else "a compound value"
            raise ConfigError(f"--control {ctl!r} is neither {where} nor a valid pandas query "
                              f"({type(exc).__name__}: {exc})",
                              hint="give the control compound (e.g. DMSO) or a query such as "
                                   "\"Metadata_pert_type == 'control'\"") from exc
        mask = np.zeros(n, dtype=bool)
        mask[picked.index.to_numpy()] = True
        return mask
    mask = np.zeros(n, dtype=bool)
    for col, value in CONTROL_MARKERS.items():
        if col in df.columns:
            mask |= df[col].astype(str).str.strip().str.lower().eq(value).to_numpy()
    if spec.compound is not None and spec.compound in df.columns:
        comp = df[spec.compound]
        mask |= comp.astype(str).isin(DEFAULT_CONTROL_COMPOUNDS).to_numpy()
        mask |= _is_empty(comp)
    return mask


def mark_controls(df: pd.DataFrame, columns: ColumnSpec | None = None) -> pd.DataFrame:
    """A copy of ``df`` whose ``Metadata_Control`` is ``"negative"`` exactly on :func:`control_mask`'s rows.

    Other rows keep their marker (``"positive"`` …) unless it said ``"negative"`` (then ``""``), so
    :data:`NEGATIVE_CONTROL_QUERY` — the marker as a pycytominer ``samples`` query — selects the
    same rows as the given control rule.
    """
    mask = control_mask(df, columns)
    out = df.copy()
    old = out[CONTROL].astype(object).where(out[CONTROL].notna(), "") if CONTROL in out.columns else ""
    out[CONTROL] = np.where(mask, "negative", pd.Series(old, index=out.index).astype(str)
                            .where(lambda s: s.str.strip().str.lower() != "negative", ""))
    return out
