"""Small helpers shared by the feature families (bincount-based per-object reductions)."""

from __future__ import annotations

import numpy as np


def object_pixels(labels: np.ndarray, n_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of labelled pixels (label ≤ n_objects) and their labels."""
    flat = labels.ravel()
    if flat.dtype.kind in "iu" and flat.dtype.itemsize <= 8 and flat.dtype != np.uint64:
        from profiler.measure._labels import label_pixels

        idx, lab, _ = label_pixels(flat, int(n_objects))
        return idx, lab.astype(np.intp, copy=False)
    idx = np.flatnonzero((flat > 0) & (flat <= n_objects))
    return idx, flat[idx].astype(np.intp)


def per_object_sum(lab: np.ndarray, values: np.ndarray, n_objects: int) -> np.ndarray:
    """Sum of ``values`` per object 1..n_objects (``lab`` = label of each value)."""
    return np.bincount(lab, weights=values, minlength=n_objects + 1)[1:n_objects + 1]


def per_object_count(lab: np.ndarray, n_objects: int) -> np.ndarray:
    return np.bincount(lab, minlength=n_objects + 1)[1:n_objects + 1].astype(np.float64)


def nan_where_empty(values: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Replace entries of objects with no pixels by NaN."""
    out = np.asarray(values, dtype=np.float64).copy()
    out[count == 0] = np.nan
    return out


class ImageCache:
    """Whole-image intermediates of one site's channel images, shared by its compartments.

    Some families compute things that depend on a channel image alone, not on the objects:
    Granularity's spectrum of openings, Correlation's 16-bit levels, dense codes and Costes
    thresholds. Nuclei, Cells and Cytoplasm are measured on the same images, so each of these is
    computed once per site and kept here.

    Lifetime: one site. :func:`profiler.site.measure_site` makes one per site and passes it to
    :func:`profiler.measure.measure_objects` for every compartment; ``measure_objects`` called
    without one (and a family called on its own) makes a new one, used for that call only. Nothing
    outlives the object: there is no module-level cache.

    Entries are keyed by the image objects themselves (identity, not content) and the settings
    they depend on; the cache holds a reference to every key image, so an id cannot be reused by
    another array while it lives. The images must not be changed in place while the cache is in use.
    """

    def __init__(self):
        self._store: dict[tuple, tuple] = {}

    def get(self, kind: str, images: tuple, settings: tuple, make):
        """``make()`` for (kind, these image objects, settings), computed on first use and kept."""
        key = (kind, tuple(id(img) for img in images), settings)
        hit = self._store.get(key)
        if hit is None:
            hit = self._store[key] = (images, make())
        return hit[1]

    def __len__(self) -> int:
        return len(self._store)


class LabelContext:
    """Intermediates of one label image shared by the families that need them.

    Every quantity is computed on first use and kept: the int64 label image, the labelled pixels
    (flat index, label, row, column), per-object pixel counts, the one-pass shape scan (area,
    bounding box, perimeter, Euler number), the convex-hull features (Feret diameters, minimum
    enclosing circle, convex area) and the label-wise distance transforms.
    :func:`profiler.measure.measure_objects` builds one per label image and passes it to the
    families that take a ``context`` keyword; a family called on its own builds its own
    (:func:`label_context`), so each family stays a pure function of (labels, images, params).

    ``images``: the site's :class:`ImageCache` (whole-image intermediates shared with the other
    compartments of the site); a new one when not given.
    """

    def __init__(self, labels: np.ndarray, n_objects: int, images: ImageCache | None = None):
        self.source = labels
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.n = int(n_objects)
        self.images = images if images is not None else ImageCache()
        self._cache: dict = {}

    def _get(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _scan(self):
        """(flat index, label, counts) of :func:`_labels.label_pixels`: one pass over the image."""
        from profiler.measure._labels import label_pixels

        return self._get("label_pixels", lambda: label_pixels(self.labels.ravel(), self.n))

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat index, label) of the pixels with 0 < label ≤ n, in raster order."""
        return self._get("pixels", lambda: self._scan()[:2])

    def rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column (int) of each pixel of :meth:`pixels`."""
        return self._get("rows_cols", lambda: np.divmod(self.pixels()[0], self.labels.shape[1]))

    def rows_cols_float(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`rows_cols` as float64."""
        return self._get("rows_cols_f", lambda: tuple(a.astype(np.float64) for a in self.rows_cols()))

    def centroid(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean row and column of labels 0..n (length n + 1; NaN where a label has no pixels)."""
        def make():
            lab = self.pixels()[1]
            ii, jj = self.rows_cols_float()
            cnt = self.counts().astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                return (np.bincount(lab, ii, minlength=self.n + 1) / cnt,
                        np.bincount(lab, jj, minlength=self.n + 1) / cnt)

        return self._get("centroid", make)

    def counts(self) -> np.ndarray:
        """Pixel count of labels 0..n (int64, length n + 1; entry 0 is 0)."""
        return self._get("counts", lambda: self._scan()[2])

    def grouped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(flat index, label) of :meth:`pixels` ordered by label (raster order within each object)
        and the start of each object in them (int64, length n + 1)."""
        from profiler.measure._labels import group_pixels_by_label

        return self._get("grouped", lambda: group_pixels_by_label(*self._scan()))

    def shape_scan(self):
        """(area, bbox, perimeter, euler) from :func:`_labels.pixel_scan`."""
        from profiler.measure._labels import pixel_scan

        return self._get("scan", lambda: pixel_scan(self.labels, self.n))

    def hull(self):
        """(min_feret, max_feret, mec_i, mec_j, mec_r, convex_area): Feret and convex area from
        :func:`_hull.hull_features`, the circle from :func:`_hull.cp_enclosing_circles`."""
        from profiler.measure._hull import cp_enclosing_circles, hull_candidates, hull_features

        def make():
            ii, jj, starts = hull_candidates(self.labels, self.n)
            bbox = self.shape_scan()[1]
            min_f, max_f, conv = hull_features(ii, jj, starts, self.n, bbox, True)
            # the enclosing circle exactly as CellProfiler computes it (its Zernike features
            # depend on the radius to the last bit, see cp_enclosing_circles)
            mec_i, mec_j, mec_r = cp_enclosing_circles(self.labels, self.n, bbox)
            return min_f, max_f, mec_i, mec_j, mec_r, conv

        return self._get("hull", make)

    def edt(self, border_is_background: bool) -> np.ndarray:
        """Label-wise Euclidean distance transform (:func:`_distance.label_edt`). The variant in
        which the outside of the image is background is derived from the other one
        (:func:`_distance.edt_with_border`), so the two cost one transform."""
        from profiler.measure._distance import edt_with_border, label_edt

        if border_is_background:
            return self._get(("edt", True), lambda: edt_with_border(self.edt(False)))
        return self._get(("edt", False), lambda: label_edt(self.labels, False))


def label_context(labels: np.ndarray, n_objects: int, context: LabelContext | None = None) -> LabelContext:
    """``context`` when it was built for this label image and object count, else a new one (sharing
    ``context``'s :class:`ImageCache` when there is one)."""
    if (context is not None and context.n == int(n_objects)
            and (context.source is labels or context.labels is labels)):
        return context
    return LabelContext(labels, n_objects, context.images if context is not None else None)
