"""The training loop: D and G updates at the recipe's ratio, EMA of G, experience replay, sample grids,
loss curves and atomic checkpoints that resume exactly (weights, optimizers, RNG states, data order).

Run directory layout:
  config.yaml              the resolved recipe
  run.json                 data folders and other run facts
  checkpoint.safetensors   full training state (latest), for --resume
  generator.safetensors    EMA generator weights + metadata, what `tagface generate` reads
  samples/step-NNNNNN.png  fixed-noise grids
  metrics.jsonl, losses.png
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from . import __version__
from . import distributed
from .checkpoint import (atomic_write_text, is_grown, load_resume_state, load_state, load_tensors, load_weights,
                         read_metadata, resolve_checkpoint, run_file, save_state)
from .config import Recipe, check_ada
from .data import FaceSet, augment, to_float
from .diffaugment import DiffAugmented, ada_adjust, parse_policy
from .errors import TagfaceError
from .export import discriminator_path
from .losses import (FeatureMatching, FrozenClassifierLoss, GANObjective, Labels, feature_stats_torch,
                     mode_seeking_loss)
from .models import build_discriminator, build_generator
from .sampling import sample_grid_labels, save_generator, save_image_grid, standing_batchnorm
from .plotting import plot_losses
from .tags import TagFrequencies

CHECKPOINT = "checkpoint.safetensors"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 instructions here (AVX512-BF16 or AMX); without them bf16 is emulated, and a
    2-core AVX2 machine trained the DCGAN recipes about 20x slower in bf16 than in fp32 (docs/performance.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
GENERATOR = "generator.safetensors"


class ReplayBuffer:
    """Experience replay for D (report 000): a reservoir of old fakes mixed into each fake batch, so D
    keeps punishing modes G has left and G cannot cycle back to them."""

    def __init__(self, size: int, prob: float):
        self.size, self.prob, self.count = size, prob, 0
        self.images: torch.Tensor | None = None
        self.hair = torch.zeros(size, dtype=torch.long)
        self.eyes = torch.zeros(size, dtype=torch.long)

    def mix(self, fake: torch.Tensor, labels: Labels, rng: torch.Generator) -> tuple[torch.Tensor, Labels]:
        self._push(fake, labels, rng)
        n = min(self.count, self.size)
        take = torch.rand(fake.shape[0], generator=rng) < self.prob
        if n == 0 or not take.any():
            return fake, labels
        idx = torch.randint(0, n, (int(take.sum()),), generator=rng)
        fake, hair, eyes = fake.clone(), labels.hair.clone(), labels.eyes.clone()
        dev = fake.device
        fake[take.to(dev)] = self.images[idx].to(dev, fake.dtype)
        hair[take.to(dev)], eyes[take.to(dev)] = self.hair[idx].to(dev), self.eyes[idx].to(dev)
        return fake, Labels(hair, eyes)

    def _push(self, fake: torch.Tensor, labels: Labels, rng: torch.Generator) -> None:
        if self.images is None:
            self.images = torch.zeros(self.size, *fake.shape[1:], dtype=torch.float16)
        for i in range(fake.shape[0]):  # reservoir sampling keeps a uniform sample of all fakes seen
            slot = self.count if self.count < self.size else int(torch.randint(0, self.count + 1, (1,), generator=rng))
            if slot < self.size:
                self.images[slot] = fake[i].detach().to("cpu", torch.float16)
                self.hair[slot], self.eyes[slot] = labels.hair[i].cpu(), labels.eyes[i].cpu()
            self.count += 1

    def state_dict(self) -> dict:
        return {"count": self.count, "images": self.images if self.images is not None else torch.zeros(0),
                "hair": self.hair, "eyes": self.eyes}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        self.images = state["images"] if state["images"].numel() else None
        self.hair, self.eyes = state["hair"], state["eyes"]


class BatchSampler:
    """Epochs of random permutations; its cursor is saved for resume. Every rank draws the same global
    batch from the same generator and keeps its own slice, so ranks see disjoint shards of the data."""

    def __init__(self, n: int, batch_size: int, rng: torch.Generator, rank: int = 0, world: int = 1):
        if n < batch_size:
            raise TagfaceError(f"the data has {n} usable images, fewer than the batch size {batch_size}; "
                               f"lower train.batch_size with --set train.batch_size=N")
        if batch_size % world:
            raise TagfaceError(f"train.batch_size {batch_size} (the global batch) must divide by the {world} processes")
        self.n, self.batch_size, self.rng, self.rank, self.local = n, batch_size, rng, rank, batch_size // world
        self.perm, self.cursor, self.epoch = torch.randperm(n, generator=rng), 0, 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.batch_size > self.n:
            self.perm, self.cursor, self.epoch = torch.randperm(self.n, generator=self.rng), 0, self.epoch + 1
        idx = self.perm[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx[self.rank * self.local:(self.rank + 1) * self.local]

    def state_dict(self) -> dict:
        return {"perm": self.perm, "cursor": self.cursor, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.cursor, self.epoch = state["perm"], state["cursor"], state["epoch"]


def frozen_tagger_loss(cfg, device, data: FaceSet) -> FrozenClassifierLoss:
    """Report 003's pretrained hair/eye classifiers: the frozen tagger must read G's tags off its faces, and with
    loss.feature_matching its features of G's faces must have the real faces' mean and covariance."""
    from .tagger import load_tagger
    path = None if cfg.frozen_classifier == "default" else cfg.frozen_classifier
    tagger = load_tagger(path).to(device).eval()
    matching = FeatureMatching(*real_feature_stats(tagger, data, device)) if cfg.feature_matching else None
    return FrozenClassifierLoss(tagger, cfg.frozen_classifier_weight, matching=matching,
                                matching_weight=cfg.feature_matching)


@torch.no_grad()
def real_feature_stats(tagger, data: FaceSet, device, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen tagger's feature mean and covariance over every training face (unaugmented), each time the losses
    are built: at the start, on resume, and at a stage that changes them."""
    features = torch.cat([tagger.features(to_float(data.images[i:i + batch_size].to(device))).float()
                          for i in range(0, len(data), batch_size)])
    return feature_stats_torch(features)


def check_stage_files(recipe: Recipe) -> None:
    """A tagger file that the recipe or a later stage names must exist now, before the data is decoded (minutes
    the first time), not fail hours into the run at the stage's step."""
    for start, loss in [(None, recipe.loss)] + [(st.start, recipe.at_step(st.start).loss) for st in recipe.stages]:
        path = loss.frozen_classifier
        if path not in ("", "default") and not Path(path).exists():
            where = "recipe" if start is None else f"stage from step {start}"
            raise TagfaceError(f"{where}: loss.frozen_classifier {path} does not exist "
                               f"(train it with `tagface tagger train`)")


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


class Trainer:
    def __init__(self, recipe: Recipe, data: FaceSet, out: str | Path, device: str = "cpu",
                 data_paths: list[str] | None = None, extra_g_losses=None, progress: bool = True):
        # config: the recipe as given, stages and all; recipe: the one in force at this step (Recipe.at_step)
        self.config, self.recipe = recipe, recipe.at_step(0)
        recipe = self.recipe
        self.data, self.out, self.device = data, Path(out), torch.device(device)
        self.data_paths, self.progress = [str(p) for p in (data_paths or [])], progress
        t = recipe.train
        if data.resolution != t.resolution:
            raise TagfaceError(f"data is {data.resolution}px but the recipe trains at {t.resolution}px")
        self.dist = distributed.current()
        torch.manual_seed(t.seed)  # same initial weights on every rank
        self.data_rng = torch.Generator().manual_seed(t.seed)  # data order: shared by all ranks
        self.rng = torch.Generator().manual_seed(t.seed + 1 + self.dist.rank)  # noise, augmentation: per rank
        self.extra_g_losses = list(extra_g_losses or [])
        check_stage_files(self.config)
        self.objective = self._objective(recipe)
        cond = self.objective.conditioning
        self.G = build_generator(recipe.model, t.resolution).to(self.device)
        self.D = build_discriminator(recipe.model, t.resolution, cond.reads_labels, cond.heads).to(self.device)
        if recipe.model.word_vectors:  # report 001: start the word encoders of G and D from the user's vectors
            from .text import load_word_vectors
            load_word_vectors(self.G, recipe.model.word_vectors)
            load_word_vectors(self.D, recipe.model.word_vectors)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        if t.precision not in PRECISIONS:
            raise TagfaceError(f"train.precision {t.precision!r}: allowed: {', '.join(PRECISIONS)}")
        if t.precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn(f"train.precision=bf16: this CPU has no native bf16 (torch sees "
                          f"{torch.backends.cpu.get_cpu_capability()}), so bf16 is emulated and far slower than fp32")
        if t.compile and recipe.loss.penalty != "none":
            raise TagfaceError(f"train.compile: torch.compile has no double backward, which the {recipe.loss.penalty} "
                               f"penalty needs; set train.compile=false or loss.penalty=''")
        if t.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_train, self.D_train = self.G, self.D  # what the losses call: DDP wrappers when distributed
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            # batch norm over the global batch; buffers need no broadcast since the statistics are shared
            with warnings.catch_warnings():  # broadcast_buffers=False is exactly what is meant; its rename warns
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", UserWarning)
                self.G_train = DDP(distributed.convert_batchnorm(self.G), device_ids=ids, broadcast_buffers=False)
                self.D_train = DDP(distributed.convert_batchnorm(self.D), device_ids=ids, broadcast_buffers=False)
        if t.compile:
            self.G_train, self.D_train = torch.compile(self.G_train), torch.compile(self.D_train)
        self.ada_p = 0.0  # ADA's augmentation chance; it starts at none and rises as D overfits
        self.D_loss = self._d_loss(recipe)
        # grown layers (if any) are a second group, so that train.lr_grown can speed them up
        base = [p for n, p in self.G.named_parameters() if not is_grown(self.G, n)]
        grown = [p for n, p in self.G.named_parameters() if is_grown(self.G, n)]
        self.opt_g = torch.optim.Adam([{"params": base, "lr": t.lr_g}] +
                                      ([{"params": grown, "lr": t.lr_g * t.lr_grown}] if grown else []), betas=t.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=t.betas)
        self.sampler = BatchSampler(len(data), t.batch_size, self.data_rng, self.dist.rank, self.dist.world)
        self.local_batch = self.sampler.local
        self.replay = ReplayBuffer(t.replay_size, t.replay_prob) if t.replay_size else None
        self.freq = TagFrequencies.from_labels(data.hair, data.eyes)
        self.standing_tags = recipe.sample.standing_tags(self.freq)  # checked now, not at the first save
        self.step = 0
        fixed = torch.Generator().manual_seed(1234)
        self.fixed_labels = sample_grid_labels(8)
        self.fixed_z = torch.randn(self.fixed_labels.hair.shape[0], recipe.model.z_dim, generator=fixed)

    # ------------------------------------------------------------------ the recipe in force
    def _objective(self, recipe: Recipe) -> GANObjective:
        extra = list(self.extra_g_losses)
        if recipe.loss.feature_matching and not recipe.loss.frozen_classifier:
            raise TagfaceError("loss.feature_matching matches the frozen tagger's features: set loss.frozen_classifier "
                               "too (a tagger file, or 'default')")
        if recipe.loss.frozen_classifier:
            extra.append(frozen_tagger_loss(recipe.loss, self.device, self.data))
        return GANObjective(recipe.loss, extra)

    def _d_loss(self, recipe: Recipe) -> nn.Module:
        """What the losses call D: through DiffAugment when it is on (the same transforms for real and fake), with
        ADA's adapted chance when train.ada_target is set."""
        t = recipe.train
        names = parse_policy(t.diffaugment)
        check_ada(t)  # Recipe checks it when built; again here for a config changed in place
        if not names:
            return self.D_train
        return DiffAugmented(self.D_train, names, self.rng, self.ada_p if t.ada_target else 1.0)

    def _enter_stage(self) -> None:
        """Switch to the recipe in force at this step: losses, augmentation and optimiser settings. The recipe,
        not a checkpoint, says the learning rates, so `--resume --set train.lr_g=5e-5` decays them too."""
        recipe = self.config.at_step(self.step)
        if recipe != self.recipe:  # a resume within the same stage keeps the losses (and the tagger) it built
            self.recipe, self.objective, self.D_loss = recipe, self._objective(recipe), self._d_loss(recipe)
        t = recipe.train
        for opt, lrs in ((self.opt_g, (t.lr_g, t.lr_g * t.lr_grown)), (self.opt_d, (t.lr_d,))):
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"], group["betas"] = lr, tuple(t.betas)

    # ------------------------------------------------------------------ one iteration
    def _real_batch(self) -> tuple[torch.Tensor, Labels]:
        idx = self.sampler.next()
        t = self.recipe.train
        # uint8 to the device, then augment there: a quarter of the bytes, and no CPU work a GPU waits on
        x = augment(to_float(self.data.images[idx].to(self.device)), self.rng, t.flip, t.rotate)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, Labels(self.data.hair[idx], self.data.eyes[idx]).to(self.device)

    def _noise(self, b: int) -> torch.Tensor:
        return torch.randn(b, self.recipe.model.z_dim, generator=self.rng).to(self.device)

    def train_step(self) -> dict[str, float]:
        for stage in self.config.stages:
            if stage.start == self.step:
                self._enter_stage()
                if stage.new_discriminator is not None:
                    self.new_discriminator(stage.new_discriminator)
        t, mode_seeking = self.recipe.train, self.recipe.loss.mode_seeking
        # the last D step's fakes, kept with their graph for G's first step (not with replay or paired halves)
        logs, kept = self._train_d(keep_fakes=t.reuse_fakes and self.replay is None and not mode_seeking)
        logs.update(self._train_g(kept))
        if not t.ema:
            self.G_ema.load_state_dict(self.G.state_dict())
        self.step += 1
        return logs

    def _train_d(self, keep_fakes: bool = False) -> tuple[dict[str, float], tuple | None]:
        """The recipe's D steps; with keep_fakes, the last step's fakes and tags keep their graph for G."""
        t, logs, kept = self.recipe.train, {}, None
        self.D.requires_grad_(True)
        for i in range(t.d_steps):
            real, labels = self._real_batch()
            fake_labels = labels.permute(torch.randperm(real.shape[0], generator=self.rng).to(self.device))
            keep = keep_fakes and i == t.d_steps - 1
            with torch.set_grad_enabled(keep), self._autocast():
                fake = self.G_train(self._noise(real.shape[0]), fake_labels.onehot)
            if keep:
                kept, fake = (fake, fake_labels), fake.detach()
            if self.replay is not None:
                fake, fake_labels = self.replay.mix(fake, fake_labels, self.rng)
            with self._autocast():
                loss, logs_d = self.objective.d_loss(self.D_loss, real, labels, fake, fake_labels, self.rng)
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_d.step()
            logs.update(logs_d)
        if t.ada_target:
            logs.update(self._adapt_augmentation(real, labels))
        return logs, kept

    @torch.no_grad()
    def _adapt_augmentation(self, real: torch.Tensor, labels: Labels) -> dict[str, float]:
        """ADA: every ada_interval steps D's mean sign on augmented real faces (r_t, averaged over the ranks) says
        how far it has overfitted; the augmentation chance p follows it towards the target."""
        t, logs = self.recipe.train, {}
        if self.step % t.ada_interval == 0:
            with self._autocast():
                reads = self.objective.conditioning.reads_labels
                score = self.D_loss(real, labels.onehot if reads else None).adv
            overfit = torch.sign(score.float()).mean()
            if self.dist.active:
                torch.distributed.all_reduce(overfit)
                overfit /= self.dist.world
            logs["ada_overfit"] = overfit.item()
            self.ada_p = ada_adjust(self.ada_p, logs["ada_overfit"], t.ada_target, t.batch_size * t.ada_interval,
                                    t.ada_kimg)
            self.D_loss.p = self.ada_p
        return {**logs, "ada_p": self.ada_p}

    def _train_g(self, kept: tuple | None) -> dict[str, float]:
        t, logs, mode_seeking = self.recipe.train, {}, self.recipe.loss.mode_seeking
        # G's step needs gradients through D, not D's own: skipping them saves part of D's backward pass
        self.D.requires_grad_(False)
        for _ in range(t.g_steps):
            if kept is not None:
                (fake, fake_labels), kept = kept, None
            else:
                idx = torch.randint(0, len(self.data), (self.local_batch,), generator=self.rng)
                if mode_seeking:  # two halves with the same tags, so each face has a twin to differ from
                    idx = idx[: self.local_batch // 2].repeat(2)
                fake_labels = Labels(self.data.hair[idx], self.data.eyes[idx]).to(self.device)
                z = self._noise(len(idx))
                with self._autocast():
                    fake = self.G_train(z, fake_labels.onehot)
            with self._autocast(), self._no_d_sync():  # D's gradients from G's step are discarded: skip their all-reduce
                loss, logs_g = self.objective.g_loss(self.D_loss, fake, fake_labels)
            if mode_seeking:
                ms = mode_seeking_loss(fake, z)
                loss = loss + mode_seeking * ms
                logs_g["g_mode_seeking"] = ms.item()
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
            logs.update(logs_g)
            if t.ema:
                # ramp the decay up so early, fast-changing weights are not averaged over too long a past
                update_ema(self.G_ema, self.G, min(t.ema, (1 + self.step) / (10 + self.step)))
        return logs

    def new_discriminator(self, warmup: int) -> None:
        """A fresh D and D optimiser (a stage's new_discriminator), trained alone for `warmup` steps against the
        frozen G. Its weights come from the seed and the step, so a resumed run draws the same D."""
        cond = self.objective.conditioning
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.recipe.train.seed + self.step)
            fresh = build_discriminator(self.recipe.model, self.recipe.train.resolution, cond.reads_labels, cond.heads)
        self.D.load_state_dict(fresh.state_dict())
        t = self.recipe.train
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=t.betas)
        self._train_d_alone(warmup)

    def _train_d_alone(self, steps: int) -> None:
        """D steps with G frozen: a new D learns what G's faces look like before G answers to it."""
        for _ in tqdm(range(steps), desc="D warm-up", unit="step", disable=not (self.progress and self.dist.main)):
            self._train_d()

    def _autocast(self):
        dtype = PRECISIONS[self.recipe.train.precision]
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def _no_d_sync(self):
        return self.D_train.no_sync() if self.dist.active else contextlib.nullcontext()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The full state; collective under torchrun (every rank's RNG state is gathered)."""
        return {
            "step": self.step, "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "sampler": self.sampler.state_dict(),
            "data_rng": self.data_rng.get_state(), "rng": distributed.gather_tensors(self.rng.get_state()),
            "torch_rng": torch.get_rng_state(),
            "replay": self.replay.state_dict() if self.replay else None, "ada_p": self.ada_p,
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["rng"]) != self.dist.world:
            raise TagfaceError(f"the checkpoint was written by {len(state['rng'])} process(es); resume it with as many "
                               f"(this run has {self.dist.world})")
        self.step = state["step"]
        for name in ("G", "D", "G_ema", "opt_g", "opt_d", "sampler"):
            try:
                getattr(self, name).load_state_dict(state[name])
            except (RuntimeError, ValueError) as err:  # a model value changed with --set since the run began
                raise TagfaceError(f"--resume: the checkpoint's {name} does not fit this recipe: the networks and the "
                                   f"batch cannot change on --resume; drop the --set that changes them "
                                   f"({str(err).splitlines()[0][:160]})") from None
        self.ada_p = state.get("ada_p", 0.0)  # checkpoints from before ADA have none
        self.D_loss = self._d_loss(self.recipe)
        self._enter_stage()
        self.data_rng.set_state(state["data_rng"])
        self.rng.set_state(state["rng"][self.dist.rank])
        torch.set_rng_state(state["torch_rng"])
        if self.replay is not None and state["replay"] is not None:
            self.replay.load_state_dict(state["replay"])

    def save(self) -> None:
        state = self.state_dict()  # every rank takes part; only the main one writes
        if not self.dist.main:
            return
        meta = {"tagface.version": __version__, "tagface.recipe": json.dumps(self.config.to_dict())}
        save_state(state, self.out / CHECKPOINT, meta)
        G = standing_batchnorm(self.G_ema, self.standing_tags, self.recipe.model.z_dim, self.recipe.sample.standing_stats)
        save_generator(G, self.config, self.freq, self.out / GENERATOR, step=self.step)

    def resume(self) -> None:
        self.load_state_dict(load_resume_state(self.out / CHECKPOINT))

    def init_from(self, path: str | Path | None, d_warmup: int = 0) -> str:
        """Start from another run's weights (stylegan2-ada's resume-from-pickle): a training checkpoint gives G, D
        and the EMA generator; a generator file (the shipped default when path is None) gives G and its EMA, and
        D comes from `<name>-discriminator.safetensors` beside it when that holds D at the same step; otherwise D
        starts fresh and trains alone against the frozen G for d_warmup steps, so that G's first updates come
        from a D that has seen its faces. Optimisers start fresh; the step count continues from the file's, so a
        recipe's stages are in force as they were there. Returns a line saying what was loaded."""
        p = resolve_checkpoint(None) if path is None else run_file(path, (CHECKPOINT, GENERATOR))
        meta = read_metadata(p)
        if meta.get("tagface.kind", "generator") != "generator" or "tagface.recipe" not in meta:
            raise TagfaceError(f"--init {p}: not a tagface generator or GAN training checkpoint")
        full = "tagface.state" in meta
        if full:
            state = load_state(p)[0]
            nets, step = {"G": state["G"], "D": state["D"], "G_ema": state["G_ema"]}, int(state["step"])
        else:
            weights = load_tensors(p)
            nets, step = {"G": weights, "G_ema": weights}, int(meta.get("tagface.step", 0))
            d_file = discriminator_path(p)  # a D shipped beside the generator, trained with it to the same step
            if d_file.exists() and read_metadata(d_file).get("tagface.step") == str(step):
                nets["D"] = load_tensors(d_file)
        for name, tensors in nets.items():
            try:
                load_weights(getattr(self, name), tensors)
            except RuntimeError:
                trained_as = json.loads(meta["tagface.recipe"]).get("name", "another recipe")
                raise TagfaceError(f"--init {p}: its {name} does not fit this recipe's networks; it was trained as "
                                   f"{trained_as}: use that recipe, or one with the same model section") from None
        self.step = step
        self._enter_stage()
        warmed = 0 if "D" in nets else d_warmup
        self._train_d_alone(warmed)
        if full:
            return f"started from {p} at step {step}: G, D and EMA weights"
        if "D" in nets:
            return f"started from {p} at step {step}: G and EMA weights, D from {d_file.name}"
        return f"started from {p} at step {step}: G and EMA weights, a new D trained alone for {warmed} steps"

    # ------------------------------------------------------------------ the loop
    def fit(self, steps: int) -> dict[str, float]:
        t, main = self.recipe.train, self.dist.main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", self.config.to_yaml())
            atomic_write_text(self.out / "run.json", json.dumps(
                {"data": self.data_paths, "images": len(self.data), "device": str(self.device),
                 "processes": self.dist.world}, indent=2))
        return fit_loop(self, steps, self.out, images_per_step=t.batch_size * t.d_steps,  # global: all ranks
                        log_every=t.log_every, sample_every=t.sample_every, checkpoint_every=t.checkpoint_every,
                        progress=self.progress, main=main,
                        save_on_interrupt=not self.dist.active)  # under torchrun the other ranks may be gone

    @torch.no_grad()
    def sample(self, path: Path) -> None:
        labels = self.fixed_labels
        images = self.G_ema(self.fixed_z.to(self.device), labels.onehot.to(self.device))
        save_image_grid(images, path, ncol=8)


def fit_loop(trainer, steps: int, out: Path, *, images_per_step: int, log_every: int, sample_every: int,
             checkpoint_every: int, progress: bool = True, main: bool = True, save_on_interrupt: bool = True) -> dict:
    """The loop every tagface trainer shares (GAN, pipeline, translate): `trainer` has .step, .train_step(),
    .sample(path) and .save() (collective under torchrun; only the main process writes). A progress bar with
    images/s and losses, metrics.jsonl (cut back to the step resumed from), grids, a loss plot and checkpoints;
    Ctrl-C saves a checkpoint before it stops."""
    metrics_path = out / "metrics.jsonl"
    history = _read_metrics(metrics_path, upto=trainer.step) if main else []
    bar = tqdm(total=steps, initial=trainer.step, unit="step", disable=not (progress and main), dynamic_ncols=True)

    def checkpoint() -> None:
        trainer.save()
        if main:
            atomic_write_text(metrics_path, "".join(json.dumps(h) + "\n" for h in history))
            plot_losses(history, out / "losses.png")

    logs: dict[str, float] = {}
    t0, done = time.perf_counter(), 0
    try:
        while trainer.step < steps:
            logs = trainer.train_step()
            done += 1
            rate = done * images_per_step / (time.perf_counter() - t0)
            bar.update(1)
            step, last = trainer.step, trainer.step == steps
            if step % log_every == 0 or last:
                bar.set_postfix({**{k: f"{v:.3f}" for k, v in logs.items()}, "img/s": f"{rate:.1f}"}, refresh=False)
                history.append({"step": step, **logs, "img_per_s": rate})
            if main and (step % sample_every == 0 or last):
                trainer.sample(out / "samples" / f"step-{step:06d}.png")
            if step % checkpoint_every == 0 or last:
                checkpoint()
    except KeyboardInterrupt:
        bar.close()
        if save_on_interrupt:
            checkpoint()
        raise
    bar.close()
    return {**logs, "img_per_s": done * images_per_step / max(time.perf_counter() - t0, 1e-9)}


def _read_metrics(path: Path, upto: int) -> list[dict]:
    """Metrics logged before the resumed step; rows after it were never checkpointed and are dropped."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", math.inf) <= upto]
