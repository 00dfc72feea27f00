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
# (an ignored folder travels to a device machine only when named: carry [".whl"]).
#
#   bash scripts/gpu_check.sh                 # everything: at most about 8 minutes
#   bash scripts/gpu_check.sh tests           # or any of: tests scan linear lsh reversible
#
# The step limits add up to 480 s, inside a 10-minute command. Every step runs even if one
# before it failed; the exit status is the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
failed=0

steps="${*:-tests scan linear lsh reversible}"
wanted() { [[ " $steps " == *" $1 "* ]]; }

step() {  # step NAME TIMEOUT_S COMMAND...: run, keep the log, count a failure
    local name=$1 limit=$2
    shift 2
    echo "=== $name: $*"
    if timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; then
        echo "=== $name: ok"
    else
        echo "=== $name: FAILED (status ${PIPESTATUS[0]})"
        failed=$((failed + 1))
    fi
}

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing the wheels in .whl/ failed"; exit 100; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1 \
    || { echo "installing hybrids failed:"; cat "$OUT/install.log"; exit 100; }

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
    "$PY" -m hybrids.kernels
} 2>&1 | tee "$OUT/environment.log"

# Only the files that hold GPU-marked tests: collecting the others would need packages the
# device image lacks (nbformat for the notebook test, Ray, ...), and one collection error stops
# pytest before any test runs.
mapfile -t gpu_files < <(grep -rl "pytest.mark.gpu" tests --include="test_*.py")
wanted tests && step gpu_tests 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider "${gpu_files[@]}"
wanted scan && step selective_scan_gpu 60 "$PY" benchmarks/selective_scan_gpu.py
wanted linear && step linear_attention_gpu_scalar 45 "$PY" benchmarks/linear_attention_gpu.py --decay scalar
wanted linear && step linear_attention_gpu_vector 45 "$PY" benchmarks/linear_attention_gpu.py --decay vector
wanted lsh && step lsh_attention_gpu 45 "$PY" benchmarks/lsh_attention.py --device cuda
wanted reversible && step reversible_memory_gpu 45 "$PY" benchmarks/reversible_memory.py --device cuda
echo "failed steps: $failed (logs in $OUT)"
exit "$failed"
