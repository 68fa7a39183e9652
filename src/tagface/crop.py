"""Anime face cropping, the reports' data preparation: find faces in pictures with nagadomi's
lbpcascade_animeface (an OpenCV LBP cascade, MIT) and write square crops that the tagger and trainer read.

    tagface crop PICTURES... --cascade lbpcascade_animeface.xml --out my-faces
    tagface tagger relabel --data my-faces --out my-faces/labelled.csv   # the tagger fills in the colours
    tagface train --config default-model --data my-faces/labelled.csv --out runs/mine

The cascade file is not shipped (tagface ships one model, its default generator): pass --cascade or set
TAGFACE_CASCADE. OpenCV is optional (`pip install 'tagface[crop]'`); OpenCV 5 has no CascadeClassifier.
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .checkpoint import atomic_write_text
from .data import IMAGE_EXTS
from .errors import TagfaceError
from .images import save_pil

CASCADE_ENV = "TAGFACE_CASCADE"


@dataclass(frozen=True)
class Box:
    """x, y: top-left corner; w, h: size; in pixels of the picture."""
    x: int
    y: int
    w: int
    h: int


def square_around(box: Box, width: int, height: int, scale: float = 1.0, shift: float = 0.0) -> Box:
    """The square of side scale * max(w, h) around the box's centre, raised by shift * h (hair is above the face),
    moved inside the picture; shrunk to the picture's shorter side when it is larger than that."""
    side = min(round(scale * max(box.w, box.h)), width, height)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2 - shift * box.h
    x = min(max(round(cx - side / 2), 0), width - side)
    y = min(max(round(cy - side / 2), 0), height - side)
    return Box(x, y, side, side)


class CascadeDetector:
    """lbpcascade_animeface through OpenCV, with the settings of its author's example (histogram-equalised gray,
    scale factor 1.1, 5 neighbours)."""

    def __init__(self, cascade: str | Path | None, min_size: int = 32, neighbours: int = 5, scale_factor: float = 1.1):
        cascade = cascade or os.environ.get(CASCADE_ENV)
        if not cascade:
            raise TagfaceError(f"give --cascade FILE (or set {CASCADE_ENV}): lbpcascade_animeface.xml from "
                               "https://github.com/nagadomi/lbpcascade_animeface")
        if not Path(cascade).is_file():
            raise TagfaceError(f"--cascade {cascade} " + ("is a folder; give the .xml file" if Path(cascade).is_dir()
                                                          else "does not exist"))
        try:
            import cv2
        except ImportError:
            raise TagfaceError("face cropping needs OpenCV: pip install 'opencv-python-headless<5' "
                               "(or tagface[crop])") from None
        if not hasattr(cv2, "CascadeClassifier"):
            raise TagfaceError(f"OpenCV {cv2.__version__} has no CascadeClassifier: install 'opencv-python-headless<5'")
        try:
            self.classifier = cv2.CascadeClassifier(str(cascade))
        except (cv2.error, SystemError):  # OpenCV raises on a file it cannot parse at all
            self.classifier = None
        if self.classifier is None or self.classifier.empty():
            raise TagfaceError(f"--cascade {cascade} is not an OpenCV cascade file")
        self.cv2 = cv2
        self.min_size, self.neighbours, self.scale_factor = min_size, neighbours, scale_factor

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        cv2 = self.cv2
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        found = self.classifier.detectMultiScale(gray, scaleFactor=self.scale_factor, minNeighbors=self.neighbours,
                                                 minSize=(self.min_size, self.min_size))
        return [Box(*(int(v) for v in f)) for f in found]


def find_pictures(inputs: list[str | Path], skip: Path | None = None) -> list[Path]:
    """Picture files among inputs (files, or folders searched recursively), sorted, none under `skip`."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        elif item.is_file():
            found.append(item)
        else:
            raise TagfaceError(f"{item} does not exist")
    if skip is not None:
        skip = skip.resolve()
        found = [p for p in found if not p.resolve().is_relative_to(skip)]
    return list(dict.fromkeys(found))


def _face_id(picture: Path, k: int, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", picture.stem) or "face"
    face_id, n = f"{stem}-{k}", 1
    while face_id in taken:  # the same file name in two folders
        face_id, n = f"{stem}_{n}-{k}", n + 1
    taken.add(face_id)
    return face_id


def crop_faces(pictures: list[Path], out: str | Path, detect: Callable[[np.ndarray], list[Box]], size: int = 96,
               scale: float = 1.0, shift: float = 0.0, overwrite: bool = False, progress: Callable | None = None) -> dict:
    """Write out/faces/<id>.png (size x size), out/tags.csv (id,hair,eyes with the colours blank, for the tagger
    to fill in) and out/crops.csv (where each face came from). Returns counts."""
    out = Path(out)
    if (out / "tags.csv").exists() and not overwrite:
        raise TagfaceError(f"{out / 'tags.csv'} exists (it may hold your labels); choose another --out or pass --overwrite")
    rows, taken = [], set()
    report = {"pictures": len(pictures), "unreadable": 0, "without_face": 0, "faces": 0, "shrunk": 0}
    for picture in (progress(pictures) if progress else pictures):
        try:
            with Image.open(picture) as im:
                rgb = ImageOps.exif_transpose(im).convert("RGB")
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
            report["unreadable"] += 1
            continue
        boxes = sorted(detect(np.asarray(rgb)), key=lambda b: (-b.w * b.h, b.y, b.x))
        report["without_face"] += not boxes
        for k, box in enumerate(boxes):
            sq = square_around(box, rgb.width, rgb.height, scale, shift)
            report["shrunk"] += sq.w < round(scale * max(box.w, box.h))
            face_id = _face_id(picture, k, taken)
            face = rgb.crop((sq.x, sq.y, sq.x + sq.w, sq.y + sq.h)).resize((size, size), Image.LANCZOS)
            save_pil(face, out / "faces" / f"{face_id}.png")
            rows.append((face_id, str(picture), box, sq))
    report["faces"] = len(rows)
    tags, crops = io.StringIO(), io.StringIO()
    csv.writer(tags, lineterminator="\n").writerows([("id", "hair", "eyes"), *((r[0], "", "") for r in rows)])
    writer = csv.writer(crops, lineterminator="\n")
    writer.writerow(["id", "source", "face_x", "face_y", "face_w", "face_h", "crop_x", "crop_y", "crop_side"])
    writer.writerows((i, src, b.x, b.y, b.w, b.h, s.x, s.y, s.w) for i, src, b, s in rows)
    atomic_write_text(out / "crops.csv", crops.getvalue())
    atomic_write_text(out / "tags.csv", tags.getvalue())
    return report
