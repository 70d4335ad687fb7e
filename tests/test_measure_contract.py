"""The contract of measure_objects: one row per object, finite values or NaN, never ±inf."""

from __future__ import annotations

import numpy as np

from profiler.measure import DEFAULT_FAMILIES, measure_objects


def test_degenerate_objects_give_finite_or_nan_never_inf():
    labels = np.zeros((40, 48), np.int32)
    labels[5:15, 5:20] = 1          # an ordinary object
    labels[20, 30] = 2              # a single pixel
    labels[25:35, 30] = 3           # a one-pixel-wide line
    labels[0:6, 40:48] = 4          # touches the border
    rng = np.random.default_rng(0)
    images = {"A": rng.random(labels.shape, dtype=np.float32), "B": np.zeros(labels.shape, np.float32)}
    table = measure_objects(labels, images, compartment="Cells", families=DEFAULT_FAMILIES, n_objects=5)
    values = table.to_numpy()
    assert len(table) == 5
    assert not np.isinf(values).any(), table.columns[np.isinf(values).any(axis=0)].tolist()
    assert table.iloc[4].isna().all()  # object 5 is absent from the label image
    assert np.isfinite(table.loc[0, "Cells_AreaShape_Area"])
