#!/usr/bin/env bash
# Issue 26 on the GPU machine, after `source .gpu/unpack.sh` (../shared/gpu/README.md).
#
#   bash benchmarks/gpu_profile.sh profile   # ResNet-50 fp16 batch 1: PyTorch eager, PyTorch with a
#                                            # CUDA graph, ONNX Runtime with and without a CUDA graph,
#                                            # each profiled and aligned to the module tree
#   bash benchmarks/gpu_profile.sh startup   # start-up cold and warm of every engine that runs
#                                            # here, torch.compile's cold compile included
#
# One device call each (10 minutes at most); results land under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=200 NO_COLOR=1
export INFERCMP_CACHE_DIR=${INFERCMP_CACHE_DIR:-/tmp/infercmp-cache}
out=${OUT:-/tmp/infercmp-gpu-profile}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
  | tee "$out/gpu.csv"
case "${1:-profile}" in
profile)
  { time timeout -s INT -k 20 "${SUITE_SECONDS:-420}" infercmp bench resnet50 -s 224,224,3 \
      -d cuda -p fp16 --batch 1 \
      -e pytorch -e 'pytorch[cuda_graph=true]' -e onnxruntime -e 'onnxruntime[enable_cuda_graph=true]' \
      --profile --repeat 2 --max-seconds 3 --out "$out/runs"; } 2>&1 | tee "$out/bench.txt"
  ;;
startup)
  { time timeout -s INT -k 20 "${SUITE_SECONDS:-540}" infercmp bench resnet50 -s 224,224,3 \
      -d cuda -p fp16 --batch 1 \
      -e pytorch -e 'pytorch[cuda_graph=true]' -e 'pytorch[compile=default]' -e onnxruntime \
      -e 'onnxruntime[enable_cuda_graph=true]' -e tensorrt \
      --cold --max-seconds 1 --out "$out/runs"; } 2>&1 | tee "$out/bench.txt"
  ;;
esac
run=$(ls -d "$out"/runs/*/ | tail -1)
infercmp report "$run" -o "$out/report.html"
infercmp report "$run" --format md > "$out/report.md"
infercmp report "$run" --format json > "$out/report.json"
tar -czf "$out/run.tar.gz" -C "$(dirname "$run")" "$(basename "$run")"
tail -60 "$out/report.md"
