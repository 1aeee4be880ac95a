#!/usr/bin/env bash
# The README's main job: rerun the paper's comparison (Multi30k NMT + CIFAR-10) and
# write runs/study-<scale>/report.md with its figures. Called by `make study`.
#   bash scripts/main_job.sh [smoke|cpu|full] [extra lskd-study options]
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-cpu}
shift || true
exec .venv/bin/lskd-study --scale "$scale" "$@"
