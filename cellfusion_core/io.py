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


def write_json(obj: Any, path: str | Path, *, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON, indented unless ``indent=None`` (numpy scalars and arrays
    allowed). ``indent=None`` writes one line with the json module's C encoder: for a file of
    thousands of numbers (a fitted model) about half the time of the indented Python encoder."""
    return write_text(json.dumps(obj, indent=indent, default=_json_default, allow_nan=True) + "\n", path)


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


def write_parquet(df: pd.DataFrame, path: str | Path, **options: Any) -> Path:
    """Atomically write ``df`` to Parquet (index dropped).

    The file is what ``df.to_parquet(path, index=False)`` writes (the same Arrow table, pandas
    metadata included; :func:`arrow_table`); ``options`` go to :func:`pyarrow.parquet.write_table`
    (e.g. ``compression="none", use_dictionary=False`` for a wide table that is read once)."""
    import pyarrow.parquet as pq

    if df.attrs:  # pandas stores attrs in the file's metadata: its own writer
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False, **options)
        return Path(path)
    return write_arrow(arrow_table(df), path, **options)


def write_arrow(table, path: str | Path, **options: Any) -> Path:
    """Atomically write a :class:`pyarrow.Table` to Parquet; ``options`` as :func:`write_parquet`'s
    (Snappy unless given)."""
    import pyarrow.parquet as pq

    options.setdefault("compression", "snappy")  # pandas' default
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **options)
    return Path(path)


#: (column names, dtypes) → the Arrow schema (pandas metadata included) pyarrow gave that frame
_SCHEMAS: dict[tuple, Any] = {}
_NUMPY_KINDS = "fiub"


def _schema_key(df: pd.DataFrame) -> tuple | None:
    """What decides ``pa.Table.from_pandas(df, preserve_index=False)``'s schema for frames whose
    columns are unique strings of numeric NumPy or string dtypes (no data-dependent metadata);
    ``None`` for any other frame."""
    cols = df.columns
    if not len(cols) or not cols.is_unique or not all(type(c) is str for c in cols):
        return None
    dtypes = tuple(df.dtypes)
    for dt in dtypes:
        if isinstance(dt, np.dtype):
            if dt.kind not in _NUMPY_KINDS or dt.byteorder not in "=|":
                return None
        elif not isinstance(dt, pd.StringDtype):
            return None
    return (tuple(cols), cols.dtype, dtypes)


def arrow_table(df: pd.DataFrame):
    """``pyarrow.Table.from_pandas(df, preserve_index=False)``, the same table (values, nulls for NaN,
    types, pandas metadata), built for a wide numeric frame in a few milliseconds instead of
    ~60 µs per column: the schema of a frame with these columns and dtypes is computed once per
    process by pyarrow itself, then the numeric columns are handed over from one 2-D block per dtype."""
    import pyarrow as pa

    key = _schema_key(df)
    schema = _SCHEMAS.get(key) if key is not None else None
    if schema is None:
        table = pa.Table.from_pandas(df, preserve_index=False)
        if key is not None:
            if len(_SCHEMAS) >= 32:
                _SCHEMAS.clear()
            _SCHEMAS[key] = table.schema
        return table
    dtypes = key[2]
    arrays: list[Any] = [None] * len(dtypes)
    groups: dict[np.dtype, list[int]] = {}
    other: list[int] = []
    for j, dt in enumerate(dtypes):
        if isinstance(dt, np.dtype):
            groups.setdefault(dt, []).append(j)
        else:
            other.append(j)
    types = schema.types
    for dt, idx in groups.items():
        block = np.asfortranarray(df.iloc[:, idx].to_numpy(dtype=dt, copy=False))
        for k, j in enumerate(idx):
            arrays[j] = pa.array(block[:, k], type=types[j], from_pandas=True)
    if other:
        rest = pa.Table.from_pandas(df.iloc[:, other], preserve_index=False)
        for k, j in enumerate(other):
            arrays[j] = rest.column(k)
    if any(a.type != t for a, t in zip(arrays, types)):  # pragma: no cover - defensive
        return pa.Table.from_pandas(df, preserve_index=False)
    return pa.Table.from_arrays(arrays, schema=schema)


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
