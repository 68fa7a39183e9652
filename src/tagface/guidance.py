"""Tag guidance: move each tag's noise towards the noise that a tagger reads as that tag; or, at sampling time,
draw a face again while a tagger misreads it (`RedrawMisread`).

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

import numpy as np
import torch
import torch.nn as nn

from .errors import TagfaceError
from .losses import Labels
from .sampling import standing_batchnorm
from .tagger import predict_logits
from .tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS, Tags
from .text import OneHot


def check_strength(strength: float) -> float:
    if not strength >= 0:  # also rejects nan
        raise TagfaceError(f"--tag-guidance {strength}: must be >= 0 (0: no guidance; 1 is the measured setting)")
    return strength


def tag_input_layer(G: nn.Module) -> nn.Linear:
    """G's first layer, which reads [z | one-hot tags]; a clear error for generators that read tags otherwise."""
    layer = getattr(G, "fc", None)
    layer = layer[0] if isinstance(layer, nn.Sequential) else layer
    z_dim = getattr(G, "z_dim", None)
    if not (isinstance(getattr(G, "embed", None), OneHot) and isinstance(layer, nn.Linear)
            and layer.in_features == z_dim + N_TAGS):
        raise TagfaceError("--tag-guidance: needs a generator that reads one-hot tags beside z at its first layer "
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


def redraw_seed(seed: int, draw: int) -> int:
    """The seed of a face's `draw`-th draw: the seed itself first (so faces read right on the first draw are the
    plain faces of that seed), then seeds unrelated to it and to each other, below 2**31 like the studio's."""
    if draw == 0:
        return seed
    return int(np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, draw]).generate_state(1)[0]) & 0x7FFFFFFF


@torch.no_grad()
def redraw_until_read(draw, tagger: nn.Module, labels: Labels, checked: tuple[torch.Tensor, torch.Tensor],
                      tries: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rejection by a tagger: `draw(k)` gives the k-th draw of every face (uint8 [N, 3, R, R]); a face keeps the
    first draw the tagger reads as its `labels`, else the draw it found closest. `checked` holds [N] masks of the
    hair and eye colours to check. Returns the faces, the draw each kept, and [N] masks: misread at first, and
    still misread at the end."""
    check_hair, check_eyes = checked
    n = labels.hair.numel()
    best, best_score, kept = None, torch.full((n,), -float("inf")), torch.zeros(n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for k in range(tries if bool((check_hair | check_eyes).any()) else 1):
        images = torch.as_tensor(draw(k))
        logits = predict_logits(tagger, images)
        log_hair, log_eyes = logits[:, :N_HAIR].log_softmax(1), logits[:, N_HAIR:].log_softmax(1)
        score = (torch.where(check_hair, log_hair.gather(1, labels.hair[:, None])[:, 0], 0.0)
                 + torch.where(check_eyes, log_eyes.gather(1, labels.eyes[:, None])[:, 0], 0.0))
        right = ((~check_hair | (log_hair.argmax(1) == labels.hair))
                 & (~check_eyes | (log_eyes.argmax(1) == labels.eyes)))
        if best is None:
            best, first_misread = images.clone(), ~right
        take = ~done & (right | (score > best_score))
        best[take], best_score[take], kept[take] = images[take], score[take], k
        done |= right
        if bool(done.all()):
            break
    return best, kept, first_misread, ~done


class RedrawMisread:
    """A generator whose faces a tagger reads as the tags asked for: each face it misreads is drawn again, up to
    `tries` draws in all, and a face still misread keeps the draw the tagger found closest to the tags.

    Rejection by a tagger is exact conditioning where tag guidance is a Gaussian stand-in for it, so the tags get
    truer (docs/ablations.md, "Tag guidance"), at the price of the faces a tagger finds ambiguous, which costs
    some variety. A colour the generator never saw in training (gray eyes for mlds models) is not checked. The
    i-th face of a request is row i of the noise of seed `redraw_seed(seed, k)` for the first draw k that was
    read right: the same seed always gives the same faces, and `seeds` says which seed drew each face."""

    def __init__(self, gen, tagger: nn.Module, tries: int = 8):
        if tries < 1:
            raise TagfaceError(f"--strict-tags {tries}: give at least 1 draw per face")
        self.gen, self.tagger, self.tries = gen, tagger, tries
        self.seeds: list[int] = []
        self.faces = self.misread = self.still_misread = 0  # over every request so far: drawn, redrawn, never read right
        self.unchecked: set[str] = set()  # colours asked for that the model never saw, so never checked

    def __getattr__(self, name: str):  # everything but generate is the wrapped generator's (noise, complete, ...)
        if name == "gen":
            raise AttributeError(name)
        return getattr(self.gen, name)

    def generate(self, tags: Tags, n: int, seed: int = 0, truncation: float | None = None) -> torch.Tensor:
        hair, eyes = HAIR_COLOURS.index(tags.hair), EYE_COLOURS.index(tags.eyes)
        check_hair, check_eyes = self.gen.freq.hair[hair] > 0, self.gen.freq.eyes[eyes] > 0
        self.unchecked |= {c for c, checked in ((f"{tags.hair} hair", check_hair), (f"{tags.eyes} eyes", check_eyes))
                           if not checked}
        labels = Labels(torch.full((n,), hair), torch.full((n,), eyes))
        faces, kept, misread, still = redraw_until_read(
            lambda k: self.gen.generate(tags, n, redraw_seed(seed, k), truncation), self.tagger, labels,
            (torch.full((n,), check_hair), torch.full((n,), check_eyes)), self.tries)
        self.faces, self.misread, self.still_misread = (self.faces + n, self.misread + int(misread.sum()),
                                                        self.still_misread + int(still.sum()))
        self.seeds = [redraw_seed(seed, k) for k in kept.tolist()]
        return faces

    def summary(self) -> str:
        """One line on what the redrawing did, for the command line and the studio's notes."""
        line = f"the tagger misread {self.misread} of {self.faces} faces, drawn again" + (
            f"; {self.still_misread} still misread after {self.tries} draws (kept the closest)" if self.still_misread
            else "" if not self.misread else f"; all read right within {self.tries} draws")
        if self.unchecked:
            line += f"; not checked: {', '.join(sorted(self.unchecked))} (never in the model's training data)"
        return line
