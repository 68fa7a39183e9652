"""Tag vocabulary and parsing: free text such as 'Red eyes, blue hair' to (hair, eye) indices.

Conditioning is a pair of class indices; everything that turns words into that pair lives here, so
the CLI, the data readers and the studio agree on spelling, synonyms and error messages.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import TagfaceError, read_user_text

if TYPE_CHECKING:
    import torch

HAIR_COLOURS = ("orange", "white", "aqua", "gray", "green", "red", "purple", "pink", "blue", "black", "brown", "blonde")
EYE_COLOURS = ("gray", "black", "orange", "pink", "yellow", "aqua", "purple", "green", "brown", "red", "blue")
N_HAIR, N_EYES = len(HAIR_COLOURS), len(EYE_COLOURS)
N_TAGS = N_HAIR + N_EYES

# Common spellings and near-synonyms, mapped onto the vocabulary.
SYNONYMS = {
    "blond": "blonde", "golden": "blonde", "gold": "blonde",
    "grey": "gray", "silver": "gray",
    "cyan": "aqua", "teal": "aqua", "turquoise": "aqua",
    "violet": "purple", "lavender": "purple",
    "brunette": "brown", "ginger": "orange",
    "scarlet": "red", "crimson": "red",
    "navy": "blue",
    "amber": "yellow",
}
HAIR_WORDS = {"hair", "hairs", "haired"}
EYE_WORDS = {"eye", "eyes", "eyed"}
FILLER_WORDS = {"and", "with", "a", "an", "the", "girl", "boy", "character", "face"}


@dataclass(frozen=True)
class Tags:
    """A parsed request; None means 'not given' (the caller samples it)."""

    hair: str | None
    eyes: str | None

    def __str__(self) -> str:
        return f"{self.hair or '?'} hair {self.eyes or '?'} eyes"


def canonical(word: str) -> str:
    word = word.strip().lower()
    return SYNONYMS.get(word, word)


def _shown(text: str, limit: int = 60) -> str:
    """The user's text quoted in an error, cut short: an error message stays one readable line."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _check(word: str, kind: str) -> str:
    allowed = HAIR_COLOURS if kind == "hair" else EYE_COLOURS
    colour = canonical(word)
    if colour in allowed:
        return colour
    noun = "hair" if kind == "hair" else "eye"
    close = [c for c in difflib.get_close_matches(colour, allowed + tuple(SYNONYMS), n=3, cutoff=0.5)
             if canonical(c) in allowed]
    hint = f"; did you mean '{canonical(close[0])}'?" if close else ""
    raise TagfaceError(f"unknown {noun} colour {_shown(word.strip().lower())}{hint}; allowed {noun} colours: {' '.join(allowed)}")


def parse_tags(text: str, *, allow_missing: bool = True) -> Tags:
    """Read '<colour> hair' and '<colour> eyes' in any order, case and punctuation.

    Also accepts 'blue-haired', 'hair: blue' style and 'red-eyed'. Unknown words are an error so
    that a typo never silently becomes a random colour.
    """
    words = [w for w in re.split(r"[^a-z]+", text.lower()) if w]
    found: dict[str, list[str]] = {"hair": [], "eyes": []}
    pending: str | None = None  # a colour waiting for its 'hair'/'eyes' word
    i = 0
    while i < len(words):
        w = words[i]
        kind = "hair" if w in HAIR_WORDS else "eyes" if w in EYE_WORDS else None
        if kind:
            if pending is not None:
                found[kind].append(pending)
                pending = None
            elif i + 1 < len(words) and words[i + 1] not in HAIR_WORDS | EYE_WORDS | FILLER_WORDS:
                found[kind].append(words[i + 1])  # 'hair: blue'
                i += 1
            else:
                raise TagfaceError(f"{_shown(w)} in {_shown(text)} has no colour; write e.g. 'blue hair red eyes'")
        elif w in FILLER_WORDS:
            pass
        elif pending is not None:
            raise TagfaceError(f"cannot read {_shown(pending + ' ' + w)} in {_shown(text)}; write e.g. 'blue hair red eyes'")
        else:
            pending = w
        i += 1
    if pending is not None:
        raise TagfaceError(
            f"{_shown(pending)} in {_shown(text)} is not followed by 'hair' or 'eyes'; write e.g. 'blue hair red eyes'"
        )
    result = {}
    for kind, colours in found.items():
        colours = list(dict.fromkeys(_check(c, kind) for c in colours))
        if len(colours) > 1:
            raise TagfaceError(f"several {kind} colours in {_shown(text)}: {' '.join(colours)}; give one")
        result[kind] = colours[0] if colours else None
    if not allow_missing and (result["hair"] is None or result["eyes"] is None):
        raise TagfaceError(f"{_shown(text)} needs both a hair and an eye colour")
    if result["hair"] is None and result["eyes"] is None and not text.strip() == "":
        raise TagfaceError(f"no hair or eye colour found in {_shown(text)}; write e.g. 'blue hair red eyes'")
    return Tags(result["hair"], result["eyes"])


def hair_index(colour: str) -> int:
    return HAIR_COLOURS.index(_check(colour, "hair"))


def eye_index(colour: str) -> int:
    return EYE_COLOURS.index(_check(colour, "eyes"))


def colour_set(field: str, kind: str) -> set[str]:
    """Colours in a ';'-separated CSV field (blank means none); unknown names are an error."""
    return {_check(c, kind) for c in field.split(";") if c.strip()}


def one_hot(hair: torch.Tensor, eyes: torch.Tensor) -> torch.Tensor:
    """[B] hair and [B] eye indices to the [B, 23] float label vector that G and D read. Imports torch here, not
    at the top: parsing tags (and the torch-free `tagface generate`, numpy_generator) never needs it."""
    import torch
    out = torch.zeros(hair.shape[0], N_TAGS)
    out[torch.arange(hair.shape[0]), hair] = 1.0
    out[torch.arange(eyes.shape[0]), N_HAIR + eyes] = 1.0
    return out


@dataclass
class TagFrequencies:
    """How often each colour occurs in the training data; used to fill in a missing colour."""

    hair: list[float]
    eyes: list[float]

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "TagFrequencies":
        """From a generator file's metadata; uniform when it has none (a full training checkpoint)."""
        f = json.loads(meta.get("tagface.tag_frequencies", "null"))
        return cls(f["hair"], f["eyes"]) if f else cls.uniform()

    @classmethod
    def uniform(cls) -> "TagFrequencies":
        return cls([1 / N_HAIR] * N_HAIR, [1 / N_EYES] * N_EYES)

    @classmethod
    def from_labels(cls, hair, eyes) -> "TagFrequencies":
        """From [N] hair and [N] eye indices (CPU tensors or arrays)."""
        h = np.bincount(np.asarray(hair), minlength=N_HAIR).astype(np.float64)
        e = np.bincount(np.asarray(eyes), minlength=N_EYES).astype(np.float64)
        return cls((h / h.sum()).tolist(), (e / e.sum()).tolist())

    def toward_uniform(self, share: float) -> "TagFrequencies":
        """These frequencies mixed with the uniform ones: `share` 1 draws every hair x eye pair alike, 0 is self."""
        u = TagFrequencies.uniform()
        mix = lambda ours, even: [share * e + (1 - share) * o for o, e in zip(ours, even)]  # noqa: E731
        return TagFrequencies(mix(self.hair, u.hair), mix(self.eyes, u.eyes))

    def complete(self, tags: Tags, seed: int) -> tuple[Tags, list[str]]:
        """Fill missing colours by sampling the training frequencies with numpy's generator, seeded by `seed` (the
        seed that also draws the faces' noise, offset so the two draws are unrelated); returns notes saying so, and
        saying when a colour asked for never occurred in training (mlds has no gray eyes): the model has not
        learnt it."""
        notes, hair, eyes = [], tags.hair, tags.eyes
        rng = np.random.default_rng((seed + 7919) & 0xFFFFFFFFFFFFFFFF)
        if hair is None:
            hair = HAIR_COLOURS[_draw(rng, self.hair)]
            notes.append(f"no hair colour given: sampled '{hair}' from the training data's frequencies")
        elif self.hair[HAIR_COLOURS.index(hair)] == 0:
            notes.append(f"'{hair} hair' never occurs in this model's training data: expect another hair colour")
        if eyes is None:
            eyes = EYE_COLOURS[_draw(rng, self.eyes)]
            notes.append(f"no eye colour given: sampled '{eyes}' from the training data's frequencies")
        elif self.eyes[EYE_COLOURS.index(eyes)] == 0:
            notes.append(f"'{eyes} eyes' never occur in this model's training data: expect another eye colour")
        return Tags(hair, eyes), notes


def _draw(rng: np.random.Generator, weights: list[float]) -> int:
    p = np.asarray(weights, np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


_TAGS_LINE = re.compile(r"^\s*([^,]+?)\s*,(.*)$")


def read_tags_file(path: str | Path) -> list[tuple[str, Tags]]:
    """The course's testing_text.txt: lines '<id>,<tags>'."""
    p = Path(path)
    if not p.exists():
        raise TagfaceError(f"--tags-file {p} does not exist")
    entries = []
    for lineno, line in enumerate(read_user_text(p).splitlines(), 1):
        if not line.strip():
            continue
        m = _TAGS_LINE.match(line)
        if not m:
            raise TagfaceError(f"{p}:{lineno}: expected '<id>,<tags>', got {line!r}")
        try:
            entries.append((m.group(1), parse_tags(m.group(2))))
        except TagfaceError as err:
            raise TagfaceError(f"{p}:{lineno}: {err}") from None
    if not entries:
        raise TagfaceError(f"--tags-file {p} has no lines")
    return entries
