#!/usr/bin/env bash
# Where a warm worker's start goes on one GPU, what its runs cost beyond training, and the recipe
# sweep at nanoGPT's shape, first with the machine's Python as it is, then with a bytecode cache.
# The figures in docs/benchmarks.md ("The warm worker's start") come from this.
#   bash bench/gpu_worker.sh PATH/TO/tinyshakespeare.txt [profile] [sweep] [cached]
set -u
DATA=$1; shift
export PYTHONUNBUFFERED=1
TRAIN_LLM_CACHE=$(mktemp -d); export TRAIN_LLM_CACHE  # a fresh corpus cache: its build is seen once
nvidia-smi -L; python3 -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])"
profile() {
  echo "-- import torch, the slowest modules (python -X importtime, self time in us)"
  python3 -X importtime -c "import torch" 2>&1 | sort -t'|' -k1.13 -n | tail -12
  echo "-- a worker's start, step by step (twice: the first builds the corpus cache)"
  python3 bench/profile_worker.py --phases -- --config small
  python3 bench/profile_worker.py --phases -- --config small
  echo "-- train_llm.py --worker, ready and its jobs, timed from outside"
  python3 bench/profile_worker.py --ready --runs 3 -- --config small
  echo "-- the default preset on this machine"
  python3 train_llm.py --save_checkpoint false --output_dir "$(mktemp -d)" | grep -E "^model|^done"
}
for phase in "$@"; do case $phase in
profile) echo "== as installed: PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"; profile ;;
cached)
  echo "== with a bytecode cache (PYTHONPYCACHEPREFIX, filled first)"
  unset PYTHONDONTWRITEBYTECODE
  PYTHONPYCACHEPREFIX=$(mktemp -d); export PYTHONPYCACHEPREFIX
  python3 -c "import torch, numpy, scipy.stats, matplotlib.figure, matplotlib.backends.backend_agg, pytest, jinja2"
  python3 bench/profile_worker.py --phases -- --config small  # fills what the first steps import
  profile
  ;;
sweep)  # 3 seeds a variant, every run through one warm worker
  python3 bench/sweep_trainer.py --worker --seeds 3 --common "--config small --data $DATA --batch_size 64" \
    "--lr 2e-3 --warmup_frac 0.1" "--lr 1e-3 --warmup_frac 0.3" "--lr 1.5e-3 --warmup_frac 0.3" \
    "--lr 2e-3 --warmup_frac 0.3" "--lr 1.5e-3 --warmup_frac 0.2" "--lr 1.5e-3 --warmup_frac 0.4" \
    "--lr 2e-3 --warmup_frac 0.4" "--lr 1.5e-3 --warmup_frac 0.3 --min_lr_frac 0.1" \
    "--lr 1.5e-3 --warmup_frac 0.3 --beta2 0.99" "--lr 1.5e-3 --warmup_frac 0.3 --decay linear"
  python3 bench/sweep_trainer.py --worker --seeds 3 --common "--config small --data $DATA" \
    "--lr 2e-3 --warmup_frac 0.1" "--lr 1.5e-3 --warmup_frac 0.1" "--lr 3e-3 --warmup_frac 0.1" \
    "--lr 2e-3 --warmup_frac 0.2" "--lr 3e-3 --warmup_frac 0.2" "--lr 1.5e-3 --warmup_frac 0.3" \
    "--lr 2e-3 --warmup_frac 0.3" "--lr 2e-3 --warmup_frac 0.1 --min_lr_frac 0.1"
  ;;
esac; done
