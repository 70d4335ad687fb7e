# %% [markdown]
# # 03 · Reading the report: SHAP attributions, feature groups and example cells
#
# A classifier's accuracy says *whether* the profiles separate the treatments. SHAP says *why*: for every
# well and every class, it splits the model's output into one contribution per feature. This notebook
# explains how to read those numbers, using the synthetic plate, where we **know** what each compound does
# (it was planted by the generator, `profiler.synthetic.PHENOTYPES`), so we can check the explanation
# against the truth.

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
OUT = Path(os.environ.get("CELLFUSION_NB_OUT", REPO / "demo_output" / "notebooks")) / "03_reading"
OUT.mkdir(parents=True, exist_ok=True)
# the example plate: small in the test suite, the `make demo` size otherwise
PLATE_ARGS = dict(n_wells=8, n_sites=1, size=256) if SMALL else dict(n_wells=24, n_sites=2, size=512)
print(f"outputs go to {OUT}" + ("  (small mode)" if SMALL else ""))


import json
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, display

from cellfusion_core import layout  # the file names inside every output folder
from fusion import explain
from fusion.report import report
from fusion.train import train
from profiler.extract import extract
from profiler.synthetic import PHENOTYPES, make_example_plate

plate_dir = make_example_plate(OUT / "plate", seed=0, **PLATE_ARGS)
extract_dir = extract(plate_dir, OUT / "extract", pipeline="example", workers=0 if SMALL else None,
                      progress=False)
model_dir = train(extract_dir / layout.PROFILES, OUT / "model", label="Metadata_Compound", seed=0)
html_path = report(model_dir)
print("report:", html_path)

# %% [markdown]
# ## 1. What one SHAP value means
#
# The model gives every well a score per class (in log-odds). SHAP writes that score as
#
#   score(well, class) = base value(class) + Σ over features SHAP(well, feature, class).
#
# A positive SHAP value pushes the well *towards* the class, a negative one away from it; the size is how
# much. The values of the final model on the training wells are stored in `shap_values.parquet`, one row
# per (class, well). We check the sum against the model's own output:

# %%
import xgboost as xgb
from fusion import modelio

manifest = modelio.read_model_manifest(model_dir)
features, classes = manifest["features"], manifest["classes"]
shap_df = pd.read_parquet(model_dir / layout.SHAP_FILE)
train_df = pd.read_parquet(model_dir / layout.TRAIN_FILE)
explained = json.loads((model_dir / layout.EXPLAIN_FILE).read_text())
base = np.asarray(explained["expected_value"])

booster = modelio.load_xgb_booster(model_dir, layout.GBM_FILE, manifest)
margin = booster.predict(xgb.DMatrix(train_df[features].to_numpy(np.float32)), output_margin=True)
values = np.stack([shap_df.loc[shap_df["Class"] == c, features].to_numpy() for c in classes], axis=-1)
recon = base + values.sum(axis=1)                     # (wells, classes)
print("largest |base + Σ SHAP − model output|:", float(np.abs(recon - margin.reshape(recon.shape)).max()))
assert float(np.abs(recon - margin.reshape(recon.shape)).max()) < 1e-3   # SHAP adds up to the model's output

# %% [markdown]
# The contributions for one Enlargin well, towards the class Enlargin — the largest few in either direction:

# %%
row = int(np.flatnonzero(train_df["Metadata_Compound"].to_numpy() == "Enlargin")[0])
ci = classes.index("Enlargin")
contrib = pd.Series(values[row, :, ci], index=features)
top = contrib.reindex(contrib.abs().sort_values(ascending=False).index[:10])[::-1]
top.plot.barh(color=np.where(top > 0, "#c53030", "#2b6cb0"), figsize=(7, 3.8))
plt.xlabel("SHAP value towards 'Enlargin' (log-odds)")
plt.title(f"well {train_df.loc[row, 'Metadata_Well']}: base {base[ci]:.2f} + Σ SHAP = {recon[row, ci]:.2f}")
plt.tight_layout(); plt.show()

# %% [markdown]
# ## 2. From single wells to the whole plate
#
# *Importance* of a feature for a class = mean |SHAP| over all wells (the report's bar plot). It says how
# much the feature moves that class's score, not in which direction. The *direction* comes from the
# feature's value: the report's "top features" table compares the class's wells with the DMSO wells
# (`higher` / `lower`). The beeswarm plot shows both at once: each dot a well, position = SHAP value,
# colour = the feature's value.

# %%
rows = [{"class": c, "rank": i + 1, "feature": r["feature"], "mean |SHAP|": round(r["mean_abs_shap"], 3),
         "vs DMSO": r["direction"]}
        for c, lst in explained["top_features"].items() for i, r in enumerate(lst[:3])]
display(pd.DataFrame(rows))
display(Image(filename=str(html_path.parent / "figures" / "shap_beeswarm.png")))

# %% [markdown]
# ## 3. Feature groups
#
# Hundreds of features measure a few kinds of things. A CellProfiler name
# `<Compartment>_<Category>_<Feature>_<Channel>_<Parameters>` says which: `cellfusion_core.names.parse_feature`
# splits it, and `.group()` names the group "Compartment · Category · Channel". Summing importance per group
# answers "is it nuclear shape? tubulin intensity in the cytoplasm?" even when correlated features share the
# credit between them (SHAP splits credit among correlated features, so a single feature's rank is less
# reliable than its group's).

# %%
from cellfusion_core.names import parse_feature

for name in ("Nuclei_AreaShape_Area", "Cells_Intensity_StdIntensity_Tubulin",
             "Cytoplasm_Texture_InfoMeas1_Actin_3_00_256", "Cells_Correlation_Correlation_DNA_Tubulin"):
    f = parse_feature(name)
    print(f"{name:45s} → {f.group():30s} (feature {f.feature}, channel {f.channel}, params {f.params})")

groups = pd.DataFrame(explained["group_attributions"]).T          # group × class
display(groups.round(3).head(10))

# %% [markdown]
# ## 4. Worked example: does the explanation find what was planted?
#
# For every treated compound, its ten most important features (by mean |SHAP| for its class) are listed,
# and each is marked ✓ when it is one of the features the generator's ground truth says carry the planted
# effect (`PHENOTYPES[compound].features`, plus per-well quantities such as the cell count for Sparsin).
# The ground-truth lists name the *strongest* carriers only, so an unmarked feature is not necessarily
# wrong (Tubulor's `MinIntensity_Tubulin` is tubulin intensity too, just not a listed statistic). Read the
# groups as well: on the full example plate (seed 0) we measured 6/10 ✓ for Enlargin, 7/10 for Sparsin,
# 4/10 for Tubulor and 1/10 for Elongatin, while the group with the largest attribution was the planted
# one for each — Nuclei · AreaShape (Enlargin), Cells · AreaShape (Sparsin, Elongatin), tubulin intensity
# (Tubulor). In small mode (one well per compound) the model has too little to learn from, and the marks
# mean little.

# %%
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

# %% [markdown]
# ## 5. Example cells
#
# A feature name is only useful if you can picture it. The report shows, for each top feature, cells from
# its lowest and highest deciles (when `profiler extract` wrote single-cell crops). Here we do the same by
# hand for Enlargin's top feature: segment one site with the pipeline's settings
# (`profiler.segment.segment_site`), measure it, and cut crops around the cells
# (`profiler.crops.cut_crops`) with the smallest and largest values.

# %%
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

# %% [markdown]
# ## Checklist for reading a report
#
# 1. **Scores beside baselines.** A model that does not beat the majority class explains nothing; the report
#    warns when that happens.
# 2. **Confusion matrix.** Which classes are confused — often biologically related ones.
# 3. **Groups before features.** Read the group bars first; a single top feature may share its credit with
#    correlated neighbours.
# 4. **Direction.** Importance has no sign; check "higher/lower vs DMSO" or the beeswarm colours.
# 5. **Look at cells.** Example cells from both ends of a feature show what it measures — and reveal
#    artefacts (debris, bad segmentation) that a model can also learn.
# 6. **Cell count.** `Metadata_Object_Count` (cells per well) is often informative (toxicity, proliferation);
#    `fusion train --no-cell-count` leaves it out when you want morphology only.
