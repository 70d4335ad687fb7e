"""Training-time augmentation on (B, C, H, W) float tensors, seeded by a ``torch.Generator``.

Flips and 90° rotations (cell images have no up or left), elastic deformation (a smooth random
displacement field applied with ``grid_sample``), random erasing (a rectangle set to zero) and
per-channel intensity jitter (gain and offset per channel, so stain intensity varies like it does
between plates). Every random draw comes from the generator passed in, so a seed gives the same
augmented batches.
"""

from __future__ import annotations

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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["erase_scale"] = list(self.erase_scale)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augment":
        d = dict(d or {})
        if "erase_scale" in d:
            d["erase_scale"] = tuple(d["erase_scale"])
        return cls(**d)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.flips:
            x = flip_rot90(x, gen)
        if self.elastic_p > 0:
            x = elastic(x, gen, self.elastic_p, self.elastic_alpha, self.elastic_grid)
        if self.jitter_gain > 0 or self.jitter_offset > 0:
            x = intensity_jitter(x, gen, self.jitter_gain, self.jitter_offset)
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
