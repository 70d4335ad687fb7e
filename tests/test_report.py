"""fusion.metrics and fusion.report: scores beside baselines, CIs, warning banners, figures, example cells."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, top_k_accuracy_score

from fusion import metrics
from fusion.report import FIGURES, report
from fusion.train import train
from conftest import make_profiles


def test_scores_match_sklearn_and_baselines():
    rng = np.random.default_rng(0)
    classes = np.array(["a", "b", "c", "d"])
    y = rng.choice(classes, 80, p=[0.4, 0.3, 0.2, 0.1])
    pred = np.where(rng.random(80) < 0.6, y, rng.choice(classes, 80))
    proba = rng.dirichlet(np.ones(4), 80)
    s = metrics.classification_summary(y, pred, proba, classes, n_boot=200)
    sc = s["scores"]
    assert sc["accuracy"]["value"] == pytest.approx(accuracy_score(y, pred))
    assert sc["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert sc["f1_weighted"]["value"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert sc["top3_accuracy"]["value"] == pytest.approx(top_k_accuracy_score(y, proba, k=3, labels=classes))
    maj = s["majority_class"]
    assert sc["accuracy"]["majority"] == pytest.approx(np.mean(y == maj))
    assert sc["balanced_accuracy"]["majority"] == pytest.approx(0.25)
    assert sc["balanced_accuracy"]["chance"] == pytest.approx(0.25)
    assert sc["top3_accuracy"]["chance"] == pytest.approx(0.75)
    for v in sc.values():
        assert v["ci95"][0] <= v["value"] <= v["ci95"][1]
    assert set(s["per_class"]) == set(classes)


def test_treatment_level_averages_probabilities():
    y, pred, p = metrics.treatment_level(["a", "a", "b"], np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]]),
                                         ["a", "b"], ["t1", "t1", "t2"])
    assert list(y) == ["a", "b"] and list(pred) == ["a", "b"]
    np.testing.assert_allclose(p[0], [0.6, 0.4])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "model"
    train(make_profiles(n_per_class=5), out, gbm_params={"n_estimators": 30}, n_splits=3)
    return out


def test_report_is_self_contained_with_figures(model_dir):
    html = report(model_dir).read_text()
    for f in FIGURES:
        assert (model_dir / "figures" / f).is_file()
    assert html.count("data:image/png;base64,") >= len(FIGURES)
    assert "Warning" not in html  # a good model gets no banner
    assert "No example cells are shown" in html  # trained from a DataFrame: explicit note, no section


def test_warning_banner_when_model_does_not_beat_baseline(tmp_path):
    df = make_profiles(n_per_class=5)
    rng = np.random.default_rng(3)
    df["Metadata_Compound"] = rng.permutation(df["Metadata_Compound"].to_numpy())  # labels carry no signal
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    df[feats] = rng.normal(size=(len(df), len(feats)))
    out = train(df, tmp_path / "m", gbm_params={"n_estimators": 30}, n_splits=3)
    html = report(out).read_text()
    assert 'class="warning"' in html


def test_one_class_banner():
    summary = {"predicted_class_fractions": {"a": 0.95, "b": 0.05}, "majority_class": "a",
               "scores": {"accuracy": {"value": 0.9, "majority": 0.5, "ci95": [0.8, 0.95]}}}
    from fusion.report import _warnings

    w = _warnings(summary)
    assert len(w) == 1 and "only one class" in w[0]


def test_example_cells_from_crops(tmp_path):
    """With single_cell.parquet and crops beside the profiles, the report shows example cells."""
    import tifffile

    from cellfusion_core.layout import CROPS_TABLE, CROPS_TIF

    prof = make_profiles(n_per_class=4)
    ext = tmp_path / "extract"
    ext.mkdir()
    rng = np.random.default_rng(0)
    cells = []
    for _, r in prof.iterrows():
        for k in range(5):
            cells.append({"Metadata_Plate": r["Metadata_Plate"], "Metadata_Well": r["Metadata_Well"],
                          "Metadata_Site": 1, "Metadata_ObjectNumber": k + 1,
                          **{f: r[f] + rng.normal(0, 0.3) for f in prof.columns if not f.startswith("Metadata_")}})
    sc = pd.DataFrame(cells)
    sc.to_parquet(ext / "single_cell.parquet")
    prof.to_parquet(ext / "profiles.parquet")
    tifffile.imwrite(ext / CROPS_TIF, rng.integers(0, 4000, (len(sc), 16, 16, 3)).astype(np.uint16))
    sc[["Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]].to_parquet(ext / CROPS_TABLE)
    out = train(ext / "profiles.parquet", tmp_path / "m", gbm_params={"n_estimators": 20}, n_splits=3)
    html = report(out).read_text()
    assert (out / "figures" / "example_cells.png").is_file()
    assert "lowest and highest deciles" in html
    assert json.loads((out / "manifest.json").read_text())["inputs"]["profiles"]["path"].endswith("profiles.parquet")


def test_plate_view_one_map_per_plate_with_errors_and_cell_counts(tmp_path):
    from fusion.report import _plate_section, parse_well, plate_shape

    assert parse_well("B03") == (1, 2) and parse_well("p24") == (15, 23) and parse_well("AF48") == (31, 47)
    assert parse_well("r02c03") is None
    assert plate_shape(8, 12) == (8, 12) and plate_shape(9, 3) == (16, 24) and plate_shape(2, 2) == (2, 3)
    rows = []
    for plate in ("P1", "P2"):
        for i, well in enumerate(["A01", "A02", "B05", "H12"]):
            label = "a" if i % 2 else "b"
            pred = "a" if (plate, well) == ("P2", "B05") else label
            rows.append({"Metadata_Plate": plate, "Metadata_Well": well, "Metadata_Object_Count": 10 * (i + 1),
                         "Label": label, "Prediction": pred,
                         "Probability_a": 0.8 if pred == "a" else 0.2, "Probability_b": 0.2 if pred == "a" else 0.8})
    oof = pd.DataFrame(rows)
    html = _plate_section(oof, ["a", "b"], tmp_path)
    pngs = sorted(p.name for p in tmp_path.glob("plate_*.png"))
    assert pngs == ["plate_00_P1.png", "plate_01_P2.png"]
    assert "<td>P1</td><td>4</td><td>1.000</td><td>25.000</td>" in html
    assert "<td>P2</td><td>4</td><td>0.750</td>" in html
    bad = _plate_section(oof.assign(Metadata_Well="r01c01"), ["a", "b"], tmp_path / "x")
    assert "No plate view" in bad and "r01c01" in bad


# -- the HTML: rendered from templates (autoescape), saying what the model folder says -------------
class _Page(HTMLParser):
    """A report's visible text, its tables (rows of whitespace-normalised cell texts) and its images."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.text = " ".join(" ".join(self.chunks).split())

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["alt"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        self.chunks.append(data)
        if self._cell is not None:
            self._cell.append(data)


def test_report_escapes_labels_features_plates_and_paths(tmp_path):
    """Text from the user's files is shown as text: a label with <script>, a feature and a plate name with
    & and markup characters, a model folder whose name has them too (XGBoost itself refuses '<' in feature
    names, so the feature carries '>' and '&')."""
    evil_label, evil_plate = "<script>alert('x')</script> & co", "P&<i>1</i>"
    evil_feature = "Nuclei_AreaShape_Area&>Volume"
    df = make_profiles(n_per_class=5)
    df["Metadata_Compound"] = df["Metadata_Compound"].replace({"Big": evil_label})
    df["Metadata_Plate"] = evil_plate
    df = df.rename(columns={"Nuclei_AreaShape_Area": evil_feature})  # Big's planted feature: a top feature
    model = train(df, tmp_path / "m<script>&", gbm_params={"n_estimators": 30}, n_splits=3)
    raw = report(model).read_text()
    assert "<script" not in raw and "<i>" not in raw
    assert "&lt;script&gt;alert(" in raw and "P&amp;&lt;i&gt;1&lt;/i&gt;" in raw
    page = _Page(raw)
    assert str(model.resolve()) in page.text
    rows = [r for t in page.tables for r in t]
    assert any(r[0] == evil_label for r in rows), "the label's per-class row"
    assert any(r[:2] == [evil_plate, str(len(df))] for r in rows), "the plate's row"
    assert any(len(r) > 1 and r[1] == evil_feature for r in rows), "the feature in a top-feature table"
    assert f"Plate {evil_plate}: predicted class" in " ".join(page.images)


def test_report_tables_say_what_the_model_folder_says(model_dir):
    """The rendered tables carry the scores computed from the out-of-fold predictions, the per-class
    scores, and the top features of explain.json, in order and to three decimals."""
    page = _Page(report(model_dir).read_text())
    manifest = json.loads((model_dir / "manifest.json").read_text())
    classes = [str(c) for c in manifest["classes"]]
    oof = pd.read_parquet(model_dir / "oof_predictions.parquet")
    s = metrics.classification_summary(oof["Label"].astype(str).to_numpy(), oof["Prediction"].astype(str).to_numpy(),
                                       oof[[f"Probability_{c}" for c in classes]].to_numpy(dtype=float), classes)

    def f(v):
        return f"{v:.3f}"

    scores, per_class = page.tables[0], page.tables[1]
    assert scores[0] == ["score", "model (95 % CI)", "majority class (95 % CI)", "chance"]
    assert scores[1:] == [[n.replace("_", " "), f"{f(v['value'])} [{f(v['ci95'][0])}, {f(v['ci95'][1])}]",
                           f"{f(v['majority'])} [{f(v['majority_ci95'][0])}, {f(v['majority_ci95'][1])}]",
                           f(v["chance"])] for n, v in s["scores"].items()]
    assert [r[0] for r in per_class[1:]] == classes
    for row in per_class[1:]:
        c = s["per_class"][row[0]]
        assert row[1:5] == [f(c["precision"]), f(c["recall"]), f(c["f1"]), f(c["majority_f1"])]
        assert row[7] == str(c["support"])
    top = json.loads((model_dir / "explain.json").read_text())["top_features"]
    tables = [t for t in page.tables if t[0][:2] == ["#", "feature"]]
    assert len(tables) == len(top)
    for (cls, expected), table in zip(top.items(), tables):
        assert [r[1] for r in table[1:]] == [e["feature"] for e in expected[:5]], cls
        assert [r[4] for r in table[1:]] == [e["direction"] for e in expected[:5]], cls
        assert [r[3] for r in table[1:]] == [f(e["mean_abs_shap"]) for e in expected[:5]], cls
    assert f"{len(classes)} classes · {len(manifest['features'])} features" in page.text
