"""The project's only way to write files: atomically, with a manifest.

Readers never see a half-written file: each writer writes to a temporary file in the target's
folder, flushes and fsyncs it, then renames it over the target (rename is atomic on POSIX).
Every output directory carries a ``manifest.json`` written with :func:`write_manifest`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cellfusion_core.layout import MANIFEST

_VERSIONED = (
    "cellfusion", "numpy", "pandas", "pyarrow", "scikit-image", "scipy", "tifffile",
    "scikit-learn", "xgboost", "pycytominer", "shap", "torch", "timm", "dask",
)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(text.encode("utf-8"), path)


def write_json(obj: Any, path: str | Path) -> Path:
    """Atomically write ``obj`` as indented JSON (numpy scalars and arrays allowed)."""
    return write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n", path)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (_dt.datetime, _dt.date)):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Atomically write ``df`` to Parquet (index dropped)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide this project's numbers (absent ones omitted)."""
    out = {"python": sys.version.split()[0]}
    for name in _VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def write_manifest(
    out_dir: str | Path,
    *,
    command: str,
    inputs: Mapping[str, str | Path] | None = None,
    parameters: Mapping[str, Any] | None = None,
    outputs: Mapping[str, Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    hash_inputs: bool = True,
) -> Path:
    """Write ``out_dir/manifest.json``.

    Parameters
    ----------
    command:
        What produced the directory, e.g. ``"profiler extract"``.
    inputs:
        Named input files; each is recorded with its path, size and SHA-256 (folders: path only).
    parameters:
        Every parameter that influenced the outputs (JSON-serialisable).
    outputs:
        Output file name → facts about it, e.g. ``{"rows": 1234, "columns": 56}``.
    """
    out_dir = Path(out_dir)
    recorded_inputs: dict[str, Any] = {}
    for key, p in (inputs or {}).items():
        p = Path(p)
        entry: dict[str, Any] = {"path": str(p.resolve())}
        if p.is_file():
            entry["bytes"] = p.stat().st_size
            if hash_inputs:
                entry["sha256"] = file_sha256(p)
        recorded_inputs[key] = entry
    manifest = {
        "command": command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": recorded_inputs,
        "parameters": dict(parameters or {}),
        "outputs": {k: dict(v) for k, v in (outputs or {}).items()},
        "versions": package_versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    if extra:
        manifest.update(extra)
    return write_json(manifest, out_dir / MANIFEST)


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Read ``out_dir/manifest.json``; a clear error if it is missing or malformed."""
    from cellfusion_core.errors import InputError

    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError("no manifest.json here", path=out_dir,
                         hint="point at a folder written by `profiler extract` or `fusion train`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"manifest.json is not valid JSON ({exc})", path=path,
                         hint="the folder is damaged; rerun the command that wrote it") from exc
