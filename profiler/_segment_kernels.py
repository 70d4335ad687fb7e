"""Compiled kernels of profiler/segment.py that replace library calls with the same results, bit for bit.

* ``watershed`` — scikit-image's ``segmentation.watershed(image, markers, connectivity=8-neighbourhood,
  mask=mask)`` (no compactness, no watershed line), without its padding, dtype copies and pointer heap:
  the same binary heap, with the same push / pop / sift rules (Heapitem ordered by (value, age), markers
  pushed with age 0 in raster order, every neighbour push with the next age, neighbours visited in
  scikit-image's order — sorted by distance from the centre — and labelled when pushed, a pushed value
  raised to the value of the pixel that pushed it). With identical operations on identical heaps the
  pop order, ties included, is identical, and so is every label. tests/test_segment_kernels.py compares
  it with scikit-image on random images with many ties.
* ``fill_label_holes`` / ``fill_binary_holes`` — the background's 4-connected components found by one
  union-find over row runs (no whole-image ``ndi.label``, ``np.unique`` of neighbour pairs and
  fancy-indexed fills; only pockets off the edge have their neighbours read); the same pockets are filled with the same values (integer logic: tested against the old
  NumPy / SciPy implementation on random label images).
"""

from __future__ import annotations

import numba
import numpy as np

def _empty(shape, dtype) -> np.ndarray:
    """Whole-image arrays are allocated by NumPy, not inside the kernels: NumPy asks the kernel for
    huge pages on large allocations (madvise), numba's allocator does not, and first-touch page
    faults of 4 KiB pages cost ~5 us each here (≈ 25 ms per site for the propagation's buffers)."""
    return np.empty(shape, dtype)


# scikit-image's neighbour order for the 3x3 footprint (_offsets_to_raveled_neighbors: by distance
# from the centre, then raveled offset): (-1,0) (0,-1) (0,1) (1,0) (-1,-1) (-1,1) (1,-1) (1,1)
_WS_DI = np.array([-1, 0, 0, 1, -1, -1, 1, 1], np.int64)
_WS_DJ = np.array([0, -1, 1, 0, -1, 1, -1, 1], np.int64)


@numba.njit(cache=True, nogil=True)
def _ws_kernel(image, markers, mask, di, dj, out):  # pragma: no cover - compiled
    m, n = image.shape
    nmark = 0
    for i in range(m):
        for j in range(n):
            out[i, j] = 0
            if markers[i, j] != 0 and mask[i, j]:
                out[i, j] = markers[i, j]
                nmark += 1
    cap = max(1024, 2 * nmark)
    hv = np.empty(cap, np.float64)
    ha = np.empty(cap, np.int64)
    hx = np.empty(cap, np.int64)
    size = 0
    age = 1
    # markers: pushed in raveled order with age 0 (push = sift up with a strict comparison)
    for i in range(m):
        for j in range(n):
            if out[i, j] == 0:
                continue
            v = image[i, j]
            x = np.int64(i) * n + j
            k = size
            size += 1
            while k > 0:
                par = (k - 1) // 2
                if v < hv[par] or (v == hv[par] and 0 < ha[par]):
                    hv[k] = hv[par]
                    ha[k] = ha[par]
                    hx[k] = hx[par]
                    k = par
                else:
                    break
            hv[k] = v
            ha[k] = 0
            hx[k] = x
    while size > 0:
        v0 = hv[0]
        x0 = hx[0]
        size -= 1
        if size > 0:
            # the last item moves to the top and sifts down: it swaps with the smaller child while that
            # child is strictly smaller (left first, the right one only if strictly smaller than both)
            v = hv[size]
            a = ha[size]
            x = hx[size]
            k = 0
            while True:
                c = 2 * k + 1
                if c >= size:
                    break
                sv = v
                sa = a
                s = k
                if hv[c] < sv or (hv[c] == sv and ha[c] < sa):
                    s = c
                    sv = hv[c]
                    sa = ha[c]
                c2 = c + 1
                if c2 < size and (hv[c2] < sv or (hv[c2] == sv and ha[c2] < sa)):
                    s = c2
                if s == k:
                    break
                hv[k] = hv[s]
                ha[k] = ha[s]
                hx[k] = hx[s]
                k = s
            hv[k] = v
            ha[k] = a
            hx[k] = x
        i1 = x0 // n
        j1 = x0 - i1 * n
        lab = out[i1, j1]
        for q in range(8):
            i2 = i1 + di[q]
            j2 = j1 + dj[q]
            if i2 < 0 or i2 >= m or j2 < 0 or j2 >= n:
                continue
            if not mask[i2, j2] or out[i2, j2] != 0:
                continue
            age += 1
            out[i2, j2] = lab
            v = image[i2, j2]
            if v < v0:
                v = v0
            if size == cap:
                cap *= 2
                nv = np.empty(cap, np.float64)
                na = np.empty(cap, np.int64)
                nx = np.empty(cap, np.int64)
                nv[:size] = hv[:size]
                na[:size] = ha[:size]
                nx[:size] = hx[:size]
                hv, ha, hx = nv, na, nx
            x = np.int64(i2) * n + j2
            k = size
            size += 1
            # a new item has the largest age so far: it rises only past strictly larger values
            while k > 0:
                par = (k - 1) // 2
                if v < hv[par]:
                    hv[k] = hv[par]
                    ha[k] = ha[par]
                    hx[k] = hx[par]
                    k = par
                else:
                    break
            hv[k] = v
            ha[k] = age
            hx[k] = x
    return out


@numba.njit(cache=True, nogil=True)
def _ws_components_kernel(image, markers, comps, di, dj, out):  # pragma: no cover - compiled
    """The watershed flooded one mask component at a time (comps: the 8-connected components of the
    mask, numbered 1..K) into ``out``. Returns ok: False when the shortcut cannot be shown to give
    scikit-image's result (see ``watershed``) and nothing should be read from ``out``."""
    m, n = image.shape
    ncomp = 0
    nmark = 0
    for i in range(m):
        for j in range(n):
            out[i, j] = 0
            c = comps[i, j]
            if c > ncomp:
                ncomp = c
            if c != 0 and markers[i, j] != 0:
                nmark += 1
    # marker pixels bucketed by component, raster order kept within each component
    start = np.zeros(ncomp + 2, np.int64)
    for i in range(m):
        for j in range(n):
            c = comps[i, j]
            if c != 0 and markers[i, j] != 0:
                start[c + 1] += 1
    for c in range(1, ncomp + 2):
        start[c] += start[c - 1]
    fill = start.copy()
    mpos = np.empty(nmark, np.int64)
    for i in range(m):
        for j in range(n):
            c = comps[i, j]
            if c != 0 and markers[i, j] != 0:
                v = image[i, j]
                if v != v:
                    return False
                mpos[fill[c]] = np.int64(i) * n + j
                fill[c] += 1
                out[i, j] = markers[i, j]
    cap = 1024
    hv = np.empty(cap, np.float64)
    ha = np.empty(cap, np.int64)
    hx = np.empty(cap, np.int64)
    age = 1
    for c in range(1, ncomp + 1):
        a0 = start[c]
        a1 = start[c + 1]
        if a1 == a0:
            continue
        # markers of one component tied on value must carry one label (see ``watershed``)
        mv = np.empty(a1 - a0, np.float64)
        for t in range(a0, a1):
            mv[t - a0] = image[mpos[t] // n, mpos[t] % n]
        order = np.argsort(mv)
        for t in range(1, a1 - a0):
            p0 = mpos[a0 + order[t - 1]]
            p1 = mpos[a0 + order[t]]
            if mv[order[t]] == mv[order[t - 1]] and out[p0 // n, p0 % n] != out[p1 // n, p1 % n]:
                return False
        size = 0
        if a1 - a0 > cap:
            cap = 2 * (a1 - a0)
            hv = np.empty(cap, np.float64)
            ha = np.empty(cap, np.int64)
            hx = np.empty(cap, np.int64)
        for t in range(a0, a1):
            x = mpos[t]
            v = image[x // n, x % n]
            k = size
            size += 1
            while k > 0:
                par = (k - 1) // 2
                if v < hv[par]:
                    hv[k] = hv[par]
                    ha[k] = ha[par]
                    hx[k] = hx[par]
                    k = par
                else:
                    break
            hv[k] = v
            ha[k] = 0
            hx[k] = x
        while size > 0:
            v0 = hv[0]
            x0 = hx[0]
            size -= 1
            if size > 0:
                v = hv[size]
                a = ha[size]
                x = hx[size]
                k = 0
                while True:
                    ch = 2 * k + 1
                    if ch >= size:
                        break
                    ch2 = ch + 1
                    if ch2 < size and (hv[ch2] < hv[ch] or (hv[ch2] == hv[ch] and ha[ch2] < ha[ch])):
                        ch = ch2
                    if hv[ch] < v or (hv[ch] == v and ha[ch] < a):
                        hv[k] = hv[ch]
                        ha[k] = ha[ch]
                        hx[k] = hx[ch]
                        k = ch
                    else:
                        break
                hv[k] = v
                ha[k] = a
                hx[k] = x
            i1 = x0 // n
            j1 = x0 - i1 * n
            lab = out[i1, j1]
            for q in range(8):
                i2 = i1 + di[q]
                j2 = j1 + dj[q]
                if i2 < 0 or i2 >= m or j2 < 0 or j2 >= n:
                    continue
                c2 = comps[i2, j2]
                if c2 == 0:
                    continue
                if c2 != c:
                    return False  # not the mask's 8-connected components
                if out[i2, j2] != 0:
                    continue
                age += 1
                out[i2, j2] = lab
                v = image[i2, j2]
                if v != v:
                    return False
                if v < v0:
                    v = v0
                if size == cap:
                    cap *= 2
                    nv = np.empty(cap, np.float64)
                    na = np.empty(cap, np.int64)
                    nx = np.empty(cap, np.int64)
                    nv[:size] = hv[:size]
                    na[:size] = ha[:size]
                    nx[:size] = hx[:size]
                    hv, ha, hx = nv, na, nx
                k = size
                size += 1
                while k > 0:
                    par = (k - 1) // 2
                    if v < hv[par]:
                        hv[k] = hv[par]
                        ha[k] = ha[par]
                        hx[k] = hx[par]
                        k = par
                    else:
                        break
                hv[k] = v
                ha[k] = age
                hx[k] = np.int64(i2) * n + j2
    return True


def watershed_exact(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(image, markers, connectivity=np.ones((3, 3)), mask=mask)``
    as int32 (2-D only; no compactness, no watershed line): scikit-image's heap replayed step by step."""
    image = np.ascontiguousarray(image, np.float64)
    markers = np.ascontiguousarray(markers, np.int32)
    mask = np.ascontiguousarray(mask, np.bool_)
    if image.ndim != 2 or image.shape != markers.shape or image.shape != mask.shape:
        raise ValueError(f"shapes differ or not 2-D: image {image.shape}, markers {markers.shape}, mask {mask.shape}")
    return _ws_kernel(image, markers, mask, _WS_DI, _WS_DJ, _empty(image.shape, np.int32))


def watershed(image: np.ndarray, markers: np.ndarray, components: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(image, markers, connectivity=np.ones((3, 3)), mask=components > 0)``
    as int32, where ``components`` numbers the 8-connected components of the mask (``ndi.label``).

    Flooding never crosses from one component into another, and within a component the heap pops its
    items in (value, age) order — a strict order, ages being unique, except between markers (all age 0)
    of equal value, which scikit-image's heap pops in an order that depends on everything else in it.
    When such tied markers carry one label the order does not change the labels: they pop one after the
    other, push the same pixels with the same values and label (pushed value = max(pixel, popped value)),
    and the ages they hand out form one consecutive block, permuted, whose items again tie only among
    themselves with one label. So the components are flooded one by one with small heaps (≈ 2x faster
    than one heap for the whole image); if tied markers of one component carry different labels, if
    ``components`` are not the mask's 8-connected components or the image holds NaN, the exact replay
    of scikit-image's global heap (``watershed_exact``) is used instead.
    """
    image = np.ascontiguousarray(image, np.float64)
    markers = np.ascontiguousarray(markers, np.int32)
    components = np.ascontiguousarray(components, np.int32)
    if image.ndim != 2 or image.shape != markers.shape or image.shape != components.shape:
        raise ValueError(f"shapes differ or not 2-D: image {image.shape}, markers {markers.shape}, "
                         f"components {components.shape}")
    out = _empty(image.shape, np.int32)
    if _ws_components_kernel(image, markers, components, _WS_DI, _WS_DJ, out):
        return out
    return _ws_kernel(image, markers, components > 0, _WS_DI, _WS_DJ, out)


@numba.njit(cache=True, nogil=True)
def _find(parent, a):  # pragma: no cover - compiled
    r = a
    while parent[r] != r:
        r = parent[r]
    while parent[a] != r:
        nxt = parent[a]
        parent[a] = r
        a = nxt
    return r


@numba.njit(cache=True, nogil=True)
def _background_runs(bg):  # pragma: no cover - compiled
    """The 4-connected components of ``bg`` as row runs: (run row, start, end (exclusive), component
    root of each run, whether each root's component touches the image edge, its area)."""
    m, n = bg.shape
    nruns = 0
    for i in range(m):
        prev = False
        for j in range(n):
            b = bg[i, j]
            if b and not prev:
                nruns += 1
            prev = b
    rr = np.empty(nruns, np.int64)
    r0 = np.empty(nruns, np.int64)
    r1 = np.empty(nruns, np.int64)
    first = np.empty(m + 1, np.int64)
    k = 0
    for i in range(m):
        first[i] = k
        j = 0
        while j < n:
            if bg[i, j]:
                a = j
                while j < n and bg[i, j]:
                    j += 1
                rr[k] = i
                r0[k] = a
                r1[k] = j
                k += 1
            else:
                j += 1
    first[m] = k
    parent = np.arange(nruns)
    for i in range(1, m):
        a = first[i - 1]
        b = first[i]
        while a < first[i] and b < first[i + 1]:
            if r0[a] < r1[b] and r0[b] < r1[a]:   # overlapping columns: 4-connected
                ra = _find(parent, a)
                rb = _find(parent, b)
                if ra < rb:
                    parent[rb] = ra
                elif rb < ra:
                    parent[ra] = rb
            if r1[a] < r1[b]:
                a += 1
            else:
                b += 1
    root = np.empty(nruns, np.int64)
    edge = np.zeros(nruns, np.bool_)
    area = np.zeros(nruns, np.int64)
    for k in range(nruns):
        r = _find(parent, k)
        root[k] = r
        area[r] += r1[k] - r0[k]
        if rr[k] == 0 or rr[k] == m - 1 or r0[k] == 0 or r1[k] == n:
            edge[r] = True
    return rr, r0, r1, root, edge, area


@numba.njit(cache=True, nogil=True)
def _fill_label_holes_kernel(labels, out):  # pragma: no cover - compiled
    m, n = labels.shape
    rr, r0, r1, root, edge, area = _background_runs(labels == 0)
    nruns = rr.shape[0]
    owner = np.zeros(nruns, np.int64)
    multi = np.zeros(nruns, np.bool_)
    # a component off the edge has every pixel's 4 neighbours inside the image
    for k in range(nruns):
        r = root[k]
        if edge[r] or multi[r]:
            continue
        i = rr[k]
        for t in range(4):
            if t == 0:
                ia, ja, jb = i, r0[k] - 1, r0[k]
            elif t == 1:
                ia, ja, jb = i, r1[k], r1[k] + 1
            elif t == 2:
                ia, ja, jb = i - 1, r0[k], r1[k]
            else:
                ia, ja, jb = i + 1, r0[k], r1[k]
            for j in range(ja, jb):
                lab = labels[ia, j]
                if lab > 0:
                    if owner[r] == 0:
                        owner[r] = lab
                    elif owner[r] != lab:
                        multi[r] = True
    for k in range(nruns):
        r = root[k]
        if not edge[r] and not multi[r] and owner[r] != 0:
            for j in range(r0[k], r1[k]):
                out[rr[k], j] = owner[r]


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """A copy of ``labels`` with every 4-connected background pocket that touches exactly one object
    (4-neighbours > 0) and not the image edge set to that object's number."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, not {labels.shape}")
    labels = np.ascontiguousarray(labels)
    out = labels.copy()
    _fill_label_holes_kernel(labels, out)
    return out


@numba.njit(cache=True, nogil=True)
def _fill_binary_holes_kernel(mask, limited, max_area, out):  # pragma: no cover - compiled
    rr, r0, r1, root, edge, area = _background_runs(~mask)
    for k in range(rr.shape[0]):
        r = root[k]
        if not edge[r] and (not limited or area[r] < max_area):
            for j in range(r0[k], r1[k]):
                out[rr[k], j] = True


def fill_binary_holes(mask: np.ndarray, max_area: float | None = None) -> np.ndarray:
    """A copy of ``mask`` with its background components (4-connected) that do not touch the edge and
    (if ``max_area`` is given) have fewer than ``max_area`` pixels set."""
    mask = np.ascontiguousarray(mask, np.bool_)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, not {mask.shape}")
    out = mask.copy()
    _fill_binary_holes_kernel(mask, max_area is not None, 0.0 if max_area is None else float(max_area), out)
    return out


@numba.njit(cache=True, nogil=True)
def _uniform_histogram_kernel(a, first, last, edges):  # pragma: no cover - compiled
    nbins = edges.shape[0] - 1
    counts = np.zeros(nbins, np.int64)
    denom = last - first
    scale = nbins / denom
    # Shortcut (exactly NumPy's bins): e = (x - first) * (nbins / denom) and NumPy's estimate
    # (x - first) / denom * nbins are both within 256 * 4 ulp(1) < 1e-12 bins of the exact position
    # (x - first <= denom); NumPy's edges b * step + first are within 256 ulp(1) bins plus
    # ulp(max |edge|) / step of theirs. When that last term is below 1e-10 bins (checked here) and e is
    # farther than 1e-9 from an integer, x lies strictly inside bin int(e) of NumPy's edges and NumPy's
    # estimate truncates to that bin too, so its corrections change nothing. Every other value takes
    # NumPy's own steps (division, truncation, the two edge comparisons).
    big = max(abs(first), abs(last))
    step = edges[1] - edges[0]
    cheap = np.isfinite(scale) and scale > 0 and step > 0 and big * 2.0 ** -50 < 1e-10 * step
    for k in range(a.shape[0]):
        x = a[k]
        if not (x >= first and x <= last):
            continue
        u = x - first
        if cheap:
            e = u * scale
            idx = np.int64(e)
            fr = e - idx
            if fr > 1e-9 and fr < 1.0 - 1e-9 and idx < nbins:
                counts[idx] += 1
                continue
        idx = np.int64(u / denom * nbins)
        if idx == nbins:
            idx -= 1
        if x < edges[idx]:
            idx -= 1
        if x >= edges[idx + 1] and idx != nbins - 1:
            idx += 1
        counts[idx] += 1
    return counts


def uniform_histogram(a: np.ndarray, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(a, bins=nbins)`` for a finite float64 array (range = (min, max)): the same
    edges (np.linspace) and the same bin of every value (NumPy's uniform-bin index computation
    ``(x - first) / (last - first) * nbins`` truncated, then moved by one where the value lies
    across the computed edge), without NumPy's 65,536-value blocks of temporaries."""
    a = np.ascontiguousarray(a, np.float64).ravel()
    first, last = a.min(), a.max()
    if not (np.isfinite(first) and np.isfinite(last)):
        raise ValueError("uniform_histogram needs finite values")
    if first == last:
        first, last = first - 0.5, last + 0.5
    edges = np.linspace(first, last, int(nbins) + 1, endpoint=True, dtype=np.result_type(first, last, a))
    if np.any(edges[:-1] >= edges[1:]):
        raise ValueError(f"Too many bins for data range. Cannot create {nbins} finite-sized bins.")
    return _uniform_histogram_kernel(a, first, last, edges), edges


# ---------------------------------------------------------------------------------------------
# one-pass versions of whole-image NumPy expressions (integer logic; tests compare with NumPy)
# ---------------------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _keep_labels_kernel(labels, keep, out):  # pragma: no cover - compiled
    m, n = labels.shape
    for i in range(m):
        for j in range(n):
            v = labels[i, j]
            out[i, j] = v if keep[v] else 0


def keep_labels(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``np.where(keep[labels], labels, 0).astype(np.int32)`` (2-D labels >= 0, < len(keep))."""
    out = _empty(labels.shape, np.int32)
    _keep_labels_kernel(labels, keep, out)
    return out


def nuclei_and_seeds(labels: np.ndarray, unedited: np.ndarray, new: np.ndarray, seed_map: np.ndarray):
    """``nuclei = new[labels]`` and ``np.where(nuclei > 0, nuclei, seed_map[unedited]).astype(np.int32)``."""
    nuclei = _empty(labels.shape, np.int32)
    seeds = _empty(labels.shape, np.int32)
    _nuclei_and_seeds_kernel(labels, unedited, new, seed_map, nuclei, seeds)
    return nuclei, seeds


@numba.njit(cache=True, nogil=True)
def _nuclei_and_seeds_kernel(labels, unedited, new, seed_map, nuclei, seeds):  # pragma: no cover - compiled
    m, n = labels.shape
    for i in range(m):
        for j in range(n):
            v = new[labels[i, j]]
            nuclei[i, j] = v
            seeds[i, j] = v if v > 0 else seed_map[unedited[i, j]]


@numba.njit(cache=True, nogil=True)
def finish_cells(cells, nuclei, n_objects):  # pragma: no cover - compiled
    """In place: ``cells[cells > n_objects] = 0; cells[nuclei > 0] = nuclei[nuclei > 0]``."""
    m, n = cells.shape
    for i in range(m):
        for j in range(n):
            v = nuclei[i, j]
            if v > 0:
                cells[i, j] = v
            elif cells[i, j] > n_objects:
                cells[i, j] = 0


@numba.njit(cache=True, nogil=True)
def _cytoplasm_kernel(cells, nuclei, out):  # pragma: no cover - compiled
    m, n = cells.shape
    for i in range(m):
        for j in range(n):
            out[i, j] = 0 if nuclei[i, j] > 0 else cells[i, j]


def cytoplasm(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """``np.where(nuclei > 0, 0, cells).astype(np.int32)`` (2-D)."""
    out = _empty(cells.shape, np.int32)
    _cytoplasm_kernel(cells, nuclei, out)
    return out


@numba.njit(cache=True, nogil=True)
def paste_seeds(labels, seeds):  # pragma: no cover - compiled
    """In place: ``labels[seeds > 0] = seeds[seeds > 0]``."""
    m, n = labels.shape
    for i in range(m):
        for j in range(n):
            if seeds[i, j] > 0:
                labels[i, j] = seeds[i, j]


# ---------------------------------------------------------------------------------------------
# separable symmetric smoothing = scipy.ndimage correlate1d along axis 0 then axis 1 (float32 out)
# ---------------------------------------------------------------------------------------------

def symmetric_weights(filter1d, radius: int) -> np.ndarray:
    """The weights ``fw[-k]`` (k = 0..radius) that scipy's symmetric correlate1d multiplies the pair
    (x[i - k] + x[i + k]) by, read off its impulse response: ``filter1d(impulse)`` (a float64 line,
    mode constant) at distance k from the impulse is exactly ``fw[-k]`` (all other terms are 0)."""
    x = np.zeros(2 * radius + 5)
    x[radius + 2] = 1.0
    y = filter1d(x)
    w = np.ascontiguousarray(y[radius + 2:radius + 2 + radius + 1])
    if y[:2].any() or y[-2:].any():
        raise ValueError("the filter reaches farther than radius")
    return w


@numba.njit(cache=True, nogil=True)
def _smooth_rows_cols(img, w, rows, cols, eps, use_eps, tmp, out):  # pragma: no cover - compiled
    """scipy's symmetric correlate1d (float64 line buffers, mode constant, cval 0) with weights
    fw[-k] = w[k], along axis 0 into float32, then along axis 1 into float32; returned divided (in
    float64) by ``rows[i] * cols[j]`` (``+ eps`` when use_eps). Per element the same operations in the
    same order as scipy: acc = x[i] * w[0]; acc += (x[i - k] + x[i + k]) * w[k] for k = r .. 1."""
    m, n = img.shape
    r = w.shape[0] - 1
    acc = np.empty(n, np.float64)
    for i in range(m):
        for j in range(n):
            acc[j] = np.float64(img[i, j]) * w[0]
        for k in range(r, 0, -1):
            wk = w[k]
            ia = i - k
            ib = i + k
            if ia >= 0 and ib < m:
                for j in range(n):
                    acc[j] += (np.float64(img[ia, j]) + np.float64(img[ib, j])) * wk
            elif ia >= 0:
                for j in range(n):
                    acc[j] += (np.float64(img[ia, j]) + 0.0) * wk
            elif ib < m:
                for j in range(n):
                    acc[j] += (0.0 + np.float64(img[ib, j])) * wk
            else:
                for j in range(n):
                    acc[j] += (0.0 + 0.0) * wk
        for j in range(n):
            tmp[i, j] = np.float32(acc[j])
    buf = np.zeros(n + 2 * r, np.float64)
    acc2 = np.empty(n, np.float64)
    for i in range(m):
        for j in range(n):
            buf[j + r] = np.float64(tmp[i, j])
        for j in range(n):
            acc2[j] = buf[j + r] * w[0]
        for k in range(r, 0, -1):
            wk = w[k]
            lo = buf[r - k:r - k + n]   # slices: the loop vectorises (same operations per element)
            hi = buf[r + k:r + k + n]
            for j in range(n):
                acc2[j] += (lo[j] + hi[j]) * wk
        ri = rows[i]
        if use_eps:
            for j in range(n):
                out[i, j] = np.float64(np.float32(acc2[j])) / (ri * cols[j] + eps)
        else:
            for j in range(n):
                out[i, j] = np.float64(np.float32(acc2[j])) / (ri * cols[j])


def smooth_normalized(img32: np.ndarray, w: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                      eps: float | None) -> np.ndarray:
    """``corr1(corr0(img32)) / (np.outer(rows, cols) [+ eps])`` as float64, where corr0/corr1 are
    scipy's float32-output symmetric correlate1d along axis 0 / 1 with weights from
    ``symmetric_weights``."""
    img32 = np.ascontiguousarray(img32, np.float32)
    out = _empty(img32.shape, np.float64)
    _smooth_rows_cols(img32, np.ascontiguousarray(w, np.float64), np.ascontiguousarray(rows, np.float64),
                      np.ascontiguousarray(cols, np.float64), 0.0 if eps is None else float(eps),
                      eps is not None, _empty(img32.shape, np.float32), out)
    return out


# ---------------------------------------------------------------------------------------------
# cubic B-spline prefilter = scipy.ndimage.spline_filter(image, 3, output=float64, mode mirror/constant)
# ---------------------------------------------------------------------------------------------

# scipy/ndimage/src/ni_splines.c: the cubic spline's pole, sqrt(3) - 2, as the C literal reads it
_CUBIC_POLE = -0.267949192431122706472553658494127633


@numba.njit(cache=True, nogil=True)
def _spline_axis0(c, z, z_n_1, gain):  # pragma: no cover - compiled
    """scipy's apply_filter (gain, mirror causal init, causal pass, mirror anticausal init,
    anticausal pass) on every column of ``c`` in place — per element the same operations in the
    same order, the columns side by side (vectorised)."""
    h, w = c.shape
    for i in range(h):
        for j in range(w):
            c[i, j] *= gain
    c0 = np.empty(w, np.float64)
    for j in range(w):
        c0[j] = c[0, j] + z_n_1 * c[h - 1, j]
    z_i = z
    for i in range(1, h - 1):
        for j in range(w):
            c0[j] += z_i * (c[i, j] + z_n_1 * c[h - 1 - i, j])
        z_i *= z
    d = 1.0 - z_n_1 * z_n_1
    for j in range(w):
        c[0, j] = c0[j] / d
    for i in range(1, h):
        for j in range(w):
            c[i, j] += z * c[i - 1, j]
    zz = z * z - 1.0
    for j in range(w):
        c[h - 1, j] = (z * c[h - 2, j] + c[h - 1, j]) * z / zz
    for i in range(h - 2, -1, -1):
        for j in range(w):
            c[i, j] = z * (c[i + 1, j] - c[i, j])


@numba.njit(cache=True, nogil=True)
def _spline_axis1(c, z, z_n_1, gain):  # pragma: no cover - compiled
    """The same filter along every row, 8 rows side by side (independent recursions interleaved)."""
    h, w = c.shape
    B = 8
    c0 = np.empty(B, np.float64)
    for r0 in range(0, h, B):
        r1 = min(r0 + B, h)
        for r in range(r0, r1):
            for j in range(w):
                c[r, j] *= gain
        for r in range(r0, r1):
            c0[r - r0] = c[r, 0] + z_n_1 * c[r, w - 1]
        z_i = z
        for i in range(1, w - 1):
            for r in range(r0, r1):
                c0[r - r0] += z_i * (c[r, i] + z_n_1 * c[r, w - 1 - i])
            z_i *= z
        d = 1.0 - z_n_1 * z_n_1
        for r in range(r0, r1):
            c[r, 0] = c0[r - r0] / d
        for i in range(1, w):
            for r in range(r0, r1):
                c[r, i] += z * c[r, i - 1]
        zz = z * z - 1.0
        for r in range(r0, r1):
            c[r, w - 1] = (z * c[r, w - 2] + c[r, w - 1]) * z / zz
        for i in range(w - 2, -1, -1):
            for r in range(r0, r1):
                c[r, i] = z * (c[r, i + 1] - c[r, i])


def cubic_spline_filter(image: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.spline_filter(image, 3, output=np.float64, mode=m)`` for a 2-D image and
    m = "mirror" or "constant" (both use the mirror initialisation in scipy's ni_splines.c): axis 0
    then axis 1, each line = gain, causal init, causal pass, anticausal init, anticausal pass;
    lines of one sample are left as they are. pow(z, n - 1) is the C library's pow (math.pow)."""
    import math

    c = np.array(image, dtype=np.float64, order="C", copy=True)
    if c.ndim != 2:
        raise ValueError(f"image must be 2-D, not {c.shape}")
    z = _CUBIC_POLE
    gain = 1.0
    gain *= (1.0 - z) * (1.0 - 1.0 / z)
    h, w = c.shape
    if h > 1:
        _spline_axis0(c, z, math.pow(z, h - 1), gain)
    if w > 1:
        _spline_axis1(c, z, math.pow(z, w - 1), gain)
    return c
