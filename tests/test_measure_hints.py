"""A family's error hint that names a pipeline YAML key names one the pipeline loader accepts.

Each family below is called with a bad setting; the ``features.<Family>.<setting>`` keys its hint
names are then written into a pipeline (the built-in ``example`` with that one setting changed) and
loaded: the loader must accept the key and keep the value, so that following the hint works. A
misspelled key (e.g. ``features.params.RadialDistribution.bin_count``) is refused by the loader,
which this test also checks, so a hint naming such a key fails here.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from cellfusion_core.errors import ConfigError
from profiler.config import PIPELINES_DIR, load_pipeline
from profiler.measure import get_family

#: (family, a setting it refuses, a value the family accepts for it)
CASES = [
    ("RadialDistribution", {"bin_count": 0}, 4),
    ("Texture", {"gray_levels": 1}, 256),
    ("Correlation", {"costes_method": "fastest"}, "accurate"),
]


def _field():
    labels = np.zeros((24, 24), np.int32)
    labels[3:11, 3:11] = 1
    labels[12:20, 10:21] = 2
    rng = np.random.default_rng(0)
    return labels, {ch: rng.random(labels.shape).astype(np.float32) for ch in ("DNA", "Actin")}


def _pipeline_with(keys: list[str], value) -> dict:
    raw = yaml.safe_load((PIPELINES_DIR / "example.yaml").read_text(encoding="utf-8"))
    for key in keys:
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return raw


@pytest.mark.parametrize(("family", "bad", "good"), CASES, ids=[c[0] for c in CASES])
def test_hint_names_a_key_the_pipeline_loader_accepts(family, bad, good):
    labels, images = _field()
    fam = get_family(family)
    with pytest.raises(ConfigError) as err:
        fam.fn(labels, images, n_objects=2, **{**fam.defaults, **bad})
    keys = re.findall(r"\bfeatures(?:\.\w+)+", err.value.hint or "")
    assert keys, f"{family}'s hint names no pipeline key: {err.value.hint!r}"
    for key in keys:
        config = load_pipeline(_pipeline_with([key], good))
        node = config.sections
        for part in key.split("."):
            node = node[part]
        assert node == good
        # the key leads to the family's setting: that setting is the one that was refused
        assert key.split(".")[1:] == [family, *bad]


def test_loader_refuses_a_key_that_does_not_exist():
    """The check above can fail: the key the radial hint once named is not accepted."""
    with pytest.raises(ConfigError, match="params"):
        load_pipeline(_pipeline_with(["features.params.RadialDistribution.bin_count"], 4))
