"""Frechet distance (the shipped tagger's features, as `tagface evaluate`) between held-out real mlds faces and
WebP re-encodings of other real faces: what re-encoding the training data alone costs (docs/ablations.md, "On a GPU");
and the shipped generator's distance with and without a JPEG round trip at the data's own quality (95), to see
whether its gap to real faces is missing JPEG texture (by the tagger's Frechet distance and by the network-free
sliced Wasserstein distance of evaluate's report).

    python benchmarks/reencode_frechet.py [DATA]
"""
from __future__ import annotations

import io
import sys

import numpy as np
import torch
from PIL import Image

from tagface.data import load_folder
from tagface.errors import TagfaceError
from tagface.evaluation import evaluate, feature_stats, frechet_distance
from tagface.sampling import FaceGenerator
from tagface.tagger import extract_features, heldout_mask, load_tagger


def round_trip(images: torch.Tensor, quality: int, fmt: str = "WEBP") -> torch.Tensor:
    """uint8 [N, 3, R, R] -> the same faces after a lossy WebP (or JPEG) round trip."""
    out = []
    for x in images:
        buf = io.BytesIO()
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, fmt, quality=quality, **({"method": 6} if fmt == "WEBP" else {}))
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).transpose(2, 0, 1).copy()))
    return torch.stack(out)


def main() -> None:
    real = load_folder(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mlds2018-extra", 64, verbose=False)
    held = real.subset(heldout_mask(real.digest, 0.1).nonzero().squeeze(1))  # the faces evaluate compares with
    held = held.subset(torch.randperm(len(held), generator=torch.Generator().manual_seed(0))[:4000])
    tagger = load_tagger()
    perm = torch.randperm(len(held), generator=torch.Generator().manual_seed(1))
    m = 1056  # as many as evaluate's sets (8 per pair)
    a, b = held.images[perm[:m]], held.images[perm[m:2 * m]]
    stats_a = feature_stats(extract_features(tagger, a))
    fd = lambda images: frechet_distance(*feature_stats(extract_features(tagger, images)), *stats_a)  # noqa: E731
    print(f"real vs real (other faces): {fd(b):.2f}")
    for q in (80, 90):
        print(f"WebP q{q} of other faces vs real: {fd(round_trip(b, q)):.2f}")
    print(f"WebP q80 of the same faces vs real: {fd(round_trip(a, 80)):.2f}")

    class JpegFaces(FaceGenerator):  # what evaluate sees when every generated face is saved as the data's JPEGs
        def draw(self, z, labels, batch_size=256):
            return round_trip(super().draw(z, labels, batch_size), 95, "JPEG")

    shipped = FaceGenerator.load()
    for name, gen in (("shipped generator", shipped),
                      ("shipped generator, JPEG q95", JpegFaces(shipped.G, shipped.recipe, shipped.freq, shipped.step,
                                                                 shipped.source))):
        r = evaluate(gen, tagger, real, samples_per_tag=8, seed=0)
        swd = " / ".join(f"{v:.1f}" for v in r["swd"]["generated_vs_real"].values())
        print(f"{name}: Frechet {r['frechet_tagger']['generated_vs_real']:.2f} (ratio {r['frechet_tagger']['ratio']:.2f}); "
              f"sliced Wasserstein {swd} (real vs real {' / '.join(f'{v:.1f}' for v in r['swd']['real_vs_real'].values())})")


if __name__ == "__main__":
    if sys.argv[1:2] in (["-h"], ["--help"]):
        sys.exit(__doc__)
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"reencode_frechet: error: {err}")
