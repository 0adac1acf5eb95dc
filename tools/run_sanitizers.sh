#!/usr/bin/env bash
# Build the C++ runtime with AddressSanitizer + UBSan and run the runtime-facing tests and the
# artifact fuzzer against it. Python and LibTorch are not instrumented, so the sanitizer
# runtimes are preloaded and leak detection is off (CPython itself "leaks" at exit).
#   bash tools/run_sanitizers.sh            (from the repository root, in the project's venv)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build/sanitize}
cmake -S . -B "$build" -G Ninja -DPython_EXECUTABLE="$(command -v python)" \
  -DBYOC_TORCH_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export BYOC_TORCH_RUNTIME_LIB="$(realpath "$build")/libbyoc_torch_runtime.so"
# tests/test_runtime_*.py: spec, tensor bridge, per-instance modes and 4-thread counters.
python -m pytest -q -p no:cacheprovider tests/test_runtime.py tests/test_runtime_*.py \
  tests/test_fuzz_artifact.py tests/test_threads.py tests/test_export.py tests/test_end_to_end.py
python benchmarks/fuzz_artifact.py --target blob --cases "${FUZZ_CASES:-10000}"
