"""Strict tags: draw a face again while a tagger misreads its colours (`tagface generate --strict-tags`, the studio's
"strict tags" box).

Rejection by a tagger is exact conditioning where tag guidance (guidance.py) is a Gaussian stand-in for it, so the
tags get truer, at the price of the faces a tagger finds ambiguous, which costs some variety (docs/ablations.md,
"Strict tags"). Torch-free, like numpy_generator and numpy_tagger: with the shipped model the command never imports
torch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import TagfaceError
from .images import as_uint8
from .tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, Tags

Reader = Callable[[np.ndarray], np.ndarray]  # uint8 faces [N, 3, R, R] -> [N, 23] logits (numpy_tagger.load_reader)


def redraw_seed(seed: int, draw: int) -> int:
    """The seed of a face's `draw`-th draw: the seed itself first (so faces read right on the first draw are the
    plain faces of that seed), then seeds unrelated to it and to each other, below 2**31 like the studio's."""
    if draw == 0:
        return seed
    return int(np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, draw]).generate_state(1)[0]) & 0x7FFFFFFF


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def redraw_until_read(draw: Callable[[int, np.ndarray], np.ndarray], read: Reader, hair: np.ndarray,
                      eyes: np.ndarray, checked: tuple[np.ndarray, np.ndarray], tries: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rejection by a tagger: `draw(k, rows)` gives the k-th draw of the faces `rows` (indices; uint8 [len(rows), 3, R,
    R], numpy or torch), every face at k = 0 and after that only the faces not yet read right. A face keeps the first
    draw `read` reads as its colours `hair` and `eyes` ([N] indices), else the draw it found closest. `checked` holds
    [N] masks of the hair and eye colours to check. Returns the faces (numpy), the draw each kept, and [N] masks:
    misread at first, and still misread at the end."""
    check_hair, check_eyes = (np.asarray(c, bool) for c in checked)
    hair, eyes, n = np.asarray(hair), np.asarray(eyes), len(hair)
    best, best_score, kept = None, np.full(n, -np.inf), np.zeros(n, np.int64)
    done = np.zeros(n, bool)
    for k in range(tries if (check_hair | check_eyes).any() else 1):
        rows = np.flatnonzero(~done)
        images = as_uint8(draw(k, rows))
        logits = np.asarray(read(images), np.float64)
        log_hair, log_eyes = log_softmax(logits[:, :N_HAIR]), log_softmax(logits[:, N_HAIR:])
        at, h, e, ch, ce = np.arange(len(rows)), hair[rows], eyes[rows], check_hair[rows], check_eyes[rows]
        score = np.where(ch, log_hair[at, h], 0.0) + np.where(ce, log_eyes[at, e], 0.0)
        right = (~ch | (log_hair.argmax(1) == h)) & (~ce | (log_eyes.argmax(1) == e))
        if best is None:
            best, first_misread = images.copy(), ~right
        take = right | (score > best_score[rows])
        best[rows[take]], best_score[rows[take]], kept[rows[take]] = images[take], score[take], k
        done[rows[right]] = True
        if done.all():
            break
    return best, kept, first_misread, ~done


class RedrawMisread:
    """A generator whose faces a tagger reads as the tags asked for: each face it misreads is drawn again, up to
    `tries` draws in all, and a face still misread keeps the draw the tagger found closest to the tags.

    A colour the generator never saw in training (gray eyes for mlds models) is not checked. The i-th face of a
    request is row i of the noise of seed `redraw_seed(seed, k)` for the first draw k that was read right: the same
    seed always gives the same faces, and `seeds` says which seed drew each face."""

    def __init__(self, gen, read: Reader, tries: int = 8):
        if tries < 1:
            raise TagfaceError(f"--strict-tags {tries}: give at least 1 draw per face")
        self.gen, self.read, self.tries = gen, read, tries
        self.seeds: list[int] = []
        self.faces = self.misread = self.still_misread = 0  # over every request so far: drawn, redrawn, never read right
        self.unchecked: set[str] = set()  # colours asked for that the model never saw, so never checked

    def __getattr__(self, name: str):  # everything but generate is the wrapped generator's (noise, complete, ...)
        if name == "gen":
            raise AttributeError(name)
        return getattr(self.gen, name)

    def generate(self, tags: Tags, n: int, seed: int = 0, truncation: float | None = None) -> np.ndarray:
        """uint8 [n, 3, R, R] faces, whichever generator draws them."""
        hair, eyes = HAIR_COLOURS.index(tags.hair), EYE_COLOURS.index(tags.eyes)
        check_hair, check_eyes = self.gen.freq.hair[hair] > 0, self.gen.freq.eyes[eyes] > 0
        self.unchecked |= {c for c, checked in ((f"{tags.hair} hair", check_hair), (f"{tags.eyes} eyes", check_eyes))
                           if not checked}
        faces, kept, misread, still = redraw_until_read(
            lambda k, rows: self.gen.generate(tags, n, redraw_seed(seed, k), truncation, rows), self.read,
            np.full(n, hair), np.full(n, eyes), (np.full(n, check_hair), np.full(n, check_eyes)), self.tries)
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
