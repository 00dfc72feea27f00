#!/usr/bin/env bash
# Issue 27's comparisons under the tuning protocol, one family at a time, in an order that settles
# the disputed claims first: MQAR's quick learners and the recurrent families whose earlier
# chance-level results the issue questions (Mamba, Mamba-2), the warm-up ablation on Mamba's
# plateau, GLA, RetNet and the hybrids, selective copying's still-improving rows at four times the
# budget, the tuned induction sweep, the remaining MQAR families (the gated convolutions last),
# then MAD's protocol (issue 29) family by family (first those its claims compare: attention,
# Hyena, the striped hybrids and their parts, H3) and its iso-state comparison. (The induction
# curriculum and tuned selective-copying sweeps, whose pages are written, were run before the
# records were kept in results/runs.) Resumable: run it again after an interruption (each
# sweep skips what is done; successive halving keeps its decisions). Each step prints its wall
# time.
#
# runs/ is not in git and a session's checkout is fresh, so each step first restores the sweep's
# records from results/runs/NAME (where earlier sessions committed them) and saves them there
# after it ends: commit results/runs to keep them (hybrids.lab.sweeps.archive says what is kept;
# checkpoints are not, so a run caught mid-way trains again from its start).
#
#   mkdir -p runs/sweeps && PYTHON=.venv/bin/python setsid nohup bash scripts/protocol_sweeps.sh >> runs/sweeps/protocol.log 2>&1 &
#   PYTHON=.venv/bin/python QUEUE="mqar_tuned_cpu:mamba-d*" bash scripts/protocol_sweeps.sh   # one step
#
# Stop it with SIGTERM to its process group (kill -- -PGID): running runs save their checkpoints
# and the step's records are saved to results/runs before it exits.
set -uf  # -f: the --only globs are for the sweep, not for the shell
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
mqar() { for family in "$@"; do echo "mqar_tuned_cpu:$family-d*"; done; }
mad() { for family in "$@"; do echo "mad_cpu:$family-*"; done; }
DEFAULT_QUEUE="$(mqar attention sliding_window based mamba_attention mamba mamba2)
mqar_warmup_cpu:*
$(mqar gla retnet rglru_local mamba_swa)
selective_copying_long_cpu:*
induction_tuned_cpu:*
$(mqar s4d s4 rglru performer h3 hyena base_conv)
$(mad attention hyena hyena_attention mamba mamba_attention h3 mamba2 gla rglru sliding_window)
mad_cpu_iso_state:*"
QUEUE=${QUEUE:-$DEFAULT_QUEUE}
# A stop by a signal (the sweep gets it too, through the process group) waits for the sweep to
# save its checkpoints and for this script to save the records, then exits with the signal's code.
stop=""
trap 'stop=130' INT
trap 'stop=143' TERM
trap 'stop=129' HUP
for step in $QUEUE; do
    sweep=${step%%:*} only=${step#*:}
    start=$(date +%s)
    archive="results/runs/$sweep" folder="runs/sweeps/$sweep"
    if [ -d "$archive" ]; then
        "$PYTHON" -m hybrids.lab.sweeps.archive restore "$archive" "$folder" || exit 1
    fi
    echo "=== $(date -u +%FT%TZ) $sweep --only '$only'"
    "$PYTHON" -m hybrids sweep "configs/sweeps/$sweep.yaml" --workers "${WORKERS:-2}" --only "$only"
    status=$?
    if [ -d "$folder" ]; then "$PYTHON" -m hybrids.lab.sweeps.archive save "$folder" "$archive"; fi
    if [ -n "$stop" ]; then exit "$stop"; fi
    echo "=== $(date -u +%FT%TZ) $sweep --only '$only': exit $status after $(( $(date +%s) - start )) s"
    if [ "$status" -ge 128 ]; then exit "$status"; fi  # stopped by a signal: stop here, resume later
    if [ "$status" -eq 2 ]; then echo "=== a bad sweep file or selection: fix it and run again" >&2; exit 2; fi
done
