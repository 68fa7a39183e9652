"""Does averaging generator weights from several steps beat the last one? Evaluates the mean of the given
weight files (e.g. EMA generators kept every 250 steps) after standing BatchNorm statistics, as `tagface evaluate`
would, for each seed (docs/ablations.md, "Past step 6300").

    python benchmarks/average_generators.py --like runs/a2-cont/generator.safetensors --real DATA W1 [W2 ...] [--seeds 0 1 2]

--like gives the recipe and tag frequencies; W are safetensors files of that generator's weights.
"""
import argparse
import sys

import torch
from safetensors.torch import load_file

from tagface.data import load_datasets
from tagface.errors import TagfaceError
from tagface.evaluation import evaluate
from tagface.sampling import FaceGenerator, standing_batchnorm
from tagface.tagger import load_tagger


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", nargs="+")
    p.add_argument("--like", required=True, help="a tagface generator file of the same recipe")
    p.add_argument("--real", required=True, help="real data folder, as for tagface evaluate")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    gen = FaceGenerator.load(args.like)
    states = [load_file(w) for w in args.weights]
    gen.G.load_state_dict({k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point()
                           else states[-1][k] for k, v in states[0].items()})
    gen.G = standing_batchnorm(gen.G, gen.freq, gen.z_dim).eval()
    tagger, real = load_tagger(None), load_datasets([args.real], gen.resolution, verbose=False)
    for seed in args.seeds:
        r = evaluate(gen, tagger, real, 8, seed)
        g, fd = r["generated"], r["frechet_tagger"]
        print(f"seed {seed}: hair {g['hair']:.3f} eyes {g['eyes']:.3f} both {g['both']:.3f} Frechet "
              f"{fd['generated_vs_real']:.2f} ({fd['ratio']:.2f}x) pairs below 0.8 "
              f"{len(r['diversity_ratio']['pairs_below_0.8'])}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"average_generators: error: {err}")
