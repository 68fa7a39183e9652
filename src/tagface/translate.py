"""Unpaired image-to-image translation between two image folders: CycleGAN (Zhu et al. 2017).

Two generators (A->B and B->A, the paper's ResNet generator) and two PatchGAN discriminators (one per
domain) are trained with the least-squares GAN loss, the L1 cycle loss (A->B->A == A, B->A->B == B) and
the identity loss (A->B leaves a B image alone), each D seeing a history pool of its generator's fakes.
Nothing needs tags: `--a` and `--b` are any folders of images, searched recursively.

Run directory layout (`tagface translate train --out RUN_DIR`):
  config.json               the TranslateConfig of the run
  run.json                  the two folders and their image counts
  checkpoint.safetensors    full training state (weights, optimizers, step, RNG states, pools), for --resume
  translator.safetensors    both generators + config in metadata: all `tagface translate run` reads
  samples/step-NNNNNN.png   rows A, A->B, A->B->A, B, B->A, B->A->B
  metrics.jsonl, losses.png
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import (DECAY, NON_NEGATIVE, ONE_OR_MORE, POSITIVE, SEED, Rule, build_dataclass, check_numbers,
                     multiple_of, read_json_mapping)
from .errors import TagfaceError

CHECKPOINT = "checkpoint.safetensors"
TRANSLATOR = "translator.safetensors"
KIND_CHECKPOINT = "translate-checkpoint"
KIND_TRANSLATOR = "translator"
CACHE_VERSION = 1
DIRECTIONS = ("a2b", "b2a")
MIN_PER_SET = 8  # evaluate: fewer images per set give no usable feature covariance


@dataclass
class TranslateConfig:
    """Hyperparameters; the defaults are the paper's except the network widths, sized for a CPU at 64 px."""

    resolution: int = 64
    g_channels: int = 32        # the paper: 64
    g_blocks: int = 6           # the paper: 6 at 128 px, 9 at 256 px
    d_channels: int = 64        # PatchGAN C64-C128-C256-1
    d_layers: int = 3           # feature layers before the 1-channel output; all but the last have stride 2
    cycle_weight: float = 10.0  # lambda of the L1 cycle loss
    identity: float = 0.5       # identity-loss weight as a fraction of cycle_weight; 0 turns it off
    pool_size: int = 50         # history of fakes per direction that D sees; 0: only the newest
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 4
    seed: int = 0
    flip: bool = True
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 250

    def __post_init__(self):
        check_numbers(self, TRANSLATE_NUMBERS, _flag)
        patch_size(self)  # a discriminator too deep for the resolution is an error now, not at the first step

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "translate config") -> "TranslateConfig":
        return build_dataclass(cls, d, source)


# every number of a TranslateConfig (config.check_numbers); the errors name the `translate train` flags
TRANSLATE_NUMBERS: dict[str, Rule] = {
    "resolution": multiple_of(4, 16, 512, " (the generator halves it twice)"),
    "g_channels": ONE_OR_MORE, "g_blocks": ONE_OR_MORE, "d_channels": ONE_OR_MORE, "d_layers": ONE_OR_MORE,
    "cycle_weight": NON_NEGATIVE, "identity": NON_NEGATIVE, "pool_size": NON_NEGATIVE, "lr": POSITIVE,
    "beta1": DECAY, "beta2": DECAY, "batch_size": ONE_OR_MORE, "seed": SEED,
    "log_every": ONE_OR_MORE, "sample_every": ONE_OR_MORE, "checkpoint_every": ONE_OR_MORE,
}


def _flag(field: str) -> str:
    """A TranslateConfig field as the user sets it: its `translate train` flag, or the bare name if it has none."""
    return f"--{field.replace('_', '-')}" if field in _CONFIG_FLAGS else field


def patch_size(cfg: TranslateConfig) -> int:
    """Side of D's output map (one real/fake score per overlapping patch)."""
    s = cfg.resolution
    for i in range(cfg.d_layers):
        s = s // 2 if i < cfg.d_layers - 1 else s - 1
        if s < 2 and i > 0:  # instance norm needs more than one pixel
            raise TagfaceError(f"d_layers {cfg.d_layers} is too deep for {cfg.resolution}px images")
    if s - 1 < 1:
        raise TagfaceError(f"d_layers {cfg.d_layers} is too deep for {cfg.resolution}px images")
    return s - 1


# --------------------------------------------------------------------------- networks
class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 convolutions with instance norm, added to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-k, d2k, d4k, N x R4k, u2k, uk, c7s1-3, tanh (k = g_channels): [B, 3, R, R] -> [B, 3, R, R]."""

    def __init__(self, channels: int = 32, blocks: int = 6):
        super().__init__()
        c = channels
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, c, 7), nn.InstanceNorm2d(c), nn.ReLU(True)]
        for m in (1, 2):
            layers += [nn.Conv2d(c * m, c * m * 2, 3, 2, 1), nn.InstanceNorm2d(c * m * 2), nn.ReLU(True)]
        layers += [ResnetBlock(4 * c) for _ in range(blocks)]
        for m in (4, 2):
            layers += [nn.ConvTranspose2d(c * m, c * m // 2, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(c * m // 2),
                       nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: C64(stride 2, no norm)-C128(stride 2)-C256(stride 1)-1, 4x4 kernels, instance norm,
    LeakyReLU 0.2; [B, 3, R, R] -> [B, 1, P, P] scores, one per overlapping patch."""

    def __init__(self, channels: int = 64, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = []
        cin = 3
        for i in range(layers):
            cout = channels * min(2 ** i, 8)
            stride = 2 if i < layers - 1 else 1
            mods.append(nn.Conv2d(cin, cout, 4, stride, 1))
            if i > 0:
                mods.append(nn.InstanceNorm2d(cout))
            mods.append(nn.LeakyReLU(0.2, True))
            cin = cout
        mods.append(nn.Conv2d(cin, 1, 4, 1, 1))
        self.body = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _init(model: nn.Module) -> nn.Module:
    """The paper's N(0, 0.02) initialisation of every convolution."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
    return model


def build_generator(cfg: TranslateConfig) -> ResnetGenerator:
    return _init(ResnetGenerator(cfg.g_channels, cfg.g_blocks))


def build_discriminator(cfg: TranslateConfig) -> PatchDiscriminator:
    return _init(PatchDiscriminator(cfg.d_channels, cfg.d_layers))


# --------------------------------------------------------------------------- losses
def lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(scores, torch.full_like(scores, target))


def generator_losses(G_ab: nn.Module, G_ba: nn.Module, D_a: nn.Module, D_b: nn.Module, a: torch.Tensor,
                     b: torch.Tensor, cfg: TranslateConfig):
    """(total, logs, fake_a, fake_b): LSGAN + cycle_weight * L1 cycle + identity * cycle_weight * L1 identity."""
    fake_b, fake_a = G_ab(a), G_ba(b)
    adv = lsgan(D_b(fake_b), 1.0) + lsgan(D_a(fake_a), 1.0)
    cycle = F.l1_loss(G_ba(fake_b), a) + F.l1_loss(G_ab(fake_a), b)
    total = adv + cfg.cycle_weight * cycle
    identity = torch.zeros(())
    if cfg.identity > 0:
        identity = F.l1_loss(G_ab(b), b) + F.l1_loss(G_ba(a), a)
        total = total + cfg.identity * cfg.cycle_weight * identity
    logs = {"g_adv": adv.item(), "cycle": cycle.item(), "identity": identity.item(), "g_total": total.item()}
    return total, logs, fake_a, fake_b


def discriminator_loss(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN for D, halved as in the paper so D learns slower than G."""
    return 0.5 * (lsgan(D(real), 1.0) + lsgan(D(fake.detach()), 0.0))


class ImagePool:
    """The paper's history of generated images: once full, each new fake is, with probability 1/2, swapped
    for a stored one that D sees instead (Shrivastava et al.), so D does not forget older fakes."""

    def __init__(self, size: int):
        self.size = size
        self.images: torch.Tensor | None = None
        self.count = 0

    def query(self, fake: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return fake
        fake = fake.detach()
        if self.images is None:
            self.images = torch.zeros(self.size, *fake.shape[1:])
        out = []
        for img in fake:
            cpu = img.to("cpu", torch.float32)
            if self.count < self.size:
                self.images[self.count] = cpu
                self.count += 1
                out.append(img)
            elif float(torch.rand((), generator=rng)) > 0.5:
                i = int(torch.randint(0, self.size, (), generator=rng))
                out.append(self.images[i].clone().to(fake.device, fake.dtype))
                self.images[i] = cpu
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"count": self.count, "images": self.images if self.images is not None else torch.zeros(0)}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        self.images = state["images"] if state["images"].numel() else None


# --------------------------------------------------------------------------- data
def _list_images(folder: Path) -> list[Path]:
    from .data import IMAGE_EXTS
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTS]
    return found


def load_image_folder(folder: str | Path, resolution: int, cache_dir: str | Path | None = None,
                      verbose: bool = True, name: str = "") -> torch.Tensor:
    """Every image under folder (recursively), centre-cropped and resized to [N, 3, R, R] uint8 once, then
    cached; unreadable files are skipped with a warning."""
    from .checkpoint import atomic_save_tensors, read_metadata, load_tensors
    from .data import decode_many, default_cache_dir
    label = f"{name} folder {folder}" if name else f"folder {folder}"
    folder = Path(folder)
    if not folder.exists():
        raise TagfaceError(f"{label} does not exist")
    if not folder.is_dir():
        raise TagfaceError(f"{label} is not a folder")
    paths = _list_images(folder)
    if not paths:
        raise TagfaceError(f"{label} holds no images (jpg, jpeg, png, webp or bmp, searched recursively)")
    h = hashlib.sha1(json.dumps([CACHE_VERSION, str(folder.resolve()), resolution]).encode())
    for p in paths:  # an image added, removed or replaced changes the key
        st = p.stat()
        h.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}\n".encode())  # same key however folder is spelled
    cache_file = (Path(cache_dir) if cache_dir else default_cache_dir()) / f"folder-{h.hexdigest()[:20]}.safetensors"
    if cache_file.exists():
        meta = read_metadata(cache_file)
        if int(meta.get("skipped", 0)):
            warnings.warn(f"{folder}: skipped {meta['skipped']} unreadable image(s), e.g. {meta.get('example')}")
        return load_tensors(cache_file)["images"]
    if verbose:
        print(f"tagface: {folder}: decoding {len(paths)} images to {resolution}px (cached at {cache_file})",
              file=sys.stderr, flush=True)
    arrays = [a for a, _ in decode_many(paths, resolution)]
    bad = [p for p, a in zip(paths, arrays) if a is None]
    if len(bad) == len(paths):
        raise TagfaceError(f"{label}: none of its {len(paths)} images could be read")
    if bad:
        warnings.warn(f"{folder}: skipped {len(bad)} unreadable image(s), e.g. {bad[0]}")
    images = torch.stack([torch.from_numpy(a) for a in arrays if a is not None])
    try:
        atomic_save_tensors({"images": images}, cache_file,
                            {"source": str(folder), "skipped": str(len(bad)), "example": str(bad[0]) if bad else ""})
    except OSError as err:  # a read-only home must not stop training
        warnings.warn(f"could not write data cache {cache_file}: {err}")
    return images


class _Sampler:
    """Epochs of random permutations of one folder's images; the cursor is part of the checkpoint."""

    def __init__(self, n: int, batch_size: int, rng: torch.Generator):
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.perm, self.cursor = torch.randperm(n, generator=rng), 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.batch_size > self.n:
            self.perm, self.cursor = torch.randperm(self.n, generator=self.rng), 0
        self.cursor += self.batch_size
        return self.perm[self.cursor - self.batch_size:self.cursor]

    def state_dict(self) -> dict:
        return {"perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.cursor = state["perm"], state["cursor"]


def _flip(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], generator=rng) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


# --------------------------------------------------------------------------- training
class CycleGANTrainer:
    def __init__(self, cfg: TranslateConfig, a: torch.Tensor, b: torch.Tensor, out: str | Path,
                 device: str = "cpu", sources: dict | None = None, progress: bool = True):
        self.cfg, self.out, self.device, self.progress = cfg, Path(out), torch.device(device), progress
        self.sources = sources or {}
        for name, x in (("A", a), ("B", b)):
            if x.shape[-1] != cfg.resolution:
                raise TagfaceError(f"the {name} images are {x.shape[-1]}px but the run trains at {cfg.resolution}px")
            if x.shape[0] < cfg.batch_size:
                raise TagfaceError(f"the {name} folder has {x.shape[0]} usable images, fewer than --batch-size "
                                   f"{cfg.batch_size}")
        self.a, self.b = a, b
        torch.manual_seed(cfg.seed)
        self.G_ab, self.G_ba = build_generator(cfg).to(self.device), build_generator(cfg).to(self.device)
        self.D_a, self.D_b = build_discriminator(cfg).to(self.device), build_discriminator(cfg).to(self.device)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam([*self.G_ab.parameters(), *self.G_ba.parameters()], lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam([*self.D_a.parameters(), *self.D_b.parameters()], lr=cfg.lr, betas=betas)
        self.data_rng = torch.Generator().manual_seed(cfg.seed)
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)  # flips and pools
        self.sampler_a = _Sampler(len(a), cfg.batch_size, self.data_rng)
        self.sampler_b = _Sampler(len(b), cfg.batch_size, self.data_rng)
        self.pool_a, self.pool_b = ImagePool(cfg.pool_size), ImagePool(cfg.pool_size)  # fakes of A, of B
        self.step = 0
        fixed = torch.Generator().manual_seed(1234)
        n = min(8, len(a), len(b))
        self.fixed_a = a[torch.randperm(len(a), generator=fixed)[:n]]
        self.fixed_b = b[torch.randperm(len(b), generator=fixed)[:n]]

    def _batch(self, images: torch.Tensor, sampler: _Sampler) -> torch.Tensor:
        from .data import to_float
        x = to_float(images[sampler.next()])
        if self.cfg.flip:
            x = _flip(x, self.rng)
        return x.to(self.device)

    def train_step(self) -> dict[str, float]:
        a, b = self._batch(self.a, self.sampler_a), self._batch(self.b, self.sampler_b)
        for D in (self.D_a, self.D_b):
            D.requires_grad_(False)
        loss, logs, fake_a, fake_b = generator_losses(self.G_ab, self.G_ba, self.D_a, self.D_b, a, b, self.cfg)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        for D in (self.D_a, self.D_b):
            D.requires_grad_(True)
        loss_a = discriminator_loss(self.D_a, a, self.pool_a.query(fake_a, self.rng))
        loss_b = discriminator_loss(self.D_b, b, self.pool_b.query(fake_b, self.rng))
        self.opt_d.zero_grad(set_to_none=True)
        (loss_a + loss_b).backward()
        self.opt_d.step()
        self.step += 1
        return {**logs, "d_a": loss_a.item(), "d_b": loss_b.item()}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "step": self.step, "G_ab": self.G_ab.state_dict(), "G_ba": self.G_ba.state_dict(),
            "D_a": self.D_a.state_dict(), "D_b": self.D_b.state_dict(), "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(), "sampler_a": self.sampler_a.state_dict(),
            "sampler_b": self.sampler_b.state_dict(), "pool_a": self.pool_a.state_dict(),
            "pool_b": self.pool_b.state_dict(), "data_rng": self.data_rng.get_state(), "rng": self.rng.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        for name in ("G_ab", "G_ba", "D_a", "D_b", "opt_g", "opt_d", "sampler_a", "sampler_b", "pool_a", "pool_b"):
            getattr(self, name).load_state_dict(state[name])
        self.data_rng.set_state(state["data_rng"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])

    def save(self) -> None:
        from . import __version__
        from .checkpoint import save_state
        meta = {"tagface.version": __version__, "tagface.kind": KIND_CHECKPOINT,
                "tagface.translate": json.dumps(self.cfg.to_dict()), "tagface.step": str(self.step)}
        save_state(self.state_dict(), self.out / CHECKPOINT, meta)
        save_translator(self.G_ab, self.G_ba, self.cfg, self.out / TRANSLATOR, self.step)

    def resume(self) -> None:
        from .checkpoint import load_resume_state
        self.load_state_dict(load_resume_state(self.out / CHECKPOINT, KIND_CHECKPOINT, "`tagface translate`"))

    # ------------------------------------------------------------------ the loop
    def fit(self, steps: int) -> dict[str, float]:
        from .checkpoint import atomic_write_text
        from .training import fit_loop
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        atomic_write_text(self.out / "run.json", json.dumps(
            {**self.sources, "images_a": len(self.a), "images_b": len(self.b), "device": str(self.device)}, indent=2))
        return fit_loop(self, steps, self.out, images_per_step=2 * cfg.batch_size,  # an A and a B image per row
                        log_every=cfg.log_every, sample_every=cfg.sample_every,
                        checkpoint_every=cfg.checkpoint_every, progress=self.progress)

    @torch.no_grad()
    def sample(self, path: Path) -> None:
        from .data import to_float
        from .sampling import save_image_grid
        a, b = to_float(self.fixed_a).to(self.device), to_float(self.fixed_b).to(self.device)
        ab, ba = self.G_ab(a), self.G_ba(b)
        rows = [a, ab, self.G_ba(ab), b, ba, self.G_ab(ba)]
        save_image_grid(torch.cat(rows).cpu(), path, ncol=a.shape[0])


# --------------------------------------------------------------------------- using a trained translator
def save_translator(G_ab: nn.Module, G_ba: nn.Module, cfg: TranslateConfig, path: str | Path, step: int = 0) -> None:
    from . import __version__
    from .checkpoint import atomic_save_tensors
    tensors = {f"a2b.{k}": v for k, v in G_ab.state_dict().items()}
    tensors.update({f"b2a.{k}": v for k, v in G_ba.state_dict().items()})
    meta = {"tagface.version": __version__, "tagface.kind": KIND_TRANSLATOR, "tagface.step": str(step),
            "tagface.translate": json.dumps(cfg.to_dict())}
    atomic_save_tensors({k: v.cpu() for k, v in tensors.items()}, path, meta)


@dataclass
class Translator:
    """Both generators of a trained run, in eval mode."""

    G_ab: nn.Module
    G_ba: nn.Module
    cfg: TranslateConfig
    step: int
    source: Path

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Translator":
        from .checkpoint import load_state, load_tensors, read_metadata, run_file
        p = run_file(path, (TRANSLATOR, CHECKPOINT))
        meta = read_metadata(p)
        kind = meta.get("tagface.kind")
        if kind not in (KIND_TRANSLATOR, KIND_CHECKPOINT) or "tagface.translate" not in meta:
            raise TagfaceError(f"{p} is not a `tagface translate` checkpoint or translator file")
        cfg = config_from_metadata(meta, p)
        if kind == KIND_TRANSLATOR:
            t = load_tensors(p)
            weights = {d: {k[4:]: v for k, v in t.items() if k.startswith(d + ".")} for d in DIRECTIONS}
        else:
            state, _ = load_state(p)
            weights = {"a2b": state["G_ab"], "b2a": state["G_ba"]}
        nets = {}
        for d in DIRECTIONS:
            G = ResnetGenerator(cfg.g_channels, cfg.g_blocks)
            try:
                G.load_state_dict(weights[d])
            except RuntimeError as err:
                raise TagfaceError(f"{p}: the {d} weights do not fit the config in its metadata ({err})") from None
            nets[d] = G.to(device).eval().requires_grad_(False)
        return cls(nets["a2b"], nets["b2a"], cfg, int(meta.get("tagface.step", 0)), p)

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "a2b", batch_size: int = 16) -> torch.Tensor:
        """uint8 [N, 3, R, R] at the model's resolution -> uint8 [N, 3, R, R] in the other domain."""
        from .data import to_float, to_uint8
        if direction not in DIRECTIONS:
            raise TagfaceError(f"direction {direction!r}: allowed: {', '.join(DIRECTIONS)}")
        G = self.G_ab if direction == "a2b" else self.G_ba
        dev = next(G.parameters()).device
        out = [to_uint8(G(to_float(images[i:i + batch_size]).to(dev))).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(out)


# --------------------------------------------------------------------------- evaluation
def evaluate_translation(model: Translator, a: torch.Tensor, b: torch.Tensor, tagger: nn.Module, n: int = 1000,
                         seed: int = 0) -> dict:
    """Does A->B look like B, and does it keep what the tagger reads (hair and eye colour)?

    Frechet distances in the tagger's feature space (not Inception FID): each translated set against the real
    target domain, next to the untranslated source against it (what doing nothing scores) and two disjoint
    halves of the target itself (the floor). Kept tags: how often the tagger reads the same hair / eye colour
    before and after translation; the folders need no tags."""
    from .evaluation import feature_stats, frechet_distance
    from .tagger import extract_features
    from .tags import N_HAIR

    check_set_size(n)
    m = min(n, len(a) // 2, len(b) // 2)
    if m < MIN_PER_SET:
        raise TagfaceError(f"too few images to evaluate a translation: {len(a)} in --a, {len(b)} in --b "
                           f"(at least {2 * MIN_PER_SET} each)")
    g = torch.Generator().manual_seed(seed)
    pa, pb = torch.randperm(len(a), generator=g), torch.randperm(len(b), generator=g)
    sets = {"a": a[pa[:m]], "a_rest": a[pa[m:2 * m]], "b": b[pb[:m]], "b_rest": b[pb[m:2 * m]]}
    sets["a2b"] = model.translate(sets["a"], "a2b")
    sets["b2a"] = model.translate(sets["b"], "b2a")
    with torch.no_grad():
        feats = {k: extract_features(tagger, v) for k, v in sets.items()}
        logits = {k: tagger.head(feats[k]) for k in ("a", "b", "a2b", "b2a")}
    stats = {k: feature_stats(v) for k, v in feats.items()}

    def fd(x: str, y: str) -> float:
        return frechet_distance(*stats[x], *stats[y])

    def kept(src: str, out: str) -> dict:
        hs, es = logits[src][:, :N_HAIR].argmax(1), logits[src][:, N_HAIR:].argmax(1)
        ho, eo = logits[out][:, :N_HAIR].argmax(1), logits[out][:, N_HAIR:].argmax(1)
        return {"hair": (hs == ho).float().mean().item(), "eyes": (es == eo).float().mean().item(),
                "both": ((hs == ho) & (es == eo)).float().mean().item()}

    return {"checkpoint": str(model.source), "step": model.step, "n_per_set": m, "seed": seed,
            "frechet_tagger": {"a2b_vs_b": fd("a2b", "b"), "b2a_vs_a": fd("b2a", "a"), "a_vs_b": fd("a", "b"),
                               "b_vs_b": fd("b_rest", "b"), "a_vs_a": fd("a_rest", "a")},
            "tags_kept": {"a2b": kept("a", "a2b"), "b2a": kept("b", "b2a")}}


def check_set_size(n: int) -> None:
    if n < MIN_PER_SET:
        raise TagfaceError(f"--n {n}: at least {MIN_PER_SET} images per set (fewer give no usable feature statistics)")


def translation_report_markdown(r: dict) -> str:
    f, k = r["frechet_tagger"], r["tags_kept"]
    return "\n".join([
        f"# tagface translate evaluation: step {r['step']}", "",
        f"checkpoint `{r['checkpoint']}`, {r['n_per_set']} images per set, seed {r['seed']}. Frechet distance in the "
        "tagger's feature space (not Inception FID); lower is closer.", "",
        "| direction | translated vs target | untranslated vs target | target vs itself (floor) | hair kept | eyes kept | both kept |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| A -> B | {f['a2b_vs_b']:.2f} | {f['a_vs_b']:.2f} | {f['b_vs_b']:.2f} | {k['a2b']['hair']:.3f} | "
        f"{k['a2b']['eyes']:.3f} | {k['a2b']['both']:.3f} |",
        f"| B -> A | {f['b2a_vs_a']:.2f} | {f['a_vs_b']:.2f} | {f['a_vs_a']:.2f} | {k['b2a']['hair']:.3f} | "
        f"{k['b2a']['eyes']:.3f} | {k['b2a']['both']:.3f} |", ""])


# --------------------------------------------------------------------------- command line
# flags that set a TranslateConfig field; None (not given) keeps the default, or the run's own on --resume
_CONFIG_FLAGS = {
    "resolution": "resolution", "batch_size": "batch_size", "seed": "seed", "g_channels": "g_channels",
    "g_blocks": "g_blocks", "d_channels": "d_channels", "d_layers": "d_layers", "cycle_weight": "cycle_weight",
    "identity": "identity", "pool_size": "pool_size", "lr": "lr", "sample_every": "sample_every",
    "checkpoint_every": "checkpoint_every", "log_every": "log_every",
}


def config_from_metadata(meta: dict, path: Path) -> TranslateConfig:
    """The TranslateConfig a checkpoint or translator file stores, or one line saying the file is damaged."""
    try:
        data = json.loads(meta["tagface.translate"])
    except (KeyError, json.JSONDecodeError):
        raise TagfaceError(f"{path} holds no readable translate config; it is damaged or not from "
                           "`tagface translate train`") from None
    return TranslateConfig.from_dict(data, f"{path} translate config")


def recorded_folders(run: Path, a: str | None, b: str | None) -> tuple[str | None, str | None]:
    """--a and --b, else the folders the run in `run` recorded in its run.json (None where neither says)."""
    run_json = run / "run.json"
    if (a and b) or not run_json.is_file():
        return a, b
    recorded = read_json_mapping(run_json, "pass --a DIR and --b DIR")
    for key in ("a", "b"):
        if not isinstance(recorded.get(key, ""), str):
            raise TagfaceError(f"{run_json}: '{key}' is not a folder; pass --a DIR and --b DIR")
    return a or recorded.get("a"), b or recorded.get("b")


def cmd_translate_train(args) -> int:
    from .cli import resolve_device
    out = Path(args.out)
    given = {field: getattr(args, flag) for flag, field in _CONFIG_FLAGS.items() if getattr(args, flag) is not None}
    if args.no_flip:
        given["flip"] = False
    if args.resume:
        if not (out / CHECKPOINT).exists():
            raise TagfaceError(f"--resume: {out / CHECKPOINT} does not exist; start without --resume")
        if given:
            raise TagfaceError(f"--resume continues with the run's own settings; drop "
                               f"{', '.join('--' + k.replace('_', '-') for k in given)}")
        from .checkpoint import read_metadata
        meta = read_metadata(out / CHECKPOINT)
        if meta.get("tagface.kind") != KIND_CHECKPOINT:
            raise TagfaceError(f"{out / CHECKPOINT} is not a `tagface translate` checkpoint")
        cfg = config_from_metadata(meta, out / CHECKPOINT)
        folder_a, folder_b = recorded_folders(out, args.a, args.b)
    else:
        if (out / CHECKPOINT).exists():
            raise TagfaceError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another "
                               f"--out")
        folder_a, folder_b = args.a, args.b
        cfg = TranslateConfig(**given)  # every value checked before any image is decoded
    if not folder_a or not folder_b:
        raise TagfaceError("--a DIR and --b DIR are required: the two folders of images to translate between")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    a = load_image_folder(folder_a, cfg.resolution, args.cache_dir, name="--a")
    b = load_image_folder(folder_b, cfg.resolution, args.cache_dir, name="--b")
    trainer = CycleGANTrainer(cfg, a, b, out, device=device, progress=not args.no_progress,
                              sources={"a": str(Path(folder_a).resolve()), "b": str(Path(folder_b).resolve())})
    if args.resume:
        trainer.resume()
    steps = args.steps or 2000
    print(f"tagface: translating {len(a)} A images <-> {len(b)} B images at {cfg.resolution}px, step {trainer.step} "
          f"-> {steps}, device {device}, out {out}", file=sys.stderr)
    logs = trainer.fit(steps)
    print(f"tagface: done at step {trainer.step}: {logs.get('img_per_s', 0):.1f} img/s; translator at "
          f"{out / TRANSLATOR}", file=sys.stderr)
    return 0


def cmd_translate_run(args) -> int:
    from PIL import Image

    from .cli import resolve_device
    from .images import save_pil
    model = Translator.load(args.checkpoint, device=resolve_device(args.device))
    out = Path(args.out)
    targets: dict[Path, str] = {}
    for p in args.images:
        target = out / f"{Path(p).stem}.png"
        if target in targets:
            raise TagfaceError(f"images {targets[target]} and {p} would both be written to {target}; rename one")
        targets[target] = p
    from .data import read_face
    images = torch.stack([torch.from_numpy(read_face(p, model.resolution)) for p in args.images])  # all checked first
    translated = model.translate(images, args.direction)
    for (target, src), img in zip(targets.items(), translated):
        save_pil(Image.fromarray(img.permute(1, 2, 0).numpy()), target)
        print(f"{src} -> {target}")
    return 0


def cmd_translate_evaluate(args) -> int:
    from .checkpoint import atomic_write_text
    from .tagger import load_tagger
    check_set_size(args.n)
    model = Translator.load(args.checkpoint)
    folder_a, folder_b = recorded_folders(Path(args.checkpoint), args.a, args.b)
    if not folder_a or not folder_b:
        raise TagfaceError("--a DIR and --b DIR are required (the checkpoint records no folders)")
    a = load_image_folder(folder_a, model.resolution, args.cache_dir, name="--a")
    b = load_image_folder(folder_b, model.resolution, args.cache_dir, name="--b")
    report = evaluate_translation(model, a, b, load_tagger(args.tagger), args.n, args.seed)
    out = Path(args.out)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out / "report.md", translation_report_markdown(report))
    f, k = report["frechet_tagger"], report["tags_kept"]["a2b"]
    print(f"tagface: A->B vs B {f['a2b_vs_b']:.2f} (untranslated A vs B {f['a_vs_b']:.2f}, B vs B {f['b_vs_b']:.2f}); "
          f"tags kept A->B: hair {k['hair']:.3f} eyes {k['eyes']:.3f}; report in {out}", file=sys.stderr)
    return 0
