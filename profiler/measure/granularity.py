"""Granularity — CellProfiler's MeasureGranularity, per object.

CellProfiler's definition (cellprofiler_library ``measure_granularity``), reproduced step by step:

1. the image is subsampled by ``subsample_size`` (bilinear, ``map_coordinates(order=1)``);
2. its background is removed: the subsampled image is subsampled again by ``image_sample_size``,
   opened (erosion then dilation) with a disk of radius ``element_size``, brought back to the first
   subsampled grid and subtracted (negatives clipped to 0);
3. the granular spectrum: ``spectrum_length`` times, the marker is eroded by a radius-1 disk and the
   image is reconstructed by dilation from it (an opening by reconstruction of growing size);
4. every reconstruction is brought back to full resolution (bilinear) and averaged inside each
   object; ``Granularity_k = (mean_{k-1} − mean_k) · 100 / mean_0`` where ``mean_0`` is the object's
   mean of the *original* full-resolution image (CellProfiler's convention, kept as is).

The whole-image part (steps 1–3) depends only on the channel, not on the objects: it is computed
once per image and site and reused for every compartment (kept in the site's
:class:`~profiler.measure._util.ImageCache`). All 16 reconstructions come from one max-tree of the background-subtracted image
(union-find over the pixels by decreasing value): the reconstruction of a marker under the image is,
at each pixel, the best min(level, marker maximum of the subtree) over its ancestors, i.e. two
linear passes per marker, and gives exactly ``skimage.morphology.reconstruction``'s result with a
radius-1 disk. The per-object means of the upsampled reconstructions come from a sparse
"bilinear upsampling + object sum" operator built once per label image (no full-resolution image
is made). Subsampling by 1/k picks every k-th pixel (bilinear interpolation at whole pixels returns
the pixel) and the disk opening runs as per-row running minima/maxima; both give scipy's values
bit for bit (tests/test_measure_granularity_fast.py), with scipy's own functions as the fallback
where they might not (non-finite or −0.0 pixels, images smaller than the disk).
"""

from __future__ import annotations

from collections.abc import Mapping

import numba
import numpy as np
import scipy.ndimage as ndi
from scipy import sparse
from skimage.morphology import disk

from profiler.measure._util import LabelContext, label_context
from profiler.measure.registry import FeatureDoc, register

_EPS = np.finfo(float).eps


# --------------------------------------------------------------------------- resampling (CP's exact grids)

def _downsample(pixels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """CellProfiler's ``downsample_image_and_mask`` for a full mask: returns (pixels, new_shape float).

    When every sampling coordinate is a whole pixel (factor 1/k, e.g. the default 0.25), bilinear
    interpolation returns the pixel itself (weights 1 and 0), so the pixels are picked directly —
    the same values bit for bit, provided no neighbour is inf or NaN (0 · inf) and no picked pixel is
    −0.0 (map_coordinates returns +0.0 there); otherwise, and for other factors, map_coordinates."""
    new_shape = np.array(pixels.shape, dtype=float)
    if factor >= 1:
        return pixels.copy(), new_shape
    new_shape = new_shape * factor
    if pixels.ndim == 2 and pixels.dtype in (np.float32, np.float64):
        ri = np.mgrid[0:new_shape[0]].astype(float) / factor
        ci = np.mgrid[0:new_shape[1]].astype(float) / factor
        rk, ck = ri.astype(np.int64), ci.astype(np.int64)
        if (ri.size and ci.size and np.array_equal(rk, ri) and np.array_equal(ck, ci)
                and rk[-1] < pixels.shape[0] and ck[-1] < pixels.shape[1]):
            out = pixels[rk][:, ck]
            if not (out == 0).any() or not np.signbit(out[out == 0]).any():
                if np.isfinite(pixels).all():
                    return out, new_shape
    i, j = np.mgrid[0:new_shape[0], 0:new_shape[1]].astype(float) / factor
    return ndi.map_coordinates(pixels, (i, j), order=1), new_shape


def _restore(scaled: np.ndarray, scaled_shape: np.ndarray, orig_shape) -> np.ndarray:
    """CellProfiler's ``restore_scale``: bilinear back to ``orig_shape``."""
    i, j = np.mgrid[0:orig_shape[0], 0:orig_shape[1]].astype(float)
    # a dimension of one pixel (tiny images, heavy subsampling) maps every coordinate to 0
    i *= float(scaled_shape[0] - 1) / float(orig_shape[0] - 1) if orig_shape[0] > 1 else 0.0
    j *= float(scaled_shape[1] - 1) / float(orig_shape[1] - 1) if orig_shape[1] > 1 else 0.0
    return ndi.map_coordinates(scaled, (i, j), order=1).astype(float)


# --------------------------------------------------------------------------- numba kernels

@numba.njit(cache=True, nogil=True)
def _max_tree(f: np.ndarray, order: np.ndarray, h: int, w: int):  # pragma: no cover - numba
    """Pixel-level max-tree of the (h, w) image ``f`` (flat), 4-connectivity, by union-find.

    ``order`` lists the pixels by decreasing value (ties in any order). Returns, in that order,
    each pixel's parent position (the root is its own parent) and its value. A pixel's subtree is
    a connected set of pixels ≥ its value, and the subtree of the last pixel of every connected
    component of an upper level set is that whole component (Berger et al. 2007, with union by rank).
    """
    n = h * w
    zpar = np.full(n, -1, dtype=np.int32)
    rank = np.zeros(n, dtype=np.int8)
    last = np.empty(n, dtype=np.int32)  # last processed pixel of the component whose union-find root it is
    pos = np.empty(n, dtype=np.int32)
    ppos = np.empty(n, dtype=np.int32)
    fs = np.empty(n)
    for i in range(n):
        p = order[i]
        pos[p] = i
        fs[i] = f[p]
        ppos[i] = i
        zpar[p] = p
        last[p] = p
        zp = p
        r0 = p // w
        c0 = p - r0 * w
        for d in range(4):
            if d == 0:
                if r0 == 0:
                    continue
                q = p - w
            elif d == 1:
                if r0 == h - 1:
                    continue
                q = p + w
            elif d == 2:
                if c0 == 0:
                    continue
                q = p - 1
            else:
                if c0 == w - 1:
                    continue
                q = p + 1
            if zpar[q] < 0:
                continue
            r = q
            while zpar[r] != r:  # find with path halving
                zpar[r] = zpar[zpar[r]]
                r = zpar[r]
            if r != zp:
                ppos[pos[last[r]]] = i
                if rank[zp] < rank[r]:
                    zp, r = r, zp
                zpar[r] = zp
                last[zp] = p
                if rank[zp] == rank[r]:
                    rank[zp] += 1
    return ppos, fs


@numba.njit(cache=True, nogil=True)
def _reconstruct_tree(ppos: np.ndarray, fs: np.ndarray, A: np.ndarray) -> None:  # pragma: no cover - numba
    """In place: A[:, k] (markers ≤ mask, in max-tree order) → reconstruction by dilation under the mask.

    rec(p) = max over the ancestors a of p of min(f(a), max of the marker over a's subtree): the
    largest t such that p's connected component of {f ≥ t} holds a marker value ≥ t.
    """
    n, K = A.shape
    for i in range(n):  # children come before parents: subtree maxima
        j = ppos[i]
        for k in range(K):
            if A[i, k] > A[j, k]:
                A[j, k] = A[i, k]
    for i in range(n - 1, -1, -1):  # parents before children: best value along the ancestors
        j = ppos[i]
        f = fs[i]
        for k in range(K):
            v = A[i, k]
            if f < v:
                v = f
            if j != i and A[j, k] > v:
                v = A[j, k]
            A[i, k] = v


@numba.njit(cache=True, nogil=True, inline="always")
def _min_at(src: np.ndarray, v: float, q: int) -> float:  # pragma: no cover - numba
    a = src[q]
    return a if a < v else v


@numba.njit(cache=True, nogil=True)
def _erode_cross(src: np.ndarray, cur: np.ndarray, h: int, w: int) -> None:  # pragma: no cover - numba
    """cur = src eroded by a radius-1 disk (flat (h, w) images), ``grey_erosion(mode="reflect")``:
    the border pixel itself stands for its missing neighbours."""
    for r in range(h):
        b = r * w
        if 0 < r < h - 1 and w > 2:  # interior row: no bounds checks in the middle
            for p in (b, b + w - 1):
                c = p - b
                v = _min_at(src, _min_at(src, src[p], p - w), p + w)
                if c > 0:
                    v = _min_at(src, v, p - 1)
                if c < w - 1:
                    v = _min_at(src, v, p + 1)
                cur[p] = v
            for p in range(b + 1, b + w - 1):
                cur[p] = _min_at(src, _min_at(src, _min_at(src, _min_at(src, src[p], p - w), p + w), p - 1), p + 1)
        else:
            for c in range(w):
                p = b + c
                v = src[p]
                if r > 0:
                    v = _min_at(src, v, p - w)
                if r < h - 1:
                    v = _min_at(src, v, p + w)
                if c > 0:
                    v = _min_at(src, v, p - 1)
                if c < w - 1:
                    v = _min_at(src, v, p + 1)
                cur[p] = v


@numba.njit(cache=True, nogil=True)
def _erosions(pixels: np.ndarray, order: np.ndarray, K: int) -> np.ndarray:  # pragma: no cover - numba
    """(h·w, K): column k = pixels eroded k + 1 times by a radius-1 disk, rows in ``order``."""
    h, w = pixels.shape
    n = h * w
    A = np.empty((n, K))
    src = pixels.ravel().copy()
    cur = np.empty(n)
    for k in range(K):
        _erode_cross(src, cur, h, w)
        for i in range(n):
            A[i, k] = cur[order[i]]
        src, cur = cur, src
    return A


def _decreasing_order(f: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.argsort(-f.ravel()), dtype=np.int32)


def _reconstruct_by_dilation(seed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Greyscale reconstruction by dilation of ``seed`` under ``mask``, 4-connectivity (= a radius-1
    disk): the same result as ``skimage.morphology.reconstruction(seed, mask, footprint=disk(1))``."""
    mask = np.ascontiguousarray(mask, dtype=np.float64)
    seed = np.minimum(np.asarray(seed, dtype=np.float64), mask)
    order = _decreasing_order(mask)
    ppos, fs = _max_tree(mask.ravel(), order, *mask.shape)
    A = np.ascontiguousarray(seed.ravel()[order][:, None])
    _reconstruct_tree(ppos, fs, A)
    out = np.empty(mask.size)
    out[order] = A[:, 0]
    return out.reshape(mask.shape)


@numba.njit(cache=True, nogil=True)
def _axis_weights(m: int, f: float, size: int):  # pragma: no cover - numba
    """Per full-resolution coordinate 0..m-1 along one axis: the low-resolution cell (i0, i1) and
    the bilinear weights (1 - t, t) of ``restore_scale`` (grid of ``size`` points, scale ``f``)."""
    i0 = np.empty(m, np.int64)
    i1 = np.empty(m, np.int64)
    t0 = np.empty(m)
    t1 = np.empty(m)
    for r in range(m):
        y = r * f
        a = min(max(int(np.floor(y)), 0), max(size - 2, 0))
        t = y - a if size > 1 else 0.0
        i0[r] = a
        i1[r] = min(a + 1, size - 1)
        t0[r] = 1 - t
        t1[r] = t
    return i0, i1, t0, t1


@numba.njit(cache=True, nogil=True)
def _upsample_weights(idx: np.ndarray, starts: np.ndarray, H: int, W: int, h: int, w: int,
                      fr: float, fc: float):  # pragma: no cover - numba
    """CSR (indptr, indices, data) of the operator "sum over object o of the bilinear upsampling".

    Row o holds, for every low-resolution pixel, the total bilinear weight it receives from the
    full-resolution pixels of object o (flat indices ``idx`` in an (H, W) image, given object by
    object: ``starts``), so that ``W @ rec.ravel()`` = per-object sums of CellProfiler's
    ``restore_scale(rec)``. The weights of a pixel are products of per-row and per-column factors
    (:func:`_axis_weights`), computed once per row and column; the additions are made in the same
    order, with the same values, as :func:`_upsample_weights_reference`.
    """
    n = starts.shape[0] - 1
    ri0, ri1, ry0, ry1 = _axis_weights(H, fr, h)
    cj0, cj1, cx0, cx1 = _axis_weights(W, fc, w)
    acc = np.zeros(h * w)
    touched = np.empty(h * w, dtype=np.int64)
    cap = 4 * idx.shape[0] + 1
    indices = np.empty(cap, dtype=np.int64)
    data = np.empty(cap)
    indptr = np.zeros(n + 1, dtype=np.int64)
    nnz = 0
    for o in range(n):
        nt = 0
        for k in range(starts[o], starts[o + 1]):
            p = idx[k]
            r = p // W
            c = p - r * W
            i0 = ri0[r]
            i1 = ri1[r]
            j0 = cj0[c]
            j1 = cj1[c]
            for t in range(4):
                if t == 0:
                    q = i0 * w + j0
                    wt = ry0[r] * cx0[c]
                elif t == 1:
                    q = i0 * w + j1
                    wt = ry0[r] * cx1[c]
                elif t == 2:
                    q = i1 * w + j0
                    wt = ry1[r] * cx0[c]
                else:
                    q = i1 * w + j1
                    wt = ry1[r] * cx1[c]
                if wt == 0.0:
                    continue
                if acc[q] == 0.0:
                    touched[nt] = q
                    nt += 1
                acc[q] += wt
        touched_sorted = np.sort(touched[:nt])
        for t in range(nt):
            q = touched_sorted[t]
            indices[nnz] = q
            data[nnz] = acc[q]
            acc[q] = 0.0
            nnz += 1
        indptr[o + 1] = nnz
    return indptr, indices[:nnz], data[:nnz]


@numba.njit(cache=True, nogil=True)
def _upsample_weights_reference(rows: np.ndarray, cols: np.ndarray, starts: np.ndarray, h: int, w: int,
                      fr: float, fc: float):  # pragma: no cover - numba
    """:func:`_upsample_weights` computed pixel by pixel (the tests' oracle).

    CSR (indptr, indices, data) of the operator "sum over object o of the bilinear upsampling".

    Row o holds, for every low-resolution pixel, the total bilinear weight it receives from the
    full-resolution pixels of object o (pixels given object by object: ``starts``), so that
    ``W @ rec.ravel()`` = per-object sums of CellProfiler's ``restore_scale(rec)``.
    """
    n = starts.shape[0] - 1
    acc = np.zeros(h * w)
    touched = np.empty(h * w, dtype=np.int64)
    cap = 4 * rows.shape[0] + 1
    indices = np.empty(cap, dtype=np.int64)
    data = np.empty(cap)
    indptr = np.zeros(n + 1, dtype=np.int64)
    nnz = 0
    for o in range(n):
        nt = 0
        for k in range(starts[o], starts[o + 1]):
            y = rows[k] * fr
            x = cols[k] * fc
            i0 = min(max(int(np.floor(y)), 0), max(h - 2, 0))
            j0 = min(max(int(np.floor(x)), 0), max(w - 2, 0))
            ty = y - i0 if h > 1 else 0.0
            tx = x - j0 if w > 1 else 0.0
            i1 = min(i0 + 1, h - 1)
            j1 = min(j0 + 1, w - 1)
            for t in range(4):
                if t == 0:
                    q = i0 * w + j0
                    wt = (1 - ty) * (1 - tx)
                elif t == 1:
                    q = i0 * w + j1
                    wt = (1 - ty) * tx
                elif t == 2:
                    q = i1 * w + j0
                    wt = ty * (1 - tx)
                else:
                    q = i1 * w + j1
                    wt = ty * tx
                if wt == 0.0:
                    continue
                if acc[q] == 0.0:
                    touched[nt] = q
                    nt += 1
                acc[q] += wt
        touched_sorted = np.sort(touched[:nt])
        for t in range(nt):
            q = touched_sorted[t]
            indices[nnz] = q
            data[nnz] = acc[q]
            acc[q] = 0.0
            nnz += 1
        indptr[o + 1] = nnz
    return indptr, indices[:nnz], data[:nnz]


@numba.njit(cache=True, nogil=True)
def _disk_filter(src: np.ndarray, half: np.ndarray, dilate: bool) -> np.ndarray:  # pragma: no cover - numba
    """Grey erosion (or dilation) of ``src`` by the footprint whose row dy (−r..r) is the run of
    columns −half[dy + r]..half[dy + r], edges extended by mirroring (scipy's mode "reflect").

    Per row of the mirrored image, the minima over centred windows of every half-width (each from
    the previous one, m_a[j] = min(m_{a−1}[j − 1], m_{a−1}[j + 1])), then per pixel the minimum over
    the footprint's rows. Minima and maxima are exact, so the result equals scipy's."""
    h, w = src.shape
    r = half.size // 2
    amax = 0
    for a in half:
        amax = max(amax, a)
    hp = h + 2 * r
    wp = w + 2 * amax
    pad = np.empty((hp, wp), src.dtype)
    for ip in range(hp):
        i = ip - r
        # mirror with period 2h: -1 -> 0, h -> h - 1
        i = i % (2 * h)
        if i >= h:
            i = 2 * h - 1 - i
        for jp in range(wp):
            j = (jp - amax) % (2 * w)
            if j >= w:
                j = 2 * w - 1 - j
            pad[ip, jp] = src[i, j]
    # runs[a, ip, jc]: extreme of pad[ip, jc + amax - a .. jc + amax + a] (jc = output column)
    runs = np.empty((amax + 1, hp, w), src.dtype)
    cur = pad.copy()
    nxt = np.empty_like(pad)
    for a in range(amax + 1):
        if a == 1:
            for ip in range(hp):
                for jp in range(1, wp - 1):
                    x = pad[ip, jp]
                    y = pad[ip, jp - 1]
                    z = pad[ip, jp + 1]
                    if dilate:
                        x = y if y > x else x
                        x = z if z > x else x
                    else:
                        x = y if y < x else x
                        x = z if z < x else x
                    nxt[ip, jp] = x
            cur, nxt = nxt, cur
        elif a > 1:
            for ip in range(hp):
                for jp in range(a, wp - a):
                    y = cur[ip, jp - 1]
                    z = cur[ip, jp + 1]
                    if dilate:
                        nxt[ip, jp] = z if z > y else y
                    else:
                        nxt[ip, jp] = z if z < y else y
            cur, nxt = nxt, cur
        for ip in range(hp):
            for jc in range(w):
                runs[a, ip, jc] = cur[ip, jc + amax]
    out = np.empty((h, w), src.dtype)
    for i in range(h):
        for j in range(w):
            x = runs[half[0], i, j]
            for dy in range(1, 2 * r + 1):
                y = runs[half[dy], i + dy, j]
                if dilate:
                    x = y if y > x else x
                else:
                    x = y if y < x else x
            out[i, j] = x
    return out


def _disk_runs(radius: int):
    """Half-width of each row of skimage's ``disk(radius)`` when every row is one centred run of
    columns (None otherwise)."""
    fp = disk(radius).astype(bool)
    if fp.shape[0] != fp.shape[1] or fp.shape[0] % 2 == 0 or not (fp == fp[::-1, ::-1]).all():
        return None
    c = fp.shape[1] // 2
    half = np.empty(fp.shape[0], np.int64)
    for r, row in enumerate(fp):
        cols = np.flatnonzero(row)
        if cols.size == 0 or cols[0] != 2 * c - cols[-1] or cols.size != cols[-1] - cols[0] + 1:
            return None
        half[r] = c - cols[0]
    return half


def _reflect_filter(fn, image: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """``fn(image, footprint=footprint, mode="reflect")`` (scipy's grey erosion or dilation), the
    image mirrored by ``np.pad(mode="symmetric")`` first: the same values as scipy's own mirroring
    wherever scipy's stays inside the image, and defined where it does not — scipy 1.17 reads
    outside the buffer when the footprint is more than twice the image (a 2 × 2 image and a radius-10
    disk give values left in freed memory), which made Granularity of tiny objects random."""
    ry, rx = footprint.shape[0] // 2, footprint.shape[1] // 2
    padded = np.pad(image, ((ry, ry), (rx, rx)), mode="symmetric")
    out = fn(padded, footprint=footprint, mode="nearest")
    return out[ry:ry + image.shape[0], rx:rx + image.shape[1]]


def _open_disk(back: np.ndarray, radius: int) -> np.ndarray:
    """``grey_dilation(grey_erosion(back, footprint=disk), footprint=disk)`` (mode "reflect"), the
    same values (:func:`_disk_filter`) for finite float images larger than the radius (scipy's own
    filters on an image mirrored beforehand otherwise, :func:`_reflect_filter`)."""
    half = _disk_runs(int(radius))
    if (half is None or back.ndim != 2 or min(back.shape) <= half.size // 2
            or back.dtype not in (np.float32, np.float64) or not np.isfinite(back).all()):
        fp = disk(radius).astype(bool)
        return _reflect_filter(ndi.grey_dilation, _reflect_filter(ndi.grey_erosion, back, fp), fp)
    back = np.ascontiguousarray(back)
    return _disk_filter(_disk_filter(back, half, False), half, True)


@numba.njit(cache=True, nogil=True)
def _grouped_sums(values: np.ndarray, idx: np.ndarray, starts: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    """Sum of ``values[idx]`` (as float64) per object, objects given by ``starts``: the additions in
    the order of ``idx``, from 0.0, as ``np.bincount(lab, weights=values[idx].astype(float))``."""
    n = starts.size - 1
    out = np.zeros(n)
    for o in range(n):
        acc = 0.0
        for k in range(starts[o], starts[o + 1]):
            acc += np.float64(values[idx[k]])
        out[o] = acc
    return out


# --------------------------------------------------------------------------- whole-image spectrum (once per site)

def _spectrum_images(img: np.ndarray, subsample_size: float, image_sample_size: float,
                     element_size: int, spectrum_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """(h·w, spectrum_length) reconstructions on the subsampled grid (row pos[p] holds pixel p), pos,
    that grid's float shape and (h, w)."""
    pixels, new_shape = _downsample(img, subsample_size)
    pixels = np.asarray(pixels, dtype=np.float64)
    # background removal: open a further-subsampled copy with a disk of radius element_size
    back, back_shape = _downsample(pixels, image_sample_size)
    back = _open_disk(np.asarray(back), element_size)
    if image_sample_size < 1:
        back = _restore(back, back_shape, new_shape)
    pixels = pixels - back
    pixels[pixels < 0] = 0
    pixels = np.ascontiguousarray(pixels, dtype=np.float64)
    # openings by reconstruction: ero_k = pixels eroded k times, rec_k = reconstruction of ero_k under
    # pixels, all from one max-tree of pixels; rows in the tree's order (pos maps a pixel to its row)
    order = _decreasing_order(pixels)
    ppos, fs = _max_tree(pixels.ravel(), order, *pixels.shape)
    recs = _erosions(pixels, order, int(spectrum_length))
    _reconstruct_tree(ppos, fs, recs)
    pos = np.empty(pixels.size, dtype=np.int32)
    pos[order] = np.arange(pixels.size, dtype=np.int32)
    return recs, pos, new_shape, pixels.shape


# --------------------------------------------------------------------------- the family

def _feature_docs() -> list[FeatureDoc]:
    return [FeatureDoc("Granularity_{n}_{channel}",
                       "n-th point of the granular spectrum (n = 1..spectrum_length): the percentage of the "
                       "object's mean intensity removed by the n-th opening by reconstruction (radius-n disk "
                       "on the subsampled, background-subtracted image)", "percent of the object's mean intensity")]


@register("Granularity", description="MeasureGranularity: granular spectrum per object and channel",
          features=_feature_docs(),
          defaults={"subsample_size": 0.25, "image_sample_size": 0.25, "element_size": 10, "spectrum_length": 16})
def granularity(labels: np.ndarray, images: Mapping[str, np.ndarray], *, n_objects: int,
                subsample_size: float = 0.25, image_sample_size: float = 0.25, element_size: int = 10,
                spectrum_length: int = 16, context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """Granular spectrum of every object (``Granularity_<n>_<channel>``), as CellProfiler 5's
    MeasureGranularity computes it (on the whole subsampled image, then averaged per object; module
    docstring).

    Inputs: ``labels``, an (H, W) integer label image with objects 1..``n_objects`` (numbers absent
    from it get NaN rows); ``images``: channel name → (H, W) float image on CellProfiler's scale
    (raw / dtype max); ``context``, the label image's shared intermediates
    (:class:`~profiler.measure._util.LabelContext`), built here when not given.

    Settings (pipeline YAML ``features: {Granularity: {...}}``), as MeasureGranularity's:
    ``subsample_size`` (subsampling factor for the
    measurement), ``image_sample_size`` (further subsampling for background removal),
    ``element_size`` (radius of the background-removal disk, in subsampled pixels) and
    ``spectrum_length`` (number of spectrum points).
    """
    labels = np.asarray(labels)
    ctx = label_context(labels, n_objects, context)
    idx, lab, starts = ctx.grouped()
    count = np.diff(starts).astype(np.float64)
    empty = count == 0
    H, W = labels.shape
    out: dict[str, np.ndarray] = {}
    op = None
    settings = (float(subsample_size), float(image_sample_size), int(element_size), int(spectrum_length))
    for ch, img in images.items():
        arr = np.asarray(img)
        recs, pos, new_shape, (h, w) = ctx.images.get(
            "granularity_spectrum", (img,), settings, lambda: _spectrum_images(arr, *settings))
        img = arr
        if op is None:
            if subsample_size < 1:
                fr = float(new_shape[0] - 1) / float(H - 1) if H > 1 else 0.0
                fc = float(new_shape[1] - 1) / float(W - 1) if W > 1 else 0.0
                indptr, indices, data = _upsample_weights(idx, starts, H, W, h, w, fr, fc)
                op = sparse.csr_matrix((data, indices, indptr), shape=(n_objects, h * w))
            else:
                op = sparse.csr_matrix((np.ones(idx.size), idx, starts), shape=(n_objects, H * W))
        with np.errstate(divide="ignore", invalid="ignore"):
            current = _grouped_sums(img.ravel(), idx, starts) / count
            start = np.maximum(current, _EPS)
            # op's columns are pixels of the grid; recs' rows are in this channel's max-tree order
            op_ch = sparse.csr_matrix((op.data, pos[op.indices], op.indptr), shape=op.shape)
            means = np.asarray(op_ch @ recs) / count[:, None]
        for k in range(1, spectrum_length + 1):
            new = means[:, k - 1]
            with np.errstate(divide="ignore", invalid="ignore"):
                gs = (current - new) * 100 / start
            current = new
            gs[empty] = np.nan
            out[f"Granularity_{k}_{ch}"] = gs
    return out
