"""Tag guidance: move each tag's noise towards the noise that a tagger reads as that tag (strict.py instead draws
a misread face again, at sampling time).

With the tags a small part of G's input, z can outvote them: the shipped model draws some "white hair" faces with
dark hair, and which ones depends on z (docs/ablations.md, "Past step 15800"). Draw many faces per hair x eye pair,
and for each tag take the mean noise of the faces a tagger reads as that tag, minus the mean noise of all faces
asked for it: a direction in z that makes the tag legible. Adding `strength` times it to every face asked for that
tag is a Gaussian stand-in for redrawing the misread faces, and, unlike lowered noise, it keeps z's spread.

G reads one-hot tags beside z at its first linear layer, W [z | tags]. Feeding it z + S^T tags is the same as feeding
z with the tag columns W_t replaced by W_t + W_z S^T, so the guidance folds into the weights: a guided generator is
a plain generator file, drawn unchanged by torch, numpy_generator, ONNX and the studio. Its BatchNorm statistics
must then be gathered again: the old ones normalise inputs without the shifts, and that costs fine detail
(docs/ablations.md, "Tag guidance").
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .errors import TagfaceError
from .losses import Labels
from .sampling import standing_batchnorm
from .tagger import predict_logits
from .tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS
from .text import OneHot


def check_strength(strength: float) -> float:
    if not strength >= 0:  # also rejects nan
        raise TagfaceError(f"--tag-guidance {strength}: must be >= 0 (0: no guidance; 1 is the measured setting)")
    return strength


def tag_input_layer(G: nn.Module, flag: str = "--tag-guidance") -> nn.Linear:
    """G's first layer, which reads [z | one-hot tags]; a clear error for generators that read tags otherwise."""
    layer = getattr(G, "fc", None)
    layer = layer[0] if isinstance(layer, nn.Sequential) else layer
    z_dim = getattr(G, "z_dim", None)
    if not (isinstance(getattr(G, "embed", None), OneHot) and isinstance(layer, nn.Linear)
            and layer.in_features == z_dim + N_TAGS):
        raise TagfaceError(f"{flag}: needs a generator that reads one-hot tags beside z at its first layer "
                           "(model.text_encoder onehot, or auto with embed_dim 0); this one embeds its tags first")
    return layer


@torch.no_grad()
def tag_shifts(gen, tagger: nn.Module, per_pair: int = 120, seed: int = 0, min_read: int = 20) -> torch.Tensor:
    """[N_TAGS, z_dim] shifts, hair colours then eye colours: per tag, the mean z of the faces `tagger` reads as
    that tag minus the mean z of every face asked for it (subtracting the drawn mean, not 0, cancels most of the
    sampling noise). A tag the tagger reads right fewer than `min_read` times (e.g. gray eyes for a tagger that
    never saw them) gets no shift. `gen` is a sampling.FaceGenerator; its faces are drawn at truncation 1."""
    tag_input_layer(gen.G)
    nh, ne = len(HAIR_COLOURS), len(EYE_COLOURS)
    hair = torch.arange(nh).repeat_interleave(ne * per_pair)
    eyes = torch.arange(ne).repeat_interleave(per_pair).repeat(nh)
    z = torch.randn(hair.numel(), gen.z_dim, generator=torch.Generator().manual_seed(seed))
    logits = predict_logits(tagger, gen.draw(z, Labels(hair, eyes)))
    read = {"hair": (hair, logits[:, :N_HAIR].argmax(1)), "eyes": (eyes, logits[:, N_HAIR:].argmax(1))}
    shifts = torch.zeros(N_TAGS, gen.z_dim)
    for offset, kind, count in ((0, "hair", nh), (N_HAIR, "eyes", ne)):
        asked, got = read[kind]
        for c in range(count):
            mask = asked == c
            right = mask & (got == c)
            if int(right.sum()) >= min_read:
                shifts[offset + c] = z[right].mean(0) - z[mask].mean(0)
    return shifts


@torch.no_grad()
def fold_tag_shifts(G: nn.Module, shifts: torch.Tensor, strength: float) -> nn.Module:
    """Make G(z, tags) draw what G(z + strength * tags @ shifts, tags) drew, in place; returns G."""
    check_strength(strength)
    layer = tag_input_layer(G)
    z_dim = layer.in_features - N_TAGS
    if tuple(shifts.shape) != (N_TAGS, z_dim):
        raise TagfaceError(f"tag shifts of shape {tuple(shifts.shape)} do not fit a generator with z_dim {z_dim}")
    w = layer.weight
    w[:, z_dim:] += strength * (w[:, :z_dim].double() @ shifts.double().T).to(w.dtype)
    return G


def guide_generator(gen, load_tagger, strength: float, per_pair: int = 120, seed: int = 0) -> dict:
    """Fold tag guidance of `strength` into `gen` (a sampling.FaceGenerator, changed in place), then gather its
    standing BatchNorm statistics again (the recipe's batch count, 50 if it has none). `load_tagger` is called
    only once G is known to be guidable. Returns what was done, for the file's metadata."""
    check_strength(strength)
    tag_input_layer(gen.G)  # before loading a tagger or drawing thousands of faces
    shifts = tag_shifts(gen, load_tagger(), per_pair=per_pair, seed=seed)
    fold_tag_shifts(gen.G, shifts, strength)
    batches = gen.recipe.sample.standing_stats or 50
    gen.recipe.sample.standing_stats = batches
    gen.G = standing_batchnorm(gen.G, gen.recipe.sample.standing_tags(gen.freq), gen.z_dim, batches)
    return {"strength": strength, "per_pair": per_pair, "seed": seed, "standing_stats": batches}
