#!/usr/bin/env bash
# npm run test:sanitize: builds the native core and addon with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-sanitize/, apart from the normal build) and runs the whole
# test suite on it. Node itself is not built with ASan, so the runtimes are preloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

# The real CUDA kernels are not instrumented by the sanitizers, so the sanitized build leaves them out
# (their emulated build, which the tests run, is plain C++ and is checked).
npx cmake-js compile --out build-sanitize --CDFALCON_SANITIZE=ON --CDFALCON_CUDA=OFF
npx tsc -p .

# The runtimes of the compiler that built the addon (cmake-js uses the default c++).
compiler=$(command -v c++ || command -v g++)
libasan=$("$compiler" -print-file-name=libasan.so)
libubsan=$("$compiler" -print-file-name=libubsan.so)
for runtime in "$libasan" "$libubsan"; do
  [ -f "$runtime" ] || { echo "test:sanitize: $runtime not found (install the compiler's sanitizer runtimes)" >&2; exit 1; }
done

# Child processes the tests start inherit all of this, so they run the sanitized addon too.
export FALCON_NATIVE_ADDON="$PWD/build-sanitize/Release/falcon_native.node"
# detect_leaks=0: node frees little of its own memory at exit by design, so LeakSanitizer would
# report node, not us; what the addon allocates is checked by the tests' native allocation counts.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$PWD/scripts/ubsan.supp"
# The sanitized addon runs about 3× slower: the fuzz suite's hang limit scales with it (fuzz.test.ts).
export FALCON_TEST_TIME_SCALE=3
LD_PRELOAD="$libasan $libubsan" node --test --test-concurrency=1 dist/test/*.test.js
