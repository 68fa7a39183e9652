"""The colorizer alone, without the gray generator: held-out real faces turned gray and coloured again
(docs/ablations.md, "Colorizer losses").

    python benchmarks/colorizer_eval.py RUN_DIR [RUN_DIR ...] [--data DIR] [--n 1000]

Per run, on the same n faces from the tagger's held-out split: the pixel error and PSNR of colouring each face for
its own tags (how well the colours come back), and the tagger's accuracy on faces coloured for their own tags and
for tags drawn uniformly at random (whether the colorizer can paint a colour the gray face did not have: what the
pipeline asks of it for every generated gray face).
"""
from __future__ import annotations

import argparse

import torch

from tagface.colorize import ColorizePipeline
from tagface.data import load_folder, to_float
from tagface.losses import Labels
from tagface.tagger import accuracy, heldout_mask, load_tagger, predict_logits
from tagface.tags import N_EYES, N_HAIR


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--data", default="../shared/data/mlds2018-extra")
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    judge, real = load_tagger(None), load_folder(args.data, 64, verbose=False)
    held = heldout_mask(real.digest).nonzero().squeeze(1)
    g = torch.Generator().manual_seed(0)
    idx = held[torch.randperm(len(held), generator=g)[:args.n]]
    faces, own = real.images[idx], Labels(real.hair[idx], real.eyes[idx])
    other = Labels(torch.randint(N_HAIR, (len(idx),), generator=g), torch.randint(N_EYES, (len(idx),), generator=g))
    print("| run | colorizer loss | steps | own tags: mean abs error (0-255) / PSNR dB | tagger on own tags: hair / "
          "eyes / both | on random tags: hair / eyes / both |")
    print("| --- | --- | ---: | --- | --- | --- |")
    for run in args.runs:
        pipe = ColorizePipeline.load(run)
        rows = {}
        for name, labels in (("own", own), ("random", other)):
            out = torch.cat([pipe.colorize(faces[i:i + 256], Labels(labels.hair[i:i + 256], labels.eyes[i:i + 256]))
                             for i in range(0, len(idx), 256)])
            rows[name] = (out, accuracy(predict_logits(judge, out), labels.hair, labels.eyes))
        err = (to_float(rows["own"][0]) - to_float(faces)).abs().mean().item() * 127.5
        mse = ((to_float(rows["own"][0]) - to_float(faces)) ** 2).mean().item()
        psnr = 10 * torch.log10(torch.tensor(4.0 / mse)).item()  # range [-1, 1]: peak-to-peak 2
        a, b = rows["own"][1], rows["random"][1]
        print(f"| {run} | {pipe.cfg.colorizer.loss} | {pipe.step} | {err:.1f} / {psnr:.2f} | {a.hair:.3f} / {a.eyes:.3f} / "
              f"{a.both:.3f} | {b.hair:.3f} / {b.eyes:.3f} / {b.both:.3f} |")


if __name__ == "__main__":
    main()
