# %% [markdown]
# # 01 · Quickstart: from a plate of images to explained predictions
#
# This notebook runs the whole cellfusion chain through the Python library — the same functions the
# `profiler` and `fusion` command-line tools wrap:
#
# 1. **`profiler.synthetic.make_example_plate`** — write a small synthetic plate: 16-bit TIFFs named the
#    way an ImageXpress names them, plus a `platemap.csv` saying which compound each well received.
#    Four compounds have a *known, planted* effect on the cells; DMSO is the negative control.
# 2. **`profiler.extract.extract`** — find the nuclei and cells in every image, measure
#    CellProfiler-named features for every cell, and summarise each well as one *profile*
#    (median per well, normalised to the DMSO wells with pycytominer).
# 3. **`fusion.train.train`** — learn to tell the compounds apart from the well profiles (XGBoost),
#    scored by cross-validation in which no well is ever in the training and the test set at once.
# 4. **`fusion.report.report`** — one self-contained `report.html`: scores beside the majority-class
#    baseline, confusion matrix, and SHAP plots showing *which cell measurements* drove each call.
#
# Run it top to bottom. It takes a few minutes on a laptop; outputs go to `demo_output/notebooks/`.

# %%
import os
import warnings
from pathlib import Path

# progress bars (rich, tqdm) would like Jupyter widgets; without them they print plain text instead
warnings.filterwarnings("ignore", message='install "ipywidgets"')
warnings.filterwarnings("ignore", message="IProgress not found")

SMALL = os.environ.get("CELLFUSION_NB_SMALL") == "1"   # set by the test suite: tiny data, fast
HERE = Path.cwd()
REPO = next((p for p in (HERE, *HERE.parents) if (p / "pyproject.toml").is_file()), HERE)
OUT = Path(os.environ.get("CELLFUSION_NB_OUT", REPO / "demo_output" / "notebooks")) / "01_quickstart"
OUT.mkdir(parents=True, exist_ok=True)
# the example plate: small in the test suite, the `make demo` size otherwise
PLATE_ARGS = dict(n_wells=8, n_sites=1, size=256) if SMALL else dict(n_wells=24, n_sites=2, size=512)
print(f"outputs go to {OUT}" + ("  (small mode)" if SMALL else ""))

# %% [markdown]
# ## 1. The example plate
#
# Each *site* (field of view) is three images: DNA (`w1`), tubulin (`w2`) and actin (`w3`). The plate map
# is an ordinary CSV — with your own plate you would write it yourself.

# %%
import pandas as pd
from cellfusion_core import layout  # the file names inside every output folder
from profiler.synthetic import PHENOTYPES, make_example_plate

plate_dir = make_example_plate(OUT / "plate", seed=0, **PLATE_ARGS)
platemap = pd.read_csv(plate_dir / layout.PLATEMAP_FILE)
print(sorted(p.name for p in plate_dir.glob("*.tif"))[:6], "...")
# every well of the plate map has its three channels; every planted compound and DMSO are on the plate
assert len(platemap) == PLATE_ARGS["n_wells"]
assert len(list(plate_dir.glob("*.tif"))) == 3 * PLATE_ARGS["n_wells"] * PLATE_ARGS["n_sites"]
assert set(platemap.compound) == {"DMSO", *PHENOTYPES}
platemap.head(8)

# %% [markdown]
# What was planted in each compound's wells (this is the answer the model should find; notebook 03 checks it):

# %%
pd.DataFrame([{"compound": p.compound, "planted effect": p.description.split(". ")[0],
               "example feature that carries it": p.features[0]} for p in PHENOTYPES.values()])

# %% [markdown]
# One site of a DMSO well and one of an Enlargin well, as a colour overlay (blue = DNA, green = tubulin,
# red = actin). `profiler.plate.read_image` reads an image on CellProfiler's intensity scale (raw value / 65535).

# %%
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

# %% [markdown]
# ## 2. Extract: images → cells → features → well profiles
#
# `extract` reads the built-in pipeline `example` (`profiler/pipelines/example.yaml`: channels and their
# roles, segmentation settings, how to build profiles; it measures every feature family). Sites are processed as Dask tasks
# (`workers=0` runs them in this process; `None` starts one worker per core). `overlays=True` also writes
# a picture of the segmentation of every site.

# %%
from profiler.extract import extract
from cellfusion_core.io import read_manifest

extract_dir = extract(plate_dir, OUT / "extract", pipeline="example", workers=0 if SMALL else None,
                      progress=False, overlays=True)
manifest = read_manifest(extract_dir)
print(sorted(p.name for p in extract_dir.iterdir()))
assert all((extract_dir / f).is_file() for f in (layout.SINGLE_CELL, layout.IMAGE, layout.PROFILES))
assert len(list((extract_dir / layout.OVERLAYS_DIR).glob("*.png"))) == PLATE_ARGS["n_wells"] * PLATE_ARGS["n_sites"]
{k: manifest[k] for k in ("command", "outputs") if k in manifest}

# %% [markdown]
# Did the segmentation find the cells? Nuclei outlines and cell outlines drawn over the images:

# %%
overlay = sorted((extract_dir / layout.OVERLAYS_DIR).glob("*.png"))[0]
plt.figure(figsize=(6, 6))
plt.imshow(plt.imread(overlay))
plt.title(overlay.name)
plt.axis("off")
plt.show()

# %% [markdown]
# `single_cell.parquet` has one row per cell: `Metadata_*` columns (plate, well, site, object number,
# compound …) and CellProfiler-named features `<Compartment>_<Category>_<Feature>[_<Channel>]`.
# The feature dictionary (`docs/features.md`) defines every one.

# %%
from cellfusion_core.names import feature_columns, metadata_columns, parse_feature

sc = pd.read_parquet(extract_dir / layout.SINGLE_CELL)
feats = feature_columns(sc)
print(f"{len(sc)} cells, {len(metadata_columns(sc))} metadata columns, {len(feats)} features")
print(pd.Series([parse_feature(f).group(with_channel=False) for f in feats]).value_counts().to_string())
# cells were found in every well, and the features hold numbers
assert sc["Metadata_Well"].nunique() == len(platemap) and len(sc) >= 5 * len(platemap)
assert sc["Nuclei_AreaShape_Area"].gt(0).all()
sc[metadata_columns(sc)[:6] + ["Nuclei_AreaShape_Area", "Cells_Intensity_MeanIntensity_Tubulin"]].head()

# %% [markdown]
# `profiles.parquet` has one row per well: the median of its cells, normalised so that a value is in units
# of "DMSO well-to-well spread" (robust z-score against the control wells). `Metadata_Object_Count` is the
# number of cells in the well. Enlargin's nuclei should stand out:

# %%
prof = pd.read_parquet(extract_dir / layout.PROFILES)
print(f"{len(prof)} wells × {len(feature_columns(prof))} features after feature selection")
feature = "Nuclei_AreaShape_Area"
assert len(prof) == len(platemap)
# the planted effect is visible: every Enlargin well has larger nuclei than every DMSO well
by = prof.groupby("Metadata_Compound")[feature]
assert by.min()["Enlargin"] > by.max()["DMSO"], by.describe()
ax = prof.boxplot(column=feature, by="Metadata_Compound", figsize=(7, 3.5), grid=False)
ax.set_ylabel(f"{feature}\n(robust z vs DMSO)")
ax.set_title(""); plt.suptitle(""); plt.show()

# %% [markdown]
# ## 3. Train: which compound did each well receive?
#
# XGBoost on the well profiles. Cross-validation is *grouped by well*, so a well is never scored by a
# model that saw it. The model folder holds the model in XGBoost's own format (`gbm.ubj`, never a pickle),
# the out-of-fold predictions, SHAP values and a manifest with SHA-256 hashes of every model file.

# %%
import json
from fusion.train import train

model_dir = train(extract_dir / layout.PROFILES, OUT / "model", label="Metadata_Compound", seed=0)
scores = json.loads((model_dir / layout.METRICS_FILE).read_text())["scores"]
assert all(0 <= s["value"] <= 1 for s in scores.values())
if not SMALL:   # the default plate has 4+ wells per compound: the model must beat "always DMSO"
    assert scores["accuracy"]["value"] > scores["accuracy"]["majority"] + 0.15, scores["accuracy"]
pd.DataFrame({name: {"model": s["value"], "majority-class baseline": s["majority"], "chance": s["chance"]}
              for name, s in scores.items()}).T.round(3)

# %% [markdown]
# Always compare a score with its baseline: on a plate with more DMSO wells than anything else, "always
# answer DMSO" already gets the majority-class accuracy.
#
# In small mode (the test suite's 8-well plate) there is one well per compound, so the model cannot
# beat the baseline there; on the default plate it should, clearly.

# %% [markdown]
# ## 4. The report
#
# `report` writes `report.html` (figures embedded, open it in any browser) and the figures as PNGs beside it.

# %%
from IPython.display import Image, display
from fusion.report import report

html_path = report(model_dir)
print("open", html_path)
assert html_path.is_file() and "Confusion matrix" in html_path.read_text(encoding="utf-8")
for name in ("metrics_vs_baseline.png", "confusion_matrix.png", "shap_bar.png", "group_attributions.png"):
    display(Image(filename=str(html_path.parent / "figures" / name)))

# %% [markdown]
# ## The same in the shell
#
# ```bash
# profiler example-plate demo_output/plate
# profiler extract demo_output/plate --pipeline example -o demo_output/extract
# fusion train demo_output/extract/profiles.parquet --label Metadata_Compound -o demo_output/model
# fusion report demo_output/model
# ```
#
# This is what `make demo` runs. Next: `02_bbbc021_moa.ipynb` (a real screen) and
# `03_reading_the_report.ipynb` (how to read SHAP attributions, checked against the planted answer).
