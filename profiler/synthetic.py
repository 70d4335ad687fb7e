"""A deterministic synthetic example plate with known, planted phenotypes.

:func:`make_example_plate` writes a folder that looks like an ImageXpress export of a small
screen: one 16-bit grayscale TIFF per site and channel, named ``<plate>_<well>_s<site>_w<n>.tif``
(e.g. ``EXAMPLE01_B02_s1_w1.tif``), and a ``platemap.csv`` (``well,compound,concentration,control``).
Three channels (:data:`CHANNELS`): DNA (w1), Tubulin (w2) and Actin (w3).

What the images contain
-----------------------
* Nuclei: smooth, slightly irregular ellipses (diameter about 15–25 px) with a soft edge, a domed
  profile and chromatin-like granular texture; about 3 % mitotic cells (small, round, bright).
* Cells: a partition of the field grown around every nucleus (a weighted Voronoi partition
  limited to each cell's own irregular ellipse of 2–3 × the nucleus radius), so cells touch and
  never share a pixel. About half the cells sit in clumps, where nuclei touch each other, so a
  segmentation has to declump.
* Tubulin: filaments radiating (slightly curved) from the nucleus, denser around it.
* Actin: a bright cortical rim at the cell edge plus stress fibres along the cell's long axis.
* Variability: every cell draws its own size, shape, orientation and stain levels (treated and
  control cells overlap), and every well its own small stain, density and size factors
  (:func:`well_effect`), as real wells differ.
* Optics and camera: a Gaussian point spread function, a smooth multiplicative illumination field
  (off-centre vignetting plus a tilt) that is the same for a channel on every site of the plate,
  additive background, Poisson shot noise, a camera offset of :data:`CAMERA_OFFSET` ADU and read
  noise; 12-bit-like values stored in 16-bit files (like BBBC021).

Planted phenotypes
------------------
:data:`PHENOTYPES` maps each compound to the effect planted in its wells, the generator
parameter changed, by how much, and the CellProfiler-named features that carry the effect (the
ground truth that explanation tests check). DMSO (:data:`CONTROL_COMPOUND`) is the negative
control and changes nothing.

Ground truth
------------
Under ``OUT_DIR/ground_truth/`` (a subfolder, so plate discovery ignores it): the nuclei and cell
label images of every site (label *i* is the same cell in both; every nucleus lies inside its
cell), the illumination field of every channel, ``phenotypes.json`` and ``sites.csv`` (cells per
site).

Determinism: every random draw comes from ``numpy.random.default_rng`` seeded with
``(seed, row, column, site)`` (plate-level fields with ``(seed, channel)``); the TIFFs carry no
time stamp, so the same arguments give byte-identical image, platemap and ground-truth files.
Only ``manifest.json`` (which records when it was written) differs between runs.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from cellfusion_core.errors import ConfigError
from cellfusion_core.io import atomic_path, write_json, write_manifest, write_text
from cellfusion_core.layout import PLATEMAP_FILE

__all__ = [
    "CAMERA_OFFSET", "CHANNELS", "CONTROL_COMPOUND", "DEFECT_KINDS", "MAX_ADU", "PHENOTYPES", "Phenotype",
    "WellSpec", "make_example_plate", "phenotypes_markdown", "plate_layout", "render_site",
    "well_effect",
]

CHANNELS: dict[str, str] = {"w1": "DNA", "w2": "Tubulin", "w3": "Actin"}
CONTROL_COMPOUND = "DMSO"
CAMERA_OFFSET = 100          # ADU added by the camera to every pixel
MAX_ADU = 4095               # 12-bit camera: values are clipped here
REFERENCE_SIZE = 512         # cells_per_site is given for a site of this many pixels a side
GROUND_TRUTH_DIR = "ground_truth"

# Wells: rows B.., columns 02..11 (the inner wells of a 96-well plate; rows beyond G continue
# on a 384-well plate's rows up to O).
_ROWS = "BCDEFGHIJKLMNO"
_COLS = tuple(range(2, 12))
MAX_WELLS = len(_ROWS) * len(_COLS)
_LOW, _HIGH = 1.0, 5.0                         # concentrations (µM) of every compound
_STRENGTH = {_LOW: 0.7, _HIGH: 1.0}            # fraction of the full (log) effect at each dose


@dataclass(frozen=True)
class Phenotype:
    """The effect planted for one compound.

    Attributes
    ----------
    compound:
        Compound name as written in ``platemap.csv``.
    description:
        What the compound does to the cells, in words.
    changes:
        Generator parameter → multiplicative factor at the highest concentration (1 = unchanged).
        At a concentration *c* the factor is ``factor ** strength[c]`` (see :meth:`factor_at`).
    concentrations:
        The concentrations (µM) used on the plate, lowest first.
    strength:
        Concentration → fraction of the full (logarithmic) effect.
    features:
        CellProfiler-named per-cell features, measurable with the basic AreaShape and Intensity
        families, that carry the effect strongly. The SHAP top features of the compound must
        include at least one of them.
    well_features:
        Per-well quantities that carry the effect but are not per-cell features (e.g. the cell
        count ``Metadata_Object_Count``).
    """

    compound: str
    description: str
    changes: Mapping[str, float]
    features: tuple[str, ...]
    well_features: tuple[str, ...] = ()
    concentrations: tuple[float, ...] = (_LOW, _HIGH)
    strength: Mapping[float, float] = field(default_factory=lambda: dict(_STRENGTH))

    def factor_at(self, parameter: str, concentration: float) -> float:
        """The multiplicative factor on ``parameter`` at ``concentration`` (1.0 if unchanged)."""
        full = self.changes.get(parameter, 1.0)
        return float(full ** self.strength[float(concentration)])

    def to_dict(self) -> dict:
        """A JSON-ready description (concentration keys as strings)."""
        d = asdict(self)
        d["changes"] = dict(self.changes)
        d["strength"] = {str(k): v for k, v in self.strength.items()}
        d["features"] = list(self.features)
        d["well_features"] = list(self.well_features)
        d["concentrations"] = list(self.concentrations)
        return d


# Generator parameters a phenotype may change (all multiplicative, 1.0 in DMSO):
#   nucleus_area      area of the nucleus (radius scales with its square root); the cell's size
#                     stays tied to the *untreated* nucleus, so the cytoplasm gets smaller
#   tubulin_level     mean tubulin brightness of the cell
#   tubulin_fibres    contrast of the tubulin filament pattern (how textured it is)
#   cell_aspect       major/minor axis ratio of the cell outline (area kept)
#   cell_count        expected number of cells in the site
#   cell_radius       the radius the cell may spread to (area scales with its square)
_PARAMETERS = ("nucleus_area", "tubulin_level", "tubulin_fibres", "cell_aspect", "cell_count",
               "cell_radius")

def _names(compartments: str, category: str, features: str, channel: str | None = None
           ) -> tuple[str, ...]:
    """Every ``<compartment>_<category>_<feature>[_<channel>]`` of the space-separated lists."""
    suffix = f"_{channel}" if channel else ""
    return tuple(f"{c}_{category}_{f}{suffix}" for c in compartments.split()
                 for f in features.split())


# Feature lists: the named CellProfiler features that carry each effect strongly. Every one was
# checked on the default plate (seed 0) with the project's segmentation and measurements and with
# the truth masks: the mean of the compound's well medians differs from the DMSO wells' mean by
# more than 3 DMSO well-to-well standard deviations (most by 5–20). Features that depend on where
# the object lies in the image (Center, BoundingBoxMinimum/Maximum, SpatialMoment other than 0_0)
# are never listed.
_SIZE = ("Area ConvexArea BoundingBoxArea Perimeter MajorAxisLength MinorAxisLength "
         "EquivalentDiameter MaxFeretDiameter MinFeretDiameter SpatialMoment_0_0 "
         "CentralMoment_0_2 CentralMoment_2_0 CentralMoment_2_2 InertiaTensor_0_0 "
         "InertiaTensor_1_1 InertiaTensorEigenvalues_0 InertiaTensorEigenvalues_1")

PHENOTYPES: dict[str, Phenotype] = {
    "Enlargin": Phenotype(
        compound="Enlargin",
        description="Nuclei larger (area +55 % at the high dose, +36 % at the low); DNA per "
                    "pixel unchanged, so the nucleus holds more DNA, and every intensity summed "
                    "over the nucleus grows with its area. Cell outline unchanged.",
        changes={"nucleus_area": 1.55},
        features=(_names("Nuclei", "AreaShape", _SIZE)
                  + _names("Nuclei", "Intensity", "IntegratedIntensity", "DNA")
                  + _names("Nuclei", "Intensity", "IntegratedIntensity", "Tubulin")
                  + _names("Nuclei", "Intensity", "IntegratedIntensity", "Actin")
                  + _names("Cells", "Intensity", "IntegratedIntensity", "DNA")),
    ),
    "Tubulor": Phenotype(
        compound="Tubulor",
        description="Tubulin brighter (×1.6 at the high dose, ×1.39 at the low) and more "
                    "textured (filament contrast ×2.2 / ×1.74): bundled microtubules. Seen in "
                    "every compartment's tubulin intensity statistics (the nucleus too, where "
                    "microtubules lie over it); the spread (StdIntensity) most strongly.",
        changes={"tubulin_level": 1.6, "tubulin_fibres": 2.2},
        features=tuple(f for stat in ("StdIntensity", "MaxIntensity", "MeanIntensity",
                                      "IntegratedIntensity")
                       for f in _names("Cells Cytoplasm Nuclei", "Intensity", stat, "Tubulin")),
    ),
    "Elongatin": Phenotype(
        compound="Elongatin",
        description="Cells elongated: the cell outline's axis ratio ×2 at the high dose "
                    "(×1.62 at the low), area unchanged; stress fibres follow the long axis. "
                    "Carried by eccentricity and the moment and Zernike shape descriptors that "
                    "measure elongation; only weakly by FormFactor and the axis lengths, which "
                    "the irregular outlines and the cell-size spread dominate.",
        changes={"cell_aspect": 2.0},
        features=_names("Cells Cytoplasm", "AreaShape",
                        "Eccentricity HuMoment_1 HuMoment_3 HuMoment_5 NormalizedMoment_2_2 "
                        "InertiaTensorEigenvalues_0 InertiaTensorEigenvalues_1 Zernike_0_0 "
                        "Zernike_4_2"),
    ),
    "Sparsin": Phenotype(
        compound="Sparsin",
        description="Fewer cells (expected count ×0.45 at the high dose, ×0.57 at the low) and "
                    "the remaining cells spread out (spreading radius ×1.3 / ×1.2). The count is "
                    "a per-well quantity, not a per-cell feature; the per-cell correlates are the "
                    "larger cell and cytoplasm size and the intensities summed over them.",
        changes={"cell_count": 0.45, "cell_radius": 1.3},
        features=(_names("Cells", "AreaShape", _SIZE)
                  + _names("Cytoplasm", "AreaShape", _SIZE.replace(" MinorAxisLength", ""))
                  + _names("Cells Cytoplasm", "Intensity", "IntegratedIntensity", "Tubulin")
                  + _names("Cells Cytoplasm", "Intensity", "IntegratedIntensity", "Actin")),
        well_features=("Metadata_Object_Count",),
    ),
}

# The order treatments are dealt to wells (DMSO twice per cycle: controls get more wells).
_CYCLE = (CONTROL_COMPOUND, "Enlargin", "Tubulor", "Elongatin", "Sparsin", CONTROL_COMPOUND)


@dataclass(frozen=True)
class WellSpec:
    """One well of the layout."""

    well: str            # e.g. "B02"
    row: int             # 0-based row index (A = 0)
    column: int          # 1-based column number
    compound: str
    concentration: float  # µM; 0.0 for DMSO

    @property
    def control(self) -> str:
        """``"negative"`` for the DMSO control, ``""`` for treatments."""
        return "negative" if self.compound == CONTROL_COMPOUND else ""


def plate_layout(n_wells: int = 24) -> list[WellSpec]:
    """The deterministic layout of ``n_wells`` wells.

    Wells fill rows B, C, … with columns 02–11. Treatments are dealt in the cycle DMSO, Enlargin,
    Tubulor, Elongatin, Sparsin, DMSO, so any ``n_wells >= 5`` holds every treatment and DMSO has
    the most wells; successive wells of one compound alternate between its low and high
    concentration. The default 24 wells give DMSO 8 wells and each compound 2 + 2.
    """
    if not isinstance(n_wells, (int, np.integer)) or not 5 <= n_wells <= MAX_WELLS:
        raise ConfigError(f"n_wells must be an integer from 5 to {MAX_WELLS}, got {n_wells!r}",
                          hint="5 wells are the fewest that hold DMSO and all four compounds")
    seen: dict[str, int] = {}
    wells = []
    for i in range(int(n_wells)):
        r, c = divmod(i, len(_COLS))
        compound = _CYCLE[i % len(_CYCLE)]
        k = seen.get(compound, 0)
        seen[compound] = k + 1
        conc = 0.0 if compound == CONTROL_COMPOUND else PHENOTYPES[compound].concentrations[k % 2]
        row = _ROWS[r]
        wells.append(WellSpec(f"{row}{_COLS[c]:02d}", ord(row) - ord("A"), _COLS[c], compound,
                              float(conc)))
    return wells


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_NUC_RADIUS = 9.5        # px, median nucleus radius (diameter 19 px)
_NUC_RADIUS_SD = 0.12    # log-normal spread of the radius
_CELL_SCALE = 2.5        # cell radius / nucleus radius (median)
_CELL_SCALE_SD = 0.12
_CELL_ASPECT = 1.2       # median axis ratio of a cell outline
_CLUMPED = 0.5           # fraction of cells placed in clumps
_MITOTIC = 0.03
_DNA_LEVEL, _TUB_LEVEL, _ACT_LEVEL = 1400.0, 650.0, 550.0   # photons at full illumination
_LEVEL_SD = 0.22         # per-cell log-normal spread of stain intensity
_BACKGROUND = {"w1": 40.0, "w2": 60.0, "w3": 55.0}        # additive background (photons)
_TUB_FIBRES = 0.5        # filament contrast in DMSO
_TUB_SOLUBLE = 0.3       # fraction of the tubulin signal that is diffuse (not in filaments)
_PSF_SIGMA = 1.0
_READ_NOISE = 2.0
_FIBRE_BINS = 160


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-12)


def _illumination(seed: int, size: int) -> dict[str, np.ndarray]:
    """The plate's multiplicative illumination field per channel (max 1, corners ≈ 0.6–0.7)."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    fields = {}
    for k, ch in enumerate(CHANNELS):
        rng = np.random.default_rng([seed, 7919, k])
        cy, cx = rng.uniform(-0.12, 0.12, 2)
        tilt = rng.uniform(-0.08, 0.08, 2)
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
        f = (1.0 - 0.38 * r2) * (1.0 + tilt[0] * yy + tilt[1] * xx)
        fields[ch] = (f / f.max()).astype(np.float32)
    return fields


def _fourier_outline(rng: np.random.Generator, n: int, orders: range, sd: float) -> np.ndarray:
    """Per-object coefficients (n, len(orders), 2) of a smooth radial outline modulation; the
    amplitude's spread is ``sd`` for order 2 and falls as 1/order above it."""
    amp = rng.normal(0.0, 1.0, (n, len(orders))) * (sd * 2.0 / np.asarray(orders, float))
    phase = rng.uniform(0, 2 * np.pi, (n, len(orders)))
    return np.stack([amp, phase], axis=-1)


def _outline(u: np.ndarray, v: np.ndarray, coef: np.ndarray, orders: range) -> np.ndarray:
    """1 + Σ_k c_k cos(kθ + φ_k) at the angle θ of (u, v), via powers of e^{iθ}."""
    z = (u + 1j * v) / np.maximum(np.hypot(u, v), 1e-6)
    zk = z ** orders[0]
    r = np.ones(u.shape, dtype=np.float32)
    for j, k in enumerate(orders):
        if j:
            zk = zk * z
        r += coef[j, 0] * (zk * np.exp(1j * coef[j, 1])).real
    return np.maximum(r, 0.6)


def _place_centres(rng: np.random.Generator, n: int, radii: np.ndarray, size: int,
                   spread: float) -> np.ndarray:
    """Nucleus centres: half in clumps, half scattered; nuclei may touch but barely overlap."""
    n_clumps = max(1, int(round(n * _CLUMPED / 4)))
    parents = rng.uniform(0.05 * size, 0.95 * size, (n_clumps, 2))
    centres = np.empty((0, 2))
    kept = []
    for i in range(n):
        clumped = rng.random() < _CLUMPED
        for _ in range(40):
            if clumped:
                p = parents[rng.integers(n_clumps)] + rng.normal(0, spread, 2)
            else:
                p = rng.uniform(0, size, 2)
            if not (0 <= p[0] < size and 0 <= p[1] < size):
                continue
            if len(centres):
                d = np.hypot(*(centres - p).T)
                if np.any(d < 0.98 * (radii[kept] + radii[i])):
                    continue
            centres = np.vstack([centres, p])
            kept.append(i)
            break
    return centres, np.asarray(kept, dtype=int)


def _partition(size: int, centres: np.ndarray, a: np.ndarray, b: np.ndarray, angle: np.ndarray,
               coef: np.ndarray, orders: range, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted-Voronoi partition: each pixel goes to the object with the smallest normalised
    distance d = ρ/R(θ) (ρ in the object's ellipse frame, R its outline) among objects with
    d < ``reach``. Returns (nearest label, its d); label 0 / d = inf where no object reaches."""
    best_d = np.full((size, size), np.inf, dtype=np.float32)
    near = np.zeros((size, size), dtype=np.int32)
    for i in range(len(centres)):
        cy, cx = centres[i]
        ext = reach * max(a[i], b[i]) * 1.3 + 2
        y0, y1 = max(0, int(cy - ext)), min(size, int(cy + ext) + 1)
        x0, x1 = max(0, int(cx - ext)), min(size, int(cx + ext) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
        c, s = np.float32(math.cos(angle[i])), np.float32(math.sin(angle[i]))
        u = (dx * c + dy * s) / a[i]
        v = (-dx * s + dy * c) / b[i]
        d = np.hypot(u, v) / _outline(u, v, coef[i], orders)
        win = (d < reach) & (d < best_d[y0:y1, x0:x1])
        best_d[y0:y1, x0:x1][win] = d[win]
        near[y0:y1, x0:x1][win] = i + 1
    return near, best_d


def _keep_component(labels: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
    """Keep one connected piece of every object: the one overlapping ``anchor`` (same labels)
    most, or the largest; the other pieces become background."""
    out = labels.copy()
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        own = labels[sl] == i
        pieces, n = ndimage.label(own)
        if n <= 1:
            continue
        score = np.bincount(pieces.ravel(), minlength=n + 1).astype(float)
        if anchor is not None:
            score += 1e6 * np.bincount(pieces.ravel(), weights=(anchor[sl] == i).ravel(),
                                       minlength=n + 1)
        score[0] = -1
        drop = own & (pieces != int(np.argmax(score)))
        out[sl][drop] = 0
    return out


# --------------------------------------------------------------------------------------------
# Planted defects (make_example_plate(defects=...)): what a per-cell outlier detector should find
# --------------------------------------------------------------------------------------------

#: The kinds of defective cell :func:`make_example_plate` plants with ``defects > 0``.
DEFECT_KINDS = ("debris", "blurred", "merged")
_DEBRIS_RADIUS = (2.0, 3.5)      # px, a bright speck over the nucleus
_DEBRIS_LEVEL = 3.0              # × the DNA stain level, in every channel (autofluorescent)
_BLUR_SIGMA = 3.0                # px, out-of-focus blur of the cell and 3 px around it


def _merge_nuclei(rng, nuclei, cells, nuc_near, nuc_d, cell_near, centres, radii, n_pairs) -> list[int]:
    """Fuse ``n_pairs`` pairs of touching nuclei (and their cells) into one object, in place: the
    second label's pixels and the convex hull of the two nuclei take the first's label, so the
    pair renders as one peanut-shaped nucleus without a dip between them. Returns the kept labels."""
    from skimage.morphology import convex_hull_image

    if n_pairs <= 0 or len(centres) < 2:
        return []
    d = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(d, np.inf)
    touching = d < 1.15 * (radii[:, None] + radii[None, :])
    present = set(np.unique(nuclei).tolist())
    used: set[int] = set()
    out = []
    for i in rng.permutation(len(centres)):
        if len(out) >= n_pairs:
            break
        a = int(i) + 1
        partners = [int(j) + 1 for j in np.flatnonzero(touching[i]) if int(j) + 1 not in used]
        if a in used or a not in present or not partners:
            continue
        b = partners[int(rng.integers(len(partners)))]
        if b not in present:
            continue
        pair = (nuclei == a) | (nuclei == b)
        ys, xs = np.nonzero(pair)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        hull = np.zeros_like(pair)
        hull[y0:y1, x0:x1] = convex_hull_image(pair[y0:y1, x0:x1])
        hull &= np.isin(nuclei, (0, a, b))
        for img in (nuclei, cells, nuc_near, cell_near):
            img[img == b] = a
        nuclei[hull] = a
        cells[hull] = a
        nuc_near[hull] = a
        nuc_d[hull] = np.minimum(nuc_d[hull], 0.5)
        used.update((a, b))
        out.append(a)
    return out


def _plant_debris_and_blur(rng, signals, cells, nuclei, taken: Mapping[int, str], n_each: int) -> dict[int, str]:
    """Bright debris over ``n_each`` cells' nuclei and an out-of-focus blur of ``n_each`` others
    (cells not in ``taken``), in place on the flat signal arrays. Returns label → kind."""
    labels = np.setdiff1d(np.unique(nuclei), [0, *taken])
    if n_each <= 0 or not len(labels):
        return {}
    pick = rng.permutation(labels)
    debris, blurred = pick[:n_each], pick[n_each:2 * n_each]
    size = cells.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    speck = np.zeros((size, size), dtype=np.float32)
    for lab in debris:
        ys, xs = np.nonzero(nuclei == lab)
        k = int(rng.integers(len(ys)))
        r = rng.uniform(*_DEBRIS_RADIUS)
        speck += np.exp(-((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2) / (2 * (r / 1.5) ** 2)).astype(np.float32)
    mask = ndimage.binary_dilation(np.isin(cells, blurred), iterations=3).ravel()
    for sig in signals:
        img = sig.reshape(size, size)
        if len(blurred):
            sig[mask] = ndimage.gaussian_filter(img, _BLUR_SIGMA).ravel()[mask]
        sig += (_DNA_LEVEL * _DEBRIS_LEVEL) * speck.ravel()
    return {**{int(v): "debris" for v in debris}, **{int(v): "blurred" for v in blurred}}


def well_effect(seed: int, row: int, column: int) -> dict[str, float]:
    """The nuisance variation of one well (as between real wells): multiplicative factors on
    each channel's stain (``"w1"``, ``"w2"``, ``"w3"``; log-sd 0.06), on the cell density
    (``"density"``; 0.12) and on the cell and nucleus size (``"size"``; 0.03)."""
    rng = np.random.default_rng([seed, row, column, 0])       # sites are 1.., so 0 is free
    f = np.exp(rng.normal(0.0, [0.06, 0.06, 0.06, 0.12, 0.03]))
    return {"w1": f[0], "w2": f[1], "w3": f[2], "density": f[3], "size": f[4]}


def render_site(rng: np.random.Generator, *, size: int, compound: str, concentration: float,
                cells_per_site: float, illumination: Mapping[str, np.ndarray],
                well: Mapping[str, float] | None = None, defects: float = 0.0,
                defect_rng: np.random.Generator | None = None, defect_log: list | None = None,
                ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Render one site.

    ``well`` holds the well's nuisance factors (see :func:`well_effect`; default all 1).
    ``defects`` > 0 plants defective cells (:data:`DEFECT_KINDS`, each about ``defects / 3`` of
    the cells), drawn from ``defect_rng`` only (the other draws are those of a clean site until the
    first merge); ``(label, kind)`` of each is appended to ``defect_log``.

    Returns ``(images, nuclei, cells)``: channel key (``"w1"``…) → (size, size) uint16 image,
    and the nuclei and cell label images (uint16, labels 1..n, label i the same cell in both).
    """
    ph = PHENOTYPES.get(compound)
    well = {"w1": 1.0, "w2": 1.0, "w3": 1.0, "density": 1.0, "size": 1.0, **(well or {})}

    def fac(p: str) -> float:
        return 1.0 if ph is None else ph.factor_at(p, concentration)

    area = (size / REFERENCE_SIZE) ** 2
    n_target = int(rng.poisson(cells_per_site * area * fac("cell_count") * well["density"]))

    # --- per-cell biology -------------------------------------------------------------------
    r0 = _NUC_RADIUS * well["size"] * np.exp(rng.normal(0, _NUC_RADIUS_SD, n_target))  # untreated
    mitotic = rng.random(n_target) < _MITOTIC
    r_nuc = r0 * math.sqrt(fac("nucleus_area")) * np.where(mitotic, 0.72, 1.0)
    spread = _CELL_SCALE * _NUC_RADIUS * 1.1
    centres, kept = _place_centres(rng, n_target, r_nuc, size, spread)
    n = len(kept)
    r0, r_nuc, mitotic = r0[kept], r_nuc[kept], mitotic[kept]

    nuc_aspect = np.where(mitotic, 1.0, np.clip(np.exp(np.abs(rng.normal(0.12, 0.1, n))), 1, 1.6))
    nuc_angle = rng.uniform(0, np.pi, n)
    nuc_orders = range(2, 5)
    nuc_coef = _fourier_outline(rng, n, nuc_orders, 0.035)
    na, nb = r_nuc * np.sqrt(nuc_aspect), r_nuc / np.sqrt(nuc_aspect)

    r_cell = (r0 * _CELL_SCALE * np.exp(rng.normal(0, _CELL_SCALE_SD, n)) * fac("cell_radius")
              * np.where(mitotic, 0.55, 1.0))
    aspect = (_CELL_ASPECT * np.exp(rng.normal(0, 0.12, n)) * fac("cell_aspect"))
    aspect = np.where(mitotic, 1.0, np.maximum(aspect, 1.0))
    cell_angle = np.where(rng.random(n) < 0.7, nuc_angle, rng.uniform(0, np.pi, n))
    ca, cb = r_cell * np.sqrt(aspect), r_cell / np.sqrt(aspect)
    cb = np.maximum(cb, 1.35 * r_nuc)                     # the nucleus always fits across
    # the nucleus sits off-centre along the cell's long axis
    shift = rng.normal(0, 0.18, n) * np.maximum(ca - 1.3 * r_nuc, 0)
    cell_centres = centres + np.stack([np.sin(cell_angle), np.cos(cell_angle)], 1) * shift[:, None]
    cell_orders = range(2, 7)
    cell_coef = _fourier_outline(rng, n, cell_orders, 0.07)

    # --- label images ------------------------------------------------------------------------
    nuc_near, nuc_d = _partition(size, centres, na, nb, nuc_angle, nuc_coef, nuc_orders, 1.3)
    nuclei = _keep_component(np.where(nuc_d < 1.0, nuc_near, 0))
    cell_near, cell_d = _partition(size, cell_centres, ca, cb, cell_angle, cell_coef, cell_orders,
                                   1.0)
    cells = np.where(nuclei > 0, nuclei, cell_near)
    cells = _keep_component(cells, anchor=nuclei)
    merged: list[int] = []
    if defects > 0:
        merged = _merge_nuclei(defect_rng, nuclei, cells, nuc_near, nuc_d, cell_near, centres, r_nuc,
                               int(round(defects / len(DEFECT_KINDS) * len(centres))))
    # objects whose nucleus vanished (possible only at the image border) are removed and the
    # labels renumbered 1..n so that label i is the same cell in both images
    present = np.zeros(n + 1, dtype=bool)
    present[np.unique(nuclei)] = True
    present[0] = False
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[present] = np.arange(1, present.sum() + 1)
    nuclei, cells, nuc_near, cell_near = lut[nuclei], lut[cells], lut[nuc_near], lut[cell_near]
    keep = np.flatnonzero(present[1:])
    n = len(keep)
    r_nuc, mitotic, centres = r_nuc[keep], mitotic[keep], centres[keep]
    cell_angle = cell_angle[keep]
    nuc_d = np.where(nuc_near > 0, nuc_d, np.inf)
    planted: dict[int, str] = {int(lut[m]): "merged" for m in merged if lut[m] > 0}

    def per_cell(values: np.ndarray, background: float = 0.0) -> np.ndarray:   # [0] = background
        return np.concatenate([[background], values]).astype(np.float32)

    flat_cells, flat_nuc = cells.ravel(), nuclei.ravel()

    # --- DNA: soft-edged, domed nuclei with granular chromatin ---------------------------------
    dna = np.zeros(size * size, dtype=np.float32)
    pix = np.flatnonzero(np.isfinite(nuc_d.ravel()))
    lab = nuc_near.ravel()[pix]
    d = nuc_d.ravel()[pix]
    dna_level = per_cell(_DNA_LEVEL * well["w1"] * np.exp(rng.normal(0, _LEVEL_SD * 0.6, n))
                         * np.where(mitotic, 2.0, 1.0))
    z = np.clip((1.0 - d) * per_cell(r_nuc)[lab] / 0.7, -30, 30)
    edge = 1.0 / (1.0 + np.exp(-z))
    dome = 0.8 + 0.2 * np.clip(1.0 - d * d, 0, 1)
    chromatin = np.clip(1.0 + 0.22 * _smooth_noise(rng, (size, size), 1.3).ravel()[pix], 0.2, None)
    dna[pix] = dna_level[lab] * edge * dome * chromatin

    # --- cell pixels: coordinates relative to the own nucleus ----------------------------------
    pix = np.flatnonzero(flat_cells)
    lab = flat_cells[pix]
    in_nuc = flat_nuc[pix] > 0
    py, px = np.divmod(pix, size)
    dy = py.astype(np.float32) - per_cell(centres[:, 0])[lab]
    dx = px.astype(np.float32) - per_cell(centres[:, 1])[lab]
    grain = np.clip(1.0 + 0.12 * _smooth_noise(rng, (size, size), 0.8).ravel()[pix], 0.3, None)

    # --- Tubulin: filaments radiating (slightly curved) from the nucleus -----------------------
    rho = np.hypot(dy, dx)
    curl = per_cell(rng.normal(0, 0.25, n))
    phi = np.arctan2(dy, dx) + curl[lab] * rho / 20.0
    fib = ndimage.gaussian_filter1d(rng.standard_normal((n + 1, _FIBRE_BINS)), 0.6, axis=1,
                                    mode="wrap")
    fib = (fib / (fib.std(axis=1, keepdims=True) + 1e-12)).astype(np.float32)
    pos = (phi / np.float32(2 * np.pi) % 1.0) * _FIBRE_BINS
    i0 = pos.astype(np.intp) % _FIBRE_BINS
    w = pos - np.floor(pos)
    streak = fib[lab, i0] * (1 - w) + fib[lab, (i0 + 1) % _FIBRE_BINS] * w
    contrast = _TUB_FIBRES * fac("tubulin_fibres")
    # polymer (filaments) over a diffuse pool of soluble tubulin that fills the whole cell
    filaments = _TUB_SOLUBLE + (1.0 - _TUB_SOLUBLE) * np.maximum(1.0 + contrast * streak, 0.0)
    cd = np.minimum(cell_d.ravel()[pix], 1.0)
    cd[~np.isfinite(cd)] = 1.0
    profile = 0.55 + 0.45 * (1.0 - cd)
    tub_level = per_cell(_TUB_LEVEL * well["w2"] * fac("tubulin_level")
                         * np.exp(rng.normal(0, _LEVEL_SD, n)))
    tub = np.zeros(size * size, dtype=np.float32)
    tub[pix] = tub_level[lab] * profile * filaments * grain * np.where(in_nuc, 0.55, 1.0)

    # --- Actin: cortical rim plus stress fibres along the cell's long axis ---------------------
    from skimage.segmentation import find_boundaries

    rim_dist = ndimage.distance_transform_edt(~find_boundaries(cells, mode="inner")).ravel()[pix]
    rim = np.exp(-rim_dist / 2.0)
    across = -dx * np.sin(per_cell(cell_angle))[lab] + dy * np.cos(per_cell(cell_angle))[lab]
    period = per_cell(rng.uniform(5.5, 8.0, n), background=1.0)
    psi = per_cell(rng.uniform(0, 2 * np.pi, n))
    stripes = (0.5 + 0.5 * np.cos(np.float32(2 * np.pi) * across / period[lab] + psi[lab])) ** 4
    breaks = np.clip(0.5 + 0.6 * _smooth_noise(rng, (size, size), 4.0).ravel()[pix], 0, 1)
    act_level = per_cell(_ACT_LEVEL * well["w3"] * np.exp(rng.normal(0, _LEVEL_SD, n)))
    act = np.zeros(size * size, dtype=np.float32)
    act[pix] = (act_level[lab] * (0.35 + 1.1 * rim + 0.6 * stripes * breaks) * grain
                * np.where(in_nuc, 0.7, 1.0))

    if defects > 0:
        planted.update(_plant_debris_and_blur(defect_rng, (dna, tub, act), cells, nuclei, planted,
                                              int(round(defects / len(DEFECT_KINDS) * n))))
        if defect_log is not None:
            defect_log.extend(sorted(planted.items()))

    # --- optics and camera -------------------------------------------------------------------
    images = {}
    for ch, signal in zip(CHANNELS, (dna, tub, act)):
        blurred = ndimage.gaussian_filter(signal.reshape(size, size), _PSF_SIGMA)
        expected = illumination[ch] * (blurred + _BACKGROUND[ch])
        counts = rng.poisson(np.maximum(expected, 0)).astype(np.float32)
        adu = counts + CAMERA_OFFSET + rng.normal(0, _READ_NOISE, counts.shape).astype(np.float32)
        images[ch] = np.clip(np.rint(adu), 0, MAX_ADU).astype(np.uint16)
    return images, nuclei.astype(np.uint16), cells.astype(np.uint16)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _write_tiff(path: Path, data: np.ndarray, *, compress: bool = False) -> None:
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, photometric="minisblack", metadata=None, datetime=None,
                         software=False, compression="zlib" if compress else None)


def _check(name: str, value, lo, hi=None) -> None:
    ok = isinstance(value, (int, np.integer)) and value >= lo and (hi is None or value <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        raise ConfigError(f"{name} must be an integer {rng}, got {value!r}")


def make_example_plate(out_dir: str | Path, *, plate: str = "EXAMPLE01", n_wells: int = 24,
                       n_sites: int = 2, size: int = 512, seed: int = 0,
                       cells_per_site: int = 60, write_truth: bool = True, defects: float = 0.0) -> Path:
    """Write a deterministic synthetic plate folder and return its path.

    Parameters
    ----------
    out_dir:
        Folder to write (created if needed; existing files of the same names are replaced).
    plate:
        Plate name, the first part of every file name (letters, digits, ``-``; no ``_``).
    n_wells:
        Number of wells (5–140); layout from :func:`plate_layout`.
    n_sites:
        Sites (fields of view) per well.
    size:
        Image side in pixels. The pixel size is fixed (nuclei stay ~19 px across), so a smaller
        image holds fewer cells.
    seed:
        Seed of every random draw; the same arguments give byte-identical files.
    cells_per_site:
        Expected cells in a DMSO site of 512 × 512 px; scaled by ``(size / 512)²`` so the cell
        density does not depend on ``size``.
    write_truth:
        Also write ``ground_truth/`` (label images, illumination fields, ``phenotypes.json``,
        ``sites.csv``).
    defects:
        Fraction of cells (0–0.6) made defective, a third of it of each kind of
        :data:`DEFECT_KINDS`: ``debris`` (a bright speck over the nucleus, in every channel),
        ``blurred`` (the cell out of focus) and ``merged`` (two touching nuclei fused into one
        object, cells too). Drawn from their own seeded stream, in every well (controls too);
        ``ground_truth/defects.csv`` lists them (plate, well, site, label, kind). ``0`` (default)
        gives exactly the files of a plate without the option.

    Writes ``<plate>_<well>_s<site>_w<n>.tif`` (uint16, one per channel, :data:`CHANNELS`),
    ``platemap.csv`` (``well,compound,concentration,control``) and ``manifest.json``.
    """
    if not isinstance(plate, str) or not plate or not all(ch.isalnum() or ch == "-" for ch in plate):
        raise ConfigError(f"plate name must be letters, digits and '-', got {plate!r}",
                          hint="'_' separates the parts of an ImageXpress file name")
    _check("n_sites", n_sites, 1, 99)
    _check("size", size, 64, 8192)
    _check("seed", seed, 0)
    _check("cells_per_site", cells_per_site, 1)
    if isinstance(defects, bool) or not isinstance(defects, (int, float)) or not 0 <= defects <= 0.6:
        raise ConfigError(f"defects must be a fraction from 0 to 0.6, got {defects!r}")
    layout = plate_layout(n_wells)
    out = Path(out_dir)
    truth = out / GROUND_TRUTH_DIR
    illumination = _illumination(int(seed), int(size))

    site_rows, defect_rows = [], []
    for spec in layout:
        nuisance = well_effect(int(seed), spec.row, spec.column)
        for site in range(1, n_sites + 1):
            rng = np.random.default_rng([int(seed), spec.row, spec.column, site])
            planted: list = []
            extra = {} if not defects else {
                "defects": float(defects), "defect_log": planted,
                "defect_rng": np.random.default_rng([int(seed), spec.row, spec.column, site, 104729])}
            images, nuclei, cells = render_site(
                rng, size=int(size), compound=spec.compound, concentration=spec.concentration,
                cells_per_site=float(cells_per_site), illumination=illumination,
                well=nuisance, **extra)
            defect_rows.extend((plate, spec.well, site, lab, kind) for lab, kind in planted)
            stem = f"{plate}_{spec.well}_s{site}"
            for ch, img in images.items():
                _write_tiff(out / f"{stem}_{ch}.tif", img)
            if write_truth:
                _write_tiff(truth / f"{stem}_nuclei.tif", nuclei, compress=True)
                _write_tiff(truth / f"{stem}_cells.tif", cells, compress=True)
            site_rows.append((plate, spec.well, site, spec.compound, spec.concentration,
                              int(nuclei.max())))

    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["well", "compound", "concentration", "control"])
    for spec in layout:
        wr.writerow([spec.well, spec.compound, repr(spec.concentration), spec.control])
    write_text(buf.getvalue(), out / PLATEMAP_FILE)

    if write_truth:
        for ch, f in illumination.items():
            _write_tiff(truth / f"{plate}_illumination_{ch}.tif", f.astype(np.float32),
                        compress=True)
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["plate", "well", "site", "compound", "concentration", "n_cells"])
        wr.writerows(site_rows)
        write_text(buf.getvalue(), truth / "sites.csv")
        if defects:
            buf = io.StringIO()
            wr = csv.writer(buf, lineterminator="\n")
            wr.writerow(["plate", "well", "site", "label", "kind"])
            wr.writerows(defect_rows)
            write_text(buf.getvalue(), truth / "defects.csv")
        write_json({"plate": plate, "seed": int(seed), "control": CONTROL_COMPOUND,
                    "channels": CHANNELS, "camera_offset": CAMERA_OFFSET,
                    "phenotypes": {k: p.to_dict() for k, p in PHENOTYPES.items()}},
                   truth / "phenotypes.json")

    parameters = {"plate": plate, "n_wells": int(n_wells), "n_sites": int(n_sites),
                  "size": int(size), "seed": int(seed), "cells_per_site": int(cells_per_site),
                  "write_truth": bool(write_truth), **({"defects": float(defects)} if defects else {})}
    write_manifest(out, command="profiler example-plate", parameters=parameters,
                   outputs={"images": {"files": len(site_rows) * len(CHANNELS),
                                       "channels": CHANNELS},
                            PLATEMAP_FILE: {"rows": len(layout)},
                            "cells": {"total": sum(r[-1] for r in site_rows)}})
    return out


def defect_truth(cells, plate_dir: str | Path) -> np.ndarray:
    """The planted kind of every measured cell of a plate written with ``defects > 0``.

    ``cells``: a per-cell table with ``Metadata_Plate/Well/Site`` and ``Nuclei_Location_Center_X/Y``.
    Each cell's nucleus centre is looked up in the site's ground-truth nuclei label image (the cell
    label image when it falls outside every true nucleus, e.g. between two split halves); the true
    label is then ``"debris"``, ``"blurred"``, ``"merged"`` (``ground_truth/defects.csv``),
    ``"clean"``, or ``"unmatched"`` when the centre lies in no true cell (a spurious object).
    """
    import pandas as pd

    truth = Path(plate_dir) / GROUND_TRUTH_DIR
    table = pd.read_csv(truth / "defects.csv", dtype={"well": str})
    kinds = {(r.plate, r.well, int(r.site), int(r.label)): r.kind for r in table.itertuples()}
    out = np.full(len(cells), "unmatched", dtype=object)
    keys = cells[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].astype(str).agg("|".join, axis=1)
    x = np.rint(cells["Nuclei_Location_Center_X"].to_numpy(float))
    y = np.rint(cells["Nuclei_Location_Center_Y"].to_numpy(float))
    for key, idx in pd.Series(np.arange(len(cells))).groupby(keys.to_numpy()):
        plate, well, site = key.split("|")
        stem = f"{plate}_{well}_s{int(float(site))}"
        nuc = tifffile.imread(truth / f"{stem}_nuclei.tif")
        cel = tifffile.imread(truth / f"{stem}_cells.tif")
        ii = idx.to_numpy()
        ok = np.isfinite(x[ii]) & np.isfinite(y[ii])
        yi = np.clip(np.nan_to_num(y[ii]).astype(int), 0, nuc.shape[0] - 1)
        xi = np.clip(np.nan_to_num(x[ii]).astype(int), 0, nuc.shape[1] - 1)
        lab = np.where(nuc[yi, xi] > 0, nuc[yi, xi], cel[yi, xi])
        for row, label, good in zip(ii, lab, ok):
            if good and label > 0:
                out[row] = kinds.get((plate, well, int(float(site)), int(label)), "clean")
    return out


def phenotypes_markdown() -> str:
    """The table of planted effects (from :data:`PHENOTYPES`) as Markdown."""
    lines = ["| Compound | Effect | Parameter × factor (high dose; low dose) | Features that carry it |",
             "|---|---|---|---|"]
    for p in PHENOTYPES.values():
        ch = "; ".join(f"`{k}` ×{v:g} (×{p.factor_at(k, p.concentrations[0]):.2f})"
                       for k, v in p.changes.items())
        feats = ", ".join(f"`{f}`" for f in p.features)
        if p.well_features:
            feats += "; per well: " + ", ".join(f"`{f}`" for f in p.well_features)
        lines.append(f"| {p.compound} | {p.description} | {ch} | {feats} |")
    return "\n".join(lines) + "\n"
