"""Reading faces with the tagger in numpy alone, so `tagface generate --strict-tags` and `tagface tagger predict`
need not import torch.

With torch's tagger that command took 2.4 s on the 2-core CPU, 2 of them importing torch, and with the shipped
model nothing else in it needs torch (numpy_generator). The tagger is eight 3 x 3 convolutions with BatchNorm's stored
statistics and ReLU, a mean over the pixels and a linear head: the logits here are tagger.TaggerNet's to within
float rounding (tests/test_numpy_tagger.py). Faces at another size than the tagger's would need TaggerNet's
antialiased resize, so `load_reader` hands those to torch.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from safetensors import safe_open

from .checkpoint import read_metadata, resolve_tagger
from .errors import TagfaceError
from .numpy_generator import frozen_batchnorm
from .tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR

CONVS = 8  # TaggerNet.body: four stages of (stride-2 conv, stride-1 conv), each conv followed by BatchNorm and ReLU


def conv_3x3(x: np.ndarray, weight: np.ndarray, stride: int) -> np.ndarray:
    """torch's Conv2d(kernel 3, padding 1, no bias) on channels-last images: [B, H, W, I] -> [B, H/s, W/s, O], weight
    [O, I, 3, 3] as torch stores it. Each output pixel's 3 x 3 window is a view, then one matrix product."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = sliding_window_view(padded, (3, 3), axis=(1, 2))[:, ::stride, ::stride]  # [B, H', W', I, 3, 3]
    b, h, w, i = windows.shape[:4]
    return (windows.reshape(b * h * w, i * 9) @ weight.reshape(len(weight), -1).T).reshape(b, h, w, -1)


class NumpyTagger:
    """The torch-free twin of tagger.TaggerNet for faces at its resolution: images -> [N, 23] logits."""

    def __init__(self, weights: dict[str, np.ndarray], resolution: int):
        self.w, self.resolution = weights, resolution

    @classmethod
    def load(cls, path: Path) -> "NumpyTagger":
        arch = json.loads(read_metadata(path)["tagface.tagger"])
        with safe_open(str(path), framework="numpy") as fh:
            weights = {k: fh.get_tensor(k).astype(np.float32) for k in fh.keys() if not k.endswith("num_batches_tracked")}
        return cls(weights, int(arch["resolution"]))

    def __call__(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 [N, 3, R, R] at the tagger's resolution -> [N, 23] logits, 12 hair then 11 eye colours."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"NumpyTagger reads uint8 [N, 3, {self.resolution}, {self.resolution}] faces, "
                             f"not {images.dtype} {list(images.shape)}")
        return np.concatenate([self._logits(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
                              or [np.zeros((0, len(self.w["head.bias"])), np.float32)])

    def _logits(self, images: np.ndarray) -> np.ndarray:
        h = images.transpose(0, 2, 3, 1).astype(np.float32) / np.float32(127.5) - np.float32(1)  # as data.to_float
        for i in range(CONVS):  # body.{3i} is a conv, body.{3i+1} its BatchNorm
            h = conv_3x3(h, self.w[f"body.{3 * i}.weight"], 2 if i % 2 == 0 else 1)
            h = np.maximum(frozen_batchnorm(h, self.w, f"body.{3 * i + 1}"), 0)
        return h.mean((1, 2)) @ self.w["head.weight"].T + self.w["head.bias"]


def load_reader(path: str | Path | None, resolution: int) -> Callable[[np.ndarray], np.ndarray]:
    """A tagger file (None: the shipped one) as a function from uint8 faces of side `resolution` to logits: numpy
    where the faces are at the tagger's own resolution, else torch's TaggerNet, which resizes them first."""
    p = resolve_tagger(path)
    try:
        reader = NumpyTagger.load(p)
    except (KeyError, ValueError) as err:
        raise TagfaceError(f"{p} is not a readable tagger ({err})") from None
    if reader.resolution == resolution:
        return reader
    import torch

    from .tagger import load_tagger, predict_logits
    net = load_tagger(p)
    return lambda images: predict_logits(net, torch.as_tensor(np.asarray(images))).numpy()


def top_colours(logits: np.ndarray, k: int = 3) -> list[dict]:
    """Per image: the k most likely hair and eye colours with probabilities (all of them, for k past their count)."""
    out = []
    for row in np.asarray(logits, np.float64):
        entry = {}
        for attr, names, part in (("hair", HAIR_COLOURS, row[:N_HAIR]), ("eyes", EYE_COLOURS, row[N_HAIR:])):
            p = np.exp(part - part.max())
            p /= p.sum()
            entry[attr] = [(names[i], float(p[i])) for i in np.argsort(-p, kind="stable")[:k]]
        out.append(entry)
    return out
