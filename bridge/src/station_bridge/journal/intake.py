"""The write-ahead intake log of one destination (`*.wal`; see the package's docstring)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

from . import records
from .chunk import Chunk
from .files import DiskGuard, fsync_dir

log = logging.getLogger("station_bridge.journal")


class Intake:
    """The write-ahead log of one destination (see the module's docstring)."""

    SUFFIX = ".wal"

    def __init__(self, directory: Path, segment_bytes: int = 8 << 20, guard: DiskGuard | None = None) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.guard = guard
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._segments: deque[list] = deque()  # [path, end_seq, size]; the last may be open
        self._handle = None
        self._next = 0  # sequence number of the next point appended
        self._low = 0  # every point below is settled
        self._settled: dict[int, int] = {}  # settled ranges above _low: start -> end
        self._count = 0
        self.failed_points = 0
        self.last_error = ""
        self.failed_at = 0.0  # monotonic time of the last failed append (0: never)
        self.before_delete = None  # called (without arguments) before a segment is deleted

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(s[2] for s in self._segments)

    def append(self, chunk: Chunk) -> bool:
        """Numbers the chunk (chunk.seq) and logs it; False when it could not be logged (its
        range is then settled at once: nothing to forget later)."""
        with self._lock:
            chunk.seq = self._next
            self._next += chunk.count
            if not chunk.count:
                return True
            try:
                head = records.header(chunk.data, chunk.count)  # one chunk, one record, one writev(2)
                size = len(head) + len(chunk.data)
                if self.guard is not None and not self.guard.room(size):
                    raise OSError(errno.ENOSPC, f"free space below the reserve of {self.guard.reserve} bytes")
                if self._handle is None:
                    self._count += 1
                    path = self.dir / f"{time.time_ns():020d}-w{self._count:07d}{self.SUFFIX}"
                    self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 - open until rotated
                    self._segments.append([path, chunk.seq, 0])
                    fsync_dir(self.dir)
                # unbuffered: in the kernel when this returns; the header and the chunk's bytes as
                # they are (no copy of the chunk to put the header before it)
                written = os.writev(self._handle.fileno(), (head, chunk.data))
                if written != size:
                    raise OSError(errno.ENOSPC, f"short write ({written} of {size} bytes)")
            except OSError as exc:
                # A partial write leaves a torn record: start a new segment for what follows
                # (the reader skips the torn one). The chunk lives in memory only.
                if self._handle is not None:
                    with contextlib.suppress(OSError):
                        self._handle.close()
                    self._handle = None
                self.failed_points += chunk.count
                self.failed_at = time.monotonic()
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._settle(chunk.seq, chunk.count)
                return False
            active = self._segments[-1]
            active[1] = self._next
            active[2] += size
            if active[2] >= self.segment_bytes:
                self._handle.close()
                self._handle = None
        return True

    def settle(self, seq: int, count: int) -> None:
        """Points seq .. seq+count-1 no longer need the log."""
        if count <= 0 or seq < 0:
            return
        with self._lock:
            self._settle(seq, count)

    def _settle(self, seq: int, count: int) -> None:
        # Ranges may overlap: an append that failed is settled at once, and the writer later
        # settles the batch it was joined into (Chunk.join), which covers it again. A range that
        # starts below `_low` must still move `_low` past its end, or no segment is deleted again.
        end = seq + count
        if end <= self._low:
            pass  # settled already
        elif seq > self._low:
            self._settled[seq] = max(self._settled.get(seq, 0), end)
        else:
            self._low = end
            while self._settled:
                ready = [start for start in self._settled if start <= self._low]
                if not ready:
                    break
                for start in ready:
                    self._low = max(self._low, self._settled.pop(start))
        while self._segments and self._segments[0][1] <= self._low:
            open_one = len(self._segments) == 1 and self._handle is not None
            if open_one and self._low < self._next:
                break
            if open_one:
                self._handle.close()
                self._handle = None
            if self.before_delete is not None:
                self.before_delete()
            path = self._segments.popleft()[0]
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot delete a settled intake log segment", extra={"file": str(path), "error": str(exc)})

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                with contextlib.suppress(OSError):
                    self._handle.close()
                self._handle = None
