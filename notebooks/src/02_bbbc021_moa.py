# %% [markdown]
# # 02 · BBBC021: mechanism of action from a real screen
#
# BBBC021 (Caie et al. 2010; Ljosa et al. 2013) is the standard benchmark for predicting a compound's
# mechanism of action (MoA) from images of MCF-7 breast-cancer cells: 38 compounds, 103
# compound-concentration *treatments*, 12 MoAs, plus DMSO controls, imaged over 10 weeks (*batches*).
#
# This notebook uses files from `../shared/data/bbbc021` (they are not part of the repository):
#
# 1. **Profile evaluation** (`profiler.evaluate`): how well do the published per-well CellProfiler profiles
#    separate MoAs? NSC = nearest-neighbour MoA accuracy where the neighbour may not be the same compound;
#    NSCB = additionally not from the same batch (the honest number).
# 2. **XGBoost with SHAP** (`fusion.train`) on the per-well profiles, leaving whole compounds out of
#    training, so the model must recognise a mechanism in a compound it has never seen.
# 3. **The CNN** (`fusion.cnn.CNNEnsemble`, CBAM-ResNet) on real single-cell crops — a tiny CPU
#    configuration here; the full recipe needs a GPU.
#
# When the data folder is absent every step prints why it is skipped instead of failing.

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
OUT = Path(os.environ.get("CELLFUSION_NB_OUT", REPO / "demo_output" / "notebooks")) / "02_bbbc021"
OUT.mkdir(parents=True, exist_ok=True)
# the example plate: small in the test suite, the `make demo` size otherwise
PLATE_ARGS = dict(n_wells=8, n_sites=1, size=256) if SMALL else dict(n_wells=24, n_sites=2, size=512)
print(f"outputs go to {OUT}" + ("  (small mode)" if SMALL else ""))


SHARED = Path(os.environ.get("CELLFUSION_SHARED", REPO.parent / "shared")) / "data" / "bbbc021"
HAVE_DATA = (SHARED / "ljosa2013_per_well_mean.csv.gz").is_file()
HAVE_CROPS = (SHARED / "crops" / "bbbc021_crops.tif").is_file()
if not HAVE_DATA:
    print(f"BBBC021 data not found at {SHARED}: this notebook will skip its steps. "
          "It needs the shared data folder beside the repository (../shared/data/bbbc021).")
else:
    print(f"BBBC021 data: {SHARED}" + ("" if HAVE_CROPS else " (no single-cell crops: the CNN step is skipped)"))

# %% [markdown]
# ## 1. The per-well profiles
#
# `ljosa2013_per_well_mean.csv.gz` holds CellProfiler's per-well mean features (Ljosa et al. 2013), keyed
# by plate and well. The image table gives each well's compound and concentration, the MoA table each
# treatment's MoA; the batch is the imaging week (the plate name's prefix). We rename everything to the
# project's `Metadata_*` names, so every other function works on it unchanged.

# %%
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

# %% [markdown]
# ## 2. Profile evaluation: NSC and NSCB
#
# Each treatment's profile is the median of its wells; each treatment's nearest neighbour (cosine
# similarity) among the other compounds' treatments votes for its MoA. Published for these per-well mean
# profiles: about 83 % NSC (Ljosa et al. 2013). Every number is printed beside its chance level.

# %%
from profiler.evaluate import evaluate

warnings.filterwarnings("ignore", category=pd.errors.PerformanceWarning)  # wide tables, harmless

if HAVE_DATA:
    ev = evaluate(profiles, with_map=not SMALL, null_size=1000 if SMALL else 10000, seed=0)
    print("\n".join(ev.lines()))
    # nearest neighbours find the MoA far above chance, also across batches
    assert ev.nsc.accuracy > ev.nsc.chance + 0.3 and ev.nscb.accuracy > ev.nscb.chance + 0.3
    display(pd.Series(ev.nsc.per_moa, name="NSC accuracy per MoA").sort_values().to_frame())
else:
    print("skipped: no BBBC021 data")

# %% [markdown]
# ## 3. XGBoost with SHAP: which measurements identify a mechanism?
#
# The label is the MoA; cross-validation is grouped by **compound** (`group_by="Metadata_Compound"`): all
# wells of a compound are in the same fold, so every score is for compounds the model never saw. DMSO
# wells are left out (they are the reference the profiles were built against, not a mechanism).

# %%
import json
from cellfusion_core import layout  # the file names inside every output folder
from fusion.train import train

if HAVE_DATA:
    treated = profiles[profiles[COMPOUND] != "DMSO"].reset_index(drop=True)
    gbm = dict(n_estimators=40, max_depth=2) if SMALL else {}
    model_dir = train(treated, OUT / "model_moa", label=MOA, group_by=COMPOUND,
                      n_splits=3 if SMALL else 5, seed=0, include_cell_count=False, gbm_params=gbm)
    scores = json.loads((model_dir / layout.METRICS_FILE).read_text())["scores"]
    # compounds the model never saw: still far better than always answering the most common MoA
    assert scores["accuracy"]["value"] > scores["accuracy"]["majority"] + 0.2, scores["accuracy"]
    display(pd.DataFrame({k: {"model": s["value"], "majority-class": s["majority"], "chance": s["chance"]}
                          for k, s in scores.items()}).T.round(3))
else:
    print("skipped: no BBBC021 data")

# %% [markdown]
# SHAP attributes each prediction to the features. Summed over features of the same kind
# (compartment × measurement family × channel), they say *what sort* of cell property drives each MoA —
# e.g. tubulin texture for microtubule stabilisers and destabilisers, nuclear size and DNA content for
# DNA-damaging agents.

# %%
import matplotlib.pyplot as plt

if HAVE_DATA:
    explained = json.loads((model_dir / layout.EXPLAIN_FILE).read_text())
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

# %%
from fusion.report import report

if HAVE_DATA:
    print("full report:", report(model_dir))
else:
    print("skipped: no BBBC021 data")

# %% [markdown]
# ## 4. The CNN on real single-cell crops (tiny CPU configuration)
#
# `crops/bbbc021_crops.tif` holds 9,889 real 68 × 68 crops (DAPI, tubulin, actin), very imbalanced
# (most are DMSO or protein-synthesis inhibitors). Here one small CBAM-ResNet (`resnet10t` backbone,
# images resized to 48 px, a couple of epochs) is trained on the crops of some compounds and tested on
# the crops of *other* compounds, then the cells' probabilities are averaged per well (soft vote).
# The full recipe (`CNNEnsemble()` defaults: five CBAM-ResNet34/50/101 members at 224 px, 20 epochs)
# is meant for a GPU; this tiny run only shows the API and will be far less accurate.

# %%
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

# %% [markdown]
# **Fusion.** Two ways to combine the halves. Per-well CNN embeddings (`well_embeddings` above, or
# `fusion embed` in the shell) can be appended to the profile features (`train(..., embeddings=...)` /
# `fusion train --embeddings`) — for an honest score the CNN that makes them must not have seen the wells
# it embeds. Or `train(profiles, out, crops=...)` / `fusion train --crops` trains the CNN ensemble inside
# the same grouped folds as XGBoost and stacks both models' out-of-fold probabilities with a
# meta-learner (`fusion.stack`); the report then shows the weight the stack gives each model. On CPU that
# is a long run; the full recipe is a GPU job.
