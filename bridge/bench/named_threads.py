"""Runs `station-bridge` with each Python thread's name given to the kernel (prctl PR_SET_NAME), so
the benchmark can read each thread's CPU in /proc/<pid>/task/<tid>/ (Python 3.11 leaves them unnamed).

    python bridge/bench/named_threads.py run --config FILE
"""

import ctypes
import sys
import threading

_libc = ctypes.CDLL(None)
_start = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _named(self: threading.Thread) -> None:
    _libc.prctl(15, self.name[:15].encode(), 0, 0, 0)  # PR_SET_NAME
    _start(self)


threading.Thread._bootstrap_inner = _named  # type: ignore[attr-defined]

if __name__ == "__main__":
    from station_bridge.cli import main
    sys.exit(main(sys.argv[1:]))
