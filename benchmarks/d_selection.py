"""Does letting D pick among candidate faces make the samples more real? (docs/ablations.md, "Letting D pick")

For each face `tagface evaluate` asks for, draw k candidates with the same tags and keep one by the trained D's
real/fake logit: the best (`max`), or one drawn with probability proportional to exp(logit) (`sir`: sampling-
importance-resampling, which recovers the data distribution if D's logit were the log density ratio, as in
discriminator rejection sampling, Azadi et al. 2019). `sir-cls` adds D's log-probability of the asked tags to
the logit; `cls` keeps the candidate D reads most surely as the asked tags, ignoring its real/fake logit. Prints the
evaluation's headline numbers; k = 1 is the generator alone.

    python benchmarks/d_selection.py GENERATOR CHECKPOINT [--k 4] [--pick sir|max|sir-cls|cls] [--seed 0]

CHECKPOINT is a training checkpoint or a D weights file (`tagface export --discriminator`, e.g. the shipped
default-discriminator.safetensors).
"""
from __future__ import annotations

import argparse
import sys

import torch

from tagface.checkpoint import load_state, load_tensors, load_weights, read_metadata
from tagface.data import load_folder, to_float
from tagface.errors import TagfaceError
from tagface.evaluation import evaluate
from tagface.losses import GANObjective, Labels
from tagface.models import build_discriminator
from tagface.sampling import FaceGenerator
from tagface.tagger import load_tagger
from tagface.tags import N_HAIR

PICKS = ("sir", "max", "sir-cls", "cls")


class DiscriminatorPicked:
    """A FaceGenerator look-alike for evaluate(): noise() gives k vectors per face, draw() keeps one of k."""

    def __init__(self, gen: FaceGenerator, D: torch.nn.Module, k: int, pick: str):
        self.gen, self.D, self.k, self.pick = gen, D, k, pick

    def __getattr__(self, name):
        return getattr(self.gen, name)

    def noise(self, n: int, seed: int, truncation: float | None = None) -> torch.Tensor:
        return self.gen.noise(n * self.k, seed, truncation).view(n, self.k, -1)

    @torch.no_grad()
    def draw(self, z: torch.Tensor, labels: Labels, batch_size: int = 256) -> torch.Tensor:
        n, k = z.shape[0], self.k
        tags = Labels(labels.hair.repeat_interleave(k), labels.eyes.repeat_interleave(k))
        faces = self.gen.draw(z.reshape(n * k, -1), tags)
        scores = []
        for i in range(0, n * k, 512):
            out = self.D(to_float(faces[i:i + 512]))
            hair, eyes = out.logits[:, :N_HAIR].log_softmax(1), out.logits[:, N_HAIR:].log_softmax(1)
            tag_logp = hair.gather(1, tags.hair[i:i + 512, None])[:, 0] + eyes.gather(1, tags.eyes[i:i + 512, None])[:, 0]
            scores.append({"sir": out.adv, "max": out.adv, "sir-cls": out.adv + tag_logp, "cls": tag_logp}[self.pick])
        s = torch.cat(scores).view(n, k)
        if self.pick in ("max", "cls"):
            chosen = s.argmax(1)
        else:
            chosen = torch.multinomial(s.softmax(1), 1, generator=torch.Generator().manual_seed(0))[:, 0]
        return faces.view(n, k, *faces.shape[1:])[torch.arange(n), chosen]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("generator")
    ap.add_argument("checkpoint", help="the full training checkpoint whose D scores the candidates")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--pick", default="sir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="../shared/data/mlds2018-extra")
    args = ap.parse_args()
    if args.pick not in PICKS or args.k < 1:
        raise TagfaceError(f"--pick {args.pick} --k {args.k}: allowed --pick {' '.join(PICKS)}, --k >= 1")
    gen = FaceGenerator.load(args.generator)
    is_state = "tagface.state" in read_metadata(args.checkpoint)
    d_weights = load_state(args.checkpoint)[0]["D"] if is_state else load_tensors(args.checkpoint)
    rc = gen.recipe
    cond = GANObjective(rc.loss).conditioning
    if cond.reads_labels or not cond.heads:
        raise TagfaceError(f"{args.generator}: recipe {rc.name} has no auxiliary-classifier D; this picks with one")
    D = build_discriminator(rc.model, rc.train.resolution, False, True)
    load_weights(D, d_weights)
    D.eval().requires_grad_(False)
    picked = DiscriminatorPicked(gen, D, args.k, args.pick) if args.k > 1 else gen
    r = evaluate(picked, load_tagger(None), load_folder(args.data, 64, verbose=False), 8, args.seed)
    g, fd, mt, dv = r["generated"], r["frechet_tagger"], r["matched"], r["diversity_ratio"]
    print(f"k {args.k} pick {args.pick}: hair {g['hair']:.3f} eyes {g['eyes']:.3f} both {g['both']:.3f}; Frechet "
          f"{fd['generated_vs_real']:.2f} (ratio {fd['ratio']:.2f}, matched {mt['frechet_ratio']:.2f}); pairs below 0.8 "
          f"{len(dv['pairs_below_0.8'])}; sliced Wasserstein "
          f"{' / '.join(f'{v:.1f}' for v in r['swd']['generated_vs_real'].values())}")


if __name__ == "__main__":
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"d_selection: error: {err}")
