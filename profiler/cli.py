"""``profiler``: images → cells → features → well profiles. A thin typer layer over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cellfusion_core.cli import COLUMN_OPTION_HELP, err_console, make_app, run_main

app = make_app("Images → cells → CellProfiler-style features → per-well profiles.")


@app.command("example-plate")
def example_plate(
    out_dir: Path = typer.Argument(..., help="Folder to write the plate into."),
    n_wells: int = typer.Option(24, help="Number of wells."),
    n_sites: int = typer.Option(2, help="Sites (fields) per well."),
    size: int = typer.Option(512, help="Image height and width in pixels."),
    seed: int = typer.Option(0, help="Random seed (same seed → identical files)."),
    defects: float = typer.Option(
        0.0, min=0.0, max=0.6,
        help="Fraction of cells made defective (bright debris, blurred, fused nuclei; listed in "
             "ground_truth/defects.csv). 0: none."),
) -> None:
    """Write the synthetic example plate (ImageXpress-named 16-bit TIFFs + platemap.csv)."""
    from profiler.synthetic import make_example_plate

    path = make_example_plate(out_dir, n_wells=n_wells, n_sites=n_sites, size=size, seed=seed, defects=defects)
    err_console.print(f"example plate written to {path}")


@app.command()
def extract(
    plate_dir: Path = typer.Argument(..., help="Folder with the plate's images."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    pipeline: str = typer.Option("example", "--pipeline", "-p", help="Pipeline YAML path or built-in name."),
    platemap: Optional[Path] = typer.Option(None, help="platemap.csv (default: PLATE_DIR/platemap.csv)."),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-w", min=0,
        help="Dask worker processes on this machine (default: one per core); 0 = no Dask, run in this process."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help="Use a running Dask cluster at tcp://HOST:PORT instead of a local one."),
    resume: bool = typer.Option(
        True, "--resume/--no-resume",
        help="Reuse complete per-site results of an earlier run into --out made with the same pipeline."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    overlays: bool = typer.Option(False, "--overlays", help="Write OUT/overlays/<site>.png with nucleus and cell outlines."),
    crops: Optional[bool] = typer.Option(
        None, "--crops/--no-crops",
        help="Also write OUT/crops.tif (N,S,S,C) + crops.parquet: a window around each cell, all channels "
             "(default: the pipeline's crops section, off)."),
    crop_size: Optional[int] = typer.Option(None, "--crop-size", min=8,
                                            help="Crop side S in pixels (default: the pipeline's, 64)."),
    remove_outliers: Optional[bool] = typer.Option(
        None, "--remove-outliers/--keep-outliers",
        help="Leave cells flagged Metadata_Outlier out of the per-well profiles (they stay in single_cell.parquet; "
             "default: the pipeline's outliers section, keep)."),
) -> None:
    """Segment, measure and profile a plate: writes single_cell.parquet, profiles.parquet, manifest.json."""
    from profiler.extract import extract as run

    out_dir = run(plate_dir, out, pipeline=pipeline, platemap=platemap, workers=workers,
                  scheduler=scheduler, resume=resume, progress=progress, overlays=overlays,
                  crops=crops, crop_size=crop_size, remove_outliers=remove_outliers)
    err_console.print(f"outputs written to {out_dir}")


@app.command()
def info(
    plate_dir: Path = typer.Argument(..., help="Folder with the plate's images."),
    pipeline: str = typer.Option("example", "--pipeline", "-p", help="Pipeline YAML path or built-in name."),
) -> None:
    """Show what the pipeline's layout finds: plates, wells, sites, channels, incomplete sites, unmatched files."""
    from rich.console import Console

    from profiler.config import load_pipeline
    from profiler.plate import plate_info

    rep = plate_info(plate_dir, load_pipeline(pipeline))
    out = Console()
    out.print(f"[bold]{rep['plate_dir']}[/bold]  layout: {rep['layout']}")
    out.print("channels: " + ", ".join(f"{k} ({v})" for k, v in rep["channels"].items()))
    out.print(f"plates ({len(rep['plates'])}): " + ", ".join(rep["plates"]))
    per = rep["sites_per_well"]
    out.print(f"wells ({len(rep['wells'])}): " + ", ".join(f"{w}×{n}" for w, n in per.items()))
    out.print(f"sites: {rep['n_sites']} ({rep['n_complete_sites']} complete)")
    for key, missing in rep["incomplete_sites"].items():
        out.print(f"  [yellow]incomplete[/yellow] {key}: missing channel(s) {', '.join(missing)}")
    if rep["unmatched_files"]:
        out.print(f"files not matched by the layout ({len(rep['unmatched_files'])}):")
        for f in rep["unmatched_files"][:50]:
            out.print(f"  {f}")
    for note in rep["notes"]:
        out.print(f"note: {note}")


@app.command()
def aggregate(
    single_cell: Path = typer.Argument(..., help="Per-cell Parquet file or folder of Parquet files."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (profiles.parquet, manifest.json)."),
    platemap: Optional[Path] = typer.Option(None, help="platemap.csv to annotate wells with."),
    preset: Optional[str] = typer.Option(None, help="Profile recipe preset (default, bbbc021_best); default: "
                                                     "the pipeline's recipe with --pipeline, else 'default'."),
    pipeline: Optional[str] = typer.Option(None, "--pipeline", "-p",
                                           help="Use this pipeline's profiles: recipe (built-in name or YAML), "
                                                "e.g. to rebuild the profiles of a `profiler extract` folder."),
    operation: Optional[str] = typer.Option(None, help="median or mean (default: the preset's)."),
    samples: Optional[str] = typer.Option(None, help="Wells each plate is normalized to: 'controls' (default: the "
                                                     "negative-control rule), 'all' (whole plate) or a pandas query."),
    allow_unimaged_wells: bool = typer.Option(False, help="Platemap wells without cells are a warning, not an error."),
    memory_mb: float = typer.Option(1500, help="Memory budget of the streaming aggregation."),
) -> None:
    """Per-cell Parquet → per-well profiles (streaming median/mean, normalize to controls, feature selection)."""
    from cellfusion_core.errors import InputError
    from profiler.profiles import aggregate_command

    recipe: object = preset
    if pipeline is not None:
        if preset is not None:
            raise InputError("give either --preset or --pipeline, not both",
                             hint="--pipeline uses the recipe in that pipeline's profiles: section")
        from profiler.config import load_pipeline
        from profiler.extract import profile_recipe

        recipe = profile_recipe(load_pipeline(pipeline))
    out_dir = aggregate_command(single_cell, out, platemap=platemap, recipe=recipe, operation=operation,
                                samples=samples, allow_unimaged_wells=allow_unimaged_wells, memory_mb=memory_mb)
    err_console.print(f"profiles written to {out_dir}")


@app.command()
def ingest(
    source: Path = typer.Argument(..., help="Folder of CellProfiler CSV exports, or an ExportToDatabase SQLite file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (single_cell.parquet, manifest.json)."),
    platemap: Optional[Path] = typer.Option(None, help="platemap.csv to annotate cells with."),
    allow_unimaged_wells: bool = typer.Option(False, help="Platemap wells without cells are a warning, not an error."),
) -> None:
    """CellProfiler output (CSV folder or SQLite) → our per-cell Parquet."""
    from profiler.ingest import ingest as run

    out_dir = run(source, out, platemap=platemap, allow_unimaged_wells=allow_unimaged_wells)
    err_console.print(f"single-cell table written to {out_dir}")


@app.command()
def evaluate(
    profiles: Path = typer.Argument(..., help="Per-well profiles (Parquet or CSV) with compound, concentration, MoA "
                                              "(and optionally batch) columns — ours or named with the options below."),
    preset: Optional[str] = typer.Option(None, help="Apply a profile recipe preset first (e.g. bbbc021_best)."),
    with_map: bool = typer.Option(True, "--map/--no-map", help="Also compute copairs mAP."),
    compound: Optional[str] = typer.Option(None, "--compound", help=COLUMN_OPTION_HELP["compound"]),
    concentration: Optional[str] = typer.Option(None, "--concentration", help=COLUMN_OPTION_HELP["concentration"]),
    moa: Optional[str] = typer.Option(None, "--moa", help=COLUMN_OPTION_HELP["moa"]),
    batch: Optional[str] = typer.Option(None, "--batch", help=COLUMN_OPTION_HELP["batch"]),
    control: Optional[str] = typer.Option(None, "--control", help=COLUMN_OPTION_HELP["control"]),
    seed: int = typer.Option(0, help="Seed of the mAP null distribution."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the scores as JSON here."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder: activity.parquet (per treatment: "
                                       "mAP against the controls, p, FDR-corrected p, active), scores.json, manifest.json."),
    per_treatment: bool = typer.Option(True, "--per-treatment/--no-per-treatment",
                                       help="Print, per treatment, whether it differs from the controls (mAP activity)."),
    levels: bool = typer.Option(False, "--levels", help="First print at which level (plate, batch) the control "
                                "wells' location and spread vary (label-free; guides normalize scale_by)."),
) -> None:
    """NSC / NSCB (BBBC021 protocol) and copairs mAP, each beside its chance baseline; per treatment, whether it
    differs from the controls."""
    import numpy as np

    from cellfusion_core import io
    from cellfusion_core.columns import NEGATIVE_CONTROL_QUERY, mark_controls, resolve_columns
    from cellfusion_core.errors import InputError
    from profiler.evaluate import evaluate as run, read_profiles
    from cellfusion_core.names import feature_columns, metadata_columns
    from profiler.profiles import apply_recipe, control_variation_levels

    table = read_profiles(profiles)
    spec = resolve_columns(table, compound=compound, concentration=concentration, moa=moa, batch=batch,
                           control=control, path=profiles)
    spec.require("compound", "moa", what="profiler evaluate", path=profiles)
    typer.echo(f"columns: {spec.describe()}")
    if levels or preset:
        table = mark_controls(table, spec)  # the recipes' control query then selects these rows
    if levels:
        ctrl = table.query(NEGATIVE_CONTROL_QUERY)
        if ctrl.empty:
            raise InputError("no control wells for --levels", path=profiles,
                             hint="name the negative controls with --control (a compound value or a query)")
        finite = [c for c in feature_columns(table) if np.isfinite(ctrl[c].to_numpy(dtype=float)).all()]
        lv = control_variation_levels(table[metadata_columns(table) + finite], samples=NEGATIVE_CONTROL_QUERY,
                                      seed=seed)
        typer.echo(f"control variation levels over {len(finite)} features finite in every control well "
                   "(observed / permuted variance; 1 = sampling noise):")
        for name, v in lv.items():
            typer.echo(f"  {name:30s} median ratio {v['median_ratio']:.2f}, {v['fraction_above_2']:.0%} of features > 2")
    if preset:  # fit on the rows mark_controls marked (the given --control rule), not the default rule
        table = apply_recipe(table, preset, samples=NEGATIVE_CONTROL_QUERY)
    ev = run(table, columns=spec, with_map=with_map, seed=seed)
    for line in ev.lines():
        typer.echo(line)
    if per_treatment and ev.activity is not None:
        typer.echo("per treatment: does it differ from the controls? (mAP activity, FDR-corrected p < 0.05)")
        for line in ev.activity_lines():
            typer.echo(line)
    if json_out is not None:
        io.write_json(ev.to_dict(), json_out)
    if out is not None:
        from cellfusion_core.layout import ACTIVITY_FILE, SCORES_FILE

        outputs = {SCORES_FILE: {}}
        io.write_json(ev.to_dict(), out / SCORES_FILE)
        if ev.activity is not None:
            io.write_parquet(ev.activity, out / ACTIVITY_FILE)
            outputs[ACTIVITY_FILE] = {"rows": len(ev.activity), "active": int(ev.activity["active"].sum()),
                                      "scored": int(ev.activity["scored"].sum())}
        io.write_manifest(out, command="profiler evaluate", inputs={"profiles": profiles},
                          parameters={"preset": preset, "map": with_map, "seed": seed, "columns": spec.to_dict()},
                          outputs=outputs)
        err_console.print(f"evaluation written to {out}")


@app.command()
def cluster(
    profiles: Path = typer.Argument(..., help="Per-well profiles (Parquet or CSV): compound, ordering column, features."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (clusters.parquet, distances.parquet, "
                                                     "clusters.png, scores.json, manifest.json)."),
    by: Optional[str] = typer.Option(None, "--by", help="Numeric column that orders each compound's trajectory "
                                                        "(a concentration or a time; default: the concentration column)."),
    label: Optional[str] = typer.Option(None, "--label", help="Score the clusters and neighbours against this column "
                                                              "(e.g. Metadata_MoA, or 'moa' for the --moa column), "
                                                              "beside label permutations."),
    compound: Optional[str] = typer.Option(None, "--compound", help=COLUMN_OPTION_HELP["compound"]),
    concentration: Optional[str] = typer.Option(None, "--concentration", help=COLUMN_OPTION_HELP["concentration"]),
    moa: Optional[str] = typer.Option(None, "--moa", help=COLUMN_OPTION_HELP["moa"]),
    control: Optional[str] = typer.Option(None, "--control", help=COLUMN_OPTION_HELP["control"] + " Left out."),
    distance: str = typer.Option("dtw", "--distance", help="dtw, or euclidean (trajectories resampled to a common length)."),
    dtw_normalize: str = typer.Option("path", "--dtw-normalize", help="path: mean step cost along the warping "
                                                                      "path (lengths comparable); none: the raw sum."),
    n_clusters: Optional[int] = typer.Option(None, "--clusters", min=1, help="Number of clusters (default: the "
                                                                              "cut with the best silhouette)."),
    linkage: str = typer.Option("average", "--linkage", help="average, complete, single or weighted."),
    neighbours: int = typer.Option(3, "--neighbours", min=1, help="Nearest compounds listed per compound."),
    unit_norm: bool = typer.Option(True, "--unit-norm/--no-unit-norm", help="Scale each step to unit length "
                                                                            "(cosine geometry, as NSC and mAP)."),
    permutations: int = typer.Option(1000, "--permutations", min=1, help="Label permutations of the baseline."),
    seed: int = typer.Option(0, help="Seed of the label permutations."),
) -> None:
    """Cluster compounds by their dose (or time) trajectories with DTW; score against a label when given."""
    from profiler.cluster import cluster_command
    from cellfusion_core.columns import control_mask, resolve_columns
    from cellfusion_core.errors import InputError
    from profiler.evaluate import read_profiles

    table = read_profiles(profiles)
    spec = resolve_columns(table, compound=compound, concentration=concentration, moa=moa, control=control,
                           path=profiles)
    spec.require("compound", what="profiler cluster", path=profiles)
    if by is None:
        if spec.concentration is None:
            raise InputError("no concentration column found to order the trajectories", path=profiles,
                             hint="name the ordering column with --by (or --concentration)")
        by = spec.concentration
    if label == "moa" and "moa" not in table.columns:
        spec.require("moa", what="--label moa", path=profiles)
        label = spec.moa
    typer.echo(f"columns: {spec.describe()}; trajectories ordered by {by}")
    res = cluster_command(profiles, out, by=by, compound=spec.compound, control=control_mask(table, spec),
                          table=table, columns=spec.to_dict(), label=label, distance=distance, dtw_normalize=dtw_normalize,
                          n_clusters=n_clusters, linkage=linkage, n_neighbours=neighbours, unit_norm=unit_norm,
                          n_permutations=permutations, seed=seed)
    for line in res.lines():
        typer.echo(line)
    err_console.print(f"clusters written to {out}")


def main() -> None:
    run_main(app)


if __name__ == "__main__":
    main()
