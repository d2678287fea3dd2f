#!/usr/bin/env bash
# GPU benchmark of train_llm.py: start-up and throughput checks, a recipe sweep for `small`
# on Tiny Shakespeare, then the medians reported in docs/benchmarks.md.
#   bash bench/gpu_trainer.sh PATH/TO/tinyshakespeare.txt [sweep|bench|all]
set -u
DATA=$1; PHASE=${2:-all}
export PYTHONUNBUFFERED=1
B="python3 bench/bench_trainer.py"
nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for i in 1 2 3; do  # the floor a fresh process pays before any training
  python3 -c "import time; t=time.perf_counter(); import torch; a=time.perf_counter(); torch.zeros(1, device='cuda'); print(f'import torch {a-t:.2f}s, CUDA context {time.perf_counter()-a:.2f}s')"
done
if [ "$PHASE" = sweep ] || [ "$PHASE" = all ]; then
  python3 train_llm.py --config small --data "$DATA" --cuda_graph false --output_dir /tmp/eager --seed 0
  python3 train_llm.py --config small --data "$DATA" --output_dir /tmp/graph --seed 0
  for decay in cosine linear; do for lr in 2e-3 3e-3 4e-3 6e-3 1e-2; do
    $B --data "$DATA" --runs 2 --label "small lr=$lr decay=$decay" -- --config small --lr $lr --decay $decay
  done; done
  for wf in 0.02 0.1 0.2; do
    $B --data "$DATA" --runs 2 --label "small lr=6e-3 warmup_frac=$wf" -- --config small --lr 6e-3 --warmup_frac $wf
  done
  for mlr in 0.02 0.05; do
    $B --data "$DATA" --runs 2 --label "small muon_lr=$mlr" -- --config small --optimizer muon --muon_lr $mlr
  done
fi
if [ "$PHASE" = bench ] || [ "$PHASE" = all ]; then
  $B --data "$DATA" --runs 5 --label "small, Tiny Shakespeare" -- --config small
  $B --data "$DATA" --runs 5 --label "small, Tiny Shakespeare, with checkpoint" -- --config small --save_checkpoint true
  $B --runs 3 --label "tiny, stdlib corpus" -- --config tiny
  $B --runs 3 --label "base, stdlib corpus" -- --config base
fi
