#!/usr/bin/env bash
# Issue 15 on the H200, one device call (< 9 minutes): ResNet-50 224x224 fp16 at batch 1 to
# 256 with PyTorch (channels_last, CUDA graph) and ONNX Runtime (CUDA graph; cuDNN's
# EXHAUSTIVE conv search, the engine's default and the expert's), inputs on the device; a
# PyTorch concurrency sweep 1,2,4 at batch 1; one report of both runs; and last, a table of
# images/s beside the expert loops' figures (issue 15). Run after `source .gpu/unpack.sh`:
#
#   bash benchmarks/gpu_scenarios.sh
#
# GPU_SCENARIOS_CPU=1 runs the same flow on the CPU with tiny-two-io (batch 1,8,32; a few
# seconds each), to check the script without a GPU (PYTHON and INFERCMP name the interpreter
# and command to use there). Everything lands under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=170 NO_COLOR=1
export INFERCMP_CACHE_DIR=${INFERCMP_CACHE_DIR:-/tmp/infercmp-cache}
out=${OUT:-/tmp/infercmp-out}
runs=$out/runs
mkdir -p "$runs"
here=$(cd "$(dirname "$0")" && pwd)
infercmp=${INFERCMP:-infercmp}
budget=${SUITE_SECONDS:-530}  # SIGINT at the end keeps every finished combination
started=$SECONDS

if [ "${GPU_SCENARIOS_CPU:-0}" = 1 ]; then
  model=(tiny-two-io) device=cpu precision=fp32 batches=1,8,32
  torch_engine='pytorch[channels_last=true]' ort_engine=onnxruntime
  window=(--max-seconds 0.5 --min-seconds 0.2 --warmup 0.2s)
else
  model=(resnet50 -s 224,224,3) device=cuda precision=fp16 batches=1,8,32,128,256
  torch_engine='pytorch[channels_last=true,cuda_graph=true]'
  ort_engine='onnxruntime[enable_cuda_graph=true]'
  window=(--max-seconds 2 --warmup 1s --device-resident)
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
    | tee "$out/gpu.csv"
fi

bench() {  # bench LOG ARGS...: one infercmp bench, stopped with SIGINT when the time is up
  local log=$1 t=$((budget - (SECONDS - started)))
  shift
  if [ "$t" -le 20 ]; then
    echo "skipped (no time left): infercmp bench $*" | tee -a "$out/$log"
    return
  fi
  { time timeout -s INT -k 20 "$t" $infercmp bench "$@" --out "$runs"; } 2>&1 | tee -a "$out/$log"
}

# GPU_SCENARIOS_ONLY=load: only the load scenarios (offline at 1, 2 and 4 requests in flight,
# and server at the highest rate whose p99 stays under 2 ms), with the energy table last.
if [ "${GPU_SCENARIOS_ONLY:-}" != load ]; then
  bench bench-batch.txt "${model[@]}" -d "$device" -p "$precision" --batch "$batches" \
    -e "$torch_engine" -e "$ort_engine" "${window[@]}"
fi
bench bench-concurrency.txt "${model[@]}" -d "$device" -p "$precision" --batch 1 \
  --concurrency 1,2,4 -e "$torch_engine" "${window[@]}"
if [ "${GPU_SCENARIOS_ONLY:-}" = load ]; then
  bench bench-server.txt "${model[@]}" -d "$device" -p "$precision" --batch 1 \
    --scenario server --qps auto --slo-ms 2 -e "$torch_engine" "${window[@]}"
fi
mapfile -t dirs < <(ls -1dt "$runs"/*/ 2>/dev/null | head -2)
if [ "${#dirs[@]}" -gt 0 ]; then
  $infercmp report "${dirs[@]}" -o "$out/report.html"
  $infercmp report "${dirs[@]}" -f md -o "$out/report.md"
  $infercmp report "${dirs[@]}" -f json -o "$out/summary.json"
  ${PYTHON:-python3} "$here/scenario_table.py" "${dirs[@]}" | tee "$out/table.txt"
  ${PYTHON:-python3} "$here/energy_table.py" "${dirs[@]}" | tee "$out/energy.txt"
fi
