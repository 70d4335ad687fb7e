"""scikit-learn's FastMCD (:func:`sklearn.covariance.fast_mcd`), the same arithmetic without its
per-call overhead — for :mod:`profiler.outliers` only.

Why this exists: the outlier model's :class:`~sklearn.covariance.MinCovDet` runs about 560
concentration steps (``_c_step``) on a sample of more than 500 cells, each a handful of NumPy and
LAPACK calls on 40 × 40 matrices. scikit-learn spends most of a step in argument checking around
them (``scipy.linalg.pinvh`` → ``eigh``'s validation and workspace query, ``np.cov``'s argument
handling, array-API dispatch), ≈ 2 ms a step: about 1.1 s a plate, a fixed cost that is 6 % of an
8-site plate's whole extraction. Here every step makes the same calls on the same arrays in the
same order — the same LAPACK routine (``?syev``, with the workspace size scipy asks for), the same
``np.dot`` of the same operands, the same reductions and the same draws from the random state —
so the results are the same bits, which tests/test_outliers.py checks against
:class:`sklearn.covariance.MinCovDet` on several samples, the plate's included.

Only the multivariate paths are reproduced (more than one feature; up to 500 samples, or more in
subsets of 300); a one-feature sample goes to scikit-learn's own function.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def _syev(n: int):
    """LAPACK ``dsyev`` and the workspace size scipy's ``eigh(driver="ev", lower=True)`` passes it."""
    from scipy.linalg.lapack import dsyev, dsyev_lwork

    work, info = dsyev_lwork(n, lower=1)
    if info:  # pragma: no cover - LAPACK's workspace query does not fail for n ≥ 1
        raise np.linalg.LinAlgError(f"dsyev workspace query failed (info={info})")
    return dsyev, int(work)


def _pinvh(a: np.ndarray) -> np.ndarray:
    """``scipy.linalg.pinvh(a)`` of a symmetric float64 matrix (lower triangle, default tolerances)."""
    dsyev, lwork = _syev(a.shape[0])
    s, u, info = dsyev(a, compute_v=1, lower=1, lwork=lwork)
    if info > 0:
        raise np.linalg.LinAlgError("the eigenvalue algorithm did not converge")
    max_s = np.max(np.abs(s), initial=0.0)
    above = abs(s) > 0.0 + max_s * (max(a.shape) * np.finfo(np.float64).eps)
    u = u[:, above]
    return (u * (1.0 / s[above])) @ u.conj().T


def _cov(x: np.ndarray) -> np.ndarray:
    """``np.cov(x.T, bias=1)`` of a 2-D float64 array (what MinCovDet's covariance method computes)."""
    xt = np.array(x.T, ndmin=2, dtype=np.float64)
    xt -= xt.mean(axis=1)[:, None]
    c = np.dot(xt, xt.T.conj())
    c *= np.true_divide(1, xt.shape[1])
    return c.squeeze()


def _logdet(a: np.ndarray) -> float:
    """``sklearn.utils.extmath.fast_logdet``: log det(a), −inf where det(a) ≤ 0."""
    sign, ld = np.linalg.slogdet(a)
    return -np.inf if not sign > 0 else ld


def _c_step(x, n_support, random_state, remaining_iterations=30, initial_estimates=None):
    """scikit-learn's ``_c_step`` (same steps, same order; its warning on a rising determinant
    is not repeated: the fit silences it anyway)."""
    n_samples = x.shape[0]
    dist = np.inf
    if initial_estimates is None:
        support_indices = random_state.permutation(n_samples)[:n_support]
    else:
        location, covariance = initial_estimates
        precision = _pinvh(covariance)
        centered = x - location
        dist = (np.dot(centered, precision) * centered).sum(1)
        support_indices = np.argpartition(dist, n_support - 1)[:n_support]
    x_support = x[support_indices]
    location = x_support.mean(0)
    covariance = _cov(x_support)
    det = _logdet(covariance)
    if np.isinf(det):
        precision = _pinvh(covariance)
    previous_det = np.inf
    while det < previous_det and remaining_iterations > 0 and not np.isinf(det):
        previous_location, previous_covariance = location, covariance
        previous_det, previous_support_indices = det, support_indices
        precision = _pinvh(covariance)
        centered = x - location
        dist = (np.dot(centered, precision) * centered).sum(axis=1)
        support_indices = np.argpartition(dist, n_support - 1)[:n_support]
        x_support = x[support_indices]
        location = x_support.mean(axis=0)
        covariance = _cov(x_support)
        det = _logdet(covariance)
        remaining_iterations -= 1
    previous_dist = dist
    dist = (np.dot(x - location, precision) * (x - location)).sum(axis=1)
    if np.isinf(det):
        results = location, covariance, det, support_indices, dist
    if np.allclose(det, previous_det):
        results = location, covariance, det, support_indices, dist
    elif det > previous_det:
        results = previous_location, previous_covariance, previous_det, previous_support_indices, previous_dist
    if remaining_iterations == 0:
        results = location, covariance, det, support_indices, dist
    location, covariance, det, support_indices, dist = results
    support = np.bincount(support_indices, minlength=n_samples).astype(bool)
    return location, covariance, det, support, dist


def _select_candidates(x, n_support, n_trials, select=1, n_iter=30, random_state=None):
    """scikit-learn's ``select_candidates``: ``n_trials`` random starts (an int) or one start per
    given (locations, covariances) pair; the ``select`` results of lowest determinant."""
    if isinstance(n_trials, tuple):
        starts = [(n_trials[0][j], n_trials[1][j]) for j in range(n_trials[0].shape[0])]
    else:
        starts = [None] * int(n_trials)
    found = [_c_step(x, n_support, random_state, remaining_iterations=n_iter, initial_estimates=s) for s in starts]
    locs, covs, dets, supports, dists = zip(*found)
    best = np.argsort(dets)[:select]
    return (np.asarray(locs)[best], np.asarray(covs)[best], np.asarray(supports)[best], np.asarray(dists)[best])


def fast_mcd(x: np.ndarray, random_state: np.random.RandomState):
    """``sklearn.covariance.fast_mcd(x, random_state=random_state)`` (default support fraction):
    ``(location, covariance, support, dist)``, the same bits. ``x``: 2-D float64."""
    n_samples, n_features = x.shape
    if n_features == 1:
        from sklearn.covariance import fast_mcd as sk_fast_mcd

        return sk_fast_mcd(x, random_state=random_state)
    n_support = min(int(np.ceil(0.5 * (n_samples + n_features + 1))), n_samples)
    if n_samples > 500:
        n_subsets = n_samples // 300
        n_samples_subsets = n_samples // n_subsets
        samples_shuffle = random_state.permutation(n_samples)
        h_subset = int(np.ceil(n_samples_subsets * (n_support / float(n_samples))))
        n_best_sub = 10
        n_trials = max(10, 500 // n_subsets)
        n_best_tot = n_subsets * n_best_sub
        all_best_locations = np.zeros((n_best_tot, n_features))
        all_best_covariances = np.zeros((n_best_tot, n_features, n_features))
        for i in range(n_subsets):
            low = i * n_samples_subsets
            subset = x[samples_shuffle[low:low + n_samples_subsets]]
            locs, covs, _, _ = _select_candidates(subset, h_subset, n_trials, select=n_best_sub, n_iter=2,
                                                  random_state=random_state)
            rows = np.arange(i * n_best_sub, (i + 1) * n_best_sub)
            all_best_locations[rows] = locs
            all_best_covariances[rows] = covs
        n_samples_merged = min(1500, n_samples)
        h_merged = int(np.ceil(n_samples_merged * (n_support / float(n_samples))))
        n_best_merged = 10 if n_samples > 1500 else 1
        selection = random_state.permutation(n_samples)[:n_samples_merged]
        locs_m, covs_m, supports_m, d = _select_candidates(
            x[selection], h_merged, n_trials=(all_best_locations, all_best_covariances), select=n_best_merged,
            random_state=random_state)
        if n_samples < 1500:
            support = np.zeros(n_samples, dtype=bool)
            dist = np.zeros(n_samples)
            support[selection] = supports_m[0]
            dist[selection] = d[0]
            return locs_m[0], covs_m[0], support, dist
        locs, covs, supports, d = _select_candidates(x, n_support, n_trials=(locs_m, covs_m), select=1,
                                                     random_state=random_state)
        return locs[0], covs[0], supports[0], d[0]
    locs_b, covs_b, _, _ = _select_candidates(x, n_support, n_trials=30, select=10, n_iter=2,
                                              random_state=random_state)
    locs, covs, supports, d = _select_candidates(x, n_support, n_trials=(locs_b, covs_b), select=1,
                                                 random_state=random_state)
    return locs[0], covs[0], supports[0], d[0]
