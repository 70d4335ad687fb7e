"""Write the walkthrough notebooks in notebooks/ (without outputs) from the cells below.

    .venv/bin/python tools/make_notebooks.py           # (re)write notebooks/*.ipynb
    .venv/bin/python tools/make_notebooks.py --check   # exit 1 when a committed notebook differs

Edit the cells here, not the .ipynb files, so the notebooks stay reviewable as code.
Every notebook reads two environment variables:

* ``CELLFUSION_NB_SMALL=1`` — shrink the work (8 wells × 1 site × 256 px, fewer rounds/epochs);
  ``tests/test_notebooks.py`` sets it to execute every notebook headless in ``make test``.
* ``CELLFUSION_NB_OUT`` — where outputs go (default: ``<repo>/demo_output/notebooks``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"


def _strip(text: str) -> str:
    return text.strip("\n")


def md(text: str):
    return new_markdown_cell(_strip(text))


def code(text: str):
    return new_code_cell(_strip(text))


SETUP = '''
import os
import warnings
from pathlib import Path

# progress bars (rich, tqdm) would like Jupyter widgets; without them they print plain text instead
warnings.filterwarnings("ignore", message='install "ipywidgets"')
warnings.filterwarnings("ignore", message="IProgress not found")

SMALL = os.environ.get("CELLFUSION_NB_SMALL") == "1"   # set by the test suite: tiny data, fast
HERE = Path.cwd()
REPO = next((p for p in (HERE, *HERE.parents) if (p / "pyproject.toml").is_file()), HERE)
OUT = Path(os.environ.get("CELLFUSION_NB_OUT", REPO / "demo_output" / "notebooks")) / "{name}"
OUT.mkdir(parents=True, exist_ok=True)
# the example plate: small in the test suite, the `make demo` size otherwise
PLATE_ARGS = dict(n_wells=8, n_sites=1, size=256) if SMALL else dict(n_wells=24, n_sites=2, size=512)
print(f"outputs go to {{OUT}}" + ("  (small mode)" if SMALL else ""))
'''


# ------------------------------------------------------------------------------------------------
def quickstart():
    return [
        md('''
# 01 · Quickstart: from a plate of images to explained predictions

This notebook runs the whole cellfusion chain through the Python library — the same functions the
`profiler` and `fusion` command-line tools wrap:

1. **`profiler.synthetic.make_example_plate`** — write a small synthetic plate: 16-bit TIFFs named the
   way an ImageXpress names them, plus a `platemap.csv` saying which compound each well received.
   Four compounds have a *known, planted* effect on the cells; DMSO is the negative control.
2. **`profiler.extract.extract`** — find the nuclei and cells in every image, measure
   CellProfiler-named features for every cell, and summarise each well as one *profile*
   (median per well, normalised to the DMSO wells with pycytominer).
3. **`fusion.train.train`** — learn to tell the compounds apart from the well profiles (XGBoost),
   scored by cross-validation in which no well is ever in the training and the test set at once.
4. **`fusion.report.report`** — one self-contained `report.html`: scores beside the majority-class
   baseline, confusion matrix, and SHAP plots showing *which cell measurements* drove each call.

Run it top to bottom. It takes a few minutes on a laptop; outputs go to `demo_output/notebooks/`.
'''),
        code(SETUP.format(name="01_quickstart")),
        md('''
## 1. The example plate

Each *site* (field of view) is three images: DNA (`w1`), tubulin (`w2`) and actin (`w3`). The plate map
is an ordinary CSV — with your own plate you would write it yourself.
'''),
        code('''
import pandas as pd
from profiler.synthetic import PHENOTYPES, make_example_plate

plate_dir = make_example_plate(OUT / "plate", seed=0, **PLATE_ARGS)
platemap = pd.read_csv(plate_dir / "platemap.csv")
print(sorted(p.name for p in plate_dir.glob("*.tif"))[:6], "...")
# every well of the plate map has its three channels; every planted compound and DMSO are on the plate
assert len(platemap) == PLATE_ARGS["n_wells"]
assert len(list(plate_dir.glob("*.tif"))) == 3 * PLATE_ARGS["n_wells"] * PLATE_ARGS["n_sites"]
assert set(platemap.compound) == {"DMSO", *PHENOTYPES}
platemap.head(8)
'''),
        md('''
What was planted in each compound's wells (this is the answer the model should find; notebook 03 checks it):
'''),
        code('''
pd.DataFrame([{"compound": p.compound, "planted effect": p.description.split(". ")[0],
               "example feature that carries it": p.features[0]} for p in PHENOTYPES.values()])
'''),
        md('''
One site of a DMSO well and one of an Enlargin well, as a colour overlay (blue = DNA, green = tubulin,
red = actin). `profiler.plate.read_image` reads an image on CellProfiler's intensity scale (raw value / 65535).
'''),
        code('''
import matplotlib.pyplot as plt
import numpy as np
from profiler.plate import read_image

def composite(stem):
    chans = [read_image(plate_dir / f"{stem}_{w}.tif") for w in ("w3", "w2", "w1")]   # R, G, B
    return np.dstack([np.clip(c / np.percentile(c, 99.8), 0, 1) for c in chans])

fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
for ax, compound in zip(axes, ("DMSO", "Enlargin")):
    well = platemap.loc[platemap.compound == compound, "well"].iloc[0]
    ax.imshow(composite(f"EXAMPLE01_{well}_s1"))
    ax.set_title(f"{compound} ({well})")
    ax.axis("off")
plt.show()
'''),
        md('''
## 2. Extract: images → cells → features → well profiles

`extract` reads the built-in pipeline `example` (`profiler/pipelines/example.yaml`: channels and their
roles, segmentation settings, how to build profiles; it measures every feature family). Sites are processed as Dask tasks
(`workers=0` runs them in this process; `None` starts one worker per core). `overlays=True` also writes
a picture of the segmentation of every site.
'''),
        code('''
from profiler.extract import extract
from cellfusion_core.io import read_manifest

extract_dir = extract(plate_dir, OUT / "extract", pipeline="example", workers=0 if SMALL else None,
                      progress=False, overlays=True)
manifest = read_manifest(extract_dir)
print(sorted(p.name for p in extract_dir.iterdir()))
assert all((extract_dir / f).is_file() for f in ("single_cell.parquet", "image.parquet", "profiles.parquet"))
assert len(list((extract_dir / "overlays").glob("*.png"))) == PLATE_ARGS["n_wells"] * PLATE_ARGS["n_sites"]
{k: manifest[k] for k in ("command", "outputs") if k in manifest}
'''),
        md('''
Did the segmentation find the cells? Nuclei outlines and cell outlines drawn over the images:
'''),
        code('''
overlay = sorted((extract_dir / "overlays").glob("*.png"))[0]
plt.figure(figsize=(6, 6))
plt.imshow(plt.imread(overlay))
plt.title(overlay.name)
plt.axis("off")
plt.show()
'''),
        md('''
`single_cell.parquet` has one row per cell: `Metadata_*` columns (plate, well, site, object number,
compound …) and CellProfiler-named features `<Compartment>_<Category>_<Feature>[_<Channel>]`.
The feature dictionary (`docs/features.md`) defines every one.
'''),
        code('''
from cellfusion_core.names import feature_columns, metadata_columns, parse_feature

sc = pd.read_parquet(extract_dir / "single_cell.parquet")
feats = feature_columns(sc)
print(f"{len(sc)} cells, {len(metadata_columns(sc))} metadata columns, {len(feats)} features")
print(pd.Series([parse_feature(f).group(with_channel=False) for f in feats]).value_counts().to_string())
# cells were found in every well, and the features hold numbers
assert sc["Metadata_Well"].nunique() == len(platemap) and len(sc) >= 5 * len(platemap)
assert sc["Nuclei_AreaShape_Area"].gt(0).all()
sc[metadata_columns(sc)[:6] + ["Nuclei_AreaShape_Area", "Cells_Intensity_MeanIntensity_Tubulin"]].head()
'''),
        md('''
`profiles.parquet` has one row per well: the median of its cells, normalised so that a value is in units
of "DMSO well-to-well spread" (robust z-score against the control wells). `Metadata_Object_Count` is the
number of cells in the well. Enlargin's nuclei should stand out:
'''),
        code('''
prof = pd.read_parquet(extract_dir / "profiles.parquet")
print(f"{len(prof)} wells × {len(feature_columns(prof))} features after feature selection")
feature = "Nuclei_AreaShape_Area"
assert len(prof) == len(platemap)
# the planted effect is visible: every Enlargin well has larger nuclei than every DMSO well
by = prof.groupby("Metadata_Compound")[feature]
assert by.min()["Enlargin"] > by.max()["DMSO"], by.describe()
ax = prof.boxplot(column=feature, by="Metadata_Compound", figsize=(7, 3.5), grid=False)
ax.set_ylabel(f"{feature}\\n(robust z vs DMSO)")
ax.set_title(""); plt.suptitle(""); plt.show()
'''),
        md('''
## 3. Train: which compound did each well receive?

XGBoost on the well profiles. Cross-validation is *grouped by well*, so a well is never scored by a
model that saw it. The model folder holds the model in XGBoost's own format (`gbm.ubj`, never a pickle),
the out-of-fold predictions, SHAP values and a manifest with SHA-256 hashes of every model file.
'''),
        code('''
import json
from fusion.train import train

model_dir = train(extract_dir / "profiles.parquet", OUT / "model", label="Metadata_Compound", seed=0)
scores = json.loads((model_dir / "metrics.json").read_text())["scores"]
assert all(0 <= s["value"] <= 1 for s in scores.values())
if not SMALL:   # the default plate has 4+ wells per compound: the model must beat "always DMSO"
    assert scores["accuracy"]["value"] > scores["accuracy"]["majority"] + 0.15, scores["accuracy"]
pd.DataFrame({name: {"model": s["value"], "majority-class baseline": s["majority"], "chance": s["chance"]}
              for name, s in scores.items()}).T.round(3)
'''),
        md('''
Always compare a score with its baseline: on a plate with more DMSO wells than anything else, "always
answer DMSO" already gets the majority-class accuracy.
''' + '''
In small mode (the test suite's 8-well plate) there is one well per compound, so the model cannot
beat the baseline there; on the default plate it should, clearly.
'''),
        md('''
## 4. The report

`report` writes `report.html` (figures embedded, open it in any browser) and the figures as PNGs beside it.
'''),
        code('''
from IPython.display import Image, display
from fusion.report import report

html_path = report(model_dir)
print("open", html_path)
assert html_path.is_file() and "Confusion matrix" in html_path.read_text(encoding="utf-8")
for name in ("metrics_vs_baseline.png", "confusion_matrix.png", "shap_bar.png", "group_attributions.png"):
    display(Image(filename=str(html_path.parent / "figures" / name)))
'''),
        md('''
## The same in the shell

```bash
profiler example-plate demo_output/plate
profiler extract demo_output/plate --pipeline example -o demo_output/extract
fusion train demo_output/extract/profiles.parquet --label Metadata_Compound -o demo_output/model
fusion report demo_output/model
```

This is what `make demo` runs. Next: `02_bbbc021_moa.ipynb` (a real screen) and
`03_reading_the_report.ipynb` (how to read SHAP attributions, checked against the planted answer).
'''),
    ]


# ------------------------------------------------------------------------------------------------
def bbbc021():
    return [
        md('''
# 02 · BBBC021: mechanism of action from a real screen

BBBC021 (Caie et al. 2010; Ljosa et al. 2013) is the standard benchmark for predicting a compound's
mechanism of action (MoA) from images of MCF-7 breast-cancer cells: 38 compounds, 103
compound-concentration *treatments*, 12 MoAs, plus DMSO controls, imaged over 10 weeks (*batches*).

This notebook uses files from `../shared/data/bbbc021` (they are not part of the repository):

1. **Profile evaluation** (`profiler.evaluate`): how well do the published per-well CellProfiler profiles
   separate MoAs? NSC = nearest-neighbour MoA accuracy where the neighbour may not be the same compound;
   NSCB = additionally not from the same batch (the honest number).
2. **XGBoost with SHAP** (`fusion.train`) on the per-well profiles, leaving whole compounds out of
   training, so the model must recognise a mechanism in a compound it has never seen.
3. **The CNN** (`fusion.cnn.CNNEnsemble`, CBAM-ResNet) on real single-cell crops — a tiny CPU
   configuration here; the full recipe needs a GPU.

When the data folder is absent every step prints why it is skipped instead of failing.
'''),
        code(SETUP.format(name="02_bbbc021") + '''

SHARED = Path(os.environ.get("CELLFUSION_SHARED", REPO.parent / "shared")) / "data" / "bbbc021"
HAVE_DATA = (SHARED / "ljosa2013_per_well_mean.csv.gz").is_file()
HAVE_CROPS = (SHARED / "crops" / "bbbc021_crops.tif").is_file()
if not HAVE_DATA:
    print(f"BBBC021 data not found at {SHARED}: this notebook will skip its steps. "
          "It needs the shared data folder beside the repository (../shared/data/bbbc021).")
else:
    print(f"BBBC021 data: {SHARED}" + ("" if HAVE_CROPS else " (no single-cell crops: the CNN step is skipped)"))
'''),
        md('''
## 1. The per-well profiles

`ljosa2013_per_well_mean.csv.gz` holds CellProfiler's per-well mean features (Ljosa et al. 2013), keyed
by plate and well. The image table gives each well's compound and concentration, the MoA table each
treatment's MoA; the batch is the imaging week (the plate name's prefix). We rename everything to the
project's `Metadata_*` names, so every other function works on it unchanged.
'''),
        code('''
import numpy as np
import pandas as pd
from cellfusion_core.names import BATCH, COMPOUND, CONCENTRATION, MOA, PLATE, WELL, feature_columns

if HAVE_DATA:
    raw = pd.read_csv(SHARED / "ljosa2013_per_well_mean.csv.gz")
    images = pd.read_csv(SHARED / "BBBC021_v1_image.csv.gz")
    moa = pd.read_csv(SHARED / "BBBC021_v1_moa.csv")
    wells = (images.rename(columns={"Image_Metadata_Plate_DAPI": PLATE, "Image_Metadata_Well_DAPI": WELL,
                                    "Image_Metadata_Compound": COMPOUND,
                                    "Image_Metadata_Concentration": CONCENTRATION})
             [[PLATE, WELL, COMPOUND, CONCENTRATION]].drop_duplicates([PLATE, WELL]))
    moa = moa.rename(columns={"compound": COMPOUND, "concentration": CONCENTRATION, "moa": MOA})
    profiles = (raw.rename(columns={"Image_Metadata_Plate": PLATE, "Image_Metadata_Well": WELL})
                .merge(wells, on=[PLATE, WELL], how="left")
                .merge(moa, on=[COMPOUND, CONCENTRATION], how="left"))
    profiles[BATCH] = profiles[PLATE].str.split("_").str[0]     # Week1_22123 → Week1
    profiles = profiles[[c for c in profiles if c.startswith("Metadata_")] + feature_columns(profiles)].copy()
    profiles = profiles[profiles[MOA].notna()].reset_index(drop=True)
    # drop constant columns and those with missing values; z-score each feature
    feats = [c for c in feature_columns(profiles) if profiles[c].notna().all() and profiles[c].std() > 0]
    profiles = profiles[[c for c in profiles if c.startswith("Metadata_")] + feats]
    profiles[feats] = (profiles[feats] - profiles[feats].mean()) / profiles[feats].std()
    print(f"{len(profiles)} wells, {len(feats)} features, {profiles[MOA].nunique()} MoAs (DMSO included), "
          f"{profiles[COMPOUND].nunique()} compounds, {profiles[BATCH].nunique()} batches")
    # the published design: 12 MoAs + DMSO, 38 compounds + DMSO, 10 weeks; every well annotated
    assert (profiles[MOA].nunique(), profiles[COMPOUND].nunique(), profiles[BATCH].nunique()) == (13, 39, 10)
    assert profiles[[PLATE, WELL]].notna().all().all() and not profiles.duplicated([PLATE, WELL]).any()
    display(profiles[MOA].value_counts().to_frame("wells"))
else:
    print("skipped: no BBBC021 data")
'''),
        md('''
## 2. Profile evaluation: NSC and NSCB

Each treatment's profile is the median of its wells; each treatment's nearest neighbour (cosine
similarity) among the other compounds' treatments votes for its MoA. Published for these per-well mean
profiles: about 83 % NSC (Ljosa et al. 2013). Every number is printed beside its chance level.
'''),
        code('''
from profiler.evaluate import evaluate

warnings.filterwarnings("ignore", category=pd.errors.PerformanceWarning)  # wide tables, harmless

if HAVE_DATA:
    ev = evaluate(profiles, with_map=not SMALL, null_size=1000 if SMALL else 10000, seed=0)
    print("\\n".join(ev.lines()))
    # nearest neighbours find the MoA far above chance, also across batches
    assert ev.nsc.accuracy > ev.nsc.chance + 0.3 and ev.nscb.accuracy > ev.nscb.chance + 0.3
    display(pd.Series(ev.nsc.per_moa, name="NSC accuracy per MoA").sort_values().to_frame())
else:
    print("skipped: no BBBC021 data")
'''),
        md('''
## 3. XGBoost with SHAP: which measurements identify a mechanism?

The label is the MoA; cross-validation is grouped by **compound** (`group_by="Metadata_Compound"`): all
wells of a compound are in the same fold, so every score is for compounds the model never saw. DMSO
wells are left out (they are the reference the profiles were built against, not a mechanism).
'''),
        code('''
import json
from fusion.train import train

if HAVE_DATA:
    treated = profiles[profiles[COMPOUND] != "DMSO"].reset_index(drop=True)
    gbm = dict(n_estimators=40, max_depth=2) if SMALL else {}
    model_dir = train(treated, OUT / "model_moa", label=MOA, group_by=COMPOUND,
                      n_splits=3 if SMALL else 5, seed=0, include_cell_count=False, gbm_params=gbm)
    scores = json.loads((model_dir / "metrics.json").read_text())["scores"]
    # compounds the model never saw: still far better than always answering the most common MoA
    assert scores["accuracy"]["value"] > scores["accuracy"]["majority"] + 0.2, scores["accuracy"]
    display(pd.DataFrame({k: {"model": s["value"], "majority-class": s["majority"], "chance": s["chance"]}
                          for k, s in scores.items()}).T.round(3))
else:
    print("skipped: no BBBC021 data")
'''),
        md('''
SHAP attributes each prediction to the features. Summed over features of the same kind
(compartment × measurement family × channel), they say *what sort* of cell property drives each MoA —
e.g. tubulin texture for microtubule stabilisers and destabilisers, nuclear size and DNA content for
DNA-damaging agents.
'''),
        code('''
import matplotlib.pyplot as plt

if HAVE_DATA:
    explained = json.loads((model_dir / "explain.json").read_text())
    groups = pd.DataFrame(explained["group_attributions"]).T   # group × class
    top = groups.sum(axis=1).sort_values().tail(12).index
    groups.loc[top].plot.barh(stacked=True, figsize=(8, 5), legend=False)
    plt.xlabel("mean |SHAP|, summed over the group's features (stacked by MoA)")
    plt.tight_layout(); plt.show()
    for cls in ("Microtubule destabilizers", "Microtubule stabilizers", "DNA damage"):
        if cls in explained["top_features"]:
            rows = explained["top_features"][cls][:5]
            print(f"{cls}: " + "; ".join(f"{r['feature']} ({r['direction']})" for r in rows))
else:
    print("skipped: no BBBC021 data")
'''),
        code('''
from fusion.report import report

if HAVE_DATA:
    print("full report:", report(model_dir))
else:
    print("skipped: no BBBC021 data")
'''),
        md('''
## 4. The CNN on real single-cell crops (tiny CPU configuration)

`crops/bbbc021_crops.tif` holds 9,889 real 68 × 68 crops (DAPI, tubulin, actin), very imbalanced
(most are DMSO or protein-synthesis inhibitors). Here one small CBAM-ResNet (`resnet10t` backbone,
images resized to 48 px, a couple of epochs) is trained on the crops of some compounds and tested on
the crops of *other* compounds, then the cells' probabilities are averaged per well (soft vote).
The full recipe (`CNNEnsemble()` defaults: five CBAM-ResNet34/50/101 members at 224 px, 20 epochs)
is meant for a GPU; this tiny run only shows the API and will be far less accurate.
'''),
        code('''
from sklearn.model_selection import GroupShuffleSplit

if HAVE_DATA and HAVE_CROPS:
    from fusion.cnn.ensemble import CNNEnsemble, well_embeddings
    from fusion.data import load_crops

    crops = load_crops(SHARED / "crops" / "bbbc021_crops.tif")
    keep = (crops.meta[COMPOUND] != "DMSO").to_numpy()
    rng = np.random.default_rng(0)
    idx = np.flatnonzero(keep)
    idx = rng.choice(idx, size=min(len(idx), 600 if SMALL else 4000), replace=False)
    sub = crops.subset(np.sort(idx))
    y = sub.labels("moa")
    groups = sub.meta[COMPOUND].astype(str).to_numpy()
    tr, te = next(GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0).split(y, y, groups))
    cnn = CNNEnsemble(backbones=["resnet10t"], image_size=32 if SMALL else 48, epochs=1 if SMALL else 4,
                      batch_size=64, val_fraction=0.0, device="cpu", seed=0)
    cnn.fit(sub.images[tr], y[tr], groups=groups[tr])
    proba = cnn.predict_proba(sub.images[te])
    assert proba.shape == (len(te), len(cnn.classes_)) and np.allclose(proba.sum(axis=1), 1, atol=1e-4)
    assert not set(groups[tr]) & set(groups[te])    # the test compounds were never trained on
    pred = cnn.classes_[proba.argmax(1)]
    majority = pd.Series(y[tr]).mode()[0]
    print(f"trained on {len(tr)} crops of {len(set(groups[tr]))} compounds, tested on {len(te)} crops "
          f"of {len(set(groups[te]))} other compounds")
    print(f"cell-level accuracy {np.mean(pred == y[te]):.3f}  (majority class '{majority}': "
          f"{np.mean(y[te] == majority):.3f})")
    # per-well soft vote
    test_meta = sub.meta.iloc[te].reset_index(drop=True)
    votes = pd.DataFrame(proba, columns=cnn.classes_)
    votes[[PLATE, WELL]] = test_meta[[PLATE, WELL]]
    well_proba = votes.groupby([PLATE, WELL]).mean()
    well_true = test_meta.groupby([PLATE, WELL])[MOA].first().loc[well_proba.index]
    print(f"well-level accuracy (soft vote) {np.mean(well_proba.idxmax(axis=1) == well_true):.3f} "
          f"on {len(well_proba)} wells")
    emb = well_embeddings(cnn.embed(sub.images[te]), test_meta)
    assert len(emb) == len(well_proba)
    print(f"per-well CNN embeddings for `fusion train --embeddings`: {emb.shape[0]} wells × "
          f"{sum(c.startswith('Embedding_') for c in emb.columns)} dimensions")
elif HAVE_DATA:
    print("skipped: the BBBC021 single-cell crops are absent")
else:
    print("skipped: no BBBC021 data")
'''),
        md('''
**Fusion.** Two ways to combine the halves. Per-well CNN embeddings (`well_embeddings` above, or
`fusion embed` in the shell) can be appended to the profile features (`train(..., embeddings=...)` /
`fusion train --embeddings`) — for an honest score the CNN that makes them must not have seen the wells
it embeds. Or `train(profiles, out, crops=...)` / `fusion train --crops` trains the CNN ensemble inside
the same grouped folds as XGBoost and stacks both models' out-of-fold probabilities with a
meta-learner (`fusion.stack`); the report then shows the weight the stack gives each model. On CPU that
is a long run; the full recipe is a GPU job.
'''),
    ]


# ------------------------------------------------------------------------------------------------
def reading():
    return [
        md('''
# 03 · Reading the report: SHAP attributions, feature groups and example cells

A classifier's accuracy says *whether* the profiles separate the treatments. SHAP says *why*: for every
well and every class, it splits the model's output into one contribution per feature. This notebook
explains how to read those numbers, using the synthetic plate, where we **know** what each compound does
(it was planted by the generator, `profiler.synthetic.PHENOTYPES`), so we can check the explanation
against the truth.
'''),
        code(SETUP.format(name="03_reading") + '''

import json
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, display

from fusion import explain
from fusion.report import report
from fusion.train import train
from profiler.extract import extract
from profiler.synthetic import PHENOTYPES, make_example_plate

plate_dir = make_example_plate(OUT / "plate", seed=0, **PLATE_ARGS)
extract_dir = extract(plate_dir, OUT / "extract", pipeline="example", workers=0 if SMALL else None,
                      progress=False)
model_dir = train(extract_dir / "profiles.parquet", OUT / "model", label="Metadata_Compound", seed=0)
html_path = report(model_dir)
print("report:", html_path)
'''),
        md('''
## 1. What one SHAP value means

The model gives every well a score per class (in log-odds). SHAP writes that score as

  score(well, class) = base value(class) + Σ over features SHAP(well, feature, class).

A positive SHAP value pushes the well *towards* the class, a negative one away from it; the size is how
much. The values of the final model on the training wells are stored in `shap_values.parquet`, one row
per (class, well). We check the sum against the model's own output:
'''),
        code('''
import xgboost as xgb
from fusion import modelio

manifest = modelio.read_model_manifest(model_dir)
features, classes = manifest["features"], manifest["classes"]
shap_df = pd.read_parquet(model_dir / "shap_values.parquet")
train_df = pd.read_parquet(model_dir / "training_profiles.parquet")
explained = json.loads((model_dir / "explain.json").read_text())
base = np.asarray(explained["expected_value"])

booster = modelio.load_xgb_booster(model_dir, "gbm.ubj", manifest)
margin = booster.predict(xgb.DMatrix(train_df[features].to_numpy(np.float32)), output_margin=True)
values = np.stack([shap_df.loc[shap_df["Class"] == c, features].to_numpy() for c in classes], axis=-1)
recon = base + values.sum(axis=1)                     # (wells, classes)
print("largest |base + Σ SHAP − model output|:", float(np.abs(recon - margin.reshape(recon.shape)).max()))
assert float(np.abs(recon - margin.reshape(recon.shape)).max()) < 1e-3   # SHAP adds up to the model's output
'''),
        md('''
The contributions for one Enlargin well, towards the class Enlargin — the largest few in either direction:
'''),
        code('''
row = int(np.flatnonzero(train_df["Metadata_Compound"].to_numpy() == "Enlargin")[0])
ci = classes.index("Enlargin")
contrib = pd.Series(values[row, :, ci], index=features)
top = contrib.reindex(contrib.abs().sort_values(ascending=False).index[:10])[::-1]
top.plot.barh(color=np.where(top > 0, "#c53030", "#2b6cb0"), figsize=(7, 3.8))
plt.xlabel("SHAP value towards 'Enlargin' (log-odds)")
plt.title(f"well {train_df.loc[row, 'Metadata_Well']}: base {base[ci]:.2f} + Σ SHAP = {recon[row, ci]:.2f}")
plt.tight_layout(); plt.show()
'''),
        md('''
## 2. From single wells to the whole plate

*Importance* of a feature for a class = mean |SHAP| over all wells (the report's bar plot). It says how
much the feature moves that class's score, not in which direction. The *direction* comes from the
feature's value: the report's "top features" table compares the class's wells with the DMSO wells
(`higher` / `lower`). The beeswarm plot shows both at once: each dot a well, position = SHAP value,
colour = the feature's value.
'''),
        code('''
rows = [{"class": c, "rank": i + 1, "feature": r["feature"], "mean |SHAP|": round(r["mean_abs_shap"], 3),
         "vs DMSO": r["direction"]}
        for c, lst in explained["top_features"].items() for i, r in enumerate(lst[:3])]
display(pd.DataFrame(rows))
display(Image(filename=str(html_path.parent / "figures" / "shap_beeswarm.png")))
'''),
        md('''
## 3. Feature groups

Hundreds of features measure a few kinds of things. A CellProfiler name
`<Compartment>_<Category>_<Feature>_<Channel>_<Parameters>` says which: `cellfusion_core.names.parse_feature`
splits it, and `.group()` names the group "Compartment · Category · Channel". Summing importance per group
answers "is it nuclear shape? tubulin intensity in the cytoplasm?" even when correlated features share the
credit between them (SHAP splits credit among correlated features, so a single feature's rank is less
reliable than its group's).
'''),
        code('''
from cellfusion_core.names import parse_feature

for name in ("Nuclei_AreaShape_Area", "Cells_Intensity_StdIntensity_Tubulin",
             "Cytoplasm_Texture_InfoMeas1_Actin_3_00_256", "Cells_Correlation_Correlation_DNA_Tubulin"):
    f = parse_feature(name)
    print(f"{name:45s} → {f.group():30s} (feature {f.feature}, channel {f.channel}, params {f.params})")

groups = pd.DataFrame(explained["group_attributions"]).T          # group × class
display(groups.round(3).head(10))
'''),
        md('''
## 4. Worked example: does the explanation find what was planted?

For every treated compound, its ten most important features (by mean |SHAP| for its class) are listed,
and each is marked ✓ when it is one of the features the generator's ground truth says carry the planted
effect (`PHENOTYPES[compound].features`, plus per-well quantities such as the cell count for Sparsin).
The ground-truth lists name the *strongest* carriers only, so an unmarked feature is not necessarily
wrong (Tubulor's `MinIntensity_Tubulin` is tubulin intensity too, just not a listed statistic). Read the
groups as well: on the full example plate (seed 0) we measured 6/10 ✓ for Enlargin, 7/10 for Sparsin,
4/10 for Tubulor and 1/10 for Elongatin, while the group with the largest attribution was the planted
one for each — Nuclei · AreaShape (Enlargin), Cells · AreaShape (Sparsin, Elongatin), tubulin intensity
(Tubulor). In small mode (one well per compound) the model has too little to learn from, and the marks
mean little.
'''),
        code('''
table = []
for compound, ph in PHENOTYPES.items():
    if compound not in explained["top_features"]:
        continue
    truth = set(ph.features) | set(ph.well_features)
    top = [r["feature"] for r in explained["top_features"][compound]]
    hits = [f for f in top if f in truth]
    table.append({"compound": compound, "planted": ph.description.split(". ")[0],
                  "top-10 features that carry the planted effect": f"{len(hits)}/{len(top)}",
                  "top feature": top[0] + (" ✓" if top[0] in truth else ""),
                  "top feature's group": explain.feature_group(top[0]),
                  "group with the largest attribution": groups[compound].idxmax()})
assert len(table) == len(PHENOTYPES)
if not SMALL:   # on the default plate every compound's top ten holds at least one planted feature
    assert all(int(r["top-10 features that carry the planted effect"].split("/")[0]) >= 1 for r in table), table
pd.DataFrame(table)
'''),
        md('''
## 5. Example cells

A feature name is only useful if you can picture it. The report shows, for each top feature, cells from
its lowest and highest deciles (when `profiler extract` wrote single-cell crops). Here we do the same by
hand for Enlargin's top feature: segment one site with the pipeline's settings
(`profiler.segment.segment_site`), measure it, and cut crops around the cells
(`profiler.crops.cut_crops`) with the smallest and largest values.
'''),
        code('''
from profiler.config import load_pipeline
from profiler.crops import cut_crops
from profiler.extract import measure_site
from profiler.plate import discover, read_site
from profiler.segment import segment_site

feature = explained["top_features"]["Enlargin"][0]["feature"]
if feature.startswith("Metadata_") or "_Parent_" in feature or "_Children_" in feature:
    feature = "Nuclei_AreaShape_Area"          # a per-well quantity or a count has no per-cell picture
cfg = load_pipeline("example")
sites = discover(plate_dir, cfg).complete_sites
cells, values_ = [], []
for site in sites[: 4 if SMALL else 8]:
    images = read_site(site)
    seg = segment_site(images, nuclei_channel="DNA", cells_channel="Tubulin", params=cfg.section("segmentation"))
    meas = measure_site(seg, images, cfg.section("features"))
    crops, numbers = cut_crops(seg.cells, images, size=48, channels=["Actin", "Tubulin", "DNA"])
    cells.append(crops)
    values_.append(meas.set_index("Metadata_ObjectNumber").loc[numbers, feature].to_numpy())
crops, vals = np.concatenate(cells), np.concatenate(values_)
assert len(crops) == len(vals) >= 10 and np.isfinite(vals).all()
order = np.argsort(vals)
pick = np.r_[order[:5], order[-5:]]
fig, axes = plt.subplots(1, 10, figsize=(13, 1.9))
for ax, i in zip(axes, pick):
    c = crops[i].astype(float)
    ax.imshow(np.clip(c / np.percentile(crops, 99.5, axis=(0, 1, 2)), 0, 1))
    ax.set_title(f"{vals[i]:.3g}", fontsize=8); ax.axis("off")
fig.suptitle(f"{feature}: 5 lowest (left) and 5 highest (right) cells"); plt.show()
'''),
        md('''
## Checklist for reading a report

1. **Scores beside baselines.** A model that does not beat the majority class explains nothing; the report
   warns when that happens.
2. **Confusion matrix.** Which classes are confused — often biologically related ones.
3. **Groups before features.** Read the group bars first; a single top feature may share its credit with
   correlated neighbours.
4. **Direction.** Importance has no sign; check "higher/lower vs DMSO" or the beeswarm colours.
5. **Look at cells.** Example cells from both ends of a feature show what it measures — and reveal
   artefacts (debris, bad segmentation) that a model can also learn.
6. **Cell count.** `Metadata_Object_Count` (cells per well) is often informative (toxicity, proliferation);
   `fusion train --no-cell-count` leaves it out when you want morphology only.
'''),
    ]


NOTEBOOKS = {"01_quickstart.ipynb": quickstart, "02_bbbc021_moa.ipynb": bbbc021,
             "03_reading_the_report.ipynb": reading}


def build(name: str) -> str:
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (cellfusion .venv)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"   # stable ids: regenerating changes nothing
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="write notebooks/*.ipynb")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    bad = 0
    for name in NOTEBOOKS:
        path, text = NB_DIR / name, build(name)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                print(f"{path} differs from tools/make_notebooks.py", file=sys.stderr)
                bad += 1
        else:
            from cellfusion_core.io import write_text

            write_text(text, path)
            print(f"wrote {path.relative_to(REPO)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
