"""What `tagface generate --strict-tags` buys and costs, read by `tagface evaluate`'s measures.

--strict-tags draws a face again while a tagger misreads it (strict.RedrawMisread, by seed, for one tag pair
at a time). `evaluate` asks for every pair at once, so this script applies the same rule to its faces: each face
the picker misreads gets new noise, up to DRAWS draws, else the draw the picker read closest. Graded twice: by
the judge (the shipped tagger, which is also --strict-tags' default picker, so its accuracy is self-graded) and by
a second tagger that picked nothing (`--grader`, e.g. one trained with another seed), whose features also give a
Frechet distance the picking did not look at (docs/ablations.md, "Strict tags").

    python benchmarks/strict_tags.py --grader runs/tagger-indep.safetensors --seed 0 [--draws 8] [--data DIR]
"""
from __future__ import annotations

import argparse
import json

import torch

from tagface.data import load_folder
from tagface.evaluation import evaluate
from tagface.losses import Labels
from tagface.sampling import FaceGenerator
from tagface.strict import redraw_until_read
from tagface.tagger import load_tagger, predict_logits


class StrictDraw:
    """gen.draw with every misread face drawn again from fresh noise (seeded), by the rule --strict-tags uses
    (strict.redraw_until_read), for evaluate's mixed tags."""

    def __init__(self, gen: FaceGenerator, picker, draws: int, seed: int):
        self.gen, self.picker, self.draws, self.seed = gen, picker, draws, seed
        self.redrawn = self.left = 0

    def __getattr__(self, name: str):
        if name == "gen":
            raise AttributeError(name)
        return getattr(self.gen, name)

    def draw(self, z: torch.Tensor, labels: Labels) -> torch.Tensor:
        fresh = torch.Generator().manual_seed(self.seed + 1_000_003 + z.shape[0])  # the grid and the matched set differ
        scale = self.gen.recipe.sample.truncation_or_default(None)  # evaluate draws at the default truncation
        checked = (torch.tensor(self.gen.freq.hair)[labels.hair] > 0, torch.tensor(self.gen.freq.eyes)[labels.eyes] > 0)
        faces, _, misread, still = redraw_until_read(
            lambda k, rows: self.gen.draw((z if k == 0 else torch.randn(z.shape, generator=fresh) * scale)[rows],
                                          Labels(labels.hair[rows], labels.eyes[rows])),
            lambda images: predict_logits(self.picker, torch.as_tensor(images)).numpy(),
            labels.hair.numpy(), labels.eyes.numpy(), (checked[0].numpy(), checked[1].numpy()), self.draws)
        self.redrawn, self.left = self.redrawn + int(misread.sum()), self.left + int(still.sum())
        return torch.from_numpy(faces)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grader", required=True, help="a tagger that did not pick (e.g. runs/tagger-indep.safetensors)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--data", default="../shared/data/mlds2018-extra")
    ap.add_argument("--generator", help="default: the shipped one")
    args = ap.parse_args()
    gen, judge, grader = FaceGenerator.load(args.generator), load_tagger(None), load_tagger(args.grader)
    real = load_folder(args.data, gen.resolution, verbose=False)
    rows = {}
    for name, draws in (("plain", 1), (f"strict {args.draws}", args.draws)):
        for grade_name, tagger in (("judge", judge), ("grader", grader)):
            strict = StrictDraw(gen, judge, draws, args.seed)
            r = evaluate(strict, tagger, real, samples_per_tag=8, seed=args.seed)
            rows[f"{name}, graded by {grade_name}"] = {
                "hair": r["generated"]["hair"], "eyes": r["generated"]["eyes"], "both": r["generated"]["both"],
                "white_gray_black_hair": [round(r["generated"]["per_hair"][c], 3) for c in ("white", "gray", "black")],
                "grid_ratio": r["frechet_tagger"]["ratio"], "matched_ratio": r["matched"]["frechet_ratio"],
                "pairs_below_0.8": len(r["diversity_ratio"]["pairs_below_0.8"]),
                "per_tag_diversity_min": r["matched"]["diversity_ratio_min"],
                "swd_64_32_16": [round(v, 1) for v in r["swd"]["generated_vs_real"].values()],
                "redrawn": strict.redrawn, "still_misread": strict.left}
            print(json.dumps({f"{name}, graded by {grade_name}": rows[f"{name}, graded by {grade_name}"]}), flush=True)


if __name__ == "__main__":
    main()
