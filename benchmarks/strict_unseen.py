"""Strict tags for a colour the model never saw: draw "H hair gray eyes" again while a picker that reads gray eyes
(`tagface tagger train --balance 1`) misreads it, and grade the kept faces with a second such tagger.

`--strict-tags` leaves gray eyes unchecked for the shipped model (the shipped tagger cannot read them). This asks
whether some of the model's own faces, all real to its D, pass for gray-eyed with a tagger that can read them
(docs/ablations.md, "Gray eyes after training"). 32 faces per hair colour, seed 0 as `tagface generate` draws them;
the sliced Wasserstein distance is to as many real mlds faces; the picture has 8 faces per hair colour.

    python benchmarks/strict_unseen.py --picker P.safetensors --grader G.safetensors --draws 8 --out runs/x.png
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from tagface.data import load_datasets
from tagface.evaluation import sliced_wasserstein
from tagface.images import image_grid, save_pil
from tagface.numpy_generator import load_generator
from tagface.numpy_tagger import load_reader
from tagface.strict import redraw_seed, redraw_until_read
from tagface.tagger import load_tagger, predict_logits
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, Tags


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--picker", required=True)
    ap.add_argument("--grader", required=True)
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--eyes", default="gray")
    ap.add_argument("--per-colour", type=int, default=32)
    ap.add_argument("--real", default="../shared/data/mlds2018-extra")
    ap.add_argument("--out", required=True, help="a .png of the kept faces")
    args = ap.parse_args()
    torch.set_num_threads(2)
    gen, pick = load_generator(None), load_reader(args.picker, 64)
    n, eyes = args.per_colour, EYE_COLOURS.index(args.eyes)
    faces = []
    for h, hair in enumerate(HAIR_COLOURS):
        tags = Tags(hair, args.eyes)
        kept = redraw_until_read(lambda k, rows: gen.generate(tags, n, redraw_seed(0, k), None, rows), pick,
                                 np.full(n, h), np.full(n, eyes), (np.ones(n, bool), np.ones(n, bool)), args.draws)[0]
        faces.append(torch.from_numpy(kept))
    faces = torch.cat(faces)
    logits = predict_logits(load_tagger(args.grader), faces)
    asked = torch.arange(len(HAIR_COLOURS)).repeat_interleave(n)
    real = load_datasets([args.real], 64, None).images
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:len(faces)]]
    read_eyes = (logits[:, N_HAIR:].argmax(1) == eyes).float().mean()
    print(json.dumps({"draws": args.draws, "grader_reads_eyes": round(float(read_eyes), 3),
                      "hair_as_asked": round(float((logits[:, :N_HAIR].argmax(1) == asked).float().mean()), 3),
                      "swd": {k: round(v, 1) for k, v in sliced_wasserstein(faces, real).items()}}))
    save_pil(image_grid(faces.view(len(HAIR_COLOURS), n, *faces.shape[1:])[:, :8].flatten(0, 1), 16), args.out)


if __name__ == "__main__":
    main()
