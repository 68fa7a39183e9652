#!/usr/bin/env bash
# One lent-GPU session that fine-tunes the shipped default model (docs/ablations.md, "Past step 15800, on a GPU"):
# four continuations side by side for TRAIN_S seconds each, from the package's generator and discriminator.
# Carried (ignored folder gpu/):
#   gpu/mlds-jpeg15k.tar.gz  python benchmarks/pack_faces.py ../shared/data/mlds2018-extra gpu/mlds-jpeg15k.tar.gz --original --limit 15000
#   gpu/tagger-indep.safetensors  the frozen G loss (docs/model-card.md)
#   gpu/continue.yaml        configs/default-model.yaml at its last stage, without stages (the commands in ablations.md)
# Writes $OUT/<arm>.tar (its EMA generator, fp16, at half time and at the end) and $OUT/logs.tgz.
# Usage: TRAIN_S=440 bash benchmarks/gpu_continue.sh     (DEV=cpu TRAIN_S=30 to try it here)
set -u
T0=$(date +%s); TRAIN_S=${TRAIN_S:-440}; OUT=${OUT:-/tmp/out}; DEV=${DEV:-cuda}; THREADS=${THREADS:-4}
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
mkdir -p /tmp/mlds && tar xzf gpu/mlds-jpeg15k.tar.gz -C /tmp/mlds
say "data unpacked: $(ls /tmp/mlds/images | wc -l) images"
ARMS="A B C D"
arm_args() {  # what each continuation changes; all start from the shipped G and D at lr 5e-5
  case $1 in
    A) echo "" ;;                                                        # batch 64: the CPU runs' batch
    B) echo "--set train.batch_size=256" ;;
    C) echo "--set train.batch_size=256 --set train.lr_g=1e-4 --set train.lr_d=1e-4" ;;
    D) echo "--set train.batch_size=256 --set train.diffaugment=translation,cutout" ;;
  esac
}
train() {  # arm, steps, seconds. Stopped by SIGTERM: the last checkpoint (every 500 steps) counts
  timeout "$3" python3 -m tagface train --config gpu/continue.yaml --init default --data /tmp/mlds --out "runs/$1" \
    --steps "$2" --device $DEV --threads $THREADS --no-progress --set train.checkpoint_every=${CKPT_EVERY:-500} $(arm_args $1) > "logs/train-$1.log" 2>&1
}
# smoke: every arm for a few steps (catches a bad override before the long runs) and the data cache, built once
smoke() { train $1 15802 120 || { tail -5 logs/train-$1.log; say "smoke $1 failed"; return 1; }; rm -rf runs/$1; }
smoke A || exit 1
for a in B C D; do smoke $a & done; for job in $(jobs -p); do wait $job || exit 1; done
say "smoke passed"
for a in $ARMS; do train $a 1000000 "$TRAIN_S" & done
sleep $(( TRAIN_S / 2 )); for a in $ARMS; do cp runs/$a/generator.safetensors /tmp/$a-mid.safetensors || say "no $a snapshot yet"; done
say "half-time snapshots taken"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> logs/gpu.txt 2>&1
wait; say "training stopped"
export_g() { python3 -m tagface export --checkpoint "$1" --format safetensors --half --out "$2" >> logs/export.log 2>&1; }
for a in $ARMS; do
  echo "$a: $(tail -1 runs/$a/metrics.jsonl)"
  mkdir -p /tmp/ex/$a
  export_g /tmp/$a-mid.safetensors /tmp/ex/$a/$a-mid.safetensors &
  export_g runs/$a /tmp/ex/$a/$a-end.safetensors &
done
wait; for a in $ARMS; do tar cf "$OUT/$a.tar" -C /tmp/ex/$a .; done
say "exported"; grep -i error logs/export.log | head -3
