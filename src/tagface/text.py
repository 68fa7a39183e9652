"""Text encoders: how G and D read the tags, chosen by `model.text_encoder` from TEXT_ENCODERS.

Every encoder maps the [B, 23] tag vector (one-hot, or a blend of two under a label-input penalty) to a
dense [B, dim] vector and is differentiable in it, so a gradient penalty on the tags reaches them:

* onehot:  the tag vector itself (report 002's ACGAN);
* learned: a learned projection of it (report 001's embedding);
* words:   report 001's word vectors: a tag is the phrase "<colour> hair" or "<colour> eyes", a phrase the
           mean of its word vectors. Learned from scratch by default; `--word-vectors FILE` starts them from
           GloVe-format text vectors the user has (and freezes them unless model.word_vectors_trainable).
           The vectors are model weights, so drawing faces never needs the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .errors import TagfaceError
from .tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS

WORDS = tuple(sorted(set(HAIR_COLOURS) | set(EYE_COLOURS))) + ("hair", "eyes")
SPELLINGS = {"gray": ("gray", "grey"), "blonde": ("blonde", "blond")}  # what a vector file may call a word

TEXT_ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(cls):
        TEXT_ENCODERS[name] = cls
        return cls
    return deco


@register("onehot")
class OneHot(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dim = N_TAGS

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return labels


@register("learned")
class LearnedProjection(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.embed_dim <= 0:
            raise TagfaceError("model.text_encoder learned needs model.embed_dim > 0")
        self.dim = cfg.embed_dim
        self.proj = nn.Sequential(nn.Linear(N_TAGS, cfg.embed_dim), nn.LeakyReLU(0.2))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.proj(labels)


@register("words")
class WordVectors(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.word_dim <= 0:
            raise TagfaceError(f"model.word_dim {cfg.word_dim}: must be > 0")
        self.vectors = nn.Embedding(len(WORDS), cfg.word_dim)
        self.vectors.weight.requires_grad_(not cfg.word_vectors or cfg.word_vectors_trainable)
        phrase = lambda colour, noun: [WORDS.index(colour), WORDS.index(noun)]  # noqa: E731
        self.register_buffer("hair_phrases", torch.tensor([phrase(c, "hair") for c in HAIR_COLOURS]), persistent=False)
        self.register_buffer("eye_phrases", torch.tensor([phrase(c, "eyes") for c in EYE_COLOURS]), persistent=False)
        self.proj = nn.Sequential(nn.Linear(2 * cfg.word_dim, cfg.embed_dim), nn.LeakyReLU(0.2)) \
            if cfg.embed_dim else nn.Identity()
        self.dim = cfg.embed_dim or 2 * cfg.word_dim

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        hair = labels[:, :N_HAIR] @ self.vectors(self.hair_phrases).mean(1)  # [B, 12] @ [12, d]
        eyes = labels[:, N_HAIR:] @ self.vectors(self.eye_phrases).mean(1)
        return self.proj(torch.cat([hair, eyes], 1))


def build_text_encoder(cfg) -> nn.Module:
    kind = cfg.text_encoder
    if kind == "auto":  # the seed recipes' behaviour: embed_dim 0 reads the one-hot, else a learned projection
        kind = "learned" if cfg.embed_dim else "onehot"
    if kind not in TEXT_ENCODERS:
        raise TagfaceError(f"unknown model.text_encoder '{kind}'; allowed: auto {' '.join(TEXT_ENCODERS)}")
    return TEXT_ENCODERS[kind](cfg)


def read_word_vectors(path: str | Path, words: tuple[str, ...] = WORDS) -> torch.Tensor:
    """The vectors of `words` from a GloVe-format text file ('word v1 v2 ...' per line; a word2vec
    'count dim' first line is skipped). Reads only until every word is found."""
    path = Path(path)
    if not path.is_file():
        raise TagfaceError(f"--word-vectors {path}: no such file")
    wanted = {alt: w for w in words for alt in SPELLINGS.get(w, (w,))}
    found: dict[str, torch.Tensor] = {}
    dim = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip().split(" ")
            if n == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue
            word = parts[0].lower()
            if word not in wanted or wanted[word] in found:
                continue
            try:
                vec = torch.tensor([float(v) for v in parts[1:]])
            except ValueError:
                raise TagfaceError(f"--word-vectors {path}: line {n} is not 'word v1 v2 ...'") from None
            if dim is not None and vec.numel() != dim:
                raise TagfaceError(f"--word-vectors {path}: line {n} has {vec.numel()} values, earlier lines {dim}")
            dim = vec.numel()
            found[wanted[word]] = vec
            if len(found) == len(words):
                break
    missing = [w for w in words if w not in found]
    if missing:
        raise TagfaceError(f"--word-vectors {path}: no vectors for {', '.join(missing)}; the file must hold every "
                           f"colour word and 'hair', 'eyes'")
    return torch.stack([found[w] for w in words])


def word_vector_dim(path: str | Path) -> int:
    return read_word_vectors(path).shape[1]


@torch.no_grad()
def load_word_vectors(model: nn.Module, path: str | Path) -> int:
    """Copy the file's vectors into every WordVectors encoder of `model`; returns how many it filled."""
    table = read_word_vectors(path)
    encoders = [m for m in model.modules() if isinstance(m, WordVectors)]
    for enc in encoders:
        if enc.vectors.weight.shape != table.shape:
            raise TagfaceError(f"--word-vectors {path}: {table.shape[1]}-d vectors, but model.word_dim is "
                               f"{enc.vectors.weight.shape[1]}")
        enc.vectors.weight.copy_(table)
    return len(encoders)
