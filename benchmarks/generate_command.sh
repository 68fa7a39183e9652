#!/usr/bin/env bash
# The whole `tagface generate` command, process start to picture written, against `import torch` alone:
#   bash benchmarks/generate_command.sh [RUNS]   (default 7; prints each time and the medians)
# The shipped model draws with numpy (tagface.numpy_generator), so the command should not pay for torch.
set -euo pipefail
RUNS=${1:-7}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
timed() { /usr/bin/time -f %e "$@" 2>&1 >/dev/null | tail -1; }
cmd=$(for _ in $(seq "$RUNS"); do timed tagface generate "blue hair red eyes" -n 16 --seed 0 --out "$out/grid.png"; done)
grid=$(for _ in $(seq "$RUNS"); do timed tagface generate --tag-grid --out "$out/tag-grid.png"; done)
torch=$(for _ in $(seq "$RUNS"); do timed python -c "import torch"; done)
echo "tagface generate, 16 faces (s): $(echo $cmd)  median $(echo "$cmd" | median)"
echo "tagface generate --tag-grid, 132 faces (s): $(echo $grid)  median $(echo "$grid" | median)"
echo "python -c 'import torch' (s): $(echo $torch)  median $(echo "$torch" | median)"
