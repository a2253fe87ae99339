#!/usr/bin/env bash
# aet bench score on a lent GPU (e.g. one H200), in a few minutes: bf16 vs float32 on CUDA, large
# length-sorted batches (tokenized on a helper thread into pinned memory, copied without blocking),
# the scorer worker and the embedded loop on the same messages, and the share of the GPU's bf16 peak
# that the model alone reaches (score.json: compute.gpu).
#
# Run from the repository root on the GPU machine:
#   deploy/gpu/bench_score.sh [OUT_DIR]
# It needs a CUDA build of torch in .venv (or on PATH) and the shared data in $AET_SHARED_DATA
# (default ../shared/data); without the data it runs on examples/ and skips the quality columns.
# A champion is bootstrapped on examples/train.jsonl when none is registered in $AET_HOME.
set -euo pipefail

OUT="${1:-${OUT:-bench-results/gpu}}"
export AET_HOME="${AET_HOME:-$(mktemp -d)/home}"
export HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-true}"
# Large batches: the GPU wants thousands of messages a forward pass; the scorer's bus batch feeds them.
export AET_MODEL__DEVICE=cuda
export AET_MODEL__PRECISION="${AET_MODEL__PRECISION:-auto}"  # auto is bf16 on CUDA
export AET_MODEL__BATCH_SIZE="${AET_MODEL__BATCH_SIZE:-512}"
export AET_SCORER__MAX_BATCH="${AET_SCORER__MAX_BATCH:-4096}"

if [ -x .venv/bin/aet ]; then AET=.venv/bin/aet; else AET=aet; fi
PY="${AET%aet}python"
[ "$AET" = aet ] && PY=python3

"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine (the CPU path is aet bench score)"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PY
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true

mkdir -p "$OUT"
time "$AET" bench score --device cuda --n "${N:-20000}" --out "$OUT" \
  --bootstrap-data examples/train.jsonl | tee "$OUT/score.stdout.json"
"$PY" - "$OUT/score.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
gpu = r["compute"].get("gpu") or {}
alone = (gpu.get("model_only_bf16") or {}).get("messages_per_s")
print(f"model alone, bf16: {alone and round(alone):,} msg/s (target > 50,000); "
      f"{gpu.get('achieved_tflop_s')} TFLOP/s = {gpu.get('fraction_of_bf16_peak')} of the {gpu.get('bf16_peak_tflop_s')} peak")
for name, o in r["options"].items():
    print(f"{name:>14}: scorer worker {o['throughput']['messages_per_s']:,.0f} msg/s, "
          f"p99 {o['latency_at_half_load']['p99_ms']} ms at half load")
print("embedded loop / scorer:", round(r["loop_vs_scorer"], 3))
PY
