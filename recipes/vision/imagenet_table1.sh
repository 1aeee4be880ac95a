#!/usr/bin/env bash
# Shen et al. Table 1 on pretrained models: top-1/top-5, 1-S and ECE on the ImageNet validation
# set for each (architecture, weights file, label) of a list, beside the paper's numbers.
# Nothing is downloaded: the weights are local state dicts (.pth/.pt/.safetensors).
#
#   VAL=/data/imagenet/val LIST=models.txt bash recipes/vision/imagenet_table1.sh runs/table1
#
# LIST: one model a line, '#' starts a comment:
#     resnet50      /weights/resnet50-0676ba61.pth   resnet50_v1      # torchvision IMAGENET1K_V1
#     resnet50      /weights/resnet50-11ad3fa6.pth   resnet50_v2_ls   # IMAGENET1K_V2 (LS and more)
#     timm:resnet50 /weights/resnet50.a1_in1k.safetensors  timm_r50_a1
# VAL: class folders (VAL/<wnid>/<image>) or ImageNet's official flat val/ with its labels:
#   LOC_val_solution.csv or the devkit's ILSVRC2012_validation_ground_truth.txt + meta.mat, found in VAL
#   or its parent, or named by LABELS=FILE.
# Each model is measured by `lskd-stability FILE --arch ARCH --data VAL` (streaming, on CUDA when
# present, a progress bar on a terminal) with the weights' own resize/crop/normalisation, into
# OUT/<label>.json; OUT/table1.md is the table. BATCH (256), WORKERS (8), EXTRA (more lskd-stability
# options). A model whose JSON exists is not measured again.
# Note: torchvision's V2 weights differ from V1 in much more than label smoothing (longer schedule,
# mixup/cutmix, EMA, ...): a V1-vs-V2 difference is not the effect of LS alone.
set -euo pipefail
OUT=${1:?usage: VAL=... LIST=... $0 OUT}
VAL=${VAL:?set VAL to the ImageNet validation folder}
LIST=${LIST:?set LIST to the list of "ARCH WEIGHTS LABEL" lines}
STABILITY=${STABILITY:-lskd-stability}
mkdir -p "$OUT"
labels=()
while read -r arch weights label _; do
  case "$arch" in ''|'#'*) continue ;; esac
  if [ -z "${label:-}" ] || [ -z "${weights:-}" ]; then
    echo "imagenet_table1: error: $LIST: expected 'ARCH WEIGHTS LABEL', got '$arch ${weights:-} ${label:-}'" >&2
    exit 2
  fi
  labels+=("$label")
  if [ -f "$OUT/$label.json" ]; then echo "skip $label (done)"; continue; fi
  echo "[$(date -u +%FT%TZ)] $label: $arch $weights"
  $STABILITY "$weights" --arch "$arch" --data "$VAL" ${LABELS:+--labels "$LABELS"} --batch-size "${BATCH:-256}" \
    --workers "${WORKERS:-8}" --rows 0 --json "$OUT/$label.json" ${EXTRA:-} > "$OUT/$label.log"
done < "$LIST"
if [ "${#labels[@]}" -eq 0 ]; then echo "imagenet_table1: error: $LIST lists no model" >&2; exit 2; fi
python - "$OUT" "${labels[@]}" <<'EOF' | tee "$OUT/table1.md"
import json, os, sys

# Shen et al. (ICLR 2021) Table 1, torchvision models: (top-1, top-5, 1-S) without LS
PAPER = {"resnet18": (69.758, 89.078, 0.3359), "resnet50": (75.888, 92.642, 0.3217),
         "resnet101": (77.374, 93.546, 0.3185), "resnext50_32x4d": (77.618, 93.698, 0.3229),
         "wide_resnet50_2": (78.468, 94.086, 0.3201), "resnext101_32x8d": (79.312, 94.526, 0.3177),
         "mobilenet_v2": (71.878, 90.286, 0.3341), "densenet121": (74.434, 91.972, 0.3243)}
out, labels = sys.argv[1], sys.argv[2:]
print("| model | arch | images | top-1 | top-5 | 1-S | ECE | paper top-1 / top-5 / 1-S (torchvision, w/o LS) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for label in labels:
    r = json.load(open(os.path.join(out, label + ".json")))
    p = PAPER.get(r["arch"])
    paper = f"{p[0]:.3f} / {p[1]:.3f} / {p[2]:.4f}" if p else "–"
    print(f"| {label} | {r['arch']} | {r['num_samples']} | {r['accuracy']:.3f} | {r['top5']:.3f} | "
          f"{r['one_minus_S']:.4f} | {r['calibration']['ece']:.4f} | {paper} |")
EOF
