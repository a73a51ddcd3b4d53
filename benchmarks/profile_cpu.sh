#!/usr/bin/env bash
# Issue 26 on the 2-vCPU development VM: why one engine wins, and what starting costs.
#
#   bash benchmarks/profile_cpu.sh
#
# ResNet-50 224 at batch 1 under PyTorch (eager and torch.compile), ONNX Runtime and OpenVINO
# in one run, with
# `--profile` (each engine's own profiler after the timed phase, aligned to ResNet-50's module
# tree) and `--cold` (every engine's start-up in fresh processes with empty caches, then warm).
# Results land under $OUT (default /tmp/infercmp-profile): runs/, the bench table, the aligned
# tables at depth 1 (report.md) and 2 (report-depth2.md), a report (html, md, json).
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=200 NO_COLOR=1
out=${OUT:-/tmp/infercmp-profile}
mkdir -p "$out"
grep -o -m1 'model name.*' /proc/cpuinfo | tee "$out/cpu.txt"
grep -o 'avx512_vnni\|avx512_bf16\|amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ' | tee -a "$out/cpu.txt"
echo | tee -a "$out/cpu.txt"

{ time infercmp bench resnet50 -s 224,224,3 -d cpu -e pytorch -e onnxruntime -e openvino \
    -e 'pytorch[compile=default]' \
    --profile --cold --repeat 2 --out "$out/runs"; } 2>&1 | tee "$out/bench.txt"
run=$(ls -d "$out"/runs/*/ | tail -1)
infercmp report "$run" -o "$out/report.html"
infercmp report "$run" --format md > "$out/report.md"
infercmp report "$run" --format md --depth 2 > "$out/report-depth2.md"
infercmp report "$run" --format json > "$out/report.json"
