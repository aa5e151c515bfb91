#!/usr/bin/env bash
# The compiled path under AddressSanitizer and UndefinedBehaviorSanitizer (make test, unit stage).
#
# Builds _fastpath.c once with -fsanitize=address,undefined into its own directory (never the
# in-place extension the other tests use), beside a copy of the package, and runs the tests that
# compare the C path with the Python path against it: the differential tests in-process (every
# mapping form, `each` included: test_fastpath.py, test_fastpath_forms.py) and the bridge processes
# of test_fastpath_bridge.py (an order book with `each` among them), and test_receive_threads.py (two subscriptions received by two threads,
# C's part of each batch without the GIL) (they inherit PYTHONPATH and the sanitizer environment). Any report
# fails: UBSan halts (-fno-sanitize-recover, halt_on_error), ASan aborts; pytest captures nothing
# (--capture=no), so a report on fd 2 reaches the log even when it ends the process, and a report
# anywhere in the log fails the run too.
# Leak detection is off: CPython's own allocations at exit are not the extension's.
set -euo pipefail
bridge=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${STATION_SANITIZE_DIR:-$bridge/../.cache/sanitize}")
python=${PYTHON:-python}
cc=${CC:-gcc}
asan=$("$cc" -print-file-name=libasan.so)
[[ $asan == /* && -e $asan ]] || { echo "sanitize: $cc has no libasan.so ($asan)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/lib" "$out/build"
cp -r "$bridge/src/station_bridge" "$out/lib/"
rm -f "$out"/lib/station_bridge/*.so
find "$out/lib" -name __pycache__ -prune -exec rm -rf {} +
# -fno-wrapv after Python's -fwrapv: signed overflow is undefined again, so UBSan checks it.
(cd "$bridge" && CC=$cc CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -fno-wrapv -g -O1" \
  "$python" setup.py -q build_ext --build-lib "$out/lib" --build-temp "$out/build" >"$out/build.log" 2>&1) \
  || { cat "$out/build.log" >&2; exit 1; }

export PYTHONPATH=$out/lib
export LD_PRELOAD=$asan
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
where=$("$python" -c 'import station_bridge._fastpath as f; print(f.__file__)')
[[ $where == "$out/lib/"* ]] || { echo "sanitize: the sanitized build is not the one imported ($where)" >&2; exit 1; }

set +e
(cd "$bridge" && "$python" -m pytest -q -p no:cacheprovider --capture=no \
  tests/test_fastpath.py tests/test_fastpath_bridge.py tests/test_fastpath_forms.py tests/test_receive_threads.py "$@") 2>&1 | tee "$out/pytest.log"
status=${PIPESTATUS[0]}
set -e
unset LD_PRELOAD
if grep -Eq "runtime error:|ERROR: AddressSanitizer|ERROR: LeakSanitizer" "$out/pytest.log"; then
  echo "sanitize: the sanitized extension reported (above; log: $out/pytest.log)" >&2
  exit 1
fi
if [[ $status != 0 ]]; then
  echo "sanitize: the tests failed under the sanitizers (status $status; log: $out/pytest.log)" >&2
fi
exit "$status"
