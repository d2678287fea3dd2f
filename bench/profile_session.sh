#!/usr/bin/env bash
# Where one protocol session's own time goes: `pytest --experiment=use_qk_norm` (5 + 3 seeds)
# under cProfile, once per executor, printing the total, the runs' summed wall time, and the
# plugin's and pytest's functions that took longest (cumulative). The "what was taken out"
# figures in docs/benchmarks.md come from this.
#   bash bench/profile_session.sh RESULTS_DIR [trainer command]
set -u
OUT_DIR=${1:-bench-results}; mkdir -p "$OUT_DIR"
TRAINER=${2:-python train_llm.py --config small}
for executor in warm local; do
  work=$(mktemp -d)
  start=$(date +%s.%N)
  python3 -m cProfile -o "$OUT_DIR/profile_$executor.out" -m pytest -p no:cacheprovider -q -o addopts= \
    --experiment=use_qk_norm --exprun-extension-seeds= "--exprun-command=$TRAINER" \
    --exprun-executor=$executor --exprun-research-dir="$work/research" \
    --exprun-checkpoints-dir="$work/ckpt" --exprun-accept=neutral > "$OUT_DIR/session_$executor.log" 2>&1
  end=$(date +%s.%N)
  python3 - "$executor" "$start" "$end" "$work" "$OUT_DIR/profile_$executor.out" <<'PY'
import glob, json, pstats, sys
executor, start, end, work, profile = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
records = [json.load(open(p)) for p in glob.glob(f"{work}/research/.exprun/runs/**/seed*.json", recursive=True)]
runs = sum(r["wall_time"] for r in records)
print(f"{executor}: total {end - start:.2f}s, {len(records)} runs, their wall times {runs:.2f}s, outside {end - start - runs:.2f}s")
rows = [(ct, f"{f[0]}:{f[1]}({f[2]})") for f, (_, _, _, ct, _) in pstats.Stats(profile).stats.items()
        if ct > 0.1 and ("exprun" in f[0] or "_pytest" in f[0] or "scipy/stats/__init__" in f[0]
                         or "conftest" in f[0] or "hypothesis" in f[0])]
for ct, name in sorted(rows, reverse=True)[:40]:
    print(f"  {ct:7.3f}s  {name[-110:]}")
PY
done
