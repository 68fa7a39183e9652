"""How often `tagface crop`'s detector finds a known face, and how its box compares with the course data's
framing: each face picture of a data folder, enlarged, is pasted on a plain 480 x 360 canvas at a random place,
and the detector looks for it (a hit: one box whose centre is inside the pasted face; a false face: any other).

    python benchmarks/crop_recall.py ../shared/data/lbpcascade_animeface.xml ../shared/data/adl2017-faces/faces 200 2
"""
import random
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tagface.crop import CascadeDetector


def main(cascade: str, folder: str, n: int = 200, zoom: float = 2.0) -> None:
    detect, rng = CascadeDetector(cascade), random.Random(0)
    files = sorted(Path(folder).glob("*.jpg"))
    files = rng.sample(files, min(n, len(files)))
    hits, false_faces, ratios, seconds = 0, 0, [], 0.0
    for f in files:
        face = Image.open(f).convert("RGB")
        side = round(face.width * zoom)
        x, y = rng.randint(0, 480 - side), rng.randint(0, 360 - side)
        canvas = Image.new("RGB", (480, 360), (235, 230, 220))
        canvas.paste(face.resize((side, side), Image.LANCZOS), (x, y))
        t0 = time.perf_counter()
        boxes = detect(np.asarray(canvas))
        seconds += time.perf_counter() - t0
        inside = [b for b in boxes if x <= b.x + b.w / 2 <= x + side and y <= b.y + b.h / 2 <= y + side]
        hits += bool(inside)
        false_faces += len(boxes) - len(inside)
        ratios += [b.w / side for b in inside[:1]]
    q = np.quantile(ratios, [0.05, 0.5, 0.95]) if ratios else [float("nan")] * 3
    print(f"{folder}: {len(files)} faces at {zoom}x: found {hits} ({hits / len(files):.0%}), false faces "
          f"{false_faces}; box side / face picture side 5% {q[0]:.2f}, median {q[1]:.2f}, 95% {q[2]:.2f}; "
          f"{1000 * seconds / len(files):.0f} ms per 480 x 360 picture")


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]), *(float(a) for a in sys.argv[4:5]))
