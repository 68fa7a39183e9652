"""The judge's Frechet distance on larger sets than `tagface evaluate` uses, to tell small differences from noise
(docs/ablations.md, "Past step 12050").

Real half A (N faces) against: real half B; faces drawn with half B's tags (the matched set); faces drawn for every
hair x eye pair equally (the grid, 45 per pair). Seeds are fixed, so generators are compared on the same noise.
The real-vs-real distance shrinks as N grows, so the ratios here are not the evaluation's (1,056 / 1,798 faces).

    python benchmarks/frechet_large.py [--n 6000] [--data DIR] GENERATOR ...
"""
from __future__ import annotations

import argparse
import sys

import torch

from tagface.data import load_folder
from tagface.errors import TagfaceError
from tagface.evaluation import feature_stats, frechet_distance
from tagface.losses import Labels
from tagface.sampling import FaceGenerator
from tagface.tagger import extract_features, load_tagger
from tagface.tags import N_EYES, N_HAIR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("generators", nargs="+")
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--data", default="../shared/data/mlds2018-extra")
    args = ap.parse_args()
    judge, real = load_tagger(None), load_folder(args.data, 64, verbose=False)
    if not 2 <= args.n <= len(real) // 2:
        raise TagfaceError(f"--n {args.n}: allowed 2 to {len(real) // 2} (half of the {len(real)} faces in {args.data})")
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    a, b = perm[:args.n], perm[args.n:2 * args.n]
    stats_a = feature_stats(extract_features(judge, real.images[a]))
    real_real = frechet_distance(*feature_stats(extract_features(judge, real.images[b])), *stats_a)
    grid = Labels(torch.arange(N_HAIR).repeat_interleave(N_EYES * 45), torch.arange(N_EYES).repeat_interleave(45).repeat(N_HAIR))
    print(f"real vs real {real_real:.3f} ({args.n} faces per set)")
    for path in args.generators:
        gen = FaceGenerator.load(path)
        matched = extract_features(judge, gen.draw(gen.noise(args.n, 11), Labels(real.hair[b], real.eyes[b])))
        fd_matched = frechet_distance(*feature_stats(matched), *stats_a)
        fd_grid = frechet_distance(*feature_stats(extract_features(judge, gen.draw(gen.noise(grid.hair.numel(), 12), grid))), *stats_a)
        print(f"{gen.source} (step {gen.step}): matched {fd_matched:.3f} ({fd_matched / real_real:.2f}x), grid {fd_grid:.3f}")


if __name__ == "__main__":
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"frechet_large: error: {err}")
