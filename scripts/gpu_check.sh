#!/usr/bin/env bash
# The GPU checks in one command, for a session lent a CUDA machine: the GPU-marked tests, then
# the GPU benchmarks, each log written to $OUT (default ./gpu_check_out). Meant for a machine
# whose python3 already has torch with CUDA, Triton, Lightning and pytest (our device image),
# with no network: the project is installed without dependencies, and pure-Python packages it
# lacks come as wheels in .whl/ (optional), e.g. prepared on a machine with pip access:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       jsonargparse docstring-parser typeshed-client fla-core
#
#   bash scripts/gpu_check.sh            # about 5-8 minutes on an H200
#
# Every step runs even if one before it failed; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
failed=0

step() {  # step NAME TIMEOUT_S COMMAND...: run, keep the log, count a failure
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    if timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; then
        echo "=== $name: ok"
    else
        echo "=== $name: FAILED (status ${PIPESTATUS[0]})"
        failed=$((failed + 1))
    fi
}

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1 \
    || { echo "installing hybrids failed:"; cat "$OUT/install.log"; exit 100; }

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    "$PY" -m hybrids.kernels
} 2>&1 | tee "$OUT/environment.log"

step gpu_tests 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider
step selective_scan_gpu 120 "$PY" benchmarks/selective_scan_gpu.py
step linear_attention_gpu_scalar 90 "$PY" benchmarks/linear_attention_gpu.py --decay scalar
step linear_attention_gpu_vector 90 "$PY" benchmarks/linear_attention_gpu.py --decay vector
step lsh_attention_gpu 90 "$PY" benchmarks/lsh_attention.py --device cuda
step reversible_memory_gpu 90 "$PY" benchmarks/reversible_memory.py --device cuda
echo "failed steps: $failed (logs in $OUT)"
exit "$failed"
