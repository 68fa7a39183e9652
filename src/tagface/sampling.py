"""Loading a trained generator and drawing faces with torch: seeds, truncation, grids, standing statistics.

A generator file is a safetensors file of G's weights whose metadata carries the recipe and the training
data's tag frequencies, so it is all `generate` needs. A run directory or a full training checkpoint works
too (the EMA weights are taken); with no checkpoint the default model shipped in the package is used. Writing
the pictures is images' job; numpy_generator draws the same faces from DCGAN generator files without torch.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import __version__
from .checkpoint import atomic_save_tensors, load_state, load_tensors, load_weights, read_metadata, resolve_checkpoint
from .config import Recipe
from .data import to_uint8
from .errors import TagfaceError
from .images import image_grid, save_pil
from .losses import Labels
from .models import build_generator
from .tags import EYE_COLOURS, HAIR_COLOURS, TagFrequencies, Tags


def save_generator(G: nn.Module, recipe: Recipe, freq: TagFrequencies, path: str | Path, step: int = 0,
                   dtype: torch.dtype = torch.float32, extra_meta: dict[str, str] | None = None) -> None:
    meta = {"tagface.version": __version__, "tagface.kind": "generator", "tagface.step": str(step),
            "tagface.recipe": json.dumps(recipe.to_dict()),
            "tagface.tag_frequencies": json.dumps({"hair": freq.hair, "eyes": freq.eyes}), **(extra_meta or {})}
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in G.state_dict().items()}
    atomic_save_tensors(tensors, path, meta)


@torch.no_grad()
def standing_batchnorm(G: nn.Module, freq: TagFrequencies, z_dim: int, batches: int = 50, batch_size: int = 64,
                       seed: int = 0) -> nn.Module:
    """A copy of G whose BatchNorm layers hold the average statistics of `batches` batches it generates
    (BigGAN's "standing statistics"). The EMA generator otherwise carries the live generator's running
    statistics: those of other weights, and mostly of the last few batches. G itself when there is nothing to
    recompute (no BatchNorm, or `batches` <= 0)."""
    if batches <= 0 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in G.modules()):
        return G
    G = copy.deepcopy(G)
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch below
    G.train()
    g, device = torch.Generator().manual_seed(seed), next(G.parameters()).device
    hair, eyes = torch.tensor(freq.hair, dtype=torch.double), torch.tensor(freq.eyes, dtype=torch.double)
    for _ in range(batches):
        labels = Labels(torch.multinomial(hair, batch_size, True, generator=g),
                        torch.multinomial(eyes, batch_size, True, generator=g))
        G(torch.randn(batch_size, z_dim, generator=g).to(device), labels.onehot.to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return G.eval()


@dataclass
class FaceGenerator:
    """A generator ready to draw: weights in eval mode plus the facts needed to sample well."""

    G: nn.Module
    recipe: Recipe
    freq: TagFrequencies
    step: int
    source: Path

    @property
    def z_dim(self) -> int:
        return self.recipe.model.z_dim

    @property
    def resolution(self) -> int:
        return self.recipe.train.resolution

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def default_truncation(self) -> float:
        return self.recipe.sample.truncation

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> "FaceGenerator":
        p = resolve_checkpoint(path)
        meta = read_metadata(p)
        if "tagface.recipe" not in meta:
            raise TagfaceError(f"{p} is not a tagface checkpoint (no recipe in its metadata)")
        if meta.get("tagface.kind", "generator") != "generator":  # e.g. the discriminator shipped beside the model
            raise TagfaceError(f"{p} holds a {meta['tagface.kind']}, not a generator; pass the generator file "
                               "or the run directory")
        try:
            recipe = Recipe.from_dict(json.loads(meta["tagface.recipe"]), str(p))
        except ValueError:  # not JSON
            raise TagfaceError(f"{p}: its recipe metadata is not a recipe (not JSON)") from None
        if "tagface.state" in meta:  # a full training checkpoint: take the EMA generator
            tensors, freq = load_state(p)[0]["G_ema"], TagFrequencies.uniform()
        else:
            tensors = load_tensors(p)
            freq = TagFrequencies.from_metadata(meta)
        G = build_generator(recipe.model, recipe.train.resolution)
        try:
            load_weights(G, tensors)
        except RuntimeError as err:
            raise TagfaceError(f"{p}: weights do not fit the recipe's generator ({str(err).splitlines()[0]})") from None
        return cls(G.to(device).eval().requires_grad_(False), recipe, freq, int(meta.get("tagface.step", 0)), p)

    def noise(self, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        """n noise vectors from a seed; truncation scales them (report 000's lowered noise)."""
        t = self.recipe.sample.truncation_or_default(truncation)
        # torch's CPU normal sampler fills blocks of 16 values, so draw whole blocks of faces: face i of a
        # seed is then the same whether 3 or 30 faces are asked for
        rows = -(-n // 16) * 16
        return torch.randn(rows, self.z_dim, generator=torch.Generator().manual_seed(seed))[:n] * t

    def complete(self, tags: Tags, seed: int) -> tuple[Tags, list[str]]:
        return self.freq.complete(tags, seed)

    @torch.no_grad()
    def draw(self, z: torch.Tensor, labels: Labels, batch_size: int = 256) -> torch.Tensor:
        """z [N, Z] and labels -> uint8 images [N, 3, R, R]."""
        device = next(self.G.parameters()).device
        out = [self.G(z[i:i + batch_size].to(device), labels.onehot[i:i + batch_size].to(device))
               for i in range(0, z.shape[0], batch_size)]
        return to_uint8(torch.cat(out)).cpu()

    def generate(self, tags: Tags, n: int, seed: int = 0, truncation: float | None = None, rows=None) -> torch.Tensor:
        """n faces of one tag pair from a seed; `rows` (indices) draws only those of the n faces."""
        if tags.hair is None or tags.eyes is None:
            raise ValueError("complete the tags first")
        z = self.noise(n, seed, truncation)
        z = z if rows is None else z[torch.as_tensor(rows, dtype=torch.long)]
        m = z.shape[0]
        return self.draw(z, Labels(torch.full((m,), HAIR_COLOURS.index(tags.hair)),
                                   torch.full((m,), EYE_COLOURS.index(tags.eyes))))

    def tag_grid(self, seed: int = 0, truncation: float | None = None) -> torch.Tensor:
        """The 12 x 11 grid: rows are hair colours, columns eye colours, one shared noise vector per row."""
        nh, ne = len(HAIR_COLOURS), len(EYE_COLOURS)
        z = self.noise(nh, seed, truncation).repeat_interleave(ne, 0)
        return self.draw(z, Labels(torch.arange(nh).repeat_interleave(ne), torch.arange(ne).repeat(nh)))


def sample_grid_labels(per_row: int) -> Labels:
    """Fixed tags for training-progress grids: one row per hair colour, eye colours varied."""
    hair = torch.arange(len(HAIR_COLOURS)).repeat_interleave(per_row)
    eyes = (torch.arange(len(HAIR_COLOURS)) * 5 % len(EYE_COLOURS)).repeat_interleave(per_row)
    return Labels(hair, eyes)


def save_image_grid(images: torch.Tensor, path: str | Path, ncol: int = 8) -> None:
    save_pil(image_grid(images, ncol), path)
