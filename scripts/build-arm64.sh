#!/usr/bin/env bash
# npm run build:arm64: cross-compiles the addon for linux-arm64 (glibc) with Debian's aarch64
# toolchain, to build-arm64/build/Release/falcon_native.node, beside the host's build/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/arm64-env.sh
arm64_require_tools
arm64_fetch_node

# node-gyp always builds into ./build, so it runs from build-arm64/, which sees the sources through a
# link; node-addon-api still resolves from the repository's node_modules above it. binding.gyp is a
# copy: gyp would resolve a link and regenerate the Makefile with paths relative to the repository.
mkdir -p build-arm64
ln -sfn ../native build-arm64/native
cmp -s binding.gyp build-arm64/binding.gyp || cp binding.gyp build-arm64/binding.gyp

node_gyp="${npm_config_node_gyp:-$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js}"
cd build-arm64
export CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++
# Configured once per arm64 Node; the generated Makefile reconfigures itself when binding.gyp changes.
grep -qF "\"nodedir\": \"$ARM64_NODE_DIR\"" build/config.gypi 2>/dev/null ||
  node "$node_gyp" configure --arch=arm64 --nodedir="$ARM64_NODE_DIR"
node "$node_gyp" build -j 2
