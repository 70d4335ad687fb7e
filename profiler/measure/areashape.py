"""AreaShape — CellProfiler 5's MeasureObjectSizeShape (2-D), for all objects at once.

Definitions follow what CellProfiler 5 computes (scikit-image ``regionprops`` properties plus
centrosome's Feret, radius and Zernike code):

* Area: pixel count. Perimeter: scikit-image's 4-neighbourhood perimeter (border pixels
  weighted 1, √2 or (1+√2)/2 by their border neighbours). FormFactor = 4π·Area/Perimeter²,
  Compactness = Perimeter²/(4π·Area) (denominator at least 1).
* MajorAxisLength / MinorAxisLength = 4·√eigenvalue of the inertia tensor; Eccentricity =
  √(1 − λ₂/λ₁); Orientation in degrees (scikit-image's angle between the row axis and the major
  axis, ×180/π).
* Solidity = Area / ConvexArea, ConvexArea = pixels inside scikit-image's convex hull image;
  Extent = Area / BoundingBoxArea; EulerNumber with 8-connectivity.
* BoundingBoxMinimum_X/Y are the first column/row, BoundingBoxMaximum_X/Y one past the last.
* MaximumRadius / MeanRadius / MedianRadius: Euclidean distance of each pixel to the nearest
  pixel outside the object (outside the image counts as outside).
* Min/MaxFeretDiameter: minimum width and diameter of the convex hull of the pixel centres.
* Zernike_n_m (n ≤ 9): |Σ R_nm(ρ)e^{imθ}| / (π r²) over the object's pixels, coordinates
  normalised by the minimum enclosing circle (radius r) of the pixel centres.
* Spatial moments are taken relative to the bounding-box origin (as ``regionprops``); central,
  normalised and Hu moments, inertia tensor and its eigenvalues as ``regionprops`` gives them.
"""

from __future__ import annotations

import numpy as np

from profiler.measure._labels import radii_by_label
from profiler.measure._moments import moments_from_pixels, zernike_indexes, zernike_magnitudes_by_runs
from profiler.measure._util import LabelContext, label_context
from profiler.measure.registry import FeatureDoc, register

ZERNIKE_INDEXES = zernike_indexes(9)

_D = "dimensionless"
_FEATURES = [
    FeatureDoc("AreaShape_Area", "number of pixels in the object", "pixels²"),
    FeatureDoc("AreaShape_Perimeter", "scikit-image perimeter (4-neighbourhood, weighted border pixels)", "pixels"),
    FeatureDoc("AreaShape_FormFactor", "4π·Area / Perimeter²", _D),
    FeatureDoc("AreaShape_Compactness", "Perimeter² / (4π·Area)", _D),
    FeatureDoc("AreaShape_Solidity", "Area / ConvexArea", _D),
    FeatureDoc("AreaShape_ConvexArea", "pixels of the convex hull image", "pixels²"),
    FeatureDoc("AreaShape_Extent", "Area / BoundingBoxArea", _D),
    FeatureDoc("AreaShape_EulerNumber", "objects minus holes (8-connectivity)", _D),
    FeatureDoc("AreaShape_Eccentricity", "√(1 − λ₂/λ₁) of the inertia tensor's eigenvalues", _D),
    FeatureDoc("AreaShape_MajorAxisLength", "4·√λ₁ (ellipse with the same second moments)", "pixels"),
    FeatureDoc("AreaShape_MinorAxisLength", "4·√λ₂", "pixels"),
    FeatureDoc("AreaShape_Orientation", "angle between the row axis and the major axis", "degrees"),
    FeatureDoc("AreaShape_EquivalentDiameter", "diameter of the disk with the same area", "pixels"),
    FeatureDoc("AreaShape_MaxFeretDiameter", "largest caliper width (convex hull diameter)", "pixels"),
    FeatureDoc("AreaShape_MinFeretDiameter", "smallest caliper width of the convex hull", "pixels"),
    FeatureDoc("AreaShape_MaximumRadius", "largest distance of a pixel to the nearest outside pixel", "pixels"),
    FeatureDoc("AreaShape_MeanRadius", "mean distance of the pixels to the nearest outside pixel", "pixels"),
    FeatureDoc("AreaShape_MedianRadius", "median distance of the pixels to the nearest outside pixel", "pixels"),
    FeatureDoc("AreaShape_BoundingBoxArea", "pixels of the bounding box", "pixels²"),
    FeatureDoc("AreaShape_BoundingBoxMinimum_{X,Y}", "first column / row of the bounding box", "pixels"),
    FeatureDoc("AreaShape_BoundingBoxMaximum_{X,Y}", "one past the last column / row", "pixels"),
    FeatureDoc("AreaShape_Center_{X,Y}", "centroid column / row", "pixels"),
    FeatureDoc("AreaShape_Zernike_{n}_{m}", "Zernike shape moment magnitude in the minimum enclosing circle, n ≤ 9", _D),
    FeatureDoc("AreaShape_SpatialMoment_{p}_{q}", "Σ row^p col^q relative to the bounding-box origin (p ≤ 2, q ≤ 3)", "pixels^(p+q+2)"),
    FeatureDoc("AreaShape_CentralMoment_{p}_{q}", "Σ (row − r̄)^p (col − c̄)^q (p ≤ 2, q ≤ 3)", "pixels^(p+q+2)"),
    FeatureDoc("AreaShape_NormalizedMoment_{p}_{q}", "central moment / Area^((p+q)/2 + 1), NaN for p+q < 2", _D),
    FeatureDoc("AreaShape_HuMoment_{k}", "Hu's seven invariants (k = 0..6)", _D),
    FeatureDoc("AreaShape_InertiaTensor_{i}_{j}", "inertia tensor [[μ02, −μ11], [−μ11, μ20]] / Area", "pixels²"),
    FeatureDoc("AreaShape_InertiaTensorEigenvalues_{k}", "eigenvalues of the inertia tensor, descending", "pixels²"),
]


def _hu(nu: np.ndarray) -> np.ndarray:
    """Hu's invariants from normalised moments nu[k, p, q] (p = row order, q = column order)."""
    n20, n02, n11 = nu[:, 2, 0], nu[:, 0, 2], nu[:, 1, 1]
    n30, n03, n21, n12 = nu[:, 3, 0], nu[:, 0, 3], nu[:, 2, 1], nu[:, 1, 2]
    a = n30 + n12
    b = n21 + n03
    hu = np.empty((nu.shape[0], 7))
    hu[:, 0] = n20 + n02
    hu[:, 1] = (n20 - n02) ** 2 + 4 * n11 ** 2
    hu[:, 2] = (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2
    hu[:, 3] = a ** 2 + b ** 2
    hu[:, 4] = (n30 - 3 * n12) * a * (a ** 2 - 3 * b ** 2) + (3 * n21 - n03) * b * (3 * a ** 2 - b ** 2)
    hu[:, 5] = (n20 - n02) * (a ** 2 - b ** 2) + 4 * n11 * a * b
    hu[:, 6] = (3 * n21 - n03) * a * (a ** 2 - 3 * b ** 2) - (n30 - 3 * n12) * b * (3 * a ** 2 - b ** 2)
    return hu


def shape_geometry(labels: np.ndarray, n_objects: int, context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """Per-object geometry shared by several families (rows 0..n, row 0 unused)."""
    ctx = label_context(labels, n_objects, context)
    area, bbox, perim, euler = ctx.shape_scan()
    return {"labels": ctx.labels, "area": area, "bbox": bbox, "perimeter": perim, "euler": euler}


def zernike_shape(lab_img: np.ndarray, n: int, mec_i: np.ndarray, mec_j: np.ndarray,
                  mec_r: np.ndarray) -> np.ndarray:
    """Zernike shape magnitudes (n+1, n_zernike) of every object; NaN where r = 0 or absent."""
    ok = mec_r > 0  # single-pixel and absent objects: NaN below
    rad = np.where(ok, mec_r, 1.0)
    mag = zernike_magnitudes_by_runs(lab_img, n, mec_i, mec_j, rad, ZERNIKE_INDEXES)[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = mag / (np.pi * mec_r[:, None] ** 2)
    z[~(mec_r > 0)] = np.nan
    return z


@register("AreaShape", description="MeasureObjectSizeShape: size and shape of each object (incl. Zernike, "
          "Feret, radii and the advanced moments)", features=_FEATURES,
          defaults={"zernike": True, "advanced": True})
def areashape(labels: np.ndarray, images=None, *, n_objects: int, zernike: bool = True,
              advanced: bool = True, context: LabelContext | None = None) -> dict[str, np.ndarray]:
    """Size and shape of every object (``AreaShape_<Feature>``), as CellProfiler 5's
    MeasureObjectSizeShape (2-D) computes them: area, perimeter, form factor, axes, eccentricity,
    orientation, solidity, extent, Euler number, bounding box, centre, radii, Feret diameters and
    (see the module docstring for each definition) the optional groups below.

    Inputs: ``labels``, an (H, W) integer label image with objects 1..``n_objects`` (numbers absent
    from it get NaN rows); ``images`` is ignored; ``context``, the label image's shared intermediates
    (:class:`~profiler.measure._util.LabelContext`), built here when not given.

    Settings (pipeline YAML ``features: {AreaShape: {...}}``): ``zernike`` (default true) adds
    ``AreaShape_Zernike_n_m`` for n ≤ 9 on the minimum enclosing circle; ``advanced`` (default
    true) adds the spatial, central, normalized and Hu moments and the inertia tensor with its
    eigenvalues (CellProfiler's "Calculate the advanced features").
    """
    n = int(n_objects)
    ctx = label_context(labels, n, context)
    geo = shape_geometry(labels, n, ctx)
    lab_img, area_i, bbox = geo["labels"], geo["area"], geo["bbox"]
    present = area_i > 0
    area = np.where(present, area_i, np.nan).astype(np.float64)
    perim = np.where(present, geo["perimeter"], np.nan)

    rows, cols = ctx.rows_cols()
    m, mu = moments_from_pixels(rows, cols, ctx.pixels()[1], n, bbox, area_i)
    # first-order central moments are 0 by definition (what is summed is round-off of order 1e-8
    # on large objects; CellProfiler's is of order 1e-10): write the exact value
    mu[:, 0, 1] = 0.0
    mu[:, 1, 0] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        m00 = np.where(present, mu[:, 0, 0], np.nan)
        # inertia tensor (scikit-image): [[mu02, -mu11], [-mu11, mu20]] / mu00
        t00 = mu[:, 0, 2] / m00
        t11 = mu[:, 2, 0] / m00
        t01 = -mu[:, 1, 1] / m00
        half_tr = (t00 + t11) / 2
        disc = np.sqrt(((t00 - t11) / 2) ** 2 + t01 ** 2)
        l1 = np.clip(half_tr + disc, 0, None)
        l2 = np.clip(half_tr - disc, 0, None)
        major = 4 * np.sqrt(l1)
        minor = 4 * np.sqrt(l2)
        ecc = np.where(l1 == 0, 0.0, np.sqrt(np.clip(1 - l2 / l1, 0, None)))
        a_, b_, c_ = t00, t01, t11
        # scikit-image 0.24 (CellProfiler 5's): +π/4 when b < 0, −π/4 otherwise
        orient = np.where(a_ - c_ == 0, np.where(b_ < 0, np.pi / 4, -np.pi / 4),
                          0.5 * np.arctan2(-2 * b_, c_ - a_))
        bb_h = (bbox[:, 2] - bbox[:, 0] + 1).astype(np.float64)
        bb_w = (bbox[:, 3] - bbox[:, 1] + 1).astype(np.float64)
        bb_area = np.where(present, bb_h * bb_w, np.nan)
        cen_i = bbox[:, 0] + m[:, 1, 0] / m00
        cen_j = bbox[:, 1] + m[:, 0, 1] / m00

        min_f, max_f, mec_i, mec_j, mec_r, conv = ctx.hull()

        pidx, dl = ctx.pixels()
        max_r, mean_r, med_r = radii_by_label(dl, ctx.edt(True).ravel()[pidx], n)

    s = slice(1, n + 1)
    out: dict[str, np.ndarray] = {
        "AreaShape_Area": area[s],
        "AreaShape_Perimeter": perim[s],
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        # an object with zero perimeter (CellProfiler's convention for some 1-pixel shapes) has no
        # defined FormFactor: NaN, not inf
        out["AreaShape_FormFactor"] = np.where(perim > 0, 4 * np.pi * area / perim ** 2, np.nan)[s]
        out["AreaShape_Compactness"] = (perim ** 2 / np.maximum(4 * np.pi * area, 1))[s]
        out["AreaShape_Solidity"] = (area / conv)[s]
        out["AreaShape_Extent"] = (area / bb_area)[s]
    out["AreaShape_ConvexArea"] = conv[s]
    out["AreaShape_EulerNumber"] = np.where(present, geo["euler"] / 4.0, np.nan)[s]
    out["AreaShape_Eccentricity"] = ecc[s]
    out["AreaShape_MajorAxisLength"] = major[s]
    out["AreaShape_MinorAxisLength"] = minor[s]
    out["AreaShape_Orientation"] = np.where(present, orient * (180 / np.pi), np.nan)[s]
    out["AreaShape_EquivalentDiameter"] = np.sqrt(4 * area / np.pi)[s]
    out["AreaShape_MaxFeretDiameter"] = max_f[s]
    out["AreaShape_MinFeretDiameter"] = min_f[s]
    out["AreaShape_MaximumRadius"] = max_r[s]
    out["AreaShape_MeanRadius"] = mean_r[s]
    out["AreaShape_MedianRadius"] = med_r[s]
    out["AreaShape_BoundingBoxArea"] = bb_area[s]
    nanif = lambda v: np.where(present, v, np.nan)[s]  # noqa: E731
    out["AreaShape_BoundingBoxMinimum_X"] = nanif(bbox[:, 1].astype(float))
    out["AreaShape_BoundingBoxMaximum_X"] = nanif(bbox[:, 3] + 1.0)
    out["AreaShape_BoundingBoxMinimum_Y"] = nanif(bbox[:, 0].astype(float))
    out["AreaShape_BoundingBoxMaximum_Y"] = nanif(bbox[:, 2] + 1.0)
    out["AreaShape_Center_X"] = cen_j[s]
    out["AreaShape_Center_Y"] = cen_i[s]

    if zernike:
        z = zernike_shape(lab_img, n, mec_i, mec_j, mec_r)
        for t, (nn, mm) in enumerate(ZERNIKE_INDEXES):
            out[f"AreaShape_Zernike_{nn}_{mm}"] = z[s, t]

    if advanced:
        with np.errstate(divide="ignore", invalid="ignore"):
            nu = np.full_like(mu, np.nan)
            for p in range(4):
                for q in range(4):
                    if p + q >= 2:
                        nu[:, p, q] = mu[:, p, q] / m00 ** ((p + q) / 2 + 1)
            hu = _hu(nu)
        for p in range(3):
            for q in range(4):
                out[f"AreaShape_SpatialMoment_{p}_{q}"] = nanif(m[:, p, q])
        for p in range(3):
            for q in range(4):
                out[f"AreaShape_CentralMoment_{p}_{q}"] = nanif(mu[:, p, q])
        for p in range(4):
            for q in range(4):
                out[f"AreaShape_NormalizedMoment_{p}_{q}"] = nu[s, p, q]
        for k in range(7):
            out[f"AreaShape_HuMoment_{k}"] = hu[s, k]
        out["AreaShape_InertiaTensor_0_0"] = t00[s]
        out["AreaShape_InertiaTensor_0_1"] = t01[s]
        out["AreaShape_InertiaTensor_1_0"] = t01[s]
        out["AreaShape_InertiaTensor_1_1"] = t11[s]
        out["AreaShape_InertiaTensorEigenvalues_0"] = l1[s]
        out["AreaShape_InertiaTensorEigenvalues_1"] = l2[s]
    return out
