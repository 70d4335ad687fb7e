"""Which rows a profile step fits on — pycytominer's ``samples`` — over the project's one negative-control rule.

Every step that is fit on some wells and applied to all (normalize, whiten, typical-variation
normalization, factor analysis, the bound ensemble, the reproducibility filter's exclusion) takes
``samples``, as pycytominer's operations do:

* ``"controls"`` (:data:`CONTROLS`, the default): the negative-control rows of
  :func:`cellfusion_core.columns.control_mask` — the rule ``profiler evaluate``, ``fusion train`` and
  the outlier model use too (a ``Metadata_Control``/``Metadata_control_type`` marker, a ``DMSO``
  compound, or an empty compound);
* ``"all"``: every row;
* any other string: a pandas query (pycytominer's ``samples``), e.g. ``"Metadata_Control == 'negative'"``
  (:data:`cellfusion_core.columns.NEGATIVE_CONTROL_QUERY`: the marker alone, which after
  :func:`cellfusion_core.columns.mark_controls` selects the rows of any ``--control`` rule).

:func:`reference_mask` turns ``samples`` into a boolean row mask, once per table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cellfusion_core.columns import control_mask
from cellfusion_core.errors import ConfigError

#: ``samples`` value meaning the negative-control rows of :func:`cellfusion_core.columns.control_mask`.
CONTROLS = "controls"


def reference_mask(table: pd.DataFrame, samples: str = CONTROLS) -> np.ndarray:
    """Boolean mask of the rows of ``table`` that ``samples`` selects (see the module docstring)."""
    if not isinstance(samples, str) or not samples.strip():
        raise ConfigError(f"samples must be 'controls', 'all' or a pandas query, got {samples!r}")
    if samples == "all":
        return np.ones(len(table), dtype=bool)
    if samples == CONTROLS:
        return control_mask(table)
    return query_mask(table, samples)


def query_mask(table: pd.DataFrame, query: str) -> np.ndarray:
    """The rows ``table.query(query)`` keeps, as a mask; a malformed query is a :class:`ConfigError`.

    The query is evaluated on the columns whose names occur in it (pandas resolves every column of
    the frame it is given, which costs more than the query itself on a table of 2,000 features)."""
    try:
        names = [c for c in table.columns if isinstance(c, str) and c in query]
        if names and table.columns.is_unique:
            keep = table[names].eval(query)
            if isinstance(keep, pd.Series) and keep.dtype == bool:
                return keep.to_numpy()
        picked = table.reset_index(drop=True).query(query)
        mask = np.zeros(len(table), dtype=bool)
        mask[picked.index.to_numpy()] = True
        return mask
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds for a bad query
        raise ConfigError(f"cannot evaluate the control query {query!r} ({exc})") from exc


def describe(samples: str) -> str:
    """How ``samples`` is named in messages."""
    if samples == CONTROLS:
        return "the negative-control rule (Metadata_Control/control_type marker, DMSO or empty compound)"
    return repr(samples)
