#!/usr/bin/env bash
# Binary ReActNet-18 students of a real-valued teacher with and without label smoothing
# (Shen et al. Sec. "binary networks"; ReActNet's recipe: two steps, Adam, linear decay,
# KD-only loss at T=1).
#
#   DATA=/data/imagenet TEACHERS="runs/imagenet/teacher_r50 runs/imagenet/teacher_r50_ls" \
#     bash recipes/vision/reactnet_kd.sh runs/reactnet
#   DATA=../shared/data/cifar10/cifar10_jpg.tar.gz SMALL=1 EPOCHS=20 \
#     TEACHERS="runs/cifar10_ls_kd/teacher_ce runs/cifar10_ls_kd/teacher_ls" bash recipes/vision/reactnet_kd.sh runs/reactnet_cifar
#
# Step 1 (binary activations, real weights, weight decay 5e-6) and step 2 (binary weights too,
# no weight decay) each run EPOCHS epochs with a fresh Adam (lr 5e-4) and linear decay; step 2
# starts from step 1's best checkpoint. SMALL=1 uses the 3x3 stem for 32x32 images.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: DATA=... TEACHERS="dir1 dir2" $0 OUT}
DATA=${DATA:?set DATA}
TEACHERS=${TEACHERS:?set TEACHERS to teacher run folders}
EPOCHS=${EPOCHS:-128}
NPROC=${NPROC:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
STEM=(); [ "${SMALL:-0}" = 1 ] && STEM=(--small-input-stem)
COMMON=(--model reactnet18 "${STEM[@]}" --opt adam --lr "${LR:-5e-4}" --sched linear --epochs "$EPOCHS"
        --batch-size "${BATCH:-256}" --val-fraction 0.02 --workers "${WORKERS:-8}" --resume ${EXTRA:-})
mkdir -p "$OUT"
for t in $TEACHERS; do
  name=$(basename "$t")
  for step in 1 2; do
    run="$OUT/${name}_step$step"
    [ -f "$run/metrics.json" ] && { echo "skip $run"; continue; }
    init=(); wd=5e-6
    [ $step = 2 ] && { init=(--init-from "$OUT/${name}_step1/checkpoint_best.pt"); wd=0; }
    torchrun --standalone --nproc_per_node "$NPROC" -m lskd_vision.train "$DATA" --output "$run" \
      "${COMMON[@]}" --binary-step $step --weight-decay $wd "${init[@]}" \
      --teacher "$t/checkpoint_best.pt" --paper-kd 2>&1 | tee "$run.log"
  done
done
python -m lskd_vision.report "$OUT"/*_step2 | tee "$OUT/table.md"
