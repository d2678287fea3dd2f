#!/usr/bin/env bash
# Where a fresh Python process's start-up goes on this machine: the imports the trainer and the
# plugin need, each timed in a fresh interpreter, with and without a writable bytecode cache.
#   bash bench/probe_startup.sh
set -u
PY=${PYTHON:-python3}
echo "python: $($PY -c 'import sys; print(sys.version.split()[0], sys.prefix, "dont_write_bytecode", sys.flags.dont_write_bytecode)')"
echo "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset} PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-unset}"
site=$($PY -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
echo "site-packages: $site writable=$([ -w "$site/torch" ] && echo yes || echo no) torch .pyc files: $(find "$site/torch" -name '*.pyc' | wc -l)"
t() {  # label, then python statements; prints the median of 3 fresh processes
  local label=$1; shift
  local times=()
  for i in 1 2 3; do
    times+=("$($PY -c "import time; t=time.perf_counter(); $*; print(f'{time.perf_counter()-t:.3f}')")")
  done
  printf '%-40s %s\n' "$label" "$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p) (${times[*]})"
}
probe() {
  t "python -c pass" "pass"
  t "import torch" "import torch"
  t "import torch + CUDA context" "import torch; torch.zeros(1, device='cuda')"
  t "import numpy" "import numpy"
  t "import pytest" "import pytest"
  t "import jinja2" "import jinja2"
  t "import scipy.special" "import scipy.special"
  t "import scipy.stats" "import scipy.stats"
  t "import matplotlib (Agg figure)" "import matplotlib.figure, matplotlib.backends.backend_agg"
}
echo "== as installed"; probe
export PYTHONPYCACHEPREFIX=$(mktemp -d)
echo "== with a writable bytecode cache (PYTHONPYCACHEPREFIX, first fill not shown)"
$PY -c "import torch, scipy.stats, matplotlib.figure, matplotlib.backends.backend_agg, pytest, jinja2" 2>/dev/null
probe
