"""The floor of the full 132-pair grid reading: what real faces drawn as `tagface evaluate`'s grid draws them score
against real mlds faces, when the 13 pairs mlds lacks (gray eyes, purple hair / black eyes) are filled with real
faces from the adl2017 set (the only real gray-eyed anime faces we have, 96 px brought to 64).

`tagface evaluate` reports that floor over the 119 pairs mlds holds (`frechet_tagger_real_grid`); the target is
stated on the full grid. Three fillings of the 104 faces of the 13 missing pairs, the other 952 faces the same:
  adl, same pairs      real gray-eyed (and purple / black) adl faces: a generator that draws those tags as real
                       anime faces look, in adl's style;
  adl, held eyes       adl faces of the same hair with an eye colour mlds holds: the cost of adl's style alone;
  mlds, held eyes      mlds faces of the same hair with an eye colour mlds holds: a generator that ignores "gray".
Each set is 1,056 faces against mlds half a, beside mlds half b, with `tagface evaluate`'s split for each seed.

    python benchmarks/full_grid_floor.py ../shared/data/mlds2018-extra ../shared/data/adl2017-faces
"""
import sys

import torch

from tagface.data import load_datasets
from tagface.evaluation import _draw_like, feature_stats, frechet_distance
from tagface.tagger import extract_features, heldout_mask, load_tagger
from tagface.losses import Labels
from tagface.tags import N_EYES, N_HAIR


def fill_missing(hair: torch.Tensor, eyes: torch.Tensor, labels: Labels, held_pairs: torch.Tensor,
                 g: torch.Generator, keep_eyes: bool) -> torch.Tensor:
    """Distinct indices into a face set with these tags, one per label. keep_eyes: a face of the label's own pair
    while unused ones last, then one of the same eye colour and another hair (adl has 0 to 34 gray-eyed faces per
    hair colour, and repeating a face would shrink the set's spread); otherwise the same hair with an eye colour
    mlds holds."""
    used, out = torch.zeros(len(hair), dtype=torch.bool), []
    order = torch.randperm(len(hair), generator=g)
    for h, e in zip(labels.hair.tolist(), labels.eyes.tolist()):
        if keep_eyes:
            tiers = [(hair == h) & (eyes == e), eyes == e]
        else:
            tiers = [(hair == h) & held_pairs[hair * N_EYES + eyes]]
        for ok in tiers:
            free = order[(ok & ~used)[order]]
            if len(free):
                used[free[0]] = True
                out.append(int(free[0]))
                break
        else:
            raise SystemExit(f"no unused face left for hair {h} eyes {e}")
    return torch.tensor(out)


def main(mlds: str, adl: str, per_pair: int = 8, seeds=(0, 1, 2)) -> None:
    torch.set_num_threads(1)
    tagger = load_tagger()
    real, other = load_datasets([mlds], 64, verbose=False), load_datasets([adl], 64, verbose=False)
    labels = Labels(torch.arange(N_HAIR).repeat_interleave(N_EYES * per_pair),
                    torch.arange(N_EYES).repeat_interleave(per_pair).repeat(N_HAIR))
    held_pairs = torch.bincount(real.hair * N_EYES + real.eyes, minlength=N_HAIR * N_EYES) > 0
    asked_held = held_pairs[labels.hair * N_EYES + labels.eyes]
    missing = Labels(labels.hair[~asked_held], labels.eyes[~asked_held])
    found = torch.bincount(other.hair * N_EYES + other.eyes, minlength=N_HAIR * N_EYES)
    print(f"adl faces of the {int((~held_pairs).sum())} pairs mlds lacks: "
          + ", ".join(f"{int(found[k])}" for k in (~held_pairs).nonzero().flatten().tolist()))
    held = heldout_mask(real.digest, 0.1)
    pool = (~held).nonzero().squeeze(1)
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        held_idx = held.nonzero().squeeze(1)
        if len(held_idx) > 4000:
            held_idx = held_idx[torch.randperm(len(held_idx), generator=torch.Generator().manual_seed(seed))[:4000]]
        feat = extract_features(tagger, real.images[held_idx])
        perm = torch.randperm(feat.shape[0], generator=torch.Generator().manual_seed(seed + 1))
        m = labels.hair.numel()
        stats_a = feature_stats(feat[perm[:m]])
        rr = frechet_distance(*feature_stats(feat[perm[m:2 * m]]), *stats_a)
        base = _draw_like(real, pool, Labels(labels.hair[asked_held], labels.eyes[asked_held]), seed + 4)
        base_feat = extract_features(tagger, real.images[base])
        def fill(hair, eyes, keep_eyes):
            return fill_missing(hair, eyes, missing, held_pairs, g, keep_eyes)

        fills = {
            "adl, same pairs": other.images[fill(other.hair, other.eyes, keep_eyes=True)],
            "adl, held eyes": other.images[fill(other.hair, other.eyes, keep_eyes=False)],
            "mlds, held eyes": real.images[pool[fill(real.hair[pool], real.eyes[pool], keep_eyes=False)]],
        }
        line = [f"seed {seed}: real b vs a {rr:.2f}"]
        for name, images in fills.items():
            full = torch.cat([base_feat, extract_features(tagger, images)])
            d = frechet_distance(*feature_stats(full), *stats_a)
            line.append(f"{name} {d:.2f} ({d / rr:.2f}x)")
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        sys.exit(__doc__)
    main(*(sys.argv[1:3] if len(sys.argv) > 2 else ("../shared/data/mlds2018-extra", "../shared/data/adl2017-faces")))
