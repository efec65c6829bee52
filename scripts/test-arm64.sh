#!/usr/bin/env bash
# npm run test:arm64 [-- FILE.test.js ...]: the test suite (or the given compiled test files, by name
# in dist/test/ or by path) on the cross-built linux-arm64 addon, run by an arm64 Node under
# qemu-user, so the scalar kernels, the platform layer and the binding are tested as arm64 runs them.
# FALCON_ARM64_ADDON=FILE tests that addon instead of building one (the prebuild of
# npm run prebuild:linux-arm64, say; with QEMU_LD_PREFIX=build-sysroot/bullseye-arm64/usr/aarch64-linux-gnu
# on Debian 11's glibc 2.31).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/arm64-env.sh
arm64_require_tools
arm64_fetch_node
arm64_enable_binfmt
[ -n "${FALCON_ARM64_ADDON:-}" ] || bash scripts/build-arm64.sh
npx tsc -p .

# Every process the tests start inherits this, so they load the arm64 addon too.
export FALCON_NATIVE_ADDON="$(realpath "${FALCON_ARM64_ADDON:-build-arm64/build/Release/falcon_native.node}")"
files=()
for file in "$@"; do
  if [[ "$file" == */* ]]; then files+=("$file"); else files+=("dist/test/$file"); fi
done
[ ${#files[@]} -gt 0 ] || files=(dist/test/*.test.js)
"$ARM64_NODE_DIR/bin/node" --test --test-concurrency=1 "${files[@]}"
