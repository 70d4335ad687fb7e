"""Column-name contract shared by every stage.

* Metadata columns start with ``Metadata_``.
* Features follow CellProfiler: ``<Compartment>_<Category>_<Feature>[_<Channel>[_<Parameters>]]``,
  e.g. ``Nuclei_AreaShape_Area``, ``Cells_Intensity_MeanIntensity_Tubulin``,
  ``Cytoplasm_Texture_InfoMeas1_Actin_3_00_256``.

:func:`parse_feature` splits a name back into its parts so that attributions can be summed into
interpretable groups ("Nuclei · AreaShape", "Cells · Texture · Tubulin").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

METADATA_PREFIX = "Metadata_"
COMPARTMENTS = ("Nuclei", "Cells", "Cytoplasm")

# Standard metadata names (DESIGN.md "Names").
PLATE = "Metadata_Plate"
WELL = "Metadata_Well"
SITE = "Metadata_Site"
COMPOUND = "Metadata_Compound"
CONCENTRATION = "Metadata_Concentration"
MOA = "Metadata_MoA"
BATCH = "Metadata_Batch"
CONTROL = "Metadata_Control"          # "negative", "positive" or "" (treatment)
OBJECT_NUMBER = "Metadata_ObjectNumber"
CELL_COUNT = "Metadata_Object_Count"  # cells per well after aggregation (pycytominer's name)

# CellProfiler measurement categories, in the order CellProfiler lists them.
CATEGORIES = (
    "AreaShape", "Intensity", "RadialDistribution", "Texture", "Granularity", "Correlation",
    "Neighbors", "Location", "Parent", "Children", "Number",
)


def is_metadata(column: str) -> bool:
    """True for ``Metadata_*`` columns."""
    return column.startswith(METADATA_PREFIX)


def metadata_columns(df: pd.DataFrame | Iterable[str]) -> list[str]:
    """The ``Metadata_*`` columns, in table order."""
    cols = df.columns if isinstance(df, pd.DataFrame) else df
    return [c for c in cols if is_metadata(c)]


def feature_columns(df: pd.DataFrame | Iterable[str]) -> list[str]:
    """The feature columns (every non-metadata column), in table order."""
    cols = df.columns if isinstance(df, pd.DataFrame) else df
    return [c for c in cols if not is_metadata(c)]


# Columns that say *where* an object lies in the image or *which* object it is related to.
# They stay in the per-cell table, as in CellProfiler's output, but they describe no phenotype
# (a well's median centre is the image centre), so profiles and models leave them out.
_NON_PHENOTYPE = re.compile(
    r"^[A-Za-z]+_(?:Location_|Parent_|Children_|Number_Object_Number"
    r"|AreaShape_(?:Center_|BoundingBoxMinimum_|BoundingBoxMaximum_)"
    r"|Neighbors_(?:First|Second)ClosestObjectNumber)"
)


#: The same rule as a regular expression (for pattern blocklists, e.g. profiler.profiles.POSITION_BLOCKLIST).
NON_PHENOTYPE_PATTERN = _NON_PHENOTYPE.pattern


def is_profile_feature(column: str) -> bool:
    """True for feature columns that describe a phenotype (not metadata, position or relations)."""
    return not is_metadata(column) and not _NON_PHENOTYPE.match(column)


def profile_feature_columns(df: pd.DataFrame | Iterable[str]) -> list[str]:
    """Feature columns to aggregate, normalize and model: :func:`is_profile_feature`, in order."""
    cols = df.columns if isinstance(df, pd.DataFrame) else df
    return [c for c in cols if is_profile_feature(c)]


def feature_name(compartment: str, category: str, feature: str, channel: str | None = None,
                 *params: object) -> str:
    """Build a CellProfiler-style feature name."""
    parts = [compartment, category, feature]
    if channel is not None:
        parts.append(channel)
    parts.extend(str(p) for p in params)
    return "_".join(parts)


@dataclass(frozen=True)
class FeatureName:
    """A parsed feature name. ``channel`` is None for channel-free features (e.g. AreaShape)."""

    name: str
    compartment: str
    category: str
    feature: str
    channel: str | None
    params: tuple[str, ...]

    def group(self, with_channel: bool = True) -> str:
        """Interpretable group label, e.g. ``"Cells · Texture · Tubulin"``."""
        parts = [self.compartment, self.category]
        if with_channel and self.channel:
            parts.append(self.channel)
        return " · ".join(parts)


_PARAM = re.compile(r"^(\d+(of\d+)?|[0-9]+_[0-9]+|\d+)$")


def parse_feature(name: str, channels: Sequence[str] | None = None) -> FeatureName:
    """Split a CellProfiler-style feature name into compartment, category, feature, channel.

    ``channels`` lists the assay's channel names; when given, the channel is the first token
    that names one (CellProfiler puts the channel after the feature name; Correlation features
    name two channels, joined here as ``"DNA_Tubulin"``; Granularity puts the scale first:
    ``Cells_Granularity_3_DNA``). Without ``channels`` the channel is guessed as the first
    non-numeric token after the feature name. Names with fewer than three parts get category
    ``"Other"``.
    """
    tokens = name.split("_")
    if len(tokens) < 3:
        return FeatureName(name, tokens[0], "Other", "_".join(tokens[1:]) or name, None, ())
    compartment, category, rest = tokens[0], tokens[1], tokens[2:]
    chan_idx: list[int] = []
    if channels:
        known = set(channels)
        chan_idx = [i for i, t in enumerate(rest) if t in known]
    elif category not in ("AreaShape", "Location", "Neighbors", "Number", "Parent", "Children"):
        # heuristics for a name whose channels are unknown
        start = 0 if category == "Granularity" else 1
        for i in range(start, len(rest)):
            if not rest[i].isdigit() and not re.fullmatch(r"\d+of\d+|\d+|[XYZ]", rest[i]):
                chan_idx = [i]
                if category == "Correlation" and i + 1 < len(rest):
                    chan_idx.append(i + 1)
                break
    if category == "Granularity":
        # Cells_Granularity_<scale>_<channel>
        if chan_idx:
            ch = rest[chan_idx[0]]
            scale = [t for i, t in enumerate(rest) if i not in chan_idx]
            return FeatureName(name, compartment, category, "Granularity", ch, tuple(scale))
        return FeatureName(name, compartment, category, "_".join(rest), None, ())
    if not chan_idx:
        return FeatureName(name, compartment, category, "_".join(rest), None, ())
    first = chan_idx[0]
    feature = "_".join(rest[:first]) or rest[0]
    chans = [rest[i] for i in chan_idx]
    params = tuple(t for i, t in enumerate(rest[first:], start=first) if i not in chan_idx)
    return FeatureName(name, compartment, category, feature, "_".join(chans), params)
