#!/usr/bin/env bash
# npm run test:arm64 [-- FILE.test.js ...]: the test suite (or the given compiled test files, by name
# in dist/test/ or by path) on the cross-built linux-arm64 addon, run by an arm64 Node under
# qemu-user, so the scalar kernels, the platform layer and the binding are tested as arm64 runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/arm64-env.sh
arm64_require_tools
arm64_fetch_node
arm64_enable_binfmt
bash scripts/build-arm64.sh
npx tsc -p .

# Every process the tests start inherits this, so they load the arm64 addon too.
export FALCON_NATIVE_ADDON="$PWD/build-arm64/build/Release/falcon_native.node"
files=()
for file in "$@"; do
  if [[ "$file" == */* ]]; then files+=("$file"); else files+=("dist/test/$file"); fi
done
[ ${#files[@]} -gt 0 ] || files=(dist/test/*.test.js)
"$ARM64_NODE_DIR/bin/node" --test --test-concurrency=1 "${files[@]}"
