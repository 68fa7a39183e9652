"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The same random, differentiable transforms are applied to every image D sees, real or fake, in D's and in G's
step, so D cannot overfit the small training set while G still gets gradients through the transforms. Images
are in [-1, 1]; every draw comes from the caller's torch.Generator, so a resumed run continues exactly.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .errors import TagfaceError


def _rand(x: torch.Tensor, rng: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(x.shape[0], *shape, generator=rng).to(x.device, x.dtype)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random brightness (+-0.5), saturation (x0 to x2) and contrast (x0.5 to x1.5) per image."""
    x = x + (_rand(x, rng, 1, 1, 1) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (_rand(x, rng, 1, 1, 1) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, rng, 1, 1, 1) + 0.5) + mean


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio x its size in each direction; uncovered pixels are 0."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=rng).to(x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=rng).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy[None] + dy + 1).clamp(0, h + 1)  # index into the 1-pixel zero border past either edge
    gx = (gx[None] + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)
    return padded[torch.arange(b, device=x.device)[:, None, None], gy, gx].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio x the image size per image, centred anywhere (clipped at the edges)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=rng).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=rng).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij")
    gy = (gy[None] + cy - ch // 2).clamp(0, h - 1)
    gx = (gx[None] + cx - cw // 2).clamp(0, w - 1)
    mask = torch.ones(b, h, w, device=x.device, dtype=x.dtype)
    mask[torch.arange(b, device=x.device)[:, None, None], gy, gx] = 0
    return x * mask[:, None]


TRANSFORMS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout,
}


def parse_policy(policy: str) -> list[str]:
    """'color,translation,cutout' -> the transform names, checked; '' -> none."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise TagfaceError(f"train.diffaugment {policy!r}: unknown transform {unknown[0]!r}; allowed: "
                           f"{', '.join(TRANSFORMS)} (comma-separated), or '' for none")
    return names


def diff_augment(x: torch.Tensor, names: list[str], rng: torch.Generator) -> torch.Tensor:
    for name in names:
        x = TRANSFORMS[name](x, rng)
    return x


class DiffAugmented:
    """Calls D on augmented images; what the losses see instead of D when train.diffaugment is set. Gradient
    penalties then apply to D o T, which is what D is trained as."""

    def __init__(self, D: Callable, names: list[str], rng: torch.Generator):
        self.D, self.names, self.rng = D, names, rng

    def __call__(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        return self.D(diff_augment(x, self.names, self.rng), labels)
