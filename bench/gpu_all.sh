#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md in one go, on one GPU: the warm worker's start and runs,
# the trainer at its own recipe and at nanoGPT's shape (Tiny Shakespeare), then the protocol
# through pytest (bench/gpu_protocol.sh). Results: RESULTS_DIR (a tarball of them under $2).
#   bash bench/gpu_all.sh PATH/TO/tinyshakespeare.txt RESULTS_DIR [REPS] [LOCAL_REPS]
set -u
DATA=$1; OUT_DIR=$2; REPS=${3:-3}; LOCAL_REPS=${4:-1}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
TRAIN_LLM_CACHE=$(mktemp -d); export TRAIN_LLM_CACHE
echo "== as installed: the warm worker, timed from outside"
python3 bench/profile_worker.py --ready --runs 3 -- --config small
echo "== val_loss, 5 seeds, each recipe at its shape (one warm worker)"
python3 bench/sweep_trainer.py --worker --seeds 5 --common "--config small --data $DATA" "" "--batch_size 64"
echo "== whole processes"
python3 bench/bench_trainer.py --data "$DATA" --runs 3 --label "small, Tiny Shakespeare" -- --config small
python3 bench/bench_trainer.py --data "$DATA" --runs 3 --label "small, batch 64" -- --config small --batch_size 64
bash bench/gpu_protocol.sh "$OUT_DIR" both "$REPS" "$LOCAL_REPS"
