#!/usr/bin/env bash
# Issue 25 on the 2-vCPU development VM: accuracy beside speed, int8 with calibration.
#
#   bash benchmarks/accuracy_cpu.sh digits     # digits (sklearn's 8x8 digits, a trained CNN):
#                                              # every engine x precision that runs here
#   bash benchmarks/accuracy_cpu.sh resnet50   # ResNet-50 224, int8 against fp32 on ONNX Runtime,
#                                              # OpenVINO and PyTorch, agreement on 256 samples
#
# Results land under $OUT (default /tmp/infercmp-accuracy): runs/, the bench tables, a report.
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=200 NO_COLOR=1
out=${OUT:-/tmp/infercmp-accuracy}
mkdir -p "$out"
grep -o -m1 'model name.*' /proc/cpuinfo | tee "$out/cpu.txt"
grep -o 'avx512_vnni\|avx512_bf16\|amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ' | tee -a "$out/cpu.txt"
echo | tee -a "$out/cpu.txt"

case "${1:-digits}" in
digits)
  { time infercmp bench digits -d cpu -e pytorch -e onnxruntime -e openvino \
      -p fp32 -p bf16 -p int8 --accuracy --repeat 2 --out "$out/runs"; } 2>&1 | tee "$out/bench-digits.txt"
  ;;
resnet50)
  # onnxruntime[int8_exclude=fc]: what `infercmp debug-precision resnet50 -e onnxruntime -p int8`
  # proposes (run below, stored in the run, so the report shows it)
  { time infercmp bench resnet50 -s 224,224,3 -d cpu -e pytorch -e onnxruntime -e openvino \
      -e 'onnxruntime[int8_exclude=fc]' -p fp32 -p int8 --accuracy 256 --repeat 2 \
      --out "$out/runs"; } 2>&1 | tee "$out/bench-resnet50.txt"
  run=$(ls -d "$out"/runs/*/ | tail -1)
  infercmp debug-precision resnet50 -e onnxruntime -p int8 --samples 8 --run "$run" \
    2>&1 | tee "$out/debug-precision-resnet50.txt"
  ;;
esac
run=$(ls -d "$out"/runs/*/ | tail -1)
infercmp report "$run" -o "$out/report.html"
infercmp report "$run" --format md > "$out/report.md"
