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

from profiler.errors import ConfigError

# the built-in pipelines: package data of ``profiler`` (pyproject.toml [tool.setuptools.package-data])
PIPELINES_DIR = resources.files("profiler") / "pipelines"
SECTIONS = ("layout", "image", "illumination", "segmentation", "qc", "features", "profiles", "crops")


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
            raise ConfigError(f"not valid YAML ({exc})", path=path) from exc
    if not isinstance(raw, Mapping):
        raise ConfigError("a pipeline must be a YAML mapping", path=source)
    unknown = set(raw) - {"name", "channels", "description", *SECTIONS}
    if unknown:
        raise ConfigError(f"unknown top-level keys: {sorted(unknown)}", path=source,
                          hint=f"allowed: name, description, channels, {', '.join(SECTIONS)}")
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
    return AssayConfig(name=str(raw.get("name", Path(source).stem if source else "custom")),
                       channels=channels, sections=sections, source=source)
