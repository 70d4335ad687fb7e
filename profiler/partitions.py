"""Per-site partitions under ``OUT/sites/``: writing them, and knowing when one can be reused.

``OUT/sites/<site>.parquet``  the site's cells (written first, atomically)
``OUT/sites/<site>.json``     the site's record: image/QC row, pipeline hash, input files, and the
                              partition's row count and SHA-256 (written after the partition; its
                              presence and agreement with the partition is what "done" means)
``OUT/sites/<site>.crops.npy`` with ``--crops``: the cells' crops, same rows as the partition

:func:`run_site` is the task every Dask worker runs (compute with :func:`profiler.site.process_site`,
then write); :func:`load_done` decides whether a previous run's site is complete and valid for the
current pipeline, code and input files, which is what makes a killed run resumable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from cellfusion_core import io
from profiler.config import AssayConfig
from profiler.heap import gc_frozen, keep_freed_memory
from profiler.crops import save_site_crops
from cellfusion_core.errors import CellfusionError, ConfigError, InputError
from cellfusion_core.layout import site_crops_file, site_record_file, site_table_file
from cellfusion_core.names import PLATE, SITE, WELL
from profiler.plate import Site
from profiler.site import process_site

log = logging.getLogger(__name__)

RECORD_VERSION = 1
#: how a site's partition is written: ~1,600 float columns of a few hundred rows, read back once or twice
#: by the merge. Neither dictionary pages nor Snappy shrink such columns (the file is smaller without
#: them), and both cost time in the write and in every read; the values read back are the same.
PARTITION_OPTIONS = {"compression": "none", "use_dictionary": False}


def read_partition(path: str | Path):
    """A site's partition as a :class:`pyarrow.Table` (the same table as ``pq.read_table(path)``).

    Read with :class:`pyarrow.parquet.ParquetFile` on the calling thread: for one file of ~1,600
    columns, ``pq.read_table``'s dataset machinery and its thread pool cost about four times the CPU
    (116 → 30 ms on a BBBC021 site of 190 cells), and the merge reads every partition once or twice."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read(use_threads=False)


def pipeline_hash(config: AssayConfig) -> str:
    """SHA-256 of everything that decides a site's cells: the pipeline, the package version and
    the source code of ``profiler`` and ``cellfusion_core`` that runs in a site.

    Partitions written under another hash are recomputed, never reused.
    """
    try:
        version = metadata.version("cellfusion")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "unknown"
    # the outliers: section acts on the merged table, never inside a site (changing it reuses the sites)
    pipe = {k: v for k, v in config.to_dict().items() if k != "outliers"}
    blob = json.dumps({"pipeline": pipe, "cellfusion": version, "record": RECORD_VERSION,
                       "code": _code_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


#: modules (and, ending in ``/``, subpackages) of ``profiler`` and ``cellfusion_core`` that never run
#: inside a site task (their edits keep partitions valid)
_NOT_PER_SITE = {"cli.py", "shared_data.py", "synthetic.py", "evaluate.py", "distributed.py", "profiles/",
                 "extract.py", "partitions.py", "ingest.py", "datasets.py", "cluster.py",
                 "outliers.py"}


def _code_hash(roots: tuple[Path, ...] = ()) -> str:
    """SHA-256 over the source of ``profiler`` and of ``cellfusion_core`` (column names, file I/O and
    layout that a site's table is written with; ``roots``: other package folders, for tests): edited
    code never reuses old partitions."""
    import cellfusion_core

    h = hashlib.sha256()
    for root in roots or (Path(__file__).resolve().parent, Path(cellfusion_core.__file__).resolve().parent):
        for p in sorted(root.rglob("*.py")):
            rel = p.relative_to(root).as_posix()
            if rel in _NOT_PER_SITE or rel.split("/", 1)[0] + "/" in _NOT_PER_SITE:
                continue
            h.update(f"{root.name}/{rel}".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes shown as ``\\xNN`` (always encodable as UTF-8)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def site_stem(site: Site) -> str:
    """File stem of a site's partition and record under ``OUT/sites/``."""
    return printable(site.key).replace("/", "_")


def _input_signature(site: Site) -> dict[str, list]:
    """channel → [file name, size, mtime_ns]: a rerun recomputes a site whose files changed."""
    sig: dict[str, list] = {}
    for ch, p in sorted(site.files.items()):
        try:
            st = os.stat(p)
            sig[ch] = [printable(Path(p).name), st.st_size, st.st_mtime_ns]
        except OSError:
            sig[ch] = [printable(Path(p).name), None, None]
    return sig


def base_record(site: Site, status: str, reason: str) -> dict[str, Any]:
    return {PLATE: printable(site.plate), WELL: printable(site.well), SITE: site.site,
            "Metadata_Status": status, "Metadata_Reason": reason, "Count_Cells": 0}


def _check_file_names(site: Site) -> None:
    for p in site.files.values():
        try:
            os.fsdecode(p).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("file name is not valid UTF-8", path=printable(os.fsdecode(p)),
                             hint="rename the file with UTF-8 characters only "
                                  "(e.g. `convmv -f latin1 -t utf8 --notest FILE`)") from None


def run_site(site: Site, config: AssayConfig, sites_dir: str | Path, phash: str, *, keep_table: bool = False,
             **site_kwargs: Any) -> dict[str, Any]:
    """Process one site and write its partition and record; the task each Dask worker runs.

    Returns the site's entry (what ``OUT/sites/<site>.json`` holds). A :class:`CellfusionError`
    (a broken file, an unreadable image …) becomes a record with ``Metadata_Status="error"``
    and the message as ``Metadata_Reason``; its record is written
    for inspection, and a rerun tries the site again (errors are usually found in the first
    milliseconds, when the files are read). Any other exception is returned as
    ``status="failed"`` with its traceback and is not written. A :class:`ConfigError` (the
    pipeline's parameters are wrong, so every site would fail) is raised and stops the run.

    ``keep_table``: the entry also carries the partition as written (``"table"``, a
    :class:`pyarrow.Table`, equal to what :func:`read_partition` reads back; not in the record), for
    a caller in the same process that would otherwise read it back.
    """
    keep_freed_memory()  # a site's temporaries reuse the last site's memory (profiler.heap)
    with gc_frozen():  # (a Dask worker's imports and state: see gc_frozen)
        return _run_site(site, config, Path(sites_dir), phash, keep_table, **site_kwargs)


def _run_site(site: Site, config: AssayConfig, sites_dir: Path, phash: str, keep_table: bool,
              **site_kwargs: Any) -> dict[str, Any]:
    stem = site_stem(site)
    entry: dict[str, Any] = {"site": stem, "pipeline_hash": phash, "inputs": _input_signature(site),
                             "partition": None}
    try:
        try:
            _check_file_names(site)
            result = process_site(site, config, **site_kwargs)
            cells, record = result[0], result[1]
        except ConfigError:
            raise  # the pipeline is wrong for every site: stop the run (see run_sites)
        except CellfusionError as exc:
            entry["status"] = "error"
            entry["record"] = base_record(site, "error", str(exc).replace("\n  hint:", "; hint:"))
        else:
            part = sites_dir / site_table_file(stem)
            table = io.arrow_table(cells)  # (what io.write_parquet writes for a frame without attrs)
            io.write_arrow(table, part, **PARTITION_OPTIONS)  # first the partition …
            entry["status"] = "ok"
            entry["record"] = record
            entry["partition"] = {"file": part.name, "rows": int(len(cells)), "sha256": io.file_sha256(part)}
            if len(result) > 2:  # --crops: the cells' crop stack, same rows
                cpath = save_site_crops(result[2], sites_dir / site_crops_file(stem))
                entry["crops"] = {"file": cpath.name, "rows": int(len(result[2])), "size": int(result[2].shape[1]),
                                  "sha256": io.file_sha256(cpath)}
        io.write_json(entry, sites_dir / site_record_file(stem))  # … then the record that vouches for it
        if keep_table and entry["status"] == "ok":
            entry["table"] = table
    except ConfigError:
        raise
    except Exception as exc:  # a bug or a full disk, not the user's input: report it with the site named
        entry["status"] = "failed"
        entry["partition"] = None
        entry["record"] = base_record(site, "failed", f"unexpected {type(exc).__name__}: {exc}")
        entry["traceback"] = traceback.format_exc()
    return entry


def load_done(site: Site, sites_dir: str | Path, phash: str, crop_size: int | None = None) -> dict[str, Any] | None:
    """The site's entry from a previous run if it is complete and valid for ``phash``, else None.

    Complete means: the record exists and parses, was written with the same pipeline hash and
    the same input files, and (for a processed site) its partition exists with the recorded
    SHA-256 and row count. Anything else — a partition without record (killed mid-site), a
    truncated or edited partition, changed parameters — means the site is recomputed.
    With ``crop_size`` the site's crop partition must also exist, be of that size and match its
    recorded SHA-256 and row count.
    """
    sites_dir = Path(sites_dir)
    stem = site_stem(site)
    rec_path = sites_dir / site_record_file(stem)
    if not rec_path.is_file():
        return None
    try:
        entry = json.loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        log.warning("site %s: record %s is unreadable; recomputing", stem, rec_path)
        return None
    if not isinstance(entry, dict) or entry.get("pipeline_hash") != phash:
        log.debug("site %s: written with other parameters; recomputing", stem)
        return None
    if entry.get("inputs") != _input_signature(site):
        log.info("site %s: input files changed since the last run; recomputing", stem)
        return None
    part = entry.get("partition") or {}
    part_path = sites_dir / str(part.get("file", ""))
    if entry.get("status") != "ok" or not part or not part_path.is_file():
        return None
    if io.file_sha256(part_path) != part.get("sha256"):
        log.warning("site %s: partition %s does not match its record (SHA-256); recomputing", stem, part_path)
        return None
    import pyarrow.parquet as pq

    try:
        rows = pq.read_metadata(part_path).num_rows
    except Exception:  # noqa: BLE001 - any unreadable partition is simply recomputed
        return None
    if rows != part.get("rows"):
        return None
    if crop_size:
        crop = entry.get("crops") or {}
        crop_path = sites_dir / str(crop.get("file", ""))
        if (crop.get("size") != int(crop_size) or crop.get("rows") != rows or not crop_path.is_file()
                or io.file_sha256(crop_path) != crop.get("sha256")):
            log.debug("site %s: no valid crops of %s px; recomputing", stem, crop_size)
            return None
    return entry
