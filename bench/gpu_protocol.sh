#!/usr/bin/env bash
# Time to verdict on one GPU, as recorded in docs/benchmarks.md: the protocol as a user types it
# (`pytest --experiment=use_qk_norm --exprun-command="python train_llm.py --config small"`, which
# extends to 5 + 5 seeds) and with the extension off (5 + 3), with `warm` (one worker) and `local`
# (a process per run), first with the machine's Python as it is, then with a bytecode cache. (An
# image that sets PYTHONDONTWRITEBYTECODE=1 and ships no .pyc files makes every process compile
# the Python sources of torch, scipy and matplotlib again; a pip install leaves a cache.)
# Each figure is the median of REPS sessions, each in a fresh research dir; the side-by-side
# plain way is skipped (--no-loop) to keep the GPU time down (bench_protocol.py without it has it).
#   bash bench/gpu_protocol.sh RESULTS_DIR [both|as-installed|cached] [REPS] [LOCAL_REPS] [CASES] [LOCAL_CASES]
# (CASES default user,5+3; LOCAL_CASES default: CASES for the machine as it is, user with a cache)
# Run from the repository root; where exprun is not pip-installed, PYTHONPATH=$PWD finds it.
set -u
OUT_DIR=${1:-bench-results}; mkdir -p "$OUT_DIR"
WHICH=${2:-both}
REPS=${3:-3}
LOCAL_REPS=${4:-$REPS}
CASES=${5:-user,5+3}
LOCAL_CASES=${6:-}
export PYTHONUNBUFFERED=1
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi -L; python3 -m pytest --version
bench() {  # label, then bench_protocol.py arguments
  local label=$1; shift
  python3 bench/bench_protocol.py --config small --no-loop "$@" --json "$OUT_DIR/$label.json" 2>&1 \
    | tee "$OUT_DIR/$label.txt" | grep -v '^{'
}
if [ "$WHICH" != cached ]; then
  echo "== as installed: PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"
  bench as_installed_warm --cases "$CASES" --executors warm --reps "$REPS"
  bench as_installed_local --cases "${LOCAL_CASES:-$CASES}" --executors local --reps "$LOCAL_REPS"
fi
[ "$WHICH" = as-installed ] && exit 0
echo "== with a bytecode cache"
unset PYTHONDONTWRITEBYTECODE
PYTHONPYCACHEPREFIX=$(mktemp -d); export PYTHONPYCACHEPREFIX
python3 -c "import torch, numpy, scipy.stats, matplotlib.figure, matplotlib.backends.backend_agg, pytest, jinja2"
python3 -m compileall -q -j 0 pytest_exprun train_llm.py >/dev/null
python3 bench/profile_worker.py --runs 1 -- --config small >/dev/null  # what the first steps import
bench cached_warm --cases "$CASES" --executors warm --reps "$REPS"
bench cached_local --cases "${LOCAL_CASES:-user}" --executors local --reps "$LOCAL_REPS"
