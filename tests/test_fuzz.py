"""Fuzzing (hypothesis) of the two readers a user feeds text files to: the platemap reader and the
pipeline loader. Any bytes give a parse or a clear refusal (an InputError / ConfigError with a
message), never another exception; a well-formed platemap parses to exactly its rows whatever
spreadsheet dialect wrote it; a pipeline the loader accepts never fails later on its own values.

(The layout parser is fuzzed the same way in tests/test_properties.py.)
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from profiler.config import AssayConfig, load_pipeline
from cellfusion_core.errors import ConfigError, InputError
from cellfusion_core.names import COMPOUND, CONCENTRATION, CONTROL, WELL
from profiler.plate import read_platemap

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_bytes(data: bytes, name: str, reader, refusal: type[Exception]):
    """``reader`` on ``data`` saved as a file ``name``: its result, or None when it refuses with ``refusal``
    (which must name the file and say what is wrong); any other exception fails the test."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(data)
        try:
            return reader(path)
        except refusal as exc:
            assert name in str(exc) and exc.problem  # names the file and says what is wrong
            return None


def _read_platemap_bytes(data: bytes):
    return _parse_bytes(data, "platemap.csv", read_platemap, InputError)


# --------------------------------------------------------------------------------------- platemaps

_CELL = st.one_of(
    st.sampled_from(["", "B02", "b2", "B002", "AA01", "P24", "Q01", "A49", "DMSO", "taxol", "10 µM", "0,5",
                     "1e-3 mM", "high", "negative", "NA", '"', '""', "a;b", "a,b", "\t", " ", "Metadata_Well"]),
    st.text(max_size=12),
)
_WELLISH = st.one_of(st.from_regex(r"[A-Za-z]{1,2}0{0,2}[0-9]{1,2}", fullmatch=True), _CELL)
_HEADER = st.sampled_from(["well", "Well", "WELL ", "Metadata_Well", "compound", "Compound", "Metadata_Compound",
                           "concentration", "Concentration", "control", "batch", "moa", "", "x"])


@st.composite
def csv_like(draw) -> bytes:
    """Text shaped like a CSV export, with every way it can go wrong."""
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if draw(st.booleans()):  # nearly right: a proper header, a well name first in each row
        header = ["well", "compound", *draw(st.lists(_HEADER, max_size=3))]
        rows = draw(st.lists(st.tuples(_WELLISH, st.lists(_CELL, max_size=5)).map(lambda t: [t[0], *t[1]]),
                             max_size=6))
    else:
        header = draw(st.lists(_HEADER, min_size=0, max_size=6))
        rows = draw(st.lists(st.lists(_CELL, min_size=0, max_size=7), max_size=6))
    quote = draw(st.booleans())

    def fmt(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"' if quote else cell

    text = eol.join(sep.join(fmt(c) for c in r) for r in [header, *rows])
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text.encode(draw(st.sampled_from(["utf-8", "utf-16", "cp1252", "latin-1"])), errors="replace")


@SETTINGS
@given(data=st.one_of(st.binary(max_size=600), csv_like()))
@example(data=b"PK\x03\x04rest")
@example(data=b"\xef\xbb\xbfwell;compound\r\n;;\r\n")
@example(data=b'well,compound\n"B02,DMSO\n')
@example(data=b"well,compound,compound\nB02,a,b\n")
def test_any_bytes_parse_or_are_refused_clearly(data):
    pm = _read_platemap_bytes(data)
    if pm is None:
        return
    # what is accepted is well-formed: unique normalized well names, numeric concentrations
    assert pm[WELL].is_unique
    assert pm[WELL].str.fullmatch(r"(?:[A-P]|A[A-F])(?:0[1-9]|[1-4]\d)").all(), pm[WELL].tolist()
    if CONCENTRATION in pm:
        assert pd.api.types.is_float_dtype(pm[CONCENTRATION])
        assert ((pm[CONCENTRATION] >= 0) | pm[CONCENTRATION].isna()).all()


ROWS = "ABCDEFGHIJKLMNOP"


@st.composite
def platemaps(draw):
    """(expected table, the same platemap as a spreadsheet would write it)."""
    n = draw(st.integers(1, 8))
    wells = draw(st.lists(st.tuples(st.integers(0, 15), st.integers(1, 24)), min_size=n, max_size=n, unique=True))
    compounds = draw(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=10)
                              .map(str.strip).filter(bool), min_size=n, max_size=n))
    concs = draw(st.lists(st.one_of(st.none(), st.integers(0, 10_000).map(lambda i: i / 100)), min_size=n, max_size=n))
    controls = draw(st.lists(st.sampled_from(["", "negative", "positive"]), min_size=n, max_size=n))
    sep = draw(st.sampled_from([",", ";", "\t"]))
    unit = draw(st.sampled_from([None, "µM", "uM", "nM"]))
    style = draw(st.sampled_from(["B02", "B2", "b02", "B002"]))
    names = [{"B02": f"{ROWS[r]}{c:02d}", "B2": f"{ROWS[r]}{c}", "b02": f"{ROWS[r].lower()}{c:02d}",
              "B002": f"{ROWS[r]}{c:03d}"}[style] for r, c in wells]
    header = draw(st.sampled_from([["well", "compound", "concentration", "control"],
                                   ["Well", "Compound", "Concentration", "Control"],
                                   ["Metadata_Well", "Metadata_Compound", "Metadata_Concentration", "Metadata_Control"]]))

    def conc_text(c):
        if c is None:
            return ""
        if unit is None:
            return f"{c:g}".replace(".", "," if sep == ";" else ".")
        value = c * 1000 if unit == "nM" else c
        return f"{value:g}".replace(".", "," if sep == ";" else ".") + draw(st.sampled_from(["", " "])) + unit

    def q(cell: str) -> str:  # quote as spreadsheets do: when needed, or always
        if draw(st.booleans()) or any(ch in cell for ch in (sep, '"', "\n", "\r")):
            return '"' + cell.replace('"', '""') + '"'
        return cell

    lines = [sep.join(q(h) for h in header)]
    lines += [sep.join([q(w), q(cp), q(conc_text(c)), q(ct)]) for w, cp, c, ct in zip(names, compounds, concs, controls)]
    lines += [sep * 3] * draw(st.integers(0, 2))  # Excel's trailing empty rows
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines) + "\n"
    if draw(st.booleans()):
        text = "\ufeff" + text
    expected = pd.DataFrame({
        WELL: pd.Series([f"{ROWS[r]}{c:02d}" for r, c in wells], dtype="str"),
        COMPOUND: pd.Series(compounds, dtype="str"),
        CONCENTRATION: [math.nan if c is None else c for c in concs],
        CONTROL: pd.Series(controls, dtype="str"),
    })
    return expected, text.encode("utf-8")


@SETTINGS
@given(pm=platemaps())
def test_well_formed_platemaps_parse_to_their_rows_in_any_dialect(pm):
    expected, data = pm
    got = _read_platemap_bytes(data)
    assert got is not None, data
    pd.testing.assert_frame_equal(got[[WELL, COMPOUND, CONTROL]], expected[[WELL, COMPOUND, CONTROL]])
    pd.testing.assert_series_equal(got[CONCENTRATION], expected[CONCENTRATION], rtol=1e-9, check_names=False)


# --------------------------------------------------------------------------------------- pipelines

_EXAMPLE = load_pipeline("example").to_dict()


def _load_bytes(data: bytes):
    return _parse_bytes(data, "pipeline.yaml", load_pipeline, ConfigError)


_yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
              st.text(max_size=8), st.sampled_from(["otsu", "shape", "nuclei", "cells", "AreaShape", "w1"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _paths(d, prefix=()):
    """Every key path of a nested mapping (and list index paths)."""
    if isinstance(d, dict):
        for k, v in d.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


_EXAMPLE_PATHS = list(_paths(_EXAMPLE)) + [("segmentation", "nuclei", "threshold_bounds"), ("image", "plane"),
                                           ("image", "max_megapixels"), ("qc", "min_sites"), ("crops", "size"),
                                           ("features", "Texture"), ("layout", "plane"), ("layout", "pattern"),
                                           ("illumination", "method"), ("illumination", "filter_size"),
                                           ("illumination", "downsample"), ("illumination", "max_images"),
                                           ("illumination", "polynomial_degree"), ("crops", "enabled")]


@st.composite
def mutated_pipelines(draw) -> dict:
    """The example pipeline with 1–3 values replaced by random YAML values, or new keys added."""
    cfg = copy.deepcopy(_EXAMPLE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_EXAMPLE_PATHS))
        node = cfg
        for key in path[:-1]:
            if isinstance(node, dict):
                node = node.setdefault(key, {})
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                break
        else:
            if isinstance(node, dict) or (isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node)):
                node[path[-1]] = draw(_yaml_values)
    return cfg


@SETTINGS
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=300).map(str.encode)))
@example(data=b"[" * 5000)
@example(data=b"\xff\xfe")
@example(data=b"channels: [{name: DNA, file: w1, role: nuclei}]\n? [a]\n: b\n")
@example(data=b"1: x\nchannels: []\n")
def test_any_bytes_load_or_are_refused_clearly(data):
    cfg = _load_bytes(data)
    assert cfg is None or isinstance(cfg, AssayConfig)


@SETTINGS
@given(cfg=mutated_pipelines())
def test_a_pipeline_is_refused_when_loaded_or_its_values_work(cfg):
    """Random values anywhere in the example pipeline: a ConfigError at load time, or every stage's
    own parameter reading accepts them (no TypeError/ValueError later, in the middle of a run)."""
    text = yaml.safe_dump(cfg, allow_unicode=True)
    try:
        loaded = load_pipeline(cfg)
    except ConfigError as exc:
        assert exc.problem
        assert _load_bytes(text.encode()) is None  # the same refusal from the file
        return
    from profiler.crops import crop_params
    from profiler.illum import config_params
    from profiler.measure import DEFAULT_FAMILIES, get_family
    from profiler.plate import image_params, layout_of
    from profiler.qc import qc_params
    from profiler.segment import _params

    seg = loaded.section("segmentation")
    _params("nuclei", seg.get("nuclei") or {})
    _params("cells", seg.get("cells") or {})
    feats = loaded.section("features")
    for fam in feats.get("families", DEFAULT_FAMILIES):
        get_family(fam)
    layout_of(loaded)
    image_params(loaded)
    ill = config_params(loaded.section("illumination"))
    assert isinstance(ill["enabled"], bool)
    int(ill["downsample"]), int(ill["max_images"]), int(ill["polynomial_degree"])
    if ill["filter_size"] is not None:
        float(ill["filter_size"])
    crops = crop_params(loaded.section("crops"))
    assert isinstance(crops["enabled"], bool)
    qcp = qc_params(loaded.section("qc"))
    float(qcp["outlier_z"]), int(qcp["min_sites"])
    assert isinstance(_load_bytes(text.encode()), AssayConfig)


@pytest.mark.parametrize("name", ["example", "bbbc021", "cellpainting"])
def test_builtin_pipelines_pass_validation(name):
    assert load_pipeline(name).name == name
