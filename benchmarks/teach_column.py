"""Gray eyes after training: set the shipped model's "gray eyes" input column from a tagger that can read them.

mlds has no gray eyes, so the column of G's first layer that reads "gray eyes" never had a gradient, and the
shipped model draws some other eye colour for it (docs/model-card.md). This experiment tunes that column alone,
everything else frozen, so every other tag draws the same faces bit for bit (G runs in eval mode, and the column
multiplies a 0 for every other tag): textual inversion (Gal et al., 2022) for a one-hot tag. The column is a blend
of the trained eye columns (softmax weights, starting at the data's frequencies), plus with --free a part of
bounded norm that may leave their span. A teacher tagger that reads gray eyes (`tagface tagger train --balance 1`
on mlds + adl) pulls the faces towards the colour and keeps the hair as asked; the shipped D's realness score and,
with --matching, the teacher's mean features of adl's real gray-eyed faces are to keep them real.

Graded afterwards, on the same noise before and after (32 faces per hair colour):
* how often a judge (a second balanced tagger, another seed) reads gray eyes, and the hair as asked;
* realism: the sliced Wasserstein distance (64 / 32 / 16 px, no network) from those faces to as many real mlds
  faces, and the same for the model's ordinary faces (the same noise and hair, eye colours drawn at the data's
  frequencies). Not a Frechet distance in a tagger's features: those are eye colour first, and no real face in
  mlds has gray eyes (adl's gray-eyed faces are another style, which such a distance would measure first);
* the judge's own recall and false alarms for gray eyes on its held-out real faces;
and a picture: 8 faces per hair colour before, then the same 8 after, two per row.

    python benchmarks/teach_column.py --teacher T.safetensors --judge J.safetensors --judge-seed 2 --out runs/teach/X \
        [--free 0.6] [--matching 0.2] [--adversarial 0.5] [--steps 300] [--tag "gray eyes"]
    python benchmarks/teach_column.py --judge J.safetensors --judge-seed 2 --checkpoint G.safetensors --grade-only \
        --out runs/gray/X             # grade G's gray eyes as they are, e.g. a model trained on gray-eyed faces

Results: docs/ablations.md, "Gray eyes after training". Not shipped: no setting was both read as gray and clean.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from tagface.checkpoint import load_tensors, load_weights
from tagface.data import load_datasets, to_uint8
from tagface.errors import TagfaceError
from tagface.evaluation import sliced_wasserstein
from tagface.export import discriminator_path
from tagface.guidance import tag_input_layer
from tagface.images import image_grid, save_pil
from tagface.losses import GANObjective, Labels
from tagface.models import build_discriminator
from tagface.sampling import FaceGenerator
from tagface.tagger import load_tagger, predict_logits
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, TagFrequencies, parse_tags
from tagger_heldout_colour import heldout_reading  # beside this script


@dataclass
class TeachSettings:
    steps: int = 300
    batch_size: int = 48
    lr: float = 0.05
    adversarial: float = 0.5   # weight of the frozen D's realness term against the tagger's two terms
    free: float = 0.0          # norm of a free part added to the blend, as a share of the largest trained column
    matching: float = 0.0      # weight of matching the teacher's mean features of real faces of the tag
    seed: int = 0


def parse_one_tag(text: str) -> tuple[str, int]:
    """'gray eyes' -> ('eyes', colour index); exactly one colour of one kind."""
    try:
        tags = parse_tags(text)
    except TagfaceError as err:
        raise TagfaceError(f"teach '{text}': {err}") from None
    if (tags.hair is None) == (tags.eyes is None):
        raise TagfaceError(f"teach '{text}': name one colour of one kind, e.g. 'gray eyes' or 'white hair'")
    return ("hair", HAIR_COLOURS.index(tags.hair)) if tags.hair else ("eyes", EYE_COLOURS.index(tags.eyes))


def tag_name(kind: str, colour: int) -> str:
    return f"{(HAIR_COLOURS if kind == 'hair' else EYE_COLOURS)[colour]} {kind}"


def load_discriminator(path: str | Path, recipe) -> nn.Module:
    """A D file written beside a generator (tagface export --discriminator), frozen, in eval mode."""
    objective = GANObjective(recipe.loss)
    cond = objective.conditioning
    D = build_discriminator(recipe.model, recipe.train.resolution, cond.reads_labels, cond.heads)
    try:
        load_weights(D, {k: v.float() if v.is_floating_point() else v for k, v in load_tensors(path).items()})
    except RuntimeError:
        raise TagfaceError(f"--discriminator {path}: does not fit the generator's recipe") from None
    D.reads_labels = cond.reads_labels
    D.adv_gen = objective.adv.gen
    return D.eval().requires_grad_(False)


def _labels(kind: str, colour: int, freq: TagFrequencies, n: int, g: torch.Generator) -> Labels:
    """n tag sets with the taught colour, the other kind drawn from the training frequencies."""
    other = torch.tensor(freq.eyes if kind == "hair" else freq.hair, dtype=torch.double)
    drawn = torch.multinomial(other, n, True, generator=g)
    fixed = torch.full((n,), colour, dtype=torch.long)
    return Labels(fixed, drawn) if kind == "hair" else Labels(drawn, fixed)


@torch.no_grad()
def read_rate(G: nn.Module, tagger: nn.Module, kind: str, colour: int, z: torch.Tensor, labels: Labels) -> dict:
    """How often `tagger` reads the taught colour, and the other kind as asked, on faces G draws for z."""
    logits = tagger(tagger.prepare(G(z, labels.onehot)))
    taught = logits[:, :N_HAIR] if kind == "hair" else logits[:, N_HAIR:]
    other, asked = (logits[:, N_HAIR:], labels.eyes) if kind == "hair" else (logits[:, :N_HAIR], labels.hair)
    return {"taught": (taught.argmax(1) == colour).float().mean().item(),
            "other": (other.argmax(1) == asked).float().mean().item()}


def teach_tag(G: nn.Module, tag: str, tagger: nn.Module, D: nn.Module | None, freq: TagFrequencies,
              settings: TeachSettings = TeachSettings(), progress: bool = False,
              real: torch.Tensor | None = None) -> dict:
    """Set G's input column for `tag` (e.g. 'gray eyes') in place, to a blend of the trained columns of its kind
    (plus, with settings.free > 0, a small free part): a blend of inputs G was trained on draws faces G knows how
    to draw, where a free column draws smears that fool the tagger (docs/ablations.md, "Gray eyes after training").
    The blend starts at the data's frequencies. Returns what was done, the blend, and the tagger's read rates
    before and after on held-aside noise."""
    from tqdm import tqdm

    kind, colour = parse_one_tag(tag)
    layer = tag_input_layer(G, "teach")
    z_dim = layer.in_features - len(HAIR_COLOURS) - len(EYE_COLOURS)
    first, share = (z_dim, freq.hair) if kind == "hair" else (z_dim + N_HAIR, freq.eyes)
    if share[colour] > 0:
        raise TagfaceError(f"teach '{tag}': this model's training data has it ({share[colour]:.1%} of the faces); "
                           "teach is for a colour the data lacked")
    known = [c for c, f in enumerate(share) if f > 0]
    name = next(n for n, p in G.named_parameters() if p is layer.weight)
    G.eval().requires_grad_(False)
    tagger.eval().requires_grad_(False)
    weight = layer.weight.detach().float()
    basis = weight[:, [first + c for c in known]]
    max_norm = basis.norm(dim=0).max().item()
    blend = nn.Parameter(torch.tensor([share[c] for c in known]).log())
    free = nn.Parameter(torch.zeros(weight.shape[0]))
    groups = [{"params": [blend]}]  # Adam moves each number about lr a step: logits by 0.05, column entries of
    if settings.free > 0:          # about 0.06 each (the trained columns) by lr / 25
        groups.append({"params": [free], "lr": settings.lr / 25})
    opt = torch.optim.Adam(groups, lr=settings.lr)

    def column() -> torch.Tensor:
        return basis @ blend.softmax(0) + free

    g = torch.Generator().manual_seed(settings.seed)
    z_check = torch.randn(256, z_dim, generator=torch.Generator().manual_seed(settings.seed + 1))
    check = _labels(kind, colour, freq, 256, torch.Generator().manual_seed(settings.seed + 2))
    before = read_rate(G, tagger, kind, colour, z_check, check)
    target = torch.full((settings.batch_size,), colour, dtype=torch.long)
    index = torch.tensor([first + colour])
    if real is not None:
        with torch.no_grad():
            real_mean = torch.cat([tagger.features(real[i:i + 256]) for i in range(0, len(real), 256)]).mean(0)
    losses = []
    for _ in tqdm(range(settings.steps), disable=not progress, unit="step"):
        labels = _labels(kind, colour, freq, settings.batch_size, g)
        z = torch.randn(settings.batch_size, z_dim, generator=g)
        fake = functional_call(G, {name: weight.index_copy(1, index, column()[:, None])}, (z, labels.onehot))
        x = tagger.prepare(fake)
        logits = tagger(x)
        taught, other = (logits[:, :N_HAIR], logits[:, N_HAIR:]) if kind == "hair" else \
            (logits[:, N_HAIR:], logits[:, :N_HAIR])
        asked = labels.eyes if kind == "hair" else labels.hair
        loss = F.cross_entropy(taught, target) + F.cross_entropy(other, asked)
        if real is not None and settings.matching:
            loss = loss + settings.matching * (tagger.features(x).mean(0) - real_mean).pow(2).sum()
        if D is not None and settings.adversarial:
            loss = loss + settings.adversarial * D.adv_gen(D(fake, labels.onehot if D.reads_labels else None).adv)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            free.mul_((settings.free * max_norm / free.norm().clamp(min=1e-12)).clamp(max=1.0))
        losses.append(loss.item())
    with torch.no_grad():
        layer.weight[:, first + colour] = column().to(layer.weight.dtype)
    after = read_rate(G, tagger, kind, colour, z_check, check)
    names = HAIR_COLOURS if kind == "hair" else EYE_COLOURS
    weights = sorted(zip(blend.softmax(0).tolist(), (names[c] for c in known)), reverse=True)
    return {"tag": tag_name(kind, colour), **asdict(settings), "with_discriminator": D is not None,
            "blend": {n: round(w, 3) for w, n in weights if w >= 0.01}, "free_norm": round(free.norm().item(), 3),
            "read_before": before, "read_after": after, "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4)}


def grade(G: nn.Module, judge: nn.Module, kind: str, colour: int, z: torch.Tensor, other: torch.Tensor,
          real: torch.Tensor) -> dict:
    """The judge's readings and the sliced Wasserstein distance to real faces, for the faces G draws for the tag."""
    fixed = torch.full_like(other, colour)
    labels = Labels(fixed, other) if kind == "hair" else Labels(other, fixed)
    with torch.no_grad():
        images = to_uint8(G(z, labels.onehot))
    lg = predict_logits(judge, images)
    taught = (lg[:, :N_HAIR] if kind == "hair" else lg[:, N_HAIR:]).argmax(1)
    asked = (lg[:, N_HAIR:] if kind == "hair" else lg[:, :N_HAIR]).argmax(1)
    return {"judge_reads_tag": round(float((taught == colour).float().mean()), 3),
            "judge_reads_other_as_asked": round(float((asked == other).float().mean()), 3),
            "swd_to_real": {k: round(v, 1) for k, v in sliced_wasserstein(images, real).items()},
            "images": images}


def _write(out: str, report: dict, picture) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_pil(picture, f"{out}.png")  # not with_suffix: "free0.6" is a name
    Path(f"{out}.json").write_text(json.dumps(report, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", help="a tagger that reads the colour (tagger train --balance 1)")
    ap.add_argument("--judge", required=True, help="a second such tagger, another seed: it grades")
    ap.add_argument("--judge-seed", type=int, required=True, help="the seed the judge was trained with (its split)")
    ap.add_argument("--out", required=True, help="prefix: OUT.json, OUT.png")
    ap.add_argument("--tag", default="gray eyes")
    ap.add_argument("--data", action="append", help="the data the taggers learnt (default: mlds + adl)")
    ap.add_argument("--real", default="../shared/data/mlds2018-extra", help="real faces for the realism distance")
    ap.add_argument("--checkpoint", help="generator file (default: the shipped model, with its D beside it)")
    ap.add_argument("--no-discriminator", action="store_true")
    ap.add_argument("--grade-only", action="store_true",
                    help="grade the generator's column as it is, e.g. a model trained on faces with the tag")
    ap.add_argument("--per-colour", type=int, default=32)
    for name, value in asdict(TeachSettings()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args()
    if not args.grade_only and not args.teacher:
        ap.error("--teacher is required, except with --grade-only")
    torch.set_num_threads(2)
    data = args.data or ["../shared/data/mlds2018-extra", "../shared/data/adl2017-faces"]
    settings = TeachSettings(**{k: getattr(args, k) for k in asdict(TeachSettings())})
    kind, colour = parse_one_tag(args.tag)
    gen = FaceGenerator.load(args.checkpoint)
    d_file = discriminator_path(gen.source)
    teaching_d = not (args.grade_only or args.no_discriminator) and d_file.is_file()
    D = load_discriminator(d_file, gen.recipe) if teaching_d else None
    judge = load_tagger(args.judge)
    faces = load_datasets(data, gen.resolution, None)
    of_tag = (faces.hair if kind == "hair" else faces.eyes) == colour
    real = faces.images[of_tag]
    report = {"settings": asdict(settings), "teacher": args.teacher, "judge": args.judge,
              "real_faces_of_tag": int(of_tag.sum())}
    report["judge_heldout"] = heldout_reading(judge, faces, args.judge_seed, kind, colour)
    others = len(EYE_COLOURS) if kind == "hair" else len(HAIR_COLOURS)
    other = torch.arange(others).repeat_interleave(args.per_colour)
    z = torch.randn(other.numel(), gen.z_dim, generator=torch.Generator().manual_seed(settings.seed + 3))
    mlds = load_datasets([args.real], gen.resolution, None).images
    mlds = mlds[torch.randperm(len(mlds), generator=torch.Generator().manual_seed(0))[:other.numel()]]
    share = torch.tensor(gen.freq.eyes if kind == "eyes" else gen.freq.hair, dtype=torch.double)
    drawn = torch.multinomial(share, other.numel(), True, generator=torch.Generator().manual_seed(1))
    ordinary = Labels(other, drawn) if kind == "eyes" else Labels(drawn, other)
    with torch.no_grad():
        ordinary_faces = to_uint8(gen.G(z, ordinary.onehot))
    report["swd_ordinary_faces"] = {k: round(v, 1) for k, v in sliced_wasserstein(ordinary_faces, mlds).items()}
    before = grade(gen.G, judge, kind, colour, z, other, mlds)
    if args.grade_only:
        images = before.pop("images").view(others, args.per_colour, 3, gen.resolution, gen.resolution)[:, :16]
        _write(args.out, report | {"before": before}, image_grid(images.flatten(0, 1), 16))
        print(json.dumps({k: report[k] for k in ("judge_heldout", "swd_ordinary_faces")} | {"graded": before}))
        return
    t0 = time.perf_counter()
    teacher = load_tagger(args.teacher)
    report["taught"] = teach_tag(gen.G, args.tag, teacher, D, gen.freq, settings, progress=True, real=real)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    after = grade(gen.G, judge, kind, colour, z, other, mlds)
    shape = (others, args.per_colour, 3, gen.resolution, gen.resolution)  # the faces come colour by colour
    rows = torch.cat([before.pop("images").view(shape)[:, :8], after.pop("images").view(shape)[:, :8]], 1)
    report["before"], report["after"] = before, after
    _write(args.out, report, image_grid(rows.flatten(0, 1), 16))
    print(json.dumps({k: report[k] for k in ("judge_heldout", "swd_ordinary_faces", "before", "after")}
                     | {"blend": report["taught"]["blend"], "teacher_after": report["taught"]["read_after"]}))


if __name__ == "__main__":
    main()
