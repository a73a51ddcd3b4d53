#!/usr/bin/env bash
# Issue 16 on the two-GPU H200 machine (nvidia-h200-x2), in one device call of under 9 minutes,
# after `bash ../shared/gpu/stage.sh ray==2.60.0` and `source .gpu/unpack.sh`
# (../shared/gpu/README.md). Results land under $OUT; the comparison table is printed last.
#
#   bash benchmarks/gpu_ray.sh                 # ResNet-50 at 224, 8 CUDA combinations: first with
#                                              # --executor ray (a local Ray, two at a time, one per
#                                              # GPU), then the same matrix sequentially (local)
#   GPU_RAY_CPU=1 bash benchmarks/gpu_ray.sh   # the same flow on a CPU machine (tiny-cnn, -d cpu)
#   GPU_RAY_GRAPHS=1 GPU_RAY_REPEAT=3 bash benchmarks/gpu_ray.sh  # CUDA-graph rows, inputs on the
#                                              # device, three processes a combination per side
#                                              # (GPU_RAY_PART=ray, then =local: two calls)
#
# Ray runs with no network: a local instance (ray.init, no address), no dashboard (infercmp
# starts it with include_dashboard=False), no usage statistics (RAY_USAGE_STATS_ENABLED=0).
# Token authentication stays Ray 2.60's default (on): the local instance makes its own token in
# ~/.ray/auth_token, which needs no network (docs/distributed.md).
set -uo pipefail
export PYTHONUNBUFFERED=1 COLUMNS=170 NO_COLOR=1
export INFERCMP_CACHE_DIR=${INFERCMP_CACHE_DIR:-/tmp/infercmp-cache}
export RAY_USAGE_STATS_ENABLED=0
out=${OUT:-/tmp/infercmp-out}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
budget=${GPU_RAY_SECONDS:-530}  # SIGINT at the end keeps what was measured
started=$SECONDS

if [ -n "${GPU_RAY_CPU:-}" ]; then
  matrix=(tiny-cnn -d cpu -p fp32 -e pytorch -e onnxruntime --max-seconds 0.5 --warmup 2)
elif [ -n "${GPU_RAY_GRAPHS:-}" ]; then
  # Launch-bound eager rows move by 40% between processes on the H200 whatever runs them: the
  # matrix of graph-replayed rows, inputs on the device, tells the executor's effect apart.
  matrix=(resnet50 -s 224,224,3 -d cuda -p fp32 -p fp16 -p bf16 --device-resident
    -e 'pytorch[cuda_graph=true]' -e 'pytorch[channels_last=true,cuda_graph=true]'
    -e 'onnxruntime[enable_cuda_graph=true]' --max-seconds 2 --warmup 1s)
else
  matrix=(resnet50 -s 224,224,3 -d cuda -p fp32 -p fp16
    -e pytorch -e 'pytorch[channels_last=true,cuda_graph=true]'
    -e onnxruntime -e 'onnxruntime[enable_cuda_graph=true]'
    --max-seconds 2 --warmup 1s)
fi

left() { echo $((budget - (SECONDS - started))); }

bench() {  # bench NAME SECONDS ARGS...: one bench into $out/NAME, stopped by SIGINT at its limit
  local name=$1 limit=$2
  shift 2
  local t
  t=$(left)
  [ "$limit" -lt "$t" ] && t=$limit
  if [ "$t" -le 20 ]; then
    echo "skipped (no time left): infercmp bench $*" | tee -a "$out/$name.txt"
    return
  fi
  local t0=$SECONDS
  timeout -s INT -k 30 "$t" infercmp bench "${matrix[@]}" ${GPU_RAY_REPEAT:+--repeat "$GPU_RAY_REPEAT"} "$@" --out "$out/$name" \
    >"$out/$name.txt" 2>&1
  echo "$name: exit $?, $((SECONDS - t0)) s in all (export and Ray start included)" \
    | tee -a "$out/walls.txt"
  tail -n 4 "$out/$name.txt"
}

{
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  python3 -c 'import ray; print("ray", ray.__version__)'
  echo "RAY_AUTH_MODE=${RAY_AUTH_MODE:-unset (Ray 2.60 default: token)}" \
    "RAY_USAGE_STATS_ENABLED=$RAY_USAGE_STATS_ENABLED"
} 2>&1 | tee "$out/setup.txt"

# The Ray run first: it also makes the ONNX export, which the sequential run then finds cached;
# the wall times compared below are run.json's (measuring only), not the commands'.
# GPU_RAY_PART=ray and then GPU_RAY_PART=local split the two over two device calls (with
# --repeat 3 both do not fit in one); the first leaves its run in $keep for the second.
keep=/tmp/infercmp-ray-keep
part=${GPU_RAY_PART:-both}
if [ "$part" != local ]; then
  bench ray 300 --executor ray
  mkdir -p "$keep" && cp -r "$out/ray" "$keep/"
fi
[ "$part" = ray ] && { cat "$out/walls.txt"; exit 0; }
[ -d "$out/ray" ] || cp -r "$keep/ray" "$out/"
bench local 530

ray_run=$(ls -d "$out"/ray/*/ 2>/dev/null | tail -n 1)
local_run=$(ls -d "$out"/local/*/ 2>/dev/null | tail -n 1)
if [ -n "$ray_run" ] && [ -n "$local_run" ]; then
  python3 "$here/ray_compare.py" "$ray_run" "$local_run" 2>&1 | tee "$out/ray_compare.txt"
else
  echo "a run is missing: ray='$ray_run' local='$local_run'"
fi
cat "$out/walls.txt"
