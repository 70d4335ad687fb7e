"""Add the platemap's metadata to a per-cell or per-well table (pycytominer's ``annotate``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from cellfusion_core.errors import InputError
from cellfusion_core.names import WELL, metadata_columns

from .checks import check_strata

log = logging.getLogger(__name__)


def annotate(table: pd.DataFrame, platemap: pd.DataFrame, *, on: Sequence[str] = (WELL,),
             allow_unimaged_wells: bool = False) -> pd.DataFrame:
    """Add the platemap's ``Metadata_*`` columns to a per-cell or per-well table (by well).

    Mirrors ``pycytominer.annotate`` (a left join of the platemap on the well), with checks:
    ``platemap`` is a table as returned by :func:`profiler.plate.read_platemap` (``Metadata_Well`` …).
    Wells of ``table`` missing from the platemap are an error (their treatment would be unknown);
    platemap wells without any row in ``table`` are an error unless ``allow_unimaged_wells``.
    """
    on = list(on)
    check_strata(table, on)
    missing_pm = [c for c in on if c not in platemap.columns]
    if missing_pm:
        raise InputError(f"the platemap lacks the columns {missing_pm}")
    keys_t = table[on].drop_duplicates()
    keys_p = platemap[on].drop_duplicates()
    m = keys_t.merge(keys_p, how="outer", indicator=True)
    def _names(rows: pd.DataFrame) -> list[str]:
        return ["/".join(map(str, r)) for r in rows[on].itertuples(index=False)]

    not_in_pm = _names(m[m["_merge"] == "left_only"])
    if not_in_pm:
        raise InputError(f"{len(not_in_pm)} wells have cells but are missing from the platemap: "
                         f"{', '.join(sorted(not_in_pm)[:10])}",
                         hint="add these wells to platemap.csv (well,compound,concentration,control)")
    no_img = _names(m[m["_merge"] == "right_only"])
    if no_img:
        msg = f"{len(no_img)} platemap wells have no cells/images: {', '.join(sorted(no_img)[:10])}"
        if not allow_unimaged_wells:
            raise InputError(msg, hint="check the image folder, or allow unimaged wells "
                                       "(--allow-unimaged-wells) if they were not imaged on purpose")
        log.warning(msg)
    extra = [c for c in platemap.columns if c not in on]
    clash = [c for c in extra if c in table.columns]
    base = table.drop(columns=clash)
    out = base.merge(platemap[on + extra], on=on, how="left")
    meta = metadata_columns(out)
    return out[meta + [c for c in out.columns if c not in meta]]
