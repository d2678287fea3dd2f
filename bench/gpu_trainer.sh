#!/usr/bin/env bash
# GPU runs of train_llm.py: where start-up goes, a recipe sweep for `small` on Tiny Shakespeare,
# and the medians reported in docs/benchmarks.md.
#   bash bench/gpu_trainer.sh PATH/TO/tinyshakespeare.txt [profile] [sweep] [bench]
set -u
DATA=$1; shift
export PYTHONUNBUFFERED=1
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for phase in "$@"; do case $phase in
profile)
  for i in 1 2 3; do  # the floor a fresh process pays before any training
    python3 -c "import time; t=time.perf_counter(); import torch; a=time.perf_counter(); torch.zeros(1, device='cuda'); print(f'import torch {a-t:.2f}s, CUDA context {time.perf_counter()-a:.2f}s')"
  done
  python3 -m cProfile -s cumtime train_llm.py --config small --data "$DATA" --output_dir "$(mktemp -d)" | head -60
  ;;
sweep)
  python3 bench/sweep_trainer.py --parallel 4 --seeds 2 --common "--config small --data $DATA" \
    "--lr 5e-4 --warmup_frac 0.1" "--lr 1e-3 --warmup_frac 0.1" "--lr 1.5e-3 --warmup_frac 0.1" \
    "--lr 1e-3 --warmup_frac 0.3" "--lr 1.5e-3 --warmup_frac 0.3" "--lr 1e-3 --warmup_frac 0.3 --beta2 0.99" \
    "--lr 1e-3 --decay linear --warmup_frac 0.1" \
    "--batch_size 32 --lr 1e-3 --warmup_frac 0.1" "--batch_size 32 --lr 2e-3 --warmup_frac 0.1" \
    "--batch_size 16 --lr 1e-3 --warmup_frac 0.1" "--batch_size 16 --lr 2e-3 --warmup_frac 0.1" \
    "--batch_size 16 --lr 3e-3 --warmup_frac 0.1" "--batch_size 16 --lr 2e-3 --decay linear --warmup_frac 0.05" \
    "--optimizer muon --muon_lr 0.05 --warmup_frac 0.1" "--batch_size 16 --optimizer muon --muon_lr 0.03"
  ;;
bench)
  B="python3 bench/bench_trainer.py"
  $B --data "$DATA" --runs 5 --label "small, Tiny Shakespeare" -- --config small
  $B --data "$DATA" --runs 5 --label "small, batch 64, Tiny Shakespeare" -- --config small --batch_size 64
  $B --runs 3 --label "tiny, stdlib corpus" -- --config tiny
  $B --runs 3 --label "base, stdlib corpus" -- --config base
  ;;
esac; done
