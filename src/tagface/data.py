"""Tagged face folders: reading both layouts, cleaning, a decoded uint8 cache and batch augmentation.

Layouts (a folder holding tags.csv and an image folder):
  * course / MLDS: no header, lines ``<id>,<hair> hair <eye> eyes``, images in images/ (or faces/);
  * adl: header ``id,hair,eyes``, colours ``;``-separated, blank where unknown; an optional ``file`` column
    names each image (relative to the csv or absolute), as `tagface tagger relabel` writes.
Images are decoded and resized once into a cached uint8 tensor, so training epochs do no JPEG work.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from .checkpoint import atomic_save_tensors
from .errors import TagfaceError, read_user_text
from .tags import EYE_COLOURS, HAIR_COLOURS, colour_set

IMAGE_DIRS = ("images", "faces", ".")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CACHE_VERSION = 2


@dataclass
class Record:
    """One row of a tags file: an image path and the colour sets it is tagged with."""

    path: Path
    hair: set[str]
    eyes: set[str]
    id: str = ""


@dataclass
class CleaningReport:
    rows: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def __str__(self) -> str:
        why = ", ".join(f"{n} {r}" for r, n in sorted(self.dropped.items())) or "none"
        return f"kept {self.kept} of {self.rows} rows (dropped: {why})"


def _tags_file(folder: Path) -> Path:
    if folder.is_file():
        return folder
    if not folder.exists():
        raise TagfaceError(f"data folder {folder} does not exist")
    tags = folder / "tags.csv"
    if not tags.exists():
        raise TagfaceError(f"{folder} has no tags.csv; expected lines '<id>,<hair> hair <eye> eyes' or 'id,hair,eyes'")
    return tags


def _image_index(root: Path) -> dict[str, Path]:
    """Map image stem -> path over the usual image folders beside tags.csv."""
    index: dict[str, Path] = {}
    for sub in IMAGE_DIRS:
        d = root / sub
        if d.is_dir():
            for entry in os.scandir(d):
                stem, ext = os.path.splitext(entry.name)
                if ext.lower() in IMAGE_EXTS:
                    index.setdefault(stem, Path(entry.path))
    return index


def _stem(raw_id: str) -> str:
    raw_id = raw_id.strip()
    return raw_id[:-2] if raw_id.endswith(".0") else raw_id  # '12.0' written by pandas


_PHRASE = re.compile(r"([a-z]+)\s+(hair|eyes?)\b")


def read_records(folder: str | Path) -> list[Record]:
    """Every row of a folder's tags file, in file order, with its colour sets (maybe empty or several)."""
    tags_path = _tags_file(Path(folder))
    root = tags_path.parent
    images = _image_index(root)
    records: list[Record] = []
    rows = list(csv.reader(io.StringIO(read_user_text(tags_path))))
    if not rows:
        raise TagfaceError(f"{tags_path} is empty")
    header, cols = [c.strip().lower() for c in rows[0]], {}
    if ("hair" in header) != ("eyes" in header):
        raise TagfaceError(f"{tags_path}: header {rows[0]} needs both a 'hair' and an 'eyes' column (id,hair,eyes)")
    if "hair" in header and "eyes" in header:  # adl layout
        cols = {name: header.index(name) for name in ("id", "hair", "eyes", "file") if name in header}
        if "id" not in cols:
            raise TagfaceError(f"{tags_path}: header {rows[0]} has no 'id' column")
        body, parse = rows[1:], lambda r: (colour_set(r[cols["hair"]], "hair"), colour_set(r[cols["eyes"]], "eyes"))
        get_id = lambda r: r[cols["id"]]  # noqa: E731
    else:  # course layout: id,<free text with 'X hair' and 'Y eyes'>
        def parse(r):
            hair, eyes = set(), set()
            for colour, kind in _PHRASE.findall(",".join(r[1:]).lower()):
                (hair if kind == "hair" else eyes).update(colour_set(colour, "hair" if kind == "hair" else "eyes"))
            return hair, eyes

        body, get_id = rows, lambda r: r[0]
    for lineno, row in enumerate(body, start=2 if body is not rows else 1):
        if not row or not "".join(row).strip():
            continue
        if not cols and len(row) == 1 and _PHRASE.search(row[0].lower()):  # tags, but no comma after the id
            raise TagfaceError(f"{tags_path}:{lineno}: no comma after the id in {row[0]!r}; expected "
                               "'<id>,<hair> hair <eye> eyes' (or a header id,hair,eyes)")
        try:
            hair, eyes = parse(row)
            stem = _stem(get_id(row))
        except (IndexError, TagfaceError) as err:
            raise TagfaceError(f"{tags_path}:{lineno}: cannot parse {','.join(row)!r}: {err}") from None
        if "file" in cols and len(row) > cols["file"] and row[cols["file"]].strip():  # e.g. a relabelled csv
            path = root / row[cols["file"]].strip()  # an absolute path stays absolute
        else:
            path = images.get(stem, root / "images" / f"{stem}.jpg")
        records.append(Record(path, hair, eyes, stem))
    if not records:
        raise TagfaceError(f"{tags_path} has no rows")
    return records


def clean(records: list[Record]) -> tuple[list[Record], CleaningReport]:
    """Keep rows with exactly one hair and one eye colour, as the reports did for generator training."""
    report, kept = CleaningReport(rows=len(records)), []
    for r in records:
        if not r.hair:
            report.drop("no hair colour")
        elif len(r.hair) > 1:
            report.drop("several hair colours")
        elif not r.eyes:
            report.drop("no eye colour")
        elif len(r.eyes) > 1:
            report.drop("several eye colours (bicoloured)")
        elif not r.path.exists():
            report.drop("missing image file")
        else:
            kept.append(r)
    report.kept = len(kept)
    return kept, report


def file_digest(data: bytes) -> int:
    """A 63-bit content hash: byte-identical files share it, so splits can keep copies together."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def decode(path: Path, resolution: int) -> np.ndarray | None:
    """Image file -> [3, R, R] uint8 (centre-cropped to a square), or None when unreadable."""
    try:
        return read_face(path, resolution)
    except TagfaceError:
        return None


def read_face(path: str | Path, resolution: int) -> np.ndarray:
    """As decode, for one image a user named: a missing, folder or unreadable one is a one-line error that says why."""
    path = Path(path)
    if not path.exists():
        raise TagfaceError(f"image {path} does not exist")
    if path.is_dir():
        raise TagfaceError(f"image {path} is a folder")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            if w != h:
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            if s != resolution:
                im = im.resize((resolution, resolution), Image.Resampling.BICUBIC)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # the bomb: over Pillow's limit
        raise TagfaceError(f"image {path} cannot be read as an image ({err})") from None


def decode_many(paths: list[Path], resolution: int, workers: int | None = None) -> list[tuple[np.ndarray | None, int]]:
    """(image or None, content digest) per path, decoded in worker processes when there are many."""
    jobs = [(p, resolution) for p in paths]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1 and len(jobs) > 256:
        with Pool(workers) as pool:
            return pool.map(_decode_job, jobs, chunksize=256)
    return [_decode_job(j) for j in jobs]


def _decode_job(args) -> tuple[np.ndarray | None, int]:
    path, resolution = args
    try:
        digest = file_digest(Path(path).read_bytes())
    except OSError:
        return None, 0
    return decode(path, resolution), digest


@dataclass
class FaceSet:
    """Decoded faces: images [N, 3, R, R] uint8, hair [N] and eyes [N] int64 colour indices, and each
    source file's content digest [N] int64 (for splits that keep byte-identical copies together)."""

    images: torch.Tensor
    hair: torch.Tensor
    eyes: torch.Tensor
    digest: torch.Tensor | None = None

    def __post_init__(self):
        if self.digest is None:
            self.digest = torch.arange(self.images.shape[0], dtype=torch.long)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @staticmethod
    def concat(sets: list["FaceSet"]) -> "FaceSet":
        return FaceSet(*(torch.cat([getattr(s, k) for s in sets]) for k in ("images", "hair", "eyes", "digest")))

    def subset(self, index: torch.Tensor) -> "FaceSet":
        return FaceSet(self.images[index], self.hair[index], self.eyes[index], self.digest[index])


def default_cache_dir() -> Path:
    return Path(os.environ.get("TAGFACE_CACHE", Path.home() / ".cache" / "tagface")) / "data"


def _cache_key(tags_path: Path, records: list[Record], resolution: int) -> str:
    st = tags_path.stat()
    h = hashlib.sha1(json.dumps([CACHE_VERSION, str(tags_path.resolve()), st.st_size, st.st_mtime_ns, resolution]).encode())
    for r in records:  # an image replaced in place changes its size or mtime, and so the key
        st = r.path.stat()
        h.update(f"{r.path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def load_folder(folder: str | Path, resolution: int, cache_dir: str | Path | None = None,
                workers: int | None = None, verbose: bool = True) -> FaceSet:
    """Clean, decode and cache one data folder at one resolution; later calls read the cache."""
    records, report = clean(read_records(folder))
    tags_path = _tags_file(Path(folder))
    if not records:
        raise TagfaceError(f"{folder}: no usable images ({report})")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache / f"{_cache_key(tags_path, records, resolution)}.safetensors"
    if cache_file.exists():
        try:
            t = load_file(cache_file)
            return FaceSet(t["images"], t["hair"], t["eyes"], t["digest"])
        except Exception as err:  # a cache half-written by an old version or damaged on disk: decode again
            warnings.warn(f"data cache {cache_file} is unreadable ({err}); decoding the images again")
    if verbose:
        print(f"tagface: {folder}: {report}; decoding to {resolution}px (cached at {cache_file})", flush=True)
    results = decode_many([r.path for r in records], resolution, workers)
    arrays = [a for a, _ in results]
    ok = [i for i, a in enumerate(arrays) if a is not None]
    if len(ok) < len(arrays):
        bad = next(i for i, a in enumerate(arrays) if a is None)
        warnings.warn(f"{folder}: skipped {len(arrays) - len(ok)} unreadable image(s), e.g. {records[bad].path}")
    if not ok:
        raise TagfaceError(f"{folder}: none of {len(arrays)} images could be read")
    faces = FaceSet(
        torch.from_numpy(np.stack([arrays[i] for i in ok])),
        torch.tensor([HAIR_COLOURS.index(next(iter(records[i].hair))) for i in ok]),
        torch.tensor([EYE_COLOURS.index(next(iter(records[i].eyes))) for i in ok]),
        torch.tensor([results[i][1] for i in ok], dtype=torch.long),
    )
    try:
        atomic_save_tensors({"images": faces.images, "hair": faces.hair, "eyes": faces.eyes, "digest": faces.digest},
                            cache_file,
                            {"source": str(folder), "skipped": str(len(arrays) - len(ok))})
    except OSError as err:  # a read-only home must not stop training
        warnings.warn(f"could not write data cache {cache_file}: {err}")
    return faces


def load_datasets(folders: list[str | Path], resolution: int, cache_dir: str | Path | None = None,
                  verbose: bool = True) -> FaceSet:
    """Several data folders combined into one training set."""
    if not folders:
        raise TagfaceError("no --data folder given")
    return FaceSet.concat([load_folder(f, resolution, cache_dir, verbose=verbose) for f in folders])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range G's tanh produces."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def augment(x: torch.Tensor, generator: torch.Generator, flip: bool = True, rotate_deg: float = 5.0) -> torch.Tensor:
    """Random horizontal flips and small rotations (the reports' +-5 degrees) on a float batch."""
    b = x.shape[0]
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)  # drawn on the CPU: same faces on any device
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    if rotate_deg > 0:
        angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(rotate_deg)
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return x
