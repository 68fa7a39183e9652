"""How well a tagger reads one colour on its own held-out faces: found, missed, and other faces read as it.

The tagger's report (in its metadata) has each colour's accuracy; for a rare colour (gray eyes: 109 of 42,146
faces) the false alarms matter as much, and the report has none (docs/ablations.md, "Gray eyes after training").

    python benchmarks/tagger_heldout_colour.py TAGGER.safetensors SEED [--tag "gray eyes"] [--data DIR ...]

SEED: the seed the tagger was trained with, which chose its held-out split; DATA: what it was trained on
(default mlds + adl).
"""
from __future__ import annotations

import argparse
import json

from tagface.data import load_datasets
from tagface.tagger import heldout_mask, load_tagger, predict_logits
from tagface.tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, parse_tags


def heldout_reading(tagger, faces, seed: int, kind: str, colour: int) -> dict:
    """On the held-out split of `seed`: faces of the colour, how many the tagger found, others it read as it."""
    val = heldout_mask(faces.digest, 0.1, seed)
    logits = predict_logits(tagger, faces.images[val])
    read = (logits[:, :N_HAIR] if kind == "hair" else logits[:, N_HAIR:]).argmax(1) == colour
    truth = (faces.hair if kind == "hair" else faces.eyes)[val] == colour
    return {"heldout": int(val.sum()), "of_tag": int(truth.sum()), "found": int((read & truth).sum()),
            "others_read_as_tag": int((read & ~truth).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tagger")
    ap.add_argument("seed", type=int)
    ap.add_argument("--tag", default="gray eyes")
    ap.add_argument("--data", action="append")
    args = ap.parse_args()
    tags = parse_tags(args.tag)
    kind, colour = ("hair", HAIR_COLOURS.index(tags.hair)) if tags.hair else ("eyes", EYE_COLOURS.index(tags.eyes))
    faces = load_datasets(args.data or ["../shared/data/mlds2018-extra", "../shared/data/adl2017-faces"], 64, None)
    print(json.dumps({"tagger": args.tagger, "tag": args.tag,
                      **heldout_reading(load_tagger(args.tagger), faces, args.seed, kind, colour)}))


if __name__ == "__main__":
    main()
