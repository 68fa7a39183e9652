"""The hair/eye tagger of the reports: a small CNN with a hair head and an eye head.

It relabels noisy data, acts as a frozen classifier loss for G (report 003) and is the judge in
`tagface evaluate`, whose Frechet distance and diversity are measured in its feature space.
Held-out splits are made from each file's content digest, so byte-identical copies always fall on the
same side and any later tool can recompute which faces the tagger never saw.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import __version__
from .checkpoint import atomic_save_tensors, load_tensors, read_metadata, resolve_tagger
from .data import FaceSet, to_float
from .errors import TagfaceError
from .tags import EYE_COLOURS, HAIR_COLOURS, N_HAIR, N_TAGS

class TaggerNet(nn.Module):
    """Four conv stages (stride 2 each), global average pooling, a feature vector, two linear heads.

    forward() returns [B, 23] logits (12 hair then 11 eye colours), the layout every tag head in tagface uses.
    """

    def __init__(self, width: int = 32, resolution: int = 64):
        super().__init__()
        self.width, self.resolution = width, resolution
        layers, cin = [], 3
        for mult in (1, 2, 4, 8):
            c = width * mult
            layers += [nn.Conv2d(cin, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True),
                       nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
            cin = c
        self.body = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = nn.Linear(cin, N_TAGS)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or [-1, 1] float images of any size -> the tagger's input."""
        if not x.is_floating_point():
            x = to_float(x)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x)).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def heldout_mask(digest: torch.Tensor, fraction: float = 0.1, seed: int = 0) -> torch.Tensor:
    """True for faces in the held-out split: a fixed, seeded function of each file's content digest."""
    def bucket(d: int) -> int:
        return int.from_bytes(hashlib.blake2b(f"{seed}:{d}".encode(), digest_size=4).digest(), "little") % 10000
    return torch.tensor([bucket(int(d)) < fraction * 10000 for d in digest.tolist()], dtype=torch.bool)


def shift_augment(x: torch.Tensor, rng: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Flips and small translations (edge-replicated). No colour jitter: colour is the label."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=rng) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, [max_shift] * 4, mode="replicate")
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=rng)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=rng)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


@dataclass
class Accuracy:
    hair: float
    eyes: float
    both: float
    n: int


def accuracy(logits: torch.Tensor, hair: torch.Tensor, eyes: torch.Tensor) -> Accuracy:
    ph, pe = logits[:, :N_HAIR].argmax(1), logits[:, N_HAIR:].argmax(1)
    ok_h, ok_e = ph == hair, pe == eyes
    return Accuracy(ok_h.float().mean().item(), ok_e.float().mean().item(), (ok_h & ok_e).float().mean().item(),
                    hair.numel())


@torch.no_grad()
def predict_logits(net: TaggerNet, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    net.eval()
    return torch.cat([net(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])


@torch.no_grad()
def extract_features(net: TaggerNet, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    net.eval()
    return torch.cat([net.features(images[i:i + batch_size]) for i in range(0, images.shape[0], batch_size)])


def class_weights(labels: torch.Tensor, classes: int, power: float) -> torch.Tensor | None:
    """Cross-entropy weights (1 / frequency) ** power, 1 on average over the faces; None for power 0. A colour as
    rare as adl's 109 gray-eyed faces (0.26% of mlds + adl) is otherwise never predicted: argmax never pays."""
    if power == 0:
        return None
    counts = torch.bincount(labels, minlength=classes).double().clamp(min=1)
    w = counts.reciprocal() ** power
    return (w / (w[labels].mean())).float()


def train_tagger(faces: FaceSet, epochs: int = 6, batch_size: int = 128, lr: float = 2e-3, width: int = 32,
                 seed: int = 0, heldout: float = 0.1, progress: bool = True,
                 balance: float = 0.0) -> tuple[TaggerNet, dict]:
    """Train on the faces outside the held-out split; report accuracy on the held-out split. `balance` p weights
    each colour's loss by (1 / its frequency) ** p: 0 fits the data's own mix, 1 makes gray eyes readable at a
    cost in overall accuracy (docs/ablations.md, "Gray eyes after training")."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    val = heldout_mask(faces.digest, heldout, seed)
    train_idx, val_idx = (~val).nonzero().squeeze(1), val.nonzero().squeeze(1)
    if len(train_idx) < batch_size or len(val_idx) == 0:
        raise TagfaceError(f"too few faces to train a tagger ({len(train_idx)} train, {len(val_idx)} held out; it "
                           f"needs at least {batch_size} to train on and 1 held out, about {batch_size * 10 // 9 + 1} "
                           "usable faces)")
    if not 0 <= balance <= 1:
        raise TagfaceError(f"--balance {balance}: must be in 0..1 (0: the data's own mix; 1: every colour alike)")
    net = TaggerNet(width, faces.resolution if faces.resolution <= 64 else 64)
    w_hair = class_weights(faces.hair[train_idx], N_HAIR, balance)
    w_eyes = class_weights(faces.eyes[train_idx], len(EYE_COLOURS), balance)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(train_idx) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, unit="step", disable=not progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = train_idx[torch.randperm(len(train_idx), generator=rng)]
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            net.train()
            x = shift_augment(net.prepare(faces.images[idx]), rng)
            logits = net(x)
            loss = F.cross_entropy(logits[:, :N_HAIR], faces.hair[idx], weight=w_hair) + \
                F.cross_entropy(logits[:, N_HAIR:], faces.eyes[idx], weight=w_eyes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    logits = predict_logits(net, faces.images[val_idx])
    report = {"train_faces": len(train_idx), "heldout_faces": len(val_idx), "epochs": epochs, "balance": balance,
              "seconds": round(time.perf_counter() - t0, 1),
              "heldout": per_colour_accuracy(logits, faces.hair[val_idx], faces.eyes[val_idx])}
    return net.eval(), report


def per_colour_accuracy(logits: torch.Tensor, hair: torch.Tensor, eyes: torch.Tensor) -> dict:
    """Overall and per-colour accuracy: hair per true hair colour, eyes per true eye colour."""
    acc = accuracy(logits, hair, eyes)
    ph, pe = logits[:, :N_HAIR].argmax(1), logits[:, N_HAIR:].argmax(1)
    per_hair = {c: (ph[hair == i] == i).float().mean().item() for i, c in enumerate(HAIR_COLOURS) if (hair == i).any()}
    per_eyes = {c: (pe[eyes == i] == i).float().mean().item() for i, c in enumerate(EYE_COLOURS) if (eyes == i).any()}
    return {"hair": acc.hair, "eyes": acc.eyes, "both": acc.both, "n": acc.n, "per_hair": per_hair, "per_eyes": per_eyes}


def save_tagger(net: TaggerNet, path: str | Path, report: dict | None = None) -> None:
    meta = {"tagface.version": __version__, "tagface.kind": "tagger",
            "tagface.tagger": json.dumps({"width": net.width, "resolution": net.resolution}),
            "tagface.report": json.dumps(report or {})}
    atomic_save_tensors({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path, meta)


def load_tagger(path: str | Path | None = None) -> TaggerNet:
    p = resolve_tagger(path)
    arch = json.loads(read_metadata(p)["tagface.tagger"])
    net = TaggerNet(arch["width"], arch["resolution"])
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_tensors(p).items()})
    return net.eval().requires_grad_(False)


def _resolve(given: set[str], probs: torch.Tensor, names: tuple[str, ...], min_conf: float) -> tuple[set[str], str]:
    """One attribute of one row: keep a single given colour, fill a blank, or pick among several."""
    if len(given) == 1:
        return given, "given"
    candidates = range(len(names)) if not given else [names.index(c) for c in given]
    best = max(candidates, key=lambda i: probs[i].item())
    if probs[best].item() >= min_conf:
        return {names[best]}, "filled" if not given else "resolved"
    return given, "unsure"


def relabel(records, net: TaggerNet, min_conf: float, heldout_fraction: float = 0.1, seed: int = 0):
    """New colour sets for every row plus a report: how many rows became usable, and how often the tagger
    agrees with the rows' known labels (all of them, and those in its held-out split)."""
    from .data import decode_many

    decoded = decode_many([r.path for r in records], net.resolution)
    ok = [i for i, (a, _) in enumerate(decoded) if a is not None]
    if not ok:
        first = records[0].path
        raise TagfaceError(f"none of the {len(records)} images could be read (e.g. {first}"
                           f"{' does not exist' if not first.exists() else ''})")
    import numpy as np
    images = torch.from_numpy(np.stack([decoded[i][0] for i in ok]))
    logits = predict_logits(net, images)
    held = heldout_mask(torch.tensor([decoded[i][1] for i in ok]), heldout_fraction, seed)
    counts: dict[str, int] = {}
    agree = {"all": [0, 0, 0, 0], "heldout": [0, 0, 0, 0]}  # hair ok, eyes ok, both ok, n
    new = [(r.hair, r.eyes) for r in records]
    for row, i in enumerate(ok):
        r, lg = records[i], logits[row]
        ph, pe = lg[:N_HAIR].softmax(0), lg[N_HAIR:].softmax(0)
        hair, how_h = _resolve(r.hair, ph, HAIR_COLOURS, min_conf)
        eyes, how_e = _resolve(r.eyes, pe, EYE_COLOURS, min_conf)
        new[i] = (hair, eyes)
        for how in (f"hair {how_h}", f"eyes {how_e}"):
            counts[how] = counts.get(how, 0) + 1
        if len(r.hair) == 1 and len(r.eyes) == 1:  # known labels, hidden from the tagger: does it agree?
            h_ok = HAIR_COLOURS[int(ph.argmax())] in r.hair
            e_ok = EYE_COLOURS[int(pe.argmax())] in r.eyes
            for key in ("all", "heldout") if held[row] else ("all",):
                a = agree[key]
                a[0], a[1], a[2], a[3] = a[0] + h_ok, a[1] + e_ok, a[2] + (h_ok and e_ok), a[3] + 1
    usable = lambda pairs: sum(len(h) == 1 and len(e) == 1 for h, e in pairs)  # noqa: E731
    report = {
        "rows": len(records), "unreadable": len(records) - len(ok), "min_confidence": min_conf,
        "usable_before": usable([(r.hair, r.eyes) for r in records]), "usable_after": usable(new),
        "decisions": dict(sorted(counts.items())),
        "agreement": {k: ({"hair": v[0] / v[3], "eyes": v[1] / v[3], "both": v[2] / v[3], "n": v[3]} if v[3] else None)
                      for k, v in agree.items()},
    }
    report["labelled"] = report["usable_after"] - report["usable_before"]
    return new, report


def write_relabelled(records, labels, out: str | Path) -> None:
    """An `id,hair,eyes,file` csv (file relative to the csv), a valid `--data` input."""
    import csv
    import io
    import os

    from .checkpoint import atomic_write_text
    out = Path(out)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "hair", "eyes", "file"])
    for r, (hair, eyes) in zip(records, labels):
        w.writerow([r.id, ";".join(sorted(hair)), ";".join(sorted(eyes)),
                    os.path.relpath(r.path.resolve(), out.resolve().parent)])
    atomic_write_text(out, buf.getvalue())
