"""The soft-voting CBAM-ResNet ensemble with a scikit-learn estimator API.

``CNNEnsemble(backbones=("resnet34", "resnet50", "resnet101", "resnet50", "resnet34"))`` trains one
:class:`~fusion.cnn.resnet.CBAMNet` per member; members differ in backbone, dropout schedule and
seed (member i uses ``seed + i``). ``predict_proba`` is the mean of the members' probabilities
(soft vote). ``embed`` returns each cell's penultimate-layer activations, the members'
concatenated. :func:`well_embeddings` aggregates them per well (mean or median).

fit(X, y, groups=None) takes raw crops (N, H, W, C); a validation share (``val_fraction``) is held
out for early stopping, grouped by ``groups`` (e.g. compound or plate) when given.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from fusion.cnn.augment import Augment
from fusion.cnn.preprocess import Preprocessor, check_crop_stack
from fusion.cnn.presets import PRESETS  # CNNEnsemble settings by name (used by train_cnn)
from fusion.cnn.train import TrainConfig, infer, load_model, resolve_device, save_model, train_model
from cellfusion_core import io
from cellfusion_core.errors import ConfigError, InputError, ModelFileError
from cellfusion_core.layout import ENSEMBLE_JSON, cnn_member

log = logging.getLogger(__name__)

DEFAULT_BACKBONES = ("resnet34", "resnet50", "resnet101", "resnet50", "resnet34")
DEFAULT_DROPOUT_SCHEDULES = ((0.5, 0.3, 0.1), (0.5, 0.3, 0.1), (0.5, 0.3, 0.1), (0.4, 0.25, 0.1), (0.6, 0.4, 0.2))


class CNNEnsemble(ClassifierMixin, BaseEstimator):
    """Soft-voting ensemble of CBAM networks on single-cell crops.

    Parameters (the recipe's defaults)
    ----------
    backbones: timm names, one per member.
    dropouts: dropout schedules (d0, d1, d2), cycled over the members.
    image_size: side the crops are resized to (224 for ImageNet-size backbones).
    epochs, batch_size, lr_backbone, lr_head, weight_decay, pct_start, label_smoothing, patience:
        see :class:`~fusion.cnn.train.TrainConfig`.
    balance: "sample" (under-/over-sample to ``target_per_class``), "weights" or "none".
    augment: True for the default :class:`~fusion.cnn.augment.Augment`, False for none, or a dict.
    normalize, low, high, clahe, denoise_sigma: see :class:`~fusion.cnn.preprocess.Preprocessor`.
    val_fraction: share of the training crops (whole groups when ``groups`` is given) held out
        for early stopping; 0 trains every epoch on everything.
    device: "auto", "cpu" or "cuda". compile: torch.compile on GPU.
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16" or "fp32", for training and inference.
    pretrained_paths: optional local timm safetensors per backbone name.
    seed: member i is seeded with seed + i.
    """

    def __init__(self, backbones: Sequence[str] = DEFAULT_BACKBONES,
                 dropouts: Sequence[Sequence[float]] = DEFAULT_DROPOUT_SCHEDULES, image_size: int = 224,
                 epochs: int = 20, batch_size: int = 64, lr_backbone: float = 1e-4, lr_head: float = 1e-3,
                 weight_decay: float = 1e-4, pct_start: float = 0.3, label_smoothing: float = 0.1,
                 patience: int = 5, balance: str = "sample", target_per_class: int | None = None,
                 augment: bool | dict = True, normalize: str = "dataset", low: float = 1.0, high: float = 99.8,
                 clahe: bool = False, denoise_sigma: float = 0.0, val_fraction: float = 0.15,
                 device: str = "auto", compile: bool = False, pretrained_paths: dict[str, str] | None = None,
                 seed: int = 0, precision: str = "auto"):
        self.backbones = backbones
        self.dropouts = dropouts
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr_backbone = lr_backbone
        self.lr_head = lr_head
        self.weight_decay = weight_decay
        self.pct_start = pct_start
        self.label_smoothing = label_smoothing
        self.patience = patience
        self.balance = balance
        self.target_per_class = target_per_class
        self.augment = augment
        self.normalize = normalize
        self.low = low
        self.high = high
        self.clahe = clahe
        self.denoise_sigma = denoise_sigma
        self.val_fraction = val_fraction
        self.device = device
        self.compile = compile
        self.pretrained_paths = pretrained_paths
        self.seed = seed
        self.precision = precision

    # ------------------------------------------------------------------ configuration
    def member_configs(self) -> list[TrainConfig]:
        if not self.backbones:
            raise ConfigError("the ensemble needs at least one backbone")
        if not self.dropouts:
            raise ConfigError("the ensemble needs at least one dropout schedule")
        if self.augment is True:
            aug: dict | None = Augment().to_dict()
        elif self.augment is False or self.augment is None:
            aug = None
        else:
            aug = Augment.from_dict(dict(self.augment)).to_dict()
        out = []
        for i, name in enumerate(self.backbones):
            out.append(TrainConfig(
                backbone=name, dropouts=tuple(self.dropouts[i % len(self.dropouts)]), epochs=self.epochs,
                batch_size=self.batch_size, lr_backbone=self.lr_backbone, lr_head=self.lr_head,
                weight_decay=self.weight_decay, pct_start=self.pct_start, label_smoothing=self.label_smoothing,
                patience=self.patience, balance=self.balance, target_per_class=self.target_per_class,
                augment=aug, seed=self.seed + i, device=self.device, compile=self.compile, precision=self.precision,
                pretrained_path=(self.pretrained_paths or {}).get(name)))
        return out

    def _preprocessor(self) -> Preprocessor:
        return Preprocessor(image_size=self.image_size, low=self.low, high=self.high, scope=self.normalize,
                            clahe=self.clahe, denoise_sigma=self.denoise_sigma)

    # ------------------------------------------------------------------ estimator API
    def fit(self, X: np.ndarray, y: Sequence, groups: Sequence | None = None) -> "CNNEnsemble":
        configs = self.member_configs()
        X = check_crop_stack(X)
        y = np.asarray(y)
        if len(y) != len(X):
            raise InputError(f"{len(X)} crops but {len(y)} labels")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise InputError(f"need at least two classes to train, got {list(self.classes_)}")
        self.n_channels_ = int(X.shape[-1])
        self.preprocessor_ = self._preprocessor().fit(X, seed=self.seed)
        xt = self.preprocessor_.transform(X, resize=False)
        tr, va = _validation_split(y_idx, groups, self.val_fraction, self.seed)
        self.members_, self.histories_ = [], []
        for i, cfg in enumerate(configs):
            log.info("training member %d/%d: %s dropouts=%s seed=%d", i + 1, len(configs), cfg.backbone,
                     cfg.dropouts, cfg.seed)
            res = train_model(xt[tr], y_idx[tr], len(self.classes_), cfg, preprocessor=self.preprocessor_,
                              x_val=xt[va] if len(va) else None, y_val=y_idx[va] if len(va) else None)
            self.members_.append(res.model.cpu())
            self.histories_.append({"best_epoch": res.best_epoch, "stopped_early": res.stopped_early,
                                    "epochs": res.history})
        self.configs_ = configs
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "members_"):
            raise ConfigError("this CNNEnsemble is not fitted yet", hint="call fit() or CNNEnsemble.load(dir)")

    def _infer(self, X: np.ndarray, batch_size: int = 256) -> tuple[list[np.ndarray], list[np.ndarray]]:
        self._check_fitted()
        X = check_crop_stack(X)
        if X.shape[-1] != self.n_channels_:
            raise InputError(f"crops have {X.shape[-1]} channels; the ensemble was trained on {self.n_channels_}")
        xt = self.preprocessor_.transform(X, resize=False)
        device = resolve_device(self.device)
        probs, embs = [], []
        for model in self.members_:
            p, e = infer(model, xt, self.preprocessor_, device, batch_size, precision=self.precision)
            probs.append(p)
            embs.append(e)
            model.cpu()
        return probs, embs

    def member_proba(self, X: np.ndarray) -> list[np.ndarray]:
        """Each member's class probabilities (N, K)."""
        return self._infer(X)[0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Soft vote: the mean of the members' probabilities, columns in ``classes_`` order."""
        return np.mean(self.member_proba(X), axis=0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Per-cell penultimate-layer embeddings, the members' side by side: (N, Σ member widths)."""
        return np.concatenate(self._infer(X)[1], axis=1)

    # ------------------------------------------------------------------ files
    def save(self, out_dir: str | Path) -> Path:
        """Write member_<i>.safetensors/.json, ensemble.json and manifest.json (no pickle)."""
        self._check_fitted()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = []
        for i, (model, cfg) in enumerate(zip(self.members_, self.configs_)):
            p = save_model(model, cfg, out_dir / cnn_member(i), in_chans=self.n_channels_,
                           n_classes=len(self.classes_), extra={"history": self.histories_[i]})
            files.append(p.name)
        params = self.get_params()
        params["backbones"] = list(params["backbones"])
        params["dropouts"] = [list(d) for d in params["dropouts"]]
        io.write_json({"format": "cellfusion-cnn-ensemble/1", "params": params,
                       "classes": [_plain(c) for c in self.classes_], "n_channels": self.n_channels_,
                       "preprocessor": self.preprocessor_.to_dict(), "members": files}, out_dir / ENSEMBLE_JSON)
        io.write_manifest(out_dir, command="fusion train-cnn", parameters=params,
                          outputs={f: {"kind": "safetensors"} for f in files} | {ENSEMBLE_JSON: {}})
        return out_dir

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None) -> "CNNEnsemble":
        """Rebuild a fitted ensemble from a folder written by :meth:`save`."""
        model_dir = Path(model_dir)
        path = model_dir / ENSEMBLE_JSON
        if not path.is_file():
            raise ModelFileError(f"no {ENSEMBLE_JSON} here", path=model_dir,
                                 hint="point at a folder written by `fusion train-cnn`")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
            params = dict(spec["params"])
            if device is not None:
                params["device"] = device
            est = cls(**params)
            est.classes_ = np.asarray(spec["classes"])
            est.n_channels_ = int(spec["n_channels"])
            est.preprocessor_ = Preprocessor.from_dict(spec["preprocessor"])
            names = list(spec["members"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{ENSEMBLE_JSON} is malformed ({exc})", path=path) from exc
        est.members_, est.configs_, est.histories_ = [], [], []
        for name in names:
            model, cfg, meta = load_model(model_dir / Path(name).stem)
            if meta["n_classes"] != len(est.classes_):
                raise ModelFileError(f"{name} has {meta['n_classes']} classes, ensemble.json lists {len(est.classes_)}",
                                     path=model_dir)
            est.members_.append(model)
            est.configs_.append(cfg)
            est.histories_.append(meta.get("history", {}))
        return est


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _validation_split(y: np.ndarray, groups, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation indices; whole groups go to validation when groups are given."""
    n = len(y)
    if fraction <= 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    if not 0 < fraction < 1:
        raise ConfigError(f"val_fraction must lie in [0, 1), got {fraction}")
    if groups is not None:
        from sklearn.model_selection import GroupShuffleSplit

        groups = np.asarray(groups)
        if len(groups) != n:
            raise InputError(f"{n} crops but {len(groups)} group labels")
        if len(np.unique(groups)) < 2:
            raise InputError("groups must hold at least two distinct values for a grouped validation split")
        tr, va = next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(y, y, groups))
        return tr, va
    from sklearn.model_selection import train_test_split

    strat = y if np.bincount(y).min() >= 2 else None
    tr, va = train_test_split(np.arange(n), test_size=fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


def well_embeddings(embeddings: np.ndarray, meta: pd.DataFrame, operation: str = "mean") -> pd.DataFrame:
    """Aggregate per-cell embeddings per well: Metadata_* keys + Embedding_0 … Embedding_{n-1}.

    ``operation`` "mean" or "median" aggregates by plate and well (the other Metadata_* columns
    that are constant within a well are kept); "none" returns one row per cell.
    """
    from fusion.data import well_keys

    if len(embeddings) != len(meta):
        raise InputError(f"{len(embeddings)} embeddings but {len(meta)} table rows")
    cols = [f"Embedding_{i}" for i in range(embeddings.shape[1])]
    emb = pd.DataFrame(embeddings.astype(np.float32), columns=cols)
    meta_cols = [c for c in meta.columns if str(c).startswith("Metadata_")]
    table = pd.concat([meta[meta_cols].reset_index(drop=True), emb], axis=1)
    if operation == "none":
        return table
    if operation not in ("mean", "median"):
        raise ConfigError(f"aggregation must be mean, median or none, got {operation!r}")
    keys = well_keys(meta)
    grouped = table.groupby(keys, sort=True, dropna=False)
    out = grouped[cols].agg(operation)
    constant = [c for c in meta_cols if c not in keys and (grouped[c].nunique(dropna=False) <= 1).all()]
    if constant:
        out = grouped[constant].first().join(out)
    out = out.reset_index()
    out.insert(len(keys), "Metadata_Object_Count", grouped.size().to_numpy())
    return out


# ---------------------------------------------------------------------- file-level entry points

def train_cnn(crops: str | Path, out: str | Path, *, label: str = "Metadata_MoA", group_by: str | None = None,
              table: str | Path | None = None, config: str = "full", backbones: Sequence[str] | None = None,
              image_size: int | None = None, epochs: int | None = None, batch_size: int | None = None,
              device: str = "auto", compile: bool = False, seed: int = 0, **params: Any) -> Path:
    """Train a :class:`CNNEnsemble` on a crop set and write it to ``out`` (rank 0 only under torchrun).

    ``config`` picks a preset ("full" = the recipe's defaults, "cpu" = small); explicit arguments
    override it. ``group_by`` (e.g. Metadata_Compound or Metadata_Plate) groups the validation split.
    """
    from fusion.cnn.ddp import init_from_env, rank_world
    from fusion.data import load_crops, resolve_column

    if config not in PRESETS:
        raise ConfigError(f"unknown CNN config {config!r}", hint=f"choose one of {', '.join(PRESETS)}")
    kw: dict[str, Any] = dict(PRESETS[config])
    for key, val in (("backbones", list(backbones) if backbones else None), ("image_size", image_size),
                     ("epochs", epochs), ("batch_size", batch_size)):
        if val is not None:
            kw[key] = val
    kw.update(params)
    init_from_env(resolve_device(device))
    cs = load_crops(crops, table)
    y = cs.labels(label)
    groups = cs.meta[resolve_column(cs.meta, group_by, cs.source)].astype(str).to_numpy() if group_by else None
    est = CNNEnsemble(device=device, compile=compile, seed=seed, **kw).fit(cs.images, y, groups=groups)
    out = Path(out)
    if rank_world()[0] == 0:
        est.save(out)
        manifest = io.read_manifest(out)
        io.write_manifest(out, command="fusion train-cnn", inputs={"crops": cs.source},
                          parameters={**manifest["parameters"], "label": label, "group_by": group_by, "config": config},
                          outputs=manifest["outputs"], extra={"n_crops": len(cs), "classes": [_plain(c) for c in est.classes_]},
                          hash_inputs=False)
    return out


def embed_crops(model_dir: str | Path, crops: str | Path, out: str | Path, *, operation: str = "mean",
                table: str | Path | None = None, device: str = "auto") -> Path:
    """Per-cell embeddings of a crop set, aggregated per well (mean/median) or per cell ("none") → Parquet.

    ``model_dir`` is a supervised ensemble (`fusion train-cnn`) or a self-supervised model
    (`fusion train-ssl`; manifest kind "ssl"), told apart by its manifest."""
    from fusion.cnn.ssl import load_embedder
    from fusion.data import load_crops

    est = load_embedder(model_dir, device=device)
    cs = load_crops(crops, table)
    table_out = well_embeddings(est.embed(cs.images), cs.meta, operation)
    out = Path(out)
    io.write_parquet(table_out, out)
    return out
