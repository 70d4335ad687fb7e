"""Out-of-core aggregation of per-cell Parquet with DuckDB.

Memory does not grow with the number of cells beyond a budget: DuckDB streams the Parquet files
(only the columns of one pass are read) and the features are aggregated in batches sized so that
one pass holds at most ``memory_mb`` of feature values (a median must buffer its group's values).
Only the per-well result is held in memory. NaN values are skipped, as pandas/pycytominer skip
them; the median is DuckDB's ``quantile_cont(x, 0.5)``, which equals pandas' median (the mean of
the two middle values for an even count).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from profiler.errors import ConfigError, InputError
from profiler.names import CELL_COUNT, PLATE, WELL, is_metadata, is_profile_feature

_OPS = {"median": "quantile_cont({x}, 0.5)", "mean": "avg({x})"}


def _files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        p = Path(source)
        files = sorted(p.rglob("*.parquet")) if p.is_dir() else [p]
    else:
        files = [Path(s) for s in source]
    missing = [f for f in files if not f.is_file()]
    if missing or not files:
        raise InputError("no per-cell Parquet file found", path=missing[0] if missing else source)
    return files


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def aggregate_parquet(source: str | Path | Sequence[str | Path], *, strata: Sequence[str] = (PLATE, WELL),
                      operation: str = "median", memory_mb: float = 1500, threads: int | None = None,
                      features: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-well ``operation`` of every profile feature of per-cell Parquet file(s) (a file, folder or list).

    ``features`` default: the columns :func:`profiler.names.is_profile_feature` accepts (position and
    numbering columns stay in the per-cell table but are not aggregated).

    Returns one row per stratum: strata, metadata constant within each stratum,
    ``Metadata_Object_Count`` and the features (float64), sorted by strata.
    """
    if operation not in _OPS:
        raise ConfigError(f"unknown aggregate operation {operation!r}", hint="use 'median' or 'mean'")
    files = _files(source)
    try:
        schema = pq.read_schema(files[0])
        n_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"not a readable Parquet file ({exc})", path=files[0]) from exc
    names = schema.names
    missing = [s for s in strata if s not in names]
    if missing:
        raise InputError(f"the per-cell table lacks the grouping columns {missing}", path=files[0])
    import pyarrow as pa

    # position/numbering columns (Location_*, AreaShape_Center_*, Parent_* …) are not phenotypes
    feats = list(features) if features is not None else [n for n in names if is_profile_feature(n)]
    bad = [f for f in feats if not (pa.types.is_floating(schema.field(f).type) or pa.types.is_integer(schema.field(f).type)
                                    or pa.types.is_boolean(schema.field(f).type))]
    if bad:
        raise InputError(f"non-numeric feature columns {bad[:5]}", path=files[0],
                         hint="prefix metadata columns with 'Metadata_'")
    meta = [n for n in names if is_metadata(n) and n not in strata]
    con = duckdb.connect()
    try:
        con.execute(f"SET memory_limit='{max(int(memory_mb * 2), 256)}MB'")
        con.execute("SET preserve_insertion_order=false")
        if threads:
            con.execute(f"SET threads={int(threads)}")
        src = "read_parquet([" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "])"
        keys = ", ".join(_q(s) for s in strata)
        # pass 0: counts and metadata constant within each stratum
        sel = [f"count(*) AS {_q(CELL_COUNT)}"]
        for m in meta:
            sel += [f"count(DISTINCT {_q(m)}) + max(CASE WHEN {_q(m)} IS NULL THEN 1 ELSE 0 END) AS {_q('n_' + m)}",
                    f"any_value({_q(m)}) AS {_q(m)}"]
        out = con.execute(f"SELECT {keys}, {', '.join(sel)} FROM {src} GROUP BY {keys} ORDER BY {keys}").df()
        for m in meta:
            if (out["n_" + m] > 1).any():
                out = out.drop(columns=[m])
            out = out.drop(columns=["n_" + m])
        # feature passes: at most memory_mb of buffered values per pass
        # a holistic aggregate (median) buffers each value, with ~3x overhead over 8-byte doubles
        per_feature_mb = max(n_rows * 24 / 1e6, 1e-3)
        batch = max(1, min(len(feats), math.floor(memory_mb / per_feature_mb))) if feats else 1
        tmpl = _OPS[operation]
        for i in range(0, len(feats), batch):
            chunk = feats[i:i + batch]
            exprs = [tmpl.format(x=f"CASE WHEN isnan(CAST({_q(f)} AS DOUBLE)) THEN NULL "
                                   f"ELSE CAST({_q(f)} AS DOUBLE) END") + f" AS {_q(f)}" for f in chunk]
            part = con.execute(f"SELECT {keys}, {', '.join(exprs)} FROM {src} GROUP BY {keys} ORDER BY {keys}").df()
            out = pd.concat([out, part[chunk].astype("float64").reset_index(drop=True)], axis=1)
    except duckdb.Error as exc:
        raise InputError(f"DuckDB could not aggregate the per-cell Parquet ({exc})", path=files[0]) from exc
    finally:
        con.close()
    metas = [c for c in out.columns if is_metadata(c)]
    return out[metas + [f for f in feats]]
