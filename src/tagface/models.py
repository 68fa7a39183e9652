"""Generators and discriminators, chosen by registry key from a recipe's `model` section.

Every generator maps (z [B, Z], labels [B, 23]) to images [B, 3, R, R] in [-1, 1]; every discriminator maps
(images, labels or None) to `DOut`: a real/fake score per image and, when it has classifier heads, 23 tag
logits (12 hair then 11 eye colours).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm

from .checkpoint import is_grown
from .config import ModelConfig
from .errors import TagfaceError
from .tags import N_TAGS
from .text import build_text_encoder

GENERATORS: dict[str, Callable[..., nn.Module]] = {}
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {}


def register(table: dict, name: str):
    def deco(cls):
        table[name] = cls
        return cls
    return deco


class DOut(NamedTuple):
    adv: torch.Tensor            # [B] real/fake score (logit or critic value)
    logits: torch.Tensor | None  # [B, 23] tag logits, or None without classifier heads


def _check_resolution(resolution: int, factor: int) -> None:
    if resolution % factor or resolution < factor * 2:
        raise TagfaceError(f"resolution {resolution} must be a multiple of {factor} (64, 96 and 128 are tested)")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind not in ("batch", "layer", "none"):
        raise TagfaceError(f"unknown model.d_norm '{kind}'; allowed: auto batch layer none")
    return {"batch": lambda: nn.BatchNorm2d(channels), "layer": lambda: nn.GroupNorm(1, channels),
            "none": nn.Identity}[kind]()


# --------------------------------------------------------------------------- generators
G_CONDITIONS = ("input", "batchnorm")


@register(GENERATORS, "dcgan")
class DCGANGenerator(nn.Module):
    """Radford et al.'s DCGAN generator with the tag embedding concatenated to z (Reed et al.).

    With `model.g_condition: batchnorm` the tags also set a gain and a bias after every BatchNorm (conditional
    BatchNorm, as in BigGAN): at the input alone a tag is 23 of 123 numbers, and z can outvote it (white, gray
    and black hair were drawn from one another's z). The gains start at zero, so a generator trained without
    them loads unchanged (`grown`) and learns to use them from there."""

    grown = ("cond.",)  # parameters that start neutral: weights saved without them still load

    def __init__(self, cfg: ModelConfig, resolution: int, *, out_channels: int = 3, embed: nn.Module | None = None):
        """out_channels and embed (any module with a `.dim`, e.g. colorize's darkness embedding) let other
        conditions and channel counts reuse this body; the defaults are the tag-conditioned RGB generator."""
        super().__init__()
        _check_resolution(resolution, 16)
        if cfg.g_condition not in G_CONDITIONS:
            raise TagfaceError(f"unknown model.g_condition '{cfg.g_condition}'; allowed: {' '.join(G_CONDITIONS)}")
        self.z_dim, self.base, c = cfg.z_dim, resolution // 16, cfg.g_channels
        self.embed = embed if embed is not None else build_text_encoder(cfg)
        self.fc = nn.Sequential(nn.Linear(cfg.z_dim + self.embed.dim, 8 * c * self.base ** 2, bias=False))
        self.fc_norm = nn.Sequential(nn.BatchNorm2d(8 * c), nn.ReLU(True))
        layers = []
        for cin, cout in ((8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c)):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(c, out_channels, 4, 2, 1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.cond = None
        if cfg.g_condition == "batchnorm":
            norms = [m for m in (*self.fc_norm, *self.body) if isinstance(m, nn.BatchNorm2d)]
            self.cond = nn.ModuleList(nn.Linear(self.embed.dim, 2 * m.num_features) for m in norms)
            for layer in self.cond:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        e = self.embed(labels)
        h = self.fc(torch.cat([z, e], 1)).view(z.shape[0], -1, self.base, self.base)
        if self.cond is None:
            return self.body(self.fc_norm(h))
        cond = iter(self.cond)
        for layer in (*self.fc_norm, *self.body):
            h = layer(h)
            if isinstance(layer, nn.BatchNorm2d):
                gain, bias = next(cond)(e)[:, :, None, None].chunk(2, 1)
                h = h * (1 + gain) + bias
        return h


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str = "batch", act: Callable[[], nn.Module] = lambda: nn.ReLU(True)):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=norm == "none"), _norm(norm, channels), act(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=norm == "none"), _norm(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register(GENERATORS, "srresnet")
class SRResNetGenerator(nn.Module):
    """make.girls.moe's generator: SRResNet trunk of residual blocks, then pixel-shuffle upsampling x8."""

    def __init__(self, cfg: ModelConfig, resolution: int):
        super().__init__()
        _check_resolution(resolution, 8)
        if cfg.g_condition != "input":
            raise TagfaceError(f"model.g_condition {cfg.g_condition}: the srresnet generator takes the tags at its "
                               f"input only; use g_condition=input or generator=dcgan")
        self.z_dim, self.base, c = cfg.z_dim, resolution // 8, cfg.g_channels
        self.embed = build_text_encoder(cfg)
        self.fc = nn.Linear(cfg.z_dim + self.embed.dim, c * self.base ** 2, bias=False)
        self.fc_norm = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(True))
        self.trunk = nn.Sequential(*[ResidualBlock(c) for _ in range(cfg.g_blocks)], nn.BatchNorm2d(c), nn.ReLU(True))
        ups = []
        for _ in range(3):
            ups += [nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2), nn.BatchNorm2d(c), nn.ReLU(True)]
        self.up = nn.Sequential(*ups)
        self.out = nn.Sequential(nn.Conv2d(c, 3, 9, 1, 4), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(labels)], 1)).view(z.shape[0], -1, self.base, self.base)
        h = self.fc_norm(h)
        return self.out(self.up(h + self.trunk(h)))


# --------------------------------------------------------------------------- discriminators
D_CONDITIONS = ("concat", "projection")


class DiscriminatorHead(nn.Module):
    """Shared top of every D: optional tag input, a real/fake score and optional classifier heads.

    A tag-reading D takes the tags by `model.d_condition`: `concat` joins the tag embedding to the last feature
    map (Reed et al.); `projection` adds the inner product of a tag embedding with the pooled features to the
    score (Miyato & Koyama 2018), so the tags enter as a match score rather than as more input channels."""

    def __init__(self, channels: int, spatial: int, condition: bool, heads: bool, cfg: ModelConfig):
        super().__init__()
        if cfg.d_condition not in D_CONDITIONS:
            raise TagfaceError(f"unknown model.d_condition '{cfg.d_condition}'; allowed: {' '.join(D_CONDITIONS)}")
        self.condition = cfg.d_condition if condition else None
        if condition:
            self.embed = build_text_encoder(cfg)
        if self.condition == "concat":
            self.joint = nn.Sequential(nn.Conv2d(channels + self.embed.dim, channels, 1), nn.LeakyReLU(0.2, True))
        elif self.condition == "projection":
            self.project = nn.Linear(self.embed.dim, channels, bias=False)
        self.adv = nn.Linear(channels * spatial ** 2, 1)
        self.cls = nn.Linear(channels * spatial ** 2, N_TAGS) if heads else None

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> DOut:
        if self.condition and labels is None:
            raise ValueError("this discriminator reads tags: pass labels")
        if self.condition == "concat":
            e = self.embed(labels)[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
            h = self.joint(torch.cat([h, e], 1))
        flat = h.flatten(1)
        score = self.adv(flat).squeeze(1)
        if self.condition == "projection":
            score = score + (self.project(self.embed(labels)) * h.sum((2, 3))).sum(1)
        logits = self.cls(flat).float() if self.cls is not None else None
        return DOut(score.float(), logits)  # float32 scores: losses in full precision


class Discriminator(nn.Module):
    """Features to 1/16 of the input size, then the shared head; spectral norm on every layer on request."""

    def __init__(self, features: nn.Module, channels: int, spatial: int, cfg: ModelConfig, condition: bool, heads: bool):
        super().__init__()
        self.features = features
        self.head = DiscriminatorHead(channels, spatial, condition, heads, cfg)
        if cfg.spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    spectral_norm(module)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> DOut:
        """labels may hold k tag sets for the same B images ([k*B, tags]): the image features, nearly all of D's
        cost, are computed once and scored against each set (the matching-aware loss needs three)."""
        h = self.features(x)
        if labels is not None and labels.shape[0] != h.shape[0]:
            k, rest = divmod(labels.shape[0], h.shape[0])
            if rest or not k:
                raise ValueError(f"{labels.shape[0]} tag rows for {h.shape[0]} images: need a multiple")
            h = h.repeat(k, 1, 1, 1)
        return self.head(h, labels)


@register(DISCRIMINATORS, "dcgan")
def dcgan_discriminator(cfg: ModelConfig, resolution: int, condition: bool, heads: bool, *, in_channels: int = 3):
    """DCGAN's strided-conv discriminator: four 4x4 stride-2 convolutions (in_channels: e.g. gray + condition)."""
    _check_resolution(resolution, 16)
    c = cfg.d_channels
    norm = cfg.d_norm if cfg.d_norm != "auto" else "none" if cfg.spectral_norm else "batch"
    layers = [nn.Conv2d(in_channels, c, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    for cin, cout in ((c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c)):
        layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=norm == "none"), _norm(norm, cout), nn.LeakyReLU(0.2, True)]
    return Discriminator(nn.Sequential(*layers), 8 * c, resolution // 16, cfg, condition, heads)


@register(DISCRIMINATORS, "resnet")
def resnet_discriminator(cfg: ModelConfig, resolution: int, condition: bool, heads: bool):
    """make.girls.moe's discriminator: stride-2 convolutions each followed by residual blocks, no batch norm."""
    _check_resolution(resolution, 16)
    c, layers, cin = cfg.d_channels, [], 3
    norm = "none" if cfg.d_norm == "auto" else cfg.d_norm
    lrelu = lambda: nn.LeakyReLU(0.2, True)  # noqa: E731
    for mult in (1, 2, 4, 8):
        layers += [nn.Conv2d(cin, c * mult, 4, 2, 1), lrelu()]
        layers += [ResidualBlock(c * mult, norm, lrelu) for _ in range(cfg.d_blocks)]
        layers += [lrelu()] if cfg.d_blocks else []
        cin = c * mult
    return Discriminator(nn.Sequential(*layers), cin, resolution // 16, cfg, condition, heads)


def build_generator(cfg: ModelConfig, resolution: int) -> nn.Module:
    if cfg.generator not in GENERATORS:
        raise TagfaceError(f"unknown generator '{cfg.generator}'; available: {', '.join(GENERATORS)}")
    return init_weights(GENERATORS[cfg.generator](cfg, resolution))


def build_discriminator(cfg: ModelConfig, resolution: int, condition: bool, heads: bool) -> nn.Module:
    if cfg.discriminator not in DISCRIMINATORS:
        raise TagfaceError(f"unknown discriminator '{cfg.discriminator}'; available: {', '.join(DISCRIMINATORS)}")
    return init_weights(DISCRIMINATORS[cfg.discriminator](cfg, resolution, condition, heads))


def init_weights(model: nn.Module) -> nn.Module:
    """DCGAN's N(0, 0.02) initialisation for convolutions; BatchNorm scales around 1. Layers under the model's
    `grown` prefixes keep the neutral start their module gave them."""
    for name, m in model.named_modules():
        if is_grown(model, name):
            continue
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

