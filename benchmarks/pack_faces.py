"""Pack a data folder small enough to travel with a remote GPU run: the images as WebP (or as they are) in one tar.

A run on a lent GPU machine may carry only 64 MiB; the 36,740 mlds faces are 116 MB of JPEG but 43 MB as WebP
at quality 80. Lossy: the re-encoding alone moves real faces' Frechet distance from 2.05 to 3.78
(benchmarks/reencode_frechet.py, docs/ablations.md), so for fine-tuning prefer the original files of a random
subset (`--original --limit N`). The archive unpacks to a folder `tagface train --data` reads as is (tags.csv,
holding only the packed rows, + images/).

    python benchmarks/pack_faces.py ../shared/data/mlds2018-extra gpu/mlds-webp80.tar.gz --quality 80
    python benchmarks/pack_faces.py ../shared/data/mlds2018-extra gpu/mlds-jpeg12k.tar.gz --original --limit 12000
    python benchmarks/pack_faces.py ../shared/data/mlds2018-extra gpu/mlds-jpeg15k-b.tar.gz --original --limit 15000 \
        --seed 1 --exclude-seed 0     # 15,000 faces none of the GPU runs so far trained on
"""
from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tarfile
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

from tagface.data import read_records
from tagface.errors import TagfaceError


def encode(args) -> tuple[str, str, bytes]:
    path, quality = args
    if quality is None:  # --original: the file's own bytes
        return Path(path).stem, Path(path).suffix, Path(path).read_bytes()
    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, "WEBP", quality=quality, method=6)
    return Path(path).stem, ".webp", buf.getvalue()


def subset(folder: str | Path, limit: int, seed: int = 0, exclude_seed: int | None = None) -> list:
    """The records packed: every one whose image exists, or a random `limit` of them (also what
    benchmarks/memorisation.py takes as a run's training faces); with `exclude_seed`, drawn from the faces outside
    the subset of the same size that seed draws, so that a next run's D sees only faces the last one never did."""
    records = [r for r in read_records(folder) if r.path.exists()]

    def draw(pool: list, s: int) -> list:
        return sorted(random.Random(s).sample(pool, min(limit, len(pool))), key=lambda r: r.id)

    if limit and exclude_seed is not None:  # the same records, read once
        seen = {r.id for r in draw(records, exclude_seed)}
        records = [r for r in records if r.id not in seen]
    return draw(records, seed) if limit else records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="data folder with tags.csv")
    ap.add_argument("out", help="output .tar.gz")
    ap.add_argument("--quality", type=int, default=80, help="WebP quality")
    ap.add_argument("--original", action="store_true", help="store the image files as they are, not as WebP")
    ap.add_argument("--limit", type=int, default=0, help="pack a random subset of this many images (0: all)")
    ap.add_argument("--seed", type=int, default=0, help="seed for --limit's subset")
    ap.add_argument("--exclude-seed", type=int, help="leave out the --limit subset this seed draws (the last run's faces)")
    args = ap.parse_args()
    if args.limit < 0:
        raise TagfaceError(f"--limit {args.limit}: must be 0 (all images) or a positive count")
    if args.exclude_seed is not None and not args.limit:
        raise TagfaceError(f"--exclude-seed {args.exclude_seed}: needs --limit, the size of the subset to leave out")
    folder = Path(args.folder)
    records = subset(folder, args.limit, args.seed, args.exclude_seed)
    quality = None if args.original else args.quality
    with Pool(os.cpu_count()) as pool:
        encoded = pool.map(encode, [(r.path, quality) for r in records], chunksize=256)
    kept = {r.id for r in records}
    lines = (folder / "tags.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    # the header (adl layout) and the packed images' rows: the rows of images left behind would point at nothing
    tags = b"".join(line.encode() for i, line in enumerate(lines)
                    if Path(line.split(",", 1)[0].strip()).stem in kept or (i == 0 and "hair" in line.lower()
                                                                             and "eyes" in line.lower()
                                                                             and " hair" not in line.lower()))
    tmp = Path(args.out + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:  # gzip: squeezes out the tar headers and padding
        info = tarfile.TarInfo("tags.csv")
        info.size = len(tags)
        tar.addfile(info, io.BytesIO(tags))
        for stem, suffix, data in encoded:
            info = tarfile.TarInfo(f"images/{stem}{suffix}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(f"{len(encoded)} images, {Path(args.out).stat().st_size / 2**20:.1f} MiB -> {args.out}")


if __name__ == "__main__":
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"pack_faces: error: {err}")
