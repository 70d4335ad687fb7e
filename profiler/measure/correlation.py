"""Correlation — CellProfiler's MeasureColocalization within objects, for every pair of channels.

For channels ``a``, ``b`` (in the order of ``images``; every pair i < j, as CellProfiler), per object:

* ``Correlation_Correlation_a_b`` — Pearson correlation of the two channels over the object's pixels
  (NaN for a constant channel: 0/0, as CellProfiler);
* thresholds: 15 % (``threshold_percentage``) of the object's own maximum in each channel; a pixel
  is "above" when ≥ that value;
* ``Correlation_Manders_a_b`` — Σ a over pixels above both thresholds / Σ a over pixels above a's
  threshold (and ``_Manders_b_a`` symmetrically);
* ``Correlation_RWC_a_b`` — like Manders, each pixel weighted by (R − |rank_a − rank_b|) / R, where
  ranks are *dense ranks of the intensities over all objects of the label image together*
  (CellProfiler's convention, so an object's RWC depends on its neighbours) and R = max rank + 1;
* ``Correlation_Overlap_a_b`` — Σ ab / sqrt(Σ a² · Σ b²) over pixels above both thresholds;
  ``Correlation_K_a_b`` = Σ ab / Σ a², ``Correlation_K_b_a`` = Σ ab / Σ b² (same pixels);
* ``Correlation_Costes_a_b`` — Manders with Costes' automatic thresholds. As in CellProfiler the
  threshold pair is found **once per channel pair over the whole image** (all pixels, not only the
  objects) and then applied inside every object. Method ``"faster"`` (CellProfiler 5's default,
  a bisection over candidate thresholds k / scale), ``"fast"`` or ``"accurate"`` (linear search);
  ``costes_scale`` is the image's dtype maximum (255 for 8-bit, 65535 for 16-bit data); ``"auto"``
  picks 255 when every pixel lies on the 8-bit grid, 65535 otherwise.

CellProfiler writes no per-object Slope (only an image-level one), so neither do we. When no pixel
of the whole label image is above both thresholds, Manders, RWC, Overlap and K are 0 for every
object (CellProfiler's convention); an object with no such pixel gets 0 (Manders, RWC) or NaN
(Overlap, K: 0/0). Objects absent from the label image get NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numba
import numpy as np

from profiler.measure._radix import value_order_f32
from profiler.measure._util import ImageCache, LabelContext, label_context
from profiler.measure.registry import FeatureDoc, register

_COSTES_METHODS = ("faster", "fast", "accurate")

_DOCS = [
    FeatureDoc("Correlation_Correlation_{a}_{b}", "Pearson correlation of channels a and b over the object's pixels",
               "dimensionless"),
    FeatureDoc("Correlation_Manders_{a}_{b}", "Manders' coefficient: fraction of a's above-threshold intensity in "
               "pixels where b is also above threshold (thresholds: 15 % of the object's max)", "dimensionless"),
    FeatureDoc("Correlation_RWC_{a}_{b}", "rank-weighted colocalization (ranks over all objects of the image)",
               "dimensionless"),
    FeatureDoc("Correlation_Overlap_{a}_{b}", "overlap coefficient Σab / sqrt(Σa²Σb²) over above-threshold pixels",
               "dimensionless"),
    FeatureDoc("Correlation_K_{a}_{b}", "Σab / Σa² over above-threshold pixels", "dimensionless"),
    FeatureDoc("Correlation_Costes_{a}_{b}", "Manders' coefficient with Costes' automatic thresholds (found once "
               "over the whole image)", "dimensionless"),
]


# --------------------------------------------------------------------------- Costes thresholds (whole image)

@numba.njit(cache=True, nogil=True, inline="always")
def _add_moments(out: np.ndarray, u: float, v: float, w: float) -> None:  # pragma: no cover - numba
    """out += w · (1, u, v, u², v², uv): the running sums behind a Pearson r (w = ±1)."""
    out[0] += w
    out[1] += w * u
    out[2] += w * v
    out[3] += w * u * u
    out[4] += w * v * v
    out[5] += w * u * v


@numba.njit(cache=True, nogil=True)
def _subset_sums(x: np.ndarray, y: np.ndarray, t1: float, t2: float, mx: float, my: float,
                 out: np.ndarray) -> None:  # pragma: no cover - numba
    """out += (n, Σu, Σv, Σu², Σv², Σuv) over pixels with x < t1 or y < t2 (u = x − mx, v = y − my)."""
    # the running sums in locals (the same additions in the same order as into ``out``)
    s0, s1, s2, s3, s4, s5 = out[0], out[1], out[2], out[3], out[4], out[5]
    for k in range(x.shape[0]):
        xv = x[k]
        yv = y[k]
        if xv < t1 or yv < t2:
            u = xv - mx
            v = yv - my
            s0 += 1.0
            s1 += 1.0 * u
            s2 += 1.0 * v
            s3 += 1.0 * u * u
            s4 += 1.0 * v * v
            s5 += 1.0 * u * v
    out[0], out[1], out[2], out[3], out[4], out[5] = s0, s1, s2, s3, s4, s5


def _pearson_from_sums(s: np.ndarray) -> tuple[int, float]:
    """(count, r) from the sums (n, Σx, Σy, Σx², Σy², Σxy); r NaN when n < 2 or an input is constant."""
    n = int(round(s[0]))
    if n < 2:
        return n, float("nan")
    cov = s[5] - s[1] * s[2] / n
    vx = s[3] - s[1] * s[1] / n
    vy = s[4] - s[2] * s[2] / n
    if vx <= 0 or vy <= 0:
        return n, float("nan")
    return n, cov / np.sqrt(vx * vy)


class _Subsets:
    """Pearson r of the pixels with x < t1 or y < t2 (one numba pass per candidate threshold pair)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, sorts=None, means: tuple[float, float] | None = None):
        """``sorts`` is ignored (the direct pass needs no pixel order; same signature as
        :class:`_BandSubsets`); ``means``: (x.mean(), y.mean()) when already known."""
        self.mx, self.my = (float(x.mean()), float(y.mean())) if means is None else means
        self.x, self.y = x, y
        self.base = np.zeros(6)

    def pearson(self, t1: float, t2: float) -> tuple[int, float]:
        """(count, r), r NaN for a constant input (as scipy.stats.pearsonr)."""
        s = self.base.copy()
        _subset_sums(self.x, self.y, _f32(t1), _f32(t2), self.mx, self.my, s)
        return _pearson_from_sums(s)


_BUCKETS = 65536
#: r values the Costes searches compare with (r < 0, r > 0.45 …): an r this close to one is recomputed
#: by a direct pass, so every decision is the one the direct pass would make
_R_BOUNDARIES = np.array([0.0, 0.25, 0.35, 0.45])
_R_TOLERANCE = 1e-6


@numba.njit(cache=True, nogil=True)
def _bucket(v: float, lo: float, scale: float, nb: int) -> int:  # pragma: no cover - numba
    """floor((v − lo) · scale) clamped to 0 … nb − 1: non-decreasing in v, so a value below a
    threshold never lies in a higher bucket than the threshold's."""
    if not v > lo:
        return 0
    q = (v - lo) * scale
    if q >= nb - 1:
        return nb - 1
    return int(q)


@numba.njit(cache=True, nogil=True)
def _bucket_sort(a: np.ndarray, b: np.ndarray, lo: float, scale: float, nb: int):  # pragma: no cover - numba
    """``a`` and ``b`` reordered so that ``a``'s pixels are grouped by :func:`_bucket` (counting sort;
    any order within a bucket), and where each bucket starts (length nb + 1)."""
    n = a.shape[0]
    bk = np.empty(n, np.int32)
    start = np.zeros(nb + 1, np.int64)
    for k in range(n):
        q = _bucket(a[k], lo, scale, nb)
        bk[k] = q
        start[q + 1] += 1
    for q in range(nb):
        start[q + 1] += start[q]
    a_s = np.empty(n, a.dtype)
    b_s = np.empty(n, b.dtype)
    fill = start[:nb].copy()
    for k in range(n):
        q = bk[k]
        a_s[fill[q]] = a[k]
        b_s[fill[q]] = b[k]
        fill[q] += 1
    return a_s, b_s, start


@numba.njit(cache=True, nogil=True)
def _bucket_starts(a_sorted: np.ndarray, lo: float, scale: float, nb: int) -> np.ndarray:  # pragma: no cover
    """Where each :func:`_bucket` starts (length nb + 1) in values sorted in ascending order."""
    start = np.zeros(nb + 1, np.int64)
    for k in range(a_sorted.shape[0]):
        start[_bucket(a_sorted[k], lo, scale, nb) + 1] += 1
    for q in range(nb):
        start[q + 1] += start[q]
    return start


@numba.njit(cache=True, nogil=True)
def _gather_range(out: np.ndarray, b: np.ndarray, order: np.ndarray, lo: int, hi: int) -> None:  # pragma: no cover
    for k in range(lo, hi):
        out[k] = b[order[k]]


class _LazyGather:
    """``b[order]``, filled from the end down as far as it is asked for (:meth:`upto`)."""

    def __init__(self, b: np.ndarray, order: np.ndarray):
        self.b, self.order = b, order
        self.out = np.empty(order.shape[0], b.dtype)
        self.done = order.shape[0]  # out[done:] is filled

    def upto(self, lo: int) -> np.ndarray:
        """The array, with out[lo:] filled (entries below ``done`` are not to be read)."""
        if lo < self.done:
            _gather_range(self.out, self.b, self.order, lo, self.done)
            self.done = lo
        return self.out


class _ValueSort:
    """A float32 channel off the 16-bit grid with its pixels in value order (once per image and
    site, :func:`_value_sort_cached`): ``codes`` (dense rank of each pixel's value, for RWC),
    ``order`` (positions in value order), ``sorted`` (the values in that order) and, for the Costes
    search, the start of each of :func:`_bucket`'s value buckets in that order."""

    def __init__(self, img32: np.ndarray, codes: np.ndarray, order: np.ndarray, sorted_values: np.ndarray):
        self.img32, self.codes, self.order, self.sorted = img32, codes, order, sorted_values
        self.n_codes = int(codes[order[-1]]) + 1 if order.size else 0
        self._side = None

    def side(self) -> tuple:
        """(sorted values, start of each bucket, lo, scale) as :meth:`_BandSubsets._side` groups them."""
        if self._side is None:
            v = self.sorted
            lo, hi = (float(v[0]), float(v[-1])) if v.size else (0.0, 0.0)
            scale = (_BUCKETS - 1) / (hi - lo) if hi > lo else 0.0
            self._side = (v, _bucket_starts(v, lo, scale, _BUCKETS), lo, scale)
        return self._side


def _value_sort_cached(cache: ImageCache, img: np.ndarray) -> _ValueSort | None:
    """The channel's :class:`_ValueSort` (of its float32 values, by
    :func:`profiler.measure._radix.value_order_f32`), once per image and site; None when it has NaN."""

    def make() -> _ValueSort | None:
        img32 = np.ascontiguousarray(img, dtype=np.float32).ravel()
        ok, codes, order, values = value_order_f32(img32.view(np.uint32))
        return _ValueSort(img32, codes, order, values) if ok else None

    return cache.get("correlation_value_sort", (img,), (), make)


@numba.njit(cache=True, nogil=True)
def _band_sums(u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray, q_lo: int, q_hi: int,
               start: np.ndarray, a_lo: float, a_hi: float, b_t: float, mx: float, my: float,
               out: np.ndarray, sign: float) -> None:  # pragma: no cover - numba
    """out += sign · (n, Σu', Σv', Σu'², Σv'², Σu'v') (u' = u − mx, v' = v − my) over the pixels of
    buckets q_lo … q_hi with a_lo ≤ a < a_hi and not b < b_t (arrays in one channel's bucket order;
    ``a``/``b`` are ``u``/``v`` in either role)."""
    # the running sums in locals (the same additions in the same order as into ``out``)
    s0, s1, s2, s3, s4, s5 = out[0], out[1], out[2], out[3], out[4], out[5]
    for k in range(start[q_lo], start[q_hi + 1]):
        av = a[k]
        if av >= a_lo and av < a_hi and not b[k] < b_t:
            uk = u[k] - mx
            vk = v[k] - my
            s0 += sign
            s1 += sign * uk
            s2 += sign * vk
            s3 += sign * uk * uk
            s4 += sign * vk * vk
            s5 += sign * uk * vk
    out[0], out[1], out[2], out[3], out[4], out[5] = s0, s1, s2, s3, s4, s5


class _BandSubsets:
    """Pearson r of the pixels with x < t1 or y < t2 for data off the 16-bit grid (illumination-
    corrected images) without a pass over all pixels per candidate threshold pair.

    The sums over that set are the sums over all pixels minus those over the quadrant
    {x ≥ t1, y ≥ t2}. The quadrant's sums are carried from one candidate to the next: moving t2
    (then t1) adds or removes the band of pixels between the old and the new threshold, found by a
    counting sort of each channel into 65,536 value buckets (the band's end buckets are checked pixel
    by pixel). The searches' candidates converge, so the bands shrink. The sums differ from a direct
    pass (:class:`_Subsets`) only by rounding; an r within 1e-6 of a value the searches compare it with
    (0, 0.25, 0.35, 0.45), a NaN or a near-constant subset is recomputed by that direct pass, so the
    thresholds found are the direct pass's.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, sorts: tuple[_ValueSort, _ValueSort] | None = None,
                 means: tuple[float, float] | None = None):
        self.exact = _Subsets(x, y, None, means)
        self.mx, self.my = self.exact.mx, self.exact.my
        self.total = np.zeros(6)
        _subset_sums(x, y, np.inf, np.inf, self.mx, self.my, self.total)
        self.sides = None
        if x.size and np.isfinite(self.total).all() and self.total[0] == x.size:  # every pixel finite
            if sorts is None:
                self.sides = (self._side(x, y), self._side(y, x))
            else:  # the channels' value orders (shared with RWC and the other pairs) group the buckets
                self.sides = (self._sorted_side(*sorts), self._sorted_side(*sorts[::-1]))
        self.t1 = self.t2 = np.inf
        self.quadrant = np.zeros(6)  # sums over {x ≥ t1, y ≥ t2}: empty at (inf, inf)

    @staticmethod
    def _side(a: np.ndarray, b: np.ndarray) -> tuple:
        lo, hi = float(a.min()), float(a.max())
        scale = (_BUCKETS - 1) / (hi - lo) if hi > lo else 0.0
        a_s, b_s, start = _bucket_sort(a, b, lo, scale, _BUCKETS)
        return a_s, b_s, start, lo, scale

    @staticmethod
    def _sorted_side(a: _ValueSort, b: _ValueSort) -> tuple:
        """:meth:`_side` from ``a``'s value order: the pixels of each bucket in ascending value
        order instead of raster order (the sums differ only by rounding, which the tolerance covers).
        The other channel's values in that order are gathered lazily (:meth:`_ready`), from the top
        bucket down to the lowest one a band reaches: the searches rarely go far below the final
        thresholds."""
        a_s, start, lo, scale = a.side()
        return a_s, _LazyGather(b.img32, a.order), start, lo, scale

    @staticmethod
    def _ready(b_s, start: np.ndarray, q_lo: int) -> np.ndarray:
        """``b_s`` as an array holding at least the pixels from bucket ``q_lo`` up."""
        if isinstance(b_s, _LazyGather):
            return b_s.upto(int(start[q_lo]))
        return b_s

    def _move(self, t1: float, t2: float) -> None:
        (xs, y_by_x, xstart, xlo, xscale), (ys, x_by_y, ystart, ylo, yscale) = self.sides
        q, mx, my = self.quadrant, self.mx, self.my
        if t2 != self.t2 and self.t1 != np.inf:  # {x ≥ t1_old}: y band between the two t2
            lo, hi = min(t2, self.t2), max(t2, self.t2)
            q_lo = _bucket(lo, ylo, yscale, _BUCKETS)
            xy = self._ready(x_by_y, ystart, q_lo)
            _band_sums(xy, ys, ys, xy, q_lo, _bucket(hi, ylo, yscale, _BUCKETS), ystart, lo, hi, self.t1,
                       mx, my, q, 1.0 if t2 < self.t2 else -1.0)
        if t1 != self.t1:  # {y ≥ t2}: x band between the two t1
            lo, hi = min(t1, self.t1), max(t1, self.t1)
            q_lo = _bucket(lo, xlo, xscale, _BUCKETS)
            yx = self._ready(y_by_x, xstart, q_lo)
            _band_sums(xs, yx, xs, yx, q_lo, _bucket(hi, xlo, xscale, _BUCKETS), xstart, lo, hi, t2,
                       mx, my, q, 1.0 if t1 < self.t1 else -1.0)
        self.t1, self.t2 = t1, t2

    def pearson(self, t1: float, t2: float) -> tuple[int, float]:
        t1, t2 = _f32(t1), _f32(t2)
        if self.sides is None or np.isnan(t1) or np.isnan(t2):
            return self.exact.pearson(t1, t2)
        self._move(t1, t2)
        s = self.total - self.quadrant
        n, r = _pearson_from_sums(s)
        if n >= 2:
            vx, vy = s[3] - s[1] * s[1] / n, s[4] - s[2] * s[2] / n
            if (not np.isfinite(r) or np.abs(_R_BOUNDARIES - r).min() < _R_TOLERANCE
                    or vx <= _R_TOLERANCE * s[3] or vy <= _R_TOLERANCE * s[4] or n < 0.01 * self.total[0]):
                return self.exact.pearson(t1, t2)
        return n, r


_GRID_LEVELS = 65536
_GRID = np.arange(_GRID_LEVELS, dtype=np.float32) / np.float32(_GRID_LEVELS - 1)  # raw / 65535, as read


@numba.njit(cache=True, nogil=True)
def _levels_build(x: np.ndarray, table: np.ndarray):  # pragma: no cover - numba
    """16-bit level of every pixel of ``x`` (float32 on the raw / 65535 grid) and the pixels sorted
    by level (counting sort). Returns ok (every pixel on the grid), levels, order, and the number of
    pixels below each level (length L + 1)."""
    n = x.shape[0]
    L = table.shape[0]
    lv = np.empty(n, dtype=np.uint16)
    cnt = np.zeros(L + 1, dtype=np.int64)
    for k in range(n):
        a = int(x[k] * (L - 1) + 0.5)
        if a < 0 or a >= L or table[a] != x[k]:
            return False, lv[:0], np.empty(0, dtype=np.int32), cnt
        lv[k] = a
        cnt[a + 1] += 1
    for v in range(L):
        cnt[v + 1] += cnt[v]
    order = np.empty(n, dtype=np.int32)
    fill = cnt[:L].copy()
    for k in range(n):
        p = fill[lv[k]]
        fill[lv[k]] += 1
        order[p] = k
    return True, lv, order, cnt


class _Levels:
    """A channel on the 16-bit grid: per-pixel levels, the pixels sorted by level, level counts."""

    def __init__(self, lv: np.ndarray, order: np.ndarray, below: np.ndarray):
        self.lv, self.order, self.below = lv, order, below
        self.sorted_lv = lv[order]
        n = max(int(below[-1]), 1)
        self.mean = float(np.dot(np.diff(below).astype(np.float64), _GRID.astype(np.float64)) / n)

    @classmethod
    def build(cls, img: np.ndarray) -> _Levels | None:
        x = np.ascontiguousarray(img, dtype=np.float32).ravel()
        ok, lv, order, below = _levels_build(x, _GRID.astype(np.float64))
        return cls(lv, order, below) if ok else None


def _levels_cached(cache: ImageCache, img: np.ndarray) -> _Levels | None:
    """The channel's :class:`_Levels` (None off the 16-bit grid or not float32), once per image and site."""
    return cache.get("correlation_levels", (img,), (),
                     lambda: _Levels.build(img) if np.asarray(img).dtype == np.float32 else None)


@numba.njit(cache=True, nogil=True)
def _level_prefix(lx: np.ndarray, ly: np.ndarray, below: np.ndarray, grid: np.ndarray, mx: float,
                  my: float) -> np.ndarray:  # pragma: no cover
    """P[l] = (n, Σu, Σv, Σu², Σv², Σuv) (u = x − mx, v = y − my; x = grid[lx], y = grid[ly]) over the
    pixels whose sort level is < l; pixels given in sort-level order, ``below`` = pixels below each level."""
    L = below.shape[0] - 1
    P = np.zeros((L + 1, 6))
    s = np.zeros(6)
    for lev in range(L):
        for k in range(below[lev], below[lev + 1]):
            _add_moments(s, grid[lx[k]] - mx, grid[ly[k]] - my, 1.0)
        for j in range(6):
            P[lev + 1, j] = s[j]
    return P


@numba.njit(cache=True, nogil=True)
def _level_scan(lx: np.ndarray, ly: np.ndarray, cond: np.ndarray, lo: int, hi: int, bound: int,
                grid: np.ndarray, mx: float, my: float, out: np.ndarray, sign: float) -> None:  # pragma: no cover
    """out += sign · (n, Σu, Σv, Σu², Σv², Σuv) over positions lo..hi with cond < bound."""
    for k in range(lo, hi):
        if cond[k] < bound:
            _add_moments(out, grid[lx[k]] - mx, grid[ly[k]] - my, sign)


class _LevelSubsets:
    """Pearson r of the pixels with x < t1 or y < t2 for data on the 16-bit grid, without a pass over
    all pixels per candidate.

    With the pixels sorted by x level (and, separately, by y level), the sums over {x < t1} and
    {y < t2} are prefix sums over levels; of the four ways to complete them, the one that scans the
    fewest pixels is used. The level order of each channel is computed once per image and shared by
    its channel pairs.
    """

    _G = _GRID.astype(np.float64)

    def __init__(self, X: _Levels, Y: _Levels):
        self.n = X.lv.shape[0]
        self.X, self.Y = X, Y
        self.mx, self.my = X.mean, Y.mean
        self.x_ly = Y.lv[X.order]  # y levels of the pixels in x order
        self.y_lx = X.lv[Y.order]  # x levels of the pixels in y order
        self.Px = _level_prefix(X.sorted_lv, self.x_ly, X.below, self._G, self.mx, self.my)
        self.Py = _level_prefix(self.y_lx, Y.sorted_lv, Y.below, self._G, self.mx, self.my)

    @staticmethod
    def _level(t: float) -> int:
        """Number of grid levels whose float32 value is < t (CellProfiler compares in float32)."""
        if np.isnan(t):
            return 0
        return int(np.searchsorted(_GRID, np.float32(_f32(t)), side="left"))

    def sums(self, t1: float, t2: float) -> np.ndarray:
        M, K = self._level(t1), self._level(t2)
        X, Y, n, g, mx, my = self.X, self.Y, self.n, self._G, self.mx, self.my
        ax, ay = int(X.below[M]), int(Y.below[K])  # pixels with x < t1, with y < t2
        best = min(n - ax, ax, n - ay, ay)
        if best == n - ax:  # {x<t1} + {x≥t1, y<t2}
            out = self.Px[M].copy()
            _level_scan(X.sorted_lv, self.x_ly, self.x_ly, ax, n, K, g, mx, my, out, 1.0)
        elif best == ax:  # {x<t1} + {y<t2} − {x<t1, y<t2}
            out = self.Px[M] + self.Py[K]
            _level_scan(X.sorted_lv, self.x_ly, self.x_ly, 0, ax, K, g, mx, my, out, -1.0)
        elif best == n - ay:  # {y<t2} + {y≥t2, x<t1}
            out = self.Py[K].copy()
            _level_scan(self.y_lx, Y.sorted_lv, self.y_lx, ay, n, M, g, mx, my, out, 1.0)
        else:  # {y<t2} + {x<t1} − {x<t1, y<t2}
            out = self.Py[K] + self.Px[M]
            _level_scan(self.y_lx, Y.sorted_lv, self.y_lx, 0, ay, M, g, mx, my, out, -1.0)
        return out

    def pearson(self, t1: float, t2: float) -> tuple[int, float]:
        return _pearson_from_sums(self.sums(t1, t2))


def _float32_stats(x: np.ndarray) -> tuple[float, float, bool]:
    """(variance (ddof 1), mean, every pixel > 0) of a channel's float32 pixels, as :func:`_regression`
    computes them."""
    xs = np.asarray(x, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.var(xs, ddof=1)), float(xs.mean()), bool(xs.size and xs.min() > 0)


def _regression(x: np.ndarray, y: np.ndarray, stats: tuple | None = None) -> tuple[float, float]:
    """Orthogonal-regression line y = a·x + b over pixels where either channel is non-zero (CP).

    Variances and means are taken on the float32 pixels (as CellProfiler), the rest in float64.
    ``stats``: the channels' :func:`_float32_stats` (shared by a channel's pairs), used when every
    pixel of one of them is > 0.
    """
    if stats is not None and (stats[0][2] or stats[1][2]):  # every pixel counts: no mask
        (xvar, xmean, _), (yvar, ymean, _) = stats
        xs, ys = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
    else:
        nz = (x > 0) | (y > 0)
        if nz.all():  # no copy (the usual case: no pixel is 0 in both channels)
            xs, ys = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
        else:
            xs, ys = np.asarray(x[nz], dtype=np.float32), np.asarray(y[nz], dtype=np.float32)
        xvar, xmean, _ = _float32_stats(xs)
        yvar, ymean, _ = _float32_stats(ys)
    with np.errstate(divide="ignore", invalid="ignore"):
        zvar = float(np.var(xs + ys, ddof=1))
        covar = 0.5 * (zvar - (xvar + yvar))
        num = (yvar - xvar) + np.sqrt((yvar - xvar) ** 2 + 4 * covar * covar)
        a = np.float64(num) / np.float64(2 * covar)
        b = ymean - a * xmean
    return float(a), float(b)


def _f32(t: float) -> float:
    """A threshold as CellProfiler compares it with float32 pixels (NumPy 1 casts the scalar to float32)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.float32(t))


def costes_thresholds(x: np.ndarray, y: np.ndarray, scale: float = 255.0, method: str = "faster") -> tuple[float, float]:
    """Costes' automatic threshold pair over the pixels ``x``, ``y`` (CellProfiler 5's algorithms)."""
    X = Y = None
    if np.asarray(x).dtype == np.float32 and np.asarray(y).dtype == np.float32:
        X = _Levels.build(x)
        Y = _Levels.build(y) if X is not None else None
    return _costes(x, y, float(scale), method, X, Y)


def _costes(x: np.ndarray, y: np.ndarray, scale: float, method: str, X: _Levels | None,
            Y: _Levels | None, sorts: tuple[_ValueSort, _ValueSort] | None = None,
            stats: tuple | None = None, prepared: tuple | None = None) -> tuple[float, float]:
    """:func:`costes_thresholds` given the channels' 16-bit levels (None: off the grid, float path),
    optionally, off the grid, their value orders and the channels' :func:`_float32_stats` (``x``,
    ``y`` are then those channels' pixels); ``prepared``: off the grid, the channels'
    :class:`_Channel64` (float64 pixels, means and maxima shared by a channel's pairs)."""
    a, b = _regression(np.ravel(x), np.ravel(y), stats)
    if X is not None and Y is not None and X.lv.size:
        sub = _LevelSubsets(X, Y)
        x_max, y_max = float(_GRID[X.sorted_lv[-1]]), float(_GRID[Y.sorted_lv[-1]])
    else:
        if prepared is not None:
            cx, cy = prepared
            sub = _BandSubsets(cx.x64, cy.x64, sorts, (cx.mean, cy.mean))
            x_max, y_max = (cx.max(), cy.max()) if method != "faster" else (np.nan, np.nan)  # unused by "faster"
        else:
            x = np.ascontiguousarray(x, dtype=np.float64).ravel()
            y = np.ascontiguousarray(y, dtype=np.float64).ravel()
            sub = _BandSubsets(x, y, sorts)
            x_max, y_max = float(x.max()), float(y.max())
    if method == "faster":
        left, right = 1.0, scale
        mid = ((right - left) // (6 / 5)) + left
        lastmid, valid = 0.0, 1.0
        while lastmid != mid:
            t1 = mid / scale
            n, r = sub.pearson(t1, a * t1 + b)
            if n <= 2:
                left = mid - 1
            elif r < 0:
                left = mid - 1
            elif r >= 0:
                right = mid + 1
                valid = mid
            lastmid = mid
            if right - left > 6:
                mid = ((right - left) // (6 / 5)) + left
            else:
                mid = ((right - left) // 2) + left
        t1 = (valid - 1) / scale
        return _f32(t1), _f32(a * t1 + b)
    # linear search ("fast" skips candidates while r is far above 0, "accurate" tests them all)
    step = 1 / scale
    img_max = max(x_max, y_max)
    i = step * ((img_max // step) + 1)
    fi_max, si_max = x_max, y_max
    t1, t2 = i, a * i + b
    while i > fi_max and (a * i) + b > si_max:
        i -= step
    num_true, r = None, np.nan
    while i > step:
        t1, t2 = i, a * i + b
        n, r_new = sub.pearson(t1, t2)
        if n < 2:
            break
        if n != num_true:
            r, num_true = r_new, n
        if r <= 0:
            break
        if method == "accurate" or i < step * 10:
            i -= step
        elif r > 0.45:
            i -= step * 10
        elif r > 0.35:
            i -= step * 5
        elif r > 0.25:
            i -= step * 2
        else:
            i -= step
    return _f32(t1), _f32(t2)


def _infer_scale(*imgs: np.ndarray) -> float:
    """255 when every pixel lies on the 8-bit grid (k / 255), else 65535 (a sample is checked first)."""
    for img in imgs:
        flat = np.asarray(img).ravel()
        for v in (flat[:: max(1, flat.size // 4096)], flat):
            v = v.astype(np.float64) * 255.0
            if not np.allclose(v, np.rint(v), rtol=0, atol=1e-3):
                return 65535.0
    return 255.0


class _Channel64:
    """A channel's pixels as float64 for the Costes search off the 16-bit grid, with their mean,
    maximum and whether any is NaN (computed as the search computes them; once per image and site)."""

    def __init__(self, img: np.ndarray):
        flat = np.asarray(img).ravel()
        self.has_nan = bool(np.isnan(flat.sum()))
        self.x64 = np.ascontiguousarray(flat, dtype=np.float64)
        self.mean = float(self.x64.mean()) if not self.has_nan and flat.size else np.nan
        self._max = None

    def max(self) -> float:
        if self._max is None:
            self._max = float(self.x64.max())
        return self._max


def _channel64_cached(cache: ImageCache, img: np.ndarray) -> _Channel64:
    return cache.get("correlation_f64", (img,), (), lambda: _Channel64(img))


def _costes_cached(cache: ImageCache, img1: np.ndarray, img2: np.ndarray, scale,
                   method: str) -> tuple[float, float]:
    """Costes' threshold pair of a channel pair over the whole image, once per pair and site."""

    def _stats():  # each channel's variance and mean, shared by its pairs
        return tuple(cache.get("correlation_f32_stats", (img,), (), lambda img=img: _float32_stats(np.ravel(img)))
                     for img in (img1, img2))

    def make() -> tuple[float, float]:
        s = _infer_scale(img1, img2) if scale in (None, "auto") else float(scale)
        X, Y = _levels_cached(cache, img1), _levels_cached(cache, img2)
        x, y = np.asarray(img1).ravel(), np.asarray(img2).ravel()
        if X is not None and Y is not None:  # on the 16-bit grid: no NaN
            return _costes(x, y, s, method, X, Y, None, _stats()) if x.size else (np.inf, np.inf)
        cx, cy = _channel64_cached(cache, img1), _channel64_cached(cache, img2)
        if cx.has_nan or cy.has_nan:  # CellProfiler drops NaN pixels (none in real images)
            ok = ~(np.isnan(x) | np.isnan(y))
            x, y = x[ok], y[ok]
            return _costes(x, y, s, method, None, None) if x.size else (np.inf, np.inf)
        sorts = None
        if x.dtype == np.float32 and y.dtype == np.float32 and x.size:
            # the channels' value orders (shared with the RWC ranks and the other channel pairs)
            sx, sy = _value_sort_cached(cache, img1), _value_sort_cached(cache, img2)
            sorts = (sx, sy) if sx is not None and sy is not None else None
        return _costes(x, y, s, method, None, None, sorts, _stats(), (cx, cy)) if x.size else (np.inf, np.inf)

    return cache.get("correlation_costes", (img1, img2), (str(scale), method), make)


# --------------------------------------------------------------------------- per-object measures

def _dense_rank(v: np.ndarray) -> np.ndarray:
    """Dense rank (0 = smallest value) of ``v`` (CellProfiler's get_image_rank)."""
    if v.size == 0:
        return np.zeros(0, dtype=np.int64)
    levels = np.rint(v * 65535.0)
    if levels.min() >= 0 and levels.max() <= 65535 and np.array_equal((levels / 65535.0).astype(v.dtype), v):
        # data on the 16-bit grid (every real image): counting ranks, no sort
        lv = levels.astype(np.int64)
        present = np.zeros(65536, dtype=np.int64)
        present[lv] = 1
        return (np.cumsum(present) - 1)[lv]
    return np.unique(v, return_inverse=True)[1].reshape(-1)


@numba.njit(cache=True, nogil=True, inline="always")
def _popcount64(x):  # pragma: no cover - numba
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@numba.njit(cache=True, nogil=True)
def _compact_ranks(codes: np.ndarray, idx: np.ndarray, n_codes: int) -> np.ndarray:  # pragma: no cover
    """Dense rank of ``codes[idx]`` among the distinct codes present there (codes 0 … n_codes − 1):
    a bit set of the present codes and the count of set bits before each 64-bit word."""
    n_words = (n_codes + 63) // 64
    bits = np.zeros(n_words, np.uint64)
    for k in range(idx.shape[0]):
        c = codes[idx[k]]
        bits[c >> 6] |= np.uint64(1) << np.uint64(c & 63)
    before = np.empty(n_words, np.int64)
    r = 0
    for w in range(n_words):
        before[w] = r
        r += _popcount64(bits[w])
    out = np.empty(idx.shape[0], np.int64)
    for k in range(idx.shape[0]):
        c = codes[idx[k]]
        w = c >> 6
        out[k] = before[w] + _popcount64(bits[w] & ((np.uint64(1) << np.uint64(c & 63)) - np.uint64(1)))
    return out


def _object_ranks(img: np.ndarray, v: np.ndarray, idx: np.ndarray, levels: _Levels | None,
                  codes: np.ndarray | None = None, n_codes: int | None = None) -> np.ndarray:
    """Dense ranks of the object pixels ``v`` (= img at ``idx``) over all of them (:func:`_dense_rank`),
    from the channel's 16-bit levels when it has them, else from its dense codes over the whole
    image (:class:`_ValueSort`'s codes: the object pixels' distinct codes are in the order of their values;
    ``n_codes``: their number, computed when not given)."""
    if v.size == 0 or (levels is None and codes is None):
        return _dense_rank(v)
    if levels is not None:
        return _compact_ranks(levels.lv, np.asarray(idx, np.int64), _GRID_LEVELS)
    if n_codes is None:
        n_codes = int(codes.max()) + 1
    return _compact_ranks(codes, np.asarray(idx, np.int64), int(n_codes))


@numba.njit(cache=True, nogil=True)
def _channel_pass(img: np.ndarray, idx: np.ndarray, starts: np.ndarray, frac: np.float32):  # pragma: no cover
    """Object pixels of one channel (object by object): float64 values, "above 15 % of the object's
    max" (max and product in float32, as CellProfiler) and the per-object sum over those pixels."""
    n = starts.shape[0] - 1
    v = np.empty(idx.shape[0])
    above = np.zeros(idx.shape[0], dtype=np.bool_)
    thr_sum = np.zeros(n)
    for o in range(n):
        s0 = starts[o]
        s1 = starts[o + 1]
        if s1 == s0:
            continue
        mx = img[idx[s0]]
        for k in range(s0, s1):
            x = img[idx[k]]
            v[k] = x
            if x > mx:
                mx = x
        t = np.float32(frac * mx)
        s = 0.0
        for k in range(s0, s1):
            if img[idx[k]] >= t:
                above[k] = True
                s += v[k]
        thr_sum[o] = s
    return v, above, thr_sum


@numba.njit(cache=True, nogil=True)
def _pair_sums(x: np.ndarray, y: np.ndarray, starts: np.ndarray, above_x: np.ndarray, above_y: np.ndarray,
               rank_x: np.ndarray, rank_y: np.ndarray, R: float, t1: float, t2: float) -> np.ndarray:  # pragma: no cover
    """Per object: [Σdxdy, Σdx², Σdy², Σx|both, Σy|both, Σxw|both, Σyw|both, Σx²|both, Σy²|both, Σxy|both,
    Σx|costes-both, Σx|x≥t1, Σy|costes-both, Σy|y≥t2]  (both = above both 15 % thresholds)."""
    n = starts.shape[0] - 1
    out = np.zeros((n, 14))
    for o in range(n):
        s0 = starts[o]
        s1 = starts[o + 1]
        if s1 == s0:
            continue
        mx = 0.0
        my = 0.0
        for k in range(s0, s1):
            mx += x[k]
            my += y[k]
        mx /= s1 - s0
        my /= s1 - s0
        f = out[o]
        for k in range(s0, s1):
            xv = x[k]
            yv = y[k]
            dx = xv - mx
            dy = yv - my
            f[0] += dx * dy
            f[1] += dx * dx
            f[2] += dy * dy
            if above_x[k] and above_y[k]:
                w = (R - abs(rank_x[k] - rank_y[k])) / R
                f[3] += xv
                f[4] += yv
                f[5] += xv * w
                f[6] += yv * w
                f[7] += xv * xv
                f[8] += yv * yv
                f[9] += xv * yv
            cx = xv >= t1
            cy = yv >= t2
            if cx:
                f[11] += xv
            if cy:
                f[13] += yv
            if cx and cy:
                f[10] += xv
                f[12] += yv
    return out


@register("Correlation", description="MeasureColocalization within objects: every pair of channels",
          features=_DOCS,
          defaults={"threshold_percentage": 15.0, "costes_method": "faster", "costes_scale": "auto"})
def correlation(labels: np.ndarray, images: Mapping[str, np.ndarray], *, n_objects: int,
                threshold_percentage: float = 15.0, costes_method: str = "faster",
                costes_scale: float | str | None = "auto",
                context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """Colocalization features of every object for every pair of channels
    (``Correlation_<Feature>_<a>_<b>``: Correlation, Manders, RWC, Overlap, K, Costes), as
    CellProfiler 5's MeasureColocalization within objects (definitions in the module docstring).

    Inputs: ``labels``, an (H, W) integer label image with objects 1..``n_objects`` (numbers absent
    from it get NaN rows); ``images``: channel name → (H, W) float image on CellProfiler's scale
    (raw / dtype max), every pair i < j in their order; ``context``, the label image's shared
    intermediates (:class:`~profiler.measure._util.LabelContext`), built here when not given.

    Settings (pipeline YAML ``features: {Correlation: {...}}``): ``threshold_percentage`` (pixels
    at or above this percentage of the object's maximum count as "above"; default 15),
    ``costes_method`` (``faster`` — CellProfiler 5's default —, ``fast`` or ``accurate``) and
    ``costes_scale`` (the images' dtype maximum for Costes' threshold steps: 255, 65535 or
    ``auto``, which picks 255 when every pixel lies on the 8-bit grid).
    """
    method = str(costes_method).lower()
    if method not in _COSTES_METHODS:
        from cellfusion_core.errors import ConfigError

        raise ConfigError(f"unknown Costes method {costes_method!r}",
                          hint=f"set features.Correlation.costes_method to one of {', '.join(_COSTES_METHODS)}")
    labels = np.asarray(labels)
    names = list(images)
    n = n_objects
    ctx = label_context(labels, n, context)
    cache = ctx.images  # whole-image levels, codes and Costes thresholds, shared by the site's compartments
    idx, lab, starts = ctx.grouped()
    nonempty = np.diff(starts) > 0
    empty = ~nonempty
    frac = np.float32(float(threshold_percentage) / 100.0)

    # per channel: pixels, above-threshold mask, thresholded sum, dense ranks
    per: dict[str, dict[str, np.ndarray]] = {}
    for ch in names:
        img = np.ascontiguousarray(images[ch], dtype=np.float32).ravel()
        v64, above, thr_sum = _channel_pass(img, idx, starts, frac)
        levels = _levels_cached(cache, images[ch])
        vs = _value_sort_cached(cache, images[ch]) if levels is None and idx.size else None
        codes, n_codes = (vs.codes, vs.n_codes) if vs is not None else (None, None)
        per[ch] = {"v": v64, "above": above, "thr_sum": thr_sum,
                   "rank": _object_ranks(img, img[idx], idx, levels, codes, n_codes)}

    out: dict[str, np.ndarray] = {}
    for i1 in range(len(names) - 1):
        for i2 in range(i1 + 1, len(names)):
            a, b = names[i1], names[i2]
            pa, pb = per[a], per[b]
            ra, rb = pa["rank"], pb["rank"]
            R = float(max(ra.max(), rb.max()) + 1) if ra.size else 1.0
            t1, t2 = _costes_cached(cache, images[a], images[b], costes_scale, method)
            s = _pair_sums(pa["v"], pb["v"], starts, pa["above"], pb["above"], ra, rb, R, t1, t2)
            any_both = bool((pa["above"] & pb["above"]).any())
            any_costes = bool(s[:, 10].any() or s[:, 12].any()) or bool(((pa["v"] >= t1) & (pb["v"] >= t2)).any())
            with np.errstate(divide="ignore", invalid="ignore"):
                corr = s[:, 0] / np.sqrt(s[:, 1] * s[:, 2])
                if any_both:
                    m1, m2 = s[:, 3] / pa["thr_sum"], s[:, 4] / pb["thr_sum"]
                    rwc1, rwc2 = s[:, 5] / pa["thr_sum"], s[:, 6] / pb["thr_sum"]
                    overlap = s[:, 9] / np.sqrt(s[:, 7] * s[:, 8])
                    k1, k2 = s[:, 9] / s[:, 7], s[:, 9] / s[:, 8]
                else:  # no pixel above both thresholds anywhere: CellProfiler writes 0
                    m1 = m2 = rwc1 = rwc2 = overlap = k1 = k2 = np.zeros(n)
                if any_costes:
                    c1, c2 = s[:, 10] / s[:, 11], s[:, 12] / s[:, 13]
                else:
                    c1 = c2 = np.zeros(n)
            for key, val in ((f"Correlation_{a}_{b}", corr), (f"Manders_{a}_{b}", m1), (f"Manders_{b}_{a}", m2),
                             (f"RWC_{a}_{b}", rwc1), (f"RWC_{b}_{a}", rwc2), (f"Overlap_{a}_{b}", overlap),
                             (f"K_{a}_{b}", k1), (f"K_{b}_{a}", k2), (f"Costes_{a}_{b}", c1), (f"Costes_{b}_{a}", c2)):
                val = np.array(val, dtype=np.float64)
                val[empty] = np.nan
                out[f"Correlation_{key}"] = val
    return out
