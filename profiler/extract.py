"""``profiler extract``: plate folder → per-cell table → per-well profiles, at plate scale.

Three jobs, three modules:

* :mod:`profiler.site` — one site's compute (images in, one row per cell out);
* :mod:`profiler.partitions` — each site's partition under ``OUT/sites/`` and when it can be reused;
* this module — the plate: lock the output folder, validate everything that can be known before any
  image is read (pipeline, platemap, control wells for the profile recipe), run the sites as Dask
  tasks (:func:`run_sites`; or in this process with ``workers=0``), then stream the partitions, in
  plate order and one site at a time, into the outputs:

``OUT/single_cell.parquet``  one row per cell (Parquet row groups written site by site; never held in memory)
``OUT/image.parquet``        one row per site, with QC and skipped sites and why
``OUT/crops.tif``/``crops.parquet``  with ``--crops``: one crop per cell, written page by page
``OUT/profiles.parquet``     per-well profiles from the streaming aggregation (:mod:`profiler.profiles.aggregate_stream`)
                             and the pipeline's recipe (:mod:`profiler.profiles`)
``OUT/outliers.json``        the per-cell outlier model (:mod:`profiler.outliers`), fitted on a sample of
                             control-well cells; every cell gets ``Metadata_Outlier_Score``/``Metadata_Outlier``
``OUT/manifest.json``        inputs, parameters, outputs, every skipped site

Peak memory is bounded by a site (and one well in the aggregation), not by the plate; a small plate
(partitions of at most :data:`PLATE_IN_MEMORY_MB` together) is held in memory once for the outlier
fit and the merge (with ``workers=0`` the tables the sites just wrote, not read back). A run that
was killed continues where it stopped and gives the same outputs; a profile stage that fails late
keeps the per-cell and image tables and the manifest and says how to rebuild the profiles alone.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import traceback
import uuid
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellfusion_core import io
from profiler.config import AssayConfig, load_pipeline
from profiler.crops import crop_params, load_site_crops, write_crop_stack
from cellfusion_core.errors import CellfusionError, ConfigError, InputError
from cellfusion_core.layout import (CROPS_TABLE, CROPS_TIF, EXTRACT_LOCK, IMAGE, OUTLIERS_MODEL, OVERLAYS_DIR,
                                   PLATEMAP_FILE, PROFILES, SINGLE_CELL, SITES_DIR, illumination_file)
from profiler.illum import config_params as illum_params
from profiler.illum import plate_illumination, save_illumination
from cellfusion_core.names import CELL_COUNT, PLATE, SITE, WELL, is_metadata, is_profile_feature
from profiler.heap import gc_frozen, reused_heap
from profiler.partitions import (base_record, load_done, pipeline_hash, printable, read_partition, run_site,
                                 site_stem)
from profiler import outliers as ol
from profiler.plate import PlateScan, Site, check_platemap, discover, read_platemap
from profiler.qc import flag_outliers, qc_params
from profiler.site import measure_site, process_site  # noqa: F401  (public: the per-site compute)

log = logging.getLogger(__name__)

#: bytes of cells buffered before a row group of single_cell.parquet is written: memory stays bounded
#: whatever the number of features (≈ 5,000 cells of 1,500 float64 features), row groups stay few
ROW_GROUP_BYTES = 64 * 2**20
#: sites read ahead (joined with the platemap and scored on a thread) while the merge writes one
MERGE_READ_AHEAD = 2
#: feature values the per-well aggregation holds at once (profiler.profiles.aggregate_stream's memory_mb)
AGGREGATE_MEMORY_MB = 256
#: a plate whose partitions take at most this many MB on disk (they are written uncompressed: about
#: their size in memory) is read once, and the schemas, the outlier sample and the merge share the
#: tables (each partition was otherwise read three times: its schema, the sample, the merge)
PLATE_IN_MEMORY_MB = 256


# ---------------------------------------------------------------------------------------------
# the output folder

@contextlib.contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` for the whole run.

    A second ``profiler extract`` into the same folder is refused at once. The lock is an
    advisory ``flock`` on ``OUT/.extract.lock``: the operating system releases it when the process
    ends, however it ends, so a killed run never leaves the folder locked.
    """
    import fcntl

    check_output_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / EXTRACT_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InputError(f"cannot create a lock file in the output folder ({exc.strerror})", path=out_dir,
                         hint="choose an output folder you can write to") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            who = f" (process {holder})" if holder else ""
            raise InputError(f"another `profiler extract` is writing to this folder{who}", path=out_dir,
                             hint="wait for it to finish, or choose another output folder with -o") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_output_dir(out_dir: Path) -> None:
    """The output folder can be created and written: refuse a file in its place or a read-only folder."""
    for p in (out_dir, *out_dir.parents):
        if p.exists():
            if not p.is_dir():
                raise InputError("the output path exists and is not a folder", path=p,
                                 hint="choose another output folder with -o, or remove that file")
            if not os.access(p, os.W_OK | os.X_OK):
                raise InputError("the output folder is not writable", path=p,
                                 hint="choose an output folder you can write to (-o), or fix its permissions")
            break


def _outside(site: Site, plate_dir: Path) -> list[str]:
    """Files of ``site`` whose path leads out of ``plate_dir`` (``..`` in a layout CSV, absolute paths).

    The check is on the written path, not on symbolic links: a link inside the folder is fine.
    """
    root = os.path.normpath(os.path.abspath(plate_dir))
    out = []
    for p in site.files.values():
        full = os.path.normpath(os.path.abspath(p))
        if os.path.commonpath([root, full]) != root:
            out.append(printable(os.fsdecode(p)))
    return out


# ---------------------------------------------------------------------------------------------
# validation before any image is read

def profile_recipe(config: AssayConfig) -> dict[str, Any]:
    """The pipeline's ``profiles:`` section as a full recipe (:func:`profiler.profiles.resolve_recipe`)."""
    from profiler.profiles import PRESETS, resolve_recipe

    section = dict(config.section("profiles"))
    if "preset" in section:
        return resolve_recipe(section)
    return resolve_recipe({**PRESETS["default"], **section})


def rehearse_recipe(recipe: Mapping[str, Any], wells: pd.DataFrame, *, n_features: int = 64,
                    seed: int = 0) -> None:
    """Run the profile recipe on stand-in profiles of the plate's wells; raise what the real run would.

    ``wells`` holds one row per imaged well with its metadata (plate, well, the platemap's
    columns). Features are random (their values never decide whether a recipe *can* run: which
    wells are controls, how many there are per plate or batch, which columns exist does). So a
    platemap without control wells, too few controls for whitening, a missing batch column … are
    found in a second, before hours of segmentation.
    """
    from profiler.profiles import CONTROLS, apply_recipe

    n_feat = max(n_features, int((recipe.get("factor_analysis") or {}).get("n_factors", 0)) + 1)
    rng = np.random.default_rng(seed)
    feats = pd.DataFrame(rng.normal(size=(len(wells), n_feat)),
                         columns=[f"Cells_Rehearsal_Feature{i:03d}" for i in range(n_feat)])
    table = pd.concat([wells.reset_index(drop=True), feats], axis=1)
    table[CELL_COUNT] = 100
    apply_recipe(table, recipe, samples=recipe.get("samples", CONTROLS))


def refused_up_front(site: Site, plate_dir: Path) -> bool:
    """A site that is refused before its images are read (a file outside the plate folder, a file
    name that is not UTF-8): it gets an ``error`` record and never contributes cells."""
    if _outside(site, plate_dir):
        return True
    try:
        for p in site.files.values():
            os.fsdecode(p).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def imaged_wells(scan: PlateScan, platemap: pd.DataFrame | None, plate_dir: Path | None = None) -> pd.DataFrame:
    """One row per (plate, well) with a complete site that will be processed, annotated with the
    platemap when given."""
    sites = [s for s in scan.complete_sites if plate_dir is None or not refused_up_front(s, plate_dir)]
    wells = (pd.DataFrame([(s.plate, s.well) for s in sites], columns=[PLATE, WELL])
             .drop_duplicates().reset_index(drop=True))
    if platemap is not None:
        wells = wells.merge(platemap, on=WELL, how="left")
    return wells


def plan_profiles(config: AssayConfig, scan: PlateScan, platemap: pd.DataFrame | None,
                  platemap_path: str | Path | None, plate_dir: Path | None = None) -> dict[str, Any]:
    """Decide, before any image is read, what the profile stage will do.

    Returns ``{"recipe", "normalize": bool, "note"}``. With a platemap the recipe must be able to
    run on the imaged wells (control wells present, enough for every step), else an
    :class:`InputError` now. Without a platemap a recipe that needs control wells cannot run:
    the profiles will be the raw per-well aggregates, and ``note`` says so.
    """
    recipe = profile_recipe(config)
    wells = imaged_wells(scan, platemap, plate_dir)
    if not len(wells):
        return {"recipe": recipe, "normalize": False, "note": "no complete site"}
    try:
        rehearse_recipe(recipe, wells)
    except CellfusionError as exc:
        if platemap is None:  # the control query names platemap columns: none of them exist yet
            return {"recipe": recipe, "normalize": False,
                    "note": "no platemap, so the profile recipe cannot run (it normalizes to control wells); "
                            "profiles.parquet holds the raw per-well aggregates. Normalization needs a platemap "
                            "that marks the control wells (control = negative)"}
        if isinstance(exc, ConfigError):
            raise
        raise InputError(f"the pipeline's profile recipe cannot run on this platemap's imaged wells: {_one_line(exc)}",
                         path=platemap_path,
                         hint="mark enough negative-control wells (control = negative) in the platemap, or "
                              "change the pipeline's profiles: section (e.g. samples: all)") from None
    return {"recipe": recipe, "normalize": True, "note": ""}


def _one_line(exc: BaseException) -> str:
    return str(exc).replace("\n  hint:", "; hint:").replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# running the sites

def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)


def run_sites(sites: Sequence[Site], config: AssayConfig, sites_dir: Path, phash: str, *,
              workers: int | None = None, scheduler: str | None = None, progress: bool = True,
              site_kwargs: Mapping[str, Any] | None = None, client: Any = None,
              first: Sequence[str] = (), on_result=None, keep: SiteTables | None = None) -> dict[str, dict[str, Any]]:
    """Run :func:`profiler.partitions.run_site` on every site; returns site stem → entry.

    ``workers=0`` (and no ``scheduler`` or ``client``) runs the sites one after the other in this
    process; otherwise they are Dask tasks on ``client`` (or on a cluster started here, see
    :func:`profiler.distributed.dask_client`). ``site_kwargs`` are plate-level inputs forwarded to
    :func:`profiler.site.process_site` (sent to each worker once). ``first``: stems of sites to
    submit before the others (the control wells', so that the outlier fit can start early);
    ``on_result(stem, entry)`` is called as each site finishes. ``keep``: in this process (``workers=0``),
    the partitions' tables go there as the sites finish (:class:`SiteTables`) instead of being read back.
    """
    site_kwargs = dict(site_kwargs or {})
    results: dict[str, dict[str, Any]] = {}
    if not sites:
        return results
    with _progress(progress) as bar:
        task = bar.add_task("sites", total=len(sites))
        if client is None and workers == 0 and not scheduler:
            for site in sites:
                stem = site_stem(site)
                results[stem] = entry = run_site(site, config, sites_dir, phash, keep_table=keep is not None,
                                                 **site_kwargs)
                if keep is not None and (table := entry.pop("table", None)) is not None:
                    keep.add(sites_dir / entry["partition"]["file"], table)
                if on_result is not None:
                    on_result(stem, results[stem])
                bar.advance(task)
            return results

        from distributed import as_completed

        from profiler.distributed import dask_client

        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(dask_client(workers, scheduler, n_tasks=len(sites)))
            kw = {k: client.scatter(v, broadcast=True, hash=False) for k, v in site_kwargs.items()}
            early = set(first)
            futures = {}
            for site in sorted(sites, key=lambda s: site_stem(s) not in early):  # stable: scan order otherwise
                fut = client.submit(run_site_task, site, config, str(sites_dir), phash, pure=False,
                                    key=f"site-{site_stem(site)}-{phash[:12]}-{uuid.uuid4().hex[:8]}", **kw)
                futures[fut] = site
            for fut in as_completed(futures):
                site = futures[fut]
                stem = site_stem(site)
                try:
                    results[stem] = fut.result()
                except ConfigError:
                    client.cancel(list(futures))
                    raise
                except Exception as exc:  # the worker died (out of memory, segfault …)
                    results[stem] = {
                        "site": stem, "status": "failed", "partition": None,
                        "record": base_record(site, "failed", f"worker lost ({type(exc).__name__}: {exc})"),
                        "traceback": "".join(traceback.format_exception(exc)),
                    }
                if on_result is not None:
                    on_result(stem, results[stem])
                bar.advance(task)
    return results


def run_site_task(site: Site, config: AssayConfig, sites_dir: str, phash: str, **site_kwargs: Any) -> dict[str, Any]:
    """:func:`profiler.partitions.run_site` as a Dask task: the entry also carries the partition's
    Arrow schema (``"schema"``, read back on the worker; not part of the site's record), so that the
    merge need not open every partition's footer in this process after the last site."""
    entry = run_site(site, config, sites_dir, phash, **site_kwargs)
    part = entry.get("partition")
    if part and part.get("rows"):
        import pyarrow.parquet as pq

        entry["schema"] = pq.read_schema(Path(sites_dir) / part["file"]).remove_metadata()
    return entry


# ---------------------------------------------------------------------------------------------
# the streaming merge

def _platemap_lookup(platemap: pd.DataFrame | None):
    """``(well → platemap row, wells listed twice, the platemap's other columns as Arrow)`` for
    :func:`_annotated_table`; ``None`` without a platemap."""
    if platemap is None:
        return None
    import pyarrow as pa

    wells = [str(w) for w in platemap[WELL]]
    index: dict[str, int] = {}
    twice = set()
    for i, w in enumerate(wells):
        if w in index:
            twice.add(w)
        index.setdefault(w, i)
    table = pa.Table.from_pandas(platemap.drop(columns=[WELL]), preserve_index=False)
    return index, twice, table


def _annotated_table(part, schema, lookup, path: Path, *, outliers: ol.OutlierModel | None = None):
    """One site's partition (a :class:`pyarrow.Table`) as rows of ``single_cell.parquet``: the
    platemap's columns joined on the well (``lookup``: :func:`_platemap_lookup`), with
    ``outliers`` the cells' scores and flags, columns in ``schema``'s order
    and types (a column this site lacks is null). The same table as a left merge of the partition
    with the platemap in pandas converted by ``pa.Table.from_pandas(…, schema=schema)``, without the
    pandas round trip (which cost more than the site's Parquet read and write together)."""
    import pyarrow as pa

    n = part.num_rows
    cols: dict[str, Any] = {name: part[name] for name in part.column_names}
    if lookup is not None:
        index, twice, pm = lookup
        wells = [str(w) for w in part[WELL].to_pylist()]
        if twice and any(w in twice for w in wells):
            raise InputError(f"the platemap lists well {wells[0]} more than once", path=path,
                             hint="list every well once in the platemap")
        rows = pm.take(pa.array([index.get(w) for w in wells], type=pa.int64()))
        for name in pm.column_names:
            cols[name] = rows[name]
    if outliers is not None:
        score, flag = ol.score_cells(outliers, part)
        cols[ol.SCORE] = pa.array(score, type=pa.float64(), from_pandas=True)
        cols[ol.FLAG] = pa.array(flag, type=pa.bool_())
    arrays = []
    for f in schema:
        col = cols.get(f.name)
        if col is None:
            arrays.append(pa.nulls(n, f.type))
        else:
            arrays.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def prepare_partition(part_path: str, schema, lookup, platemap_path: str, *,
                      outliers: ol.OutlierModel | None = None):
    """The Dask task of the streaming merge: one partition read from disk as rows of
    ``single_cell.parquet`` (:func:`_annotated_table`), returned as an Arrow IPC stream
    (:func:`read_prepared`): a site's table of 2,600 columns is written and read back that way in
    ≈ 12 ms, where pickling and unpickling it column by column took ≈ 0.11 s."""
    import pyarrow as pa

    table = _annotated_table(read_partition(part_path), schema, lookup, Path(platemap_path), outliers=outliers)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def read_prepared(buffer):
    """The table :func:`prepare_partition` sent."""
    import pyarrow as pa

    return pa.ipc.open_stream(buffer).read_all()


class SiteTables:
    """The partitions' tables as the sites finish in this process (``workers=0``), kept for the
    outlier fit and the merge of a small plate: at most :data:`PLATE_IN_MEMORY_MB` together, the
    limit of :func:`read_small_plate` (past it none are kept: the plate streams from disk)."""

    def __init__(self, limit_bytes: int = PLATE_IN_MEMORY_MB * 2**20) -> None:
        self.tables: dict[Path, Any] = {}
        self.limit = int(limit_bytes)
        self.size = 0

    def add(self, path: Path, table) -> None:
        if self.size > self.limit:
            return
        self.size += table.get_total_buffer_size()
        if self.size > self.limit:
            self.tables.clear()
        else:
            self.tables[Path(path)] = table


def read_small_plate(partitions: Sequence[Path], known: Mapping[Path, Any] | None = None) -> dict[Path, Any] | None:
    """Every partition as a :class:`pyarrow.Table` (path → table) when together they take at most
    :data:`PLATE_IN_MEMORY_MB` on disk; ``None`` for a larger plate (then each step streams them).
    ``known``: tables already in memory (:class:`SiteTables`; each is what would be read)."""
    try:
        total = sum(os.path.getsize(p) for p in partitions)
    except OSError:
        return None
    if total > PLATE_IN_MEMORY_MB * 2**20:
        return None
    known = known or {}
    return {Path(p): known[Path(p)] if Path(p) in known else read_partition(p) for p in partitions}


def partition_schemas(partitions: Sequence[Path], *, tables: Mapping[Path, Any] | None = None,
                      known: Mapping[Path, Any] | None = None) -> list:
    """The Arrow schema of every partition (read once per run: the outlier fit and the merge share
    them); ``tables``: the partitions already read (:func:`read_small_plate`); ``known``: schemas
    the Dask workers read back (:func:`run_site_task`; the others are read here)."""
    import pyarrow.parquet as pq

    if tables is not None:
        return [tables[Path(p)].schema.remove_metadata() for p in partitions]
    known = known or {}
    return [known[Path(p)] if Path(p) in known else pq.read_schema(p).remove_metadata() for p in partitions]


def merged_schema(partitions: Sequence[Path], platemap: pd.DataFrame | None, *, schemas: Sequence | None = None):
    """The Arrow schema of ``single_cell.parquet``: every partition's columns (types promoted where
    sites differ, e.g. int and float) plus the platemap's, metadata first. ``schemas``: the
    partitions' schemas if already read (:func:`partition_schemas`)."""
    import pyarrow as pa

    schemas = list(partition_schemas(partitions) if schemas is None else schemas)
    if platemap is not None:
        pm = pa.Schema.from_pandas(platemap, preserve_index=False).remove_metadata()
        schemas.append(pa.schema([f for f in pm if f.name != WELL]))
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    fields = list(schema)
    meta = [f for f in fields if is_metadata(f.name)]
    return pa.schema(meta + [f for f in fields if not is_metadata(f.name)])


def stream_single_cell(partitions: Sequence[Path], out_dir: Path, platemap: pd.DataFrame | None,
                       platemap_path: Path | None, *, crops: Sequence[Path] | None = None,
                       channels: Sequence[str] | None = None, outliers: ol.OutlierModel | None = None,
                       tally: ol.OutlierTally | None = None, kept: Path | None = None,
                       schemas: Sequence | None = None, tables: Mapping[Path, Any] | None = None,
                       client: Any = None) -> dict[str, Any]:
    """Write ``single_cell.parquet`` (and with ``crops`` the crop stack and its table) from the
    site partitions, in the order given, one site in memory at a time (a few read ahead).

    With ``outliers`` (a fitted :class:`profiler.outliers.OutlierModel`) every site's cells are
    scored as they stream (``Metadata_Outlier_Score``, ``Metadata_Outlier``) and counted per well
    in ``tally``; with ``kept`` the unflagged cells are also written to that file (the input of
    the profiles when flagged cells are removed). ``tables``: partitions already in memory
    (:func:`read_small_plate`; the others are read from disk). ``client``: a Dask client whose
    workers read, join and score the partitions (:func:`prepare_partition`) while this process
    writes them in order; without one, a thread does that one site ahead.

    Returns the outputs' facts for the manifest. Files appear only when complete (atomic rename).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = merged_schema(partitions, platemap, schemas=schemas)
    if outliers is not None:
        n_meta = sum(is_metadata(f.name) for f in schema)
        schema = schema.insert(n_meta, pa.field(ol.SCORE, pa.float64())).insert(n_meta + 1, pa.field(ol.FLAG, pa.bool_()))
    meta_schema = pa.schema([f for f in schema if is_metadata(f.name)])
    rows = buffered = 0
    buffer: list[pa.Table] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(io.atomic_path(out_dir / SINGLE_CELL))
        writer = stack.enter_context(pq.ParquetWriter(tmp, schema, **_writer_options(schema)))
        crop_writer = kept_writer = None
        if crops is not None:
            crop_tmp = stack.enter_context(io.atomic_path(out_dir / CROPS_TABLE))
            crop_writer = stack.enter_context(pq.ParquetWriter(crop_tmp, meta_schema, **_writer_options(meta_schema)))
        if kept is not None and outliers is not None:
            kept_writer = stack.enter_context(pq.ParquetWriter(kept, schema, **_writer_options(schema)))
        lookup = _platemap_lookup(platemap)

        if client is not None:
            # the workers read, join and score the next sites while this process writes
            shared = client.scatter([schema, lookup, outliers], broadcast=True, hash=False)
            window = max(MERGE_READ_AHEAD, 2 * max(1, len(client.scheduler_info().get("workers", {}))))

            def submit(part_path: Path):
                return client.submit(prepare_partition, str(part_path), *shared[:2],
                                     str(platemap_path or part_path), outliers=shared[2], pure=False,
                                     key=f"merge-{Path(part_path).name}-{uuid.uuid4().hex[:8]}")

            stack.callback(lambda: client.cancel([f for f in ahead]))  # an error: the reads ahead are dropped
        else:
            def prepared(part_path: Path):
                part = tables.get(Path(part_path)) if tables is not None else None
                return _annotated_table(read_partition(part_path) if part is None else part, schema, lookup,
                                        platemap_path or part_path, outliers=outliers)

            # the next sites are read, joined and scored on a thread while this one writes (Parquet reads,
            # compression and the scores' matrix products release the GIL): the merge runs on two cores
            pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="merge-read"))
            stack.callback(pool.shutdown, cancel_futures=True)  # an error: the reads ahead are dropped
            window = MERGE_READ_AHEAD

            def submit(part_path: Path):
                return pool.submit(prepared, part_path)

        ahead: deque = deque()
        todo = iter(partitions)
        for part_path in itertools.islice(todo, max(1, window)):
            ahead.append(submit(part_path))
        while ahead:
            table = ahead.popleft().result()
            if client is not None:
                table = read_prepared(table)
            for part_path in itertools.islice(todo, 1):
                ahead.append(submit(part_path))
            if outliers is not None and tally is not None:
                tally.add(table, table.column(ol.FLAG).to_numpy())
            buffer.append(table)
            buffered += table.get_total_buffer_size()  # (nbytes dedupes shared buffers: 5x slower)
            rows += len(table)
            if buffered >= ROW_GROUP_BYTES:
                _flush(buffer, writer, crop_writer, meta_schema, kept_writer)
                buffer, buffered = [], 0
        if buffer:
            _flush(buffer, writer, crop_writer, meta_schema, kept_writer)
        if crops is not None:  # the stack last: its table is complete only if the stack is
            shapes = [load_site_crops(p).shape for p in crops]
            n = sum(s[0] for s in shapes)
            if n != rows:
                raise InputError(f"{n} crops for {rows} cells", path=out_dir / SITES_DIR,
                                 hint="rerun with --no-resume to recompute the crop partitions")
            size, n_ch = (shapes[0][1], shapes[0][3]) if shapes else (0, len(channels or []))
            write_crop_stack((page for p in crops for page in load_site_crops(p)), (n, size, size, n_ch),
                             out_dir / CROPS_TIF, channels=channels)
    outputs: dict[str, Any] = {SINGLE_CELL: {"rows": rows, "columns": len(schema)}}
    if crops is not None:
        outputs[CROPS_TIF] = {"shape": [n, size, size, n_ch], "channels": list(channels or [])}
        outputs[CROPS_TABLE] = {"rows": n}
    return outputs


def _writer_options(schema) -> dict[str, Any]:
    """Parquet options of the per-cell tables: zstd, dictionary pages only for the columns that are
    not floating point (plate, well, compound … repeat; a float feature's values hardly ever do, and
    dictionary-encoding them first cost a third of the write and made the file larger: BBBC021, 8 sites,
    12.1 → 10.2 MB). The values read back are the same."""
    import pyarrow as pa

    return {"compression": "zstd",
            "use_dictionary": [f.name for f in schema if not pa.types.is_floating(f.type)]}


def _flush(buffer, writer, crop_writer, meta_schema, kept_writer=None) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.concat_tables(buffer)
    writer.write_table(table)
    if crop_writer is not None:
        crop_writer.write_table(table.select(meta_schema.names))
    if kept_writer is not None:
        kept_writer.write_table(table.filter(pc.invert(table[ol.FLAG])))


def outlier_features(schema) -> list[str]:
    """The numeric profile features of a (merged) partition schema: the outlier model's inputs."""
    import pyarrow as pa

    return [f.name for f in schema if is_profile_feature(f.name)
            and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]


def fit_control_outliers(partitions: Sequence[Path], feats: Sequence[str], wells: set[str] | None,
                         params: Mapping[str, Any], *, indices: Sequence[int] | None = None,
                         tables: Mapping[Path, Any] | None = None) -> tuple[ol.OutlierModel | None, int]:
    """``(model, cells sampled)``: the outlier model fitted on a bounded, seeded sample of the cells
    of ``partitions`` in ``wells`` (all cells with ``wells=None``); no model (``None``) with fewer than
    10 cells. ``indices``: each partition's seed index (:func:`profiler.outliers.sample_partitions`)."""
    sample = ol.sample_partitions(partitions, feats, wells=wells, max_cells=int(params["max_cells"]),
                                  seed=int(params["seed"]), tables=tables, indices=indices)
    if len(sample) < 10:
        return None, len(sample)
    return ol.fit_outlier_model(sample, contamination=float(params["contamination"]),
                                n_components=int(params["n_components"]), seed=int(params["seed"]),
                                fit_on="control wells" if wells else "all cells"), len(sample)


def early_outlier_fit(partitions: Sequence[str], indices: Sequence[int], wells: set[str],
                      params: Mapping[str, Any]) -> tuple[list[str], ol.OutlierModel | None]:
    """The Dask task that fits the control wells' model as soon as the control sites are done,
    while the other sites still run: ``(the features it used, model or None)``. The features come
    from these partitions' schemas; :func:`fit_plate_outliers` uses the model only if they are the
    whole plate's (they are whenever every site has the same columns) — the same model as one
    fitted after all sites."""
    with gc_frozen():
        parts = [Path(p) for p in partitions]
        feats = outlier_features(merged_schema(parts, None))
        return feats, fit_control_outliers(parts, feats, wells, params, indices=indices)[0]


class _EarlyFit:
    """Submits :func:`early_outlier_fit` to the Dask cluster as soon as every control site is done
    (they are submitted first), with a high priority: one worker fits while the others go on with
    the plate's other sites, instead of the whole plate waiting for the fit after its last site.
    ``controls``: the control sites' stems (``run_sites``' ``first``); :meth:`site_done` is its
    ``on_result``."""

    def __init__(self, client: Any, scan: PlateScan, entries: Mapping[str, dict[str, Any]], wells: set[str],
                 params: Mapping[str, Any], sites_dir: Path) -> None:
        self.client, self.wells, self.params, self.sites_dir = client, wells, dict(params), sites_dir
        self.index = {site_stem(s): k for k, s in enumerate(scan.sites)}  # the sample's seeds, as after the sites
        self.controls = [site_stem(s) for s in scan.sites if s.complete and str(s.well) in wells]
        self.done = dict(entries)  # reused and skipped sites are done already
        self.future = None
        self._submit_when_ready()

    def site_done(self, stem: str, entry: dict[str, Any]) -> None:
        self.done[stem] = entry
        self._submit_when_ready()

    def _submit_when_ready(self) -> None:
        if self.future is not None or not self.controls or any(c not in self.done for c in self.controls):
            return
        parts, indices = [], []
        for stem in self.controls:
            part = self.done[stem].get("partition")
            if part and part.get("rows"):
                parts.append(str(self.sites_dir / part["file"]))
                indices.append(self.index[stem])
        if parts:
            self.future = self.client.submit(early_outlier_fit, parts, indices, self.wells, self.params,
                                             priority=10, pure=False, key=f"outlier-fit-{uuid.uuid4().hex[:8]}")

    def result(self) -> tuple[list[str], ol.OutlierModel | None] | None:
        """The task's result, or ``None`` (then :func:`fit_plate_outliers` fits here, and raises
        whatever error the data causes)."""
        if self.future is None:
            return None
        try:
            return self.future.result()
        except Exception as exc:  # noqa: BLE001 - refitted in this process, where the error surfaces
            log.debug("the early outlier fit failed (%s: %s); fitting after the sites", type(exc).__name__, exc)
            return None


def fit_plate_outliers(partitions: Sequence[Path], platemap: pd.DataFrame | None, params: Mapping[str, Any],
                       out_dir: Path, *, schemas: Sequence | None = None,
                       tables: Mapping[Path, Any] | None = None, indices: Sequence[int] | None = None,
                       early: tuple[list[str], ol.OutlierModel | None] | None = None
                       ) -> tuple[ol.OutlierModel | None, dict[str, Any]]:
    """Fit the per-cell outlier model on a bounded, seeded sample of the control wells' cells (the
    platemap's negative controls, :func:`cellfusion_core.columns.control_mask`), reading each partition
    once; without a platemap or control cells, on a sample of all cells (the manifest says so).
    ``indices``: the partitions' sites' positions in the plate scan (the sample's seeds);
    ``early``: the result of :func:`early_outlier_fit`, used when its features are the plate's.
    Writes ``OUT/outliers.json``. Returns ``(model or None, facts for the manifest)``."""
    feats = outlier_features(merged_schema(partitions, None, schemas=schemas))
    wells = ol.control_wells(platemap)
    info: dict[str, Any] = {"parameters": dict(params), "note": ""}
    model = None
    if wells:
        if early is not None and early[0] == feats:
            model = early[1]
            info["fitted"] = "on a Dask worker while the plate's other sites ran"
        else:
            model = fit_control_outliers(partitions, feats, wells, params, indices=indices, tables=tables)[0]
    if model is None:
        info["note"] = ("no platemap" if platemap is None else
                        "the platemap marks no negative-control well" if not wells else
                        "fewer than 10 cells in the control wells") + \
            ": the outlier model is fitted on a sample of all cells (a treatment that changes most cells can " \
            "then look normal, and control cells look like outliers)"
        log.warning("outliers: %s", info["note"])
        model, n = fit_control_outliers(partitions, feats, None, params, indices=indices, tables=tables)
        if model is None:
            info["note"] = f"only {n} cells: no outlier model fitted, cells are not scored"
            log.warning("outliers: %s", info["note"])
            return None, info
    io.write_json(model.to_dict(), out_dir / OUTLIERS_MODEL, indent=None)  # (numbers: one line, C encoder)
    info.update({"fit_on": model.fit_on, "n_fit": model.n_fit, "features": len(model.features),
                 "components": len(model.location), "threshold": model.threshold, "model": OUTLIERS_MODEL})
    return model, info


# ---------------------------------------------------------------------------------------------
# the plate

def extract(plate_dir: str | Path, out_dir: str | Path, *, pipeline: str | Path = "example",
            platemap: str | Path | None = None, workers: int | None = None,
            scheduler: str | None = None, resume: bool = True, progress: bool = True,
            overlays: bool = False, crops: bool | None = None, crop_size: int | None = None,
            remove_outliers: bool | None = None) -> Path:
    """Run the whole extraction on a plate folder; returns ``out_dir``.

    Parameters
    ----------
    workers:
        Dask worker processes on this machine (``None``: one per core, see
        :func:`profiler.distributed.default_workers`); ``0`` runs in this process without Dask.
    scheduler:
        ``tcp://HOST:PORT`` of a running Dask scheduler to use instead of a local cluster.
    resume:
        Reuse the per-site partitions of an earlier run into ``out_dir`` that are complete and
        were made with the same pipeline and input files (``False``: recompute every site).
    progress:
        Show a progress bar on stderr.
    overlays:
        Write ``OUT/overlays/<site>.png`` (nucleus and cell outlines) for the sites processed.
    crops, crop_size:
        Also write ``OUT/crops.tif`` (N, S, S, C) uint16 + ``OUT/crops.parquet`` (Metadata_* keys,
        same rows as ``single_cell.parquet``): an S × S window around each cell, all channels,
        after illumination correction. ``None``: the pipeline's ``crops:`` section (default off,
        64 px). Sites keep their crops as ``OUT/sites/<site>.crops.npy``.
    remove_outliers:
        Leave the cells flagged ``Metadata_Outlier`` out of the per-well profiles (they stay in
        ``single_cell.parquet``). ``None``: the pipeline's ``outliers:`` section (default: keep them).
        Scoring itself is on by default (``outliers: {enabled: false}`` turns it off); see
        :mod:`profiler.outliers`.

    Everything that can be checked before an image is read is checked first (pipeline, output
    folder, platemap against the imaged wells, control wells for the profile recipe). Without a
    platemap, a recipe that needs control wells cannot run: ``profiles.parquet`` then holds the raw
    per-well aggregates and the manifest says so. If the profile stage fails after the sites ran,
    ``single_cell.parquet``, ``image.parquet`` and the manifest are kept and the error says how to
    rebuild the profiles alone (``profiler aggregate``).

    While it runs, this process keeps freed memory for reuse instead of giving it back to the
    operating system (:func:`profiler.heap.reused_heap`; glibc only); it is given back at the end.
    """
    plate_dir, out_dir = Path(plate_dir).resolve(), Path(out_dir).resolve()
    config = load_pipeline(pipeline)
    check_output_dir(out_dir)
    scan = discover(plate_dir, config)
    if platemap is None and (plate_dir / PLATEMAP_FILE).is_file():
        platemap = plate_dir / PLATEMAP_FILE
    pm = read_platemap(platemap) if platemap is not None else None  # fail before hours of work
    wells_without_images = check_platemap(pm, {s.well for s in scan.sites}, platemap) if pm is not None else []
    plan = plan_profiles(config, scan, pm, platemap, plate_dir)
    qcp = qc_params(config.section("qc"))
    crop_cfg = crop_params(config.section("crops"), enabled=crops, size=crop_size)
    try:
        outl = ol.outlier_params(config.section("outliers"), remove=remove_outliers)
    except ConfigError as exc:
        raise ConfigError(exc.problem, path=config.source, hint=exc.hint) from None
    with output_lock(out_dir), gc_frozen(), reused_heap():  # (freed arrays reused, not faulted in again)
        return _extract_locked(plate_dir, out_dir, config, scan, pm, Path(platemap) if platemap else None,
                               plan=plan, qcp=qcp, crop_cfg=crop_cfg, wells_without_images=wells_without_images,
                               workers=workers, scheduler=scheduler, resume=resume, progress=progress,
                               overlays=overlays, outl=outl)


def _extract_locked(plate_dir: Path, out_dir: Path, config: AssayConfig, scan: PlateScan,
                    pm: pd.DataFrame | None, platemap: Path | None, *, plan: dict[str, Any],
                    qcp: dict[str, Any], crop_cfg: dict[str, Any], wells_without_images: list[str],
                    workers: int | None, scheduler: str | None, resume: bool, progress: bool,
                    overlays: bool, outl: Mapping[str, Any] | None = None) -> Path:
    outl = outl if outl is not None else ol.outlier_params(config.section("outliers"))
    phash = pipeline_hash(config)
    sites_dir = out_dir / SITES_DIR
    for tmp in sites_dir.glob(".*.tmp") if sites_dir.is_dir() else ():  # left by a killed run
        log.debug("removing %s, left by an interrupted run", tmp)
        tmp.unlink(missing_ok=True)
    for tmp in out_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    site_kwargs: dict[str, Any] = {}  # plate-level inputs for process_site (e.g. illumination functions)
    illum_cfg = illum_params(config.section("illumination"))
    illum_files: dict[str, str] = {}
    if overlays:
        site_kwargs["overlays_dir"] = str(out_dir / OVERLAYS_DIR)
    want_crops = bool(crop_cfg["enabled"])
    if want_crops:
        site_kwargs["crop_size"] = crop_cfg["size"]
        site_kwargs["crop_mask"] = bool(crop_cfg["mask_background"])

    entries: dict[str, dict[str, Any]] = {}
    todo: list[Site] = []
    reused = 0
    for site in scan.sites:
        stem = site_stem(site)
        if not site.complete:
            missing = ", ".join(site.missing)
            log.warning("site %s skipped: missing channel(s) %s", stem, missing)
            entries[stem] = {"site": stem, "status": "incomplete", "partition": None,
                             "record": base_record(site, "incomplete", f"missing channel(s): {missing}")}
        elif outside := _outside(site, plate_dir):
            reason = (f"{outside[0]}: file lies outside the plate folder {printable(str(plate_dir))}; "
                      "hint: list only files under the plate folder in the layout CSV")
            entries[stem] = {"site": stem, "status": "error", "partition": None,
                             "record": base_record(site, "error", reason)}
        elif resume and (done := load_done(site, sites_dir, phash,
                                           crop_cfg["size"] if want_crops else None)) is not None:
            entries[stem] = done
            reused += 1
        else:
            todo.append(site)
    if reused:
        log.info("resuming: %d of %d site(s) already done in %s", reused, len(scan.complete_sites), sites_dir)
    with contextlib.ExitStack() as cluster:  # a Dask cluster serves the sites, the outlier fit and the merge
        client = None
        if todo and (workers != 0 or scheduler):
            from profiler.distributed import dask_client

            client = cluster.enter_context(dask_client(workers, scheduler, n_tasks=len(todo)))
        if illum_cfg["enabled"]:  # once per plate and channel, before the sites run (a task per channel)
            functions = plate_illumination(scan.complete_sites, config.channel_names, illum_cfg, client=client)
            for (plate, ch), fn in functions.items():
                path = save_illumination(fn, illumination_file(out_dir, plate, ch))
                illum_files[f"{plate}/{ch}"] = str(path.relative_to(out_dir))
            site_kwargs["illumination"] = functions
        wells = ol.control_wells(pm) if outl["enabled"] else None
        early = _EarlyFit(client, scan, entries, wells, outl, sites_dir) if client is not None and wells else None
        kept_tables = SiteTables() if client is None else None  # the sites' tables, not read back
        entries.update(run_sites(todo, config, sites_dir, phash, workers=workers, scheduler=scheduler, client=client,
                                 progress=progress, site_kwargs=site_kwargs, first=early.controls if early else (),
                                 on_result=early.site_done if early else None, keep=kept_tables))

        records: list[dict[str, Any]] = []
        partitions: list[Path] = []
        part_index: list[int] = []  # each partition's site's position in the scan (the outlier sample's seeds)
        crop_parts: list[Path] = []
        for k, site in enumerate(scan.sites):  # scan order (plate, well, site): deterministic rows
            entry = entries[site_stem(site)]
            records.append(entry["record"])
            status = entry["status"]
            if status == "failed":
                log.error("site %s failed (not saved; a rerun retries it): %s\n%s", entry["site"],
                          entry["record"]["Metadata_Reason"], entry.get("traceback", ""))
            elif status == "error":
                log.warning("site %s skipped: %s", entry["site"], entry["record"]["Metadata_Reason"])
            part = entry.get("partition")
            if part and part.get("rows"):
                partitions.append(sites_dir / part["file"])
                part_index.append(k)
                if want_crops:
                    crop_parts.append(sites_dir / entry["crops"]["file"])
        image_table = flag_outliers(pd.DataFrame(records), z=float(qcp["outlier_z"]), min_sites=int(qcp["min_sites"]))
        skipped = [r for r in records if r["Metadata_Status"] not in ("ok",)]
        extra: dict[str, Any] = {
            "sites": {"found": len(scan.sites), "processed": len(todo), "reused": reused,
                      "with_cells": len(partitions), "skipped": skipped},
            "pipeline_hash": phash,
            "unmatched_files": [printable(str(p)) for p in scan.unmatched],
            "illumination": {"parameters": illum_cfg, "files": illum_files},
            "qc_outlier_sites": image_table.loc[image_table["Metadata_QC_Outlier"],
                                                [PLATE, WELL, SITE, "Metadata_QC_Reasons"]].to_dict("records"),
            "profiles": {"normalized": plan["normalize"], "recipe": plan["recipe"], "note": plan["note"]},
        }
        inputs: dict[str, Path] = {"plate_dir": plate_dir}
        if pm is not None:
            extra["platemap_wells_without_images"] = wells_without_images
            inputs["platemap"] = platemap
        parameters = {"pipeline": config.to_dict()}
        io.write_parquet(image_table, out_dir / IMAGE)
        outputs: dict[str, Any] = {IMAGE: {"rows": len(image_table)}}
        if not partitions:
            io.write_manifest(out_dir, command="profiler extract", inputs=inputs, parameters=parameters,
                              outputs=outputs, extra=extra)
            reasons = "; ".join(f"{r[WELL]} s{r[SITE]}: {r['Metadata_Reason']}" for r in skipped[:5])
            raise InputError(f"no site yielded any cells ({reasons})", path=plate_dir,
                             hint=f"see {out_dir / IMAGE} for every site's status")
        model, tally, kept = None, ol.OutlierTally(), None
        # None: a large plate, streamed site by site, or one whose workers read the partitions themselves
        tables = read_small_plate(partitions, kept_tables.tables) if client is None else None
        kept_tables = None
        schemas = partition_schemas(partitions, tables=tables,
                                    known={sites_dir / e["partition"]["file"]: e["schema"]
                                           for e in entries.values() if "schema" in e})
        if outl["enabled"]:
            model, extra["outliers"] = fit_plate_outliers(partitions, pm, outl, out_dir, schemas=schemas, tables=tables,
                                                          indices=part_index, early=early.result() if early else None)
            if model is not None:
                outputs[OUTLIERS_MODEL] = {"features": len(model.features), "fit_on": model.fit_on}
                if outl["remove"]:
                    kept = out_dir / ".single_cell.kept.tmp"  # input of the profiles; removed once they are built
        else:
            extra["outliers"] = {"parameters": dict(outl), "note": "outlier scoring off (outliers.enabled: false)"}
        try:
            outputs.update(stream_single_cell(partitions, out_dir, pm, platemap,
                                              crops=crop_parts if want_crops else None, channels=config.channel_names,
                                              outliers=model, tally=tally, kept=kept, schemas=schemas,
                                              tables=tables, client=client))
        except OSError as exc:  # disk full, quota, a vanished folder: the finished sites stay for the rerun
            raise InputError(f"could not write the per-cell table ({exc.strerror or exc}); no partial file is left, "
                             f"and the {len(partitions)} finished site(s) under {sites_dir} are kept",
                             path=out_dir / SINGLE_CELL,
                             hint="free disk space (the per-cell table needs about as much as OUT/sites/), then "
                                  "rerun the same command: finished sites are reused, not recomputed") from None
        tables = None  # the partitions' memory goes back before the profiles
        cluster.close()  # the workers go before the profiles
    if want_crops:
        outputs[CROPS_TIF]["parameters"] = crop_cfg
    if model is not None:
        extra["outliers"]["flagged"] = tally.flagged
        extra["outliers"]["removed_from_profiles"] = bool(kept)
    # the per-cell and image tables are final: record them before the profile stage can fail
    io.write_manifest(out_dir, command="profiler extract", inputs=inputs, parameters=parameters,
                      outputs=outputs, extra={**extra, "profiles": {**extra["profiles"], "status": "pending"}})
    try:
        profiles = build_plate_profiles(out_dir / SINGLE_CELL, plan, source=kept,
                                        fractions=tally.fractions() if model is not None else None)
    except CellfusionError as exc:
        extra["profiles"]["status"] = f"failed: {_one_line(exc)}"
        io.write_manifest(out_dir, command="profiler extract", inputs=inputs, parameters=parameters,
                          outputs=outputs, extra=extra)
        raise InputError(f"the profile stage failed ({_one_line(exc)}); the per-cell and image tables are "
                         f"written to {out_dir}", path=out_dir / SINGLE_CELL,
                         hint="fix the cause, then rebuild the profiles alone (no image is read again): "
                              + rebuild_command(out_dir, platemap, config)) from None
    finally:
        if kept is not None:
            kept.unlink(missing_ok=True)
    io.write_parquet(profiles, out_dir / PROFILES)
    outputs[PROFILES] = {"rows": len(profiles), "columns": profiles.shape[1]}
    extra["profiles"]["status"] = "ok" if plan["normalize"] else "raw aggregates"
    io.write_manifest(out_dir, command="profiler extract", inputs=inputs, parameters=parameters,
                      outputs=outputs, extra=extra)
    if not plan["normalize"]:
        log.warning("%s; to normalize later: %s", plan["note"], rebuild_command(out_dir, platemap, config))
    return out_dir


def build_plate_profiles(single_cell: Path, plan: Mapping[str, Any], *, source: Path | None = None,
                         fractions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-well profiles of ``single_cell.parquet``: streaming aggregation, then the recipe's steps
    (only the aggregation when ``plan["normalize"]`` is false).

    ``source``: aggregate this per-cell file instead (the unflagged cells, when outliers are
    removed). ``fractions`` (:meth:`profiler.outliers.OutlierTally.fractions`) adds
    ``Metadata_Outlier_Fraction``; with it the aggregated profiles also get
    ``Metadata_Outlier_Well_Score`` (:func:`profiler.outliers.well_outlier_scores` against the
    control wells, before normalization)."""
    from profiler.profiles.aggregate_stream import aggregate_parquet
    from profiler.profiles import CONTROLS, apply_recipe

    recipe = plan["recipe"]
    prof = aggregate_parquet(source or single_cell, operation=recipe.get("aggregate", "median"),
                             memory_mb=AGGREGATE_MEMORY_MB)
    if fractions is not None:
        prof = ol.add_well_columns(prof, fractions)
    if plan["normalize"]:
        prof = apply_recipe(prof, recipe, samples=recipe.get("samples", CONTROLS))
    return prof


def rebuild_command(out_dir: Path, platemap: Path | None, config: AssayConfig) -> str:
    """The ``profiler aggregate`` command line that rebuilds ``profiles.parquet`` from ``out_dir``."""
    from profiler.config import builtin_pipelines

    pm = str(platemap) if platemap else "PLATEMAP.csv"
    spec = config.source or "PIPELINE.yaml"
    if config.name in builtin_pipelines() and profile_recipe(load_pipeline(config.name)) == profile_recipe(config):
        spec = config.name  # the built-in pipeline has this very recipe
    return f"`profiler aggregate {out_dir / SINGLE_CELL} -o {out_dir} --platemap {pm} --pipeline {spec}`"
