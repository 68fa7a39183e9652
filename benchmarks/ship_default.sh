#!/usr/bin/env bash
# Ship a run's step as the default model: G (fp16) and its D (fp16) into the package, then the evaluation with
# three seeds and the tag grid the model card quotes.
#   bash benchmarks/ship_default.sh GENERATOR.safetensors CHECKPOINT.safetensors NAME
# GENERATOR: the run's generator file of that step (EMA weights, standing statistics); CHECKPOINT: the run's
# training checkpoint of the same step (for D). Evaluations go to runs/ship-NAME-sSEED; DATA as in train_chunks.sh.
# TAG_GUIDANCE=1 ships G with tag guidance folded in, measured by GUIDANCE_TAGGER (default runs/tagger-indep.safetensors,
# not the judge; docs/ablations.md, "Tag guidance").
set -euo pipefail
if [ $# -ne 3 ]; then sed -n 3,6p "$0"; exit 2; fi
G=$1; C=$2; NAME=$3
DATA=${DATA:-../shared/data/mlds2018-extra}
W=src/tagface/weights
GUIDE=()
if [ -n "${TAG_GUIDANCE:-}" ]; then
  GUIDE=(--tag-guidance "$TAG_GUIDANCE" --guidance-tagger "${GUIDANCE_TAGGER:-runs/tagger-indep.safetensors}")
fi
tagface export --checkpoint "$G" --format safetensors --half "${GUIDE[@]}" --out "$W/default.safetensors"
tagface export --checkpoint "$C" --discriminator --half --out "$W/default-discriminator.safetensors"
for s in 0 1 2; do
  tagface evaluate --real "$DATA" --samples-per-tag 8 --seed $s --out "runs/ship-$NAME-s$s" 2>&1 | tail -1
done
tagface generate --tag-grid --out docs/images/tag-grid-default.png
