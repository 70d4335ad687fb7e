"""``profiler aggregate``: per-cell Parquet → per-well ``profiles.parquet`` (+ manifest), the recipe's steps."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .aggregate import aggregate_parquet
from .annotate import annotate
from .recipes import apply_recipe, resolve_recipe


def aggregate_command(single_cell_path: str | Path, out_dir: str | Path, *, platemap: str | Path | None = None,
                      recipe: str | Mapping[str, Any] | None = None, operation: str | None = None,
                      samples: str | None = None, allow_unimaged_wells: bool = False,
                      memory_mb: float = 1500) -> Path:
    """``profiler aggregate``: per-cell Parquet (file or folder) → ``out_dir/profiles.parquet`` + manifest.

    Aggregation streams the Parquet with DuckDB (memory bounded by ``memory_mb`` whatever the number
    of cells); then platemap annotation and the recipe's normalize → feature_select → whiten steps.
    """
    from cellfusion_core import io
    from cellfusion_core.layout import PROFILES
    from profiler.plate import read_platemap

    rec = resolve_recipe(recipe)
    op = operation or rec.get("aggregate", "median")
    prof = aggregate_parquet(single_cell_path, operation=op, memory_mb=memory_mb)
    inputs: dict[str, Path] = {"single_cell": Path(single_cell_path)}
    if platemap is not None:
        prof = annotate(prof, read_platemap(platemap), allow_unimaged_wells=allow_unimaged_wells)
        inputs["platemap"] = Path(platemap)
    prof = apply_recipe(prof, rec, samples=samples)
    out_dir = Path(out_dir)
    io.write_parquet(prof, out_dir / PROFILES)
    io.write_manifest(out_dir, command="profiler aggregate", inputs=inputs,
                      parameters={"recipe": rec, "aggregate": op, "samples": samples,
                                  "allow_unimaged_wells": allow_unimaged_wells},
                      outputs={PROFILES: {"rows": len(prof), "columns": prof.shape[1]}})
    return out_dir
