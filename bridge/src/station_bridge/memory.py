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
  its share divided by `message_bytes` (the typical message size; unset: the largest message
  libzmq accepts, TRANSPORT_LIMIT_FACTOR x max_frame_bytes, so that no feed can fill more) plus
  `ZMQ_OVERHEAD` (libzmq's bookkeeping per message: two msg_t of 64 bytes, the content header,
  malloc's), at least 1 (`MIN_RCVHWM` does not raise it past the share);
- the rest for the destinations' in-memory queues, evenly per destination: a destination's
  `queue_max_bytes`, unless set. A queue that would exceed it (or `queue_max_points`) spills to
  the journal; a journal that refuses (spool cap, disk reserve) is a counted drop, never memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

FALLBACK_BUDGET = 512 << 20  # no cgroup limit (or none readable)
PYTHON_RESERVE = 64 << 20  # of the limit, never part of the budget
MIN_BUDGET = 8 << 20
RECEIVE_SHARE = 0.5  # of the budget, for libzmq's receive queues; the rest for the destinations' queues
ZMQ_OVERHEAD = 256  # bytes libzmq holds per queued message beyond its payload (measured: ~200)
MIN_RCVHWM = 100
# libzmq accepts messages up to this many max_frame_bytes (MAXMSGSIZE; above, it drops the
# connection): the bridge receives them and counts them `oversized` instead of losing them unseen
TRANSPORT_LIMIT_FACTOR = 16
MAX_RCVHWM = 2**31 - 1  # libzmq's options are C ints (config.MAX_COUNT bounds every count with it)
BURST_BYTES = 8 << 20  # a receive burst's bytes (and, by default, one each message's points)
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
