"""What the training augmentation does to real faces, as the judge sees them: the numbers behind
docs/ablations.md ("Crisp real faces for D").

Every real face D sees is rotated by up to +-5 degrees (`train.rotate`) through bilinear resampling, which blurs it.
This prints the Frechet distance in the shipped tagger's features (the judge of `tagface evaluate`) between real
half A (3,000 faces) and real half B as it is, flipped, rotated as in training, blurred and sharpened; then for each
generator (faces drawn with half B's tags, seed 0) the same with and without sharpening. For every set it also
prints the cosine between its feature-mean shift from A and the generator's (the first generator given, or none),
so one sees whether a generator's shift points where the augmentation's does.

    python benchmarks/augment_shift.py [--data DIR] [--n 3000] [GENERATOR ...]   # none given: the shipped one
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from tagface.data import augment, load_folder, to_float, to_uint8
from tagface.errors import TagfaceError
from tagface.evaluation import feature_stats, frechet_distance
from tagface.losses import Labels
from tagface.sampling import FaceGenerator
from tagface.tagger import extract_features, load_tagger


def unsharp(x: torch.Tensor, amount: float) -> torch.Tensor:
    """x + amount * (3x3 binomial blur of x - x): amount > 0 blurs, < 0 sharpens."""
    k = torch.tensor([1.0, 2.0, 1.0])
    w = ((k[:, None] * k[None]) / 16).expand(x.shape[1], 1, 3, 3)
    return x + amount * (F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w, groups=x.shape[1]) - x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("generators", nargs="*")
    ap.add_argument("--data", default="../shared/data/mlds2018-extra")
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    real = load_folder(args.data, 64, verbose=False)
    if len(real) < 2 * args.n:
        raise TagfaceError(f"--n {args.n}: {args.data} has {len(real)} faces, fewer than 2 x n")
    judge = load_tagger(None)
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    a, b = perm[:args.n], perm[args.n:2 * args.n]
    feats_a = extract_features(judge, real.images[a])
    stats_a, mean_a = feature_stats(feats_a), feats_a.double().mean(0)
    xb = to_float(real.images[b])

    sets = {"real B": xb,
            "real B flipped (train.rotate=0)": augment(xb, torch.Generator().manual_seed(0), True, 0.0),
            "real B rotated 2 deg": augment(xb, torch.Generator().manual_seed(0), True, 2.0),
            "real B rotated 5 deg (train.rotate=5, the default)": augment(xb, torch.Generator().manual_seed(0), True, 5.0),
            "real B blurred (unsharp +0.5)": unsharp(xb, 0.5),
            "real B sharpened (unsharp -0.5)": unsharp(xb, -0.5)}
    for path in args.generators or [None]:
        gen = FaceGenerator.load(path)
        fake = to_float(gen.draw(gen.noise(args.n, 0), Labels(real.hair[b], real.eyes[b])))
        sets[f"{gen.source} (step {gen.step})"] = fake
        sets[f"{gen.source} sharpened (unsharp -0.5)"] = unsharp(fake, -0.5)

    shifts = {}
    for name, x in sets.items():
        f = extract_features(judge, to_uint8(x))
        shifts[name] = (f.double().mean(0) - mean_a, frechet_distance(*feature_stats(f), *stats_a))
    ref = next((shifts[k][0] for k in shifts if not k.startswith("real")), None)
    print(f"Frechet distance to real half A ({args.n} faces each), shipped tagger's features:")
    for name, (shift, fd) in shifts.items():
        cos = (shift @ ref / (shift.norm() * ref.norm() + 1e-12)).item()
        print(f"  {fd:6.3f}  mean shift {shift.norm().item():.3f}, cosine with the first generator's {cos:+.2f}  {name}")


if __name__ == "__main__":
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"augment_shift: error: {err}")
