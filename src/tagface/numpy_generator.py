"""Drawing with a DCGAN generator in numpy alone, so `tagface generate` need not import torch.

On the 2-core CPU `import torch` takes 1.1 to 1.5 s of the 1.7 s the command took; drawing 16 faces takes 30 ms.
The shipped default (a DCGAN generator reading the one-hot tags) is a linear layer, four transposed convolutions,
BatchNorm with frozen statistics and ReLU: a few matrix products. This module draws the faces the torch generator
draws for a seed (a rare pixel one level apart, where float rounding differs): `torch_normal` reproduces torch's
CPU normal sampler, and the forward pass is checked against models.DCGANGenerator in tests/test_numpy_generator.py. Other generators, full training
checkpoints and GPUs take the torch path (sampling.FaceGenerator); `load_generator` chooses.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from .checkpoint import read_metadata, resolve_checkpoint
from .config import Recipe
from .errors import TagfaceError
from .images import as_uint8
from .tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS, TagFrequencies, Tags

BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default
NORMS = ("fc_norm.0", "body.1", "body.4", "body.7")  # DCGANGenerator's BatchNorm layers, in order
CONVS = ("body.0", "body.3", "body.6", "body.9")  # and its transposed convolutions


def torch_normal(seed: int, rows: int, cols: int) -> np.ndarray:
    """torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) for rows * cols a multiple of 16,
    to within 2e-6: torch's Mersenne twister (seeded with the seed's low 32 bits), 24-bit uniforms, and
    Box-Muller over blocks of 16 (cosines in the first 8, sines in the last 8)."""
    n = rows * cols
    if n % 16:
        raise ValueError(f"torch_normal: rows * cols = {n} must be a multiple of 16")
    raw = np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 2 ** 32, size=n, dtype=np.uint64)
    u = ((raw & 0xFFFFFF).astype(np.float32) * np.float32(2.0 ** -24)).astype(np.float64).reshape(-1, 16)
    radius, theta = np.sqrt(-2 * np.log(1 - u[:, :8])), 2 * np.pi * u[:, 8:]
    return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], 1).astype(np.float32).reshape(rows, cols)


def conv_transpose_4x4_s2(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """torch's ConvTranspose2d(kernel 4, stride 2, padding 1) on channels-last images: [B, H, W, I] -> [B, 2H, 2W,
    O], weight [I, O, 4, 4] as torch stores it. Every input pixel spreads weight[i, :, ky, kx] onto output pixel
    (2y - 1 + ky, 2x - 1 + kx): one matrix product, then 16 strided adds onto a canvas one pixel wider on each
    side, cropped. Channels last keeps each add contiguous (twice as fast as channels first here)."""
    b, h, w, i = x.shape
    o = weight.shape[1]
    cols = (x.reshape(-1, i) @ weight.transpose(0, 2, 3, 1).reshape(i, -1)).reshape(b, h, w, 4, 4, o)
    canvas = np.zeros((b, 2 * h + 2, 2 * w + 2, o), np.float32)
    for ky in range(4):
        for kx in range(4):
            canvas[:, ky:ky + 2 * h:2, kx:kx + 2 * w:2] += cols[:, :, :, ky, kx]
    out = canvas[:, 1:-1, 1:-1]
    return out + bias if bias is not None else out


def frozen_batchnorm(h: np.ndarray, weights: dict[str, np.ndarray], name: str) -> np.ndarray:
    """torch's BatchNorm2d in eval mode (its stored statistics) on channels-last h; `name` is the layer's prefix."""
    scale = weights[f"{name}.weight"] / np.sqrt(weights[f"{name}.running_var"] + BN_EPS)
    return h * scale + (weights[f"{name}.bias"] - weights[f"{name}.running_mean"] * scale)


def check_shapes(weights: dict[str, np.ndarray], recipe: Recipe, path: Path) -> None:
    """The one-line error FaceGenerator.load gives when a file's weights do not fit its recipe's DCGANGenerator."""
    m, base = recipe.model, recipe.train.resolution // 16
    channels = (8 * m.g_channels, 4 * m.g_channels, 2 * m.g_channels, m.g_channels)
    want = {"fc.0.weight": (channels[0] * base * base, m.z_dim + N_TAGS), "body.9.bias": (3,)}
    for i, (norm, c) in enumerate(zip(NORMS, channels)):
        want.update({f"{norm}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")})
        if m.g_condition == "batchnorm" and f"cond.{i}.weight" in weights:  # absent: they start neutral (grown)
            want.update({f"cond.{i}.weight": (2 * c, N_TAGS), f"cond.{i}.bias": (2 * c,)})
    for conv, c_in, c_out in zip(CONVS, channels, channels[1:] + (3,)):
        want[f"{conv}.weight"] = (c_in, c_out, 4, 4)
    wrong = sorted({*want, *weights} - {k for k in want if k in weights and weights[k].shape == want[k]})
    if wrong:
        raise TagfaceError(f"{path}: weights do not fit the recipe's generator (missing, unexpected or misshapen: "
                           f"{', '.join(wrong[:3])})")


class NumpyGenerator:
    """The torch-free twin of sampling.FaceGenerator for DCGAN generator files: same noise, same faces."""

    def __init__(self, weights: dict[str, np.ndarray], recipe: Recipe, freq: TagFrequencies, step: int, source: Path):
        self.w, self.recipe, self.freq, self.step, self.source = weights, recipe, freq, step, source

    z_dim = property(lambda self: self.recipe.model.z_dim)
    resolution = property(lambda self: self.recipe.train.resolution)
    name = property(lambda self: self.recipe.name)

    @staticmethod
    def can_draw(meta: dict[str, str]) -> bool:
        """Whether a file's metadata describes a generator this class draws exactly like torch does."""
        if "tagface.recipe" not in meta or "tagface.state" in meta or meta.get("tagface.kind", "generator") != "generator":
            return False
        try:
            model = json.loads(meta["tagface.recipe"]).get("model", {})
        except (ValueError, AttributeError):  # torch's loader names what is wrong with it
            return False
        onehot = model.get("text_encoder", "auto") == "onehot" or (
            model.get("text_encoder", "auto") == "auto" and not model.get("embed_dim", 0))
        return model.get("generator") == "dcgan" and onehot

    @classmethod
    def load(cls, path: Path, meta: dict[str, str] | None = None) -> "NumpyGenerator":
        meta = read_metadata(path) if meta is None else meta
        recipe = Recipe.from_dict(json.loads(meta["tagface.recipe"]), str(path))
        with safe_open(str(path), framework="numpy") as fh:
            weights = {k: fh.get_tensor(k).astype(np.float32) for k in fh.keys() if not k.endswith("num_batches_tracked")}
        check_shapes(weights, recipe, path)
        freq = TagFrequencies.from_metadata(meta)
        return cls(weights, recipe, freq, int(meta.get("tagface.step", 0)), path)

    def noise(self, n: int, seed: int, truncation: float | None = None) -> np.ndarray:
        t = self.recipe.sample.truncation_or_default(truncation)
        return torch_normal(seed, -(-n // 16) * 16, self.z_dim)[:n] * np.float32(t)  # as FaceGenerator.noise

    def complete(self, tags: Tags, seed: int) -> tuple[Tags, list[str]]:
        return self.freq.complete(tags, seed)

    def _norm(self, h: np.ndarray, name: str, cond: np.ndarray | None) -> np.ndarray:
        """BatchNorm with its stored statistics on channels-last h, the tags' gain and bias if any, then ReLU."""
        h = frozen_batchnorm(h, self.w, name)
        if cond is not None:  # conditional BatchNorm (DCGANGenerator with g_condition batchnorm)
            gain, bias = np.split(cond[:, None, None, :], 2, axis=3)
            h = h * (1 + gain) + bias
        return np.maximum(h, 0)

    def forward(self, z: np.ndarray, onehot: np.ndarray) -> np.ndarray:
        """z [B, Z], one-hot tags [B, 23] -> images [B, 3, R, R] in [-1, 1], as DCGANGenerator.forward."""
        w, base = self.w, self.resolution // 16
        h = (np.concatenate([z, onehot], 1) @ w["fc.0.weight"].T).reshape(z.shape[0], -1, base, base)
        h = h.transpose(0, 2, 3, 1)
        conditioned = "cond.0.weight" in w
        for i, (norm, conv) in enumerate(zip(NORMS, CONVS)):
            cond = onehot @ w[f"cond.{i}.weight"].T + w[f"cond.{i}.bias"] if conditioned else None
            h = conv_transpose_4x4_s2(self._norm(h, norm, cond), w[f"{conv}.weight"], w.get(f"{conv}.bias"))
        return np.tanh(h).transpose(0, 3, 1, 2)

    def draw(self, z: np.ndarray, hair: np.ndarray, eyes: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """z [N, Z] and colour indices [N] -> uint8 images [N, 3, R, R]."""
        onehot = np.zeros((len(hair), N_TAGS), np.float32)
        onehot[np.arange(len(hair)), hair] = 1
        onehot[np.arange(len(eyes)), N_HAIR + np.asarray(eyes)] = 1
        return np.concatenate([as_uint8(self.forward(z[i:i + batch_size], onehot[i:i + batch_size]))
                               for i in range(0, len(z), batch_size)])  # uint8 per batch: a quarter of the memory

    def generate(self, tags: Tags, n: int, seed: int = 0, truncation: float | None = None, rows=None) -> np.ndarray:
        """As FaceGenerator.generate: n faces of one tag pair from a seed, or only the `rows` of them."""
        if tags.hair is None or tags.eyes is None:
            raise ValueError("complete the tags first")
        z = self.noise(n, seed, truncation)
        z = z if rows is None else z[np.asarray(rows, np.int64)]
        return self.draw(z, np.full(len(z), HAIR_COLOURS.index(tags.hair)), np.full(len(z), EYE_COLOURS.index(tags.eyes)))

    def tag_grid(self, seed: int = 0, truncation: float | None = None) -> np.ndarray:
        """As FaceGenerator.tag_grid: rows are hair colours, columns eye colours, one noise vector per row."""
        nh, ne = len(HAIR_COLOURS), len(EYE_COLOURS)
        z = np.repeat(self.noise(nh, seed, truncation), ne, 0)
        return self.draw(z, np.repeat(np.arange(nh), ne), np.tile(np.arange(ne), nh))


def load_generator(path: str | Path | None = None, device: str = "cpu"):
    """The generator to draw with: a NumpyGenerator where it draws the checkpoint (a DCGAN generator file, on the
    CPU), else torch's sampling.FaceGenerator (imported only then)."""
    p = resolve_checkpoint(path)
    meta = read_metadata(p)
    if device == "cpu" and NumpyGenerator.can_draw(meta):
        return NumpyGenerator.load(p, meta)
    from .sampling import FaceGenerator
    return FaceGenerator.load(p, device=device)
