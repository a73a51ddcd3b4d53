#!/usr/bin/env bash
# The GPU suite of issue 8, run on the H200 machine after `source .gpu/unpack.sh`
# (see ../shared/gpu/README.md). Everything it measures lands under $OUT.
#
#   bash benchmarks/gpu_suite.sh main       # the published run: ResNet-50 at 224/336/448 on CUDA
#   bash benchmarks/gpu_suite.sh validate   # reference loops, sampler perturbation, CPU run
#   bash benchmarks/gpu_suite.sh all        # main, then the reference loops (one device call)
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=170 NO_COLOR=1
export INFERCMP_CACHE_DIR=${INFERCMP_CACHE_DIR:-/tmp/infercmp-cache}
out=${OUT:-/tmp/infercmp-out}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
shapes=(-s 224,224,3 -s 336,336,3 -s 448,448,3)

case "${1:-main}" in
main)
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
    | tee "$out/gpu.csv"
  time infercmp bench resnet50 "${shapes[@]}" -d cuda \
    -e pytorch -e 'pytorch[channels_last=true,cuda_graph=true]' \
    -e onnxruntime -e 'onnxruntime[enable_cuda_graph=true]' -e tensorrt \
    -p fp32 -p fp16 --max-seconds 2 --warmup 1s --out "$out/runs" 2>&1 \
    | tee "$out/bench-gpu.txt"
  ;;
all)
  bash "$0" main
  python3 "$here/gpu_validate.py" --out "$out" 2>&1 | tee "$out/validate.txt"
  ;;
validate)
  python3 "$here/gpu_validate.py" --out "$out" 2>&1 | tee "$out/validate.txt"
  time infercmp bench resnet50 "${shapes[@]}" -d cpu -e pytorch -e onnxruntime -p fp32 \
    --max-seconds 3 --out "$out/runs" 2>&1 | tee "$out/bench-cpu.txt"
  ;;
esac
for d in "$out"/runs/*/; do [ -d "$d" ] && tar -czf "$out/$(basename "$d").tar.gz" -C "$out/runs" "$(basename "$d")"; done
rm -rf "$out/runs" "$out/validation-runs"
