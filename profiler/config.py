"""Assay pipelines: YAML files that describe an assay declaratively.

The built-in pipelines ship inside the package (``profiler/pipelines/*.yaml``, found with
:mod:`importlib.resources`, so an installed wheel finds them too); ``--pipeline NAME`` picks one,
``--pipeline path.yaml`` reads your own.

A pipeline names the channels and their roles, how files are discovered, and the parameters of
every stage. Each stage owns its own section (a plain mapping); this module only validates the
shape that is common to all and merges each section over the stage's defaults.

Example (the built-in ``example``)::

    name: example
    layout: {preset: imagexpress}
    channels:
      - {name: DNA, file: w1, role: nuclei}
      - {name: Tubulin, file: w2, role: cells}
      - {name: Actin, file: w3}
    segmentation: {...}
    features: {families: [AreaShape, Intensity, ...]}
    profiles: {aggregate: median, normalize: mad_robustize}
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cellfusion_core.errors import ConfigError

# the built-in pipelines: package data of ``profiler`` (pyproject.toml [tool.setuptools.package-data])
PIPELINES_DIR = resources.files("profiler") / "pipelines"
SECTIONS = ("layout", "image", "illumination", "segmentation", "qc", "features", "profiles", "crops",
            "outliers")


@dataclass(frozen=True)
class Channel:
    """One imaging channel: its name in feature names, its key in file names, its role."""

    name: str
    file: str
    role: str = "other"  # "nuclei" (segment nuclei on it), "cells" (propagate cells on it), "other"


@dataclass
class AssayConfig:
    """A parsed pipeline YAML."""

    name: str
    channels: list[Channel]
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str | None = None

    def section(self, key: str, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``key`` section deep-merged over ``defaults`` (a fresh copy)."""
        return _deep_merge(copy.deepcopy(dict(defaults or {})), self.sections.get(key, {}))

    @property
    def channel_names(self) -> list[str]:
        return [c.name for c in self.channels]

    def channel_for_role(self, role: str) -> str:
        """Name of the channel with ``role``; a ConfigError if there is none."""
        for c in self.channels:
            if c.role == role:
                return c.name
        raise ConfigError(f"pipeline {self.name!r} has no channel with role {role!r}",
                          path=self.source,
                          hint=f"mark one channel with `role: {role}` under `channels:`")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channels": [{"name": c.name, "file": c.file, "role": c.role} for c in self.channels],
            **{k: v for k, v in self.sections.items()},
        }


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            base[k] = _deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def builtin_pipelines() -> list[str]:
    """Names of the pipelines shipped in the package (``profiler/pipelines/*.yaml``)."""
    return sorted(p.name.removesuffix(".yaml") for p in PIPELINES_DIR.iterdir()
                  if p.is_file() and p.name.endswith(".yaml"))


def load_pipeline(spec: str | Path | Mapping[str, Any]) -> AssayConfig:
    """Load a pipeline from a YAML path, a built-in name (``"example"``) or a mapping."""
    source: str | None = None
    if isinstance(spec, Mapping):
        raw: Any = dict(spec)
    else:
        path = Path(spec)
        if not path.suffix and not path.exists():
            path = PIPELINES_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise ConfigError("pipeline file not found", path=spec,
                              hint=f"give a YAML path or one of: {', '.join(builtin_pipelines())}")
        source = str(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"not valid YAML ({exc})", path=path,
                              hint="check the indentation (spaces, not tabs) and the brackets and quotes "
                                   "near the line named") from exc
        except RecursionError:
            raise ConfigError("not valid YAML (nested too deeply)", path=path) from None
    if not isinstance(raw, Mapping):
        raise ConfigError("a pipeline must be a YAML mapping", path=source)
    unknown = sorted(map(str, set(raw) - {"name", "channels", "description", *SECTIONS}))
    if unknown:
        raise ConfigError(f"unknown top-level keys: {unknown}", path=source,
                          hint=f"{_did_you_mean(unknown[0], ('name', 'channels', *SECTIONS))}"
                               f"allowed: name, description, channels, {', '.join(SECTIONS)}")
    chans = raw.get("channels")
    if not isinstance(chans, list) or not chans:
        raise ConfigError("`channels:` must be a non-empty list", path=source)
    channels = []
    for i, c in enumerate(chans):
        if not isinstance(c, Mapping) or "name" not in c or "file" not in c:
            raise ConfigError(f"channel #{i + 1} needs `name` and `file`", path=source,
                              hint="e.g. `- {name: DNA, file: w1, role: nuclei}`")
        name = str(c["name"])
        if not name.isidentifier() or "_" in name:
            raise ConfigError(f"channel name {name!r} must be letters/digits without '_'",
                              path=source, hint="feature names split on '_' (CellProfiler convention)")
        channels.append(Channel(name=name, file=str(c["file"]), role=str(c.get("role", "other"))))
    names = [c.name for c in channels]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate channel names: {names}", path=source)
    sections = {}
    for key in SECTIONS:
        val = raw.get(key, {}) or {}
        if not isinstance(val, Mapping):
            raise ConfigError(f"`{key}:` must be a mapping", path=source)
        sections[key] = dict(val)
    return validate_pipeline(AssayConfig(name=str(raw.get("name", Path(source).stem if source else "custom")),
                                         channels=channels, sections=sections, source=source))


# ---------------------------------------------------------------------------------------------
# Up-front validation: every section a run will use is checked when the pipeline is loaded, so a
# typo or an impossible value is one `error:` naming the key — before any site is read.
# ---------------------------------------------------------------------------------------------

ROLES = ("nuclei", "cells", "other")


def _did_you_mean(word: str, allowed: Any) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _unknown_keys(given: Mapping[str, Any], allowed: Any, where: str, source: str | None) -> None:
    unknown = [k for k in given if k not in allowed]
    if unknown:
        k = unknown[0]
        raise ConfigError(f"unknown {where} key {k!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""),
                          path=source, hint=f"{_did_you_mean(k, allowed)}allowed: {', '.join(map(str, allowed))}")


def _number(value: Any, key: str, source: str | None, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, integer: bool = False, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    ok_type = (isinstance(value, int) if integer else isinstance(value, (int, float))) and not isinstance(value, bool)
    if not ok_type:
        raise ConfigError(f"{key} must be {'a whole number' if integer else 'a number'}"
                          f"{' or null' if none_ok else ''}, got {value!r}", path=source)
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    if bad_lo or (hi is not None and value > hi) or value != value:
        rng = f"{'>' if lo_open else '≥'} {lo:g}" if lo is not None else ""
        rng += (" and " if rng and hi is not None else "") + (f"≤ {hi:g}" if hi is not None else "")
        raise ConfigError(f"{key} must be {rng}, got {value!r}", path=source)


def _choice(value: Any, key: str, allowed: tuple, source: str | None) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} {value!r} is unknown", path=source,
                          hint=f"{_did_you_mean(value, allowed)}use one of: {', '.join(map(str, allowed))}")


def _validate_segmentation(section: Mapping[str, Any], source: str | None) -> None:
    from profiler.segment import DEFAULTS, THRESHOLD_METHODS

    _unknown_keys(section, tuple(DEFAULTS), "segmentation", source)
    for kind, defaults in DEFAULTS.items():
        given = section.get(kind) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"segmentation.{kind} must be a mapping, got {given!r}", path=source)
        _unknown_keys(given, tuple(defaults), f"segmentation.{kind}", source)
        p = {**defaults, **given}
        key = f"segmentation.{kind}."
        _choice(p["threshold_method"], key + "threshold_method", THRESHOLD_METHODS, source)
        _choice(p["threshold_classes"], key + "threshold_classes", (2, 3), source)
        _choice(p["middle_class"], key + "middle_class", ("foreground", "background"), source)
        _number(p["threshold_smoothing_scale"], key + "threshold_smoothing_scale", source, lo=0)
        _number(p["threshold_correction"], key + "threshold_correction", source, lo=0, lo_open=True)
        b = p["threshold_bounds"]
        if (not isinstance(b, (list, tuple)) or len(b) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in b)):
            raise ConfigError(f"{key}threshold_bounds must be [lower, upper], got {b!r}", path=source,
                              hint="e.g. threshold_bounds: [0.0, 1.0]")
        if not 0 <= b[0] < b[1] <= 1:
            raise ConfigError(f"{key}threshold_bounds must satisfy 0 ≤ lower < upper ≤ 1, got {list(b)}"
                              + (" (reversed)" if b[0] > b[1] else ""), path=source,
                              hint="intensities are on CellProfiler's [0, 1] scale; e.g. [0.0, 1.0]")
        for flag in ("fill_holes", "exclude_size", "exclude_border", "low_res_maxima"):
            if flag in p and not isinstance(p[flag], bool):
                raise ConfigError(f"{key}{flag} must be true or false, got {p[flag]!r}", path=source)
        if kind == "cells":
            _number(p["regularization"], key + "regularization", source, lo=0)
            continue
        _choice(p["declump"], key + "declump", ("intensity", "shape", "none"), source)
        _choice(p["dividing_lines"], key + "dividing_lines", ("intensity", "shape"), source)
        _number(p["min_diameter"], key + "min_diameter", source, lo=0, lo_open=True)
        _number(p["max_diameter"], key + "max_diameter", source, lo=0, lo_open=True)
        if not p["min_diameter"] < p["max_diameter"]:
            raise ConfigError(f"{key}min_diameter ({p['min_diameter']}) must be smaller than max_diameter "
                              f"({p['max_diameter']})", path=source, hint="diameters are in pixels")
        _number(p["declump_smoothing"], key + "declump_smoothing", source, lo=0, lo_open=True, none_ok=True)
        _number(p["maxima_suppression"], key + "maxima_suppression", source, lo=0, none_ok=True)


def _validate_features(section: Mapping[str, Any], source: str | None) -> None:
    import inspect

    from profiler.measure import DEFAULT_FAMILIES, families

    known = families()
    chosen = section.get("families", list(DEFAULT_FAMILIES))
    if not isinstance(chosen, (list, tuple)) or not chosen:
        raise ConfigError(f"features.families must be a non-empty list of family names, got {chosen!r}",
                          path=source, hint=f"known families: {', '.join(sorted(known))}")
    for name in chosen:
        if name not in known:
            raise ConfigError(f"unknown feature family {name!r} in features.families", path=source,
                              hint=f"{_did_you_mean(name, known)}known families: {', '.join(sorted(known))}")
    for name, params in section.items():
        if name == "families":
            continue
        if name not in known:
            raise ConfigError(f"unknown features key {name!r}", path=source,
                              hint=f"{_did_you_mean(name, [*known, 'families'])}the features section holds "
                                   "`families:` and per-family parameters, e.g. Texture: {scales: [3]}")
        if not isinstance(params, Mapping):
            raise ConfigError(f"features.{name} must be a mapping of parameters, got {params!r}", path=source)
        sig = inspect.signature(known[name].fn).parameters
        allowed = tuple(dict.fromkeys([*known[name].defaults,
                                       *(k for k in list(sig)[2:] if k not in ("n_objects", "context"))]))
        _unknown_keys(params, allowed, f"features.{name}", source)


def validate_pipeline(config: AssayConfig) -> AssayConfig:
    """Check every section of ``config`` that a run uses; a :class:`ConfigError` names the first problem.

    Channel roles (one ``nuclei``, one ``cells``), the layout, the ``image:`` options, the
    segmentation parameters (known keys, types, ranges: diameters > 0 and min < max, threshold
    bounds 0 ≤ lower < upper ≤ 1 …), the feature families and their parameters, QC, illumination,
    crops and outliers. Unknown keys get a "did you mean" hint.
    """
    from profiler.crops import crop_params
    from profiler.illum import config_params
    from profiler.outliers import outlier_params
    from profiler.plate import image_params, layout_of

    src = config.source
    for c in config.channels:
        _choice(c.role, f"the role of channel {c.name}", ROLES, src)
    for role in ("nuclei", "cells"):
        holders = [c.name for c in config.channels if c.role == role]
        if len(holders) != 1:
            raise ConfigError(f"{'no channel has' if not holders else 'several channels have'} role {role!r}"
                              + (f" ({', '.join(holders)})" if holders else ""), path=src,
                              hint=f"mark exactly one channel with `role: {role}` under `channels:`")
    files = [c.file for c in config.channels]
    if len(set(files)) != len(files):
        raise ConfigError(f"two channels share a file key: {files}", path=src,
                          hint="each channel needs its own `file:` key (e.g. w1, w2, w3)")
    try:
        layout_of(config)
        image_params(config)
        config_params(config.section("illumination"))
        crop_params(config.section("crops"))
        outlier_params(config.section("outliers"))
    except ConfigError as exc:
        if exc.path is None and src is not None:
            raise ConfigError(exc.problem, path=src, hint=exc.hint) from None
        raise
    ill = config.section("illumination")
    for flag, where in ((ill.get("enabled", False), "illumination.enabled"),
                        (config.section("crops").get("enabled", False), "crops.enabled"),
                        (config.section("crops").get("mask_background", False), "crops.mask_background")):
        if not isinstance(flag, bool):
            raise ConfigError(f"{where} must be true or false, got {flag!r}", path=src)
    _number(ill.get("filter_size"), "illumination.filter_size", src, lo=0, lo_open=True, none_ok=True)
    _number(ill.get("downsample", 8), "illumination.downsample", src, lo=1, integer=True)
    _number(ill.get("polynomial_degree", 2), "illumination.polynomial_degree", src, lo=0, hi=10, integer=True)
    _number(ill.get("max_images", 200), "illumination.max_images", src, lo=1, integer=True)
    _unknown_keys(config.sections["layout"], ("preset", "recursive", "plane", "csv", "pattern"), "layout", src)
    _validate_segmentation(config.sections["segmentation"], src)
    _validate_features(config.sections["features"], src)
    qc = config.sections["qc"]
    _unknown_keys(qc, ("outlier_z", "min_sites"), "qc", src)
    _number(qc.get("outlier_z", 3.0), "qc.outlier_z", src, lo=0, lo_open=True)
    _number(qc.get("min_sites", 5), "qc.min_sites", src, lo=1, integer=True)
    return config
