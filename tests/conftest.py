"""Shared fixtures: tiny tagged-face folders written with Pillow, and an isolated data cache."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

# One clearly distinct solid colour per hair class, so a decoded image tells which row it came from.
HAIR_RGB = {
    "orange": (250, 140, 20), "white": (245, 245, 245), "aqua": (20, 220, 220), "gray": (128, 128, 128),
    "green": (20, 200, 40), "red": (220, 20, 30), "purple": (130, 30, 200), "pink": (250, 150, 200),
    "blue": (30, 40, 220), "black": (10, 10, 10), "brown": (120, 70, 20), "blonde": (250, 230, 120),
}
NO_HAIR_RGB = (60, 100, 60)


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """The test machine is shared; keep torch to one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def cache_root(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own TAGFACE_CACHE, so nothing ever touches ~/.cache."""
    root = tmp_path_factory.mktemp("tagface-cache")
    monkeypatch.setenv("TAGFACE_CACHE", str(root))
    return root


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


@pytest.fixture
def make_dataset(tmp_path):
    """Factory: make_dataset(rows, layout='course'|'adl', name=..., size=24, unreadable=ID, missing=IDS).

    rows are (id, hair, eyes) where hair/eyes are a colour, a list of colours or None. Returns a namespace
    with `path` (the folder), `rows`, `rgb` ({id: the solid colour written}) and `image_dir`.
    course layout: tags.csv without header, '<id>,<hair> hair <eye> eyes', images in images/<id>.jpg.
    adl layout: tags.csv with header 'id,hair,eyes', ';'-separated colours or blank, images in faces/<id>.jpg.
    """

    def make(rows, layout: str = "course", name: str = "data", size: int = 24, unreadable=None,
             missing=(), seed: int = 0):
        assert layout in ("course", "adl")
        folder = tmp_path / name
        image_dir = folder / ("images" if layout == "course" else "faces")
        image_dir.mkdir(parents=True)
        lines = [] if layout == "course" else ["id,hair,eyes"]
        rgb = {}
        rng = np.random.default_rng(seed)
        for ident, hair, eyes in rows:
            hair, eyes = _as_list(hair), _as_list(eyes)
            if layout == "course":
                text = " ".join([f"{h} hair" for h in hair] + [f"{e} eyes" for e in eyes])
                lines.append(f"{ident},{text}")
            else:
                lines.append(f"{ident},{';'.join(hair)},{';'.join(eyes)}")
            stem = str(ident)[:-2] if str(ident).endswith(".0") else str(ident)
            if stem in map(str, missing):
                continue
            target = image_dir / f"{stem}.jpg"
            if unreadable is not None and stem == str(unreadable):
                target.write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
                continue
            colour = HAIR_RGB.get(hair[0], NO_HAIR_RGB) if hair else NO_HAIR_RGB
            rgb[stem] = colour
            arr = np.empty((size, size, 3), np.uint8)
            arr[:] = colour
            Image.fromarray(arr).save(target, format="JPEG", quality=95)
        (folder / "tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return SimpleNamespace(path=folder, rows=rows, rgb=rgb, image_dir=image_dir)

    return make
