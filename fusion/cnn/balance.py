"""Class balancing: a resampled index (under-sample the dominant class, over-sample rare ones to a
target per class) or class weights for the loss."""

from __future__ import annotations

import numpy as np

from cellfusion_core.errors import ConfigError


def balanced_indices(y: np.ndarray, *, target_per_class: int | None = None, max_per_class: int | None = None,
                     seed: int = 0) -> np.ndarray:
    """Indices into ``y`` with every class resampled to ``target_per_class``.

    Classes above the target are under-sampled without replacement (e.g. DMSO); classes below it
    are over-sampled: every cell once, plus random repeats to reach the target. ``target_per_class``
    None uses the median class size. ``max_per_class`` only caps classes (no over-sampling).
    Returned in a seeded random order.
    """
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    if target_per_class is not None and target_per_class < 1:
        raise ConfigError(f"target_per_class must be positive, got {target_per_class}")
    out = []
    for cls, n in zip(classes, counts):
        idx = np.flatnonzero(y == cls)
        if max_per_class is not None and target_per_class is None:
            k = min(n, max_per_class)
            out.append(rng.choice(idx, size=k, replace=False))
            continue
        target = int(target_per_class if target_per_class is not None else np.median(counts))
        if n >= target:
            out.append(rng.choice(idx, size=target, replace=False))
        else:
            out.append(np.concatenate([idx, rng.choice(idx, size=target - n, replace=True)]))
    res = np.concatenate(out)
    return res[rng.permutation(len(res))]


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights n / (k · count), 0 for absent classes (scikit-learn's 'balanced')."""
    counts = np.bincount(np.asarray(y), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return w
