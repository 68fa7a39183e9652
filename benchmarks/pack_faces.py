"""Pack a data folder small enough to travel with a remote GPU run: every image re-encoded as WebP into one tar.

A run on a lent GPU machine may carry only 64 MiB; the 36,740 mlds faces are 116 MB of JPEG but 43 MB as WebP
at quality 80. Lossy: the re-encoding alone moves real faces' Frechet distance from 2.05 to 3.78
(benchmarks/reencode_frechet.py, docs/ablations.md), so prefer a higher quality on a subset. The archive unpacks to
a folder `tagface train --data` reads as is (tags.csv + images/<id>.webp).

    python benchmarks/pack_faces.py ../shared/data/mlds2018-extra gpu/mlds-webp80.tar.gz --quality 80
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

from tagface.data import read_records
from tagface.errors import TagfaceError


def encode(args) -> tuple[str, bytes]:
    path, quality = args
    buf = io.BytesIO()
    with Image.open(path) as im:
        im.convert("RGB").save(buf, "WEBP", quality=quality, method=6)
    return Path(path).stem, buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="data folder with tags.csv")
    ap.add_argument("out", help="output .tar.gz")
    ap.add_argument("--quality", type=int, default=80)
    args = ap.parse_args()
    folder = Path(args.folder)
    tags = folder / "tags.csv"
    paths = [r.path for r in read_records(folder) if r.path.exists()]
    with Pool(os.cpu_count()) as pool:
        encoded = pool.map(encode, [(p, args.quality) for p in paths], chunksize=256)
    tmp = Path(args.out + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:  # gzip: squeezes out the tar headers and padding
        tar.add(tags, arcname="tags.csv")
        for stem, data in encoded:
            info = tarfile.TarInfo(f"images/{stem}.webp")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(f"{len(encoded)} images, {Path(args.out).stat().st_size / 2**20:.1f} MiB -> {args.out}")


if __name__ == "__main__":
    try:
        main()
    except TagfaceError as err:  # bad input: one line, as the tagface commands give it
        sys.exit(f"pack_faces: error: {err}")
