#!/usr/bin/env bash
# Continue a run in chunks, evaluating after each: how the ablations past step 10300 were run.
#   bash benchmarks/train_chunks.sh RUN FROM UNTIL CHUNK [--set KEY=VALUE ...]
# RUN is a run directory under runs/ (a copy of the run to continue); THREADS (default 1) torch threads;
# DATA (default ../shared/data/mlds2018-extra; several folders separated by spaces) to train on, EVAL_DATA
# (default DATA's first folder) to evaluate against. Each chunk: `tagface train --resume --steps N`, then
# `tagface evaluate` into runs/RUN/eval-N, and one summary line appended to runs/chunks.log. Each chunk's
# generator and checkpoint are kept as gen-N.safetensors and ckpt-N.safetensors, to evaluate or ship any step.
set -euo pipefail
if [ $# -lt 4 ]; then sed -n 3,8p "$0"; exit 2; fi
R=$1; FROM=$2; UNTIL=$3; CHUNK=$4; shift 4
DATA=${DATA:-../shared/data/mlds2018-extra}
DATA_ARGS=(); for d in $DATA; do DATA_ARGS+=(--data "$d"); done
for n in $(seq $((FROM + CHUNK)) "$CHUNK" "$UNTIL"); do
  tagface train "${DATA_ARGS[@]}" --out "runs/$R" --resume --steps "$n" --threads "${THREADS:-1}" --no-progress "$@" >> "runs/$R.log" 2>&1
  cp "runs/$R/generator.safetensors" "runs/$R/gen-$n.safetensors"
  cp "runs/$R/checkpoint.safetensors" "runs/$R/ckpt-$n.safetensors"
  tagface evaluate --checkpoint "runs/$R" --real "${EVAL_DATA:-${DATA%% *}}" --samples-per-tag 8 --out "runs/$R/eval-$n" > "runs/$R.eval-$n.log" 2>&1
  echo "$(date +%T) $R step $n: $(tail -1 "runs/$R.eval-$n.log")" >> runs/chunks.log
done
