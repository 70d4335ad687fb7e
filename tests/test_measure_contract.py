"""The contract of the measurement families: one value per object, finite or NaN, never ±inf.

:func:`measure_objects` turns any ±inf into NaN as a last guard, so checking only its table would
never notice a family that divides by zero. Each family's entry point is therefore called directly
(as measure_objects calls it, with and without the shared label context) on degenerate objects and
degenerate images.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from profiler.measure import DEFAULT_FAMILIES, get_family, measure_objects
from profiler.measure._util import LabelContext

N_OBJECTS = 5  # object 5 is absent from the label image


def _labels() -> np.ndarray:
    labels = np.zeros((40, 48), np.int32)
    labels[5:15, 5:20] = 1          # an ordinary object
    labels[20, 30] = 2              # a single pixel
    labels[25:35, 30] = 3           # a one-pixel-wide line
    labels[0:6, 40:48] = 4          # touches the border
    return labels


def _images(shape) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"A": rng.random(shape, dtype=np.float32),       # ordinary texture
            "B": np.zeros(shape, np.float32),                # all zero (no signal: 0/0 everywhere)
            "C": np.full(shape, 1.0, np.float32),            # saturated, constant
            "D": np.full(shape, 1e-30, np.float32)}          # constant and tiny


def _takes_context(family: str) -> bool:
    return "context" in inspect.signature(get_family(family).fn).parameters


# every family without the context; those that accept one also with it (as measure_objects calls them)
CASES = [pytest.param(f, False, id=f"{f}-no-context") for f in DEFAULT_FAMILIES] + [
    pytest.param(f, True, id=f"{f}-context") for f in DEFAULT_FAMILIES if _takes_context(f)]


@pytest.mark.parametrize(("family", "with_context"), CASES)
def test_family_entry_point_gives_finite_or_nan_never_inf(family, with_context):
    labels = _labels()
    fam = get_family(family)
    kw = dict(fam.defaults)
    if with_context:
        kw["context"] = LabelContext(labels, N_OBJECTS)
    out = fam.fn(labels, _images(labels.shape), n_objects=N_OBJECTS, **kw)
    assert out, f"{family} returned no features"
    infinite = []
    for key, values in out.items():
        values = np.asarray(values, dtype=np.float64)
        assert values.shape == (N_OBJECTS,), (key, values.shape)
        if np.isinf(values).any():
            infinite.append(key)
        # an object absent from the label image has no measurement, not a made-up one
        assert np.isnan(values[N_OBJECTS - 1]), (key, values)
    assert not infinite, f"{family} returned ±inf in {infinite}"


def test_measure_objects_table_one_row_per_object():
    labels = _labels()
    table = measure_objects(labels, _images(labels.shape), compartment="Cells", families=DEFAULT_FAMILIES,
                            n_objects=N_OBJECTS)
    values = table.to_numpy()
    assert len(table) == N_OBJECTS
    assert not np.isinf(values).any(), table.columns[np.isinf(values).any(axis=0)].tolist()
    assert table.iloc[N_OBJECTS - 1].isna().all()  # object 5 is absent from the label image
    assert np.isfinite(table.loc[0, "Cells_AreaShape_Area"])
    assert table.loc[0, "Cells_AreaShape_Area"] == 150 and table.loc[1, "Cells_AreaShape_Area"] == 1
