"""The memory budget: what the bridge may hold in memory, in bytes, and how it is shared.

The budget (`memory.budget_bytes`; default: `memory.limit_fraction` (0.5) of what the process's
cgroup memory limit leaves after `PYTHON_RESERVE` (64 MiB: the interpreter, libraries and the C
extension take ~40 MiB at start), at least `MIN_BUDGET`; the limit is cgroup v2 `memory.max` (v1
`memory.limit_in_bytes`) found through `/proc/self/cgroup`; no limit or none readable:
`FALLBACK_BUDGET` (512 MiB)) leaves the rest of the limit to Python itself, threads and transient
bursts (a receive burst, a batch being written). Measured (chaos/test_memory_budget.py): a flood of 1 KiB
messages under a 128 MiB limit peaked at 99 MiB RSS with its 32 MiB budget. It is shared:
- `RECEIVE_SHARE` (half) for libzmq's receive queues, evenly per subscription and, within one,
  per endpoint (each connection has its own queue): a subscription's `rcvhwm`, unless set, is
  its share divided by `message_bytes` (the typical message size, default 1 KiB) plus
  `ZMQ_OVERHEAD` (libzmq's bookkeeping per message: two msg_t of 64 bytes, the content header,
  malloc's), at least 1 (`MIN_RCVHWM` does not raise it past the share);
- the rest for the destinations' in-memory queues, evenly per destination: a destination's
  `queue_max_bytes`, unless set. A queue that would exceed it (or `queue_max_points`) spills to
  the journal; a journal that refuses (spool cap, disk reserve) is a counted drop, never memory.

Freed memory is kept for reuse (`retain_freed`, at the start of `run`): glibc's malloc otherwise
hands a burst's queue memory back to the kernel once it is freed (each libzmq I/O thread's arena
drops whole 64 MiB heaps, the main heap is trimmed above 128 KiB), and the next burst takes it
back a page at a time, each page a fault and zeroed (measured: a 600,000-message burst into a
running bridge, about 17,000 page faults and libzmq's I/O thread 0.30 us per message; with the
memory kept, under 5,000 and 0.20 us). What is kept is bounded by the budget's receive share
(what libzmq's queues may hold anyway): held for the next burst instead of returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from dataclasses import dataclass
from pathlib import Path

FALLBACK_BUDGET = 512 << 20  # no cgroup limit (or none readable)
PYTHON_RESERVE = 64 << 20  # of the limit, never part of the budget
MIN_BUDGET = 8 << 20
RECEIVE_SHARE = 0.5  # of the budget, for libzmq's receive queues; the rest for the destinations' queues
ZMQ_OVERHEAD = 256  # bytes libzmq holds per queued message beyond its payload (measured: ~200)
MIN_RCVHWM = 100
MAX_RCVHWM = 2**31 - 1
BURST_BYTES = 8 << 20  # a receive burst's bytes (and, by default, one each message's points)
# glibc's mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
HEAP_MAX = 64 << 20  # a glibc thread arena's heap (2 x DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold, fixed
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number (9223372036854771712)


def cgroup_memory_limit(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit of this process's cgroup in bytes (the lowest along its path), or None.

    cgroup v2: the `0::<path>` line of /proc/self/cgroup, `memory.max` ("max": none) in that
    directory and its parents. cgroup v1: the `memory` controller's line, `memory.limit_in_bytes`.
    """
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    found: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            candidates = [(root, "memory.max"), (root / "unified", "memory.max")]
        elif "memory" in controllers.split(","):
            candidates = [(root / "memory", "memory.limit_in_bytes"), (root / controllers, "memory.limit_in_bytes")]
        else:
            continue
        for base, name in candidates:
            directory = base / path.lstrip("/")
            while True:
                with contextlib.suppress(OSError, ValueError):
                    text = (directory / name).read_text().strip()
                    if text != "max" and int(text) < _UNLIMITED:
                        found.append(int(text))
                if directory == base or base not in directory.parents:
                    break
                directory = directory.parent
    return min(found) if found else None


@dataclass(frozen=True)
class Budget:
    total: int  # bytes
    limit: int | None  # the cgroup limit it was derived from (None: explicit or the fallback)
    source: str  # "config", "cgroup" or "fallback"

    @property
    def receive(self) -> int:
        return int(self.total * RECEIVE_SHARE)

    @property
    def queues(self) -> int:
        return self.total - self.receive


def budget(explicit: int | None, fraction: float) -> Budget:
    if explicit is not None:
        return Budget(explicit, None, "config")
    limit = cgroup_memory_limit()
    if limit is None:
        return Budget(FALLBACK_BUDGET, None, "fallback")
    return Budget(max(MIN_BUDGET, int((limit - PYTHON_RESERVE) * fraction)), limit, "cgroup")


def derived_rcvhwm(share: int, endpoints: int, message_bytes: int) -> int:
    """Messages one connection may queue so that `endpoints` of them hold at most `share` bytes:
    `MIN_RCVHWM` only where that many fit (large messages get fewer, never a queue beyond the
    share), at least 1."""
    fits = share // max(1, endpoints) // (message_bytes + ZMQ_OVERHEAD)
    # at most a C int: libzmq's option (a 1024TiB budget of small messages overflowed it)
    return min(MAX_RCVHWM, max(1, fits if fits < MIN_RCVHWM else max(MIN_RCVHWM, fits)))


def retain_freed(budget: Budget) -> bool:
    """Keep freed heap memory for reuse, up to the budget's receive share (glibc's malloc;
    elsewhere nothing is done and False returned): the trim threshold at that share, a top pad of
    the same (at most a whole thread-arena heap: glibc deletes a heap whose top is free beyond the
    pad, which is how libzmq's I/O thread handed its queue memory back after every burst), and
    allocations up to 32 MiB from the heap (glibc's dynamic threshold, which setting the others
    turns off, fixed at its own ceiling). The share is what libzmq's queues may hold anyway: a
    burst's memory is kept for the next instead of returned and faulted in again, and a small
    budget (a small MemoryMax) keeps little. True when glibc took all three."""
    name = ctypes.util.find_library("c")
    if not name or "libc.so" not in name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no gnu_get_libc_version)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    keep = min(budget.receive, (1 << 31) - 1)
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TOP_PAD, min(keep, HEAP_MAX)), (M_TRIM_THRESHOLD, keep)))
