"""`tagface bench`: how fast training, generation and data loading are, and against what.

For each recipe and resolution it measures, in real images consumed by D per second (batch_size x d_steps
per step, as the training progress bar counts):

  tagface    the real Trainer.train_step on a FaceSet (the uint8 cache of --data, else random uint8 tensors);
  reference  a plain "tutorial" loop for the same G, D, optimizers, objective and batch size: a
             torch.utils.data.DataLoader over a Dataset that opens each JPEG with PIL per item, converts it
             with numpy, normalises it and flips it at random (no rotation, no EMA, no cache, default memory
             format); it reads --data's JPEGs, else a temporary folder of synthetic R x R JPEGs + tags.csv;
  floor      the same forward, backward and Adam updates on tensors already in memory (no data work), so
             (floor / tagface - 1) is the trainer's overhead.

and also generation latency (FaceGenerator.draw of 1 and 16 faces, median of several runs) and data-loading
throughput (uint8 cache: index + to_float + augment, versus the PIL-per-item DataLoader).
Each timing runs `warmup` untimed steps first. Results go to bench.json and bench.md.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from . import __version__
from .checkpoint import atomic_write_text
from .config import Recipe, load_recipe
from .data import FaceSet, augment, clean, load_datasets, read_records, to_float
from .errors import TagfaceError
from .losses import Labels, MatchingAware
from .models import build_discriminator, build_generator
from .sampling import FaceGenerator
from .tags import EYE_COLOURS, HAIR_COLOURS
from .training import BatchSampler, Trainer, cpu_has_native_bf16

DEFAULT_RECIPES = ("seed-dcgan-cls", "seed-acgan-dcgan", "seed-wgan-gp", "seed-srresnet-dragan")


@dataclass
class BenchConfig:
    recipes: list[str] = field(default_factory=lambda: list(DEFAULT_RECIPES))
    resolutions: list[int] = field(default_factory=lambda: [64])
    steps: int = 4                   # timed training steps per measurement (small: ~5 min for all four recipes)
    warmup: int = 1                  # untimed steps before each measurement
    threads: int | None = None       # torch CPU threads (default: torch's choice)
    data: list[str] = field(default_factory=list)  # real data folders; none: synthetic data
    overrides: list[str] = field(default_factory=list)  # --set SECTION.KEY=VALUE for every recipe
    ref_workers: int = 0             # DataLoader workers of the reference loop (DataLoader's default is 0)
    gen_runs: int = 7                # generation timings per size (median reported)
    gen_sizes: list[int] = field(default_factory=lambda: [1, 16])
    data_batches: int = 20           # batches timed in the data-loading comparison
    synthetic_images: int = 512      # size of the synthetic data set (uint8 tensors and JPEG folder)
    cache_dir: str | None = None
    device: str = "cpu"              # cpu or cuda[:N]: where the models train (data work stays on the CPU)


# --------------------------------------------------------------------------- the reference ("tutorial") pipeline
class TutorialFaces(Dataset):
    """What a PyTorch tutorial does: per item, open the JPEG with PIL, make a tensor, normalise, maybe flip."""

    def __init__(self, items: list[tuple[str, int, int]], resolution: int):
        self.items, self.resolution = items, resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, hair, eyes = self.items[i]
        r = self.resolution
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (r, r):  # Resize + CenterCrop
                    w, h = im.size
                    s = min(w, h)
                    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                    im = im.resize((r, r), Image.Resampling.BICUBIC)
                arr = np.asarray(im)
        except OSError:  # an unreadable file (the uint8 cache skips these)
            arr = np.zeros((r, r, 3), np.uint8)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)  # ToTensor
        x = x.sub(0.5).div(0.5)                                                   # Normalize(0.5, 0.5)
        if torch.rand(1).item() < 0.5:                                            # RandomHorizontalFlip
            x = x.flip(-1)
        return x, hair, eyes


def tutorial_loader(items, resolution: int, batch_size: int, workers: int = 0) -> DataLoader:
    if len(items) < batch_size:
        raise TagfaceError(f"the reference loop has {len(items)} images, fewer than the batch size {batch_size}")
    return DataLoader(TutorialFaces(items, resolution), batch_size=batch_size, shuffle=True, num_workers=workers,
                      drop_last=True)


class _Cycle:
    """Endless batches from a DataLoader, starting a new epoch (a new iterator) when one ends."""

    def __init__(self, loader: DataLoader):
        self.loader, self.it = loader, iter(loader)

    def next(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)


def reference_step_fn(trainer: Trainer, loader: DataLoader) -> Callable[[], None]:
    """One iteration of the tutorial loop with the trainer's G, D, optimizers and objective."""
    G, D, opt_g, opt_d, objective = trainer.G, trainer.D, trainer.opt_g, trainer.opt_d, trainer.objective
    t, z_dim, rng = trainer.recipe.train, trainer.recipe.model.z_dim, torch.Generator().manual_seed(1)
    batches, dev = _Cycle(loader), trainer.device
    if isinstance(objective.conditioning, MatchingAware):
        objective.conditioning.shared_real_pass = False  # tutorials call D once per (image, tags) pair

    def step() -> None:
        labels = None
        for _ in range(t.d_steps):
            real, hair, eyes = (x.to(dev) for x in batches.next())
            labels = Labels(hair, eyes)
            b = real.shape[0]
            fake_labels = labels.permute(torch.randperm(b, device=dev))
            with torch.no_grad():
                fake = G(torch.randn(b, z_dim, device=dev), fake_labels.onehot)
            loss, _ = objective.d_loss(D, real, labels, fake, fake_labels, rng)
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
        for _ in range(t.g_steps):
            fake = G(torch.randn(labels.hair.shape[0], z_dim, device=dev), labels.onehot)
            loss, _ = objective.g_loss(D, fake, labels)
            opt_g.zero_grad()
            loss.backward()
            opt_g.step()

    return step


def floor_step_fn(trainer: Trainer) -> Callable[[], None]:
    """The compute floor: one train_step's forward, backward and Adam updates on tensors already in memory."""
    G, D, opt_g, opt_d, objective = trainer.G, trainer.D, trainer.opt_g, trainer.opt_d, trainer.objective
    t, z_dim = trainer.recipe.train, trainer.recipe.model.z_dim
    g = torch.Generator().manual_seed(2)
    b = t.batch_size
    real = torch.rand(b, 3, t.resolution, t.resolution, generator=g) * 2 - 1
    labels = Labels(torch.randint(0, len(HAIR_COLOURS), (b,), generator=g),
                    torch.randint(0, len(EYE_COLOURS), (b,), generator=g))
    fake_labels = labels.permute(torch.randperm(b, generator=g))
    z_d, z_g = torch.randn(b, z_dim, generator=g), torch.randn(b, z_dim, generator=g)
    dev = trainer.device
    real, z_d, z_g = real.to(dev), z_d.to(dev), z_g.to(dev)
    labels, fake_labels = labels.to(dev), fake_labels.to(dev)
    if t.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)

    def step() -> None:  # the same arithmetic as train_step: its precision, memory format and reused fakes
        kept = None
        D.requires_grad_(True)
        for i in range(t.d_steps):
            keep = t.reuse_fakes and i == t.d_steps - 1
            with torch.set_grad_enabled(keep), trainer._autocast():
                fake = G(z_d, fake_labels.onehot)
            if keep:
                kept, fake = (fake, fake_labels), fake.detach()
            with trainer._autocast():
                loss, _ = objective.d_loss(D, real, labels, fake, fake_labels, g)
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        D.requires_grad_(False)
        for _ in range(t.g_steps):
            with trainer._autocast():
                fake, tags = kept if kept is not None else (G(z_g, labels.onehot), labels)
                kept = None
                loss, _ = objective.g_loss(D, fake, tags)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()

    return step


# --------------------------------------------------------------------------- timing helpers
class _FlopCount(TorchDispatchMode):
    """Sums torch's own FLOP formulas (torch.utils.flop_counter) over every operator that runs. FlopCounterMode
    itself also tracks modules with backward hooks, which break inside autograd.grad (the gradient penalties)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def matmul_gflop_per_s(n: int = 2048, runs: int = 5, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """A practical ceiling for this machine: GFLOP/s of a large square matrix product (median of runs); on a GPU,
    in bf16, the precision its training uses."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / 1e9 / statistics.median(time_calls(lambda: a @ b, runs, 1, device_sync(device)))


def device_sync(device: str | torch.device) -> Callable[[], None] | None:
    """What waits for queued GPU work, so that a timer sees it done; None on the CPU (nothing is queued)."""
    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of fn: matrix products and convolutions, forward and backward
    (element-wise work is not counted). Compiled code hides its operators, so count an uncompiled twin."""
    with _FlopCount() as counter:
        fn()
    return counter.total


def time_calls(fn: Callable[[], object], runs: int, warmup: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds per call of fn, after `warmup` untimed calls; `sync` (device_sync) waits for queued GPU work."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def _rate(times: list[float], images_per_call: int) -> dict:
    total = sum(times)
    return {"img_per_s": images_per_call * len(times) / max(total, 1e-12),
            "step_ms_median": 1000 * statistics.median(times), "steps": len(times), "seconds": total}


# --------------------------------------------------------------------------- data
def synthetic_faces(n: int, resolution: int, seed: int = 0) -> FaceSet:
    g = torch.Generator().manual_seed(seed)
    return FaceSet(torch.randint(0, 256, (n, 3, resolution, resolution), dtype=torch.uint8, generator=g),
                   torch.randint(0, len(HAIR_COLOURS), (n,), generator=g),
                   torch.randint(0, len(EYE_COLOURS), (n,), generator=g))


def write_synthetic_jpegs(folder: Path, n: int, resolution: int, seed: int = 0) -> list[tuple[str, int, int]]:
    """A course-layout folder (tags.csv + images/<id>.jpg) of smooth random faces; returns the items."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    items, lines = [], []
    for i in range(n):
        # low-frequency colour fields compress like flat-shaded drawings, not like noise
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        path = folder / "images" / f"{i}.jpg"
        small.resize((resolution, resolution), Image.Resampling.BICUBIC).save(path, format="JPEG", quality=95)
        hair, eyes = int(rng.integers(len(HAIR_COLOURS))), int(rng.integers(len(EYE_COLOURS)))
        lines.append(f"{i},{HAIR_COLOURS[hair]} hair {EYE_COLOURS[eyes]} eyes")
        items.append((str(path), hair, eyes))
    (folder / "tags.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return items


def folder_items(folders: list[str]) -> list[tuple[str, int, int]]:
    """(path, hair index, eye index) of every usable row, as a tutorial would read tags.csv."""
    items = []
    for f in folders:
        records, _ = clean(read_records(f))
        items += [(str(r.path), HAIR_COLOURS.index(next(iter(r.hair))), EYE_COLOURS.index(next(iter(r.eyes))))
                  for r in records]
    return items


# --------------------------------------------------------------------------- the measurements
def bench_training(recipe: Recipe, faces: FaceSet, items, steps: int, warmup: int, workdir: Path,
                   ref_workers: int = 0, gen_sizes: tuple[int, ...] = (1, 16), gen_runs: int = 7,
                   device: str = "cpu") -> dict:
    """tagface's train_step vs the tutorial loop vs the compute floor, for one recipe at one resolution."""
    t = recipe.train
    per_step = t.batch_size * t.d_steps
    row = {"recipe": recipe.name, "resolution": t.resolution, "batch_size": t.batch_size,
           "d_steps": t.d_steps, "g_steps": t.g_steps, "images_per_step": per_step}

    row["speed_settings"] = {"precision": t.precision, "channels_last": t.channels_last, "compile": t.compile,
                             "reuse_fakes": t.reuse_fakes}
    # The tutorial loop knows none of the speed switches: fp32, default memory format, eager.
    plain = replace(recipe, train=replace(t, precision="fp32", channels_last=False, compile=False, reuse_fakes=False))

    def fresh(r: Recipe = recipe) -> Trainer:  # same seed, so every variant starts from the same weights
        return Trainer(r, faces, workdir, device=device, progress=False)

    sync = device_sync(device)
    row["floor"] = _rate(time_calls(floor_step_fn(fresh()), steps, warmup, sync), per_step)
    trainer = fresh()
    row["tagface"] = _rate(time_calls(trainer.train_step, steps, warmup, sync), per_step)
    loader = tutorial_loader(items, t.resolution, t.batch_size, ref_workers)
    reference_step = reference_step_fn(fresh(plain), loader)
    row["reference"] = _rate(time_calls(reference_step, steps, warmup, sync), per_step)
    row["reference"]["workers"] = ref_workers
    row["speedup_vs_reference"] = row["tagface"]["img_per_s"] / row["reference"]["img_per_s"]
    row["overhead_pct"] = 100 * (row["floor"]["img_per_s"] / row["tagface"]["img_per_s"] - 1)
    # The arithmetic each side does per iteration: where both are compute-bound, their ratio is the speedup that
    # doing less work can give; what the measured speedup adds on top is kernel efficiency (memory format).
    counted = trainer if not t.compile else fresh(replace(recipe, train=replace(t, compile=False)))
    row["gflop_per_step"] = {"tagface": count_flops(counted.train_step) / 1e9,
                             "reference": count_flops(reference_step) / 1e9}
    row["arithmetic_ratio"] = row["gflop_per_step"]["reference"] / row["gflop_per_step"]["tagface"]
    for side in ("tagface", "reference"):
        row[side]["gflop_per_s"] = row["gflop_per_step"][side] * row[side]["img_per_s"] / per_step
    row["generation"] = bench_generation(trainer, gen_sizes, gen_runs)
    return row


def bench_generation(trainer: Trainer, sizes: tuple[int, ...] = (1, 16), runs: int = 7) -> dict:
    """Median milliseconds of FaceGenerator.draw for each number of faces (the EMA generator, eval mode)."""
    gen = FaceGenerator(trainer.G_ema.eval(), trainer.recipe, trainer.freq, trainer.step, Path("<bench>"))
    out = {}
    for n in sizes:
        z = gen.noise(n, seed=0)
        labels = Labels(torch.arange(n) % len(HAIR_COLOURS), torch.arange(n) % len(EYE_COLOURS))
        times = time_calls(lambda: gen.draw(z, labels), runs, 1)  # draw returns CPU images: already synchronised
        out[str(n)] = {"ms_median": 1000 * statistics.median(times), "ms_min": 1000 * min(times), "runs": runs}
    return out


def bench_data_loading(faces: FaceSet, items, resolution: int, batch_size: int, batches: int, warmup: int,
                       flip: bool = True, rotate: float = 5.0, workers: int = 0) -> dict:
    """Images/s of the uint8-cache path (index + to_float + augment) vs the PIL-per-item DataLoader."""
    rng = torch.Generator().manual_seed(0)
    sampler = BatchSampler(len(faces), batch_size, rng)

    def cache_batch(rotate_deg: float):
        def run():
            idx = sampler.next()
            x = augment(to_float(faces.images[idx]), rng, flip, rotate_deg)
            return x, faces.hair[idx], faces.eyes[idx]
        return run

    batches_pil = _Cycle(tutorial_loader(items, resolution, batch_size, workers))
    row = {"resolution": resolution, "batch_size": batch_size, "batches": batches, "rotate_deg": rotate,
           "cache": _rate(time_calls(cache_batch(rotate), batches, warmup), batch_size),
           "cache_flip_only": _rate(time_calls(cache_batch(0.0), batches, warmup), batch_size),
           "pil_dataloader": _rate(time_calls(batches_pil.next, batches, warmup), batch_size)}
    row["pil_dataloader"]["workers"] = workers
    row["speedup"] = row["cache"]["img_per_s"] / row["pil_dataloader"]["img_per_s"]
    row["speedup_flip_only"] = row["cache_flip_only"]["img_per_s"] / row["pil_dataloader"]["img_per_s"]
    return row


# --------------------------------------------------------------------------- driver
def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": model, "cpus": usable, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_has_native_bf16(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(), "tagface": __version__}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _validate(cfg: BenchConfig) -> list[tuple[int, Recipe]]:
    if cfg.steps < 1 or cfg.warmup < 0 or cfg.gen_runs < 1 or cfg.data_batches < 1 or cfg.ref_workers < 0:
        raise TagfaceError("--steps, --gen-runs and --data-batches must be at least 1, --warmup and --ref-workers "
                           "at least 0")
    if not cfg.recipes or not cfg.resolutions:
        raise TagfaceError("give at least one recipe and one resolution")
    plan = []
    for res in cfg.resolutions:
        for name in cfg.recipes:
            recipe = load_recipe(name, list(cfg.overrides) + [f"train.resolution={res}"])
            build_generator(recipe.model, res)  # an unsupported resolution fails here, before any timing
            build_discriminator(recipe.model, res, False, False)
            plan.append((res, recipe))
    return plan


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda msg: None) -> dict:
    """Run every measurement of `cfg`; returns the JSON-ready result."""
    plan = _validate(cfg)
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    result = {"settings": {k: v for k, v in asdict(cfg).items() if k != "cache_dir"},
              "machine": machine_info(), "loadavg_start": _loadavg(),
              "data_source": "real: " + ", ".join(cfg.data) if cfg.data else "synthetic",
              "units": "img/s = real images consumed by D per second (batch_size x d_steps per step)",
              "training": [], "data_loading": []}
    on_gpu = torch.device(cfg.device).type == "cuda"
    if on_gpu:
        result["machine"]["gpu"] = torch.cuda.get_device_name(torch.device(cfg.device))
    # the ceiling in the precision the recipes train in: bf16 on a GPU, and on a CPU with native bf16 when every
    # recipe asks for it (emulated bf16 is no ceiling, and a 2048^3 product of it takes seconds)
    bf16 = on_gpu or (all(r.train.precision == "bf16" for _, r in plan) and cpu_has_native_bf16())
    result["matmul_dtype"] = "bf16" if bf16 else "fp32"
    result["matmul_gflop_per_s"] = matmul_gflop_per_s(8192 if on_gpu else 2048, 10 if on_gpu else 5, cfg.device,
                                                      torch.bfloat16 if bf16 else torch.float32)
    try:
        with tempfile.TemporaryDirectory(prefix="tagface-bench-") as tmp:
            tmp = Path(tmp)
            for res in cfg.resolutions:
                recipes = [r for rr, r in plan if rr == res]
                biggest = max(r.train.batch_size for r in recipes)
                if cfg.data:
                    faces = load_datasets(cfg.data, res, cfg.cache_dir, verbose=True)
                    items = folder_items(cfg.data)
                else:
                    n = max(cfg.synthetic_images, 2 * biggest)
                    log(f"writing {n} synthetic {res}px JPEGs for the reference loop")
                    faces = synthetic_faces(n, res)
                    items = write_synthetic_jpegs(tmp / f"jpegs-{res}", n, res)
                first = recipes[0].train
                log(f"data loading at {res}px, batch {first.batch_size}")
                result["data_loading"].append(bench_data_loading(
                    faces, items, res, first.batch_size, cfg.data_batches, max(cfg.warmup, 1), first.flip,
                    first.rotate, cfg.ref_workers))
                for recipe in recipes:
                    log(f"training {recipe.name} at {res}px: floor, tagface, reference "
                        f"({cfg.warmup} + {cfg.steps} steps each)")
                    row = bench_training(recipe, faces, items, cfg.steps, cfg.warmup, tmp / "run", cfg.ref_workers,
                                         tuple(cfg.gen_sizes), cfg.gen_runs, cfg.device)
                    result["training"].append(row)
                    log(f"  tagface {row['tagface']['img_per_s']:.1f} img/s, reference "
                        f"{row['reference']['img_per_s']:.1f}, floor {row['floor']['img_per_s']:.1f}")
    finally:
        torch.set_num_threads(threads_before)
    result["loadavg_end"] = _loadavg()
    result["elapsed_s"] = time.perf_counter() - t_start
    busy = result["loadavg_start"] and result["loadavg_start"][0] > 0.5 * result["machine"]["cpus"]
    result["warning"] = (f"load average {result['loadavg_start'][0]} at start on {result['machine']['cpus']} CPUs: "
                         f"other work was running, numbers are depressed" if busy else None)
    return result


# --------------------------------------------------------------------------- reports
def _settings_text(row: dict) -> str:
    """'fp32 channels last reuse fakes': the precision and the speed switches that were on."""
    ss = row.get("speed_settings", {})
    return " ".join([ss.get("precision", "fp32")] + [k.replace("_", " ") for k in ("channels_last", "compile", "reuse_fakes")
                                                     if ss.get(k)])


def to_markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    lines = [f"tagface {m['tagface']}, torch {m['torch']}, " + (f"{m['gpu']} (models), " if m.get("gpu") else "")
             + f"{m['cpu'] or 'unknown CPU'} "
             f"({m.get('cpu_capability', '?')}, native bf16 {'yes' if m.get('native_bf16') else 'no'}), {m['cpus']} CPUs, "
             f"{m['torch_threads']} torch threads; data {result['data_source']}; {s['warmup']} warmup + "
             f"{s['steps']} timed steps; reference DataLoader workers {s['ref_workers']}; "
             f"load average {result.get('loadavg_start')} -> {result.get('loadavg_end')}; "
             f"{result.get('elapsed_s', 0):.0f} s.", ""]
    if result.get("warning"):
        lines += [f"**Warning: {result['warning']}.**", ""]
    lines += [f"Training ({result['units']}):", "",
              "| recipe | px | batch | tagface settings | tagface img/s | reference img/s | speedup | floor img/s | trainer overhead |",
              "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["training"]:
        lines.append(f"| {r['recipe']} | {r['resolution']} | {r['batch_size']}x{r['d_steps']} | {_settings_text(r)} | "
                     f"{r['tagface']['img_per_s']:.1f} | {r['reference']['img_per_s']:.1f} | "
                     f"{r['speedup_vs_reference']:.2f}x | {r['floor']['img_per_s']:.1f} | {r['overhead_pct']:+.1f}% |")
    peak = result.get("matmul_gflop_per_s")
    lines += ["", "Arithmetic per iteration (torch.utils.flop_counter: convolutions and matrix products, forward and "
              f"backward; this machine's {result.get('matmul_dtype', 'fp32')} matrix product runs at {peak or 0:.0f} "
              "GFLOP/s):", "",
              "| recipe | px | tagface settings | tagface GFLOP | reference GFLOP | reference / tagface | measured speedup "
              "| tagface GFLOP/s | reference GFLOP/s |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["training"]:
        if "gflop_per_step" in r:
            rates = " | ".join(f"{r[k]['gflop_per_s']:.0f}" + (f" ({100 * r[k]['gflop_per_s'] / peak:.0f}%)" if peak else "")
                               for k in ("tagface", "reference"))
            lines.append(f"| {r['recipe']} | {r['resolution']} | {_settings_text(r)} | {r['gflop_per_step']['tagface']:.1f} | "
                         f"{r['gflop_per_step']['reference']:.1f} | {r['arithmetic_ratio']:.2f}x | "
                         f"{r['speedup_vs_reference']:.2f}x | {rates} |")
    sizes = list(result["training"][0]["generation"]) if result["training"] else []
    lines += ["", "Generation latency (FaceGenerator.draw, median ms):", "",
              "| recipe | px | " + " | ".join(f"{n} face{'s' if n != '1' else ''}" for n in sizes) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in sizes) + " |"]
    for r in result["training"]:
        lines.append(f"| {r['recipe']} | {r['resolution']} | "
                     + " | ".join(f"{r['generation'][n]['ms_median']:.1f}" for n in sizes) + " |")
    lines += ["", "Data loading (img/s):", "",
              "| px | batch | uint8 cache (flip + rotate, as training) | uint8 cache (flip only) | "
              "PIL-per-item DataLoader (flip) | speedup (as training / flip only) |",
              "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d in result["data_loading"]:
        lines.append(f"| {d['resolution']} | {d['batch_size']} | {d['cache']['img_per_s']:.0f} | "
                     f"{d['cache_flip_only']['img_per_s']:.0f} | {d['pil_dataloader']['img_per_s']:.0f} | "
                     f"{d['speedup']:.1f}x / {d['speedup_flip_only']:.1f}x |")
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "bench.md", to_markdown(result))
    return out / "bench.json", out / "bench.md"
