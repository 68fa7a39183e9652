"""The `tagface` command line: train, generate, recipes. Bad input ends in one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import TagfaceError


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def cmd_recipes(args) -> int:
    from .config import list_recipes, load_recipe
    for name in list_recipes():
        print(f"{name:24s} {load_recipe(name).description}")
    return 0


def cmd_train(args) -> int:
    import torch

    from .config import load_recipe
    from .data import load_datasets
    from .training import Trainer

    out = Path(args.out)
    if args.resume:
        if not (out / "config.yaml").exists():
            raise TagfaceError(f"--resume: {out} has no config.yaml from an earlier run")
        recipe = load_recipe(out / "config.yaml", args.set)
        data_paths = args.data or json.loads((out / "run.json").read_text())["data"]
    else:
        if not args.config:
            raise TagfaceError("--config is required (a YAML file or a seed recipe name; see `tagface recipes`)")
        if (out / "checkpoint.safetensors").exists():
            raise TagfaceError(f"{out} already holds a checkpoint; pass --resume to continue it or choose another --out")
        if not args.data:
            raise TagfaceError("--data is required: a folder with tags.csv and images (repeat for several)")
        recipe, data_paths = load_recipe(args.config, args.set), args.data
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    data = load_datasets(data_paths, recipe.train.resolution, args.cache_dir)
    trainer = Trainer(recipe, data, out, device=device, data_paths=data_paths, progress=not args.no_progress)
    if args.resume:
        trainer.resume()
    steps = args.steps or recipe.train.steps
    print(f"tagface: training {recipe.name} on {len(data)} faces at {recipe.train.resolution}px, "
          f"step {trainer.step} -> {steps}, device {device}, out {out}", file=sys.stderr)
    logs = trainer.fit(steps)
    print(f"tagface: done at step {trainer.step}: {logs.get('img_per_s', 0):.1f} img/s; "
          f"generator at {out / 'generator.safetensors'}", file=sys.stderr)
    return 0


def _device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TagfaceError(f"--device {name}: CUDA is not available here; use --device cpu")
    return name


def cmd_generate(args) -> int:
    from .sampling import FaceGenerator, image_grid, read_tags_file, save_pil, tag_grid, write_course_samples
    from .tags import parse_tags

    given = [bool(args.tags), bool(args.tags_file), args.tag_grid]
    if sum(given) != 1:
        raise TagfaceError("give exactly one of: TAGS (e.g. \"blue hair red eyes\"), --tags-file FILE, --tag-grid")
    gen = FaceGenerator.load(args.checkpoint, device=_device(args.device))
    if args.tags_file:
        written = write_course_samples(gen, read_tags_file(args.tags_file), args.out, args.n, args.seed, args.truncation)
        print(f"tagface: wrote {len(written)} images to {args.out}", file=sys.stderr)
        return 0
    if args.tag_grid:
        save_pil(image_grid(tag_grid(gen, args.seed, args.truncation), ncol=11), args.out)
        print(f"tagface: wrote the 12 x 11 hair x eye grid to {args.out}", file=sys.stderr)
        return 0
    tags, notes = gen.complete(parse_tags(args.tags), args.seed)
    for note in notes:
        print(f"tagface: {note}", file=sys.stderr)
    images = gen.generate(tags, args.n, seed=args.seed, truncation=args.truncation)
    save_pil(image_grid(images, ncol=args.ncol or min(args.n, 8)), args.out)
    print(f"tagface: wrote {args.n} faces ({tags}, seed {args.seed}) to {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tagface", description="Anime faces from tags such as 'blue hair red eyes'.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a conditional GAN from a recipe")
    t.add_argument("--config", help="recipe YAML file or seed recipe name (see `tagface recipes`)")
    t.add_argument("--data", action="append", help="data folder with tags.csv (repeat to combine folders)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--steps", type=_positive(int), help="train until this step (default: the recipe's train.steps)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    t.add_argument("--threads", type=_positive(int), help="CPU threads for torch")
    t.add_argument("--cache-dir", help="where decoded data is cached (default ~/.cache/tagface or $TAGFACE_CACHE)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="draw faces for tags")
    g.add_argument("tags", nargs="?", help="e.g. \"blue hair red eyes\"; a missing colour is sampled")
    g.add_argument("-n", type=_positive(int), default=16, help="faces per tag line (default 16)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="grid.png", help="image file, or folder with --tags-file")
    g.add_argument("--checkpoint", help="run directory or .safetensors file (default: the shipped model)")
    g.add_argument("--truncation", type=float, help="noise intensity in (0, 2]; lower: safer, less varied")
    g.add_argument("--tags-file", help="course format: lines '<id>,<tags>' -> OUT/sample_<id>_<k>.jpg")
    g.add_argument("--tag-grid", action="store_true", help="the 12 x 11 hair x eye grid")
    g.add_argument("--ncol", type=_positive(int), help="grid columns")
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("recipes", help="list the seed recipes")
    r.set_defaults(func=cmd_recipes)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"tagface: warning: {msg}\n"
    try:
        return args.func(args)
    except TagfaceError as err:
        print(f"tagface: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tagface: interrupted" + ("; checkpoint saved" if args.command == "train" else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
