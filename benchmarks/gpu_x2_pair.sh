#!/usr/bin/env bash
# One device call on the two-GPU H200 machine (nvidia-h200-x2), after `source .gpu/unpack.sh`:
# issue 17's tune on GPU 1 and, beside it, issue 15's scenarios then issue 13's energy-counter
# phase on GPU 0. Each side has its own GPU, its own half of the host's cores (taskset: an
# Inductor max-autotune compile starts a worker per core it may use) and its own artifact cache,
# so neither measures the other's work; what they still share (memory bandwidth, PCIe root,
# the driver) is named in the closing note. Results: $OUT/tune, $OUT/scenarios, $OUT/counter.
#
#   bash benchmarks/gpu_x2_pair.sh      # about 9.3 minutes (the tune's 510 s budget + stop)
set -uo pipefail
out=${OUT:-/tmp/infercmp-out}
here=$(cd "$(dirname "$0")" && pwd)
cores=$(nproc)
half=$((cores / 2))
mkdir -p "$out/tune" "$out/scenarios" "$out/counter"
nvidia-smi -L
(
  export CUDA_VISIBLE_DEVICES=1 OUT=$out/tune INFERCMP_CACHE_DIR=/tmp/cache-tune
  TUNE_BUDGET=${TUNE_BUDGET:-510s} taskset -c "$half-$((cores - 1))" \
    bash "$here/gpu_tune.sh" >"$out/tune/log.txt" 2>&1
) &
tune=$!
(
  export CUDA_VISIBLE_DEVICES=0 INFERCMP_CACHE_DIR=/tmp/cache-scen
  OUT=$out/scenarios SUITE_SECONDS=${SCEN_SECONDS:-430} taskset -c "0-$((half - 1))" \
    bash "$here/gpu_scenarios.sh" >"$out/scenarios/log.txt" 2>&1
  OUT=$out/counter SUITE_SECONDS=100 taskset -c "0-$((half - 1))" \
    bash "$here/gpu_suite.sh" counter >"$out/counter/log.txt" 2>&1
) &
wait
wait "$tune"
echo "== scenarios (GPU 0)"; tail -n 30 "$out/scenarios/table.txt" 2>/dev/null || tail -n 20 "$out/scenarios/log.txt"
echo "== energy counter (GPU 0)"; cat "$out/counter/windows-counter.txt" 2>/dev/null || tail -n 20 "$out/counter/log.txt"
echo "== tune (GPU 1)"; tail -n 45 "$out/tune/log.txt"
