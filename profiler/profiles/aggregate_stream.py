"""Per-well aggregation of per-cell Parquet (a file, a folder of files or a list), out of core.

Two engines, same result (one row per stratum, sorted by the strata; see :func:`aggregate_parquet`):

* **stream** (the default whenever it applies): ``profiler extract`` writes cells in plate order
  (plate, well, site), so a well's cells are one contiguous run of rows across the files, taken in
  the order given (a folder: its ``*.parquet`` files sorted by path). The strata and metadata
  columns are read first, row group by row group (cheap), to find each stratum's run; if every
  stratum is one run, the feature columns are read in tasks of whole row groups (about
  ``_TASK_ROWS`` rows) and blocks of columns (``_BLOCK_BYTES`` of values at most) on a pool of
  ``threads`` threads: each task decodes its rows with pyarrow (GIL released) and aggregates the
  strata that lie wholly inside it, column by column on the buffers Arrow decoded (no copy), with
  the numba kernels (:mod:`profiler.profiles._median_kernels`, GIL released: exact counting
  selection — NaN skipped, the mean of the two middle values for an even count, NaN for an
  all-NaN column, like pandas/pycytominer), so decoding and aggregating different tasks overlap on
  every thread. The rows of a stratum cut by task edges come back as pieces; the main thread
  aggregates that stratum when its last piece arrives. Memory: ``threads + 1`` tasks in flight,
  each a block of columns (sized to stay under ``memory_mb`` too), plus the rows of the stratum
  cut by task edges — bounded by a well, not by the plate. While it runs, freed memory is kept
  for the next read (:func:`profiler.heap.reused_heap`).
* **duckdb** (the fallback when a stratum's rows are *not* contiguous, e.g. a user's Parquet
  sorted by something else, or a stratum value is null): DuckDB streams the files and aggregates
  the features in batches sized so that one pass holds at most ``memory_mb`` of feature values (a
  median must buffer its group's values); the median is ``quantile_cont(x, 0.5)`` with NaN mapped
  to NULL, which equals pandas' median. About 4x slower than the stream engine for medians (2 M
  cells × 500 features, 2 threads: 120,699 against 516,040 cells/s).

``engine=`` forces one (``"stream"`` raises :class:`InputError` saying why it cannot stream).
The engine used is in the result's ``attrs["engine"]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.names import CELL_COUNT, PLATE, WELL, is_metadata, is_profile_feature
from profiler.heap import gc_frozen, reused_heap

_OPS = {"median": "quantile_cont({x}, 0.5)", "mean": "avg({x})"}
ENGINES = ("auto", "stream", "duckdb")


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


def warm_up() -> None:
    """Compile (or load from numba's on-disk cache) the streaming kernels now, e.g. before timing."""
    for dt in (np.float32, np.float64):
        for n in (3, 200):  # short runs and runs long enough for the counting levels
            column = np.zeros(n, dt)
            decoded = column.copy()
            decoded.setflags(write=False)  # Arrow's buffers come read-only
            for c in (column, decoded):
                for op in _OPS:
                    _aggregate([c], [0], [n], op)


def aggregate_parquet(source: str | Path | Sequence[str | Path], *, strata: Sequence[str] = (PLATE, WELL),
                      operation: str = "median", memory_mb: float = 1500, threads: int | None = None,
                      features: Sequence[str] | None = None, engine: str = "auto") -> pd.DataFrame:
    """Per-well ``operation`` (median or mean) of every profile feature of per-cell Parquet file(s).

    ``source``: one file, a folder (its ``*.parquet`` files, recursively, sorted by path: e.g. the
    per-site files of ``profiler extract``) or a list of files (in that order). ``features`` default:
    the columns :func:`cellfusion_core.names.is_profile_feature` accepts (position and numbering columns
    stay in the per-cell table but are not aggregated). ``engine``: ``"auto"`` streams stratum by
    stratum when each stratum's rows are contiguous in file order and uses DuckDB otherwise (see the
    module docstring); ``"stream"`` or ``"duckdb"`` force one. ``threads``: CPU threads (default:
    all). NaN values are skipped, as pandas/pycytominer skip them.

    Returns one row per stratum, sorted by strata: strata, ``Metadata_Object_Count``, the other
    metadata constant within each stratum (columns that vary within a stratum are dropped), then the
    features (float64). ``attrs["engine"]`` says which engine ran.
    """
    if operation not in _OPS:
        raise ConfigError(f"unknown aggregate operation {operation!r}", hint="use 'median' or 'mean'")
    if engine not in ENGINES:
        raise ConfigError(f"unknown aggregate engine {engine!r}", hint="use 'auto', 'stream' or 'duckdb'")
    files = _files(source)
    try:
        schema = pq.read_schema(files[0])
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"not a readable Parquet file ({exc})", path=files[0]) from exc
    names = schema.names
    missing = [s for s in strata if s not in names]
    if missing:
        raise InputError(f"the per-cell table lacks the grouping columns {missing}", path=files[0])
    # position/numbering columns (Location_*, AreaShape_Center_*, Parent_* …) are not phenotypes
    feats = list(features) if features is not None else [n for n in names if is_profile_feature(n)]
    absent = [f for f in feats if f not in names]
    if absent:
        raise InputError(f"the per-cell table lacks the feature columns {absent[:5]}", path=files[0])
    bad = [f for f in feats if not _numeric(schema.field(f).type)]
    if bad:
        raise InputError(f"non-numeric feature columns {bad[:5]}", path=files[0],
                         hint="prefix metadata columns with 'Metadata_'")
    meta = [n for n in names if is_metadata(n) and n not in strata]
    if engine != "duckdb":
        plan = _scan(files, list(strata), meta, feats)
        if isinstance(plan, _Plan):
            with gc_frozen(), reused_heap():  # (each task's blocks reuse the last one's memory: profiler.heap)
                out = _stream(plan, files, list(strata), meta, feats, operation, memory_mb, threads)
            out.attrs["engine"] = "stream"
            return out
        if engine == "stream":
            raise InputError(f"cannot aggregate stratum by stratum: {plan}", path=files[0] if len(files) == 1 else None,
                             hint="use engine='duckdb' (or 'auto'), or sort the cells by the strata")
    out = _duckdb(files, list(strata), meta, feats, operation, memory_mb, threads)
    out.attrs["engine"] = "duckdb"
    return out


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)


# ---------------------------------------------------------------------------------------------
# stream engine: the plan


@dataclass
class _Group:
    """One stratum: its key, its number of rows, its metadata (its rows follow the previous group's)."""

    key: tuple
    rows: int = 0
    first: list = field(default_factory=list)  # first value of each metadata column
    last: list = field(default_factory=list)   # last value of each metadata column
    const: list = field(default_factory=list)  # is each metadata column constant so far


@dataclass
class _Plan:
    groups: list        # in file order; together they cover every row once, in order
    tasks: list         # reads: (file index, [row groups], rows) in file order
    feature_types: set


_TASK_ROWS = 65_536    # rows per read (whole row groups; at least one)
#: feature values per read (bytes): a block of columns this size or less. Fewer columns per read
#: cost nothing in decoding, and the same memory serves read after read; with whole-width reads
#: (50,000 rows × 500 columns: 100 MB) a process's first aggregation spent its extra time in the
#: kernel, zeroing fresh pages for Arrow's allocator. Measured 2026-12-07 on 2 M cells × 500
#: features, 2 threads, fresh processes: 64 MiB blocks 7.45–7.47 CPU s, 16 MiB 6.34–6.47,
#: 8 MiB 6.41–6.61, 4 MiB 6.48–6.53.
_BLOCK_BYTES = 16 * 2**20


def _plain(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def _changes(arr: pa.Array) -> np.ndarray:
    """Boolean (n-1): does row i+1 differ from row i (nulls equal nulls, NaN equals NaN)?"""
    a, b = arr.slice(0, len(arr) - 1), arr.slice(1)
    ne = pc.fill_null(pc.not_equal(a, b), False)
    ne = pc.or_(ne, pc.xor(pc.is_null(a), pc.is_null(b)))
    if pa.types.is_floating(arr.type):
        ne = pc.and_(ne, pc.invert(pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False)))
    return ne.to_numpy(zero_copy_only=False)


def _same(a, b) -> bool:
    return a == b or (a is None and b is None) or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


def _file_tasks(fi: int, pf: pq.ParquetFile) -> list:
    """Consecutive non-empty row groups of one file, about _TASK_ROWS rows per read."""
    tasks, cur, rows = [], [], 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if n == 0:
            continue
        if cur and rows + n > _TASK_ROWS:
            tasks.append((fi, cur, rows))
            cur, rows = [], 0
        cur.append(g)
        rows += n
    if cur:
        tasks.append((fi, cur, rows))
    return tasks


def _scan(files: list[Path], strata: list[str], meta: list[str], feats: list[str]) -> _Plan | str:
    """Read the strata and metadata columns: the strata in file order, or why they cannot stream."""
    groups: dict[tuple, _Group] = {}
    closed: set[tuple] = set()
    current: _Group | None = None
    types: set = set()
    tasks: list = []
    needed = set(strata) | set(feats)
    for fi, path in enumerate(files):
        try:
            pf = pq.ParquetFile(path)
            sch = pf.schema_arrow
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"not a readable Parquet file ({exc})", path=path) from exc
        lacking = sorted(needed - set(sch.names))
        if lacking:
            raise InputError(f"lacks the columns {lacking[:5]} that {files[0].name} has", path=path,
                             hint="all per-cell files of one table must have the same columns")
        types.update(sch.field(f).type for f in feats)
        bad = [f for f in feats if not _numeric(sch.field(f).type)]
        if bad:
            raise InputError(f"non-numeric feature columns {bad[:5]}", path=path)
        file_meta = [m for m in meta if m in sch.names]
        for task in _file_tasks(fi, pf):
            tasks.append(task)
            try:
                t = pf.read_row_groups(task[1], columns=strata + file_meta, use_threads=False)
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"row groups {task[1]} are unreadable ({exc})", path=path) from exc
            n = t.num_rows
            cols = [_plain(t.column(s)) for s in strata]
            for s, c in zip(strata, cols):
                if c.null_count:
                    return f"the grouping column {s} has null values ({path.name})"
            change = np.zeros(n - 1, bool)
            for c in cols:
                change |= _changes(c)
            starts = np.concatenate([[0], np.flatnonzero(change) + 1])
            stops = np.append(starts[1:], n)
            keys = list(zip(*[c.take(pa.array(starts)).to_pylist() for c in cols]))
            if len(set(keys)) < len(keys):
                return f"the cells of stratum {keys[0]!r} are not contiguous ({path.name})"
            # metadata: per run, first/last value and whether it changes inside the run
            mvals = []
            for m in meta:
                if m not in file_meta:  # a file without the column: the column cannot be constant
                    mvals.append(None)
                    continue
                c = _plain(t.column(m))
                ch = np.concatenate([[0], np.cumsum(_changes(c))])
                mvals.append((c.take(pa.array(starts)).to_pylist(), c.take(pa.array(stops - 1)).to_pylist(),
                              ch[stops - 1] == ch[starts]))
            for r, key in enumerate(keys):
                first = [None if v is None else v[0][r] for v in mvals]
                last = [None if v is None else v[1][r] for v in mvals]
                const = [v is not None and bool(v[2][r]) for v in mvals]
                if current is not None and key == current.key:
                    current.const = [a and b and _same(x, y)
                                     for a, b, x, y in zip(current.const, const, current.last, first)]
                    current.last = last
                else:
                    if key in closed:
                        return f"the cells of stratum {key!r} are not contiguous in file order (again in {path.name})"
                    if current is not None:
                        closed.add(current.key)
                    current = groups[key] = _Group(key, first=first, last=last, const=const)
                current.rows += int(stops[r] - starts[r])
    return _Plan(list(groups.values()), tasks, types)


# ---------------------------------------------------------------------------------------------
# stream engine: the features


class _Reader:
    """Reads feature columns on worker threads: each thread opens a file once (its footer and schema
    are parsed once, not per read)."""

    def __init__(self, files: list[Path]):
        import threading

        self.files = files
        self.local = threading.local()

    def read(self, fi: int, row_groups: list, names: list) -> list[np.ndarray]:
        """The columns ``names`` of the row groups, each a contiguous float32 or float64 array (nulls
        → NaN): Arrow's own buffer where it is one already (no copy), else a converted copy."""
        cache = self.local.__dict__.setdefault("files", {})
        path = self.files[fi]
        try:
            if fi not in cache:
                cache.clear()  # files are read in order: keep one open per thread
                cache[fi] = pq.ParquetFile(path)
            table = cache[fi].read_row_groups(row_groups, columns=names, use_threads=False)
            return [_floats(col) for col in table.columns]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise InputError(f"row groups {row_groups}: cannot read the features as numbers ({exc})",
                             path=path) from exc


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    """One column as a float array: float32/float64 as stored, float16 as float32, integers and
    booleans as float64; nulls → NaN (``to_numpy`` of a float array with nulls fills them)."""
    arr = _plain(col)
    if arr.type not in (pa.float32(), pa.float64()):
        arr = arr.cast(pa.float32() if arr.type == pa.float16() else pa.float64())
    return arr.to_numpy(zero_copy_only=False)


def _task(reader: _Reader, task: tuple, row0: int, bounds: np.ndarray, names: list, np_dtype, operation: str):
    """One read task, on a worker thread: decode its row groups (pyarrow releases the GIL), aggregate
    the strata that lie wholly inside it, column by column on the decoded buffers (numba, GIL
    released), and hand back copies of the rows of the strata cut by its first and last row:
    (first whole group, values of the whole groups, [(group, rows) pieces])."""
    cols = reader.read(task[0], task[1], names)
    n = len(cols[0])
    if n != task[2]:  # the scan and the reads disagree: a file changed meanwhile
        raise InputError("the per-cell files changed while they were aggregated", path=reader.files[task[0]])
    end = row0 + n
    g0 = int(np.searchsorted(bounds, row0, "right")) - 1          # group of the first row
    g1 = int(np.searchsorted(bounds, end - 1, "right")) - 1        # group of the last row
    a = g0 if bounds[g0] == row0 else g0 + 1                       # first whole group
    b = g1 + 1 if bounds[g1 + 1] == end else g1                    # past the last whole group
    pieces = []
    if a > g0:  # the first group started in an earlier task (the block may hold nothing else)
        pieces.append((g0, _rows(cols, 0, min(int(bounds[g0 + 1]), end) - row0, np_dtype)))
    if b <= g1 and not (g1 == g0 and a > g0):  # the last group goes on in a later task
        pieces.append((g1, _rows(cols, int(bounds[g1]) - row0, n, np_dtype)))
    values = None
    if b > a:
        values = _aggregate(cols, bounds[a:b] - row0, bounds[a + 1:b + 1] - row0, operation)
    return a, values, pieces


def _rows(cols: list[np.ndarray], start: int, stop: int, np_dtype) -> np.ndarray:
    """Rows start:stop of the columns, copied into a column-major block."""
    out = np.empty((stop - start, len(cols)), np_dtype, order="F")
    for j, c in enumerate(cols):
        out[:, j] = c[start:stop]
    return out


def _aggregate(cols, starts, stops, operation: str) -> np.ndarray:
    """(runs × columns) float64 medians or means of the row runs of ``cols``: a list of 1-D columns
    or a column-major block."""
    from profiler.profiles import _median_kernels as kern

    if operation == "median":
        return kern.medians(cols, starts, stops)
    sums, counts = kern.sums_counts(cols, starts, stops)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _stream(plan: _Plan, files: list[Path], strata: list[str], meta: list[str], feats: list[str],
            operation: str, memory_mb: float, threads: int | None) -> pd.DataFrame:
    """Aggregate the strata of the plan, read task by read task on a thread pool.

    Each worker decodes one read task (about _TASK_ROWS rows of a block of feature columns) and
    aggregates the strata wholly inside it, so decoding and the kernels of different tasks overlap
    on all threads; the rows of a stratum cut by task edges come back as pieces, and the main
    thread aggregates that stratum once its last piece has arrived. Tasks in flight: threads + 1,
    each holding its block at most twice (Arrow's buffers, and converted copies of the columns not
    stored as float32/float64): the column blocks are sized so that this stays under ``memory_mb``
    and each read decodes at most ``_BLOCK_BYTES`` of values (a well cut by task edges adds its
    rows once)."""
    import os
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    f32 = all(t in (pa.float32(), pa.float16()) for t in plan.feature_types)
    np_dtype = np.float32 if f32 else np.float64  # of the blocks of rows cut by task edges
    n_groups, n_feats = len(plan.groups), len(feats)
    res = np.full((n_groups, n_feats), np.nan)
    n_threads = max(1, int(threads or os.cpu_count() or 1))
    in_flight = n_threads + 1
    longest = max([t[2] for t in plan.tasks], default=1)
    per_col = 2 * in_flight * longest * np.dtype(np_dtype).itemsize
    width = max(1, min(n_feats, int(memory_mb * 1e6 // per_col),
                       _BLOCK_BYTES // (longest * np.dtype(np_dtype).itemsize))) if n_feats else 1
    bounds = np.concatenate([[0], np.cumsum([g.rows for g in plan.groups])]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum([t[2] for t in plan.tasks])]).astype(np.int64)
    reader = _Reader(files)
    with ThreadPoolExecutor(n_threads) as pool:
        for c0 in range(0, n_feats, width):
            names = feats[c0:c0 + width]
            cs = slice(c0, c0 + len(names))
            pending: deque = deque()
            open_piece: tuple | None = None   # (group, [row blocks]) of the group cut by task edges
            it = iter(range(len(plan.tasks)))
            for i in it:
                pending.append(pool.submit(_task, reader, plan.tasks[i], int(offsets[i]), bounds, names, np_dtype,
                                           operation))
                if len(pending) >= in_flight:
                    break
            while pending:
                a, values, pieces = pending.popleft().result()
                i = next(it, None)
                if i is not None:
                    pending.append(pool.submit(_task, reader, plan.tasks[i], int(offsets[i]), bounds, names,
                                               np_dtype, operation))
                if values is not None:
                    res[a:a + values.shape[0], cs] = values
                for g, rows in pieces:
                    if open_piece is None or open_piece[0] != g:
                        open_piece = (g, [])
                    open_piece[1].append(rows)
                    if sum(r.shape[0] for r in open_piece[1]) == bounds[g + 1] - bounds[g]:
                        x = _concat(open_piece[1], np_dtype)
                        res[g, cs] = _aggregate(x, [0], [x.shape[0]], operation)[0]
                        open_piece = None
            if open_piece is not None:  # the scan and the reads disagree: a file changed meanwhile
                raise InputError("the per-cell files changed while they were aggregated", path=files[0])
    # the table: strata, count, constant metadata (the Arrow types of the first file), features
    order = sorted(range(n_groups), key=lambda i: plan.groups[i].key)
    schema = pq.read_schema(files[0])
    cols: dict[str, pa.Array] = {}
    for j, s in enumerate(strata):
        cols[s] = pa.array([plan.groups[i].key[j] for i in order], type=schema.field(s).type)
    cols[CELL_COUNT] = pa.array([plan.groups[i].rows for i in order], type=pa.int64())
    for j, m in enumerate(meta):
        if all(plan.groups[i].const[j] for i in order):
            cols[m] = pa.array([plan.groups[i].first[j] for i in order], type=schema.field(m).type)
    head = pa.table(cols).to_pandas() if cols else pd.DataFrame(index=range(n_groups))
    body = pd.DataFrame(res[order] if n_groups else np.empty((0, n_feats)), columns=feats)
    return pd.concat([head.reset_index(drop=True), body], axis=1)


def _concat(blocks: list[np.ndarray], dtype) -> np.ndarray:
    if len(blocks) == 1:
        return np.asfortranarray(blocks[0])
    out = np.empty((sum(b.shape[0] for b in blocks), blocks[0].shape[1]), dtype, order="F")
    r = 0
    for b in blocks:
        out[r:r + b.shape[0]] = b
        r += b.shape[0]
    return out


# ---------------------------------------------------------------------------------------------
# duckdb engine


def _duckdb(files: list[Path], strata: list[str], meta: list[str], feats: list[str], operation: str,
            memory_mb: float, threads: int | None) -> pd.DataFrame:
    try:
        n_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"not a readable Parquet file ({exc})", path=files[0]) from exc
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
    return out[metas + list(feats)]
