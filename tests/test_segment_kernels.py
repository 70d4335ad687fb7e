"""The segmentation's fast kernels against the straightforward library calls they replace (the oracles),
bit for bit, on random inputs full of ties and on edge cases."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import segmentation

from profiler import _segment_kernels as K
from profiler import segment as S

EIGHT = np.ones((3, 3), bool)


def _ws_oracle(image, markers, mask):
    return segmentation.watershed(image, markers, connectivity=EIGHT, mask=mask).astype(np.int32)


def _fast_path(img, markers, comps):
    """Whether the per-component watershed vouches for its result (else the exact replay runs)."""
    return K._ws_components_kernel(img, markers, comps, K._WS_DI, K._WS_DJ, np.empty(img.shape, np.int32))


def _random_case(rng, t):
    h, w = (int(x) for x in rng.integers(1, 50, 2))
    levels = (2, 3, 7, 1000)[t % 4]                      # few levels: ties everywhere
    img = rng.integers(0, levels, (h, w)).astype(np.float64) / levels
    if t % 5 == 0:
        img -= 0.5                                        # negative values too
    mask = rng.random((h, w)) < (0.55, 0.8, 1.0)[t % 3]
    markers = np.zeros((h, w), np.int32)
    nm = int(rng.integers(0, 10))
    markers[rng.integers(0, h, nm), rng.integers(0, w, nm)] = rng.integers(1, 6, nm)
    if t % 2:
        # marker blobs (one label each, ties inside them) as the declumping makes them
        blobs, _ = ndi.label(ndi.binary_dilation(markers > 0, EIGHT) & (rng.random((h, w)) < 0.8), EIGHT)
        markers = blobs.astype(np.int32)
    return img, markers, mask


def test_watershed_exact_replays_skimage():
    rng = np.random.default_rng(0)
    for t in range(400):
        img, markers, mask = _random_case(rng, t)
        assert np.array_equal(K.watershed_exact(img, markers, mask), _ws_oracle(img, markers, mask)), t


def test_watershed_by_components_equals_skimage_and_takes_both_paths():
    rng = np.random.default_rng(1)
    fast = slow = 0
    for t in range(600):
        img, markers, mask = _random_case(rng, t)
        comps = ndi.label(mask, EIGHT)[0].astype(np.int32)
        ok = _fast_path(np.ascontiguousarray(img), markers, comps)
        fast += bool(ok) and markers[mask].any()
        slow += not ok
        assert np.array_equal(K.watershed(img, markers, comps), _ws_oracle(img, markers, mask)), t
    assert fast > 150 and slow > 20, (fast, slow)


def test_watershed_components_shortcut_refuses_what_it_cannot_prove():
    img = np.array([[0.5, 0.1, 0.5, 0.5, 0.1]])
    mask = np.ones(img.shape, bool)
    # tied markers of different labels in one component: the global heap decides, so fall back
    markers = np.array([[1, 0, 2, 0, 0]], np.int32)
    comps = np.ones(img.shape, np.int32)
    assert not _fast_path(img, markers, comps)
    assert np.array_equal(K.watershed(img, markers, comps), _ws_oracle(img, markers, mask))
    # "components" that are not the mask's 8-connected components
    markers = np.array([[1, 0, 0, 0, 2]], np.int32)
    split = np.array([[1, 1, 2, 2, 2]], np.int32)
    assert not _fast_path(img, markers, split)
    assert np.array_equal(K.watershed(img, markers, split), _ws_oracle(img, markers, mask))
    # NaN in the image
    nan = img.copy()
    nan[0, 3] = np.nan
    assert not _fast_path(nan, markers, comps)
    assert np.array_equal(K.watershed(nan, markers, comps), _ws_oracle(nan, markers, mask))
    # nothing to flood
    empty = np.zeros((4, 4))
    assert not K.watershed(empty, np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32)).any()


def _downsample_oracle(image, labels, factor):
    shape = np.array(image.shape) * factor
    ij = np.mgrid[0:shape[0], 0:shape[1]].astype(float) / factor
    return ndi.map_coordinates(image, ij), ndi.map_coordinates(labels, ij, order=0).astype(labels.dtype)


@pytest.mark.parametrize("factor", [10 / 15, 10 / 11, 0.5, 10 / 37, 10 / 16.5])
def test_downsample_equals_map_coordinates_where_read(factor):
    rng = np.random.default_rng(int(factor * 1000))
    for t in range(12):
        h, w = (int(x) for x in rng.integers(3, 90, 2))
        img = rng.random((h, w))
        if t % 3 == 0:
            img = np.round(img * 4) / 4
        labels = ((rng.random((h, w)) < 0.35) * rng.integers(1, 5, (h, w))).astype(np.int32)
        if t == 5:
            labels[:] = 0
        ref, ref_labels = _downsample_oracle(img, labels, factor)
        small, small_labels = S._downsample(img, labels, factor)
        assert small_labels.dtype == ref_labels.dtype and np.array_equal(small_labels, ref_labels)
        read = ref_labels != 0       # _local_maxima reads the image only where the label is not 0
        assert np.array_equal(small[read].view(np.int64), ref[read].view(np.int64))
        assert not small[~read].any()


# the implementations the hole-filling kernels replaced (profiler/segment.py before the kernels)
_FOUR = ndi.generate_binary_structure(2, 1)


def _fill_binary_holes_oracle(mask, max_area=None):
    bg, n = ndi.label(~mask, _FOUR)
    if n == 0:
        return mask
    edge = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
    fill = np.ones(n + 1, bool)
    fill[edge] = False
    fill[0] = False
    if max_area is not None:
        fill &= np.bincount(bg.ravel(), minlength=n + 1) < max_area
    return mask | fill[bg]


def _fill_label_holes_oracle(labels):
    bg, n = ndi.label(labels == 0, _FOUR)
    if n == 0:
        return labels
    pairs = []
    for a, b in ((bg[:-1, :], labels[1:, :]), (bg[1:, :], labels[:-1, :]),
                 (bg[:, :-1], labels[:, 1:]), (bg[:, 1:], labels[:, :-1])):
        sel = (a > 0) & (b > 0)
        pairs.append(np.stack([a[sel], b[sel]], axis=1))
    pairs = np.concatenate(pairs).astype(np.int64)
    big = int(labels.max()) + 1
    code = np.unique(pairs[:, 0] * big + pairs[:, 1])
    pb, pl = code // big, code % big
    owners = np.zeros(n + 1, np.int64)
    n_owners = np.bincount(pb, minlength=n + 1)
    owners[pb] = pl
    edge = np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]]))
    ok = n_owners == 1
    ok[edge] = False
    ok[0] = False
    out = labels.copy()
    sel = ok[bg]
    out[sel] = owners[bg[sel]]
    return out


def _random_labels(rng, t):
    h, w = (int(x) for x in rng.integers(1, 60, 2))
    # blobs with holes, touching objects, pockets shared by several objects, objects on the edge
    density = (0.45, 0.6, 0.75, 0.9)[t % 4]
    fg = rng.random((h, w)) < density
    if t % 3 == 0:
        fg = ndi.binary_closing(fg, iterations=1) ^ (rng.random((h, w)) < 0.05)
    lab = ndi.label(fg, EIGHT)[0] if t % 2 else (fg * rng.integers(1, 4, (h, w)))
    return lab.astype(np.int32)


def test_fill_label_holes_equals_the_old_implementation():
    rng = np.random.default_rng(2)
    filled = 0
    for t in range(600):
        lab = _random_labels(rng, t)
        ref = _fill_label_holes_oracle(lab)
        out = S.fill_label_holes(lab)
        assert out.dtype == ref.dtype and np.array_equal(out, ref), t
        filled += int((out != lab).any())
    assert filled > 100
    for lab in (np.zeros((5, 7), np.int32), np.ones((4, 4), np.int32), np.zeros((1, 1), np.int32),
                np.pad(np.ones((3, 3), np.int32), 1)):
        assert np.array_equal(S.fill_label_holes(lab), _fill_label_holes_oracle(lab))


def test_fill_binary_holes_equals_the_old_implementation():
    rng = np.random.default_rng(3)
    for t in range(600):
        mask = _random_labels(rng, t) > 0
        for max_area in (None, 1, 2, 5.5, 40.0):
            ref = _fill_binary_holes_oracle(mask, max_area)
            out = S._fill_binary_holes(mask, max_area)
            assert out.dtype == ref.dtype and np.array_equal(out, ref), (t, max_area)
    for mask in (np.zeros((5, 7), bool), np.ones((4, 4), bool), np.zeros((1, 1), bool)):
        assert np.array_equal(S._fill_binary_holes(mask, 10), _fill_binary_holes_oracle(mask, 10))


def _hist_cases(rng):
    yield rng.random(1000)
    yield rng.normal(0.3, 0.1, 70_000)                      # more than one of NumPy's 65,536 blocks
    yield np.round(rng.random(5000) * 7) / 7                # values on the bin edges
    yield np.linspace(-3.0, 5.0, 4097)                      # evenly spaced: many exactly on edges
    yield (rng.integers(0, 4096, 20_000) / 65535.0)          # 12-bit data on CellProfiler's scale
    yield rng.random(3) * 1e-12 + 1.0                       # a tiny range
    yield np.array([0.0, 1.0])
    yield np.array([2.0, 2.0, 2.0 + 2 ** -40])
    yield np.float32(rng.random(30_000)).astype(np.float64) / np.float32(0.37)


def test_uniform_histogram_equals_numpy():
    rng = np.random.default_rng(4)
    for a in _hist_cases(rng):
        for nbins in (256, 128, 7, 1):
            counts, edges = K.uniform_histogram(a, nbins)
            ref, ref_edges = np.histogram(a, bins=nbins)
            assert np.array_equal(counts, ref) and np.array_equal(edges.view(np.int64), ref_edges.view(np.int64))


def test_otsu_equals_skimage():
    from skimage import filters
    rng = np.random.default_rng(5)
    for a in _hist_cases(rng):
        assert np.float64(S._otsu(a)).view(np.int64) == np.float64(filters.threshold_otsu(a)).view(np.int64)
        assert S.threshold_value(a, bounds=(-np.inf, np.inf)) == filters.threshold_otsu(a)
    with pytest.raises(ValueError):
        S._otsu(np.array([0.0, np.nan, 1.0]))


def test_uniform_histogram_refuses_what_numpy_refuses():
    for a in (np.array([1.0, np.nan]), np.array([0.0, np.inf]), np.array([1.0, 1.0 + 2 ** -52])):
        with pytest.raises(ValueError):
            np.histogram(a, bins=256)
        with pytest.raises(ValueError):
            K.uniform_histogram(a, 256)


def test_one_pass_label_kernels_equal_numpy():
    rng = np.random.default_rng(6)
    for t in range(60):
        h, w = (int(x) for x in rng.integers(1, 40, 2))
        n0 = int(rng.integers(0, 12))
        unedited = rng.integers(0, n0 + 1, (h, w)).astype(np.int32)
        keep = rng.random(n0 + 1) < 0.6
        keep[0] = False
        assert np.array_equal(K.keep_labels(unedited, keep), np.where(keep[unedited], unedited, 0).astype(np.int32))
        labels = np.where(rng.random((h, w)) < 0.5, unedited, 0).astype(np.int32)
        new = np.where(keep, np.cumsum(keep), 0).astype(np.int32)
        seed_map = rng.integers(0, 20, n0 + 1).astype(np.int32)
        nuclei, seeds = K.nuclei_and_seeds(labels, unedited, new, seed_map)
        ref_nuclei = new[labels]
        assert np.array_equal(nuclei, ref_nuclei)
        assert np.array_equal(seeds, np.where(ref_nuclei > 0, ref_nuclei, seed_map[unedited]).astype(np.int32))
        cells = rng.integers(0, 15, (h, w)).astype(np.int32)
        ref = cells.copy()
        nmax = int(rng.integers(0, 10))
        ref[ref > nmax] = 0
        ref[nuclei > 0] = nuclei[nuclei > 0]
        K.finish_cells(cells, nuclei, nmax)
        assert np.array_equal(cells, ref)
        assert np.array_equal(S.cytoplasm(cells, nuclei), np.where(nuclei > 0, 0, cells).astype(np.int32))
        seeds2 = rng.integers(-2, 6, (h, w)).astype(np.int32)
        ref = cells.copy()
        ref[seeds2 > 0] = seeds2[seeds2 > 0]
        K.paste_seeds(cells, seeds2)
        assert np.array_equal(cells, ref)
    c64, n16 = rng.integers(0, 9, (5, 6)), rng.integers(0, 3, (5, 6)).astype(np.uint16)
    assert np.array_equal(S.cytoplasm(c64, n16), np.where(n16 > 0, 0, c64).astype(np.int32))
    assert S.cytoplasm(c64, n16).dtype == np.int32


# the smoothers before the compiled kernel (profiler/segment.py at 5064064), kept as the oracles
def _smooth_for_threshold_oracle(image, scale):
    sigma = scale / 0.6744 / 2.0
    img = ndi.gaussian_filter(image.astype(np.float32), sigma, mode="constant", cval=0)
    rows = ndi.gaussian_filter1d(np.ones(image.shape[0]), sigma, mode="constant", cval=0)
    cols = ndi.gaussian_filter1d(np.ones(image.shape[1]), sigma, mode="constant", cval=0)
    return img / (np.outer(rows, cols) + np.finfo(float).eps)


def _cp_gaussian_smooth_oracle(image, filter_size):
    sigma = filter_size / 2.35
    half = max(int(float(filter_size) / 2.0), 1)
    x = np.arange(-half, half + 1)
    f = np.exp(-0.5 * x ** 2 / sigma ** 2) / np.sqrt(2.0 * np.pi) / sigma
    img = ndi.convolve1d(ndi.convolve1d(image.astype(np.float32), f, axis=0, mode="constant"),
                         f, axis=1, mode="constant")
    rows = ndi.convolve1d(np.ones(image.shape[0]), f, mode="constant")
    cols = ndi.convolve1d(np.ones(image.shape[1]), f, mode="constant")
    return img / np.outer(rows, cols)


def _bits(a):
    return np.ascontiguousarray(a, np.float64).view(np.int64)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (3, 4), (17, 23), (64, 80), (700, 900)])
def test_smoothing_kernel_equals_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    images = [rng.random(shape), (rng.integers(0, 4096, shape) / 65535.0),
              rng.normal(0.0, 1.0, shape).astype(np.float32), np.zeros(shape)]
    for img in images:
        for scale in (1.3488, 0.5, 3.0, 7.7):
            assert np.array_equal(_bits(S._smooth_for_threshold(img, scale)),
                                  _bits(_smooth_for_threshold_oracle(img, scale))), (shape, scale)
        for size in (2.35 * 15 / 3.5, 1.0, 2.5, 9.0, 20.0):
            assert np.array_equal(_bits(S._cp_gaussian_smooth(img, size)),
                                  _bits(_cp_gaussian_smooth_oracle(img, size))), (shape, size)


def test_cubic_spline_filter_equals_scipy():
    rng = np.random.default_rng(9)
    sizes = [1, 2, 3, 4, 5, 8, 9, 17, 40]
    for h in sizes:
        for w in sizes:
            for data in (rng.random((h, w)), rng.random((h, w)) < 0.1, rng.normal(0, 1e3, (h, w))):
                for mode in ("mirror", "constant"):
                    ref = ndi.spline_filter(np.asarray(data, float), 3, output=np.float64, mode=mode)
                    assert np.array_equal(_bits(K.cubic_spline_filter(data)), _bits(ref)), (h, w, mode)
    big = ndi.gaussian_filter(rng.random((700, 900)), 3.0)        # lines long enough for z^n to underflow
    assert np.array_equal(_bits(K.cubic_spline_filter(big)),
                          _bits(ndi.spline_filter(big, 3, output=np.float64, mode="constant")))


# ---------------------------------------------------------------------------------------------
# propagation: the kernel before the padded, sentinel-labelled one (keys label · m·n + i·n + j), kept
# as the oracle of the queue order

@numba.njit(cache=False, nogil=True)
def _propagate_oracle_kernel(image, seeds, mask, weight, pad, labels, dist):
    """Priority-queue propagation; the queue is ordered by (distance, label, row, column) as in CellProfiler.
    ``pad`` ((m + 2, n + 2), the image's dtype), ``labels`` and ``dist`` are filled here (allocated by NumPy)."""
    m, n = image.shape
    mn = np.int64(m) * np.int64(n)
    # edge-replicated border = CellProfiler's clamped fetch; float32 when the image is float32 (half
    # the memory on the wave front's scattered reads; the differences are taken in float64 either way)
    for i in range(m + 2):
        ii = min(max(i - 1, 0), m - 1)
        for j in range(n + 2):
            pad[i, j] = image[ii, min(max(j - 1, 0), n - 1)]
    for i in range(m):
        for j in range(n):
            labels[i, j] = 0
            dist[i, j] = -1.0
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
                dist[i, j] = 0.0
                run[r] = np.int64(seeds[i, j]) * mn + np.int64(i) * n + j
                r += 1
    run.sort()
    rpos = 0
    cap = 4096
    hd = np.empty(cap, np.float64)
    hk = np.empty(cap, np.int64)
    size = 0
    di = (-1, -1, -1, 0, 0, 1, 1, 1)
    dj = (-1, 0, 1, -1, 1, -1, 0, 1)
    w2 = weight * weight
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
                S._sift_down(hd, hk, 0, size)
        lab = key // mn
        rem = key - lab * mn
        i1 = rem // n
        j1 = rem - i1 * n
        if labels[i1, j1] != 0:
            continue
        labels[i1, j1] = lab
        d0 = dist[i1, j1]
        for q in range(8):
            i2 = i1 + di[q]
            j2 = j1 + dj[q]
            if i2 < 0 or i2 >= m or j2 < 0 or j2 >= n:
                continue
            if labels[i2, j2] > 0 or not mask[i2, j2]:
                continue
            diff = 0.0
            for a in range(3):
                for b in range(3):
                    diff += abs(np.float64(pad[i1 + a, j1 + b]) - np.float64(pad[i2 + a, j2 + b]))
            manhattan = 1.0 if (di[q] == 0 or dj[q] == 0) else 2.0
            d = np.sqrt(diff * diff + manhattan * w2) + d0
            if dist[i2, j2] == -1.0 or dist[i2, j2] > d:
                dist[i2, j2] = d
                if size == cap:
                    cap *= 2
                    nd = np.empty(cap, np.float64)
                    nk = np.empty(cap, np.int64)
                    nd[:size] = hd[:size]
                    nk[:size] = hk[:size]
                    hd, hk = nd, nk
                nkey = lab * mn + np.int64(i2) * n + j2
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


def _propagate_oracle(image, seeds, mask, regularization):
    image = np.asarray(image)
    image32 = np.ascontiguousarray(image, np.float32)
    image = image32 if np.array_equal(image32, image) else np.ascontiguousarray(image, np.float64)
    seeds = np.ascontiguousarray(seeds, np.int32)
    pad = np.empty((image.shape[0] + 2, image.shape[1] + 2), image.dtype)
    labels = np.empty(image.shape, np.int32)
    dist = np.empty(image.shape, np.float64)
    _propagate_oracle_kernel(image, seeds, np.ascontiguousarray(mask, np.bool_), float(regularization), pad,
                             labels, dist)
    K.paste_seeds(labels, seeds)
    return labels, dist


def _same_propagation(image, seeds, mask, regularization=0.05):
    got = S.propagate(image, seeds, mask, regularization)
    want = _propagate_oracle(image, seeds, mask, regularization)
    assert np.array_equal(got[0], want[0]) and got[0].dtype == want[0].dtype
    assert np.array_equal(got[1].view(np.int64), want[1].view(np.int64))


def test_propagation_equals_the_previous_kernel_on_ties_and_masks():
    rng = np.random.default_rng(21)
    for t in range(60):
        img, markers, mask = _random_case(rng, t)
        if t % 3 == 0:
            img = img.astype(np.float32)                  # the float32 path
        if t % 4 == 1:
            markers[~mask & (rng.random(mask.shape) < 0.05)] = 7   # seeds outside the mask
        _same_propagation(img, markers, mask, (0.05, 0.0, 1.0)[t % 3])


def test_propagation_equals_the_previous_kernel_on_a_real_field():
    from conftest import require_shared
    from profiler.config import load_pipeline
    from profiler.plate import read_image

    folder = require_shared("bbbc021", "fields", "Week2", "Week2_24381")
    cfg = load_pipeline("bbbc021")
    files = {ch: sorted(folder.glob(f"*_s1_{spec}*.tif"))[0] for ch, spec in (("DAPI", "w1"), ("Actin", "w4"))}
    images = {ch: read_image(f) for ch, f in files.items()}
    nuclei, seeds, _ = S._identify_primary(np.asarray(images["DAPI"], np.float64),
                                          S._params("nuclei", cfg.section("segmentation")["nuclei"]))
    cell_params = S._params("cells", cfg.section("segmentation")["cells"])
    binary, _ = S._threshold_image(np.asarray(images["Actin"], np.float64), cell_params)
    _same_propagation(images["Actin"], seeds, binary, cell_params["regularization"])
