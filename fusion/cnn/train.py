"""Training one CBAM network: the recipe's optimiser, schedule, loss, precision and stopping rule.

* AdamW with differential learning rates: backbone ``lr_backbone`` (1e-4), head ``lr_head`` (1e-3).
  The CBAM modules are new, randomly initialised layers and train at the **head** rate.
* OneCycleLR over all steps with ``pct_start=0.3`` (30 % warm-up), one max LR per group.
* Cross-entropy with label smoothing 0.1 (optionally class-weighted: ``balance="weights"``).
* Precision ``auto``: bf16 autocast on CUDA, fp32 on CPU; ``bf16`` forces bf16 autocast on either
  device (CPUs with bf16 support; also how the GPU precision path is tested on CPU), ``fp32`` turns
  it off. channels_last and optional ``torch.compile`` on CUDA.
* Early stopping: after each epoch the validation accuracy and weighted F1 are computed; an epoch
  that improves neither by more than ``min_delta`` counts against ``patience``; the weights of the
  epoch with the best mean of the two are restored at the end.
* Seeded: model initialisation, resampling, shuffling and augmentation all derive from ``seed``;
  on CPU ``torch.use_deterministic_algorithms`` is on while training.
* BatchNorm statistics are recalibrated before every validation and after the last epoch ("precise BN"): the running
  mean/variance are reset and re-estimated as the plain average over up to ``bn_samples`` training
  crops (balanced, not augmented) forwarded with the current weights. The moving averages kept
  during training lag the weights; with few steps or small batches (1×1 or 2×2 final feature maps
  on small crops) that lag alone turned a network that was 100 % right in training mode into one
  at chance level in evaluation mode.
* Data parallel: when a process group is initialised (``torchrun``; gloo on CPU, nccl on GPU) the
  model is wrapped in DistributedDataParallel with synchronised BatchNorm and each rank reads its
  share of every global batch through a DistributedSampler; ``batch_size`` is the global batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusion.cnn.augment import Augment
from fusion.cnn.balance import balanced_indices, class_weights
from fusion.cnn.ddp import convert_batchnorm, rank_world
from fusion.cnn.preprocess import Preprocessor
from fusion.cnn.resnet import DEFAULT_DROPOUTS, DEFAULT_HIDDEN, CBAMNet
from cellfusion_core import io
from cellfusion_core.errors import ConfigError, ModelFileError

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every setting of one member's training (saved beside its weights)."""

    backbone: str = "resnet50"
    dropouts: tuple[float, ...] = DEFAULT_DROPOUTS
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    epochs: int = 20
    batch_size: int = 64
    lr_backbone: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    pct_start: float = 0.3
    label_smoothing: float = 0.1
    patience: int = 5
    min_delta: float = 0.0
    balance: str = "sample"            # "sample" (under/over-sample), "weights" (class-weighted loss) or "none"
    target_per_class: int | None = None  # for balance="sample"; None = median class size
    augment: dict[str, Any] | None = field(default_factory=lambda: Augment().to_dict())  # None = off
    seed: int = 0
    device: str = "auto"
    compile: bool = False              # torch.compile (CUDA only)
    precision: str = "auto"            # "auto" (bf16 on CUDA, fp32 on CPU), "bf16" or "fp32"
    channels_last: bool = True         # CUDA only
    pretrained_path: str | None = None
    eval_batch_size: int = 256
    bn_samples: int = 1024             # training crops used to recalibrate BatchNorm statistics (0 = off)

    def __post_init__(self) -> None:
        self.dropouts = tuple(float(d) for d in self.dropouts)
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.balance not in ("sample", "weights", "none"):
            raise ConfigError(f"balance must be 'sample', 'weights' or 'none', got {self.balance!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be positive, got {self.epochs}, {self.batch_size}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        if not 0 < self.pct_start < 1:
            raise ConfigError(f"pct_start must lie in (0, 1), got {self.pct_start}")
        resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["dropouts"], d["hidden"] = list(self.dropouts), list(self.hidden)
        return d


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but torch sees no CUDA GPU",
                              hint="use --device auto or --device cpu")
        return torch.device(name)
    if name != "cpu":
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device("cpu")


@dataclass
class TrainResult:
    model: CBAMNet
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool


@contextlib.contextmanager
def _deterministic(device: torch.device):
    prev = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev)


def build_model(config: TrainConfig, in_chans: int, n_classes: int) -> CBAMNet:
    torch.manual_seed(config.seed)
    return CBAMNet(config.backbone, in_chans, n_classes, dropouts=config.dropouts, hidden=config.hidden,
                   pretrained_path=config.pretrained_path)


def _autocast(device: torch.device, precision: str = "auto"):
    """bf16 autocast for ``precision="bf16"``, or ``"auto"`` on CUDA; otherwise fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_model(x: torch.Tensor, y: np.ndarray, n_classes: int, config: TrainConfig, *,
                preprocessor: Preprocessor | None = None, x_val: torch.Tensor | None = None,
                y_val: np.ndarray | None = None) -> TrainResult:
    """Train one CBAMNet.

    ``x``: float tensor (N, C, h, w) from :meth:`Preprocessor.transform` (resized per batch on the
    device to ``preprocessor.image_size`` when given); ``y``: int labels in [0, n_classes).
    Validation data enable early stopping; without them all epochs run.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from torch.utils.data.distributed import DistributedSampler

    device = resolve_device(config.device)
    rank, world = rank_world()
    if config.batch_size % world:
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by the {world} processes",
                          hint="the batch size is the global batch; pick a multiple of the process count")
    y = np.asarray(y, dtype=np.int64)
    with _deterministic(device):
        model = build_model(config, x.shape[1], n_classes).to(device)
        if device.type == "cuda" and config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if world > 1:
            model = convert_batchnorm(model, device)
        net: nn.Module = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index or 0] if device.type == "cuda" else None)
        fwd = torch.compile(net) if (config.compile and device.type == "cuda") else net

        if config.balance == "sample":
            index = balanced_indices(y, target_per_class=config.target_per_class, seed=config.seed)
        else:
            index = np.arange(len(y))
        weight = None
        if config.balance == "weights":
            weight = torch.tensor(class_weights(y, n_classes), dtype=torch.float32, device=device)
        loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
        sampler = DistributedSampler(index, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
        local_batch = config.batch_size // world
        steps = math.ceil(len(sampler) / local_batch)
        groups = [{"params": model.backbone_parameters(), "lr": config.lr_backbone},
                  {"params": model.head_parameters(), "lr": config.lr_head}]
        opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[config.lr_backbone, config.lr_head],
                                                    total_steps=config.epochs * steps, pct_start=config.pct_start)
        aug = Augment.from_dict(config.augment) if config.augment is not None else None
        gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
        gen.manual_seed(config.seed * 7919 + rank)
        y_t = torch.from_numpy(y)
        history: list[dict[str, float]] = []
        best = (-1.0, -1.0)
        best_score, best_epoch, best_state, stale, stopped = -1.0, 0, None, 0, False
        for epoch in range(config.epochs):
            sampler.set_epoch(epoch)
            order = index[np.fromiter(iter(sampler), dtype=np.int64)]
            model.train()
            total, seen = 0.0, 0
            for s in range(steps):
                sel = torch.from_numpy(order[s * local_batch:(s + 1) * local_batch])
                if len(sel) == 0:
                    continue
                xb = _prepare(x[sel], preprocessor, device, config)
                if aug is not None:
                    xb = aug(xb, gen)
                yb = y_t[sel].to(device)
                with _autocast(device, config.precision):
                    loss = loss_fn(fwd(xb).float(), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(sel)
                seen += len(sel)
            rec = {"epoch": epoch + 1, "train_loss": total / max(seen, 1)}
            has_val = x_val is not None and y_val is not None and len(y_val) > 0
            if has_val or epoch + 1 == config.epochs:  # before every evaluation, and for the final model
                recalibrate_batchnorm(model, x, index, preprocessor, device, config)
            if x_val is not None and y_val is not None and len(y_val):
                proba = predict_proba(model, x_val, preprocessor, device, config.eval_batch_size, config.precision)
                pred = proba.argmax(1)
                acc = float(accuracy_score(y_val, pred))
                f1 = float(f1_score(y_val, pred, average="weighted", zero_division=0))
                rec.update(val_accuracy=acc, val_f1_weighted=f1)
                score = (acc + f1) / 2
                if score > best_score:
                    best_score, best_epoch = score, epoch + 1
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if acc > best[0] + config.min_delta or f1 > best[1] + config.min_delta:
                    stale = 0
                else:
                    stale += 1
                best = (max(best[0], acc), max(best[1], f1))
            history.append(rec)
            if rank == 0:
                log.info("%s epoch %d/%d %s", config.backbone, epoch + 1, config.epochs,
                         " ".join(f"{k}={v:.4f}" for k, v in rec.items() if k != "epoch"))
            if x_val is not None and stale >= config.patience:
                stopped = True
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            best_epoch = len(history)
    if world > 1:  # back to plain BatchNorm: same parameter names, same values
        plain = build_model(config, x.shape[1], n_classes)
        plain.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
        model = plain.to(device)
    model.eval()
    return TrainResult(model=model, history=history, best_epoch=best_epoch, stopped_early=stopped)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, index: np.ndarray, pre: Preprocessor | None,
                          device: torch.device, config: TrainConfig) -> None:
    """Re-estimate every BatchNorm's running mean/variance with the current weights ("precise BN").

    Forwards the first ``config.bn_samples`` crops of ``index`` (the balanced training index, in
    its seeded order; no augmentation, dropout off) in global batches of ``config.batch_size`` and
    sets the running statistics to the average of the batch statistics (momentum ``None``).
    Under a process group each rank forwards its share of every global batch and the synchronised
    BatchNorm sums the statistics, so N processes give the statistics of one.
    """
    if config.bn_samples <= 0 or len(index) == 0:
        return
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    rank, world = rank_world()
    b = config.batch_size
    n = min(len(index), config.bn_samples)
    if world > 1:  # every rank needs the same number of equally sized batches
        n = max(b, n // b * b)
        cal = np.resize(index, n)
    else:
        cal = index[:n]
    was = model.training
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for start in range(0, len(cal), b):
            chunk = cal[start:start + b]
            if world > 1:
                lb = b // world
                chunk = chunk[rank * lb:(rank + 1) * lb]
            xb = _prepare(x[torch.from_numpy(np.ascontiguousarray(chunk))], pre, device, config)
            with _autocast(device, config.precision):
                model(xb)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was)


def _prepare(xb: torch.Tensor, pre: Preprocessor | None, device: torch.device, config: TrainConfig | None = None,
             channels_last: bool = False) -> torch.Tensor:
    xb = xb.to(device, non_blocking=True).float()
    if pre is not None:
        xb = pre.resize(xb)
    if device.type == "cuda" and (channels_last or (config is not None and config.channels_last)):
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


@torch.no_grad()
def infer(model: CBAMNet, x: torch.Tensor, pre: Preprocessor | None, device: torch.device | str = "cpu",
          batch_size: int = 256, precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, K), penultimate embeddings (N, 512)) in eval mode, float32."""
    device = resolve_device(device)
    was = model.training
    model.eval()
    model.to(device)
    probs, embs = [], []
    for start in range(0, len(x), batch_size):
        xb = _prepare(x[start:start + batch_size], pre, device, channels_last=True)
        with _autocast(device, precision):
            emb = model.features(xb)
            logits = model.classifier(emb)
        probs.append(torch.softmax(logits.float(), 1).cpu())
        embs.append(emb.float().cpu())
    model.train(was)
    k = model.classifier[-1].out_features
    if not probs:
        return np.zeros((0, k), np.float32), np.zeros((0, model.embedding_dim), np.float32)
    return torch.cat(probs).numpy(), torch.cat(embs).numpy()


def predict_proba(model: CBAMNet, x: torch.Tensor, pre: Preprocessor | None, device: torch.device | str = "cpu",
                  batch_size: int = 256, precision: str = "auto") -> np.ndarray:
    return infer(model, x, pre, device, batch_size, precision)[0]


# ---------------------------------------------------------------- safetensors checkpoints

def save_model(model: CBAMNet, config: TrainConfig, path: str | Path, *, in_chans: int, n_classes: int,
               extra: dict[str, Any] | None = None) -> Path:
    """Write ``path.safetensors`` (weights) and ``path.json`` (config); no pickle."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with io.atomic_path(path.with_suffix(".safetensors")) as tmp:
        save_file(state, str(tmp))
    meta = {"format": "cellfusion-cbamnet/1", "config": config.to_dict(), "in_chans": in_chans,
            "n_classes": n_classes, **(extra or {})}
    io.write_json(meta, path.with_suffix(".json"))
    return path.with_suffix(".safetensors")


def load_model(path: str | Path) -> tuple[CBAMNet, TrainConfig, dict[str, Any]]:
    """Rebuild a model from ``path.json`` + ``path.safetensors`` (loading runs no code from the files)."""
    from safetensors.torch import load_file

    path = Path(path)
    wpath, cpath = path.with_suffix(".safetensors"), path.with_suffix(".json")
    for p in (wpath, cpath):
        if not p.is_file():
            raise ModelFileError("model file is missing", path=p, hint="point at a folder written by `fusion train-cnn`")
    try:
        meta = json.loads(cpath.read_text(encoding="utf-8"))
        cfg_dict = dict(meta["config"])
        cfg_dict["pretrained_path"] = None
        cfg_dict["device"] = "cpu"
        config = TrainConfig(**cfg_dict)
        model = CBAMNet(config.backbone, int(meta["in_chans"]), int(meta["n_classes"]), dropouts=config.dropouts,
                        hidden=config.hidden)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"model config is malformed ({exc})", path=cpath) from exc
    try:
        state = load_file(str(wpath))
    except Exception as exc:
        raise ModelFileError(f"weights are not a readable safetensors file ({exc})", path=wpath) from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"weights do not fit the model described in {cpath.name} ({exc})", path=wpath) from exc
    model.eval()
    return model, config, meta
