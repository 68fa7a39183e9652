"""How much of the grid's Frechet distance is the tag mix? Real faces resampled to the evaluation grid's
uniform hair x eye distribution (8 per pair, from the training split) against real held-out faces, next to
two halves of the real held-out faces; also the real-vs-real distance at two set sizes (finite-sample bias).

    python benchmarks/label_mix_frechet.py ../shared/data/mlds2018-extra
"""
import sys

import torch

from tagface.data import load_datasets
from tagface.evaluation import feature_stats, frechet_distance
from tagface.tagger import extract_features, heldout_mask, load_tagger
from tagface.tags import N_EYES, N_HAIR


def fd(a, b):
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def main(folder: str, per_pair: int = 8, m: int = 952) -> None:
    torch.set_num_threads(1)
    real, tagger, g = load_datasets([folder], 64), load_tagger(), torch.Generator().manual_seed(0)
    held = heldout_mask(real.digest, 0.1)
    train_idx, held_idx = (~held).nonzero().squeeze(1), held.nonzero().squeeze(1)
    held_idx = held_idx[torch.randperm(len(held_idx), generator=g)[:4000]]
    feat = extract_features(tagger, real.images[held_idx])
    perm = torch.randperm(feat.shape[0], generator=torch.Generator().manual_seed(1))
    a, b = feat[perm[:m]], feat[perm[m:2 * m]]
    hair, eyes = real.hair[train_idx], real.eyes[train_idx]
    pick = []
    for h in range(N_HAIR):
        for e in range(N_EYES):
            idx = ((hair == h) & (eyes == e)).nonzero().squeeze(1)
            if len(idx):
                pick.append(train_idx[idx[torch.randint(len(idx), (per_pair,), generator=g)]])
    uniform = extract_features(tagger, real.images[torch.cat(pick)])
    uniform = uniform[torch.randperm(len(uniform), generator=g)[:m]]
    half = feat.shape[0] // 2
    print(f"{m} faces per set: real b vs real a {fd(b, a):.2f}; real at the grid's tag mix vs real a {fd(uniform, a):.2f}")
    print(f"{half} faces per set: real b vs real a {fd(feat[perm[half:2 * half]], feat[perm[:half]]):.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        sys.exit(__doc__)
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mlds2018-extra")
