"""Illumination correction in the manner of CellProfiler's CorrectIlluminationCalculate / Apply.

Per plate and channel: the **average** of all the plate's images ("Regular" function, "All:
across cycles"), **heavy smoothing** (median filter by default, or Gaussian, or a 2-D polynomial
fit), **robust minimum** rescaling (CellProfiler's "Yes": values below the 2nd percentile of the
positive pixels are raised to it, then the function is divided by it, so it is ≥ 1), and
**division** of each image by the function (CorrectIlluminationApply, "Divide").

To stay cheap the average is block-reduced (``downsample``, default 8) before smoothing and the
smoothed function is resized back with bilinear interpolation; a plate with many sites can be
averaged over an evenly spaced sample of ``max_images`` sites.

Pure array functions (:func:`illumination_function`, :func:`apply_illumination`) plus the file
edge (:func:`plate_illumination`, :func:`save_illumination`, :func:`load_illumination`).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from cellfusion_core import io
from cellfusion_core.errors import ConfigError, InputError

log = logging.getLogger(__name__)

ROBUST_FACTOR = 0.02  # CellProfiler: the robust minimum is the 2nd percentile of the positive pixels
METHODS = ("median", "gaussian", "polynomial")

DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "method": "median",      # median | gaussian | polynomial
    "filter_size": None,     # pixels at full resolution; None → max(H, W) / 10
    "downsample": 8,         # block-average factor before smoothing
    "polynomial_degree": 2,
    "rescale": "robust_minimum",  # robust_minimum | median | none
    "max_images": 200,       # sites averaged per plate and channel (evenly spaced sample)
}


def _check(params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown illumination parameter(s): {sorted(unknown)}",
                          hint=f"allowed: {', '.join(sorted(DEFAULTS))}")
    p = {**DEFAULTS, **params}
    if p["method"] not in METHODS:
        raise ConfigError(f"illumination.method {p['method']!r} is unknown", hint=f"use one of {METHODS}")
    if p["rescale"] not in ("robust_minimum", "median", "none"):
        raise ConfigError(f"illumination.rescale {p['rescale']!r} is unknown",
                          hint="use robust_minimum, median or none")
    return p


def _block_mean(image: np.ndarray, f: int) -> np.ndarray:
    h, w = image.shape
    hh, ww = -(-h // f) * f, -(-w // f) * f
    padded = np.pad(image, ((0, hh - h), (0, ww - w)), mode="edge")
    return padded.reshape(hh // f, f, ww // f, f).mean(axis=(1, 3))


@functools.lru_cache(maxsize=1)
def _median_kernel():
    import numba as nb

    @nb.njit(cache=True, nogil=True)
    def median_windows(ranks, n, k, out):  # pragma: no cover - numba
        """out[i, j] = the (k²//2)-th smallest of ranks[i:i+k, j:j+k] (ranks: 0 … n−1, all distinct),
        sliding along each row with a Fenwick tree of the window's ranks (add a column, drop a
        column, find the k²//2-th by binary lifting)."""
        h, w = out.shape
        rank = (k * k) // 2
        tree = np.zeros(n + 1, np.int64)
        top = 1
        while top * 2 <= n:
            top *= 2
        for i in range(h):
            for a in range(k):
                for b in range(k):
                    x = ranks[i + a, b] + 1
                    while x <= n:
                        tree[x] += 1
                        x += x & -x
            for j in range(w):
                # the smallest position whose prefix count exceeds `rank`
                pos = 0
                left = rank
                step = top
                while step:
                    nxt = pos + step
                    if nxt <= n and tree[nxt] <= left:
                        pos = nxt
                        left -= tree[nxt]
                    step >>= 1
                out[i, j] = pos  # 0-based rank of the window's median
                for a in range(k):
                    x = ranks[i + a, j] + 1
                    while x <= n:
                        tree[x] -= 1
                        x += x & -x
                    if j + 1 < w:
                        x = ranks[i + a, j + k] + 1
                        while x <= n:
                            tree[x] += 1
                            x += x & -x
            for a in range(k):  # the row's last window, but its first column (dropped above)
                for b in range(w, w + k - 1):
                    x = ranks[i + a, b] + 1
                    while x <= n:
                        tree[x] -= 1
                        x += x & -x

    return median_windows


def median_filter(image: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.median_filter(image, size=size, mode="reflect")`` of a finite 2-D float64
    image and an odd ``size`` smaller than the image, the same values (a median is an order
    statistic: any exact selection finds the same element), by a sliding window over the pixels'
    ranks; faster than SciPy's generic rank filter (see median_windows). Anything else goes to SciPy."""
    size = int(size)
    a = np.asarray(image)
    if (a.ndim != 2 or a.dtype != np.float64 or size < 1 or size % 2 == 0 or size // 2 >= min(a.shape)
            or not np.isfinite(a).all()):
        return ndi.median_filter(a, size=size, mode="reflect")
    # the median of values is the value at the median of their ranks (ties ranked in any order: the
    # k²//2-th smallest element has the same value whichever of the tied elements it is)
    flat = a.ravel()
    order = np.argsort(flat, kind="stable")
    ranks = np.empty(flat.size, np.int64)
    ranks[order] = np.arange(flat.size)
    p = size // 2
    padded = np.pad(ranks.reshape(a.shape), p, mode="symmetric")  # SciPy's "reflect": d c b a | a b c d
    at = np.empty(a.shape, np.int64)
    _median_kernel()(padded, flat.size, size, at)
    return flat[order][at]


def _polyfit(image: np.ndarray, degree: int) -> np.ndarray:
    h, w = image.shape
    y, x = np.mgrid[0:h, 0:w]
    y = (y / max(h - 1, 1)) * 2 - 1
    x = (x / max(w - 1, 1)) * 2 - 1
    terms = [x ** i * y ** j for i in range(degree + 1) for j in range(degree + 1 - i)]
    a = np.stack([t.ravel() for t in terms], axis=1)
    coef, *_ = np.linalg.lstsq(a, image.ravel(), rcond=None)
    return (a @ coef).reshape(h, w)


def illumination_function(images: Iterable[np.ndarray], *, method: str = "median",
                          filter_size: float | None = None, downsample: int = 8,
                          polynomial_degree: int = 2, rescale: str = "robust_minimum",
                          **_: Any) -> np.ndarray:
    """The illumination function (float32, H×W) of a set of same-sized images of one channel."""
    total = None
    n = 0
    for im in images:
        im = np.asarray(im, np.float64)
        if total is None:
            total = np.zeros_like(im)
        elif im.shape != total.shape:
            raise InputError(f"images of one channel differ in size: {im.shape} vs {total.shape}",
                             hint="illumination correction needs all images of a plate to be the same size")
        total += im
        n += 1
    if total is None:
        raise InputError("no images to compute an illumination function from")
    avg = total / n
    h, w = avg.shape
    f = max(1, int(downsample))
    small = _block_mean(avg, f) if f > 1 else avg
    size = (max(h, w) / 10.0) if filter_size is None else float(filter_size)
    size_small = max(1.0, size / f)
    if method == "median":
        k = int(round(size_small)) | 1
        smooth = median_filter(small, k)
    elif method == "gaussian":
        smooth = ndi.gaussian_filter(small, sigma=size_small / 2.35, mode="reflect")
    else:
        smooth = _polyfit(small, int(polynomial_degree))
    if f > 1:
        zi = (np.arange(h) + 0.5) / f - 0.5
        zj = (np.arange(w) + 0.5) / f - 0.5
        ii, jj = np.meshgrid(zi, zj, indexing="ij")
        smooth = ndi.map_coordinates(smooth, [ii, jj], order=1, mode="nearest")
    if rescale != "none":
        pos = smooth[smooth > 0].ravel()
        if pos.size:  # the k-th smallest positive value (a partial sort gives the same element)
            k = int(pos.size * ROBUST_FACTOR) if rescale == "robust_minimum" else pos.size // 2
            ref = np.partition(pos, k)[k]
            if rescale == "robust_minimum":
                smooth = np.maximum(smooth, ref)
            if ref > 0:
                smooth = smooth / ref
    return smooth.astype(np.float32)


def apply_illumination(image: np.ndarray, function: np.ndarray) -> np.ndarray:
    """CorrectIlluminationApply, Divide: ``image / function`` (float32)."""
    if image.shape != function.shape:
        raise InputError(f"image of shape {image.shape} does not fit the illumination function "
                         f"of shape {function.shape}", hint="all images of a plate must be the same size")
    safe = np.where(function > 0, function, 1.0)
    return (np.asarray(image, np.float32) / safe).astype(np.float32)


def _sample(seq: Sequence[Any], k: int) -> list[Any]:
    if k <= 0 or len(seq) <= k:
        return list(seq)
    idx = np.unique(np.linspace(0, len(seq) - 1, k).round().astype(int))
    return [seq[i] for i in idx]


def _readable(site: Any, channel: str, read_channel, notes: list[str]) -> np.ndarray | None:
    """The site's channel image, or None (with a note) when it cannot be read: that site gets its
    own error record when it is processed, and the plate's other images still make the function."""
    try:
        return read_channel(site, channel)
    except InputError as exc:
        notes.append(f"illumination of {channel}: skipping an unreadable image ({str(exc).splitlines()[0]})")
        return None


def _usable(sites: Sequence[Any], channel: str, read_channel, notes: list[str]) -> Iterable[np.ndarray]:
    """The channel's readable images of the first one's size, one at a time; the others are skipped
    with a note (their sites get their own error records when processed)."""
    shape = None
    for s in sites:
        if channel not in s.files or (im := _readable(s, channel, read_channel, notes)) is None:
            continue
        if shape is not None and im.shape != shape:
            notes.append(f"illumination of {channel}: skipping {s.files[channel]}, {im.shape[0]}×{im.shape[1]} "
                         f"where the plate's images are {shape[0]}×{shape[1]}")
            continue
        shape = im.shape
        yield im


def channel_illumination(sites: Sequence[Any], channel: str, params: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """One plate's function for one channel from ``sites`` (read one image at a time), and the notes
    on the images left out: the unit :func:`plate_illumination` runs in this process or as a Dask task."""
    from profiler.plate import read_channel

    notes: list[str] = []
    try:
        return illumination_function(_usable(sites, channel, read_channel, notes), **params), notes
    except InputError as exc:  # e.g. no readable image: say which were left out and why
        if not notes:
            raise
        raise InputError(f"{exc.problem} ({'; '.join(notes[:5])})", path=exc.path, hint=exc.hint) from None


def plate_illumination(sites: Sequence[Any], channels: Sequence[str], params: dict[str, Any] | None = None, *,
                       client: Any = None) -> dict[tuple[str, str], np.ndarray]:
    """Illumination functions per (plate, channel) from the sites' files (complete sites only).

    ``client``: a Dask client; each (plate, channel) is then one task on its workers (the channels
    of a plate are read in parallel; each function is the same as computed here, the images summed
    in the same order)."""
    p = _check(dict(params or {}))
    jobs: dict[tuple[str, str], list[Any]] = {}
    for plate in sorted({s.plate for s in sites}):
        plate_sites = [s for s in sites if s.plate == plate and s.complete]
        chosen = _sample(plate_sites, int(p["max_images"]))
        for ch in channels:
            if any(ch in s.files for s in chosen):  # one image in memory at a time
                jobs[(plate, ch)] = chosen
    if client is None:
        done = {key: channel_illumination(chosen, key[1], p) for key, chosen in jobs.items()}
    else:
        futures = {key: client.submit(channel_illumination, chosen, key[1], p, pure=False, priority=100,
                                      key=f"illumination-{key[0]}-{key[1]}-{uuid.uuid4().hex[:8]}")
                   for key, chosen in jobs.items()}
        done = {key: fut.result() for key, fut in futures.items()}
    out: dict[tuple[str, str], np.ndarray] = {}
    for key, (function, notes) in done.items():
        for note in notes:
            log.warning("%s", note)
        out[key] = function
    return out


def save_illumination(function: np.ndarray, path: str | Path) -> Path:
    """Write one function as ``.npy`` (atomically; no pickle)."""
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(function, np.float32), allow_pickle=False)
    return Path(path)


def load_illumination(path: str | Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"cannot read illumination function ({exc})", path=path) from exc


def config_params(section: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's ``illumination:`` section merged over DEFAULTS and validated."""
    return _check(dict(section))
