"""Texture — CellProfiler's MeasureTexture: 13 Haralick features × 4 directions per scale.

CellProfiler's definition (cellprofiler_library ``measure_haralick_features_objects`` +
``mahotas.features.haralick(ignore_zeros=True)``), reproduced exactly:

* the whole [0, 1] image is quantized to 0–255 (``skimage.util.img_as_ubyte``: ``rint(x·255)``)
  and, for ``gray_levels`` ≠ 256, rescaled to 0..gray_levels−1 (truncating);
* for each object and each direction (0: (0, s) horizontal, 1: (s, s), 2: (s, 0), 3: (s, −s))
  the *symmetric* co-occurrence matrix counts the pixel pairs at that offset that both lie in the
  object, ignoring every pair with a level-0 pixel;
* the matrix has ``max level in the object + 1`` rows (this size enters DifferenceVariance,
  which is the variance of the ``|i−j|`` marginal over all its entries, zeros included);
* the 13 features are mahotas' (Correlation = 1 when a marginal has zero variance; InfoMeas1
  divides by max(HX, HY) unless it is 0); all entropies are base 2;
* an object with no valid pair in *some* direction gets 0 for every texture feature (mahotas
  raises, CellProfiler stores NaN and then writes 0); non-finite values are written as 0.

Objects absent from the label image get NaN (the registry's convention).

Implementation: the geometry (which flat pixel pairs lie in the same object, grouped by object) is
computed once per label image and direction with array operations and shared by all channels; a
numba kernel then accumulates each object's co-occurrence counts into a reusable 256×256 scratch
matrix (only touched cells are visited and reset) and evaluates the 13 features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numba
import numpy as np

from profiler.measure._util import LabelContext, label_context
from profiler.measure.registry import FeatureDoc, register

HARALICK = ("AngularSecondMoment", "Contrast", "Correlation", "Variance", "InverseDifferenceMoment",
            "SumAverage", "SumVariance", "SumEntropy", "Entropy", "DifferenceVariance", "DifferenceEntropy",
            "InfoMeas1", "InfoMeas2")

_DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1))  # mahotas' 2-D deltas (row, col), in CP's order 00..03

_DEFS = {
    "AngularSecondMoment": "Σ p(i,j)² — uniformity of the co-occurrence matrix",
    "Contrast": "Σ (i−j)² p(i,j) — local intensity variation",
    "Correlation": "(Σ i·j·p(i,j) − μx·μy) / (σx·σy) — linear dependency of neighbouring grey levels (1 if σ = 0)",
    "Variance": "Σ (i−μx)² px(i) — variance of the grey-level marginal",
    "InverseDifferenceMoment": "Σ p(i,j) / (1 + (i−j)²) — local homogeneity",
    "SumAverage": "Σ k·p_{x+y}(k)",
    "SumVariance": "Σ k²·p_{x+y}(k) − SumAverage²",
    "SumEntropy": "−Σ p_{x+y}(k) log₂ p_{x+y}(k)",
    "Entropy": "−Σ p(i,j) log₂ p(i,j)",
    "DifferenceVariance": "variance of the entries of p_{|x−y|} (over max level + 1 entries)",
    "DifferenceEntropy": "−Σ p_{|x−y|}(k) log₂ p_{|x−y|}(k)",
    "InfoMeas1": "(HXY − HXY1) / max(HX, HY) — information measure of correlation 1",
    "InfoMeas2": "sqrt(1 − exp(−2 (HXY2 − HXY))) — information measure of correlation 2",
}


def quantize(img: np.ndarray, gray_levels: int = 256) -> np.ndarray:
    """CellProfiler's texture quantization of a [0, 1] image: ``img_as_ubyte`` then rescale to ``gray_levels``."""
    x = np.asarray(img, dtype=np.float32)
    q = np.rint(np.multiply(x, np.float32(255), dtype=np.float32))
    np.clip(q, 0, 255, out=q)
    q = np.nan_to_num(q, nan=0.0).astype(np.uint8)
    if gray_levels != 256:
        q = (q.astype(np.float64) / 255.0 * (gray_levels - 1)).astype(np.uint8)
    return q


@numba.njit(cache=True, nogil=True)
def _pairs_kernel(idx: np.ndarray, pix_starts: np.ndarray, H: int, W: int, scale: int):  # pragma: no cover
    """Texture's co-occurrence pairs (per direction: first and second pixel's positions in the
    grouped list, and each object's start) from the object pixels grouped by object (raster
    order within each: :meth:`LabelContext.grouped`). Every offset points forward in raster order,
    so the partner of each pixel is found by a second pointer moving through the same object's
    pixels (a pair lies in one object exactly when its partner is in that object's list)."""
    n = pix_starts.shape[0] - 1
    N = idx.shape[0]
    a = np.empty((4, N), dtype=np.int32)
    b = np.empty((4, N), dtype=np.int32)
    starts = np.zeros((4, n + 1), dtype=np.int64)
    for d in range(4):
        if d == 0:
            dy, dx = 0, scale
        elif d == 1:
            dy, dx = scale, scale
        elif d == 2:
            dy, dx = scale, 0
        else:
            dy, dx = scale, -scale
        off = dy * W + dx
        m = 0
        for o in range(n):
            end = pix_starts[o + 1]
            u = pix_starts[o]
            for t in range(pix_starts[o], end):
                k = idx[t]
                r = k // W
                c = k - r * W
                if r + dy < H and c + dx >= 0 and c + dx < W:
                    q = k + off
                    while u < end and idx[u] < q:
                        u += 1
                    if u == end:
                        break
                    if idx[u] == q:
                        a[d, m] = t
                        b[d, m] = u
                        m += 1
            starts[d, o + 1] = m
    return a, b, starts


def _pair_geometry(labels: np.ndarray, n_objects: int, scale: int, context: LabelContext | None = None):
    """(object pixels grouped by object, their start offsets, per-direction pair positions and starts),
    from ``context``'s grouped pixel list (a new :class:`LabelContext` when it is None or for other labels)."""
    H, W = labels.shape
    ctx = label_context(labels, n_objects, context)
    idx, _, pix_starts = ctx.grouped()
    a, b, starts = _pairs_kernel(idx, pix_starts, H, W, int(scale))
    return idx, pix_starts, a, b, starts


@numba.njit(cache=True, nogil=True)
def _entropy_vec(p: np.ndarray, n: int) -> float:  # pragma: no cover - numba
    s = 0.0
    for k in range(n):
        if p[k] > 0:
            s -= p[k] * np.log2(p[k])
    return s


@numba.njit(cache=True, nogil=True)
def _haralick_objects(q: np.ndarray, pix_starts: np.ndarray, a: np.ndarray, b: np.ndarray,
                      starts: np.ndarray, out: np.ndarray, invalid: np.ndarray, d: int,
                      cmat: np.ndarray) -> None:  # pragma: no cover
    """Fill out[o, d, :] with the 13 Haralick features of object o for one direction's pairs.

    ``q``: quantized level of each object pixel (grouped by object); ``a``/``b``: positions in ``q``;
    ``cmat``: a (256, 256) int64 scratch matrix of zeros (left as zeros: only touched cells are reset),
    shared by the calls.
    """
    n = starts.shape[0] - 1
    cap = min(2 * (a.shape[0] + 1), 256 * 256)  # distinct (i, j) cells of one object
    ti = np.empty(cap, dtype=np.int32)
    tj = np.empty(cap, dtype=np.int32)
    px = np.zeros(256)
    pplus = np.zeros(512)
    pminus = np.zeros(256)
    for o in range(n):
        s0 = pix_starts[o]
        s1 = pix_starts[o + 1]
        if s1 == s0:
            continue
        maxlev = 0
        for k in range(s0, s1):
            v = q[k]
            if v > maxlev:
                maxlev = v
        maxv = maxlev + 1
        nt = 0
        total = 0
        for k in range(starts[o], starts[o + 1]):
            i = q[a[k]]
            j = q[b[k]]
            if i == 0 or j == 0:
                continue
            if cmat[i, j] == 0:
                ti[nt] = i
                tj[nt] = j
                nt += 1
            cmat[i, j] += 1
            if i != j:
                if cmat[j, i] == 0:
                    ti[nt] = j
                    tj[nt] = i
                    nt += 1
                cmat[j, i] += 1
            else:
                cmat[i, i] += 1
            total += 2
        if total == 0:
            invalid[o] = True
            continue
        T = float(total)
        for k in range(maxv):
            px[k] = 0.0
            pminus[k] = 0.0
        for k in range(2 * maxv):
            pplus[k] = 0.0
        asm = 0.0
        ent = 0.0
        sij = 0.0
        idm = 0.0
        for t in range(nt):
            i = ti[t]
            j = tj[t]
            p = cmat[i, j] / T
            asm += p * p
            ent -= p * np.log2(p)
            sij += i * j * p
            dd = i - j
            if dd < 0:
                dd = -dd
            idm += p / (1.0 + dd * dd)
            px[i] += p
            pplus[i + j] += p
            pminus[dd] += p
        for t in range(nt):
            cmat[ti[t], tj[t]] = 0
        ux = 0.0
        ex2 = 0.0
        for k in range(maxv):
            ux += k * px[k]
            ex2 += k * k * px[k]
        vx = ex2 - ux * ux
        sx = np.sqrt(vx)
        contrast = 0.0
        for k in range(maxv):
            contrast += k * k * pminus[k]
        if sx == 0.0:
            corr = 1.0
        else:
            corr = (sij - ux * ux) / sx / sx
        savg = 0.0
        s2 = 0.0
        for k in range(2 * maxv):
            savg += k * pplus[k]
            s2 += k * k * pplus[k]
        svar = s2 - savg * savg
        sent = _entropy_vec(pplus, 2 * maxv)
        m = 0.0
        for k in range(maxv):
            m += pminus[k]
        m /= maxv
        dvar = 0.0
        for k in range(maxv):
            dvar += (pminus[k] - m) ** 2
        dvar /= maxv
        dent = _entropy_vec(pminus, maxv)
        hx = _entropy_vec(px, maxv)
        # HXY1 = -Σ p log2(px py) = HX + HY and HXY2 = entropy(px ⊗ py) = HX + HY (px = py: symmetric)
        hxy1 = 2.0 * hx
        hxy2 = 2.0 * hx
        if hx == 0.0:
            imc1 = ent - hxy1
        else:
            imc1 = (ent - hxy1) / hx
        x = 1.0 - np.exp(-2.0 * (hxy2 - ent))
        imc2 = np.sqrt(x) if x > 0 else 0.0
        f = out[o, d]
        f[0] = asm
        f[1] = contrast
        f[2] = corr
        f[3] = vx
        f[4] = idm
        f[5] = savg
        f[6] = svar
        f[7] = sent
        f[8] = ent
        f[9] = dvar
        f[10] = dent
        f[11] = imc1
        f[12] = imc2


def haralick_objects(labels: np.ndarray, q: np.ndarray, n_objects: int, scale: int = 3, *,
                     geometry=None) -> np.ndarray:
    """(n_objects, 4, 13) Haralick features of every object of ``labels`` on the quantized image ``q``.

    Values follow CellProfiler's output: objects with no valid pair in some direction and non-finite
    values give 0; objects absent from ``labels`` give NaN.
    """
    geometry = geometry if geometry is not None else _pair_geometry(labels, n_objects, scale)
    return _haralick_levels(np.ascontiguousarray(q).ravel()[geometry[0]], geometry, n_objects)


def _haralick_levels(qo: np.ndarray, geometry, n_objects: int) -> np.ndarray:
    """haralick_objects on the levels of the object pixels, given in the geometry's grouped order."""
    _, pix_starts, a, b, starts = geometry
    out = np.zeros((n_objects, 4, 13))
    invalid = np.zeros(n_objects, dtype=np.bool_)
    cmat = np.zeros((256, 256), dtype=np.int64)  # co-occurrence scratch, reset cell by cell
    for d in range(4):
        m = starts[d, -1]
        _haralick_objects(qo, pix_starts, a[d, :m], b[d, :m], starts[d], out, invalid, d, cmat)
    out[invalid] = 0.0
    out[~np.isfinite(out)] = 0.0
    out[np.diff(pix_starts) == 0] = np.nan
    return out


@register("Texture", description="MeasureTexture: Haralick co-occurrence features per object, channel, scale and direction",
          features=[FeatureDoc(f"Texture_{f}_{{channel}}_{{scale}}_{{direction:02d}}_{{gray_levels}}",
                               _DEFS[f] + "; grey levels quantized over the whole image, level-0 pairs ignored",
                               "dimensionless") for f in HARALICK],
          defaults={"scales": (3,), "gray_levels": 256})
def texture(labels: np.ndarray, images: Mapping[str, np.ndarray], *, n_objects: int,
            scales: Sequence[int] = (3,), gray_levels: int = 256,
            context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """The 13 Haralick features of every object for every channel, scale and direction
    (``Texture_<Feature>_<channel>_<scale>_<direction:02d>_<gray_levels>``), as CellProfiler's
    MeasureTexture computes them (definitions in the module docstring).

    Inputs: ``labels`` (H, W) integer label image, objects 1..``n_objects`` (absent numbers get NaN
    rows); ``images``: channel name → (H, W) float image on CellProfiler's scale (raw / dtype max).

    Settings (pipeline YAML ``features: {Texture: {...}}``): ``scales`` (pixel offsets of the
    co-occurrence pairs, default [3]) and ``gray_levels`` (2–256, default 256: the number of grey
    levels the whole image is quantized to). ``context``: the label image's shared intermediates
    (:class:`~profiler.measure._util.LabelContext`; its grouped pixel list), built here when not given.
    """
    if isinstance(scales, int):
        scales = (scales,)
    gray_levels = int(gray_levels)
    if not 2 <= gray_levels <= 256:
        from cellfusion_core.errors import ConfigError

        raise ConfigError(f"Texture gray_levels must be between 2 and 256, got {gray_levels}",
                          hint="set features.Texture.gray_levels in the pipeline YAML (CellProfiler's default is 256)")
    labels = np.asarray(labels)
    out: dict[str, np.ndarray] = {}
    for scale in scales:
        scale = int(scale)
        geometry = _pair_geometry(labels, n_objects, scale, label_context(labels, n_objects, context))
        idx = geometry[0]
        for ch, img in images.items():
            # quantize only the object pixels (same values as quantizing the whole image)
            qo = quantize(np.asarray(img).ravel()[idx], gray_levels)
            feats = _haralick_levels(qo, geometry, n_objects)
            for d in range(4):
                for f, name in enumerate(HARALICK):
                    out[f"Texture_{name}_{ch}_{scale}_{d:02d}_{gray_levels}"] = feats[:, d, f]
    return out
