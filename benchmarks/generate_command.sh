#!/usr/bin/env bash
# The whole `tagface generate` command, process start to picture written, against `import torch` alone:
#   bash benchmarks/generate_command.sh [RUNS]   (default 7; prints each time and the medians)
# The shipped model draws with numpy (tagface.numpy_generator), so the command should not pay for torch. Last,
# 16 faces in process (after loading), numpy against torch, median of 11 calls each. --strict-tags (the tagger
# in numpy too, tagface.numpy_tagger) is timed beside them.
set -euo pipefail
RUNS=${1:-7}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
timed() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -1; }
cmd=$(for _ in $(seq "$RUNS"); do timed tagface generate "blue hair red eyes" -n 16 --seed 0 --out "$out/grid.png"; done)
grid=$(for _ in $(seq "$RUNS"); do timed tagface generate --tag-grid --out "$out/tag-grid.png"; done)
strict=$(for _ in $(seq "$RUNS"); do timed tagface generate "blue hair red eyes" -n 16 --seed 0 --strict-tags --out "$out/strict.png"; done)
torch=$(for _ in $(seq "$RUNS"); do timed python -c "import torch"; done)
echo "tagface generate, 16 faces (s): $(echo $cmd)  median $(echo "$cmd" | median)"
echo "tagface generate --tag-grid, 132 faces (s): $(echo $grid)  median $(echo "$grid" | median)"
echo "tagface generate --strict-tags, 16 faces (s): $(echo $strict)  median $(echo "$strict" | median)"
echo "python -c 'import torch' (s): $(echo $torch)  median $(echo "$torch" | median)"
python - <<'PY'
import statistics, time
import numpy as np
from tagface.numpy_generator import load_generator
from tagface.sampling import FaceGenerator
from tagface.tags import Tags
gens = (load_generator(), FaceGenerator.load())
for gen in gens:
    times = []
    for seed in range(11):
        t = time.perf_counter()
        gen.generate(Tags("blue", "red"), 16, seed=seed)
        times.append(time.perf_counter() - t)
    print(f"16 faces in process, {type(gen).__name__}: median {1000 * statistics.median(times):.1f} ms")
a, b = (np.asarray(g.tag_grid(0)).astype(int) for g in gens)  # the 132 faces of the grid, drawn both ways
print(f"numpy vs torch, tag grid: largest uint8 difference {np.abs(a - b).max()}, pixels differing {np.mean(a != b):.5%}")
PY
