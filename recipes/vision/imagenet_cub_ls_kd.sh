#!/usr/bin/env bash
# Shen et al. Table 2 on your own copy of ImageNet-1K or CUB-200-2011 (nothing is downloaded):
# ResNet-50 teachers with and without label smoothing (0.1), then ResNet-18 and ResNet-50
# students distilled from each at the paper's setting (alpha=1, soft labels only, T=1).
#
#   DATA=/data/imagenet bash recipes/vision/imagenet_cub_ls_kd.sh runs/imagenet     # train/ + val/
#   DATA=/data/CUB_200_2011 PRETRAINED=/weights/resnet50-0676ba61.pth \
#     bash recipes/vision/imagenet_cub_ls_kd.sh runs/cub                           # images/ + split files
#
# DATA: an ImageFolder root with train/ and val/ (val/ is only reported; the best checkpoint
#   is chosen on a seeded 2% carve of train/), or the CUB_200_2011 folder as downloaded.
# NPROC: processes per node for torchrun (default: number of GPUs, at least 1).
# PRETRAINED / PRETRAINED_STUDENT: optional local torchvision state dicts (the paper
#   fine-tunes ImageNet-pretrained networks on CUB; ImageNet runs start from scratch).
# EPOCHS (90 ImageNet, 100 CUB), BATCH (per process, 64), LR (0.1 x global batch / 256; 0.01 CUB),
# EXTRA: more options for every run. Runs one after another; rerunning resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: DATA=... $0 OUT}
DATA=${DATA:?set DATA to the dataset root}
NPROC=${NPROC:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
BATCH=${BATCH:-64}
if [ -f "$DATA/train_test_split.txt" ]; then
  KIND=cub; EPOCHS=${EPOCHS:-100}; LR=${LR:-0.01}; WD=${WD:-1e-4}
else
  KIND=imagenet; EPOCHS=${EPOCHS:-90}; LR=${LR:-$(python -c "print(0.1 * $BATCH * $NPROC / 256)")}; WD=${WD:-1e-4}
fi
COMMON=(--epochs "$EPOCHS" --batch-size "$BATCH" --lr "$LR" --weight-decay "$WD" --sched cosine
        --warmup-epochs 1 --val-fraction 0.02 --workers "${WORKERS:-8}" --amp --resume ${EXTRA:-})
PRE_T=(); [ -n "${PRETRAINED:-}" ] && PRE_T=(--pretrained "$PRETRAINED")
PRE_S=(); [ -n "${PRETRAINED_STUDENT:-}" ] && PRE_S=(--pretrained "$PRETRAINED_STUDENT")
mkdir -p "$OUT"
run() {
  local name=$1; shift
  if [ -f "$OUT/$name/metrics.json" ]; then echo "skip $name (done)"; return; fi
  torchrun --standalone --nproc_per_node "$NPROC" -m lskd_vision.train "$DATA" --output "$OUT/$name" \
    "${COMMON[@]}" "$@" 2>&1 | tee "$OUT/$name.log"
}
echo "[$(date -u +%FT%TZ)] $KIND: DATA=$DATA NPROC=$NPROC EPOCHS=$EPOCHS BATCH=$BATCH LR=$LR" | tee -a "$OUT/recipe.log"
run teacher_r50 --model resnet50 "${PRE_T[@]}"
run teacher_r50_ls --model resnet50 --label-smoothing 0.1 --ls-convention uniform "${PRE_T[@]}"
for t in teacher_r50 teacher_r50_ls; do
  run "r18_from_${t#teacher_}" --model resnet18 --teacher "$OUT/$t/checkpoint_best.pt" --paper-kd "${PRE_S[@]}"
  run "r50_from_${t#teacher_}" --model resnet50 --teacher "$OUT/$t/checkpoint_best.pt" --paper-kd "${PRE_T[@]}"
done
python -m lskd_vision.report "$OUT"/teacher_r50 "$OUT"/teacher_r50_ls "$OUT"/r18_from_* "$OUT"/r50_from_* | tee "$OUT/table.md"
