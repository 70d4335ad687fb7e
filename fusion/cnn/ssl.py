"""Self-supervised single-cell embeddings: SimCLR-style contrastive learning and a convolutional autoencoder.

No labels are used. Both methods build their encoder by name exactly as the supervised ensemble
does — a timm backbone with a :class:`~fusion.cnn.cbam.CBAM` after every stage
(:class:`~fusion.cnn.resnet.CBAMNet`) — on crops normalised by the same
:class:`~fusion.cnn.preprocess.Preprocessor` (per-channel dataset percentiles → [0, 1], resized).

* ``method="simclr"`` (Chen et al. 2020): each crop of a batch gives two views drawn from
  :data:`fusion.cnn.augment.SIMCLR` (random resized crop, the 8 square symmetries, per-channel
  intensity jitter, Gaussian blur); the encoder's globally pooled features ``h`` go through a
  projection head ``g`` (Linear → BatchNorm → ReLU → Linear, here the CBAMNet head with one hidden
  layer and no dropout) and the NT-Xent loss (:func:`nt_xent`, temperature ``temperature``) pulls the
  two views of a crop together and pushes the other 2(B − 1) views of the batch away. The embedding
  is ``h`` (the representation before the projection head, as in the paper).
* ``method="autoencoder"``: encoder → pooled features → Linear to a ``latent_dim`` bottleneck ``z``
  (the embedding) → a decoder (Linear to 256 × 4 × 4, then ×2 nearest upsampling + 3×3 conv +
  BatchNorm + ReLU per step, a 1×1 conv and a sigmoid) that reconstructs the normalised crop; loss =
  mean squared error. Its input views use the 8 symmetries only (the target is the view itself).

Training: AdamW with a OneCycle schedule (``warmup`` share of steps rising to ``lr``, then
annealing), seeded (weights, order, augmentation), deterministic algorithms on CPU. After training
(and for ``epochs=0``, the randomly initialised floor) the BatchNorm statistics are re-estimated on
up to ``bn_samples`` unaugmented crops with the final weights ("precise BN", as the supervised
trainer does). Model folder: ``ssl.safetensors`` (weights) + ``ssl.json`` (config, preprocessor
percentiles, history) + ``manifest.json`` with ``"kind": "ssl"`` and the SHA-256 of both model
files; nothing is pickled and loading runs no code from the files.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin
from torch import nn

from fusion.cnn.augment import SIMCLR, Augment
from fusion.cnn.preprocess import Preprocessor, check_crop_stack
from fusion.cnn.resnet import CBAMNet
from fusion.cnn.train import _autocast, _deterministic, _prepare, recalibrate_batchnorm, resolve_device
from cellfusion_core import io
from cellfusion_core.errors import ConfigError, InputError, ModelFileError
from cellfusion_core.layout import MANIFEST, SSL_CONFIG, SSL_WEIGHTS

log = logging.getLogger(__name__)

METHODS = ("simclr", "autoencoder")
KIND = "ssl"
FORMAT = "cellfusion-ssl/1"
#: the views of the autoencoder: the 8 symmetries of the square, nothing else
AUTOENCODER_AUGMENT = Augment(flips=True, elastic_p=0.0, erase_p=0.0, jitter_gain=0.0, jitter_offset=0.0)


def default_augment(method: str) -> dict[str, Any]:
    return (SIMCLR if method == "simclr" else AUTOENCODER_AUGMENT).to_dict()


@dataclass
class SSLConfig:
    """Every setting of one self-supervised training run (saved beside the weights)."""

    method: str = "simclr"
    backbone: str = "resnet18"
    image_size: int = 64
    epochs: int = 20
    batch_size: int = 128
    crops_per_epoch: int | None = None   # crops drawn (without replacement) per epoch; None = all
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.1                  # share of the steps spent warming up to lr (OneCycle)
    temperature: float = 0.2             # NT-Xent
    proj_hidden: int = 512               # SimCLR projection head
    proj_dim: int = 128
    latent_dim: int = 128                # autoencoder bottleneck = embedding width
    cbam_reduction: int = 16
    augment: dict[str, Any] | None = None  # None = the method's default views
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"              # "auto" (bf16 on CUDA, fp32 on CPU), "bf16" or "fp32"
    channels_last: bool = True           # CUDA only
    bn_samples: int = 1024               # crops used to re-estimate BatchNorm statistics (0 = off)
    eval_batch_size: int = 256
    history: list[dict[str, float]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown self-supervised method {self.method!r}", hint=f"use one of {', '.join(METHODS)}")
        if self.epochs < 0:
            raise ConfigError(f"epochs must be 0 (random initialisation) or more, got {self.epochs}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 (views are contrasted within a batch), got {self.batch_size}")
        if self.crops_per_epoch is not None and self.crops_per_epoch < 2:
            raise ConfigError(f"crops_per_epoch must be at least 2, got {self.crops_per_epoch}")
        if self.image_size < 16:
            raise ConfigError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0 < self.warmup < 1:
            raise ConfigError(f"warmup must lie in (0, 1), got {self.warmup}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if min(self.proj_hidden, self.proj_dim, self.latent_dim) < 1:
            raise ConfigError("proj_hidden, proj_dim and latent_dim must be positive")
        if self.augment is None:
            self.augment = default_augment(self.method)
        else:
            self.augment = Augment.from_dict(dict(self.augment)).to_dict()
        resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("history")
        return d


# ---------------------------------------------------------------------------------------- models

class SimCLRNet(nn.Module):
    """CBAM backbone + projection head; :meth:`embed` = pooled backbone features (B, C_final)."""

    def __init__(self, backbone: str, in_chans: int, *, proj_hidden: int = 512, proj_dim: int = 128,
                 cbam_reduction: int = 16):
        super().__init__()
        # CBAMNet's head with one hidden layer and no dropout is SimCLR's projection head g.
        self.net = CBAMNet(backbone, in_chans, proj_dim, dropouts=(0.0, 0.0), hidden=(proj_hidden,),
                           cbam_reduction=cbam_reduction)
        self.embedding_dim = int(self.net.backbone.num_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.net.pool(self.net.backbone.forward_features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections z = g(h) (B, proj_dim), the input of the NT-Xent loss."""
        return self.net.classifier(self.net.neck(self.embed(x)))


class ConvAutoencoder(nn.Module):
    """CBAM backbone → pooled → Linear → z (the embedding) → upsampling decoder → sigmoid image."""

    def __init__(self, backbone: str, in_chans: int, image_size: int, *, latent_dim: int = 128,
                 cbam_reduction: int = 16, base: int = 256, start: int = 4):
        super().__init__()
        self.encoder = CBAMNet(backbone, in_chans, latent_dim, dropouts=(0.0,), hidden=(), cbam_reduction=cbam_reduction)
        self.image_size, self.start, self.base = int(image_size), int(start), int(base)
        self.embedding_dim = int(latent_dim)
        n_up = max(1, math.ceil(math.log2(self.image_size / start)))
        self.expand = nn.Linear(latent_dim, base * start * start)
        layers: list[nn.Module] = []
        width = base
        for i in range(n_up):
            nxt = max(32, base >> (i + 1))
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, nxt, 3, padding=1, bias=False),
                       nn.BatchNorm2d(nxt), nn.ReLU(inplace=True)]
            width = nxt
        layers.append(nn.Conv2d(width, in_chans, 1))
        self.decoder = nn.Sequential(*layers)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder(self.expand(z).view(-1, self.base, self.start, self.start))
        if y.shape[-1] != self.image_size:
            y = F.interpolate(y, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (B, C, image_size, image_size) in [0, 1]."""
        return self.decode(self.embed(x))


def build_ssl_model(config: SSLConfig, in_chans: int) -> nn.Module:
    torch.manual_seed(config.seed)
    if config.method == "simclr":
        return SimCLRNet(config.backbone, in_chans, proj_hidden=config.proj_hidden, proj_dim=config.proj_dim,
                         cbam_reduction=config.cbam_reduction)
    return ConvAutoencoder(config.backbone, in_chans, config.image_size, latent_dim=config.latent_dim,
                           cbam_reduction=config.cbam_reduction)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross-entropy (SimCLR): z1[i] and z2[i] are the positive pair; every
    other view in the 2B batch is a negative. Cosine similarities divided by ``temperature``."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def ssl_loss(model: nn.Module, xb: torch.Tensor, aug: Augment | None, gen: torch.Generator, config: SSLConfig,
             device: torch.device) -> torch.Tensor:
    """The training loss of one batch of preprocessed crops (new augmented views drawn from ``gen``)."""
    if config.method == "simclr":
        v1 = aug(xb, gen) if aug is not None else xb
        v2 = aug(xb, gen) if aug is not None else xb
        with _autocast(device, config.precision):
            z = model(torch.cat([v1, v2]))   # one forward: BatchNorm sees both views
        z1, z2 = z.float().chunk(2)
        return nt_xent(z1, z2, config.temperature)
    xin = aug(xb, gen) if aug is not None else xb
    with _autocast(device, config.precision):
        rec = model(xin)
    return F.mse_loss(rec.float(), xin)


# ---------------------------------------------------------------------------------------- training

def train_ssl_model(x: torch.Tensor, config: SSLConfig, *, preprocessor: Preprocessor | None = None) -> nn.Module:
    """Train a self-supervised model on preprocessed crops ``x`` (N, C, h, w) in [0, 1].

    Crops are resized per batch to ``preprocessor.image_size`` (when given). The per-epoch mean
    loss is appended to ``config.history``. ``epochs=0`` returns the seeded random initialisation
    (with recalibrated BatchNorm statistics): the floor a trained model must beat.
    """
    device = resolve_device(config.device)
    n = int(x.shape[0])
    if n < 2:
        raise InputError(f"self-supervised training needs at least 2 crops, got {n}")
    per_epoch = min(n, config.crops_per_epoch or n)
    batch = min(config.batch_size, per_epoch)
    steps = per_epoch // batch   # full batches only: NT-Xent and BatchNorm need more than one crop
    config.history = []
    with _deterministic(device):
        model = build_ssl_model(config, int(x.shape[1])).to(device)
        if device.type == "cuda" and config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        aug = Augment.from_dict(config.augment) if config.augment is not None else None
        order_gen = np.random.default_rng(config.seed)
        if config.epochs > 0:
            opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps,
                                                        pct_start=config.warmup)
            gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
            gen.manual_seed(config.seed * 7919 + 17)
            fwd = model
            for epoch in range(config.epochs):
                model.train()
                order = order_gen.permutation(n)[:per_epoch]
                total = 0.0
                for s in range(steps):
                    sel = torch.from_numpy(np.sort(order[s * batch:(s + 1) * batch]))
                    xb = _prepare(x[sel], preprocessor, device, config)
                    loss = ssl_loss(fwd, xb, aug, gen, config, device)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach())
                rec = {"epoch": epoch + 1, "loss": total / steps, "lr_end": float(sched.get_last_lr()[0])}
                config.history.append(rec)
                log.info("%s %s epoch %d/%d loss=%.4f", config.method, config.backbone, epoch + 1, config.epochs,
                         rec["loss"])
        cal = order_gen.permutation(n)
        recalibrate_batchnorm(model, x, cal, preprocessor, device, config)
    model.eval()
    return model


@torch.no_grad()
def embed_tensor(model: nn.Module, x: torch.Tensor, pre: Preprocessor | None, device: torch.device | str = "cpu",
                 batch_size: int = 256, precision: str = "auto") -> np.ndarray:
    """Embeddings (N, D) float32 of preprocessed crops, in eval mode."""
    device = resolve_device(device)
    was = model.training
    model.eval()
    model.to(device)
    out = []
    for start in range(0, len(x), batch_size):
        xb = _prepare(x[start:start + batch_size], pre, device, channels_last=True)
        with _autocast(device, precision):
            out.append(model.embed(xb).float().cpu())
    model.train(was)
    if not out:
        return np.zeros((0, model.embedding_dim), np.float32)
    return torch.cat(out).numpy()


@torch.no_grad()
def reconstruction_error(model: nn.Module, x: torch.Tensor, pre: Preprocessor | None,
                         device: torch.device | str = "cpu", batch_size: int = 256) -> float:
    """Mean squared error of an autoencoder's reconstructions of preprocessed crops (eval mode)."""
    device = resolve_device(device)
    model.eval()
    model.to(device)
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = _prepare(x[start:start + batch_size], pre, device)
        total += float(F.mse_loss(model(xb).float(), xb, reduction="sum"))
        count += xb.numel()
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------- estimator

class SSLEmbedder(TransformerMixin, BaseEstimator):
    """Self-supervised crop embeddings with a scikit-learn API: ``fit(X)`` (no labels), ``transform(X)``
    (= :meth:`embed`), ``save(dir)`` / ``SSLEmbedder.load(dir)``.

    Parameters: ``method`` ("simclr" or "autoencoder") and the fields of :class:`SSLConfig`
    (``backbone``, ``image_size``, ``epochs``, ``batch_size``, ``crops_per_epoch``, ``lr``,
    ``weight_decay``, ``warmup``, ``temperature``, ``proj_hidden``, ``proj_dim``, ``latent_dim``,
    ``augment`` — True/None for the method's default views, False for none, or a dict for
    :class:`~fusion.cnn.augment.Augment`), the normalisation (``normalize``, ``low``, ``high``: see
    :class:`~fusion.cnn.preprocess.Preprocessor`), ``device``, ``precision`` and ``seed``.
    """

    def __init__(self, method: str = "simclr", backbone: str = "resnet18", image_size: int = 64, epochs: int = 20,
                 batch_size: int = 128, crops_per_epoch: int | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, warmup: float = 0.1, temperature: float = 0.2, proj_hidden: int = 512,
                 proj_dim: int = 128, latent_dim: int = 128, augment: bool | dict | None = True,
                 normalize: str = "dataset", low: float = 1.0, high: float = 99.8, bn_samples: int = 1024,
                 device: str = "auto", precision: str = "auto", seed: int = 0):
        self.method = method
        self.backbone = backbone
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.crops_per_epoch = crops_per_epoch
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.temperature = temperature
        self.proj_hidden = proj_hidden
        self.proj_dim = proj_dim
        self.latent_dim = latent_dim
        self.augment = augment
        self.normalize = normalize
        self.low = low
        self.high = high
        self.bn_samples = bn_samples
        self.device = device
        self.precision = precision
        self.seed = seed

    def make_config(self) -> SSLConfig:
        if self.augment is True or self.augment is None:
            aug = None
        elif self.augment is False:
            aug = Augment(flips=False, elastic_p=0.0, erase_p=0.0, jitter_gain=0.0, jitter_offset=0.0).to_dict()
        else:
            aug = dict(self.augment)
        return SSLConfig(method=self.method, backbone=self.backbone, image_size=self.image_size, epochs=self.epochs,
                         batch_size=self.batch_size, crops_per_epoch=self.crops_per_epoch, lr=self.lr,
                         weight_decay=self.weight_decay, warmup=self.warmup, temperature=self.temperature,
                         proj_hidden=self.proj_hidden, proj_dim=self.proj_dim, latent_dim=self.latent_dim,
                         augment=aug, seed=self.seed, device=self.device, precision=self.precision,
                         bn_samples=self.bn_samples)

    def fit(self, X: np.ndarray, y: Any = None) -> "SSLEmbedder":
        """Train on raw crops (N, H, W, C); ``y`` is ignored (no labels are used)."""
        config = self.make_config()
        X = check_crop_stack(X)
        self.n_channels_ = int(X.shape[-1])
        self.preprocessor_ = Preprocessor(image_size=self.image_size, low=self.low, high=self.high,
                                          scope=self.normalize).fit(X, seed=self.seed)
        xt = self.preprocessor_.transform(X, resize=False)
        self.model_ = train_ssl_model(xt, config, preprocessor=self.preprocessor_).cpu()
        self.config_ = config
        self.history_ = list(config.history)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ConfigError("this SSLEmbedder is not fitted yet", hint="call fit() or SSLEmbedder.load(dir)")

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        self._check_fitted()
        X = check_crop_stack(X)
        if X.shape[-1] != self.n_channels_:
            raise InputError(f"crops have {X.shape[-1]} channels; the model was trained on {self.n_channels_}")
        return self.preprocessor_.transform(X, resize=False)

    def embed(self, X: np.ndarray) -> np.ndarray:
        """Per-cell embeddings (N, embedding_dim), float32."""
        xt = self._tensor(X)
        out = embed_tensor(self.model_, xt, self.preprocessor_, self.device, self.config_.eval_batch_size,
                           self.precision)
        self.model_.cpu()
        return out

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.embed(X)

    def reconstruction_error(self, X: np.ndarray) -> float:
        """Mean squared reconstruction error of the normalised crops (autoencoder only)."""
        if self.method != "autoencoder":
            raise ConfigError("reconstruction_error needs method='autoencoder'")
        xt = self._tensor(X)
        out = reconstruction_error(self.model_, xt, self.preprocessor_, self.device)
        self.model_.cpu()
        return out

    @property
    def embedding_dim(self) -> int:
        self._check_fitted()
        return int(self.model_.embedding_dim)

    # ------------------------------------------------------------------------------------ files
    def save(self, out_dir: str | Path, *, command: str = "fusion train-ssl", inputs: dict | None = None,
             extra: dict | None = None) -> Path:
        """Write ssl.safetensors, ssl.json and manifest.json (kind "ssl", SHA-256 of both files)."""
        from safetensors.torch import save_file

        from fusion.modelio import MODEL_FILES_KEY, model_file_entry

        self._check_fitted()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        with io.atomic_path(out_dir / SSL_WEIGHTS) as tmp:
            save_file(state, str(tmp))
        params = self.get_params()
        io.write_json({"format": FORMAT, "params": params, "config": self.config_.to_dict(),
                       "n_channels": self.n_channels_, "embedding_dim": self.embedding_dim,
                       "preprocessor": self.preprocessor_.to_dict(), "history": self.history_}, out_dir / SSL_CONFIG)
        files = {SSL_WEIGHTS: model_file_entry(out_dir / SSL_WEIGHTS, "safetensors"),
                 SSL_CONFIG: model_file_entry(out_dir / SSL_CONFIG, "json")}
        io.write_manifest(out_dir, command=command, inputs=inputs, parameters=params,
                          outputs={SSL_WEIGHTS: {"kind": "safetensors"}, SSL_CONFIG: {}},
                          extra={"kind": KIND, "method": self.method, MODEL_FILES_KEY: files, **(extra or {})},
                          hash_inputs=False)
        return out_dir

    @classmethod
    def load(cls, model_dir: str | Path, device: str | None = None) -> "SSLEmbedder":
        """Rebuild a fitted embedder from a folder written by :meth:`save` (files checked against
        the manifest's SHA-256 first; safetensors + JSON only)."""
        from safetensors.torch import load as load_safetensors

        from fusion.modelio import verify_model_file

        model_dir = Path(model_dir)
        manifest = _manifest(model_dir)
        if manifest.get("kind") != KIND:
            raise ModelFileError("this folder does not hold a self-supervised model (manifest kind is "
                                 f"{manifest.get('kind')!r})", path=model_dir, hint="point at a folder written by `fusion train-ssl`")
        raw_cfg = verify_model_file(model_dir, SSL_CONFIG, manifest)
        raw_w = verify_model_file(model_dir, SSL_WEIGHTS, manifest)
        try:
            spec = json.loads(raw_cfg.decode("utf-8"))
            if spec.get("format") != FORMAT:
                raise ValueError(f"format {spec.get('format')!r}, expected {FORMAT!r}")
            params = dict(spec["params"])
            if device is not None:
                params["device"] = device
            est = cls(**params)
            cfg = dict(spec["config"])
            cfg["device"] = "cpu"
            est.config_ = SSLConfig(**cfg)
            est.history_ = list(spec.get("history", []))
            est.n_channels_ = int(spec["n_channels"])
            est.preprocessor_ = Preprocessor.from_dict(spec["preprocessor"])
            model = build_ssl_model(est.config_, est.n_channels_)
        except (KeyError, TypeError, ValueError, UnicodeDecodeError, ConfigError) as exc:
            raise ModelFileError(f"{SSL_CONFIG} is malformed ({exc})", path=model_dir / SSL_CONFIG) from exc
        try:
            state = load_safetensors(raw_w)
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # safetensors' own errors, or shapes that do not fit
            raise ModelFileError(f"weights do not fit the model described in {SSL_CONFIG} ({exc})",
                                 path=model_dir / SSL_WEIGHTS) from exc
        model.eval()
        est.model_ = model
        return est


def _manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise ModelFileError("model folder not found", path=model_dir,
                             hint="pass the folder written by `fusion train-ssl` or `fusion train-cnn`")
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"manifest.json is not valid JSON ({exc})", path=path) from exc
    return manifest if isinstance(manifest, dict) else {}


def is_ssl_model(model_dir: str | Path) -> bool:
    """True when ``model_dir``'s manifest says it holds a self-supervised model (kind "ssl")."""
    return _manifest(Path(model_dir)).get("kind") == KIND


# ---------------------------------------------------------------------------------------- file level

def train_ssl(crops: str | Path, out: str | Path, *, method: str = "simclr", table: str | Path | None = None,
              backbone: str = "resnet18", image_size: int = 64, epochs: int = 20, batch_size: int = 128,
              device: str = "auto", seed: int = 0, **params: Any) -> Path:
    """Train an :class:`SSLEmbedder` on a crop set (no labels read) and write the model folder ``out``."""
    from fusion.data import load_crops

    est = SSLEmbedder(method=method, backbone=backbone, image_size=image_size, epochs=epochs, batch_size=batch_size,
                      device=device, seed=seed, **params)
    est.make_config()  # bad settings fail before the crops are read
    cs = load_crops(crops, table)
    est.fit(cs.images)
    return est.save(out, inputs={"crops": cs.source}, extra={"n_crops": len(cs)})


def load_embedder(model_dir: str | Path, device: str = "auto"):
    """The embedding model in ``model_dir``: an :class:`SSLEmbedder` (manifest kind "ssl") or the
    supervised :class:`~fusion.cnn.ensemble.CNNEnsemble`. Both have ``embed(X) -> (N, D)``."""
    if is_ssl_model(model_dir):
        return SSLEmbedder.load(model_dir, device=device)
    from fusion.cnn.ensemble import CNNEnsemble

    return CNNEnsemble.load(model_dir, device=device)


__all__: Sequence[str] = ["SSLConfig", "SSLEmbedder", "SimCLRNet", "ConvAutoencoder", "nt_xent", "train_ssl",
                          "train_ssl_model", "embed_tensor", "is_ssl_model", "load_embedder", "METHODS"]
