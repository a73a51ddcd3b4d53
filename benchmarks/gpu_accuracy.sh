#!/usr/bin/env bash
# Issue 25 on the GPU machine, after `source .gpu/unpack.sh` (../shared/gpu/README.md):
# ResNet-50 224 with --accuracy on 256 samples of its generated dataset (agreement with
# PyTorch fp32 on the CPU: its weights are random), fp32/fp16/bf16 on PyTorch and ONNX
# Runtime, and int8 wherever an engine runs it on CUDA, else the refusal that says why.
# One device call (10 minutes); results land under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=200 NO_COLOR=1
export INFERCMP_CACHE_DIR=${INFERCMP_CACHE_DIR:-/tmp/infercmp-cache}
out=${OUT:-/tmp/infercmp-gpu-accuracy}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
  | tee "$out/gpu.csv"
{ time timeout -s INT -k 20 "${SUITE_SECONDS:-480}" infercmp bench resnet50 -s 224,224,3 -d cuda \
    -e pytorch -e 'pytorch[channels_last=true,cuda_graph=true]' \
    -e onnxruntime -e 'onnxruntime[enable_cuda_graph=true]' -e tensorrt \
    -p fp32 -p fp16 -p bf16 -p int8 --accuracy 256 --max-seconds 2 --warmup 1s \
    --out "$out/runs"; } 2>&1 | tee "$out/bench.txt"
run=$(ls -d "$out"/runs/*/ | tail -1)
infercmp report "$run" -o "$out/report.html"
infercmp report "$run" --format md > "$out/report.md"
infercmp report "$run" --format json > "$out/report.json"
tar --exclude samples -czf "$out/run.tar.gz" -C "$(dirname "$run")" "$(basename "$run")"
tail -40 "$out/bench.txt"
