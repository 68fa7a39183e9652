"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training") and ADA's
adaptive strength (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data").

The same random, differentiable transforms are applied to every image D sees, real or fake, in D's and in G's
step, so D cannot overfit the small training set while G still gets gradients through the transforms. With ADA
each image takes each transform only with probability p, and p follows how sure D is of the real faces. Images
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


def diff_augment(x: torch.Tensor, names: list[str], rng: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """The transforms in turn; with p < 1 (ADA) each image takes each one with probability p."""
    if p <= 0:
        return x
    for name in names:
        y = TRANSFORMS[name](x, rng)
        x = y if p >= 1 else torch.where(_rand(x, rng, 1, 1, 1) < p, y, x)
    return x


def ada_adjust(p: float, overfit: float, target: float, images: int, kimg: float) -> float:
    """ADA's controller: `overfit` is D's mean sign on real faces (r_t; 1 when D is sure of every one). Above the
    target p rises, below it falls, each time by `images` / (`kimg` x 1000): p can cross from 0 to 1 in `kimg`
    thousand images. Kept within [0, 1]."""
    direction = (overfit > target) - (overfit < target)
    return min(max(p + direction * images / (kimg * 1000), 0.0), 1.0)


class DiffAugmented:
    """Calls D on augmented images; what the losses see instead of D when train.diffaugment is set. Gradient
    penalties then apply to D o T, which is what D is trained as. `p` is the chance of each transform per image:
    1 for DiffAugment, adapted by the trainer for ADA."""

    def __init__(self, D: Callable, names: list[str], rng: torch.Generator, p: float = 1.0):
        self.D, self.names, self.rng, self.p = D, names, rng, p

    def __call__(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        return self.D(diff_augment(x, self.names, self.rng, self.p), labels)
