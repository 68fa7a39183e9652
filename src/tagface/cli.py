"""The `tagface` command line. Bad input ends in one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import TagfaceError


def positive(kind, allow_zero: bool = False, at_most=None):
    """argparse type: a number > 0, or >= 0 with allow_zero, and <= at_most when given (also used by the translate
    and pipeline commands)."""
    at_least_zero = "an integer >= 0" if kind is int else "a number >= 0"
    wanted = at_least_zero if allow_zero else f"a positive {kind.__name__}"
    if at_most is not None:
        wanted += f" up to {at_most}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        too_big = at_most is not None and value > at_most
        if not value >= 0 or value == float("inf") or (value == 0 and not allow_zero) or too_big:  # `not >=`: nan too
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse


MIN_REAL_FACES = 16  # evaluate: fewer real faces give no usable covariance
MAX_FACES_PER_LINE = 4096  # per tag line: a 4096-face grid is ~17 s and 36 MB of PNG; more is a mistake, not a picture


def share(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def seed_int(text: str) -> int:
    """argparse type for --seed: an integer every generator in tagface (torch's, numpy's) accepts."""
    from .config import MAX_SEED
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63 - 1, got {text!r}")
    return value


def lazy(module: str, name: str):
    """A command's function, imported only when that command runs: building the parser imports no torch, so
    `tagface generate` (numpy_generator) and `--help` start without it."""
    def run(args) -> int:
        return getattr(importlib.import_module(f"tagface.{module}"), name)(args)
    return run


def truncation(text: str) -> float:
    """argparse type for --truncation, checked before any model loads (the sampler checks it again for API users)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 2:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 2] (1 is the training distribution), got {text!r}")
    return value


def cmd_recipes(args) -> int:
    from .config import list_recipes, load_recipe
    for name in list_recipes():
        print(f"{name:24s} {load_recipe(name).description}")
    return 0


def _flag_overrides(args) -> list[str]:
    """--precision/--channels-last/--compile/--word-vectors are shorthands for recipe values."""
    out = [f"train.precision={args.precision}"] if args.precision else []
    out += ["train.channels_last=true"] if args.channels_last else []
    out += ["train.compile=true"] if args.compile else []
    if args.word_vectors:
        from .text import word_vector_dim
        out += ["model.text_encoder=words", f"model.word_vectors={Path(args.word_vectors).resolve()}",
                f"model.word_dim={word_vector_dim(args.word_vectors)}"]
    return out


def cmd_train(args) -> int:
    import torch

    from .config import load_recipe
    from .data import load_datasets
    from .training import Trainer, check_stage_files, cpu_has_native_bf16

    out = Path(args.out)
    args.set = _flag_overrides(args) + args.set
    if args.resume and args.init:
        raise TagfaceError("--resume continues this run's own checkpoint; --init starts a new run from another's: "
                           "give one of them")
    if args.resume:
        if not (out / "config.yaml").exists():
            raise TagfaceError(f"--resume: {out} has no config.yaml from an earlier run")
        recipe = load_recipe(out / "config.yaml", args.set)
        data_paths = args.data or _recorded_data(out / "run.json")
    else:
        if not args.config:
            raise TagfaceError("--config is required (a YAML file or a seed recipe name; see `tagface recipes`)")
        if (out / "checkpoint.safetensors").exists():
            raise TagfaceError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")
        if (out / "generator.safetensors").exists():  # a finished run whose large checkpoint was deleted
            raise TagfaceError(f"{out} already holds generator.safetensors from an earlier run; choose another --out")
        if not args.data:
            raise TagfaceError("--data is required: a folder with tags.csv and images (repeat for several)")
        recipe, data_paths = load_recipe(args.config, args.set), args.data
    check_stage_files(recipe)  # before the data is decoded, which can take minutes the first time
    if args.threads:
        torch.set_num_threads(args.threads)
    from . import distributed
    device = resolve_device(args.device)
    dist = distributed.init(device)  # torchrun: one process per rank, gloo on CPU, nccl on CUDA
    if dist.active and device.startswith("cuda"):
        device = f"cuda:{dist.local_rank}"
    try:
        data = load_datasets(data_paths, recipe.train.resolution, args.cache_dir, verbose=dist.main)
        trainer = Trainer(recipe, data, out, device=device, data_paths=data_paths, progress=not args.no_progress)
        say = (lambda msg: print(msg, file=sys.stderr)) if dist.main else (lambda msg: None)
        if args.resume:
            trainer.resume()
        elif args.init:
            say("tagface: " + trainer.init_from(None if args.init == "default" else args.init, args.d_warmup))
        steps = args.steps or recipe.train.steps
        if device == "cpu" and trainer.recipe.train.precision == "fp32" and cpu_has_native_bf16():
            say("tagface: this CPU has native bf16: --precision bf16 --channels-last trained 1.8x as fast "
                "(its effect on quality: docs/performance.md)")
        say(f"tagface: training {recipe.name} on {len(data)} faces at {recipe.train.resolution}px, step {trainer.step} "
            f"-> {steps}, device {device}" + (f" x {dist.world} processes" if dist.active else "") + f", out {out}")
        keep_start = bool(args.init) and trainer.step >= steps  # e.g. a D warmed for a generator, no G step
        if keep_start:
            say(f"tagface: --steps {steps} is not past the start (step {trainer.step}): no G step is taken and the run "
                f"holds the start; for 1000 more steps ask for --steps {trainer.step + 1000}")
        logs = trainer.fit(steps)
        if keep_start:
            trainer.save()
        say(f"tagface: done at step {trainer.step}: {logs.get('img_per_s', 0):.1f} img/s; "
            f"generator at {out / 'generator.safetensors'}")
    finally:
        if dist.active:
            import torch.distributed
            torch.distributed.barrier()  # rank 0 may still be writing; leave together
            torch.distributed.destroy_process_group()
    return 0


def _recorded_data(run_json: Path) -> list[str]:
    """The --data folders a run recorded, for --resume without --data."""
    try:
        data = json.loads(run_json.read_text(encoding="utf-8"))["data"]
        if not (isinstance(data, list) and data and all(isinstance(d, str) for d in data)):
            raise ValueError("'data' is not a list of folders")
        return data
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TagfaceError(f"--resume: {run_json} cannot tell the run's data folders ({err}); pass --data again") from None


def resolve_device(name: str) -> str:
    """--device: auto picks CUDA when there is one; a name torch does not know, or CUDA (or a GPU index) this
    machine does not have, is a one-line error."""
    import re

    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise TagfaceError(f"--device {name}: allowed: cpu, cuda, cuda:N (a GPU index) or auto")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TagfaceError(f"--device {name}: CUDA is not available here; use --device cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise TagfaceError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
                           f"cuda:{torch.cuda.device_count() - 1}")
    return name


def cmd_generate(args) -> int:
    strict = getattr(args, "strict_tags", None)
    if strict and (args.tag_grid or getattr(args, "pipeline", "gan") != "gan"):
        raise TagfaceError("--strict-tags works with TAGS or --tags-file and the gan pipeline (the grid shares "
                           "one noise vector per row, which a redraw would break)")
    if getattr(args, "pipeline", "gan") == "gray-colorize":
        from .colorize import cmd_generate_pipeline
        return cmd_generate_pipeline(args)
    from .images import image_grid, save_pil, write_course_samples
    from .numpy_generator import load_generator
    from .tags import parse_tags, read_tags_file

    given = [bool(args.tags), bool(args.tags_file), args.tag_grid]
    if sum(given) != 1:
        raise TagfaceError("give exactly one of: TAGS (e.g. \"blue hair red eyes\"), --tags-file FILE, --tag-grid")
    request = parse_tags(args.tags) if args.tags else None  # a typo is reported before any model loads
    entries = read_tags_file(args.tags_file) if args.tags_file else None
    # the shipped model draws with numpy on the CPU: no torch import, a quarter of the command's time
    gen = load_generator(args.checkpoint, device=args.device if args.device == "cpu" else resolve_device(args.device))
    if strict:  # torch-free too where the faces are at the tagger's resolution
        from .numpy_tagger import load_reader
        from .strict import RedrawMisread
        gen = RedrawMisread(gen, load_reader(args.tagger, gen.resolution), tries=strict)
    if entries:
        written = write_course_samples(gen, entries, args.out, args.n, args.seed, args.truncation,
                                       say=lambda line: print(f"tagface: {line}", file=sys.stderr))
        if strict:
            _say_redrawn(gen)
        print(f"tagface: wrote {len(written)} images to {args.out}", file=sys.stderr)
        return 0
    if args.tag_grid:
        save_pil(image_grid(gen.tag_grid(args.seed, args.truncation), ncol=11), args.out)
        print(f"tagface: wrote the 12 x 11 hair x eye grid to {args.out}", file=sys.stderr)
        return 0
    tags, notes = gen.complete(request, args.seed)
    for note in notes:
        print(f"tagface: {note}", file=sys.stderr)
    images = gen.generate(tags, args.n, seed=args.seed, truncation=args.truncation)
    if strict:
        _say_redrawn(gen)
    save_pil(image_grid(images, ncol=args.ncol or min(args.n, 8)), args.out)
    print(f"tagface: wrote {args.n} faces ({tags}, seed {args.seed}) to {args.out}", file=sys.stderr)
    return 0


def _say_redrawn(gen) -> None:
    """With --strict-tags (`gen` a strict.RedrawMisread): what the redrawing did."""
    print(f"tagface: --strict-tags: {gen.summary()}", file=sys.stderr)


def cmd_tagger_train(args) -> int:
    import torch

    from .checkpoint import output_file
    from .data import load_datasets
    from .tagger import save_tagger, train_tagger
    output_file(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    faces = load_datasets(args.data, args.resolution, args.cache_dir)
    net, report = train_tagger(faces, epochs=args.epochs, width=args.width, seed=args.seed, balance=args.balance,
                               progress=not args.no_progress)
    report["data"] = args.data
    save_tagger(net, args.out, report)
    h = report["heldout"]
    print(f"tagface: tagger saved to {args.out}; held-out accuracy on {h['n']} faces: hair {h['hair']:.3f}, "
          f"eyes {h['eyes']:.3f}, both {h['both']:.3f}")
    return 0


def _read_images(paths: list[str]):
    """Image files -> uint8 [N, 3, 64, 64] (Pillow's bicubic resize), the size the shipped tagger reads."""
    import numpy as np
    from PIL import Image
    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                arrays.append(np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC)).transpose(2, 0, 1))
        except FileNotFoundError:
            raise TagfaceError(f"image {p} does not exist") from None
        except (OSError, Image.DecompressionBombError) as err:  # the bomb: an image over Pillow's pixel limit
            raise TagfaceError(f"image {p} cannot be read ({err})") from None
    return np.stack(arrays)


def cmd_tagger_predict(args) -> int:
    from .numpy_tagger import load_reader, top_colours  # numpy, no torch, for a tagger that reads 64 px faces
    read = load_reader(args.tagger, 64)
    results = top_colours(read(_read_images(args.images)), k=args.top)
    for path, r in zip(args.images, results):
        if args.json:
            print(json.dumps({"path": path, "hair": r["hair"][0][0], "eyes": r["eyes"][0][0],
                              "hair_p": round(r["hair"][0][1], 4), "eyes_p": round(r["eyes"][0][1], 4),
                              **{f"{a}_top": [[c, round(p, 4)] for c, p in r[a]] for a in ("hair", "eyes")}}))
        else:
            hair = ", ".join(f"{c} {p:.2f}" for c, p in r["hair"])
            eyes = ", ".join(f"{c} {p:.2f}" for c, p in r["eyes"])
            print(f"{path}: hair {hair} | eyes {eyes}")
    return 0


def cmd_tagger_relabel(args) -> int:
    from .checkpoint import output_file
    from .data import read_records
    from .tagger import load_tagger, relabel, write_relabelled
    if not 0 <= args.min_confidence <= 1:
        raise TagfaceError(f"--min-confidence {args.min_confidence}: allowed range is [0, 1]")
    output_file(args.out)
    records = read_records(args.data)
    labels, report = relabel(records, load_tagger(args.tagger), args.min_confidence)
    write_relabelled(records, labels, args.out)
    print(json.dumps(report, indent=2))
    print(f"tagface: labelled {report['labelled']} more rows ({report['usable_before']} -> {report['usable_after']} "
          f"usable of {report['rows']}); wrote {args.out}", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from .data import load_datasets
    from .evaluation import evaluate, write_report
    from .sampling import FaceGenerator
    from .tagger import load_tagger
    if args.pipeline == "gray-colorize":
        from .colorize import ColorizePipeline, PipelineFaces
        if not args.checkpoint:
            raise TagfaceError("--pipeline gray-colorize needs --checkpoint RUN_DIR from `tagface pipeline train`")
        if args.inception:
            raise TagfaceError("--inception is for GAN generators; drop it with --pipeline gray-colorize")
        gen = PipelineFaces(ColorizePipeline.load(args.checkpoint))
    else:
        gen = FaceGenerator.load(args.checkpoint)
    tagger = load_tagger(args.tagger)
    real = load_datasets(args.real, 64, args.cache_dir, verbose=True)
    if real.images.shape[0] < MIN_REAL_FACES:  # covariances of a handful of faces say nothing (and eigh may fail)
        raise TagfaceError(f"--real {' '.join(args.real)}: {real.images.shape[0]} usable faces; evaluate compares "
                           f"against at least {MIN_REAL_FACES}")
    report = evaluate(gen, tagger, real, args.samples_per_tag, args.seed, args.truncation)
    if args.inception:
        from .inception import fid_kid
        report.update(fid_kid(args.inception, gen, real, args.samples_per_tag, args.seed, args.truncation))
    write_report(report, args.out)
    g, fd, mt, hp = report["generated"], report["frechet_tagger"], report["matched"], report["frechet_tagger_held_pairs"]
    held = (f" (ratio {hp['ratio']:.2f} on the {hp['pairs']} pairs the real faces hold)"
            if hp["pairs_without_real_faces"] and hp["ratio"] is not None else "")
    if (rg := report["frechet_tagger_real_grid"]) and rg["ratio"] is not None:
        held += f"; real faces drawn as the grid draws them: ratio {rg['ratio']:.2f}"
    print(f"tagface: hair {g['hair']:.3f} eyes {g['eyes']:.3f} both {g['both']:.3f}; frechet (tagger features) "
          f"{fd['generated_vs_real']:.3f} vs real-real {_number(fd['real_vs_real'], 3)}{held}; matched-tags frechet "
          f"ratio {_number(mt['frechet_ratio'])}, lowest per-tag diversity ratio {_number(mt['diversity_ratio_min'])}; "
          f"report in {args.out}")
    return 0


def _number(value: float | None, digits: int = 2) -> str:
    """A reading for the summary line; 'n/a' where the real faces were too few to give it."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def cmd_serve(args) -> int:
    from .serving import serve
    serve(args.checkpoint, host=args.host, port=args.port, max_concurrent=args.max_concurrent, queue=args.queue,
          wait_s=args.wait, threads=args.threads, access_log=not args.no_access_log)
    return 0


def cmd_crop(args) -> int:
    from .crop import CascadeDetector, crop_faces, find_pictures
    if not 0 < args.scale <= 4:
        raise TagfaceError(f"--scale {args.scale}: allowed range is (0, 4]; 1 crops the detector's box")
    if not -1 <= args.shift <= 1:
        raise TagfaceError(f"--shift {args.shift}: allowed range is [-1, 1] (a fraction of the face's height)")
    detect = CascadeDetector(args.cascade, args.min_size, args.neighbours)  # a missing cascade fails before any work
    pictures = find_pictures(args.pictures, skip=Path(args.out))
    if not pictures:
        inside = find_pictures(args.pictures) if Path(args.out).exists() else []  # all of them under --out?
        raise TagfaceError(f"no pictures (jpg, jpeg, png, webp or bmp) in {' '.join(args.pictures)}" + (
            f" outside --out {args.out}, whose own faces are skipped; write the crops to another folder" if inside else ""))
    progress = None
    if not args.no_progress:
        from tqdm import tqdm
        progress = lambda items: tqdm(items, desc="crop", unit="picture")  # noqa: E731
    report = crop_faces(pictures, args.out, detect, args.size, args.scale, args.shift, args.overwrite, progress)
    print(json.dumps(report))
    print(f"tagface: {report['faces']} faces from {report['pictures']} pictures ({report['without_face']} without a "
          f"face, {report['unreadable']} unreadable) in {args.out}/faces; next: tagface tagger relabel --data "
          f"{args.out} --out {args.out}/labelled.csv", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from .export import export_checkpoint, export_discriminator
    fmt = args.format or ("safetensors" if args.discriminator else "onnx")
    if args.discriminator:
        if fmt.lower() != "safetensors":
            raise TagfaceError(f"--discriminator writes safetensors only; drop --format {fmt}")
        info = export_discriminator(args.checkpoint, args.out, half=args.half)
        print(f"tagface: wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, {info['dtype']}, D at step "
              f"{info['step']})", file=sys.stderr)
        return 0
    info = export_checkpoint(args.checkpoint, args.out, fmt, args.opset, args.exporter, half=args.half,
                             standing_stats=args.standing_stats, standing_uniform=args.standing_uniform,
                             tag_guidance=args.tag_guidance, guidance_tagger=args.guidance_tagger,
                             guidance_per_pair=args.guidance_per_pair)
    if fmt.lower() == "safetensors":
        print(f"tagface: wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, {info['dtype']}; reloaded, it matches "
              f"the source generator to {info['max_abs_diff']:.1e})", file=sys.stderr)
        return 0
    check = ("; onnxruntime not installed, not checked" if info["max_abs_diff"] is None
             else f"; onnxruntime matches PyTorch to {info['max_abs_diff']:.1e}")
    print(f"tagface: wrote {info['path']} ({info['bytes'] / 1e6:.1f} MB, opset {info['opset']}, "
          f"{info['exporter']} exporter{check})", file=sys.stderr)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def cmd_bench(args) -> int:
    from .bench import DEFAULT_RECIPES, BenchConfig, run_bench, to_markdown, write_report
    cfg = BenchConfig(recipes=[r.strip() for r in (args.recipes or ",".join(DEFAULT_RECIPES)).split(",") if r.strip()],
                      resolutions=args.resolutions, steps=args.steps, warmup=args.warmup, threads=args.threads,
                      data=args.data or [], overrides=args.set, ref_workers=args.ref_workers, gen_runs=args.gen_runs,
                      data_batches=args.data_batches, cache_dir=args.cache_dir,
                      device=resolve_device(args.device))
    result = run_bench(cfg, log=lambda msg: print(f"tagface: bench: {msg}", file=sys.stderr, flush=True))
    json_path, md_path = write_report(result, args.out)
    print(to_markdown(result))
    print(f"tagface: wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tagface", description="Anime faces from tags such as 'blue hair red eyes'.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a conditional GAN from a recipe")
    t.add_argument("--config", help="recipe YAML file or seed recipe name (see `tagface recipes`)")
    t.add_argument("--data", action="append", help="data folder with tags.csv (repeat to combine folders)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--steps", type=positive(int), help="train until this step (default: the recipe's train.steps)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--init", metavar="RUN_OR_FILE", help="start from another run's weights: a run directory, a "
                   "checkpoint or generator file, or 'default' (the shipped model; fine-tune it on your faces)")
    t.add_argument("--d-warmup", type=positive(int, allow_zero=True), default=500, metavar="N", help="with --init from a generator file: "
                   "steps a new D trains alone before G moves (default 500)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    t.add_argument("--threads", type=positive(int), help="CPU threads for torch")
    t.add_argument("--cache-dir", help="where decoded data is cached (default ~/.cache/tagface or $TAGFACE_CACHE)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: autocast (CUDA, or CPUs with bf16 support)")
    t.add_argument("--channels-last", action="store_true", help="NHWC memory format: faster convolutions on CUDA and, in fp32, on the CPU measured (docs/performance.md)")
    t.add_argument("--compile", action="store_true", help="torch.compile G and D (recipes without a penalty)")
    t.add_argument("--word-vectors", metavar="FILE", help="GloVe-format text vectors: tags read as word vectors "
                   "(report 001); sets model.text_encoder=words")
    t.set_defaults(func=cmd_train, saves_on_interrupt=True)

    g = sub.add_parser("generate", help="draw faces for tags")
    g.add_argument("tags", nargs="?", help="e.g. \"blue hair red eyes\"; a missing colour is sampled")
    g.add_argument("-n", type=positive(int, at_most=MAX_FACES_PER_LINE), default=16,
                   help=f"faces per tag line (default 16, at most {MAX_FACES_PER_LINE})")
    g.add_argument("--seed", type=seed_int, default=0)
    g.add_argument("--out", default="grid.png", help="image file, or folder with --tags-file")
    g.add_argument("--checkpoint", help="run directory or .safetensors file (omitted or 'default': the shipped model)")
    g.add_argument("--truncation", type=truncation, help="noise intensity in (0, 2]; lower: safer, less varied")
    g.add_argument("--tags-file", help="course format: lines '<id>,<tags>' -> OUT/sample_<id>_<k>.jpg")
    g.add_argument("--tag-grid", action="store_true", help="the 12 x 11 hair x eye grid")
    g.add_argument("--ncol", type=positive(int), help="grid columns")
    g.add_argument("--device", default="cpu", help="cpu (default: DCGAN generators such as the shipped one draw "
                   "with numpy, never loading torch), cuda, cuda:N or auto")
    g.add_argument("--strict-tags", nargs="?", const=8, type=positive(int, at_most=64), metavar="DRAWS",
                   help="draw a face again while the tagger misreads its colours, up to DRAWS draws (default 8): "
                        "truer colours, less varied faces")
    g.add_argument("--tagger", help="tagger for --strict-tags (default: the shipped one)")
    g.add_argument("--pipeline", default="gan", choices=["gan", "gray-colorize"],
                   help="gan (default): one conditional GAN; gray-colorize: report 000's two stages "
                        "(a `tagface pipeline train` run as --checkpoint)")
    g.set_defaults(func=cmd_generate)

    tg = sub.add_parser("tagger", help="the hair/eye tagger: train, predict, relabel")
    tsub = tg.add_subparsers(dest="tagger_command", required=True)
    tt = tsub.add_parser("train", help="train a tagger on faces with exactly one hair and one eye colour")
    tt.add_argument("--data", action="append", required=True, help="data folder (repeat to combine)")
    tt.add_argument("--out", required=True, help="output .safetensors file")
    tt.add_argument("--epochs", type=positive(int), default=6)
    tt.add_argument("--width", type=positive(int), default=32)
    tt.add_argument("--resolution", type=positive(int, at_most=512), default=64, help="side the faces are read at "
                    "(default 64)")
    tt.add_argument("--seed", type=seed_int, default=0, help="seed of the training and of the held-out split")
    tt.add_argument("--balance", type=share, default=0.0, help="weight each colour's loss by (1 / its frequency) ** "
                    "BALANCE, 0..1 (default 0: the data's mix; 1 lets it read gray eyes, 0.26%% of mlds + adl)")
    tt.add_argument("--threads", type=positive(int))
    tt.add_argument("--cache-dir")
    tt.add_argument("--no-progress", action="store_true")
    tt.set_defaults(func=cmd_tagger_train)
    tp = tsub.add_parser("predict", help="top hair and eye colours of images")
    tp.add_argument("images", nargs="+")
    tp.add_argument("--json", action="store_true", help="one JSON object per line: the most likely colours "
                    "(hair, eyes, hair_p, eyes_p) and the --top of each (hair_top, eyes_top: [colour, p] pairs)")
    tp.add_argument("--top", type=positive(int), default=3, help="colours listed per attribute (default 3)")
    tp.add_argument("--tagger", help="tagger file (default: the shipped one)")
    tp.set_defaults(func=cmd_tagger_predict)
    tr = tsub.add_parser("relabel", help="fill blank and resolve several-colour rows of a tags file")
    tr.add_argument("--data", required=True, help="data folder or tags csv")
    tr.add_argument("--out", required=True, help="output csv (id,hair,eyes,file), usable as --data")
    tr.add_argument("--min-confidence", type=float, default=0.8)
    tr.add_argument("--tagger", help="tagger file (default: the shipped one)")
    tr.set_defaults(func=cmd_tagger_relabel)

    e = sub.add_parser("evaluate", help="attribute accuracy, Frechet distance and diversity of a generator")
    e.add_argument("--checkpoint", help="run directory or .safetensors (omitted or 'default': the shipped model)")
    e.add_argument("--tagger", help="tagger file (default: the shipped one)")
    e.add_argument("--real", action="append", required=True, help="real data folder (repeat to combine)")
    e.add_argument("--samples-per-tag", type=positive(int), default=8)
    e.add_argument("--seed", type=seed_int, default=0)
    e.add_argument("--truncation", type=truncation, help="noise intensity in (0, 2] (default: the model's own)")
    e.add_argument("--pipeline", default="gan", choices=["gan", "gray-colorize"],
                   help="gan (default): a generator; gray-colorize: a `tagface pipeline train` run as --checkpoint")
    e.add_argument("--inception", help="pt_inception-2015-12-05 weights file for standard FID and KID")
    e.add_argument("--out", required=True, help="report folder")
    e.add_argument("--cache-dir")
    e.set_defaults(func=cmd_evaluate)

    sv = sub.add_parser("serve", help="the studio: a web page and JSON API for drawing faces")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    sv.add_argument("--checkpoint", help="run directory or .safetensors file (omitted or 'default': the shipped model)")
    sv.add_argument("--max-concurrent", type=positive(int), help="model calls at once (default: CPU cores, at most 4)")
    sv.add_argument("--queue", type=positive(int, allow_zero=True), default=8, help="requests that may wait for a model call; more get 503 (default 8)")
    sv.add_argument("--wait", type=positive(float, allow_zero=True), default=5.0, help="seconds a request may wait before a 503 (default 5)")
    sv.add_argument("--threads", type=positive(int), default=1, help="torch threads per model call (default 1)")
    sv.add_argument("--no-access-log", action="store_true", help="do not log each request")
    sv.set_defaults(func=cmd_serve)

    c = sub.add_parser("crop", help="cut anime faces out of pictures (lbpcascade_animeface) into a data folder")
    c.add_argument("pictures", nargs="+", help="picture files or folders (searched recursively)")
    c.add_argument("--out", required=True, help="data folder: faces/<id>.png, tags.csv (colours blank), crops.csv")
    c.add_argument("--cascade", help="lbpcascade_animeface.xml (default: $TAGFACE_CASCADE)")
    c.add_argument("--size", type=positive(int, at_most=1024), default=96, help="side of the written faces in px (default 96)")
    c.add_argument("--scale", type=float, default=1.0,
                   help="crop side / the detector's box side (default 1: the framing of the course data)")
    c.add_argument("--shift", type=float, default=0.0, help="raise the crop by this fraction of the face's height")
    c.add_argument("--min-size", type=positive(int), default=32, help="smallest face to find, in px (default 32)")
    c.add_argument("--neighbours", type=positive(int), default=5,
                   help="detections a face needs (default 5; more: fewer false faces, more missed)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing OUT/tags.csv")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_crop)

    x = sub.add_parser("export", help="export a generator: ONNX, or slim (fp16) safetensors")
    x.add_argument("--checkpoint", help="run directory or .safetensors file (omitted or 'default': the shipped model)")
    x.add_argument("--format", help="onnx (default) or safetensors (the generator alone; the only format of "
                   "--discriminator)")
    x.add_argument("--out", required=True, help="output file, e.g. g.onnx or g.safetensors")
    x.add_argument("--half", action="store_true", help="fp16 weights (safetensors only; half the size)")
    x.add_argument("--discriminator", action="store_true", help="write the run's D instead (safetensors; from a "
                   "training checkpoint), e.g. as NAME-discriminator.safetensors beside NAME.safetensors for --init")
    x.add_argument("--standing-stats", type=positive(int), default=0, metavar="BATCHES",
                   help="recompute G's BatchNorm statistics over this many generated batches of 64 first (e.g. 50)")
    x.add_argument("--standing-uniform", type=share, metavar="SHARE",
                   help="with --standing-stats: share of those batches' tags drawn evenly over every hair x eye pair, "
                   "the rest at the data's frequencies (default: the recipe's sample.standing_uniform, 0)")
    x.add_argument("--tag-guidance", type=positive(float, allow_zero=True), default=0.0, metavar="STRENGTH",
                   help="fold tag guidance into G: each tag's noise moved towards the noise a tagger reads as that tag "
                   "(e.g. 1; docs/ablations.md, \"Tag guidance\")")
    x.add_argument("--guidance-tagger", metavar="FILE", help="tagger that measures the guidance (default: the "
                   "shipped one, which then also judges `tagface evaluate`: use another to measure honestly)")
    x.add_argument("--guidance-per-pair", type=positive(int), default=120, metavar="N",
                   help="faces drawn per hair x eye pair to measure the guidance (default 120: 15,840 faces)")
    x.add_argument("--opset", type=positive(int), help="ONNX opset (default 17; 18 with --exporter dynamo)")
    x.add_argument("--exporter", default="torchscript", choices=["torchscript", "dynamo"],
                   help="torch.onnx exporter: torchscript (default, needs only onnx) or dynamo (needs onnxscript)")
    x.set_defaults(func=cmd_export)

    bn = sub.add_parser("bench", help="training, generation and data-loading speed, against a plain PyTorch loop")
    bn.add_argument("--recipes", help="comma-separated recipes (default: the four seed recipes)")
    bn.add_argument("--resolutions", type=_int_list, default=[64], help="comma-separated, e.g. 64,96 (default 64)")
    bn.add_argument("--steps", type=positive(int), default=4, help="timed training steps per measurement (default 4)")
    bn.add_argument("--warmup", type=int, default=1, help="untimed steps before each measurement (default 1)")
    bn.add_argument("--threads", type=positive(int), help="CPU threads for torch (default: torch's choice)")
    bn.add_argument("--data", action="append", help="real data folder (repeat to combine); default: synthetic data")
    bn.add_argument("--out", default="runs/bench", help="folder for bench.json and bench.md (default runs/bench)")
    bn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a value in every recipe")
    bn.add_argument("--ref-workers", type=int, default=0, help="DataLoader workers of the reference loop (default 0)")
    bn.add_argument("--gen-runs", type=positive(int), default=7, help="generation timings per size (default 7)")
    bn.add_argument("--data-batches", type=positive(int), default=20, help="batches timed for data loading (default 20)")
    bn.add_argument("--cache-dir", help="where decoded data is cached (default ~/.cache/tagface or $TAGFACE_CACHE)")
    bn.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: where the models run; on CUDA the "
                    "ceiling is the GPU's bf16 matrix product")
    bn.set_defaults(func=cmd_bench)

    r = sub.add_parser("recipes", help="list the seed recipes")
    r.set_defaults(func=cmd_recipes)
    add_translate_commands(sub)
    add_pipeline_commands(sub)
    return p


def add_translate_commands(sub) -> None:
    """The `tagface translate` parser with its `train` and `run` subcommands."""
    tl = sub.add_parser("translate", help="unpaired image-to-image translation between two folders (CycleGAN)")
    tsub = tl.add_subparsers(dest="translate_command", required=True)

    t = tsub.add_parser("train", help="train a CycleGAN between the images of two folders")
    t.add_argument("--a", help="folder of domain A images (searched recursively; no tags needed)")
    t.add_argument("--b", help="folder of domain B images")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--steps", type=positive(int), help="train until this step (default 2000)")
    t.add_argument("--resolution", type=positive(int), help="image side, a multiple of 4 (default 64)")
    t.add_argument("--batch-size", type=positive(int), help="images per domain per step (default 4)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--seed", type=seed_int, help="seed of weights, data order and augmentation (default 0)")
    t.add_argument("--threads", type=positive(int), help="CPU threads for torch")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    t.add_argument("--cache-dir", help="where decoded images are cached (default ~/.cache/tagface or $TAGFACE_CACHE)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    h = t.add_argument_group("model and loss (defaults: the paper's, networks sized for a CPU)")
    h.add_argument("--g-channels", type=positive(int), help="generator base channels (default 32)")
    h.add_argument("--g-blocks", type=positive(int), help="generator residual blocks (default 6)")
    h.add_argument("--d-channels", type=positive(int), help="discriminator base channels (default 64)")
    h.add_argument("--d-layers", type=positive(int), help="discriminator feature layers (default 3: C64-C128-C256)")
    h.add_argument("--cycle-weight", type=float, help="weight of the L1 cycle loss (default 10)")
    h.add_argument("--identity", type=float, help="identity-loss weight as a fraction of the cycle weight "
                   "(default 0.5; 0 turns it off)")
    h.add_argument("--pool-size", type=int, help="fakes remembered per direction for D (default 50)")
    h.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4, betas 0.5, 0.999)")
    h.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    h.add_argument("--log-every", type=positive(int), help="steps between metrics rows (default 10)")
    h.add_argument("--sample-every", type=positive(int), help="steps between sample grids (default 250)")
    h.add_argument("--checkpoint-every", type=positive(int), help="steps between checkpoints (default 250)")
    t.set_defaults(func=lazy("translate", "cmd_translate_train"), saves_on_interrupt=True)

    r = tsub.add_parser("run", help="translate images with a trained run")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--checkpoint", required=True, help="run directory, translator.safetensors or checkpoint file")
    r.add_argument("--out", required=True, help="folder for the translated images (OUT/<stem>.png)")
    r.add_argument("--direction", choices=("a2b", "b2a"), default="a2b", help="a2b (default) or b2a")
    r.add_argument("--device", default="cpu")
    r.set_defaults(func=lazy("translate", "cmd_translate_run"))

    e = tsub.add_parser("evaluate", help="how close translations are to the other folder, and whether the tagger's "
                        "hair/eye colours survive")
    e.add_argument("--checkpoint", required=True, help="run directory, translator.safetensors or checkpoint file")
    e.add_argument("--a", help="domain A folder (default: the one the run was trained on)")
    e.add_argument("--b", help="domain B folder (default: the one the run was trained on)")
    e.add_argument("--out", required=True, help="report folder (report.json, report.md)")
    e.add_argument("--n", type=positive(int), default=1000, help="images per set (default 1000)")
    e.add_argument("--tagger", help="tagger file (default: the shipped one)")
    e.add_argument("--seed", type=seed_int, default=0)
    e.add_argument("--cache-dir")
    e.set_defaults(func=lazy("translate", "cmd_translate_evaluate"))


def add_pipeline_commands(sub) -> None:
    """`tagface pipeline train|colorize` (the generate command's --pipeline option is in cli.py)."""
    pl = sub.add_parser("pipeline", help="report 000's two stages: gray face generator + tag colorizer")
    psub = pl.add_subparsers(dest="pipeline_command", required=True)

    t = psub.add_parser("train", help="train the gray generator and the colorizer (alternating steps)")
    t.add_argument("--data", action="append", help="data folder with tags.csv (repeat to combine folders)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--steps", type=positive(int), help="train until this step (default: the config's steps, 3000)")
    t.add_argument("--colorizer-loss", help="mse | l1 | gan (default mse)")
    t.add_argument("--resolution", type=int, help="face size in px, a multiple of 16 (default 64)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. colorizer.channels=16 or batch_size=32")
    t.add_argument("--threads", type=positive(int), help="CPU threads for torch")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    t.add_argument("--cache-dir", help="where decoded data is cached (default ~/.cache/tagface or $TAGFACE_CACHE)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=lazy("colorize", "cmd_pipeline_train"), saves_on_interrupt=True)

    c = psub.add_parser("colorize", help="colour face images (converted to gray) for the given tags")
    c.add_argument("images", nargs="+", help="image files; each is written as OUT/<stem>.png")
    c.add_argument("--checkpoint", required=True, help="pipeline run directory or pipeline.safetensors")
    c.add_argument("--tags", required=True, help="e.g. \"blue hair red eyes\"; a missing colour is sampled")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--seed", type=seed_int, default=0, help="seed for sampling a missing colour")
    c.add_argument("--device", default="cpu")
    c.set_defaults(func=lazy("colorize", "cmd_pipeline_colorize"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"tagface: warning: {msg}\n"
    try:
        return args.func(args)
    except TagfaceError as err:
        print(f"tagface: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        saved = "; checkpoint saved" if getattr(args, "saves_on_interrupt", False) else ""
        print(f"tagface: interrupted{saved}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:  # a file or folder the command cannot read or write (permissions, a full disk)
        where = f"{err.filename}: " if err.filename else ""
        reason = err.strerror or err
        if isinstance(err, FileExistsError) and err.filename and Path(err.filename).is_file():  # mkdir on a file
            reason = "is a file where a folder is needed; choose another path"
        print(f"tagface: error: {where}{reason}", file=sys.stderr)
        return 2
