#!/usr/bin/env bash
# Time to verdict on one GPU, as recorded in docs/benchmarks.md: the protocol with `local` (a
# process per run) and `warm` (one worker), each against its plain alternative, first with the
# machine's Python as it is, then with a bytecode cache. (An image that sets
# PYTHONDONTWRITEBYTECODE=1 and ships no .pyc files makes every process compile the Python
# sources of torch, scipy and matplotlib again; a pip install leaves a cache.)
#   bash bench/gpu_protocol.sh RESULTS_DIR [both|as-installed|cached]
set -u
OUT_DIR=${1:-bench-results}; mkdir -p "$OUT_DIR"
WHICH=${2:-both}
export PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -m pytest --version
bench() {  # label, then bench_protocol.py arguments
  local label=$1; shift
  python3 bench/bench_protocol.py --config small "$@" --json "$OUT_DIR/$label.json" 2>&1 \
    | tee "$OUT_DIR/$label.txt" | grep -v '^{'
}
if [ "$WHICH" != cached ]; then
  echo "== as installed: PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"
  bench as_installed --cases 5+3 --executors local,warm
fi
[ "$WHICH" = as-installed ] && exit 0
echo "== with a bytecode cache"
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=$(mktemp -d)
python3 -c "import torch, numpy, scipy.stats, matplotlib.figure, matplotlib.backends.backend_agg, pytest, jinja2"
python3 -m compileall -q -j 0 pytest_exprun train_llm.py >/dev/null
bench cached --cases 5+3,5+5 --executors local,warm
