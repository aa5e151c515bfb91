"""On-disk state of one destination: the journal, the write-ahead intake log, dead letters.

Points travel as `Chunk`s: line protocol bytes (each line ends in a newline) with their count
and the intake sequence number of their first line, so no stage re-joins or re-splits lines.

- Journal: segment files (`*.lp`) of batches that could not be written now, each written to a
  temporary name, fsynced and renamed, so a crash leaves whole segments or nothing. Replayed
  oldest first, deleted only after InfluxDB acknowledged them. A size cap bounds the spool: a
  batch that does not fit is dropped, counted and logged. `station-bridge replay` reads them.
- Intake (write-ahead log, `*.wal`): every point a destination accepts is appended before it
  is queued in memory, with one write(2) per burst (no fsync: it survives a killed process,
  not a power cut), and is forgotten once settled: written, journaled, dead-lettered or counted
  as dropped. At the next start the journal adopts what was not settled, so a `kill -9` loses
  nothing that reached the bridge. Points that were written but not yet settled are written
  again: InfluxDB keeps one point per series and timestamp, so nothing is doubled.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("station_bridge.journal")


@dataclass(slots=True)
class Chunk:
    """`count` lines of line protocol, each ending in a newline; `seq` numbers the first one."""

    data: bytes
    count: int
    seq: int = -1

    @classmethod
    def of(cls, lines: list[str], seq: int = -1) -> Chunk:
        return cls(("\n".join(lines) + "\n").encode("utf-8") if lines else b"", len(lines), seq)

    def lines(self) -> list[str]:
        return self.data.decode("utf-8").splitlines()

    def split(self, count: int) -> tuple[Chunk, Chunk]:
        """The first `count` lines, and the rest."""
        parts = self.data.split(b"\n", count)
        head = b"\n".join(parts[:count]) + b"\n"
        rest_seq = self.seq + count if self.seq >= 0 else -1
        return Chunk(head, count, self.seq), Chunk(parts[count], self.count - count, rest_seq)

    @staticmethod
    def join(chunks: list[Chunk]) -> Chunk:
        if len(chunks) == 1:
            return chunks[0]
        return Chunk(b"".join(c.data for c in chunks), sum(c.count for c in chunks), chunks[0].seq)


def _durable_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Journal:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = 0
        for stale in self.dir.glob("*.tmp"):
            stale.unlink(missing_ok=True)  # never renamed: never acknowledged as journaled
        self.adopted = self._adopt_intake()
        self._segments = sorted(self.dir.glob("*.lp"))
        self._bytes = sum(p.stat().st_size for p in self._segments)
        self._lines = sum(_count_lines(p) for p in self._segments)

    def _adopt_intake(self) -> int:
        """Turns the intake logs a stopped process left behind into journal segments."""
        adopted = 0
        for wal in sorted(self.dir.glob(f"*{Intake.SUFFIX}")):
            data = wal.read_bytes()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # the process died inside a write: that line never fully arrived
                log.warning("intake log ends in a partial line, which is discarded",
                            extra={"segment": wal.name, "bytes": len(data) - end})
            if end:
                _durable_write(wal.with_suffix(".lp"), data[:end])
                adopted += data.count(b"\n", 0, end)
            wal.unlink()
        if adopted:
            log.warning("delivering points a stopped bridge had accepted but not settled",
                        extra={"destination": self.dir.name, "points": adopted})
        return adopted

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def points(self) -> int:
        return self._lines

    def __len__(self) -> int:
        return len(self._segments)

    def append(self, chunk: Chunk) -> bool:
        """Writes a batch as a new segment; False when the spool cap would be exceeded."""
        with self._lock:
            if self._bytes + len(chunk.data) > self.max_bytes:
                return False
            self._seq += 1
            final = self.dir / f"{time.time_ns():020d}-{self._seq:08d}.lp"
            _durable_write(final, chunk.data)
            self._segments.append(final)
            self._bytes += len(chunk.data)
            self._lines += chunk.count
        return True

    def oldest(self) -> tuple[Path, Chunk] | None:
        with self._lock:
            if not self._segments:
                return None
            path = self._segments[0]
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            data += b"\n"
        return path, Chunk(data, data.count(b"\n"))

    def ack(self, path: Path) -> None:
        """InfluxDB acknowledged the segment: delete it."""
        with self._lock:
            size = path.stat().st_size
            lines = _count_lines(path)
            path.unlink()
            self._segments.remove(path)
            self._bytes -= size
            self._lines -= lines


class Intake:
    """The write-ahead log of one destination (see the module's docstring)."""

    SUFFIX = ".wal"

    def __init__(self, directory: Path, segment_bytes: int = 8 << 20) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._segments: deque[list] = deque()  # [path, end_seq, size]; the last may be open
        self._handle = None
        self._next = 0  # sequence number of the next point appended
        self._low = 0  # every point below is settled
        self._settled: dict[int, int] = {}  # settled ranges above _low: start -> end
        self._count = 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(s[2] for s in self._segments)

    def append(self, chunk: Chunk) -> None:
        """Logs the chunk and numbers it (chunk.seq)."""
        with self._lock:
            if self._handle is None:
                self._count += 1
                path = self.dir / f"{time.time_ns():020d}-w{self._count:07d}{self.SUFFIX}"
                self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 - open until rotated
                self._segments.append([path, self._next, 0])
            try:
                self._handle.write(chunk.data)  # unbuffered: in the kernel when this returns
            except OSError:
                # A partial write leaves a torn line: start a new segment for what follows
                # (adoption drops the torn tail) and let the caller count the failure.
                self._handle.close()
                self._handle = None
                raise
            chunk.seq = self._next
            self._next += chunk.count
            active = self._segments[-1]
            active[1] = self._next
            active[2] += len(chunk.data)
            if active[2] >= self.segment_bytes:
                self._handle.close()
                self._handle = None

    def settle(self, seq: int, count: int) -> None:
        """Points seq .. seq+count-1 no longer need the log."""
        if count <= 0 or seq < 0:
            return
        with self._lock:
            if seq == self._low:
                self._low += count
                while self._low in self._settled:
                    self._low = self._settled.pop(self._low)
            else:
                self._settled[seq] = seq + count
            while self._segments and self._segments[0][1] <= self._low:
                open_one = len(self._segments) == 1 and self._handle is not None
                if open_one and self._low < self._next:
                    break
                if open_one:
                    self._handle.close()
                    self._handle = None
                self._segments.popleft()[0].unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


class DeadLetters:
    """Append-only JSONL of what was refused for good, with the reason, for an operator to inspect."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, **record: object) -> None:
        record.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
