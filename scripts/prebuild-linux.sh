#!/usr/bin/env bash
# Builds the linux-x64 glibc prebuild (prebuilds/linux-x64/falcon-native.glibc.node, N-API only,
# tagged by libc) against Debian 11's glibc 2.31 with its GCC 10, libstdc++ and libgcc linked
# statically, so it loads on glibc 2.31 and later whatever C++ runtime the system has; then checks
# its highest GLIBC_ symbol version (at most FALCON_GLIBC_BASELINE, default 2.28: RHEL 8), and that
# it loads and runs a model under Debian 11's own dynamic loader and libraries (glibc 2.31), with this
# node (official builds need glibc 2.28). The sysroot is cached in build-sysroot/ (FALCON_SYSROOT).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || { echo "prebuild-linux: builds on Linux x86_64 only" >&2; exit 1; }

sysroot="$(realpath -m "${FALCON_SYSROOT:-build-sysroot/bullseye-amd64}")"
bash scripts/glibc-sysroot.sh "$sysroot"

# node-gyp's Makefile reads CC, CXX, CFLAGS, CXXFLAGS and LDFLAGS from the environment.
export CC="$sysroot/usr/bin/x86_64-linux-gnu-gcc-10" CXX="$sysroot/usr/bin/x86_64-linux-gnu-g++-10"
compat="-include $PWD/scripts/glibc-compat.h"
export CFLAGS="--sysroot=$sysroot $compat" CXXFLAGS="--sysroot=$sysroot $compat"
# --exclude-libs: the static C++ runtime stays private to the addon (node has its own).
export LDFLAGS="--sysroot=$sysroot -static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL"
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

rm -rf prebuilds/linux-x64
# prebuildify builds in build/: keep a developer's own build out of its way.
had_build=0
if [ -d build ]; then rm -rf build-prebuild-saved && mv build build-prebuild-saved && had_build=1; fi
restore() { rm -rf build; if [ "$had_build" = 1 ]; then mv build-prebuild-saved build; fi; }
trap restore EXIT
# node-gyp builds with JOBS parallel jobs.
export JOBS="${JOBS:-max}"
# N-API only: the target version picks the headers (this node's), not an ABI.
npx --no-install prebuildify --napi --strip --tag-libc --target "$(node -p process.versions.node)"
node scripts/check-glibc.js prebuilds/linux-x64/falcon-native.glibc.node --max "${FALCON_GLIBC_BASELINE:-2.28}"

# Under glibc 2.31 (the loader and libraries of the sysroot, none of this machine's): the CLI runs a
# random model on the prebuild. Only a node that itself runs on glibc 2.31 can show that.
node_glibc="$(objdump -T "$(command -v node)" | grep -o 'GLIBC_2\.[0-9]*' | sort -uV | tail -1)"
if [ "$(printf '%s\n' "$node_glibc" GLIBC_2.31 | sort -V | tail -1)" != GLIBC_2.31 ]; then
  echo "prebuild-linux: this node needs $node_glibc: not run under glibc 2.31 (an official node build can be)" >&2
  exit 0
fi
[ -f dist/src/cli.js ] || npx --no-install tsc -p tsconfig.build.json
node_on_glibc_2_31() {
  "$sysroot/lib/x86_64-linux-gnu/ld-2.31.so" --library-path "$sysroot/lib/x86_64-linux-gnu:$sysroot/usr/lib/x86_64-linux-gnu" "$(command -v node)" "$@"
}
[ "$(node_on_glibc_2_31 -p 'process.report.getReport().header.glibcVersionRuntime')" = 2.31 ]
FALCON_NATIVE_ADDON=prebuilds/linux-x64/falcon-native.glibc.node node_on_glibc_2_31 dist/src/cli.js run --batch 1 --length 8
