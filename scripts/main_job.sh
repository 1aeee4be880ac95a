#!/usr/bin/env bash
# The README's main job: rerun the paper's comparison (Multi30k NMT + CIFAR-10) and
# write runs/study-<scale>/report.md with its figures. Called by `make study`.
#   bash scripts/main_job.sh [smoke|cpu|full] [extra lskd-study options, e.g. --seeds 3 --data DIR]
# Every student is trained once per seed (default 3; 2 at smoke scale); report.md gives the
# verdicts with their intervals over seeds and the study's measured time.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-cpu}
shift || true
exec .venv/bin/lskd-study --scale "$scale" "$@"
