"""How good is a generator? Attribute accuracy judged by the tagger, Frechet distance and diversity in the
tagger's feature space, and the same numbers for real held-out faces as the ceiling.

The Frechet distance here is computed on tagger features, not Inception features: it is named
`frechet_tagger` everywhere so it is never mistaken for FID. Because a generator can be trained against a
tagger (report 003's frozen classifier), the report also gives a distance no network has learnt: the sliced
Wasserstein distance between image patches of a Laplacian pyramid (Karras et al. 2018, progressive GANs).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .checkpoint import atomic_write, atomic_write_text
from .data import FaceSet, to_float
from .losses import Labels
from .sampling import FaceGenerator

if TYPE_CHECKING:
    from .colorize import PipelineFaces
from .tagger import TaggerNet, extract_features, heldout_mask, per_colour_accuracy
from .tags import EYE_COLOURS, HAIR_COLOURS, N_EYES, N_HAIR


def feature_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = features.double().numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), via symmetric eigendecompositions
    (stable for the rank-deficient covariances small sample sets give)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_cross = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_cross)


def diversity(features: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between feature vectors; 0 when every face is the same."""
    n = features.shape[0]
    if n < 2:
        return 0.0
    d = torch.cdist(features.double(), features.double())
    return (d.sum() / (n * (n - 1))).item()


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, [2] * 4, mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass images from fine to coarse; the last is the blurred, downsampled remainder."""
    bands = []
    for _ in range(levels - 1):
        down = _blur(x)[..., ::2, ::2]
        up = torch.zeros_like(x)
        up[..., ::2, ::2] = down
        bands.append(x - 4 * _blur(up))
        x = down
    return bands + [x]


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, patches: int = 64, patch: int = 7, directions: int = 512,
                       seed: int = 0) -> dict[int, float]:
    """Sliced Wasserstein distance between two image sets, x 1000, per pyramid level {size in px: distance}
    (fine to coarse, down to 16 px).

    Random 7 x 7 patches of each level, normalised by the reference set b's per-channel mean and spread, are
    projected on random unit directions; the distance is the mean gap between the sorted projections. It sees
    colour and texture at every scale and depends on no trained network.
    """
    g = torch.Generator().manual_seed(seed)
    n = min(a.shape[0], b.shape[0])
    a, b = (to_float(x[:n]) if not x.is_floating_point() else x[:n].float() for x in (a, b))
    if a.shape[-2:] != b.shape[-2:]:  # e.g. a 96 px generator judged against 64 px real faces
        a = F.interpolate(a, size=b.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    levels = max(1, min(3, b.shape[-1].bit_length() - 4))  # 64 px: 64 / 32 / 16; 32 px: 32 / 16
    pa, pb = laplacian_pyramid(a, levels), laplacian_pyramid(b, levels)
    out = {}
    for la, lb in zip(pa, pb):
        h, w = la.shape[-2:]
        ys = torch.randint(0, h - patch + 1, (n, patches), generator=g)
        xs = torch.randint(0, w - patch + 1, (n, patches), generator=g)
        descriptors = []
        for level in (la, lb):
            windows = level.unfold(2, patch, 1).unfold(3, patch, 1)  # [n, c, h', w', p, p]
            descriptors.append(windows[torch.arange(n)[:, None], :, ys, xs].reshape(n * patches, level.shape[1], -1))
        # both sets scaled by the second (reference) set's per-channel statistics; scaling each by its own, as the
        # progressive-GAN code does, would hide a colour cast, and colour is what the tags are about
        mean, std = descriptors[1].mean((0, 2), keepdim=True), descriptors[1].std((0, 2), keepdim=True).clamp_min(1e-8)
        descriptors = [((d - mean) / std).flatten(1) for d in descriptors]
        dirs = torch.randn(descriptors[0].shape[1], directions, generator=g)
        dirs /= dirs.norm(dim=0, keepdim=True)
        # numpy sorts rows several times faster than torch sorts these columns
        proj_a, proj_b = (np.sort((d @ dirs).T.contiguous().numpy(), axis=1) for d in descriptors)
        out[h] = 1000 * float(np.abs(proj_a - proj_b).mean())
    return out


def _fake_order(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def _frechet_to_real_halves(fake_feat: torch.Tensor, real_feat: torch.Tensor, perm: torch.Tensor,
                            fake_perm: torch.Tensor) -> dict:
    """Frechet distance of generated faces to real half a beside real half b's, all three sets of one size (the
    distance shrinks with the set size, so only a ratio at one size means anything)."""
    m = min(fake_feat.shape[0], real_feat.shape[0] // 2)
    stats_a = feature_stats(real_feat[perm[:m]])
    fd = frechet_distance(*feature_stats(fake_feat[fake_perm[:m]]), *stats_a)
    fd_real = frechet_distance(*feature_stats(real_feat[perm[m:2 * m]]), *stats_a)
    return {"generated_vs_real": fd, "real_vs_real": fd_real, "ratio": fd / fd_real if fd_real > 0 else None,
            "n_per_set": m}


def _draw_like(real: FaceSet, pool: torch.Tensor, labels: Labels, seed: int) -> torch.Tensor:
    """Indices of real faces from `pool` with the tags of `labels`, one per label and in its order; -1 where the
    pool has no face of that pair. A pair with fewer pool faces than asked repeats some."""
    g = torch.Generator().manual_seed(seed)
    pool_keys = real.hair[pool] * N_EYES + real.eyes[pool]
    keys = labels.hair * N_EYES + labels.eyes
    out = torch.full_like(keys, -1)
    for k in keys.unique().tolist():
        slots, faces = (keys == k).nonzero().squeeze(1), pool[pool_keys == k]
        if len(faces) >= len(slots):
            out[slots] = faces[torch.randperm(len(faces), generator=g)[:len(slots)]]
        elif len(faces):
            out[slots] = faces[torch.randint(len(faces), (len(slots),), generator=g)]
    return out


def confusion(pred: torch.Tensor, true: torch.Tensor, n: int) -> torch.Tensor:
    """[n, n] counts: row = true class, column = predicted class."""
    return torch.bincount(true * n + pred, minlength=n * n).view(n, n)


def _per_pair_diversity(features: torch.Tensor, hair: torch.Tensor, eyes: torch.Tensor, min_count: int = 2) -> dict:
    out = {}
    for h in range(N_HAIR):
        for e in range(N_EYES):
            sel = (hair == h) & (eyes == e)
            if int(sel.sum()) >= min_count:
                out[f"{HAIR_COLOURS[h]}/{EYE_COLOURS[e]}"] = diversity(features[sel])
    return out


COLLAPSED = 0.25  # a pair whose faces spread less than a quarter as much as real ones counts as collapsed


def _per_tag_diversity_ratio(fake: torch.Tensor, real: torch.Tensor, labels: Labels, min_count: int = 2) -> dict:
    """Generated / real diversity for every single tag ("blue hair"), both sets drawn with the same tags."""
    out = {}
    for names, column, suffix in ((HAIR_COLOURS, labels.hair, "hair"), (EYE_COLOURS, labels.eyes, "eyes")):
        for i, name in enumerate(names):
            sel = column == i
            if int(sel.sum()) >= min_count and (d_real := diversity(real[sel])) > 0:
                out[f"{name} {suffix}"] = diversity(fake[sel]) / d_real
    return out


def evaluate(gen: FaceGenerator | PipelineFaces, tagger: TaggerNet, real: FaceSet, samples_per_tag: int = 8, seed: int = 0,
             truncation: float | None = None, heldout_fraction: float = 0.1, max_real: int = 4000) -> dict:
    t0 = time.perf_counter()
    nh, ne = N_HAIR, N_EYES
    labels = Labels(torch.arange(nh).repeat_interleave(ne * samples_per_tag),
                    torch.arange(ne).repeat_interleave(samples_per_tag).repeat(nh))
    fake = gen.draw(gen.noise(labels.hair.numel(), seed, truncation), labels)
    fake_feat = extract_features(tagger, fake)
    fake_logits = tagger.head(fake_feat)
    fake_acc = per_colour_accuracy(fake_logits, labels.hair, labels.eyes)

    held = heldout_mask(real.digest, heldout_fraction)
    split = bool(held.sum() >= 16)  # too few held-out faces: judge against all of them
    real_held = real.subset(held.nonzero().squeeze(1)) if split else real
    if len(real_held) > max_real:
        real_held = real_held.subset(torch.randperm(len(real_held), generator=torch.Generator().manual_seed(seed))[:max_real])
    real_feat = extract_features(tagger, real_held.images)
    real_acc = per_colour_accuracy(tagger.head(real_feat), real_held.hair, real_held.eyes)

    perm = torch.randperm(real_feat.shape[0], generator=torch.Generator().manual_seed(seed + 1))
    fake_perm = _fake_order(fake_feat.shape[0], seed + 2)
    grid_fd = _frechet_to_real_halves(fake_feat, real_feat, perm, fake_perm)
    m = grid_fd["n_per_set"]
    # The grid asks for pairs the real faces may not hold at all (mlds has no gray eyes): its distance then
    # also measures how unlike the reference a tag it lacks looks. The same distance over the pairs it holds:
    held_pairs = torch.bincount(real.hair * N_EYES + real.eyes, minlength=nh * ne) > 0
    asked_held = held_pairs[labels.hair * N_EYES + labels.eyes]  # per grid face: do real faces have its pair?
    if asked_held.all():
        held_fd = dict(grid_fd)
    elif asked_held.sum() >= 2:
        held_fd = _frechet_to_real_halves(fake_feat[asked_held], real_feat, perm,
                                          _fake_order(int(asked_held.sum()), seed + 2))
    else:  # one face: no covariance to compare
        held_fd = {"generated_vs_real": None, "real_vs_real": None, "ratio": None, "n_per_set": int(asked_held.sum())}
    held_fd.update(pairs=int(held_pairs.sum()), pairs_without_real_faces=[
        f"{HAIR_COLOURS[i // ne]}/{EYE_COLOURS[i % ne]}" for i in (~held_pairs).nonzero().flatten().tolist()])

    # What a generator that draws every pair exactly as the real faces do would score on that grid: real faces
    # asked for as the grid asks (the grid weighs all pairs alike, the data does not, and that alone costs distance),
    # taken from outside the held-out split so that they share no face with real half a.
    pool = (~held).nonzero().squeeze(1) if split else torch.arange(len(real))
    like_grid = _draw_like(real, pool, Labels(labels.hair[asked_held], labels.eyes[asked_held]), seed + 4)
    found = like_grid[like_grid >= 0]
    real_grid, found_feat = None, None
    if len(found) >= 2:
        found_feat = extract_features(tagger, real.images[found])
        fd = _frechet_to_real_halves(found_feat, real_feat, perm, _fake_order(len(found), seed + 2))
        real_grid = {"real_grid_vs_real": fd["generated_vs_real"], "real_vs_real": fd["real_vs_real"],
                     "ratio": fd["ratio"], "n_per_set": fd["n_per_set"],
                     "pairs": len((real.hair[found] * N_EYES + real.eyes[found]).unique()),
                     "generated_over_real_grid": held_fd["generated_vs_real"] / fd["generated_vs_real"]
                     if held_fd["generated_vs_real"] is not None and fd["generated_vs_real"] > 0 else None}

    swd_fake = sliced_wasserstein(fake[fake_perm[:m]], real_held.images[perm[:m]], seed=seed)
    swd_real = sliced_wasserstein(real_held.images[perm[m:2 * m]], real_held.images[perm[:m]], seed=seed)

    div_fake = _per_pair_diversity(fake_feat, labels.hair, labels.eyes)
    div_real = _per_pair_diversity(real_feat, real_held.hair, real_held.eyes)
    ratios = {k: div_fake[k] / v for k, v in div_real.items() if k in div_fake and v > 0}
    # the same ratios for real faces drawn as the grid draws them: how many pairs fall below 0.8 by chance alone
    div_grid = _per_pair_diversity(found_feat, real.hair[found], real.eyes[found]) if found_feat is not None else {}
    grid_ratios = {k: div_grid[k] / v for k, v in div_real.items() if k in div_grid and v > 0}

    # The matched set: faces drawn with the tags of real half b, so that against real half a they differ from
    # real half b only in being generated (the grid above asks every pair equally often; the data does not).
    half = real_feat.shape[0] // 2
    real_a2, b_idx = real_feat[perm[:half]], perm[half:2 * half]
    b_labels = Labels(real_held.hair[b_idx], real_held.eyes[b_idx])
    matched_feat = extract_features(tagger, gen.draw(gen.noise(half, seed + 3, truncation), b_labels))
    stats_a2 = feature_stats(real_a2)
    fd_matched = frechet_distance(*feature_stats(matched_feat), *stats_a2)
    fd_matched_real = frechet_distance(*feature_stats(real_feat[b_idx]), *stats_a2)
    tag_ratios = _per_tag_diversity_ratio(matched_feat, real_feat[b_idx], b_labels)
    return {
        "checkpoint": str(gen.source), "step": gen.step, "recipe": gen.name,
        "samples_per_tag": samples_per_tag, "truncation": truncation if truncation is not None else
        gen.default_truncation, "seed": seed,
        "generated": {**fake_acc, "diversity_mean": float(np.mean(list(div_fake.values()))) if div_fake else None,
                      "diversity_min": min(div_fake.values()) if div_fake else None, "diversity_per_pair": div_fake},
        "real_heldout": {**real_acc, "diversity_mean": float(np.mean(list(div_real.values()))) if div_real else None,
                         "diversity_per_pair": div_real},
        "frechet_tagger": grid_fd,
        "frechet_tagger_held_pairs": held_fd,
        "frechet_tagger_real_grid": real_grid,
        "swd": {"generated_vs_real": swd_fake, "real_vs_real": swd_real,
                "mean_generated_vs_real": float(np.mean(list(swd_fake.values()))),
                "mean_real_vs_real": float(np.mean(list(swd_real.values()))), "n_per_set": m},
        "diversity_ratio": {"mean": float(np.mean(list(ratios.values()))) if ratios else None,
                            "min": min(ratios.values()) if ratios else None,
                            "pairs_below_0.8": sorted(k for k, r in ratios.items() if r < 0.8),
                            "pairs_collapsed": sorted(k for k, r in ratios.items() if r < COLLAPSED),
                            "real_grid_pairs_below_0.8": sorted(k for k, r in grid_ratios.items() if r < 0.8),
                            "real_grid_min": min(grid_ratios.values()) if grid_ratios else None},
        "matched": {"n": half, "frechet_generated_vs_real": fd_matched, "frechet_real_vs_real": fd_matched_real,
                    "frechet_ratio": fd_matched / fd_matched_real if fd_matched_real > 0 else None,
                    "diversity_ratio_per_tag": tag_ratios,
                    "diversity_ratio_min": min(tag_ratios.values()) if tag_ratios else None,
                    "tags_below_0.8": sorted(k for k, r in tag_ratios.items() if r < 0.8)},
        "confusion": {"hair": confusion(fake_logits[:, :nh].argmax(1), labels.hair, nh).tolist(),
                      "eyes": confusion(fake_logits[:, nh:].argmax(1), labels.eyes, ne).tolist()},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def confusion_image(matrix: list[list[int]], names: tuple[str, ...], title: str, cell: int = 28) -> Image.Image:
    m = np.asarray(matrix, dtype=np.float64)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    left, top = 60, 70
    n = len(names)
    img = Image.new("RGB", (left + n * cell + 10, top + n * cell + 10), "white")
    d = ImageDraw.Draw(img)
    d.text((4, 4), title + " (rows: asked, columns: tagger)", fill="black")
    for i, name in enumerate(names):
        d.text((4, top + i * cell + cell // 3), name[:8], fill="black")
        d.text((left + i * cell + 2, top - 14 - 12 * (i % 2)), name[:5], fill="black")
        for j in range(n):
            v = rows[i, j]
            shade = int(255 * (1 - v))
            d.rectangle([left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1],
                        fill=(shade, shade, 255))
            if v >= 0.05:
                d.text((left + j * cell + 3, top + i * cell + 8), f"{v:.2f}"[1:] if v < 1 else "1.0",
                       fill="white" if v > 0.5 else "black")
    return img


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _matched_lines(mt: dict | None) -> list[str]:
    if not mt:
        return []
    return [f"Matched set ({mt['n']} faces drawn with the tags of held-out real faces): Frechet generated vs real "
            f"{_fmt(mt['frechet_generated_vs_real'])}, real vs real {_fmt(mt['frechet_real_vs_real'])}, ratio "
            f"{_fmt(mt['frechet_ratio'])}; diversity ratio per tag: lowest {_fmt(mt['diversity_ratio_min'])}, "
            f"tags below 0.8: {', '.join(mt['tags_below_0.8']) or 'none'}.", ""]


def _held_pairs_lines(hp: dict | None) -> list[str]:
    if not hp or not hp["pairs_without_real_faces"]:
        return []
    missing = hp["pairs_without_real_faces"]
    shown = ", ".join(missing[:16]) + (f" and {len(missing) - 16} more" if len(missing) > 16 else "")
    return [f"The same over the {hp['pairs']} pairs the real faces hold (they have no {shown}), {hp['n_per_set']} "
            f"faces per set: generated vs real {_fmt(hp['generated_vs_real'])}, real vs real {_fmt(hp['real_vs_real'])}, "
            f"ratio {_fmt(hp['ratio'])}.", ""]


def _real_grid_lines(rg: dict | None, samples_per_tag: int) -> list[str]:
    if not rg:
        return []
    return [f"Real faces drawn as the grid draws them ({samples_per_tag} for each of {rg['pairs']} pairs, from outside "
            f"the held-out split), {rg['n_per_set']} faces per set: vs real {_fmt(rg['real_grid_vs_real'])}, ratio "
            f"{_fmt(rg['ratio'])}: what the grid's ratio is for a generator that draws every pair as the real faces "
            f"do; the generated grid over the same pairs is {_fmt(rg['generated_over_real_grid'])} times "
            f"their distance.", ""]


def _swd_lines(swd: dict | None) -> list[str]:
    if not swd:
        return []
    sizes = " / ".join(str(k) for k in swd["generated_vs_real"])
    levels = lambda v: " / ".join(f"{x:.1f}" for x in v.values())
    return [f"Sliced Wasserstein distance of Laplacian-pyramid patches (x 1000, levels {sizes} px, no network "
            f"involved), {swd['n_per_set']} faces per set: generated vs real {levels(swd['generated_vs_real'])} "
            f"(mean {swd['mean_generated_vs_real']:.1f}), real vs real {levels(swd['real_vs_real'])} "
            f"(mean {swd['mean_real_vs_real']:.1f}).", ""]


def markdown_report(r: dict) -> str:
    g, real, fd = r["generated"], r["real_heldout"], r["frechet_tagger"]
    lines = [
        f"# tagface evaluation: {r['recipe']} at step {r['step']}", "",
        f"checkpoint `{r['checkpoint']}`, {r['samples_per_tag']} samples per hair x eye pair, "
        f"truncation {r['truncation']}, seed {r['seed']}", "",
        "| | hair acc | eye acc | both | mean diversity |", "| --- | --- | --- | --- | --- |",
        f"| generated | {_fmt(g['hair'])} | {_fmt(g['eyes'])} | {_fmt(g['both'])} | {_fmt(g['diversity_mean'])} |",
        f"| real held-out (ceiling) | {_fmt(real['hair'])} | {_fmt(real['eyes'])} | {_fmt(real['both'])} | "
        f"{_fmt(real['diversity_mean'])} |", "",
        f"Frechet distance in the tagger's feature space (not Inception FID), {fd['n_per_set']} faces per set: "
        f"generated vs real {_fmt(fd['generated_vs_real'])}, real vs real {_fmt(fd['real_vs_real'])}, "
        f"ratio {_fmt(fd['ratio'])}.", "",
        *_held_pairs_lines(r.get("frechet_tagger_held_pairs")),
        *_real_grid_lines(r.get("frechet_tagger_real_grid"), r["samples_per_tag"]),
        *_swd_lines(r.get("swd")),
        f"Diversity ratio generated / real per pair: mean {_fmt(r['diversity_ratio']['mean'])}, min "
        f"{_fmt(r['diversity_ratio']['min'])}; lowest generated pair diversity {_fmt(g['diversity_min'])}; "
        f"pairs below 0.8: {len(r['diversity_ratio']['pairs_below_0.8'])}; collapsed (below {COLLAPSED}): "
        f"{len(r['diversity_ratio'].get('pairs_collapsed', []))}"
        + (f"; real faces drawn as the grid draws them: {len(r['diversity_ratio']['real_grid_pairs_below_0.8'])} "
           f"pairs below 0.8 by chance, lowest {_fmt(r['diversity_ratio']['real_grid_min'])}"
           if "real_grid_pairs_below_0.8" in r["diversity_ratio"] else "") + ".", "",
        *_matched_lines(r.get("matched")),
        "| hair colour | accuracy |", "| --- | --- |",
        *[f"| {c} | {_fmt(v)} |" for c, v in g["per_hair"].items()], "",
        "| eye colour | accuracy |", "| --- | --- |",
        *[f"| {c} | {_fmt(v)} |" for c, v in g["per_eyes"].items()], "",
        "![confusion](confusion.png)", "",
    ]
    for key in ("fid", "kid"):
        if key in r:
            lines.insert(8, f"Inception {key.upper()} (pt_inception-2015-12-05): {_fmt(r[key])}")
    return "\n".join(lines)


def write_report(r: dict, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(r, indent=2))
    atomic_write_text(out / "report.md", markdown_report(r))
    a = confusion_image(r["confusion"]["hair"], HAIR_COLOURS, "hair")
    b = confusion_image(r["confusion"]["eyes"], EYE_COLOURS, "eyes")
    both = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
    both.paste(a, (0, 0))
    both.paste(b, (a.width, 0))
    atomic_write(out / "confusion.png", lambda tmp: both.save(tmp, format="PNG"))
