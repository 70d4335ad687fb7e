"""Safe model files: XGBoost's own format, JSON for small estimators, SHA-256 in the manifest.

A model folder written by ``fusion train`` lists every model file in ``manifest.json`` under
``"model_files"`` with its format, size and SHA-256. Loading a file checks it against that entry
first, so a file that was truncated, edited or swapped fails with a :class:`ModelFileError` that
names it — before any parser sees its bytes. Nothing here unpickles: a pickle (or joblib) file is
refused by its name and by its first bytes. Loading a model never runs code from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellfusion_core.errors import ModelFileError
from cellfusion_core.io import file_sha256, write_bytes, write_json
from cellfusion_core.layout import MANIFEST

__all__ = [
    "MODEL_FILES_KEY", "check_not_pickle", "load_json_model", "load_xgb_booster", "model_file_entry",
    "read_model_manifest", "save_json_model", "save_xgb", "verify_model_file", "verify_model_dir",
]

MODEL_FILES_KEY = "model_files"
#: manifest key of the model folder's format version; a folder with a higher one is refused (it was written
#: by a newer cellfusion whose files this version cannot be trusted to read). Absent means format 1.
MODEL_FORMAT_KEY = "model_format"
MODEL_FORMAT = 1
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pck", ".pt", ".pth", ".sav")


def check_not_pickle(path: str | Path, data: bytes | None = None) -> None:
    """Raise :class:`ModelFileError` if ``path`` looks like a pickle (name or first bytes)."""
    path = Path(path)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelFileError("pickle/joblib/torch files are refused (loading one can run arbitrary code)",
                             path=path, hint="save XGBoost models as .json/.ubj and small estimators as JSON")
    head = data[:2] if data is not None else path.open("rb").read(2)
    # Pickle protocol 2+ starts with 0x80 <proto>; a zip (torch.save, joblib) with "PK".
    if (len(head) == 2 and head[0] == 0x80 and head[1] <= 5) or head == b"PK":
        raise ModelFileError("this file is a pickle or zip archive, which is refused (loading one can run code)",
                             path=path, hint="re-export the model with `fusion train` (XGBoost JSON/UBJ, JSON)")


def model_file_entry(path: str | Path, fmt: str) -> dict[str, Any]:
    """The manifest entry for a model file: format, size, SHA-256."""
    path = Path(path)
    return {"format": fmt, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def save_xgb(model: Any, path: str | Path) -> dict[str, Any]:
    """Atomically save an XGBoost booster (or sklearn wrapper) in XGBoost's own format.

    The format follows the suffix: ``.ubj`` (Universal Binary JSON) or ``.json``.
    Returns the manifest entry for the file.
    """
    path = Path(path)
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    fmt = {".ubj": "ubj", ".json": "json"}.get(path.suffix.lower())
    if fmt is None:
        raise ModelFileError("an XGBoost model file must end in .ubj or .json", path=path)
    raw = booster.save_raw(raw_format=fmt)
    write_bytes(bytes(raw), path)
    return model_file_entry(path, f"xgboost-{fmt}")


def save_json_model(obj: Mapping[str, Any], path: str | Path, fmt: str = "json") -> dict[str, Any]:
    """Atomically save a small estimator's parameters as JSON; returns its manifest entry."""
    write_json(dict(obj), path)
    return model_file_entry(path, fmt)


def read_model_manifest(model_dir: str | Path) -> dict[str, Any]:
    """``model_dir/manifest.json`` of a model folder, with a clear error when it is not one."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise ModelFileError("model folder not found", path=model_dir,
                             hint="pass the folder written by `fusion train -o MODEL_DIR`")
    if not path.is_file():
        raise ModelFileError("no manifest.json in this folder; it is not a model folder", path=model_dir,
                             hint="pass the folder written by `fusion train -o MODEL_DIR`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"manifest.json is not valid JSON ({exc})", path=path,
                             hint="the model folder is damaged; retrain with `fusion train`") from exc
    if not isinstance(manifest, dict) or MODEL_FILES_KEY not in manifest:
        written = _written_by(manifest if isinstance(manifest, dict) else {})
        raise ModelFileError("manifest.json lists no model files; it was not written by this version's "
                             f"`fusion train`{written}", path=path, hint="retrain with `fusion train`")
    fmt = manifest.get(MODEL_FORMAT_KEY, 1)
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt > MODEL_FORMAT or fmt < 1:
        raise ModelFileError(f"model folder has format {fmt!r}, this cellfusion reads format {MODEL_FORMAT}"
                             f"{_written_by(manifest)}", path=path,
                             hint="use the cellfusion version that wrote it, or retrain with this one's `fusion train`")
    if not isinstance(manifest[MODEL_FILES_KEY], dict):
        raise ModelFileError("manifest.json's model_files is not a mapping of file names", path=path,
                             hint="the model folder is damaged; retrain with `fusion train`")
    return manifest


def _this_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("cellfusion")
    except metadata.PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "unknown"


def _written_by(manifest: Mapping[str, Any]) -> str:
    """`` (written by cellfusion X; this is Y)`` when the manifest records another version, else ''."""
    versions = manifest.get("versions")
    theirs = versions.get("cellfusion") if isinstance(versions, Mapping) else None
    ours = _this_version()
    if theirs is None:
        return "; it records no cellfusion version (written by another tool or an old version)"
    return f" (written by cellfusion {theirs}; this is {ours})" if str(theirs) != ours else ""


def verify_model_file(model_dir: str | Path, name: str, manifest: Mapping[str, Any] | None = None) -> bytes:
    """Bytes of the model file ``name`` after checking it against the manifest's size and SHA-256."""
    model_dir = Path(model_dir)
    manifest = manifest if manifest is not None else read_model_manifest(model_dir)
    entry = manifest.get(MODEL_FILES_KEY, {}).get(name)
    path = model_dir / name
    if entry is None:
        listed = ", ".join(map(str, manifest.get(MODEL_FILES_KEY, {}))) or "none"
        raise ModelFileError(f"{name} is not listed in manifest.json (it lists: {listed}){_written_by(manifest)}",
                             path=model_dir, hint="the model folder comes from another cellfusion version or "
                                                  "another command; retrain with this version's `fusion train`")
    if not path.is_file():
        raise ModelFileError("model file is missing", path=path, hint="retrain with `fusion train`")
    data = path.read_bytes()
    check_not_pickle(path, data)
    if len(data) != entry.get("bytes"):
        raise ModelFileError(f"model file has {len(data)} bytes, the manifest recorded {entry.get('bytes')} "
                             "(truncated or modified)", path=path, hint="retrain with `fusion train` or restore the file")
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.get("sha256"):
        raise ModelFileError("model file's SHA-256 does not match manifest.json (modified or corrupted)", path=path,
                             hint="retrain with `fusion train` or restore the original file")
    return data


def verify_model_dir(model_dir: str | Path) -> dict[str, Any]:
    """Check every model file listed in the manifest; returns the manifest."""
    manifest = read_model_manifest(model_dir)
    for name in manifest[MODEL_FILES_KEY]:
        verify_model_file(model_dir, name, manifest)
    for p in Path(model_dir).iterdir():
        if p.is_file():
            check_not_pickle(p)
    return manifest


def load_xgb_booster(model_dir: str | Path, name: str, manifest: Mapping[str, Any] | None = None):
    """Load a verified XGBoost model file with XGBoost's own loader → ``xgboost.Booster``."""
    import xgboost as xgb

    data = verify_model_file(model_dir, name, manifest)
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except xgb.core.XGBoostError as exc:
        raise ModelFileError(f"XGBoost cannot read this model file ({str(exc).splitlines()[0]})",
                             path=Path(model_dir) / name, hint="retrain with `fusion train`") from exc
    return booster


class ModelDict(dict):
    """A JSON model file's object: a plain dict, except that reading a key it lacks raises a
    :class:`ModelFileError` naming the file, the key and the cellfusion version that wrote it — what
    a file written by another version looks like — instead of a bare ``KeyError``."""

    def __init__(self, data: Mapping[str, Any], path: Path, written_by: str, where: str = ""):
        super().__init__({k: _wrap(v, path, written_by, f"{where}{k}.") for k, v in data.items()})
        self._path, self._written_by, self._where = path, written_by, where

    def __missing__(self, key: Any):
        raise ModelFileError(f"model file has no {self._where}{key!s} entry{self._written_by}", path=self._path,
                             hint="the model folder comes from another cellfusion version; retrain with this "
                                  "version's `fusion train`, or use the version that wrote it")

    def __reduce__(self):  # pickles (e.g. to Dask workers) as the plain dict it holds
        return (dict, (dict(self),))


def _wrap(value: Any, path: Path, written_by: str, where: str) -> Any:
    if isinstance(value, dict):
        return ModelDict(value, path, written_by, where)
    if isinstance(value, list):
        return [_wrap(v, path, written_by, where) for v in value]
    return value


def load_json_model(model_dir: str | Path, name: str, manifest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load a verified JSON model file → dict (a :class:`ModelDict`: a missing key is a ModelFileError)."""
    manifest = manifest if manifest is not None else read_model_manifest(model_dir)
    data = verify_model_file(model_dir, name, manifest)
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"model file is not valid JSON ({exc})", path=Path(model_dir) / name,
                             hint="retrain with `fusion train`") from exc
    if not isinstance(obj, dict):
        raise ModelFileError("model file does not hold a JSON object", path=Path(model_dir) / name)
    return ModelDict(obj, Path(model_dir) / name, _written_by(manifest))
