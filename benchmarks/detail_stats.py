"""Where generated faces differ from real ones in fine detail, and how far they are in a frozen tagger's feature
statistics: the numbers behind docs/evaluation.md (sliced Wasserstein section) and docs/ablations.md
("Past step 10300").

For real mlds faces and each generator (512 faces, tags of real faces, seed 0): the standard deviation of each
Laplacian band (64 / 32 / 16 px), the mean |FFT| of the gray image at the Nyquist frequency (the checkerboard of
transposed convolutions), and with --tagger the squared distance of the tagger's feature mean and covariance from
those of all training faces (what loss.feature_matching drives down; 4,096 faces).

    python benchmarks/detail_stats.py [--data DIR] [--tagger T.safetensors] [GENERATOR ...]   # none: the shipped one
"""
from __future__ import annotations

import argparse
import sys

import torch

from tagface.data import load_folder, to_float
from tagface.errors import TagfaceError
from tagface.evaluation import laplacian_pyramid
from tagface.losses import Labels, feature_stats_torch
from tagface.sampling import FaceGenerator
from tagface.tagger import load_tagger
from tagface.training import real_feature_stats


def detail(images: torch.Tensor) -> str:
    x = to_float(images)
    bands = " / ".join(f"{b.std().item():.4f}" for b in laplacian_pyramid(x, 3))
    nyquist = torch.fft.fft2(x.mean(1)).abs().mean(0)[x.shape[-2] // 2, x.shape[-1] // 2].item()
    return f"band std {bands}; Nyquist |F| {nyquist:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("generators", nargs="*")
    ap.add_argument("--data", default="../shared/data/mlds2018-extra")
    ap.add_argument("--tagger", help="a tagger file: also print the feature-statistics distance")
    args = ap.parse_args()
    real = load_folder(args.data, 64, verbose=False)
    idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:512]
    print(f"real: {detail(real.images[idx])}")
    tagger = load_tagger(args.tagger).eval() if args.tagger else None
    stats = real_feature_stats(tagger, real, "cpu") if tagger else None
    for path in args.generators or [None]:
        gen = FaceGenerator.load(path)
        line = f"{gen.source} (step {gen.step}): {detail(gen.draw(gen.noise(512, 0), Labels(real.hair[idx], real.eyes[idx])))}"
        if tagger:
            pick = torch.randint(0, len(real), (4096,), generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                m, c = feature_stats_torch(tagger.features(to_float(gen.draw(gen.noise(4096, 1), Labels(real.hair[pick], real.eyes[pick])))))
            line += f"; tagger feature distance {(m - stats[0]).pow(2).sum().item() + (c - stats[1]).pow(2).sum().item():.2f}"
        print(line)


if __name__ == "__main__":
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"detail_stats: error: {err}")
