"""Does a generator copy the faces it trained on? For generators fine-tuned on a subset (benchmarks/pack_faces.py
--limit), compare each drawn face's nearest real face among the training subset and among as many faces it never
saw: a generator that learnt the distribution finds its nearest face in either set as often (half the time); one
that memorised finds it in the training subset more often. Real faces outside both sets are the control.

    python benchmarks/memorisation.py --limit 15000 [--seed 0] [--queries 2000] GENERATOR ...

Nearest by pixels (64 px, L2) and by the judge's features (the shipped tagger, as `tagface evaluate`). The same
question for the whole distribution: the judge's Frechet distance from the queries to either set.
"""
from __future__ import annotations

import argparse
import sys

import torch

from pack_faces import subset  # the same draw as the packed data (benchmarks/ is on the path when run)
from tagface.data import clean, load_folder, read_records
from tagface.errors import TagfaceError
from tagface.evaluation import feature_stats, frechet_distance
from tagface.losses import Labels
from tagface.sampling import FaceGenerator
from tagface.tagger import extract_features, load_tagger


def share_nearest_in_first(queries: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> float:
    """Fraction of queries whose nearest neighbour (L2) lies in `first` rather than `second`."""
    def nearest(refs):
        return torch.cat([torch.cdist(q, refs).min(1).values for q in queries.split(500)])
    return float((nearest(first) < nearest(second)).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("generators", nargs="+")
    ap.add_argument("--data", default="../shared/data/mlds2018-extra")
    ap.add_argument("--limit", type=int, required=True, help="the training subset's size (pack_faces.py --limit)")
    ap.add_argument("--seed", type=int, default=0, help="the subset's seed (pack_faces.py --seed)")
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    generators = {path: FaceGenerator.load(path) for path in args.generators}  # a bad path fails before the work
    trained = {r.id for r in subset(args.data, args.limit, args.seed)}
    ids = [r.id for r in clean(read_records(args.data))[0]]  # load_folder's order
    real = load_folder(args.data, 64, verbose=False)
    inside = torch.tensor([i in trained for i in ids])
    train_idx = torch.nonzero(inside).flatten()
    other = torch.nonzero(~inside).flatten()
    other = other[torch.randperm(len(other), generator=torch.Generator().manual_seed(0))]
    n = min(len(train_idx), len(other) - 100)
    if n < 100:
        raise TagfaceError(f"--limit {args.limit}: leaves {len(other)} unseen faces; need at least 200")
    unseen, control = other[:n], other[n:n + args.queries]
    train_idx = train_idx[torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(1))[:n]]
    judge = load_tagger(None)

    def spaces(images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixels": images.float().flatten(1), "judge features": extract_features(judge, images).float()}

    refs_train, refs_unseen = spaces(real.images[train_idx]), spaces(real.images[unseen])
    stats_train, stats_unseen = (feature_stats(r["judge features"]) for r in (refs_train, refs_unseen))
    print(f"{n} training faces against {n} unseen; share of queries whose nearest face is a training face "
          "(0.5: no memorisation); the judge's Frechet distance from the queries to either set")
    print("| queries | n | pixels | judge features | Frechet to training | Frechet to unseen |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    rows = [("real faces outside both sets", real.images[control])]
    for path, gen in generators.items():
        tags = control[torch.randint(len(control), (args.queries,), generator=torch.Generator().manual_seed(2))]
        faces = gen.draw(gen.noise(args.queries, 3), Labels(real.hair[tags], real.eyes[tags]))
        rows.append((f"{path} (step {gen.step})", faces))
    for name, images in rows:
        q = spaces(images)  # uint8, as the data and FaceGenerator.draw give them
        shares = [share_nearest_in_first(q[s], refs_train[s], refs_unseen[s]) for s in q]
        stats = feature_stats(q["judge features"])
        distances = [frechet_distance(*stats, *ref) for ref in (stats_train, stats_unseen)]
        print(f"| {name} | {len(images)} | " + " | ".join(f"{v:.3f}" for v in shares + distances) + " |")


if __name__ == "__main__":
    try:
        with torch.inference_mode():
            main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"memorisation: error: {err}")
