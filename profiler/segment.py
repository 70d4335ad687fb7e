"""Segmentation: nuclei → cells → cytoplasm label images (pure functions on arrays).

The three steps follow CellProfiler 5's IdentifyPrimaryObjects, IdentifySecondaryObjects
(Propagation) and IdentifyTertiaryObjects, so that a CellProfiler user gets the objects they
expect from the same settings (``profiler/pipelines/cellprofiler/bbbc021.cppipe`` is the equivalent
CellProfiler pipeline):

* **Nuclei** — a global threshold (Otsu two- or three-class, or minimum cross-entropy) computed
  on the raw image, multiplied by a correction factor and clipped to bounds, applied to the
  Gaussian-smoothed image (CellProfiler's "threshold smoothing scale": σ = scale / 0.6744 / 2);
  holes smaller than ``max_diameter²`` filled; 8-connected components; declumping by local maxima
  of the smoothed intensity ("intensity") or of the distance transform ("shape"), dividing lines
  by a watershed on the inverted intensity or on the distance; objects touching the image border
  removed, then objects outside the diameter range (area < π·min²/4 or > π·max²/4); holes filled
  again; objects renumbered 1..N without gaps (border nuclei are removed *before* numbering).
* **Cells** — CellProfiler's Propagation (Jones, Carpenter & Golland 2005): seeds are the nuclei
  (plus the border nuclei, which compete for territory and are dropped afterwards, as in
  CellProfiler); pixels are claimed in order of the distance
  ``d = Σ sqrt(ΔI² + λ²·|Δxy|₁)`` where ΔI is the summed absolute difference of the 3×3
  neighbourhoods of adjacent pixels, over the foreground of a global threshold of the cell image.
  Holes enclosed by one cell are filled. Cell k is grown from nucleus k.
* **Cytoplasm** — cell minus its nucleus, keeping the cell's number (a cytoplasm may be empty).

All images are float arrays on CellProfiler's scale (raw / dtype max); labels are int32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, segmentation

from cellfusion_core.errors import ConfigError
from profiler import _segment_kernels as _kernels

THRESHOLD_METHODS = ("otsu", "minimum_cross_entropy")

DEFAULTS: dict[str, Any] = {
    "nuclei": {
        "threshold_method": "otsu",          # otsu | minimum_cross_entropy
        "threshold_classes": 2,              # 2 or 3 (Otsu only)
        "middle_class": "foreground",        # three-class Otsu: middle class to foreground|background
        "threshold_smoothing_scale": 1.3488,  # CellProfiler's default; σ = scale / 0.6744 / 2
        "threshold_correction": 1.0,
        "threshold_bounds": [0.0, 1.0],
        "min_diameter": 15,
        "max_diameter": 80,
        "exclude_size": True,
        "exclude_border": True,
        "declump": "intensity",              # intensity | shape | none
        "dividing_lines": "intensity",       # intensity | shape
        "declump_smoothing": None,           # None → 2.35 · min_diameter / 3.5 (CellProfiler's auto)
        "maxima_suppression": None,          # None → automatic (CellProfiler's auto)
        "low_res_maxima": True,              # find maxima on a 10/min_diameter downsampled image
        "fill_holes": True,
    },
    "cells": {
        "threshold_method": "otsu",
        "threshold_classes": 2,
        "middle_class": "foreground",
        "threshold_smoothing_scale": 0.0,
        "threshold_correction": 1.0,
        "threshold_bounds": [0.0, 1.0],
        "regularization": 0.05,              # λ of the Propagation distance
        "fill_holes": True,
    },
}


@dataclass
class Segmentation:
    nuclei: np.ndarray     # (H, W) int32, 1..N
    cells: np.ndarray      # (H, W) int32, cell k grown from nucleus k
    cytoplasm: np.ndarray  # (H, W) int32, cells minus nuclei (may lack some numbers)
    thresholds: dict[str, float] = field(default_factory=dict)  # compartment → final threshold

    @property
    def n_objects(self) -> int:
        return int(self.nuclei.max()) if self.nuclei.size else 0

    def relationships(self) -> dict[str, np.ndarray]:
        """CellProfiler's parent/child columns for objects 1..N (one value per object).

        ``Cells_Parent_Nuclei`` and ``Cytoplasm_Parent_Cells`` / ``Cytoplasm_Parent_Nuclei`` are the
        object's own number (cell k and cytoplasm k belong to nucleus k; 0 where a cell or cytoplasm
        has no pixels, as CellProfiler records an absent parent), ``Nuclei_Children_Cells_Count`` is
        1 where the nucleus grew a cell and ``Cells_Children_Cytoplasm_Count`` 1 where the cell has
        a non-empty cytoplasm.
        """
        n = self.n_objects
        idx = np.arange(1, n + 1)
        has_cell = np.bincount(self.cells.ravel(), minlength=n + 1)[1:n + 1] > 0
        has_cyto = np.bincount(self.cytoplasm.ravel(), minlength=n + 1)[1:n + 1] > 0
        return {
            "Nuclei_Children_Cells_Count": has_cell.astype(np.int64),
            "Nuclei_Children_Cytoplasm_Count": has_cyto.astype(np.int64),
            "Cells_Parent_Nuclei": np.where(has_cell, idx, 0),
            "Cells_Children_Cytoplasm_Count": has_cyto.astype(np.int64),
            "Cytoplasm_Parent_Cells": np.where(has_cyto, idx, 0),
            "Cytoplasm_Parent_Nuclei": np.where(has_cyto, idx, 0),
        }


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber objects 1..N in order of their current numbers (no gaps)."""
    out, _, _ = segmentation.relabel_sequential(labels.astype(np.int32))
    return out.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# thresholds
# ---------------------------------------------------------------------------------------------

def threshold_value(image: np.ndarray, *, method: str = "otsu", classes: int = 2,
                    middle_class: str = "foreground", correction: float = 1.0,
                    bounds: tuple[float, float] | list[float] = (0.0, 1.0)) -> float:
    """A global threshold as CellProfiler computes it (on the unsmoothed image).

    ``otsu`` with 2 classes is scikit-image's Otsu; with 3 classes, multi-Otsu (128 bins) whose
    lower (middle → foreground) or upper (middle → background) cut is used; ``minimum_cross_entropy``
    is Li's method. The result is multiplied by ``correction`` and clipped to ``bounds``.
    """
    data = np.asarray(image, dtype=np.float64).ravel()
    if data.size == 0:
        t = 0.0
    elif np.all(data == data[0]):
        t = float(data[0])
    elif method == "minimum_cross_entropy":
        tol = max(float(np.min(np.diff(np.unique(data)))) / 2, 0.5 / 65536)
        t = float(filters.threshold_li(data, tolerance=tol))
    elif method == "otsu" and int(classes) == 2:
        t = _otsu(data)
    elif method == "otsu" and int(classes) == 3:
        if np.unique(data).size < 3:
            t = float(filters.threshold_otsu(data))
        else:
            cuts = filters.threshold_multiotsu(data, classes=3, nbins=128)
            t = float(cuts[0] if middle_class == "foreground" else cuts[1])
    else:
        raise ConfigError(f"unknown threshold method {method!r} with {classes} classes",
                          hint=f"use one of {THRESHOLD_METHODS}; threshold_classes 2 or 3 (Otsu)")
    lo, hi = float(bounds[0]), float(bounds[1])
    return float(min(max(t * float(correction), lo), hi))


def _otsu(data: np.ndarray) -> float:
    """``skimage.filters.threshold_otsu(data)`` (256 bins over (min, max)) for a non-constant float64
    array: the histogram from the compiled ``np.histogram`` equivalent, the rest by scikit-image's own
    code given that histogram (both ends of a min-max histogram are occupied, so it trims nothing)."""
    try:
        counts, edges = _kernels.uniform_histogram(data, 256)
    except ValueError:   # not finite, or a range too small for 256 bins: scikit-image's own error
        return float(filters.threshold_otsu(data))
    return float(filters.threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2.0)))


def _smooth_for_threshold(image: np.ndarray, scale: float) -> np.ndarray:
    """CellProfiler's threshold smoothing: Gaussian σ = scale / 0.6744 / 2, edge-normalised."""
    if not scale:
        return image
    sigma = scale / 0.6744 / 2.0
    # the filter of an all-ones image is separable: the outer product of the 1-D edge factors
    rows = ndi.gaussian_filter1d(np.ones(image.shape[0]), sigma, mode="constant", cval=0)
    cols = ndi.gaussian_filter1d(np.ones(image.shape[1]), sigma, mode="constant", cval=0)
    if image.ndim == 2 and sigma > 1e-15:
        # = ndi.gaussian_filter(float32 image) / (outer(rows, cols) + eps), compiled, bit for bit
        w = _kernels.symmetric_weights(
            lambda x: ndi.gaussian_filter1d(x, sigma, mode="constant", cval=0), int(4.0 * sigma + 0.5))
        return _kernels.smooth_normalized(image, w, rows, cols, np.finfo(float).eps)
    img = ndi.gaussian_filter(image.astype(np.float32), sigma, mode="constant", cval=0)
    return img / (np.outer(rows, cols) + np.finfo(float).eps)


def _threshold_image(image: np.ndarray, p: Mapping[str, Any]) -> tuple[np.ndarray, float]:
    t = threshold_value(image, method=p["threshold_method"], classes=p["threshold_classes"],
                        middle_class=p["middle_class"], correction=p["threshold_correction"],
                        bounds=p["threshold_bounds"])
    if image.size and np.ptp(image) == 0:
        # a constant field (all-zero, saturated) holds nothing to segment
        return np.zeros(image.shape, bool), t
    return _smooth_for_threshold(image, p["threshold_smoothing_scale"]) >= t, t


# ---------------------------------------------------------------------------------------------
# morphology helpers
# ---------------------------------------------------------------------------------------------

_EIGHT = np.ones((3, 3), bool)


def _fill_binary_holes(mask: np.ndarray, max_area: float | None = None) -> np.ndarray:
    """Fill background components (4-connected) that do not touch the edge and are small enough."""
    return _kernels.fill_binary_holes(mask, max_area)


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background pockets (4-connected) that touch exactly one object and not the edge."""
    return _kernels.fill_label_holes(labels)


def _strel_disk(radius: float) -> np.ndarray:
    r = int(radius)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= radius * radius


@numba.njit(cache=True, nogil=True)
def _local_maxima(image, labels, off_i, off_j, out):  # pragma: no cover - compiled
    """CellProfiler's is_local_maximum: ≥ every same-label pixel under the footprint."""
    m, n = image.shape
    for i in range(m):
        for j in range(n):
            out[i, j] = False
            lab = labels[i, j]
            if lab == 0 or image[i, j] <= 0:
                continue
            v = image[i, j]
            ok = True
            for k in range(off_i.shape[0]):
                ii = i + off_i[k]
                jj = j + off_j[k]
                if ii < 0 or ii >= m or jj < 0 or jj >= n:
                    continue
                if labels[ii, jj] == lab and image[ii, jj] > v:
                    ok = False
                    break
            out[i, j] = ok


def _cp_gaussian_smooth(image: np.ndarray, filter_size: float) -> np.ndarray:
    """IdentifyPrimaryObjects' declumping smoother (truncated Gaussian, σ = size / 2.35)."""
    if filter_size == 0:
        return image
    sigma = filter_size / 2.35
    half = max(int(float(filter_size) / 2.0), 1)
    x = np.arange(-half, half + 1)
    f = np.exp(-0.5 * x ** 2 / sigma ** 2) / np.sqrt(2.0 * np.pi) / sigma

    rows = ndi.convolve1d(np.ones(image.shape[0]), f, mode="constant")
    cols = ndi.convolve1d(np.ones(image.shape[1]), f, mode="constant")
    if image.ndim == 2 and np.array_equal(f, f[::-1]):
        # = the two float32 convolve1d passes / outer(rows, cols), compiled, bit for bit
        w = _kernels.symmetric_weights(lambda x: ndi.convolve1d(x, f, mode="constant"), half)
        return _kernels.smooth_normalized(image, w, rows, cols, None)
    img = ndi.convolve1d(ndi.convolve1d(image.astype(np.float32), f, axis=0, mode="constant"),
                         f, axis=1, mode="constant")
    return img / np.outer(rows, cols)


def _downsample(image: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """The image and labels sampled at the grid ``(i / factor, j / factor)``, as
    ``ndi.map_coordinates(image, ij)`` (cubic spline, mode constant) and
    ``ndi.map_coordinates(labels, ij, order=0)`` give them — but the image only where the sampled
    label is not 0 (elsewhere 0.0: ``_local_maxima`` reads no other value).

    Exactly the same numbers: the spline coefficients are those of scipy's ``spline_filter`` (what
    ``map_coordinates`` computes internally for ``prefilter=True``; here its compiled equivalent,
    ``_kernels.cubic_spline_filter``, bit for bit), and ``map_coordinates``
    evaluates every point independently of the others, so evaluating a subset gives each point's
    value bit for bit. The nearest-neighbour labels come from the row and column indices that
    ``map_coordinates(order=0)`` picks on each axis (1-D calls on the same coordinates; an
    out-of-range index reads 0 as the 2-D call does).
    """
    shape = np.array(image.shape) * factor
    ri = np.arange(0, shape[0]).astype(float) / factor
    rj = np.arange(0, shape[1]).astype(float) / factor
    # index + 1 so that an out-of-range coordinate (cval 0) is told apart from index 0
    ii = ndi.map_coordinates(np.arange(1, image.shape[0] + 1, dtype=np.float64), ri[None, :], order=0)
    jj = ndi.map_coordinates(np.arange(1, image.shape[1] + 1, dtype=np.float64), rj[None, :], order=0)
    ii, jj = ii.astype(np.int64), jj.astype(np.int64)
    lab = np.asarray(labels)
    padded = np.zeros((lab.shape[0] + 1, lab.shape[1] + 1), lab.dtype)
    padded[1:, 1:] = lab
    small_labels = padded[ii[:, None], jj[None, :]]
    fi, fj = np.nonzero(small_labels)
    small = np.zeros(small_labels.shape, np.float64)
    if len(fi):
        coeffs = _kernels.cubic_spline_filter(image)  # = ndi.spline_filter(image, 3, float64, "constant")
        small[fi, fj] = ndi.map_coordinates(coeffs, np.stack([ri[fi], rj[fj]]), prefilter=False)
    return small, small_labels


def _maxima(image: np.ndarray, labels: np.ndarray, footprint: np.ndarray, factor: float) -> np.ndarray:
    """Local maxima (as one marker blob each), optionally found on a downsampled image."""
    if factor < 1.0:
        small, small_labels = _downsample(image, labels, factor)
    else:
        small, small_labels = image, labels
    fi, fj = np.nonzero(footprint)
    c = footprint.shape[0] // 2
    fi, fj = (fi - c).astype(np.int64), (fj - c).astype(np.int64)
    keep = (fi != 0) | (fj != 0)
    mx = np.empty(small.shape, np.bool_)
    _local_maxima(np.ascontiguousarray(small, np.float64), np.ascontiguousarray(small_labels, np.int32),
                  fi[keep], fj[keep], mx)
    if factor < 1.0:
        # CellProfiler upsamples the maxima image with a cubic spline and keeps values > 0.5; those
        # pixels lie within a few pixels of a low-resolution maximum, so only evaluate there.
        inv = float(image.shape[0]) / float(mx.shape[0])
        coeffs = _kernels.cubic_spline_filter(mx)  # = ndi.spline_filter(mx.astype(float), order=3)
        full = np.zeros(image.shape, bool)
        pts = np.argwhere(mx)
        if len(pts):
            r = int(np.ceil(2 * inv)) + 1
            oi, oj = np.mgrid[-r:r + 1, -r:r + 1]
            ci = np.round(pts[:, 0] * inv).astype(np.int64)[:, None] + oi.ravel()[None, :]
            cj = np.round(pts[:, 1] * inv).astype(np.int64)[:, None] + oj.ravel()[None, :]
            ok = (ci >= 0) & (ci < image.shape[0]) & (cj >= 0) & (cj < image.shape[1])
            flat = np.unique(ci[ok] * image.shape[1] + cj[ok])
            ii, jj = flat // image.shape[1], flat % image.shape[1]
            vals = ndi.map_coordinates(coeffs, np.stack([ii / inv, jj / inv]), prefilter=False)
            full[ii[vals > 0.5], jj[vals > 0.5]] = True
        mx = full
    return mx


# ---------------------------------------------------------------------------------------------
# nuclei
# ---------------------------------------------------------------------------------------------

def _params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(DEFAULTS[kind])
    if unknown:
        raise ConfigError(f"unknown segmentation.{kind} parameter(s): {sorted(unknown)}",
                          hint=f"allowed: {', '.join(sorted(DEFAULTS[kind]))}")
    p = {**DEFAULTS[kind], **params}
    if p["threshold_method"] not in THRESHOLD_METHODS:
        raise ConfigError(f"segmentation.{kind}.threshold_method {p['threshold_method']!r} is unknown",
                          hint=f"use one of {THRESHOLD_METHODS}")
    if kind == "nuclei":
        if p["declump"] not in ("intensity", "shape", "none"):
            raise ConfigError(f"segmentation.nuclei.declump {p['declump']!r} is unknown",
                              hint="use intensity, shape or none")
        if p["dividing_lines"] not in ("intensity", "shape"):
            raise ConfigError(f"segmentation.nuclei.dividing_lines {p['dividing_lines']!r} is unknown",
                              hint="use intensity or shape")
        if not 0 < float(p["min_diameter"]) < float(p["max_diameter"]):
            raise ConfigError("segmentation.nuclei needs 0 < min_diameter < max_diameter")
    return p


def _declump(image: np.ndarray, labeled: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    min_d = float(p["min_diameter"])
    if p["declump"] == "none" or labeled.max() == 0:
        return labeled
    size = p["declump_smoothing"]
    size = 2.35 * min_d / 3.5 if size is None else float(size)
    blurred = _cp_gaussian_smooth(image, size)
    if min_d > 10 and p["low_res_maxima"]:
        factor = 10.0 / min_d
        supp = 7.0 if p["maxima_suppression"] is None else float(p["maxima_suppression"]) * factor + 0.5
    else:
        factor = 1.0
        supp = min_d / 1.5 if p["maxima_suppression"] is None else float(p["maxima_suppression"])
    footprint = _strel_disk(max(1.0, supp - 0.5))
    dist = None
    if p["declump"] == "intensity":
        maxima = _maxima(blurred, labeled, footprint, factor)
    else:
        dist = ndi.distance_transform_edt(labeled > 0)
        dist += np.random.default_rng(0).uniform(0, 0.001, dist.shape)
        maxima = _maxima(dist, labeled, footprint, factor)
    markers, _ = ndi.label(maxima, _EIGHT)
    if p["dividing_lines"] == "intensity":
        surface = 1.0 - image
    else:
        if dist is None:
            dist = ndi.distance_transform_edt(labeled > 0)
        surface = dist.max() - dist
    return _kernels.watershed(surface, markers, labeled)  # = skimage watershed, 8-connected, mask labeled > 0


def _identify_primary(dna: np.ndarray, p: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """Returns (nuclei 1..N, seeds for the cells numbered like the nuclei or > N for border ones, threshold)."""
    binary, t = _threshold_image(dna, p)
    max_d, min_d = float(p["max_diameter"]), float(p["min_diameter"])
    if p["fill_holes"]:
        binary = _fill_binary_holes(binary, max_area=max_d * max_d)
    labeled, _ = ndi.label(binary, _EIGHT)
    labeled = _declump(dna, labeled.astype(np.int32), p)
    unedited = labeled
    n0 = int(unedited.max())
    keep = np.ones(n0 + 1, bool)
    keep[0] = False
    border = np.zeros(n0 + 1, bool)
    if p["exclude_border"]:
        border[np.unique(np.concatenate([unedited[0], unedited[-1], unedited[:, 0], unedited[:, -1]]))] = True
        border[0] = False
        keep &= ~border
    if p["exclude_size"]:
        areas = np.bincount(unedited.ravel(), minlength=n0 + 1)
        keep &= ~((areas < np.pi * min_d * min_d / 4) | (areas > np.pi * max_d * max_d / 4))
    unedited = np.ascontiguousarray(unedited, np.int32)
    labels = _kernels.keep_labels(unedited, keep)   # = np.where(keep[unedited], unedited, 0)
    if p["fill_holes"]:
        labels = fill_label_holes(labels)
    # renumber 1..N in order of the original numbers; border objects become seeds N+1.. for the cells
    new = np.zeros(n0 + 1, np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    n = int(keep.sum())
    seed_map = new.copy()
    seed_map[border & ~keep] = 0
    brd = np.flatnonzero(border)
    seed_map[brd] = np.arange(n + 1, n + 1 + len(brd), dtype=np.int32)
    # nuclei = new[labels]; seeds = np.where(nuclei > 0, nuclei, seed_map[unedited])
    nuclei, seeds = _kernels.nuclei_and_seeds(labels, unedited, new, seed_map)
    return nuclei, seeds, t


def segment_nuclei(dna: np.ndarray, **params: Any) -> np.ndarray:
    """Nuclei (int32, 1..N) from a DNA image on CellProfiler's scale. Parameters: ``DEFAULTS['nuclei']``."""
    return _identify_primary(np.asarray(dna, np.float64), _params("nuclei", params))[0]


# ---------------------------------------------------------------------------------------------
# cells: CellProfiler's Propagation
# ---------------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _less(hd, hk, a, b):  # pragma: no cover - compiled
    if hd[a] != hd[b]:
        return hd[a] < hd[b]
    return hk[a] < hk[b]


@numba.njit(cache=True, nogil=True)
def _sift_down(hd, hk, k, size):  # pragma: no cover - compiled
    d = hd[k]
    key = hk[k]
    while True:
        c = 2 * k + 1
        if c >= size:
            break
        if c + 1 < size and (hd[c + 1] < hd[c] or (hd[c + 1] == hd[c] and hk[c + 1] < hk[c])):
            c += 1
        if hd[c] < d or (hd[c] == d and hk[c] < key):
            hd[k] = hd[c]
            hk[k] = hk[c]
            k = c
        else:
            break
    hd[k] = d
    hk[k] = key


@numba.njit(cache=True, nogil=True)
def _propagate_kernel(image, seeds, mask, weight, pad, lab_p, dist_p):  # pragma: no cover - compiled
    """Priority-queue propagation; the queue is ordered by (distance, label, row, column) as in CellProfiler.

    Works on padded flat indices: ``pad``, ``lab_p`` and ``dist_p`` are (m + 2, n + 2) (allocated by
    NumPy, filled here). ``lab_p`` is −1 outside the mask and on the border, so one load tells
    whether a neighbour can be claimed (no bounds or mask checks). A queue key is
    ``label << 32 | padded index``: the same order as (label, row, column), unpacked with a shift and
    a mask instead of a division."""
    m, n = image.shape
    n2 = n + 2
    # edge-replicated border = CellProfiler's clamped fetch; float32 when the image is float32 (half
    # the memory on the wave front's scattered reads; the differences are taken in float64 either way)
    for i in range(m + 2):
        ii = min(max(i - 1, 0), m - 1)
        for j in range(n + 2):
            pad[i, j] = image[ii, min(max(j - 1, 0), n - 1)]
            lab_p[i, j] = -1
            dist_p[i, j] = -1.0
    for i in range(m):
        for j in range(n):
            if mask[i, j]:
                lab_p[i + 1, j + 1] = 0
    # the seeds all have distance 0: they form one sorted run of keys, merged with the heap (which
    # then only holds the growing front) — the same pop order as one heap holding everything
    nseed = 0
    for i in range(m):
        for j in range(n):
            if seeds[i, j] != 0 and mask[i, j]:
                nseed += 1
    run = np.empty(nseed, np.int64)
    r = 0
    for i in range(m):
        for j in range(n):
            if seeds[i, j] != 0 and mask[i, j]:
                dist_p[i + 1, j + 1] = 0.0
                run[r] = (np.int64(seeds[i, j]) << 32) | (np.int64(i + 1) * n2 + (j + 1))
                r += 1
    run.sort()
    rpos = 0
    cap = 4096
    hd = np.empty(cap, np.float64)
    hk = np.empty(cap, np.int64)
    size = 0
    w2 = weight * weight
    w2_diagonal = 2.0 * w2  # (manhattan distance 2 · w², the same product as before)
    # the 8 neighbours (−1,−1) (−1,0) (−1,1) (0,−1) (0,1) (1,−1) (1,0) (1,1) as flat offsets
    offsets = (-n2 - 1, -n2, -n2 + 1, -1, 1, n2 - 1, n2, n2 + 1)
    lab_f = lab_p.ravel()
    dist_f = dist_p.ravel()
    pad_f = pad.ravel()
    while size > 0 or rpos < nseed:
        if rpos < nseed and (size == 0 or hd[0] > 0.0 or (hd[0] == 0.0 and run[rpos] < hk[0])):
            key = run[rpos]
            rpos += 1
        else:
            key = hk[0]
            size -= 1
            if size > 0:
                hd[0] = hd[size]
                hk[0] = hk[size]
                _sift_down(hd, hk, 0, size)
        lab = key >> 32
        p1 = key & 0xFFFFFFFF
        if lab_f[p1] != 0:
            continue
        lab_f[p1] = lab
        d0 = dist_f[p1]
        for q in range(8):
            p2 = p1 + offsets[q]
            if lab_f[p2] != 0:  # claimed, outside the mask or the border
                continue
            diff = 0.0
            t1 = p1 - n2 - 1
            t2 = p2 - n2 - 1
            for a in range(3):
                for b in range(3):
                    diff += abs(np.float64(pad_f[t1 + a * n2 + b]) - np.float64(pad_f[t2 + a * n2 + b]))
            d = np.sqrt(diff * diff + (w2 if (q == 1 or q == 3 or q == 4 or q == 6) else w2_diagonal)) + d0
            if dist_f[p2] == -1.0 or dist_f[p2] > d:
                dist_f[p2] = d
                if size == cap:
                    cap *= 2
                    nd = np.empty(cap, np.float64)
                    nk = np.empty(cap, np.int64)
                    nd[:size] = hd[:size]
                    nk[:size] = hk[:size]
                    hd, hk = nd, nk
                nkey = (lab << 32) | p2
                k = size
                size += 1
                while k > 0:
                    par = (k - 1) // 2
                    if d < hd[par] or (d == hd[par] and nkey < hk[par]):
                        hd[k] = hd[par]
                        hk[k] = hk[par]
                        k = par
                    else:
                        break
                hd[k] = d
                hk[k] = nkey


def propagate(image: np.ndarray, seeds: np.ndarray, mask: np.ndarray, regularization: float = 0.05
              ) -> tuple[np.ndarray, np.ndarray]:
    """CellProfiler's Propagation: grow ``seeds`` over ``mask`` in order of the image-weighted distance.

    Returns (labels int32, distances float64; −1 where unreached). Seed pixels keep their label
    even outside ``mask``.
    """
    image = np.asarray(image)
    image32 = np.ascontiguousarray(image, np.float32)
    # the kernel reads float32 when that loses nothing (CellProfiler-scale images are float32)
    image = image32 if np.array_equal(image32, image) else np.ascontiguousarray(image, np.float64)
    seeds = np.ascontiguousarray(seeds, np.int32)
    if image.shape != seeds.shape or image.shape != mask.shape:
        raise ValueError(f"shapes differ: image {image.shape}, seeds {seeds.shape}, mask {mask.shape}")
    m, n = image.shape
    if (m + 2) * (n + 2) >= 2 ** 32:
        raise ValueError(f"propagate: an image of {m} × {n} pixels is too large (the queue keys hold 32-bit indices)")
    # the buffers come from NumPy (huge pages for large arrays; numba's own allocations fault 4 KiB pages)
    pad = np.empty((m + 2, n + 2), image.dtype)
    lab_p = np.empty((m + 2, n + 2), np.int32)
    dist_p = np.empty((m + 2, n + 2), np.float64)
    _propagate_kernel(image, seeds, np.ascontiguousarray(mask, np.bool_), float(regularization), pad, lab_p, dist_p)
    labels = np.maximum(lab_p[1:-1, 1:-1], 0)  # (−1 outside the mask → 0)
    _kernels.paste_seeds(labels, seeds)   # labels[seeds > 0] = seeds[seeds > 0]
    return labels, np.ascontiguousarray(dist_p[1:-1, 1:-1])


def segment_cells(nuclei: np.ndarray, cell_image: np.ndarray, *, seeds: np.ndarray | None = None,
                  return_threshold: bool = False, **params: Any):
    """Cells grown from the nuclei by Propagation on ``cell_image``; cell k ⊇ nucleus k.

    ``seeds`` (optional) adds seeds numbered > N (e.g. nuclei removed for touching the border):
    they compete for pixels and are dropped from the result, as in CellProfiler.
    Parameters: ``DEFAULTS['cells']``.
    """
    p = _params("cells", params)
    img = np.asarray(cell_image, np.float64)
    n = int(nuclei.max()) if nuclei.size else 0
    if seeds is None:
        seeds = nuclei
    binary, t = _threshold_image(img, p)
    if n == 0:
        cells = np.zeros(nuclei.shape, np.int32)
    else:
        # a float32 image goes to the propagation as it is (it would convert the float64 copy back)
        cells, _ = propagate(cell_image if _is_float32(cell_image) else img, seeds, binary, p["regularization"])
        if p["fill_holes"]:
            cells = fill_label_holes(cells)
        if nuclei.ndim == 2 and nuclei.dtype == np.int32:
            _kernels.finish_cells(cells, np.ascontiguousarray(nuclei), n)
        else:
            cells[cells > n] = 0
            cells[nuclei > 0] = nuclei[nuclei > 0]
    return (cells, t) if return_threshold else cells


def cytoplasm(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Cell minus its nucleus, keeping the cell's number."""
    if cells.ndim == 2 and cells.shape == nuclei.shape and cells.dtype.kind in "iu" and nuclei.dtype.kind in "iu":
        return _kernels.cytoplasm(np.ascontiguousarray(cells), np.ascontiguousarray(nuclei))
    return np.where(nuclei > 0, 0, cells).astype(np.int32)


def _is_float32(a: Any) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == np.float32


def segment_site(images: Mapping[str, np.ndarray], *, nuclei_channel: str, cells_channel: str,
                 params: Mapping[str, Any] | None = None) -> Segmentation:
    """Segment one site. ``params`` has ``nuclei`` and ``cells`` sub-mappings (see DEFAULTS)."""
    params = params or {}
    unknown = set(params) - {"nuclei", "cells"}
    if unknown:
        raise ConfigError(f"unknown segmentation section(s): {sorted(unknown)}", hint="use nuclei: and cells:")
    pn = _params("nuclei", params.get("nuclei", {}) or {})
    nuclei, seeds, t_nuc = _identify_primary(np.asarray(images[nuclei_channel], np.float64), pn)
    cells, t_cell = segment_cells(nuclei, images[cells_channel], seeds=seeds, return_threshold=True,
                                  **(params.get("cells", {}) or {}))
    return Segmentation(nuclei=nuclei, cells=cells, cytoplasm=cytoplasm(cells, nuclei),
                        thresholds={"Nuclei": t_nuc, "Cells": t_cell})


def match_objects(reference: np.ndarray, test: np.ndarray, *, min_iou: float = 0.5) -> dict[str, Any]:
    """One-to-one matching of two label images by intersection over union.

    Pairs with IoU ≥ ``min_iou`` are matched greedily from the highest IoU down (for
    ``min_iou`` > 0.5 a pair is unique anyway). Returns counts, precision/recall/F1 and the
    matched IoUs.
    """
    ref = np.asarray(reference).ravel().astype(np.int64)
    tst = np.asarray(test).ravel().astype(np.int64)
    n_ref, n_test = int(ref.max(initial=0)), int(tst.max(initial=0))
    area_r = np.bincount(ref, minlength=n_ref + 1)
    area_t = np.bincount(tst, minlength=n_test + 1)
    n_ref_present = int((area_r[1:] > 0).sum())
    n_test_present = int((area_t[1:] > 0).sum())
    both = (ref > 0) & (tst > 0)
    pair, inter = np.unique(ref[both] * (n_test + 1) + tst[both], return_counts=True)
    r, t = pair // (n_test + 1), pair % (n_test + 1)
    iou = inter / (area_r[r] + area_t[t] - inter)
    order = np.argsort(-iou, kind="stable")
    used_r, used_t, matched = set(), set(), []
    for k in order:
        if iou[k] < min_iou:
            break
        if r[k] in used_r or t[k] in used_t:
            continue
        used_r.add(r[k])
        used_t.add(t[k])
        matched.append(float(iou[k]))
    m = len(matched)
    precision = m / n_test_present if n_test_present else float(n_ref_present == 0)
    recall = m / n_ref_present if n_ref_present else float(n_test_present == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"n_reference": n_ref_present, "n_test": n_test_present, "n_matched": m,
            "precision": precision, "recall": recall, "f1": f1, "ious": np.array(matched)}
