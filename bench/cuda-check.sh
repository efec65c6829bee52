#!/usr/bin/env bash
# The CUDA checks that need a GPU, in one bounded run (about 10 minutes at most on one H200 with 16 cores).
#
#   bash bench/cuda-check.sh pack   here, on a machine with node and a built tree (npm run build):
#                                   writes .cuda-carry/ (node itself, xz-compressed; the Node-API
#                                   headers; node-addon-api; the compiled tests) for a machine that
#                                   has nvcc and cmake but no node and no network
#   bash bench/cuda-check.sh [PART] on the GPU machine, from the repository root, with .cuda-carry/
#                                   beside it (or node, dist/ and node_modules/ already there).
#                                   PART: all (default), kernels (steps 2-4) or backend (steps 5-6),
#                                   for machines whose one command may not run that long: the
#                                   second part reuses the first one's build (build-cmake/)
#
# Steps: build the addon with nvcc (the flags cmake-js passes, FALCON_CUDA=ON, for this GPU's
# architecture, -j16); run test/cuda-*.test.ts with every op case on the emulation and on the real
# kernels (FALCON_TEST_CUDA_REQUIRE=1: not reaching the GPU fails); compute-sanitizer memcheck and
# racecheck over every kernel once on small shapes; time the kernels at falcon-rw-1b's shapes beside
# an HBM copy probe and the wmma rate (bench/cuda-kernels.mjs); run every fixture case and the engine
# on device "cuda", and a tiny model through the backend under memcheck and racecheck; time the
# harness's pp512/pp2048/tg128 and engine streams on the GPU (bench/run.ts --device cuda), greedy, at
# temperature 1 and top-p 0.9; PyTorch's cuBLAS bf16 rate and copy rate as outside references when python3 has torch. Prints one summary;
# exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.cuda-carry

PART=${1:-all}
if [ "$PART" = "pack" ]; then
  set -e
  [ -f dist/test/cuda-ops.test.js ] || { echo "run npm run build first (dist/ is missing)"; exit 1; }
  # node.xz is kept when it is newer than node (compressing takes a minute); the rest is rewritten.
  [ "$CARRY/node.xz" -nt "$(command -v node)" ] || { mkdir -p "$CARRY" && xz -T0 -6 -c "$(command -v node)" > "$CARRY/node.xz"; }
  rm -rf "$CARRY/node_modules" "$CARRY/node-api-headers" "$CARRY/dist" && mkdir -p "$CARRY/node_modules"
  cp -a node_modules/node-api-headers "$CARRY/node-api-headers"
  # node-addon-api for the build, node-gyp-build for src/native-loader.ts in the tests.
  cp -a node_modules/node-addon-api node_modules/node-gyp-build "$CARRY/node_modules/"
  cp -a dist "$CARRY/dist"
  du -sh "$CARRY"
  echo "carry .cuda-carry with the device run; there: bash bench/cuda-check.sh"
  exit 0
fi

case "$PART" in all | kernels | backend) ;; *) echo "usage: bash bench/cuda-check.sh [pack | all | kernels | backend]"; exit 2 ;; esac
START=$SECONDS
SUMMARY=()
FAILED=0
# step NAME LIMIT_SECONDS COMMAND...: runs it under a time limit, records pass/fail and its duration.
step() {
  local name=$1 limit=$2
  shift 2
  local began=$SECONDS
  echo
  echo "=== $name (limit ${limit}s)"
  # Through bash so that the exported functions below (build, torch_reference) run under the limit too.
  timeout --kill-after=10 "$limit" bash -c '"$@"' step "$@"
  local rc=$?
  local status=pass
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="FAIL (timed out after ${limit}s)"; elif [ $rc -ne 0 ]; then status="FAIL (exit $rc)"; fi
  [ "$status" = pass ] || FAILED=1
  SUMMARY+=("$(printf '%-44s %-28s %4ss' "$name" "$status" $((SECONDS - began)))")
  return $rc
}
note() { SUMMARY+=("$(printf '%-44s %s' "$1" "$2")"); }

# node: the carried one when the machine has none.
if ! command -v node >/dev/null; then
  if [ -f "$CARRY/node.xz" ]; then
    mkdir -p /tmp/cuda-check-node/bin && xz -dc "$CARRY/node.xz" > /tmp/cuda-check-node/bin/node && chmod +x /tmp/cuda-check-node/bin/node
    export PATH=/tmp/cuda-check-node/bin:$PATH
  else
    echo "no node here and no $CARRY/node.xz: run 'bash bench/cuda-check.sh pack' where node is, and carry .cuda-carry"; exit 1
  fi
fi
[ -d dist ] || { [ -d "$CARRY/dist" ] && cp -a "$CARRY/dist" dist; }
mkdir -p node_modules
for module in "$CARRY"/node_modules/*; do
  [ -d "node_modules/$(basename "$module")" ] || cp -a "$module" node_modules/
done
NODE_API_INCLUDE=node_modules/node-api-headers/include
[ -d "$NODE_API_INCLUDE" ] || NODE_API_INCLUDE=$CARRY/node-api-headers/include
echo "node $(node --version); $(nvcc --version | tail -1); $(cmake --version | head -1)"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || echo "nvidia-smi found no GPU"
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
ARCH=${FALCON_CUDA_ARCHITECTURES:-${ARCH:-90}}
ADDON=$PWD/build-cmake/Release/falcon_native.node

# 1. Build (only this GPU's architecture, to stay inside the time bound; the CI-less default of all
#    four plus PTX is what `npm run build:cmake` builds).
build() {
  cmake -S . -B build-cmake -G Ninja --no-warn-unused-cli -DCMAKE_BUILD_TYPE=Release \
    "-DCMAKE_LIBRARY_OUTPUT_DIRECTORY=$PWD/build-cmake/Release" \
    "-DCMAKE_JS_INC=$PWD/$NODE_API_INCLUDE;$PWD/node_modules/node-addon-api" -DCMAKE_JS_SRC= -DCMAKE_JS_LIB= \
    -DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION -DFALCON_CUDA=ON "-DFALCON_CUDA_ARCHITECTURES=$ARCH" &&
    cmake --build build-cmake -j 16
}
export -f build
export ARCH NODE_API_INCLUDE
BUILT=0
if step "build with nvcc (sm_$ARCH)" 200 build; then
  BUILT=1
  export FALCON_NATIVE_ADDON=$ADDON FALCON_TEST_CUDA_ADDON=$ADDON FALCON_TEST_CUDA_REQUIRE=1
  SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
fi
if [ $BUILT = 1 ] && [ "$PART" != backend ]; then
  # 2. The op tests on the emulation and on the GPU, same cases, same bounds.
  step "cuda-*.test.ts (emulation + real kernels)" 120 \
    node --test --test-concurrency=1 dist/test/cuda-ops.test.js dist/test/cuda-attention.test.js dist/test/cuda-emulation.test.js
  # 3. compute-sanitizer over every kernel once (small shapes, results checked against the CPU).
  #    (On a gVisor machine it refuses the device: KINDS.md; the step then fails, saying so.)
  if [ -n "$SANITIZER" ]; then
    step "compute-sanitizer memcheck" 60 "$SANITIZER" --tool memcheck --error-exitcode 1 node bench/cuda-kernels.mjs sanitize "$ADDON"
    step "compute-sanitizer racecheck" 90 "$SANITIZER" --tool racecheck --error-exitcode 1 node bench/cuda-kernels.mjs sanitize "$ADDON"
  else
    note "compute-sanitizer" "FAIL (not found)"; FAILED=1
  fi
  # 4. Kernel timings at falcon-rw-1b's shapes beside their floors.
  step "kernel timings (falcon-rw-1b shapes)" 120 node bench/cuda-kernels.mjs time "$ADDON"
fi
if [ $BUILT = 1 ] && [ "$PART" != kernels ]; then
  # 5. The CUDA backend end to end: every fixture case and the engine on device "cuda" (the real GPU:
  #    FALCON_TEST_CUDA_ADDON makes the suites skip the emulation), then a small model's prompt,
  #    graph-replayed decode and logits under compute-sanitizer.
  step 'fixture suites (float, int8) + engine on device: "cuda"' 150 \
    node --test --test-concurrency=1 dist/test/cuda-fixtures.test.js dist/test/cuda-int8.test.js dist/test/cuda-engine.test.js
  tiny_model_run() {
    rm -rf /tmp/cuda-check-tiny && node dist/src/cli.js run --save /tmp/cuda-check-tiny --device cuda >/dev/null &&
      node dist/src/cli.js generate --preset /tmp/cuda-check-tiny --device cuda --max-new-tokens 24 --verbose "The falcon"
  }
  export -f tiny_model_run
  if [ -n "$SANITIZER" ]; then
    step "compute-sanitizer memcheck (backend, tiny model)" 90 "$SANITIZER" --tool memcheck --error-exitcode 1 bash -c tiny_model_run
    step "compute-sanitizer racecheck (backend, tiny model)" 120 "$SANITIZER" --tool racecheck --error-exitcode 1 bash -c tiny_model_run
  else
    note "compute-sanitizer (backend)" "FAIL (not found)"; FAILED=1
  fi
  # 6. The harness on the GPU: falcon-rw-1b's shape with random weights, pp512/pp2048/tg128 and the
  #    engine at 1/16/64/256 streams (floors: the HBM probe and the wmma rate of step 4).
  step "bench: pp512/pp2048/tg128, engine 1/16/64/256 (bf16, f16, int8)" 200 \
    node dist/bench/run.js --device cuda --dtypes bfloat16,float16,int8 --prompts 512,2048 --streams 1,16,64,256 \
      --engine-dtypes bfloat16 --reps 3
  #    The engine again as the server's default request samples (the whole softmax at temperature 1), and
  #    as a request with top_p 0.9 samples: their tokens drawn on the device (draw_tokens) instead of
  #    greedy's top-1 candidate.
  step "bench: engine 64/256 sampling at temperature 1 (bf16)" 90 \
    node dist/bench/run.js --device cuda --dtypes bfloat16 --prompts 512 --streams 64,256 --engine-dtypes bfloat16 \
      --engine-sampler random --reps 1
  step "bench: engine 64/256 sampling top-p 0.9 (bf16)" 90 \
    node dist/bench/run.js --device cuda --dtypes bfloat16 --prompts 512 --streams 64,256 --engine-dtypes bfloat16 \
      --engine-sampler topP --reps 1
fi
# 7. Outside references for the floors: cuBLAS through PyTorch, when the machine has it.
torch_reference() {
  python3 - <<'PY'
import torch, time
assert torch.cuda.is_available(), "torch sees no GPU"
def rate(run, work, repeats=10):
    for _ in range(3): run()
    torch.cuda.synchronize(); start = time.perf_counter()
    for _ in range(repeats): run()
    torch.cuda.synchronize(); return work * repeats / (time.perf_counter() - start)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
print(f"torch bf16 matmul 8192³ (cuBLAS): {rate(lambda: a @ b, 2 * 8192**3) / 1e12:.0f} TFLOP/s")
x = torch.empty(2**30, dtype=torch.uint8, device="cuda"); y = torch.empty_like(x)
print(f"torch device copy 1 GiB: {rate(lambda: y.copy_(x), 2 * 2**30) / 1e9:.0f} GB/s (bytes read + written)")
PY
}
export -f torch_reference
if [ "$PART" = backend ]; then
  :
elif python3 -c "import torch" 2>/dev/null; then
  step "reference rates (PyTorch/cuBLAS)" 60 torch_reference
else
  note "reference rates (PyTorch/cuBLAS)" "not run: python3 has no torch"
fi

echo
echo "=== summary ($((SECONDS - START))s)"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
