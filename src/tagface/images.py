"""Faces out, without torch: uint8 conversion, grids, image files written atomically, the course's sample files.

Every function takes numpy arrays or CPU/GPU torch tensors alike, so the torch generator (sampling) and the numpy
one (numpy_generator) share them, and `tagface generate` never has to import torch to write its picture.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .checkpoint import atomic_write
from .errors import TagfaceError
from .tags import Tags


def as_uint8(images) -> np.ndarray:
    """uint8 images as they are, float images in [-1, 1] mapped to 0..255 (as data.to_uint8): a numpy array."""
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu()
        images = (images.float() if images.is_floating_point() else images).numpy()
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.round((images.astype(np.float32) + 1) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images, ncol: int, pad: int = 2) -> Image.Image:
    """uint8 [N, 3, H, W] (or float in [-1, 1]) -> one Pillow image with `ncol` columns (no more than N: extra
    columns would only be blank canvas)."""
    arr = as_uint8(images).transpose(0, 2, 3, 1)
    n, h, w, _ = arr.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = arr[i]
    return Image.fromarray(canvas)


def save_pil(image: Image.Image, path: str | Path, **kwargs) -> None:
    path = Path(path)
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}.get(path.suffix.lower().lstrip("."))
    if fmt is None:
        raise TagfaceError(f"output {path}: unsupported image type; use .png, .jpg or .webp")
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **kwargs))


def write_course_samples(gen, entries: list[tuple[str, Tags]], out_dir: str | Path, n: int,
                         seed: int = 0, truncation: float | None = None, say=None) -> list[Path]:
    """samples/sample_<id>_<k>.jpg for k = 1..n, as the course's grading scripts expect; `gen` is a
    sampling.FaceGenerator or a numpy_generator.NumpyGenerator. `say(line)` hears what gen.complete notes for a
    line (a colour sampled because the line gave none, a colour the model never saw)."""
    out_dir, written = Path(out_dir), []
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, (ident, tags) in enumerate(entries):
        tags, notes = gen.complete(tags, seed + i)
        for note in notes if say else ():
            say(f"id {ident}: {note}")
        images = as_uint8(gen.generate(tags, n, seed=seed + i, truncation=truncation))
        for k in range(n):
            path = out_dir / f"sample_{ident}_{k + 1}.jpg"
            save_pil(Image.fromarray(images[k].transpose(1, 2, 0)), path, quality=95)
            written.append(path)
    return written
