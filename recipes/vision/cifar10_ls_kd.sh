#!/usr/bin/env bash
# CIFAR-10: teachers with and without label smoothing, and a student distilled from
# each at the paper's setting (alpha=1: soft labels only, T=1). Runs one at a time.
#
#   bash recipes/vision/cifar10_ls_kd.sh [OUT]           # CPU scale (defaults below)
#   SCALE=full bash recipes/vision/cifar10_ls_kd.sh OUT  # full data, 200 epochs (GPU)
#
# Environment: DATA (default ../shared/data/cifar10/cifar10_jpg.tar.gz, or an
# extracted folder), TEACHER (resnet20), STUDENT (resnet8), EPOCHS, PER_CLASS
# (training images per class; 0 = all), LS (0.1), LS_CONVENTION (uniform), SEED,
# EXTRA (more lskd-vision-train options, e.g. "--amp" or "--workers 8").
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/cifar10_ls_kd}
DATA=${DATA:-../shared/data/cifar10/cifar10_jpg.tar.gz}
TEACHER=${TEACHER:-resnet20}
STUDENT=${STUDENT:-resnet8}
LS=${LS:-0.1}
LS_CONVENTION=${LS_CONVENTION:-uniform}
SEED=${SEED:-0}
if [ "${SCALE:-cpu}" = full ]; then
  EPOCHS=${EPOCHS:-200}; PER_CLASS=${PER_CLASS:-0}; WORKERS=${WORKERS:-4}
else
  EPOCHS=${EPOCHS:-15}; PER_CLASS=${PER_CLASS:-1000}; WORKERS=${WORKERS:-0}
fi
TRAIN=${TRAIN:-lskd-vision-train}
COMMON=(--epochs "$EPOCHS" --train-per-class "$PER_CLASS" --batch-size 128 --lr 0.1 --weight-decay 5e-4
        --sched cosine --seed "$SEED" --workers "$WORKERS" --no-progress --resume ${EXTRA:-})
mkdir -p "$OUT"
echo "[$(date -u +%FT%TZ)] start: $0 OUT=$OUT DATA=$DATA TEACHER=$TEACHER STUDENT=$STUDENT EPOCHS=$EPOCHS PER_CLASS=$PER_CLASS" | tee -a "$OUT/recipe.log"
run() {  # name, then options; skipped when the run already has metrics.json
  local name=$1; shift
  if [ -f "$OUT/$name/metrics.json" ]; then echo "skip $name (done)"; return; fi
  local t0=$SECONDS
  $TRAIN "$DATA" --output "$OUT/$name" "${COMMON[@]}" "$@" 2>&1 | tee "$OUT/$name.log"
  echo "[$(date -u +%FT%TZ)] $name finished in $((SECONDS - t0)) s" | tee -a "$OUT/recipe.log"
}
run teacher_ce --model "$TEACHER"
run teacher_ls --model "$TEACHER" --label-smoothing "$LS" --ls-convention "$LS_CONVENTION"
run student_from_ce --model "$STUDENT" --teacher "$OUT/teacher_ce/checkpoint_best.pt" --paper-kd
run student_from_ls --model "$STUDENT" --teacher "$OUT/teacher_ls/checkpoint_best.pt" --paper-kd
python -m lskd_vision.report "$OUT"/teacher_ce "$OUT"/teacher_ls "$OUT"/student_from_ce "$OUT"/student_from_ls | tee "$OUT/table.md"
echo "[$(date -u +%FT%TZ)] done" | tee -a "$OUT/recipe.log"
