#!/usr/bin/env bash
# Issue 15's CPU evidence (docs/scenarios.md): a ResNet-50 batch sweep and a concurrency sweep
# with ONNX Runtime and PyTorch, and a server scenario searching the highest rate under a p99
# limit on tiny-cnn; then one report of the three runs (HTML, md, json) under $OUT.
#
#   OUT=docs/results/scenarios-2core bash benchmarks/cpu_scenarios.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=170 NO_COLOR=1
out=${OUT:-/tmp/infercmp-scenarios}
runs=${RUNS:-$out/runs}
mkdir -p "$out" "$runs"
infercmp=${INFERCMP:-infercmp}
window=(--max-seconds 6 --min-seconds 2 --warmup 1s --sample-hz 5)

$infercmp bench resnet50 -e onnxruntime -e pytorch -d cpu --batch 1,4,16 "${window[@]}" \
  --out "$runs" 2>&1 | tee "$out/bench-batch.txt"
$infercmp bench resnet50 -e onnxruntime -e pytorch -d cpu --concurrency 1,2 "${window[@]}" \
  --out "$runs" 2>&1 | tee "$out/bench-concurrency.txt"
$infercmp bench tiny-cnn -e onnxruntime -e pytorch -d cpu --scenario server --qps auto \
  --slo-ms 5 --duration 1 --warmup 0.5s --sample-hz 5 --out "$runs" 2>&1 | tee "$out/bench-server.txt"
mapfile -t dirs < <(ls -1dt "$runs"/*/ | head -3)
$infercmp report "${dirs[@]}" -o "$out/report.html"
$infercmp report "${dirs[@]}" -f md -o "$out/report.md"
$infercmp report "${dirs[@]}" -f json -o "$out/summary.json"
