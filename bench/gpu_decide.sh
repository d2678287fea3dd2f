#!/usr/bin/env bash
# Both decision modes on the real trainer, as users type them, and nanoGPT through the plugin.
#
#   bash bench/gpu_decide.sh OUT_DIR [NANOGPT_CHECKOUT]
#
# Three experiments against one baseline (`small`, 1M tokens, warm executor, fresh research dir),
# first with --exprun-decide=fixed, then =sequential; prints each session's time, verdicts and
# the experiment seeds each used. With NANOGPT_CHECKOUT (a nanoGPT checkout holding the adapter's
# pytest.ini, its data prepared and its one seed line changed), also the nanoGPT protocol there.
set -uo pipefail
out=${1:?usage: gpu_decide.sh OUT_DIR [NANOGPT_CHECKOUT]}
nano=${2:-}
root=$PWD
export PYTHONPATH=${PYTHONPATH:-$root} PYTHONUNBUFFERED=1
work=$(mktemp -d)  # research and checkpoint dirs: only the logs go to OUT_DIR
mkdir -p "$out"
for mode in fixed sequential; do
  research="$work/research-$mode"
  start=$(date +%s.%N)
  python3 -m pytest -p pytest_exprun.plugin -p no:cacheprovider -q --rootdir="$root" \
    --experiment=use_qk_norm --experiment=optimizer=muon --experiment=lr=2e-4 \
    --exprun-command="python train_llm.py --config small" --exprun-executor=warm \
    --exprun-decide="$mode" --exprun-research-dir="$research" --exprun-checkpoints-dir="$work/ckpt-$mode" \
    > "$out/$mode.log" 2>&1
  end=$(date +%s.%N)
  echo "== $mode: $(python3 -c "print(f'{$end - $start:.1f}')") s"
  grep -E "^(use_qk_norm|optimizer-muon|lr-|baseline)" "$out/$mode.log"
  python3 - "$research" <<'PY'
import json, pathlib, sys
for twin in sorted(pathlib.Path(sys.argv[1]).glob("experiment_*.json")):
    data = json.loads(twin.read_text())
    print(f"  {data['name']}: {data['verdict']}, experiment seeds {[r['seed'] for r in data['runs']]}, "
          f"baseline seeds {[r['seed'] for r in data['baseline_runs']]}")
PY
done
if [ -n "$nano" ]; then
  start=$(date +%s.%N)
  (cd "$nano" && python3 -m pytest -p pytest_exprun.plugin -p no:cacheprovider -q --experiment=n_layer=4 \
     --exprun-research-dir="$work/research-nanogpt" --exprun-checkpoints-dir="$work/ckpt-nanogpt") > "$out/nanogpt.log" 2>&1
  end=$(date +%s.%N)
  echo "== nanoGPT: $(python3 -c "print(f'{$end - $start:.1f}')") s"
  grep -E "^(n_layer|baseline)|done in" "$out/nanogpt.log"
fi
