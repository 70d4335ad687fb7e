"""The registry of feature families.

A *family* (``AreaShape``, ``Intensity``, ``Texture`` …) is a pure function over **all objects of
one label image at once**::

    fn(labels, images, *, n_objects, **params) -> dict[str, np.ndarray]

* ``labels``: (H, W) integer label image, objects numbered 1..``n_objects`` (0 = background).
  Some numbers may be absent (e.g. a cytoplasm with no pixels): their rows are NaN.
* ``images``: channel name → (H, W) float32 image on CellProfiler's scale (raw / dtype max, so
  16-bit data lies in [0, 1]). Channel-free families ignore it.
* returns feature name *without* the compartment prefix (``"AreaShape_Area"``,
  ``"Intensity_MeanIntensity_DNA"``) → float64 array of shape (n_objects,), row i = object i + 1.

Families are registered by name with :func:`register` so that a pipeline YAML can switch them on
and off (``features: {families: [AreaShape, Intensity]}``) and so that docs/features.md can be
generated from the code (:func:`families`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

FamilyFn = Callable[..., dict[str, np.ndarray]]


@dataclass(frozen=True)
class FeatureDoc:
    """One row of the feature dictionary (docs/features.md)."""

    pattern: str      # CellProfiler name pattern without compartment, e.g. "Intensity_MeanIntensity_{channel}"
    definition: str   # what it means, CellProfiler's definition
    units: str        # "pixels", "pixels²", "intensity (raw / dtype max)", "radians", "dimensionless" …


@dataclass(frozen=True)
class Family:
    name: str
    fn: FamilyFn
    module: str
    description: str
    features: tuple[FeatureDoc, ...] = field(default_factory=tuple)
    defaults: Mapping[str, object] = field(default_factory=dict)


_REGISTRY: dict[str, Family] = {}


def register(name: str, *, description: str, features: list[FeatureDoc] | tuple[FeatureDoc, ...] = (),
             defaults: Mapping[str, object] | None = None) -> Callable[[FamilyFn], FamilyFn]:
    """Decorator: register ``fn`` as the feature family ``name``."""

    def deco(fn: FamilyFn) -> FamilyFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"feature family {name!r} registered twice")
        _REGISTRY[name] = Family(name=name, fn=fn, module=f"{fn.__module__}.{fn.__qualname__}",
                                 description=description, features=tuple(features),
                                 defaults=dict(defaults or {}))
        return fn

    return deco


def families() -> dict[str, Family]:
    """All registered families, by name (importing :mod:`profiler.measure` registers them)."""
    return dict(_REGISTRY)


def get_family(name: str) -> Family:
    from cellfusion_core.errors import ConfigError

    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown feature family {name!r}",
                          hint=f"known families: {', '.join(sorted(_REGISTRY))}") from None
