"""``profiler extract``: plate folder → per-cell table → per-well profiles.

The unit of work is one site (:func:`process_site`); :func:`extract` discovers the sites, runs
them as Dask tasks (:func:`run_sites`; or in this process with ``workers=0``), each task writing
its cells to ``OUT/sites/<site>.parquet`` and then its record to ``OUT/sites/<site>.json``;
then it merges the partitions in plate order, annotates the cells with the platemap, builds the
per-well profiles with pycytominer and writes ``single_cell.parquet``, ``image.parquet`` (one
row per site, with QC and skipped sites and why), ``profiles.parquet`` and ``manifest.json``.

A rerun into the same folder reuses every site whose record and partition agree (row count and
SHA-256) and were made with the same pipeline, code and input files (:func:`load_done`), so a
run that was killed continues where it stopped and gives the same outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import traceback
import uuid
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from profiler import io
from profiler.config import AssayConfig, load_pipeline
from profiler.crops import crop_params, load_site_crops, save_site_crops, site_crops, write_crops
from profiler.errors import CellfusionError, ConfigError, InputError
from profiler.measure import DEFAULT_FAMILIES, measure_objects
from profiler.names import OBJECT_NUMBER, PLATE, SITE, WELL
from profiler.illum import apply_illumination, config_params as illum_params, illumination_path
from profiler.illum import plate_illumination, save_illumination
from profiler.overlays import overlay_rgb, write_overlay
from profiler.plate import Site, check_platemap, discover, read_platemap, read_site
from profiler.qc import flag_outliers, image_quality, qc_params
from profiler.profiles import build_profiles
from profiler.segment import segment_site

log = logging.getLogger(__name__)

COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")


def measure_site(seg, images: Mapping[str, np.ndarray], features: Mapping[str, Any]) -> pd.DataFrame:
    """One row per cell: every compartment's features side by side, keyed by ObjectNumber."""
    families = features.get("families", list(DEFAULT_FAMILIES))
    params = {k: v for k, v in features.items() if k != "families"}
    n = seg.n_objects
    tables = []
    for comp, labels in (("Nuclei", seg.nuclei), ("Cells", seg.cells), ("Cytoplasm", seg.cytoplasm)):
        tables.append(measure_objects(labels, images, compartment=comp, families=families,
                                      params=params, n_objects=n))
    out = pd.concat(tables, axis=1)
    out.insert(0, OBJECT_NUMBER, np.arange(1, n + 1))
    return out


def process_site(site: Site, config: AssayConfig, *,
                 illumination: Mapping[tuple[str, str], np.ndarray] | None = None,
                 overlays_dir: str | Path | None = None, crop_size: int | None = None,
                 crop_mask: bool = False) -> tuple:
    """Segment and measure one site. Returns (per-cell table, image/QC record), and with
    ``crop_size`` also the cells' crops: uint16 (n_cells, crop_size, crop_size, channels), row i
    ↔ table row i, cut from the illumination-corrected images (:func:`profiler.crops.site_crops`).

    ``illumination`` maps (plate, channel) → illumination function (:mod:`profiler.illum`); a
    channel with a function is divided by it before segmentation and measurement. QC
    (:func:`profiler.qc.image_quality`) is measured on the uncorrected images. With
    ``overlays_dir`` an outline PNG is written there as ``<site>.png``.
    """
    record: dict[str, Any] = {PLATE: site.plate, WELL: site.well, SITE: site.site,
                              "Metadata_Status": "ok", "Metadata_Reason": ""}
    images = read_site(site)
    record.update(image_quality(images))
    if illumination:
        images = {ch: apply_illumination(im, illumination[(site.plate, ch)])
                  if (site.plate, ch) in illumination else im for ch, im in images.items()}
    nuc_ch, cell_ch = config.channel_for_role("nuclei"), config.channel_for_role("cells")
    seg = segment_site(images, nuclei_channel=nuc_ch, cells_channel=cell_ch,
                       params=config.section("segmentation"))
    cells = measure_site(seg, images, config.section("features"))
    for col, values in seg.relationships().items():  # CellProfiler's parent/child columns
        cells[col] = values
    cells.insert(0, SITE, site.site)
    cells.insert(0, WELL, site.well)
    cells.insert(0, PLATE, site.plate)
    record["Count_Nuclei"] = seg.n_objects
    record["Count_Cells"] = seg.n_objects
    for comp, t in seg.thresholds.items():
        record[f"Threshold_FinalThreshold_{comp}"] = t
    if overlays_dir is not None:
        write_overlay(overlay_rgb(images[nuc_ch], images[cell_ch], seg.nuclei, seg.cells),
                      Path(overlays_dir) / f"{site.key}.png")
    if crop_size:
        crops = site_crops(seg.cells, images, config.channel_names, seg.n_objects, int(crop_size), crop_mask)
        return cells, record, crops
    return cells, record


# ---------------------------------------------------------------------------------------------
# Orchestration: sites as Dask tasks, per-site partitions, resume, merge.
#
# OUT/sites/<site>.parquet  the site's cells (written first, atomically)
# OUT/sites/<site>.json     the site's record: image/QC row, pipeline hash, input files, and the
#                           partition's row count and SHA-256 (written after the partition; its
#                           presence and agreement with the partition is what "done" means)
# ---------------------------------------------------------------------------------------------

SITES_DIR = "sites"
RECORD_VERSION = 1


def pipeline_hash(config: AssayConfig) -> str:
    """SHA-256 of everything that decides a site's cells: the pipeline, the package version and
    the package's source code.

    Partitions written under another hash are recomputed, never reused.
    """
    try:
        version = metadata.version("cellfusion")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        version = "unknown"
    blob = json.dumps({"pipeline": config.to_dict(), "cellfusion": version, "record": RECORD_VERSION,
                       "code": _code_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


#: modules of ``profiler`` that never run inside a site task (their edits keep partitions valid)
_NOT_PER_SITE = {"cli.py", "_cli_util.py", "synthetic.py", "evaluate.py", "distributed.py", "profiles.py"}


def _code_hash() -> str:
    """SHA-256 over the ``profiler`` package's source: edited code never reuses old partitions."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for p in sorted(root.rglob("*.py")):
        if p.relative_to(root).as_posix() in _NOT_PER_SITE:
            continue
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _printable(text: str) -> str:
    """``text`` with undecodable file-name bytes shown as ``\\xNN`` (always encodable as UTF-8)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def site_stem(site: Site) -> str:
    """File stem of a site's partition and record under ``OUT/sites/``."""
    return _printable(site.key).replace("/", "_")


def _input_signature(site: Site) -> dict[str, list]:
    """channel → [file name, size, mtime_ns]: a rerun recomputes a site whose files changed."""
    sig: dict[str, list] = {}
    for ch, p in sorted(site.files.items()):
        try:
            st = os.stat(p)
            sig[ch] = [_printable(Path(p).name), st.st_size, st.st_mtime_ns]
        except OSError:
            sig[ch] = [_printable(Path(p).name), None, None]
    return sig


def _base_record(site: Site, status: str, reason: str) -> dict[str, Any]:
    return {PLATE: _printable(site.plate), WELL: _printable(site.well), SITE: site.site,
            "Metadata_Status": status, "Metadata_Reason": reason, "Count_Cells": 0}


def _check_file_names(site: Site) -> None:
    for p in site.files.values():
        try:
            os.fsdecode(p).encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("file name is not valid UTF-8", path=_printable(os.fsdecode(p)),
                             hint="rename the file with UTF-8 characters only "
                                  "(e.g. `convmv -f latin1 -t utf8 --notest FILE`)") from None


def _outside(site: Site, plate_dir: Path) -> list[str]:
    """Files of ``site`` whose path leads out of ``plate_dir`` (``..`` in a layout CSV, absolute paths).

    The check is on the written path, not on symbolic links: a link inside the folder is fine.
    """
    root = os.path.normpath(os.path.abspath(plate_dir))
    out = []
    for p in site.files.values():
        full = os.path.normpath(os.path.abspath(p))
        if os.path.commonpath([root, full]) != root:
            out.append(_printable(os.fsdecode(p)))
    return out


def run_site(site: Site, config: AssayConfig, sites_dir: str | Path, phash: str,
             **site_kwargs: Any) -> dict[str, Any]:
    """Process one site and write its partition and record; the task each Dask worker runs.

    Returns the site's entry (what ``OUT/sites/<site>.json`` holds). A :class:`CellfusionError`
    (a broken file, an unreadable image …) becomes a record with ``Metadata_Status="error"``
    and the message as ``Metadata_Reason``; its record is written
    for inspection, and a rerun tries the site again (errors are usually found in the first
    milliseconds, when the files are read). Any other exception is returned as
    ``status="failed"`` with its traceback and is not written. A :class:`ConfigError` (the
    pipeline's parameters are wrong, so every site would fail) is raised and stops the run.
    """
    sites_dir = Path(sites_dir)
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
            entry["record"] = _base_record(site, "error", str(exc).replace("\n  hint:", "; hint:"))
        else:
            part = sites_dir / f"{stem}.parquet"
            io.write_parquet(cells, part)  # first the partition …
            entry["status"] = "ok"
            entry["record"] = record
            entry["partition"] = {"file": part.name, "rows": int(len(cells)), "sha256": io.file_sha256(part)}
            if len(result) > 2:  # --crops: the cells' crop stack, same rows
                cpath = save_site_crops(result[2], sites_dir / f"{stem}.crops.npy")
                entry["crops"] = {"file": cpath.name, "rows": int(len(result[2])), "size": int(result[2].shape[1]),
                                  "sha256": io.file_sha256(cpath)}
        io.write_json(entry, sites_dir / f"{stem}.json")  # … then the record that vouches for it
    except ConfigError:
        raise
    except Exception as exc:  # a bug or a full disk, not the user's input: report it with the site named
        entry["status"] = "failed"
        entry["partition"] = None
        entry["record"] = _base_record(site, "failed", f"unexpected {type(exc).__name__}: {exc}")
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
    rec_path = sites_dir / f"{stem}.json"
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


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not enabled)


def run_sites(sites: Sequence[Site], config: AssayConfig, sites_dir: Path, phash: str, *,
              workers: int | None = None, scheduler: str | None = None, progress: bool = True,
              site_kwargs: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Run :func:`run_site` on every site; returns site stem → entry.

    ``workers=0`` (and no ``scheduler``) runs the sites one after the other in this process;
    otherwise they are Dask tasks (see :func:`profiler.distributed.dask_client`). ``site_kwargs``
    are plate-level inputs forwarded to :func:`process_site` (sent to each worker once).
    """
    site_kwargs = dict(site_kwargs or {})
    results: dict[str, dict[str, Any]] = {}
    if not sites:
        return results
    with _progress(progress) as bar:
        task = bar.add_task("sites", total=len(sites))
        if workers == 0 and not scheduler:
            for site in sites:
                results[site_stem(site)] = run_site(site, config, sites_dir, phash, **site_kwargs)
                bar.advance(task)
            return results

        from distributed import as_completed

        from profiler.distributed import dask_client

        with dask_client(workers, scheduler, n_tasks=len(sites)) as client:
            kw = {k: client.scatter(v, broadcast=True, hash=False) for k, v in site_kwargs.items()}
            futures = {}
            for site in sites:
                fut = client.submit(run_site, site, config, str(sites_dir), phash, pure=False,
                                    key=f"site-{site_stem(site)}-{phash[:12]}-{uuid.uuid4().hex[:8]}", **kw)
                futures[fut] = site
            for fut in as_completed(futures):
                site = futures[fut]
                try:
                    results[site_stem(site)] = fut.result()
                except ConfigError:
                    client.cancel(list(futures))
                    raise
                except Exception as exc:  # the worker died (out of memory, segfault …)
                    results[site_stem(site)] = {
                        "site": site_stem(site), "status": "failed", "partition": None,
                        "record": _base_record(site, "failed", f"worker lost ({type(exc).__name__}: {exc})"),
                        "traceback": "".join(traceback.format_exception(exc)),
                    }
                bar.advance(task)
    return results


def extract(plate_dir: str | Path, out_dir: str | Path, *, pipeline: str | Path = "example",
            platemap: str | Path | None = None, workers: int | None = None,
            scheduler: str | None = None, resume: bool = True, progress: bool = True,
            overlays: bool = False, crops: bool | None = None, crop_size: int | None = None) -> Path:
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
    """
    plate_dir, out_dir = Path(plate_dir).resolve(), Path(out_dir).resolve()
    config = load_pipeline(pipeline)
    scan = discover(plate_dir, config)
    if platemap is None and (plate_dir / "platemap.csv").is_file():
        platemap = plate_dir / "platemap.csv"
    pm = read_platemap(platemap) if platemap is not None else None  # fail before hours of work
    if pm is not None:
        wells_without_images = check_platemap(pm, {s.well for s in scan.sites}, platemap)
    phash = pipeline_hash(config)
    sites_dir = out_dir / SITES_DIR
    for tmp in sites_dir.glob(".*.tmp") if sites_dir.is_dir() else ():  # left by a killed run
        log.debug("removing %s, left by an interrupted run", tmp)
        tmp.unlink(missing_ok=True)
    site_kwargs: dict[str, Any] = {}  # plate-level inputs for process_site (e.g. illumination functions)
    illum_cfg = illum_params(config.section("illumination"))
    illum_files: dict[str, str] = {}
    if illum_cfg["enabled"]:  # once per plate and channel, before the sites run
        functions = plate_illumination(scan.complete_sites, config.channel_names, illum_cfg)
        for (plate, ch), fn in functions.items():
            path = save_illumination(fn, illumination_path(out_dir, plate, ch))
            illum_files[f"{plate}/{ch}"] = str(path.relative_to(out_dir))
        site_kwargs["illumination"] = functions
    if overlays:
        site_kwargs["overlays_dir"] = str(out_dir / "overlays")
    crop_cfg = crop_params(config.section("crops"), enabled=crops, size=crop_size)
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
                             "record": _base_record(site, "incomplete", f"missing channel(s): {missing}")}
        elif outside := _outside(site, plate_dir):
            reason = (f"{outside[0]}: file lies outside the plate folder {_printable(str(plate_dir))}; "
                      "hint: list only files under the plate folder in the layout CSV")
            entries[stem] = {"site": stem, "status": "error", "partition": None,
                             "record": _base_record(site, "error", reason)}
        elif resume and (done := load_done(site, sites_dir, phash,
                                           crop_cfg["size"] if want_crops else None)) is not None:
            entries[stem] = done
            reused += 1
        else:
            todo.append(site)
    if reused:
        log.info("resuming: %d of %d site(s) already done in %s", reused, len(scan.complete_sites), sites_dir)
    entries.update(run_sites(todo, config, sites_dir, phash, workers=workers, scheduler=scheduler,
                             progress=progress, site_kwargs=site_kwargs))

    records: list[dict[str, Any]] = []
    tables: list[pd.DataFrame] = []
    crop_parts: list[np.ndarray] = []
    for site in scan.sites:  # scan order (plate, well, site): deterministic rows
        entry = entries[site_stem(site)]
        records.append(entry["record"])
        status = entry["status"]
        if status == "failed":
            log.error("site %s failed (not saved; a rerun retries it): %s\n%s", entry["site"],
                      entry["record"]["Metadata_Reason"], entry.get("traceback", ""))
        elif status == "error":
            log.warning("site %s skipped: %s", entry["site"], entry["record"]["Metadata_Reason"])
        if entry.get("partition"):
            part = pd.read_parquet(sites_dir / entry["partition"]["file"])
            if len(part):
                tables.append(part)
                if want_crops:
                    crop_parts.append(load_site_crops(sites_dir / entry["crops"]["file"]))
    qcp = qc_params(config.section("qc"))
    image_table = flag_outliers(pd.DataFrame(records), z=float(qcp["outlier_z"]), min_sites=int(qcp["min_sites"]))
    skipped = [r for r in records if r["Metadata_Status"] not in ("ok",)]
    extra: dict[str, Any] = {
        "sites": {"found": len(scan.sites), "processed": len(todo), "reused": reused,
                  "with_cells": len(tables), "skipped": skipped},
        "pipeline_hash": phash,
        "unmatched_files": [_printable(str(p)) for p in scan.unmatched],
        "illumination": {"parameters": illum_cfg, "files": illum_files},
        "qc_outlier_sites": image_table.loc[image_table["Metadata_QC_Outlier"],
                                            [PLATE, WELL, SITE, "Metadata_QC_Reasons"]].to_dict("records"),
    }
    inputs: dict[str, Path] = {"plate_dir": plate_dir}
    if not tables:
        io.write_parquet(image_table, out_dir / "image.parquet")
        io.write_manifest(out_dir, command="profiler extract", inputs=inputs,
                          parameters={"pipeline": config.to_dict()},
                          outputs={"image.parquet": {"rows": len(image_table)}}, extra=extra)
        reasons = "; ".join(f"{r[WELL]} s{r[SITE]}: {r['Metadata_Reason']}" for r in skipped[:5])
        raise InputError(f"no site yielded any cells ({reasons})", path=plate_dir,
                         hint=f"see {out_dir / 'image.parquet'} for every site's status")
    single_cell = pd.concat(tables, ignore_index=True)
    if pm is not None:
        single_cell = single_cell.merge(pm, on=WELL, how="left")
        extra["platemap_wells_without_images"] = wells_without_images
        inputs["platemap"] = Path(platemap)

    meta = [c for c in single_cell.columns if c.startswith("Metadata_")]
    single_cell = single_cell[meta + [c for c in single_cell.columns if c not in meta]]
    profiles_cfg = config.section("profiles")
    profiles = build_profiles(
        single_cell,
        aggregate_operation=profiles_cfg.get("aggregate", "median"),
        normalize_method=profiles_cfg.get("normalize", "mad_robustize"),
        feature_select_operations=profiles_cfg.get("feature_select", ["variance_threshold", "drop_na_columns"]),
        recipe=profiles_cfg if "preset" in profiles_cfg else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_parquet(single_cell, out_dir / "single_cell.parquet")
    io.write_parquet(image_table, out_dir / "image.parquet")
    io.write_parquet(profiles, out_dir / "profiles.parquet")
    crop_outputs: dict[str, Any] = {}
    if want_crops:
        stack = np.concatenate(crop_parts)
        if len(stack) != len(single_cell):
            raise InputError(f"{len(stack)} crops for {len(single_cell)} cells (duplicate wells in the platemap?)",
                             path=platemap or out_dir, hint="list every well once in the platemap")
        crop_table = single_cell[[c for c in single_cell.columns if c.startswith("Metadata_")]]
        write_crops(stack, crop_table, out_dir, channels=config.channel_names)
        crop_outputs = {"crops.tif": {"shape": list(stack.shape), "channels": config.channel_names,
                                      "parameters": crop_cfg},
                        "crops.parquet": {"rows": len(crop_table)}}
    io.write_manifest(
        out_dir, command="profiler extract", inputs=inputs,
        parameters={"pipeline": config.to_dict()},
        outputs={
            "single_cell.parquet": {"rows": len(single_cell), "columns": single_cell.shape[1]},
            "image.parquet": {"rows": len(image_table)},
            "profiles.parquet": {"rows": len(profiles), "columns": profiles.shape[1]},
            **crop_outputs,
        },
        extra=extra,
    )
    return out_dir
