#!/usr/bin/env bash
# Usage: scripts/glibc-sysroot.sh DIR [x64|arm64]
# Unpacks Debian 11 (bullseye)'s glibc 2.31 and its GCC 10 C/C++ compiler with libstdc++ into DIR, for a
# linux prebuild that binds only to symbols glibc 2.31 already had. The compiler comes along because a
# newer GCC's static libstdc++.a and libgcc were built against a newer glibc (GCC 12's reference
# __libc_single_threaded@GLIBC_2.32, arc4random@2.36, _dl_find_object@2.35). Binaries run here from
# DIR/usr/bin with the host's assembler, linker and libraries (libisl23, libmpc3, libmpfr6 and libgmp10
# keep their sonames from bullseye to bookworm).
#   x64 (default): libc6, libc6-dev, linux-libc-dev and gcc/g++-10 for amd64, plus the shared
#     libstdc++/libgcc_s node needs to run on that glibc for the load test
#     (DIR/lib/x86_64-linux-gnu/ld-2.31.so --library-path ... node).
#   arm64: Debian's aarch64 cross toolchain of bullseye (gcc/g++-10-aarch64-linux-gnu, an amd64 program)
#     with its arm64 glibc 2.31, libstdc++ and libgcc under DIR/usr/aarch64-linux-gnu, which is also the
#     QEMU_LD_PREFIX under which an arm64 node runs on glibc 2.31 for the load test.
# A private apt state: this machine's sources, lists and dpkg status are left alone; only
# deb.debian.org is needed. Does nothing when DIR already holds a complete sysroot.
set -euo pipefail
sysroot="$1"
arch="${2:-x64}"
[ -f "$sysroot/.complete" ] && exit 0

case "$arch" in
  x64)
    packages=(libc6:amd64 libc6-dev:amd64 linux-libc-dev:amd64 libstdc++6:amd64 libgcc-s1:amd64
      gcc-10-base:amd64 cpp-10:amd64 gcc-10:amd64 g++-10:amd64 libgcc-10-dev:amd64 libstdc++-10-dev:amd64)
    features_h="$sysroot/usr/include/features.h"
    compiler="$sysroot/usr/bin/x86_64-linux-gnu-g++-10"
    ;;
  arm64)
    packages=(gcc-10-aarch64-linux-gnu-base cpp-10-aarch64-linux-gnu gcc-10-aarch64-linux-gnu g++-10-aarch64-linux-gnu
      libgcc-10-dev-arm64-cross libstdc++-10-dev-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross
      libc6-arm64-cross libc6-dev-arm64-cross linux-libc-dev-arm64-cross)
    features_h="$sysroot/usr/aarch64-linux-gnu/include/features.h"
    compiler="$sysroot/usr/bin/aarch64-linux-gnu-g++-10"
    ;;
  *) echo "glibc-sysroot: unknown architecture $arch (x64 or arm64)" >&2; exit 2 ;;
esac

apt_dir="$(mktemp -d)"
trap 'rm -rf "$apt_dir"' EXIT
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/parts" "$apt_dir/debs"
# An empty dpkg status: this machine's installed (newer) libc6 must not be the version apt picks.
: > "$apt_dir/status"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main" > "$apt_dir/sources.list"
# The cross toolchain is an amd64 program; its arm64 libraries are Architecture: all packages.
apt_options=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/parts"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status" -o "Dir::Cache=$apt_dir/cache"
  -o "APT::Architecture=amd64" -o "APT::Architectures=amd64"
  -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1"
)
apt-get "${apt_options[@]}" update
(cd "$apt_dir/debs" && apt-get "${apt_options[@]}" download "${packages[@]}")

rm -rf "$sysroot"
mkdir -p "$sysroot"
for deb in "$apt_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
# Absolute links (/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/ld-2.31.so) would point into
# this machine's root: make them relative, inside the sysroot.
find "$sysroot" -type l -lname '/*' | while read -r link; do
  ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$sysroot$(readlink "$link")")" "$link"
done
minor="$(sed -n 's/^#define[[:space:]]*__GLIBC_MINOR__[[:space:]]*//p' "$features_h")"
[ "$minor" = 31 ] || { echo "glibc-sysroot: expected glibc 2.31 headers, got 2.$minor" >&2; exit 1; }
"$compiler" --version >/dev/null
touch "$sysroot/.complete"
