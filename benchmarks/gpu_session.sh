#!/usr/bin/env bash
# One lent-GPU session (docs/performance.md "On CUDA", docs/ablations.md "On a GPU"): the GPU speed bench, then
# three default-model variants trained side by side for TRAIN_S seconds each, their EMA generators exported fp16.
# Carried: gpu/mlds-webp80.tar.gz (benchmarks/pack_faces.py) and gpu/tagger-indep.safetensors (the frozen G loss).
# Writes $OUT/logs.tgz and $OUT/<run>-{mid,end}.safetensors. Usage: TRAIN_S=320 bash benchmarks/gpu_session.sh
set -u
T0=$(date +%s); TRAIN_S=${TRAIN_S:-320}; OUT=${OUT:-/tmp/out}; DEV=${DEV:-cuda}; DATA=${DATA:-gpu/mlds-webp80.tar.gz}
mkdir -p "$OUT" logs
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TAGFACE_CACHE=/tmp/tfcache
say() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
finish() {  # no sample grids: $OUT brings back 64 MiB in all, and the generators take most of it
  nvidia-smi > logs/nvidia-smi.txt 2>&1
  tar czf "$OUT/logs.tgz" logs runs/*/metrics.jsonl runs/*/config.yaml runs/*/run.json 2>/dev/null; say done
}
trap finish EXIT
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv | tee logs/gpu.txt
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a logs/gpu.txt
mkdir -p /tmp/mlds runs && tar xzf $DATA -C /tmp/mlds && cp gpu/tagger-indep.safetensors runs/
say "data unpacked: $(ls /tmp/mlds/images | wc -l) images"

# 1. smoke: every stage, a checkpoint, a grid and an export on CUDA, so a device bug stops us here, not later
sed -e 's/start: 400/start: 1/; s/start: 800/start: 2/; s/start: 1300/start: 3/' configs/default-model.yaml > /tmp/smoke.yaml
python3 -m tagface train --config /tmp/smoke.yaml --data /tmp/mlds --out runs/smoke --steps 4 --device $DEV \
  --no-progress --set train.checkpoint_every=2 --set train.sample_every=2 > logs/smoke.log 2>&1 \
  && python3 -m tagface export --checkpoint runs/smoke --format safetensors --half --out /tmp/smoke-g.safetensors >> logs/smoke.log 2>&1
rc=$?; tail -5 logs/smoke.log; say "smoke rc=$rc"; [ $rc = 0 ] || exit 1

# 2. speed on the GPU: every seed recipe (BENCH_RECIPES to choose), bf16 autocast + channels_last (the CUDA flags), against the tutorial loop
timeout 110 python3 -m tagface bench --device $DEV --data /tmp/mlds ${BENCH_RECIPES:+--recipes $BENCH_RECIPES} --steps 20 --warmup 5 --gen-runs 5 \
  --set train.precision=bf16 --set train.channels_last=true --out logs/bench-bf16-cl > logs/bench-bf16-cl.log 2>&1
say "bench bf16 rc=$?"

# 3. the default model's recipe at batch 256 (A), with a wider D (B), with a wider G and D (C): side by side
train() {  # name, overrides... Stopped by SIGTERM (background jobs ignore SIGINT): the last checkpoint counts
  local name=$1; shift
  timeout "$TRAIN_S" python3 -m tagface train --config configs/default-model.yaml --data /tmp/mlds \
    --out "runs/$name" --steps 1000000 --device $DEV --threads 4 --no-progress --set train.batch_size=256 \
    --set train.checkpoint_every=${CKPT_EVERY:-500} --set train.sample_every=1000 "$@" > "logs/train-$name.log" 2>&1
}
train A &
train B --set model.d_channels=128 &
train C --set model.d_channels=128 --set model.g_channels=88 &
sleep $(( TRAIN_S * 3 / 5 )); for r in A B C; do cp runs/$r/generator.safetensors /tmp/$r-mid.safetensors; done
say "mid snapshots taken"; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> logs/gpu.txt
wait; say "training stopped"
for r in A B C; do
  echo "$r: $(tail -1 runs/$r/metrics.jsonl)"
  python3 -m tagface export --checkpoint /tmp/$r-mid.safetensors --format safetensors --half --out "$OUT/$r-mid.safetensors" >> logs/export.log 2>&1
  python3 -m tagface export --checkpoint runs/$r --format safetensors --half --out "$OUT/$r-end.safetensors" >> logs/export.log 2>&1
done
say "exported"; tail -3 logs/export.log

# 4. fp32 for comparison, while time is left
left=$(( ${DEADLINE_S:-560} - $(date +%s) + T0 ))
[ $left -gt 40 ] && timeout $(( left - 10 )) python3 -m tagface bench --device $DEV --data /tmp/mlds --steps 20 --warmup 5 \
  --gen-runs 5 --recipes seed-dcgan-cls,seed-acgan-dcgan --set train.precision=fp32 --out logs/bench-fp32 > logs/bench-fp32.log 2>&1
say "bench fp32 rc=$?"
