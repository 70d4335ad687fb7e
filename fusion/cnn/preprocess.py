"""Crop preprocessing: per-channel percentile normalization, optional CLAHE and Gaussian
denoising, resize. Input (N, H, W, C) of any numeric dtype → float32 tensor (N, C, S, S) in [0, 1].

Percentiles are taken per channel either over the whole training set (``scope="dataset"``, the
default: they are learned by :meth:`Preprocessor.fit` and saved with the model, so intensity
differences between treatments survive) or per crop (``scope="image"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cellfusion_core.errors import ConfigError, InputError


@dataclass
class Preprocessor:
    """Fit-once, apply-anywhere crop preprocessing (state: per-channel percentiles).

    Parameters
    ----------
    image_size:
        Output side in pixels (224 for ImageNet-size backbones; smaller sizes allowed).
    low, high:
        Percentiles mapped to 0 and 1 (values clipped to [0, 1]).
    scope:
        ``"dataset"`` or ``"image"`` (see module doc).
    clahe:
        Apply contrast-limited adaptive histogram equalization (skimage) per channel.
    clahe_clip:
        CLAHE clip limit.
    denoise_sigma:
        Gaussian denoising sigma in pixels (0 = off).
    """

    image_size: int = 224
    low: float = 1.0
    high: float = 99.8
    scope: str = "dataset"
    clahe: bool = False
    clahe_clip: float = 0.01
    denoise_sigma: float = 0.0
    lo_: list[float] | None = field(default=None)
    hi_: list[float] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.scope not in ("dataset", "image"):
            raise ConfigError(f"normalization scope must be 'dataset' or 'image', got {self.scope!r}")
        if not 0 <= self.low < self.high <= 100:
            raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.low}, {self.high}")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be at least 8 pixels, got {self.image_size}")

    def fit(self, x: np.ndarray, max_samples: int = 2000, seed: int = 0) -> "Preprocessor":
        x = _check(x)
        if self.scope == "dataset":
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(len(x), size=min(len(x), max_samples), replace=False))
            sample = np.asarray(x[idx], dtype=np.float32)
            self.lo_ = [float(v) for v in np.percentile(sample, self.low, axis=(0, 1, 2))]
            self.hi_ = [float(v) for v in np.percentile(sample, self.high, axis=(0, 1, 2))]
        return self

    def transform(self, x: np.ndarray, batch: int = 512, resize: bool = True) -> torch.Tensor:
        """(N, H, W, C) → float32 tensor (N, C, image_size, image_size).

        ``resize=False`` keeps the crops' own size (training resizes each batch on the device with
        :meth:`resize`, which saves memory at 224 px)."""
        x = _check(x)
        if self.scope == "dataset" and self.lo_ is None:
            raise ConfigError("Preprocessor.transform called before fit", hint="call fit(x) on the training crops")
        if self.scope == "dataset" and len(self.lo_) != x.shape[-1]:
            raise InputError(f"crops have {x.shape[-1]} channels, the model was trained on {len(self.lo_)}")
        out = []
        for start in range(0, len(x), batch):
            out.append(self._transform_block(np.asarray(x[start:start + batch], dtype=np.float32), resize))
        return torch.cat(out) if out else torch.empty(0, x.shape[-1], self.image_size, self.image_size)

    def resize(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) → (B, C, image_size, image_size), bilinear (antialiased when shrinking)."""
        if t.shape[-1] == self.image_size and t.shape[-2] == self.image_size:
            return t
        return F.interpolate(t, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False, antialias=t.shape[-1] > self.image_size)

    def _transform_block(self, x: np.ndarray, resize: bool = True) -> torch.Tensor:
        if self.scope == "dataset":
            lo = np.asarray(self.lo_, np.float32)
            hi = np.asarray(self.hi_, np.float32)
        else:
            lo = np.percentile(x, self.low, axis=(1, 2), keepdims=True).astype(np.float32)
            hi = np.percentile(x, self.high, axis=(1, 2), keepdims=True).astype(np.float32)
        x = np.clip((x - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
        if self.clahe or self.denoise_sigma > 0:
            x = _filter(x, self.clahe, self.clahe_clip, self.denoise_sigma)
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        if resize:
            t = self.resize(t)
        return t.float().clamp_(0, 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        return cls(**d)


def _filter(x: np.ndarray, clahe: bool, clip: float, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    from skimage.exposure import equalize_adapthist

    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[-1]):
            img = x[i, :, :, c]
            if clahe:
                img = equalize_adapthist(img, clip_limit=clip).astype(np.float32)
            if sigma > 0:
                img = gaussian_filter(img, sigma)
            out[i, :, :, c] = img
    return out


def _check(x) -> np.ndarray:
    if not hasattr(x, "shape") or len(x.shape) != 4:
        raise InputError(f"crops must be an (N, H, W, C) array, got shape {getattr(x, 'shape', None)}")
    if x.shape[0] == 0:
        raise InputError("no crops given (N = 0)")
    return x


def check_crop_stack(X) -> np.ndarray:
    """``X`` if it is a non-empty (N, H, W, C) crop array, else an :class:`InputError` (the CNN models' input check)."""
    if not hasattr(X, "ndim") or X.ndim != 4:
        raise InputError(f"X must be a crop array (N, H, W, C), got shape {getattr(X, 'shape', None)}")
    if len(X) == 0:
        raise InputError("X holds no crops")
    return X
