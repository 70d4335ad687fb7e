"""A small per-well profile table with pycytominer/LINCS-style column names (test helper).

``Metadata_broad_sample`` (empty in the DMSO wells), ``Metadata_mmoles_per_liter``, ``Metadata_moa``,
``Metadata_Plate``, ``Metadata_Well`` and a batch column; features carry a planted signature per
mechanism, so NSC and a classifier have something to find.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURES = ("Cells_AreaShape_Area", "Cells_Intensity_MeanIntensity_DNA", "Nuclei_Texture_Contrast_DNA_3_00_256",
            "Cytoplasm_Intensity_MeanIntensity_Actin", "Cells_Granularity_2_Actin", "Nuclei_AreaShape_Eccentricity")


def lincs_style_profiles(moas: dict[str, int] | None = None, *, n_batches: int = 2, doses=(0.1, 1.0),
                         controls_per_plate: int = 4, batch_column: str | None = "Metadata_Batch",
                         pert_iname: bool = False, noise: float = 0.3, seed: int = 0) -> pd.DataFrame:
    """One row per well. ``moas`` maps a MoA to its number of compounds (default: 3 MoAs × 2 and
    one MoA with a single compound). Each batch ``B<b>`` has two replicate plates; compound ``i``
    is in batch ``i % n_batches``, one well per dose on each of its batch's plates (so the
    compounds of a MoA sit in different batches, as NSCB needs). Every plate has
    ``controls_per_plate`` DMSO wells with an empty ``Metadata_broad_sample`` and no MoA.
    ``pert_iname`` adds ``Metadata_pert_iname`` (``"DMSO"`` in the control wells)."""
    moas = moas or {"tubulin inhibitor": 2, "HDAC inhibitor": 2, "kinase inhibitor": 2, "lonely MoA": 1}
    rng = np.random.default_rng(seed)
    sig = {m: rng.normal(0, 1.5, len(FEATURES)) for m in moas}
    compounds = [(f"BRD-K{1000 + 17 * i:05d}-001-01-{i % 9}", m) for i, (m, k) in
                 enumerate((m, j) for m, n in moas.items() for j in range(n))]
    rows = []
    for p in range(2 * n_batches):
        wells = iter(f"{r}{c:02d}" for r in "ABCDEFGHIJKLMNOP" for c in range(1, 25))
        plate = {"Metadata_Plate": f"P{p}"}
        if batch_column:
            plate[batch_column] = f"B{p // 2}"
        for i, (brd, moa) in enumerate(compounds):
            if i % n_batches != p // 2:
                continue
            for dose in doses:
                v = sig[moa] * (0.6 if dose == min(doses) else 1.0) + rng.normal(0, noise, len(FEATURES))
                rows.append({**plate, "Metadata_Well": next(wells), "Metadata_broad_sample": brd,
                             "Metadata_mmoles_per_liter": dose, "Metadata_moa": moa,
                             **({"Metadata_pert_iname": brd.split("-")[1].lower()} if pert_iname else {}),
                             **dict(zip(FEATURES, v))})
        for _ in range(controls_per_plate):
            rows.append({**plate, "Metadata_Well": next(wells), "Metadata_broad_sample": None,
                         "Metadata_mmoles_per_liter": 0.0, "Metadata_moa": None,
                         **({"Metadata_pert_iname": "DMSO"} if pert_iname else {}),
                         **dict(zip(FEATURES, rng.normal(0, noise, len(FEATURES))))})
    return pd.DataFrame(rows)
