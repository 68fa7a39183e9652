"""Where is a generator's Frechet distance? The judge's distance within each hair and eye colour: real half A's
faces of that colour against real half B's, and against faces drawn with half B's tags (docs/ablations.md,
"Past step 15800"). Halves of all the data, so each colour has hundreds of faces; colours with fewer than --min
faces in a half are skipped.

    python benchmarks/per_tag_frechet.py [--data DIR] [--min 300] [--sheet OUT.jpg] [GENERATOR]   # default: the shipped one

--sheet writes, for the three hair colours farthest from real, a row of 12 real faces of that colour and below it
the generator's faces for the same tags.
"""
from __future__ import annotations

import argparse
import sys

import torch

from tagface.data import load_folder
from tagface.errors import TagfaceError
from tagface.evaluation import feature_stats, frechet_distance
from tagface.images import image_grid
from tagface.losses import Labels
from tagface.sampling import FaceGenerator
from tagface.tagger import extract_features, load_tagger
from tagface.tags import EYE_COLOURS, HAIR_COLOURS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("generator", nargs="?")
    ap.add_argument("--data", default="../shared/data/mlds2018-extra")
    ap.add_argument("--min", type=int, default=300)
    ap.add_argument("--sheet")
    args = ap.parse_args()
    gen, judge, real = FaceGenerator.load(args.generator), load_tagger(None), load_folder(args.data, 64, verbose=False)
    n = len(real) // 2
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    a, b = perm[:n], perm[n:2 * n]
    fa, fb = extract_features(judge, real.images[a]), extract_features(judge, real.images[b])
    fg = extract_features(judge, gen.draw(gen.noise(n, 11), Labels(real.hair[b], real.eyes[b])))
    print(f"{gen.source} (step {gen.step}), {n} faces per set: real vs real "
          f"{frechet_distance(*feature_stats(fb), *feature_stats(fa)):.3f}, generated vs real "
          f"{frechet_distance(*feature_stats(fg), *feature_stats(fa)):.3f}")
    print("| tag | faces | real vs real | generated vs real |\n| --- | ---: | ---: | ---: |")
    worst_hair = []
    for kind, la, lb, names in (("hair", real.hair[a], real.hair[b], HAIR_COLOURS),
                                ("eyes", real.eyes[a], real.eyes[b], EYE_COLOURS)):
        for c, name in enumerate(names):
            ina, inb = la == c, lb == c
            if min(int(ina.sum()), int(inb.sum())) < args.min:
                continue
            stats_a = feature_stats(fa[ina])
            fd = frechet_distance(*feature_stats(fg[inb]), *stats_a)
            print(f"| {name} {kind} | {int(inb.sum())} | {frechet_distance(*feature_stats(fb[inb]), *stats_a):.2f} | "
                  f"{fd:.2f} |")
            if kind == "hair":
                worst_hair.append((fd, c))
    if args.sheet:
        rows = []
        for _, c in sorted(worst_hair, reverse=True)[:3]:
            idx = b[real.hair[b] == c][:12]
            rows += [real.images[idx], gen.draw(gen.noise(len(idx), 5), Labels(real.hair[idx], real.eyes[idx]))]
        image_grid(torch.cat(rows), 12).save(args.sheet, quality=90)  # quality: for a .jpg sheet


if __name__ == "__main__":
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"per_tag_frechet: error: {err}")
