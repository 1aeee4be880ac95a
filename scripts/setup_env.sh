#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install lskd
# into it in editable mode. Safe to run again: finished steps are skipped.
#
# The order matters: torch first (pip takes 2.14.1 / torchvision 0.29.1 from this
# machine's disk), then cython and numpy, then fairseq without build isolation
# (otherwise pip pulls a second torch into fairseq's build environment), then lskd.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q -U pip wheel setuptools

if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    echo "[setup] installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    "${PIP[@]}" install -q $TORCH_SPEC
fi
"${PIP[@]}" install -q cython numpy

if ! "$VENV/bin/python" -c "import fairseq" 2>/dev/null; then
    if "$VENV/bin/python" -c "import sys; sys.exit(sys.version_info < (3, 11))"; then
        FAIRSEQ_SPEC="fairseq-fixed==0.12.3.1"
    else
        FAIRSEQ_SPEC="fairseq==0.12.2"
    fi
    echo "[setup] building $FAIRSEQ_SPEC (a few minutes)"
    "${PIP[@]}" install -q --no-build-isolation "$FAIRSEQ_SPEC"
fi

echo "[setup] installing lskd (editable)"
"${PIP[@]}" install -q --no-build-isolation -e ".[test,timm]"
"$VENV/bin/python" -c "import lskd_fairseq, lskd_vision, fairseq, torch; print('[setup] ready: torch', torch.__version__, '| fairseq', fairseq.__version__)" 2>&1 | grep '^\[setup\]'
touch "$VENV/.lskd-ready"
