#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install hybrids into it.
#
#   bash scripts/bootstrap.sh [EXTRAS]      EXTRAS defaults to "test"; e.g. "test,cuda", or "" for
#                                           the training dependencies alone (make demo)
#
# torch is installed before the package so that pip never resolves a bare `torch` requirement on
# its own: on Linux that would fetch a multi-GB CUDA build, even on a machine without a GPU.
#   - TORCH_SPEC, if set, is passed to pip as is (e.g. TORCH_SPEC="torch==2.7.1").
#   - a machine where `nvidia-smi -L` lists a GPU, or macOS, gets the default PyPI build;
#   - any other machine gets a CPU build: the local wheel torch==2.13.0+cpu where pip can find one,
#     else PyTorch's CPU wheel index.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${1-test}
PIP="$VENV/bin/python -m pip"

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    $PIP install $TORCH_SPEC
  elif [ "$(uname -s)" = "Darwin" ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    $PIP install "torch>=2.6"
  else
    echo "bootstrap: no GPU found, installing a CPU build of torch"
    $PIP install "torch==2.13.0+cpu" \
      || $PIP install "torch>=2.6" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

stamp="$VENV/.hybrids-installed-${EXTRAS//,/-}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  if [ -n "$EXTRAS" ]; then
    echo "bootstrap: installing hybrids[$EXTRAS] (editable)"
    $PIP install -e ".[$EXTRAS]"
  else
    echo "bootstrap: installing hybrids (editable, training dependencies only)"
    $PIP install -e .
  fi
  touch "$stamp"
fi
# The console script lives in the environment: call it as $VENV/bin/hybrids, or activate the
# environment first (source $VENV/bin/activate) and call `hybrids`.
