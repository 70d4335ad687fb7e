"""Training-time augmentation on (B, C, H, W) float tensors, seeded by a ``torch.Generator``.

Flips and 90° rotations (cell images have no up or left), elastic deformation (a smooth random
displacement field applied with ``grid_sample``), random erasing (a rectangle set to zero),
per-channel intensity jitter (gain and offset per channel, so stain intensity varies like it does
between plates), random resized crops (a box of a random share of the area and aspect ratio,
resampled to the full size) and Gaussian blur with a random sigma. Every random draw comes from the
generator passed in, so a seed gives the same augmented batches.

Random crops and blur are off by default (the supervised recipe does not use them);
:data:`SIMCLR` is the contrastive (SimCLR-style) setting that turns them on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class Augment:
    """Which augmentations to apply, and how strongly."""

    flips: bool = True
    elastic_p: float = 0.3
    elastic_alpha: float = 0.06   # displacement amplitude as a fraction of the image side
    elastic_grid: int = 4         # control points per side of the displacement field
    erase_p: float = 0.25
    erase_scale: tuple[float, float] = (0.02, 0.15)
    jitter_gain: float = 0.15     # per-channel multiplicative jitter ±
    jitter_offset: float = 0.05   # per-channel additive jitter ±
    crop_p: float = 0.0           # share of images given a random resized crop
    crop_scale: tuple[float, float] = (0.5, 1.0)   # area of the box as a share of the image
    crop_ratio: tuple[float, float] = (0.75, 1.333)  # aspect ratio of the box
    blur_p: float = 0.0           # share of images blurred
    blur_sigma: tuple[float, float] = (0.1, 1.5)    # Gaussian sigma in pixels, drawn uniformly

    _PAIRS = ("erase_scale", "crop_scale", "crop_ratio", "blur_sigma")

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in self._PAIRS:
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augment":
        d = dict(d or {})
        for key in cls._PAIRS:
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.crop_p > 0:
            x = random_resized_crop(x, gen, self.crop_p, self.crop_scale, self.crop_ratio)
        if self.flips:
            x = flip_rot90(x, gen)
        if self.elastic_p > 0:
            x = elastic(x, gen, self.elastic_p, self.elastic_alpha, self.elastic_grid)
        if self.jitter_gain > 0 or self.jitter_offset > 0:
            x = intensity_jitter(x, gen, self.jitter_gain, self.jitter_offset)
        if self.blur_p > 0:
            x = gaussian_blur(x, gen, self.blur_p, self.blur_sigma)
        if self.erase_p > 0:
            x = random_erase(x, gen, self.erase_p, self.erase_scale)
        return x


def _rand(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=gen, device=gen.device)


def flip_rot90(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image gets one of the 8 symmetries of the square."""
    code = torch.randint(0, 8, (x.shape[0],), generator=gen, device=gen.device).to(x.device)
    out = x.clone()
    for k in range(8):
        sel = code == k
        if not bool(sel.any()):
            continue
        y = x[sel]
        if k >= 4:
            y = torch.flip(y, dims=(-1,))
        out[sel] = torch.rot90(y, k % 4, dims=(-2, -1))
    return out


def elastic(x: torch.Tensor, gen: torch.Generator, p: float, alpha: float, grid: int) -> torch.Tensor:
    """Smooth random displacement (coarse random field upsampled bicubically) on a fraction p of images."""
    b, _, h, w = x.shape
    apply = (_rand(gen, b) < p).to(x.device)
    coarse = (_rand(gen, b, 2, grid, grid) * 2 - 1).to(x.device) * (2 * alpha)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    ys = torch.linspace(-1, 1, h, device=x.device)
    xs = torch.linspace(-1, 1, w, device=x.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy], dim=-1).expand(b, h, w, 2)
    disp = field.permute(0, 2, 3, 1) * apply.view(b, 1, 1, 1).to(x.dtype)
    return F.grid_sample(x, base + disp, mode="bilinear", padding_mode="reflection", align_corners=True)


def intensity_jitter(x: torch.Tensor, gen: torch.Generator, gain: float, offset: float) -> torch.Tensor:
    b, c = x.shape[:2]
    g = 1 + (_rand(gen, b, c, 1, 1).to(x.device) * 2 - 1) * gain
    o = (_rand(gen, b, c, 1, 1).to(x.device) * 2 - 1) * offset
    return (x * g + o).clamp(0, 1)


def random_erase(x: torch.Tensor, gen: torch.Generator, p: float, scale: tuple[float, float]) -> torch.Tensor:
    b, _, h, w = x.shape
    u = _rand(gen, b, 5).cpu()
    out = x.clone()
    for i in range(b):
        if u[i, 0] >= p:
            continue
        area = (scale[0] + (scale[1] - scale[0]) * float(u[i, 1])) * h * w
        aspect = float(torch.exp((u[i, 2] * 2 - 1) * 1.0986))  # ratio in [1/3, 3]
        eh = max(1, min(h, int(round((area * aspect) ** 0.5))))
        ew = max(1, min(w, int(round((area / aspect) ** 0.5))))
        top = int(float(u[i, 3]) * (h - eh + 1))
        left = int(float(u[i, 4]) * (w - ew + 1))
        out[i, :, top:top + eh, left:left + ew] = 0
    return out


def random_resized_crop(x: torch.Tensor, gen: torch.Generator, p: float, scale: tuple[float, float],
                        ratio: tuple[float, float]) -> torch.Tensor:
    """On a fraction p of images: a box of area share in ``scale`` and aspect ratio in ``ratio``
    (log-uniform) at a random position, resampled bilinearly to the full (H, W)."""
    b = x.shape[0]
    u = _rand(gen, b, 4).to(x.device, x.dtype)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = torch.log(torch.tensor(ratio, dtype=x.dtype, device=x.device))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * u[:, 1])
    sw = torch.sqrt(area * aspect).clamp(max=1.0)   # box width as a share of the image width
    sh = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - sw) * (2 * u[:, 2] - 1)               # box centre in [-1, 1] coordinates, box inside
    cy = (1 - sh) * (2 * u[:, 3] - 1)
    apply = (_rand(gen, b) < p).to(x.device)
    one, zero = torch.ones_like(sw), torch.zeros_like(sw)
    sw, sh = torch.where(apply, sw, one), torch.where(apply, sh, one)
    cx, cy = torch.where(apply, cx, zero), torch.where(apply, cy, zero)
    theta = torch.stack([torch.stack([sw, zero, cx], 1), torch.stack([zero, sh, cy], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def gaussian_blur(x: torch.Tensor, gen: torch.Generator, p: float, sigma: tuple[float, float]) -> torch.Tensor:
    """On a fraction p of images: a separable Gaussian blur, sigma drawn uniformly from ``sigma``
    (pixels), reflected borders; the other images are returned unchanged."""
    b, c, h, w = x.shape
    s = sigma[0] + (sigma[1] - sigma[0]) * _rand(gen, b).to(x.device, x.dtype)
    apply = (_rand(gen, b) < p).to(x.device)
    radius = max(1, min(int(math.ceil(3 * sigma[1])), (min(h, w) - 1) // 2))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / s.clamp(min=1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)                                  # (B, K)
    k = k.repeat_interleave(c, 0)                                  # (B*C, K): one kernel per image channel
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=b * c)
    y = y.reshape(b, c, h, w)
    return torch.where(apply.view(b, 1, 1, 1), y, x)


#: SimCLR-style views for cell crops: random resized crops, the 8 symmetries, per-channel
#: intensity jitter and blur; no elastic deformation or erasing.
SIMCLR = Augment(flips=True, elastic_p=0.0, erase_p=0.0, jitter_gain=0.2, jitter_offset=0.05,
                 crop_p=1.0, crop_scale=(0.4, 1.0), blur_p=0.5, blur_sigma=(0.1, 1.5))
