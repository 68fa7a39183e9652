"""Report 000's two-stage pipeline: a grayscale face generator conditioned on hair darkness, then a
colorizer that paints a grayscale face for hair/eye tags.

Why two stages: shape and shading are learnt from every face whatever its colours, while colour becomes a
supervised task (each training face's true colours are known), so the tags can be followed without one GAN
learning both at once. Hair darkness links the stages: black hair must already be dark in gray, so stage 1
is told how dark the hair is; for a tag-only request that value is sampled from the darkness measured on
the training faces of the requested hair colour (stored in the pipeline file).

Training alternates: every step makes one stage-1 D and G update and one colorizer update (plus its D's
update with the gan loss), all from the same real batch.

Run directory layout (`tagface pipeline train --out RUN_DIR`):
  config.json              the PipelineConfig
  run.json                 data folders and image count
  checkpoint.safetensors   full training state (weights, optimizers, step, RNG states), for --resume
  pipeline.safetensors     EMA gray generator + EMA colorizer, metadata: all `generate --pipeline` reads
  samples/step-NNNNNN.png  rows of gray faces, each followed by the row of their colorized versions
  metrics.jsonl
"""
from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import __version__
from .checkpoint import (atomic_save_tensors, atomic_write_text, load_resume_state, load_state, load_tensors,
                         read_metadata, run_file, save_state)
from .config import (DECAY, NON_NEGATIVE, ONE_OR_MORE, POSITIVE, SEED, ModelConfig, Rule, apply_overrides,
                     build_dataclass, check_numbers, multiple_of, read_json_mapping, within)
from .data import FaceSet, augment, load_datasets, read_face, to_float, to_uint8
from .cli import resolve_device
from .errors import TagfaceError
from .images import image_grid, save_pil, write_course_samples
from .losses import ADVERSARIAL, Labels
from .models import DCGANGenerator, dcgan_discriminator, init_weights
from .sampling import save_image_grid
from .tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS, TagFrequencies, Tags, parse_tags, read_tags_file
from .training import BatchSampler, fit_loop, update_ema

CHECKPOINT = "checkpoint.safetensors"
PIPELINE = "pipeline.safetensors"
KIND_CHECKPOINT = "pipeline-checkpoint"
KIND_PIPELINE = "pipeline"
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, what Pillow's convert("L") uses


# --------------------------------------------------------------------------- config
@dataclass
class GrayConfig:
    z_dim: int = 100
    g_channels: int = 64        # DCGAN generator width (1 output channel)
    d_channels: int = 64        # DCGAN discriminator width (reads gray + a darkness plane)
    embed_dim: int = 16         # darkness -> this many features, concatenated to z


@dataclass
class ColorizerConfig:
    loss: str = "mse"           # COLORIZER_LOSSES key: mse | l1 | gan
    channels: int = 32          # U-Net width at full resolution (doubles per level, at most 8x)
    depth: int = 3              # U-Net down/up levels
    d_channels: int = 32        # gan: width of the conditional D
    adv_weight: float = 0.01    # gan: weight of the adversarial term next to the MSE (0.1 failed: docs/ablations.md)


# every number of a PipelineConfig, by its --set key (config.check_numbers)
PIPELINE_NUMBERS: dict[str, Rule] = {
    "resolution": multiple_of(16, 32, 512, " (64 is the default)"),
    "batch_size": ONE_OR_MORE, "steps": ONE_OR_MORE, "lr": POSITIVE, "betas": DECAY,
    "ema": within(0, 1, "[)", "; 0 turns it off"), "rotate": within(0, 180, note=" degrees; 0 turns it off"),
    "seed": SEED, "log_every": ONE_OR_MORE, "sample_every": ONE_OR_MORE, "checkpoint_every": ONE_OR_MORE,
    "gray.z_dim": ONE_OR_MORE, "gray.g_channels": ONE_OR_MORE, "gray.d_channels": ONE_OR_MORE,
    "gray.embed_dim": ONE_OR_MORE, "colorizer.channels": ONE_OR_MORE, "colorizer.depth": ONE_OR_MORE,
    "colorizer.d_channels": ONE_OR_MORE, "colorizer.adv_weight": NON_NEGATIVE,
}


@dataclass
class PipelineConfig:
    resolution: int = 64
    batch_size: int = 64
    steps: int = 3000
    lr: float = 2e-4            # every network, Adam
    betas: tuple[float, float] = (0.5, 0.999)
    ema: float = 0.999          # EMA decay of the gray generator and the colorizer (0: off)
    flip: bool = True
    rotate: float = 5.0
    seed: int = 0
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 250
    gray: GrayConfig = field(default_factory=GrayConfig)
    colorizer: ColorizerConfig = field(default_factory=ColorizerConfig)

    def __post_init__(self):
        check_numbers(self, PIPELINE_NUMBERS)
        if self.colorizer.loss not in COLORIZER_LOSSES:
            raise TagfaceError(f"unknown colorizer loss '{self.colorizer.loss}'; allowed: {' '.join(COLORIZER_LOSSES)}")
        r = self.resolution
        if r >> self.colorizer.depth < 2:
            raise TagfaceError(f"colorizer.depth {self.colorizer.depth} is too deep for {r}px "
                               f"(at most {int(math.log2(r)) - 1})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(d["betas"])
        return d

    @classmethod
    def from_dict(cls, data: dict, source: str = "pipeline config") -> "PipelineConfig":
        return build_dataclass(cls, data, source)


# --------------------------------------------------------------------------- hair darkness
def hair_box(resolution: int) -> tuple[slice, slice]:
    """Rows 8:24 and columns 16:-16 of a 64 px face, scaled: where the reports' faces have their fringe."""
    s = resolution / 64
    return slice(round(8 * s), round(24 * s)), slice(round(16 * s), resolution - round(16 * s))


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, R, R] -> [B, 1, R, R] luminance, in the input's own range (linear, so [-1, 1] stays [-1, 1])."""
    w = torch.tensor(LUMA, dtype=images.dtype if images.is_floating_point() else torch.float32, device=images.device)
    return (images.to(w.dtype) * w[:, None, None]).sum(1, keepdim=True)


def hair_darkness(images: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """uint8 faces [B, 3, R, R] -> [B] darkness in [0, 1]: 1 - median luminance of the hair box / 255."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise TagfaceError(f"hair_darkness needs square RGB faces [B, 3, R, R], got {list(images.shape)}")
    rows, cols = hair_box(images.shape[-1])
    out = []
    for i in range(0, images.shape[0], chunk):  # chunks: a whole data set in float would not fit in memory
        box = to_gray(images[i:i + chunk, :, rows, cols].float())
        out.append(1 - box.flatten(1).median(dim=1).values / 255)
    return torch.cat(out).clamp(0, 1) if out else torch.zeros(0)


@dataclass
class DarknessStats:
    """Mean and spread of hair darkness per hair colour on the training set; colours the data lacks get
    the statistics of all faces (their count is 0)."""

    mean: list[float]
    std: list[float]
    count: list[int]

    @classmethod
    def measure(cls, darkness: torch.Tensor, hair: torch.Tensor) -> "DarknessStats":
        darkness = darkness.double()
        all_mean = darkness.mean().item() if darkness.numel() else 0.5
        all_std = darkness.std(unbiased=False).item() if darkness.numel() else 0.0
        mean, std, count = [], [], []
        for h in range(N_HAIR):
            d = darkness[hair == h]
            count.append(int(d.numel()))
            mean.append(d.mean().item() if d.numel() else all_mean)
            std.append(d.std(unbiased=False).item() if d.numel() else all_std)
        return cls(mean, std, count)

    def sample(self, hair: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """darkness ~ N(mean, std) of each face's hair colour, clipped to [0, 1]."""
        rows = -(-hair.shape[0] // 16) * 16  # whole blocks of 16, as FaceGenerator.noise: face i keeps its value
        eps = torch.randn(rows, generator=generator)[:hair.shape[0]]
        return (torch.tensor(self.mean)[hair] + torch.tensor(self.std)[hair] * eps).clamp(0, 1)

    def to_json(self) -> str:
        return json.dumps({"hair": list(HAIR_COLOURS), "mean": self.mean, "std": self.std, "count": self.count})

    @classmethod
    def from_json(cls, text: str) -> "DarknessStats":
        d = json.loads(text)
        return cls(d["mean"], d["std"], d["count"])


# --------------------------------------------------------------------------- networks
class DarknessEmbedding(nn.Module):
    """darkness [B] or [B, 1] in [0, 1] -> [B, dim] features, so one scalar is not lost among z's values."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.proj = nn.Sequential(nn.Linear(1, dim), nn.LeakyReLU(0.2))

    def forward(self, darkness: torch.Tensor) -> torch.Tensor:
        return self.proj(darkness.reshape(-1, 1) * 2 - 1)


def build_gray_generator(cfg: PipelineConfig) -> DCGANGenerator:
    """Stage 1: models.py's DCGAN generator with 1 output channel and the darkness embedding for the tags'."""
    g = cfg.gray
    G = init_weights(DCGANGenerator(ModelConfig(z_dim=g.z_dim, g_channels=g.g_channels), cfg.resolution,
                                    out_channels=1, embed=DarknessEmbedding(g.embed_dim)))
    G.embed.proj[0].reset_parameters()  # PyTorch's default scale: N(0, 0.02) would all but hide the condition
    return G


class GrayDiscriminator(nn.Module):
    """Stage 1's D: the DCGAN discriminator reading the gray face and its darkness as a constant second
    input plane (concatenation), so its first convolution can compare the hair's pixels with the value."""

    def __init__(self, cfg: PipelineConfig):
        super().__init__()
        self.net = dcgan_discriminator(ModelConfig(d_channels=cfg.gray.d_channels), cfg.resolution,
                                       condition=False, heads=False, in_channels=2)

    def forward(self, gray: torch.Tensor, darkness: torch.Tensor) -> torch.Tensor:
        plane = (darkness.reshape(-1, 1, 1, 1).to(gray.dtype) * 2 - 1).expand_as(gray)
        return self.net(torch.cat([gray, plane], 1)).adv


def _broadcast(tags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return tags[:, :, None, None].to(like.dtype).expand(-1, -1, like.shape[2], like.shape[3])


class Colorizer(nn.Module):
    """Stage 2: a small U-Net, gray [B, 1, R, R] + tags one-hot [B, 23] -> RGB [B, 3, R, R] in [-1, 1].

    The tags enter as 23 constant input planes and again at the bottleneck: skip connections carry the
    gray detail to the output, the bottleneck decides the colours from the whole face and the tags.
    """

    def __init__(self, channels: int = 32, depth: int = 3):
        super().__init__()
        w = [channels * 2 ** min(i, 3) for i in range(depth + 1)]
        self.inc = nn.Sequential(nn.Conv2d(1 + N_TAGS, w[0], 3, 1, 1), nn.LeakyReLU(0.2, True))
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(w[i], w[i + 1], 4, 2, 1, bias=False), nn.BatchNorm2d(w[i + 1]),
                          nn.LeakyReLU(0.2, True)) for i in range(depth))
        self.bottleneck = nn.Sequential(nn.Conv2d(w[depth] + N_TAGS, w[depth], 3, 1, 1, bias=False),
                                        nn.BatchNorm2d(w[depth]), nn.ReLU(True))
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(w[i + 1] if i == depth - 1 else 2 * w[i + 1], w[i], 4, 2, 1, bias=False),
                          nn.BatchNorm2d(w[i]), nn.ReLU(True)) for i in reversed(range(depth)))
        self.out = nn.Sequential(nn.Conv2d(2 * w[0], 3, 3, 1, 1), nn.Tanh())

    def forward(self, gray: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        x = self.inc(torch.cat([gray, _broadcast(tags, gray)], 1))
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()
        x = self.bottleneck(torch.cat([x, _broadcast(tags, x)], 1))
        for up in self.up:
            x = torch.cat([up(x), skips.pop()], 1)
        return self.out(x)


def build_colorizer(cfg: PipelineConfig) -> Colorizer:
    return init_weights(Colorizer(cfg.colorizer.channels, cfg.colorizer.depth))


class ColorizerDiscriminator(nn.Module):
    """The GAN colorizer's D (report 000): the DCGAN discriminator on (gray, colour image) with the one-hot
    tags joined at its last feature map (DiscriminatorHead's conditioning)."""

    def __init__(self, cfg: PipelineConfig):
        super().__init__()
        self.net = dcgan_discriminator(ModelConfig(d_channels=cfg.colorizer.d_channels, embed_dim=0), cfg.resolution,
                                       condition=True, heads=False, in_channels=4)

    def forward(self, gray: torch.Tensor, rgb: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([gray, rgb], 1), tags).adv


# --------------------------------------------------------------------------- colorizer losses
@dataclass(frozen=True)
class ColorizerLoss:
    """pixel: the supervised loss against the real colours under the true tags; adversarial: a conditional D
    also judges the face coloured for other tags, where no ground truth exists (report 000's GAN colorizer)."""

    pixel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    adversarial: bool = False


COLORIZER_LOSSES: dict[str, ColorizerLoss] = {
    "mse": ColorizerLoss(F.mse_loss),
    "l1": ColorizerLoss(F.l1_loss),
    "gan": ColorizerLoss(F.mse_loss, adversarial=True),
}
ADV = ADVERSARIAL["nonsaturating"]


def colorizer_terms(loss: ColorizerLoss, C: nn.Module, D: nn.Module | None, gray: torch.Tensor, real: torch.Tensor,
                    tags: torch.Tensor, other_tags: torch.Tensor, adv_weight: float) -> dict[str, torch.Tensor]:
    """The colorizer's loss terms: the pixel loss on the true tags, plus (gan) D's verdict on other tags."""
    terms = {"pixel": loss.pixel(C(gray, tags), real)}
    if loss.adversarial:
        terms["adv"] = adv_weight * ADV.gen(D(gray, C(gray, other_tags), other_tags))
    return terms


def colorizer_d_loss(C: nn.Module, D: nn.Module, gray: torch.Tensor, real: torch.Tensor, tags: torch.Tensor,
                     other_tags: torch.Tensor) -> torch.Tensor:
    """Real (gray, colours, true tags) triples against (gray, C(gray, other tags), other tags)."""
    with torch.no_grad():
        fake = C(gray, other_tags)
    return ADV.real(D(gray, real, tags)) + ADV.fake(D(gray, fake, other_tags))


def _pick_loss(name: str) -> ColorizerLoss:
    if name not in COLORIZER_LOSSES:
        raise TagfaceError(f"unknown colorizer loss '{name}'; allowed: {' '.join(COLORIZER_LOSSES)}")
    return COLORIZER_LOSSES[name]


# --------------------------------------------------------------------------- training
class PipelineTrainer:
    """Trains both stages in alternation; saves and resumes exactly, like training.Trainer."""

    def __init__(self, cfg: PipelineConfig, data: FaceSet, out: str | Path, device: str = "cpu",
                 data_paths: list[str] | None = None, progress: bool = True):
        if data.resolution != cfg.resolution:
            raise TagfaceError(f"data is {data.resolution}px but the pipeline trains at {cfg.resolution}px")
        self.cfg, self.data, self.out, self.device = cfg, data, Path(out), torch.device(device)
        self.data_paths, self.progress = [str(p) for p in (data_paths or [])], progress
        torch.manual_seed(cfg.seed)
        self.data_rng = torch.Generator().manual_seed(cfg.seed)
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.darkness = hair_darkness(data.images)
        self.stats = DarknessStats.measure(self.darkness, data.hair)
        self.freq = TagFrequencies.from_labels(data.hair, data.eyes)
        self.loss = _pick_loss(cfg.colorizer.loss)
        self.G = build_gray_generator(cfg).to(self.device)
        self.D = init_weights(GrayDiscriminator(cfg)).to(self.device)
        self.C = build_colorizer(cfg).to(self.device)
        self.Dc = init_weights(ColorizerDiscriminator(cfg)).to(self.device) if self.loss.adversarial else None
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.C_ema = copy.deepcopy(self.C).eval().requires_grad_(False)
        adam = lambda m: torch.optim.Adam(m.parameters(), lr=cfg.lr, betas=cfg.betas)  # noqa: E731
        self.opt_g, self.opt_d, self.opt_c = adam(self.G), adam(self.D), adam(self.C)
        self.opt_dc = adam(self.Dc) if self.Dc is not None else None
        if len(data) < cfg.batch_size:  # BatchSampler's advice names the GAN recipe's key, not this config's
            raise TagfaceError(f"the data has {len(data)} usable images, fewer than the batch size {cfg.batch_size}; "
                               f"lower it with --set batch_size=N")
        self.sampler = BatchSampler(len(data), cfg.batch_size, self.data_rng)
        self.step = 0
        fixed = torch.Generator().manual_seed(1234)
        self.fixed_labels = Labels(torch.arange(N_HAIR).repeat_interleave(4),
                                   (torch.arange(N_HAIR) * 5 % len(EYE_COLOURS)).repeat_interleave(4))
        self.fixed_z = torch.randn(4 * N_HAIR, cfg.gray.z_dim, generator=fixed)
        self.fixed_darkness = torch.tensor(self.stats.mean)[self.fixed_labels.hair]

    def train_step(self) -> dict[str, float]:
        cfg, dev, logs = self.cfg, self.device, {}
        idx = self.sampler.next()
        rgb = augment(to_float(self.data.images[idx]), self.rng, cfg.flip, cfg.rotate).to(dev)
        gray = to_gray(rgb)
        dark = self.darkness[idx].to(dev)
        b = rgb.shape[0]
        # stage 1: conditions for the fakes are the darkness values of the batch, shuffled
        fake_dark = dark[torch.randperm(b, generator=self.rng).to(dev)]
        with torch.no_grad():
            fake = self.G(self._noise(b), fake_dark)
        d_loss = ADV.real(self.D(gray, dark)) + ADV.fake(self.D(fake, fake_dark))
        self._update(self.opt_d, d_loss)
        g_loss = ADV.gen(self.D(self.G(self._noise(b), fake_dark), fake_dark))
        self._update(self.opt_g, g_loss)
        logs.update(gray_d=d_loss.item(), gray_g=g_loss.item())
        # stage 2: colour the real gray faces; the gan loss also colours them for another face's tags
        tags = Labels(self.data.hair[idx], self.data.eyes[idx]).onehot.to(dev)
        other = tags[torch.randperm(b, generator=self.rng).to(dev)]
        if self.Dc is not None:
            dc_loss = colorizer_d_loss(self.C, self.Dc, gray, rgb, tags, other)
            self._update(self.opt_dc, dc_loss)
            logs["color_d"] = dc_loss.item()
        terms = colorizer_terms(self.loss, self.C, self.Dc, gray, rgb, tags, other, cfg.colorizer.adv_weight)
        self._update(self.opt_c, sum(terms.values()))
        logs.update({f"color_{k}": v.item() for k, v in terms.items()})
        for ema, model in ((self.G_ema, self.G), (self.C_ema, self.C)):
            if cfg.ema:  # the decay ramps up, as in Trainer: early weights change too fast to average long
                update_ema(ema, model, min(cfg.ema, (1 + self.step) / (10 + self.step)))
            else:
                ema.load_state_dict(model.state_dict())
        self.step += 1
        return logs

    def _noise(self, b: int) -> torch.Tensor:
        return torch.randn(b, self.cfg.gray.z_dim, generator=self.rng).to(self.device)

    @staticmethod
    def _update(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"step": self.step, "G": self.G.state_dict(), "D": self.D.state_dict(),
                "G_ema": self.G_ema.state_dict(), "C": self.C.state_dict(), "C_ema": self.C_ema.state_dict(),
                "Dc": self.Dc.state_dict() if self.Dc is not None else None,
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "opt_c": self.opt_c.state_dict(),
                "opt_dc": self.opt_dc.state_dict() if self.opt_dc is not None else None,
                "sampler": self.sampler.state_dict(), "data_rng": self.data_rng.get_state(),
                "rng": self.rng.get_state(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        if (state["Dc"] is None) != (self.Dc is None):
            raise TagfaceError(f"the checkpoint's colorizer {'has no' if state['Dc'] is None else 'has a'} "
                               f"discriminator, but colorizer.loss is now '{self.cfg.colorizer.loss}'")
        names = ["G", "D", "G_ema", "C", "C_ema", "opt_g", "opt_d", "opt_c", "sampler"]
        names += ["Dc", "opt_dc"] if self.Dc is not None else []
        try:
            for name in names:
                getattr(self, name).load_state_dict(state[name])
        except (RuntimeError, ValueError, KeyError) as err:
            raise TagfaceError(f"the checkpoint does not fit this config ({str(err).splitlines()[0]})") from None
        self.step = state["step"]
        self.data_rng.set_state(state["data_rng"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    def _meta(self, kind: str) -> dict[str, str]:
        return {"tagface.version": __version__, "tagface.kind": kind, "tagface.step": str(self.step),
                "tagface.pipeline_config": json.dumps(self.cfg.to_dict()),
                "tagface.colorizer_loss": self.cfg.colorizer.loss, "tagface.resolution": str(self.cfg.resolution),
                "tagface.darkness": self.stats.to_json(),
                "tagface.tag_frequencies": json.dumps({"hair": self.freq.hair, "eyes": self.freq.eyes})}

    def save(self) -> None:
        save_state(self.state_dict(), self.out / CHECKPOINT, self._meta(KIND_CHECKPOINT))
        tensors = {f"gray.{k}": v for k, v in self.G_ema.state_dict().items()}
        tensors.update({f"colorizer.{k}": v for k, v in self.C_ema.state_dict().items()})
        atomic_save_tensors(tensors, self.out / PIPELINE, self._meta(KIND_PIPELINE))

    def resume(self) -> None:
        self.load_state_dict(load_resume_state(self.out / CHECKPOINT, KIND_CHECKPOINT, "pipeline"))

    # ------------------------------------------------------------------ the loop
    def fit(self, steps: int) -> dict[str, float]:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        atomic_write_text(self.out / "run.json", json.dumps(
            {"data": self.data_paths, "images": len(self.data), "device": str(self.device)}, indent=2))
        return fit_loop(self, steps, self.out, images_per_step=cfg.batch_size, log_every=cfg.log_every,
                        sample_every=cfg.sample_every, checkpoint_every=cfg.checkpoint_every, progress=self.progress)

    @torch.no_grad()
    def sample(self, path: Path) -> None:
        gray = self.G_ema(self.fixed_z.to(self.device), self.fixed_darkness.to(self.device))
        colour = self.C_ema(gray, self.fixed_labels.onehot.to(self.device))
        save_image_grid(paired_rows(gray, colour, 8).cpu(), path, ncol=8)


def paired_rows(gray: torch.Tensor, colour: torch.Tensor, ncol: int) -> torch.Tensor:
    """Interleave rows: `ncol` gray faces, then the same faces colorized, and so on."""
    gray3 = gray.expand(-1, 3, -1, -1)
    out = []
    for i in range(0, gray.shape[0], ncol):
        g, c = gray3[i:i + ncol], colour[i:i + ncol]
        pad = ncol - g.shape[0]
        if pad:  # keep a short last row aligned with its colour row
            g = torch.cat([g, torch.ones(pad, *g.shape[1:], dtype=g.dtype, device=g.device)])
        out += [g, c]
    return torch.cat(out)


# --------------------------------------------------------------------------- inference
@dataclass
class ColorizePipeline:
    """Both inference networks (EMA weights, eval mode) plus what sampling needs from the training data."""

    G: nn.Module
    C: nn.Module
    cfg: PipelineConfig
    stats: DarknessStats
    freq: TagFrequencies
    step: int
    source: Path

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "ColorizePipeline":
        p = run_file(path, (PIPELINE, CHECKPOINT), "; train one with `tagface pipeline train`")
        meta = read_metadata(p)
        kind = meta.get("tagface.kind")
        if kind not in (KIND_PIPELINE, KIND_CHECKPOINT):
            raise TagfaceError(f"{p} is not a gray-colorize pipeline file (kind {kind or 'none'}); "
                               f"train one with `tagface pipeline train`")
        cfg = PipelineConfig.from_dict(json.loads(meta["tagface.pipeline_config"]), str(p))
        if kind == KIND_CHECKPOINT:
            state = load_state(p)[0]
            g_state, c_state = state["G_ema"], state["C_ema"]
        else:
            tensors = load_tensors(p)
            g_state = {k[5:]: v for k, v in tensors.items() if k.startswith("gray.")}
            c_state = {k[10:]: v for k, v in tensors.items() if k.startswith("colorizer.")}
        G, C = build_gray_generator(cfg), build_colorizer(cfg)
        try:
            G.load_state_dict(g_state)
            C.load_state_dict(c_state)
        except RuntimeError as err:
            raise TagfaceError(f"{p}: weights do not fit its config ({str(err).splitlines()[0]})") from None
        f = json.loads(meta["tagface.tag_frequencies"])
        return cls(G.to(device).eval().requires_grad_(False), C.to(device).eval().requires_grad_(False), cfg,
                   DarknessStats.from_json(meta["tagface.darkness"]), TagFrequencies(f["hair"], f["eyes"]),
                   int(meta.get("tagface.step", 0)), p)

    @property
    def _device(self) -> torch.device:
        return next(self.G.parameters()).device

    def noise(self, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        t = 1.0 if truncation is None else truncation
        if not 0 < t <= 2:
            raise TagfaceError(f"--truncation {t}: allowed range is (0, 2]; 1 is the training distribution")
        rows = -(-n // 16) * 16  # whole blocks of 16 (see FaceGenerator.noise): face i is the same for any n
        return torch.randn(rows, self.cfg.gray.z_dim, generator=torch.Generator().manual_seed(seed))[:n] * t

    def complete(self, tags: Tags, seed: int) -> tuple[Tags, list[str]]:
        return self.freq.complete(tags, seed)

    @torch.no_grad()
    def draw(self, z: torch.Tensor, darkness: torch.Tensor, labels: Labels,
             batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """z [N, Z], darkness [N], labels -> (gray [N, 1, R, R], colour [N, 3, R, R]) uint8."""
        grays, colours = [], []
        for i in range(0, z.shape[0], batch_size):
            gray = self.G(z[i:i + batch_size].to(self._device), darkness[i:i + batch_size].to(self._device))
            colours.append(self.C(gray, labels.onehot[i:i + batch_size].to(self._device)))
            grays.append(gray)
        return to_uint8(torch.cat(grays)).cpu(), to_uint8(torch.cat(colours)).cpu()

    def generate(self, tags: Tags, n: int, seed: int = 0, truncation: float | None = None) -> torch.Tensor:
        """n coloured faces (uint8 [n, 3, R, R]) for complete tags; darkness is sampled per face from the
        stored statistics of the hair colour (its own seed stream, so z of face i matches plain generate's)."""
        if tags.hair is None or tags.eyes is None:
            raise ValueError("complete the tags first")
        labels = Labels(torch.full((n,), HAIR_COLOURS.index(tags.hair)), torch.full((n,), EYE_COLOURS.index(tags.eyes)))
        darkness = self.stats.sample(labels.hair, torch.Generator().manual_seed(seed + 104729))
        return self.draw(self.noise(n, seed, truncation), darkness, labels)[1]

    @torch.no_grad()
    def colorize(self, images: torch.Tensor, tags: Tags | Labels) -> torch.Tensor:
        """Any uint8 faces [N, 3 or 1, R, R] at the pipeline's resolution -> uint8 colour [N, 3, R, R]; one Tags for
        every face, or Labels with one per face."""
        x = to_float(images)
        gray = to_gray(x) if x.shape[1] == 3 else x
        labels = tags if isinstance(tags, Labels) else Labels(torch.full((x.shape[0],), HAIR_COLOURS.index(tags.hair)),
                                                              torch.full((x.shape[0],), EYE_COLOURS.index(tags.eyes)))
        return to_uint8(self.C(gray.to(self._device), labels.onehot.to(self._device))).cpu()


@dataclass
class PipelineFaces:
    """The pipeline seen as a tags -> faces generator (FaceGenerator's noise/draw surface), so `tagface evaluate`
    judges it like any generator: each face's darkness is drawn from its hair colour's statistics with a fixed
    seed, so the same z and labels give the same faces."""

    pipe: ColorizePipeline
    darkness_seed: int = 104729

    default_truncation = 1.0

    @property
    def name(self) -> str:
        return f"gray-colorize ({self.pipe.cfg.colorizer.loss} colorizer)"

    @property
    def step(self) -> int:
        return self.pipe.step

    @property
    def source(self) -> Path:
        return self.pipe.source

    def noise(self, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        return self.pipe.noise(n, seed, truncation)

    def draw(self, z: torch.Tensor, labels: Labels) -> torch.Tensor:
        darkness = self.pipe.stats.sample(labels.hair, torch.Generator().manual_seed(self.darkness_seed))
        return self.pipe.draw(z, darkness, labels)[1]


def pipeline_tag_grid(pipe: ColorizePipeline, seed: int = 0, truncation: float | None = None) -> torch.Tensor:
    """12 x 11 grid, rows hair colours, columns eye colours; one gray face (noise, darkness) per row."""
    nh, ne = N_HAIR, len(EYE_COLOURS)
    hair = torch.arange(nh)
    darkness = pipe.stats.sample(hair, torch.Generator().manual_seed(seed + 104729))
    labels = Labels(hair.repeat_interleave(ne), torch.arange(ne).repeat(nh))
    z = pipe.noise(nh, seed, truncation).repeat_interleave(ne, 0)
    return pipe.draw(z, darkness.repeat_interleave(ne), labels)[1]


# --------------------------------------------------------------------------- commands
def _say(msg: str) -> None:
    print(f"tagface: {msg}", file=sys.stderr)


def cmd_pipeline_train(args) -> int:
    out = Path(args.out)
    if args.resume:
        if not (out / "config.json").exists():
            raise TagfaceError(f"--resume: {out} has no config.json from an earlier `tagface pipeline train`")
        data = apply_overrides(read_json_mapping(out / "config.json", "restore it, or train afresh in another --out"),
                               args.set)
        cfg = PipelineConfig.from_dict(data, str(out / "config.json"))
        for flag, have, want in (("--colorizer-loss", cfg.colorizer.loss, args.colorizer_loss),
                                 ("--resolution", cfg.resolution, args.resolution)):
            if want is not None and want != have:
                raise TagfaceError(f"{flag} {want}: the run in {out} was trained with {have}; resume it with that")
        data_paths = args.data or read_json_mapping(out / "run.json", "pass --data DIR").get("data")
        if not (isinstance(data_paths, list) and data_paths and all(isinstance(p, str) for p in data_paths)):
            raise TagfaceError(f"{out / 'run.json'} names no data folders; pass --data DIR")
    else:
        if (out / CHECKPOINT).exists():
            raise TagfaceError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")
        if (out / PIPELINE).exists():  # a finished run whose large checkpoint was deleted
            raise TagfaceError(f"{out} already holds {PIPELINE} from an earlier run; choose another --out")
        if not args.data:
            raise TagfaceError("--data is required: a folder with tags.csv and images (repeat for several)")
        data = apply_overrides(PipelineConfig().to_dict(), args.set)
        if args.resolution is not None:
            data["resolution"] = args.resolution
        if args.colorizer_loss is not None:
            data["colorizer"]["loss"] = args.colorizer_loss
        cfg, data_paths = PipelineConfig.from_dict(data, "--set"), args.data
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    faces = load_datasets(data_paths, cfg.resolution, args.cache_dir)
    trainer = PipelineTrainer(cfg, faces, out, device=device, data_paths=data_paths, progress=not args.no_progress)
    if args.resume:
        trainer.resume()
    steps = args.steps or cfg.steps
    _say(f"training the gray-colorize pipeline (colorizer loss {cfg.colorizer.loss}) on {len(faces)} faces at "
         f"{cfg.resolution}px, step {trainer.step} -> {steps}, device {device}, out {out}")
    logs = trainer.fit(steps)
    _say(f"done at step {trainer.step}: {logs.get('img_per_s', 0):.1f} img/s; pipeline at {out / PIPELINE}")
    return 0


def cmd_generate_pipeline(args) -> int:
    """`tagface generate --pipeline gray-colorize`: the generate command's options, drawn by this pipeline."""
    given = [bool(args.tags), bool(args.tags_file), args.tag_grid]
    if sum(given) != 1:
        raise TagfaceError("give exactly one of: TAGS (e.g. \"blue hair red eyes\"), --tags-file FILE, --tag-grid")
    request = parse_tags(args.tags) if args.tags else None
    entries = read_tags_file(args.tags_file) if args.tags_file else None
    if not args.checkpoint:
        raise TagfaceError("--pipeline gray-colorize needs a pipeline run: pass --checkpoint RUN_DIR from "
                           "`tagface pipeline train` or its pipeline.safetensors (no pipeline model is shipped)")
    pipe = ColorizePipeline.load(args.checkpoint, device=resolve_device(args.device))
    if entries:
        written = write_course_samples(pipe, entries, args.out, args.n, args.seed, args.truncation, say=_say)
        _say(f"wrote {len(written)} images to {args.out}")
        return 0
    if args.tag_grid:
        save_pil(image_grid(pipeline_tag_grid(pipe, args.seed, args.truncation), ncol=len(EYE_COLOURS)), args.out)
        _say(f"wrote the 12 x 11 hair x eye grid to {args.out}")
        return 0
    tags, notes = pipe.complete(request, args.seed)
    for note in notes:
        _say(note)
    images = pipe.generate(tags, args.n, seed=args.seed, truncation=args.truncation)
    save_pil(image_grid(images, ncol=args.ncol or min(args.n, 8)), args.out)
    _say(f"wrote {args.n} faces ({tags}, seed {args.seed}, gray-colorize pipeline) to {args.out}")
    return 0


def cmd_pipeline_colorize(args) -> int:
    from PIL import Image

    request = parse_tags(args.tags)
    stems = [Path(p).stem for p in args.images]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise TagfaceError(f"several images share the name {dupes[0]!r}; their outputs would overwrite each other")
    pipe = ColorizePipeline.load(args.checkpoint, device=resolve_device(args.device))
    faces = torch.stack([torch.from_numpy(read_face(p, pipe.resolution)) for p in args.images])
    tags, notes = pipe.complete(request, args.seed)
    for note in notes:
        _say(note)
    out = Path(args.out)
    colour = pipe.colorize(faces, tags)
    for stem, img in zip(stems, colour):
        save_pil(Image.fromarray(img.permute(1, 2, 0).numpy()), out / f"{stem}.png")
    _say(f"coloured {len(stems)} image(s) for {tags} into {out}")
    return 0
