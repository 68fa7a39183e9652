#!/usr/bin/env bash
# One lent-GPU session that fine-tunes the shipped default model (docs/ablations.md, "Past step 15800, on a GPU"):
# four continuations of recipe default-model-gpu side by side for TRAIN_S seconds each, from the package's
# generator and discriminator (step 15800 then; arm C made step 27000, shipped since).
# Carried (ignored folder gpu/):
#   gpu/mlds-jpeg15k.tar.gz  python benchmarks/pack_faces.py ../shared/data/mlds2018-extra gpu/mlds-jpeg15k.tar.gz --original --limit 15000
#   gpu/tagger-indep.safetensors  the frozen G loss (docs/model-card.md)
# Writes $OUT/<arm>.tar (its EMA generator, fp16, at half time and at the end; with EXPORT_D=1 its D at the end)
# and $OUT/logs.tgz. Usage: TRAIN_S=440 bash benchmarks/gpu_continue.sh     (DEV=cpu TRAIN_S=30 to try it here)
# The third session, from step 27000 (the package's G and its D) with and without mode seeking:
#   ARMS="C N H" SMOKE_STEPS=27002 MID_PCT=60 EXPORT_D=1 TRAIN_S=470 bash benchmarks/gpu_continue.sh
# and the fourth, arm C's end of the third put in place of the package's weights (no room to carry them beside the
# data), alone, with fp16 snapshots every 60 s:
#   ARMS=C SMOKE_STEPS=38502 SNAP_S=60 EXPORT_D=1 TRAIN_S=210 bash benchmarks/gpu_continue.sh
# A second session from one arm's generator (a new D warmed up first; its first session's D did not come back):
#   ARMS=C INIT=gpu/init/C-end.safetensors DWARM=500 SMOKE_STEPS=27002 DATA=gpu/mlds-jpeg12k.tar.gz EXPORT_D=1 bash benchmarks/gpu_continue.sh
# Next, against D's overfitting on the subset (its loss fell to 0.06): the recipe beside ADA,
#   ARMS="C ADA" SMOKE_STEPS=38502 MID_PCT=60 EXPORT_D=1 TRAIN_S=470 bash benchmarks/gpu_continue.sh
# (The 2026-11-30 session ran this with the recipe as an untracked gpu/continue.yaml: the same values, batch 64 and
# lr 5e-5 as its base, so its arms named the changes the other way round.)
set -u
T0=$(date +%s); TRAIN_S=${TRAIN_S:-440}; OUT=${OUT:-/tmp/out}; DEV=${DEV:-cuda}; THREADS=${THREADS:-4}
ARMS=${ARMS:-A B C D}; INIT=${INIT:-default}; DATA=${DATA:-gpu/mlds-jpeg15k.tar.gz}
mkdir -p "$OUT" logs runs
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TAGFACE_CACHE=/tmp/tfcache
say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
finish() {
  nvidia-smi > logs/nvidia-smi.txt 2>&1
  tar czf "$OUT/logs.tgz" logs runs/*/metrics.jsonl runs/*/config.yaml runs/*/run.json 2>/dev/null; say done
}
trap finish EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > logs/gpu.txt 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" | tee -a logs/gpu.txt
rm -rf /tmp/mlds; mkdir -p /tmp/mlds && tar xzf "$DATA" -C /tmp/mlds
say "data unpacked: $(ls /tmp/mlds/images | wc -l) images"
LOSSES="--set loss.frozen_classifier=gpu/tagger-indep.safetensors --set train.log_every=50 --set train.sample_every=100000"
arm_args() {  # what each continuation changes from the recipe (batch 256, lr 1e-4)
  case $1 in
    A) echo "--set train.batch_size=64 --set train.lr_g=5e-5 --set train.lr_d=5e-5" ;;   # the CPU runs' settings
    B) echo "--set train.lr_g=5e-5 --set train.lr_d=5e-5" ;;
    C) echo "" ;;                                                                          # the recipe as it is
    D) echo "--set train.lr_g=5e-5 --set train.lr_d=5e-5 --set train.diffaugment=translation,cutout" ;;
    N) echo "--set loss.mode_seeking=0" ;;     # the one CPU continuation past 27000 that held level
    H) echo "--set loss.mode_seeking=0.5" ;;
    ADA) echo "--set train.diffaugment=color,translation,cutout --set train.ada_target=0.6" ;;  # ADA from the lease's start
  esac
}
train() {  # arm, steps, seconds. Stopped by SIGTERM: the last checkpoint (every 500 steps) counts
  timeout "$3" python3 -m tagface train --config default-model-gpu $LOSSES --init "$INIT" ${DWARM:+--d-warmup $DWARM} --data /tmp/mlds --out "runs/$1" \
    --steps "$2" --device $DEV --threads $THREADS --no-progress --set train.checkpoint_every=${CKPT_EVERY:-500} $(arm_args $1) > "logs/train-$1.log" 2>&1
}
# smoke: every arm for a few steps (catches a bad override before the long runs) and the data cache, built once
smoke() { train $1 ${SMOKE_STEPS:-15802} 120 || { tail -5 logs/train-$1.log; say "smoke $1 failed"; return 1; }; rm -rf runs/$1; }
set -- $ARMS; smoke $1 || exit 1; shift
for a in "$@"; do smoke $a & done; for job in $(jobs -p); do wait $job || exit 1; done
say "smoke passed"
export_g() { python3 -m tagface export --checkpoint "$1" --format safetensors --half --out "$2" >> logs/export.log 2>&1; }
for a in $ARMS; do train $a 1000000 "$TRAIN_S" & done
if [ -n "${SNAP_S:-}" ]; then  # fp16 snapshots straight into $OUT every SNAP_S seconds: a lease cut short keeps them
  for i in $(seq $(( TRAIN_S / SNAP_S - 1 ))); do
    sleep "$SNAP_S"; for a in $ARMS; do export_g runs/$a/generator.safetensors "$OUT/$a-snap$i.safetensors" & done
  done
else
  sleep $(( TRAIN_S * ${MID_PCT:-50} / 100 )); for a in $ARMS; do cp runs/$a/generator.safetensors /tmp/$a-mid.safetensors || say "no $a snapshot yet"; done
  say "half-time snapshots taken"
fi
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> logs/gpu.txt 2>&1
wait; say "training stopped"; rm -rf /tmp/ex
for a in $ARMS; do
  echo "$a: $(tail -1 runs/$a/metrics.jsonl)"
  mkdir -p /tmp/ex/$a
  [ -z "${SNAP_S:-}" ] && export_g /tmp/$a-mid.safetensors /tmp/ex/$a/$a-mid.safetensors &
  export_g runs/$a /tmp/ex/$a/$a-end.safetensors &
  [ -n "${EXPORT_D:-}" ] && python3 -m tagface export --checkpoint runs/$a --discriminator --half \
    --out "$OUT/$a-end-discriminator.safetensors" >> logs/export.log 2>&1 &
done
wait; for a in $ARMS; do tar cf "$OUT/$a.tar" -C /tmp/ex/$a .; done
say "exported"; grep -i error logs/export.log | head -3
