"""The file names inside every folder the two tools write: one home for each name.

The module that writes a file and every module that reads it take the name from here, so a folder's
layout is stated once. Names are relative to the folder (join them with ``out_dir / NAME``).

Every output folder
    ``manifest.json`` (:data:`MANIFEST`, written by :func:`cellfusion_core.io.write_manifest`).

``profiler extract PLATE_DIR -o OUT`` (and ``profiler ingest`` / ``profiler aggregate``, which write
the tables of the same name)
    :data:`SINGLE_CELL`, :data:`IMAGE`, :data:`PROFILES`, :data:`OUTLIERS_MODEL`, :data:`CROPS_TIF`,
    :data:`CROPS_TABLE`, the per-site partitions under :data:`SITES_DIR` (:func:`site_table_file`,
    :func:`site_crops_file`, :func:`site_record_file`), the illumination functions under :data:`ILLUM_DIR`
    (:func:`illumination_file`), the outline PNGs under :data:`OVERLAYS_DIR`, and the run's lock
    :data:`EXTRACT_LOCK`.

A plate folder (input)
    :data:`PLATEMAP_FILE`, read when ``--platemap`` is not given.

``profiler evaluate -o DIR`` / ``profiler cluster -o DIR``
    :data:`SCORES_FILE`, :data:`ACTIVITY_FILE` / :data:`CLUSTERS_FILE`, :data:`DISTANCES_FILE`,
    :data:`CLUSTERS_FIGURE`, :data:`SCORES_FILE`.

``fusion train PROFILES -o MODEL_DIR`` (the model folder; ``fusion report`` and ``fusion predict`` read it)
    :data:`GBM_FILE`, :data:`GBM_CONFIG`, :data:`GBM_EMB_FILE`, :data:`GBM_EMB_CONFIG`,
    :data:`STACK_FILE`, :data:`OOF_FILE`, :data:`TRAIN_FILE`, :data:`SHAP_FILE`, :data:`METRICS_FILE`,
    :data:`EXPLAIN_FILE`, :data:`ATTENTION_FILE`, the CNN ensemble's folder :data:`CNN_DIR`
    (:data:`ENSEMBLE_JSON` + one weights/config pair per member, :func:`cnn_member`), and what
    ``fusion report`` adds: :data:`REPORT_HTML` and its PNGs under :data:`FIGURES_DIR`. ``fusion train-cnn
    -o DIR`` writes a folder shaped like :data:`CNN_DIR`.

``fusion train-ssl -o DIR`` (a self-supervised backbone)
    :data:`SSL_WEIGHTS`, :data:`SSL_CONFIG`.

``fusion predict MODEL_DIR PROFILES -o DIR``
    :data:`PREDICTIONS_FILE`.
"""

from __future__ import annotations

from pathlib import Path

# --- every output folder ---------------------------------------------------------------------------
MANIFEST = "manifest.json"

# --- profiler extract OUT/ -------------------------------------------------------------------------
SINGLE_CELL = "single_cell.parquet"  #: one row per cell (Metadata_* + features), written site by site
IMAGE = "image.parquet"  #: one row per site: QC measures, status, cell counts
PROFILES = "profiles.parquet"  #: one row per well: aggregated, normalized, selected
OUTLIERS_MODEL = "outliers.json"  #: the cell-outlier model (PCA + robust distances) as JSON
CROPS_TIF = "crops.tif"  #: single-cell crops, (cells, size, size, channels), for the CNN
CROPS_TABLE = "crops.parquet"  #: which cell each crop is (row i ↔ crop i)
SITES_DIR = "sites"  #: finished sites' partitions (resumable runs)
ILLUM_DIR = "illum"  #: per-plate, per-channel illumination functions (.npy)
OVERLAYS_DIR = "overlays"  #: segmentation outlines per site (<site>.png), with --overlays
EXTRACT_LOCK = ".extract.lock"  #: advisory lock held for the whole run

# --- a plate folder (input) ------------------------------------------------------------------------
PLATEMAP_FILE = "platemap.csv"

# --- profiler evaluate -o DIR / profiler cluster -o DIR ---------------------------------------------
SCORES_FILE = "scores.json"  #: evaluate: the scores; cluster: the clustering's agreement with the labels
ACTIVITY_FILE = "activity.parquet"  #: evaluate: phenotypic activity per compound
CLUSTERS_FILE = "clusters.parquet"
DISTANCES_FILE = "distances.parquet"
CLUSTERS_FIGURE = "clusters.png"

# --- fusion train MODEL_DIR/ -----------------------------------------------------------------------
GBM_FILE = "gbm.ubj"  #: XGBoost on the profiles (XGBoost's own UBJ)
GBM_CONFIG = "gbm.json"
GBM_EMB_FILE = "gbm_embeddings.ubj"  #: XGBoost on profiles ⊕ CNN embeddings (with a CNN only)
GBM_EMB_CONFIG = "gbm_embeddings.json"
STACK_FILE = "stack.json"  #: the meta-learner (with a CNN only)
OOF_FILE = "oof_predictions.parquet"  #: out-of-fold probabilities of every model
TRAIN_FILE = "training_profiles.parquet"  #: the rows and features the final model was fit on
SHAP_FILE = "shap_values.parquet"
METRICS_FILE = "metrics.json"  #: cross-validated scores and baselines
EXPLAIN_FILE = "explain.json"  #: SHAP importance per feature and per feature group
ATTENTION_FILE = "cnn_attention.parquet"  #: CBAM attention of example cells (with a CNN only)
CNN_DIR = "cnn"  #: the CNN ensemble's folder
ENSEMBLE_JSON = "ensemble.json"  #: inside CNN_DIR: members and preprocessor
REPORT_HTML = "report.html"  #: fusion report's page (default place)
FIGURES_DIR = "figures"  #: fusion report's PNGs, beside the page

# --- fusion train-ssl DIR/ ---------------------------------------------------------------------------
SSL_WEIGHTS = "ssl.safetensors"
SSL_CONFIG = "ssl.json"

# --- fusion predict -o DIR -------------------------------------------------------------------------
PREDICTIONS_FILE = "predictions.parquet"


def illumination_file(out_dir: str | Path, plate: str, channel: str) -> Path:
    """``OUT/illum/<plate>_<channel>.npy``: one plate's illumination function for one channel."""
    return Path(out_dir) / ILLUM_DIR / f"{plate}_{channel}.npy"


def site_table_file(stem: str) -> str:
    """Inside :data:`SITES_DIR`: one finished site's cells (``<stem>.parquet``)."""
    return f"{stem}.parquet"


def site_crops_file(stem: str) -> str:
    """Inside :data:`SITES_DIR`: one finished site's crops (``<stem>.crops.npy``)."""
    return f"{stem}.crops.npy"


def site_record_file(stem: str) -> str:
    """Inside :data:`SITES_DIR`: the record that vouches for a site's files (``<stem>.json``, written last)."""
    return f"{stem}.json"


def cnn_member(i: int) -> str:
    """Stem of the ``i``-th ensemble member's files inside :data:`CNN_DIR` (``.safetensors`` + ``.json``)."""
    return f"member_{i}"
