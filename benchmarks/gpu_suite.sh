#!/usr/bin/env bash
# The GPU suite of issue 8, run on the H200 machine after `source .gpu/unpack.sh`
# (see ../shared/gpu/README.md). Everything it measures lands under $OUT. Each phase fits one
# device call (10 minutes): a bench cut short by its time limit keeps every finished combination.
#
#   bash benchmarks/gpu_suite.sh main       # the published run: ResNet-50 at 224/336/448 on CUDA,
#                                           # then the built-in models (about 6 minutes)
#   bash benchmarks/gpu_suite.sh validate   # reference loops vs infercmp, sampler, VRAM (< 10 min)
#   bash benchmarks/gpu_suite.sh compile    # torch.compile at the three shapes (< 10 min)
#   bash benchmarks/gpu_suite.sh windows    # issue 13: measure windows, energy, utilisation
#   bash benchmarks/gpu_suite.sh counter    # issue 13: energy from NVML's counter (2.5 s windows)
#   bash benchmarks/gpu_suite.sh all        # all three, one after another (three device calls'
#                                           # worth: for a machine without the 10-minute limit)
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=170 NO_COLOR=1
export INFERCMP_CACHE_DIR=${INFERCMP_CACHE_DIR:-/tmp/infercmp-cache}
# One Inductor cache for every process, so a second compile of a graph reuses the first's work.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}
out=${OUT:-/tmp/infercmp-out}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
shapes=(-s 224,224,3 -s 336,336,3 -s 448,448,3)
precisions=(-p fp32 -p fp16 -p bf16)
budget=${SUITE_SECONDS:-560}  # per phase; SIGINT at the end keeps what was measured
started=$SECONDS

left() { echo $((budget - (SECONDS - started))); }

bench() {  # bench LOG ARGS...: one infercmp bench, stopped with SIGINT when the phase's time is up
  local log=$1
  shift
  local t
  t=$(left)
  if [ "$t" -le 20 ]; then
    echo "skipped (no time left): infercmp bench $*" | tee -a "$out/$log"
    return
  fi
  { time timeout -s INT -k 20 "$t" infercmp bench "$@" --out "$out/runs"; } 2>&1 | tee -a "$out/$log"
}

case "${1:-main}" in
main)
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
    | tee "$out/gpu.csv"
  bench bench-gpu.txt resnet50 "${shapes[@]}" -d cuda "${precisions[@]}" \
    -e pytorch -e 'pytorch[channels_last=true,cuda_graph=true]' \
    -e onnxruntime -e 'onnxruntime[enable_cuda_graph=true]' -e tensorrt \
    --max-seconds 2 --warmup 1s
  for model in tiny-cnn tiny-two-io tiny-encoder; do
    bench bench-builtin.txt "$model" -d cuda "${precisions[@]}" \
      -e pytorch -e 'pytorch[cuda_graph=true]' -e onnxruntime -e tensorrt \
      --max-seconds 1 --warmup 0.5s
  done
  ;;
validate)
  python3 "$here/gpu_validate.py" --out "$out" --deadline "$budget" 2>&1 | tee "$out/validate.txt"
  ;;
compile-check)
  # Part 5 of validate alone (torch.compile max-autotune against the expert's loop), keeping
  # the workers' logs, with Inductor saying why it would skip its CUDA graphs.
  TORCH_LOGS=perf_hints python3 "$here/gpu_validate.py" --out "$out" --deadline "$budget" \
    --only-compile 2>&1 | tee "$out/validate-compile.txt"
  tar -czf "$out/validation-runs.tar.gz" -C "$out" validation-runs
  ;;
windows)
  # Issue 13: every CUDA combination's measure window meets --min-seconds (1 s), energy per
  # inference implies an average power between idle and the card's limit, and utilisation
  # rests on at least 10 readings; CUDA-graph rows included, two processes each.
  nvidia-smi --query-gpu=name,driver_version,power.limit,power.draw --format=csv \
    | tee "$out/gpu.csv"
  bench bench-windows.txt resnet50 -s 224,224,3 -d cuda -p fp32 -p fp16 --repeat 2 \
    -e pytorch -e 'pytorch[channels_last=true,cuda_graph=true]' \
    -e 'onnxruntime[enable_cuda_graph=true]'
  bench bench-windows.txt tiny-encoder -d cuda --repeat 2 \
    -e pytorch -e 'pytorch[cuda_graph=true]' -e 'onnxruntime[enable_cuda_graph=true]'
  python3 "$here/window_table.py" "$out/runs" | tee "$out/windows.txt"
  ;;
counter)
  # Issue 13's energy-counter path: windows of 2.5 s span ~25 steps of NVML's 100 ms counter,
  # so energy comes from the counter, not from integrated power (about 1 minute).
  bench bench-counter.txt resnet50 -s 224,224,3 -d cuda -p fp16 --repeat 2 --min-seconds 2.5 \
    -e 'pytorch[channels_last=true,cuda_graph=true]' -e 'onnxruntime[enable_cuda_graph=true]'
  bench bench-counter.txt tiny-encoder -d cuda --repeat 2 --min-seconds 2.5 \
    -e 'pytorch[cuda_graph=true]'
  python3 "$here/window_table.py" "$out/runs" | tee "$out/windows-counter.txt"
  ;;
compile)
  # torch.compile's default mode (Inductor kernels, no autotuning) alone and under infercmp's
  # own CUDA graph; max-autotune is in `validate` (it autotunes for minutes per shape).
  bench bench-compile.txt resnet50 "${shapes[@]}" -d cuda "${precisions[@]}" \
    -e 'pytorch[compile=default]' -e 'pytorch[channels_last=true,compile=default,cuda_graph=true]' \
    --max-seconds 2 --warmup 1s
  ;;
all)
  for phase in main validate compile; do bash "$0" "$phase"; done
  exit
  ;;
esac
for d in "$out"/runs/*/; do [ -d "$d" ] && tar -czf "$out/$(basename "$d").tar.gz" -C "$out/runs" "$(basename "$d")"; done
rm -rf "$out/runs" "$out/validation-runs"
