"""The journal proper: segment files (`*.lp`) of framed records, delivered oldest first (see the
package's docstring)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..lineproto import complete_prefix
from . import records
from .chunk import Chunk
from .files import DiskGuard, disk_reason, durable_write, fsync_dir
from .intake import Intake

log = logging.getLogger("station_bridge.journal")

DAMAGED = ".damaged"


@dataclass(slots=True)
class Segment:
    path: Path
    size: int
    count: int  # verified points (never the name's)
    done: int = 0  # lines already acknowledged (progress of a segment delivered in part)
    records: list[tuple[int, int]] = field(default_factory=list)  # (offset, count) of each verified record


@dataclass(slots=True)
class DamageTally:
    """Damage found in a destination's files at start."""

    records: int = 0  # damaged records not counted before
    points: int = 0  # their points, where a record's header verified
    seen: bool = False  # any damage on disk (counted before or not)


LossHandler = Callable[[int, str, int], None]  # (points, reason, damaged records)


class Journal:
    def __init__(self, directory: Path, max_bytes: int, guard: DiskGuard | None = None) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.guard = guard
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = 0
        self.writable = True
        self.last_error = ""
        self.failed_at = 0.0  # monotonic time of the last refused write (0: never)
        self.damage = DamageTally()
        self.on_loss: LossHandler | None = None  # points of a segment set aside while running
        for stale in [*self.dir.glob("*.tmp")]:
            try:
                stale.unlink()  # never renamed: never acknowledged as journaled
            except OSError as exc:
                log.error("cannot remove a stale temporary file", extra={"file": str(stale), "error": str(exc)})
        self.adopted = self._adopt_intake()
        self._segments: deque[Segment] = deque()
        for path in sorted(self.dir.glob("*.lp")):
            try:
                segment = self._load(path)
            except OSError as exc:
                log.error("cannot read a journal segment; left in place", extra={"file": str(path), "error": str(exc)})
                continue
            if segment.count:
                self._segments.append(segment)
                continue
            try:  # nothing verified in it (its damage is counted): set aside, never read again
                os.replace(path, path.with_name(path.name + DAMAGED))
                for suffix in (".done", ".counted"):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot set a damaged journal segment aside", extra={"file": str(path), "error": str(exc)})
        for suffix in (".done", ".counted"):
            for orphan in self.dir.glob(f"*{suffix}"):
                if not orphan.with_suffix("").exists():
                    orphan.unlink(missing_ok=True)
        self._bytes = sum(s.size for s in self._segments)
        self._lines = sum(s.count - s.done for s in self._segments)

    def newest_payloads(self, max_bytes: int) -> list[bytes]:
        """The verified lines of the newest segments, up to about `max_bytes` (at start: the
        uniqueness window learns the times of the points still on disk)."""
        with self._lock:
            segments = list(self._segments)
        out: list[bytes] = []
        size = 0
        for segment in reversed(segments):
            if size >= max_bytes:
                break
            try:
                data = segment.path.read_bytes()
            except OSError:
                continue
            for offset, count in segment.records:
                record = records.verify(data, offset, count)
                if record is not None:
                    out.append(record.payload)
            size += segment.size
        return out

    def _load(self, path: Path) -> Segment:
        data = path.read_bytes()
        found = records.scan(data)
        count = found.points
        if found.damage:
            self._tally(path, found)
        if found.legacy:
            log.warning("journal segment of the unframed format (no checksums): read once as it is",
                        extra={"file": str(path), "points": count})
        done = 0
        progress = path.with_name(path.name + ".done")
        if progress.exists():
            try:
                done = min(count, int(progress.read_text().strip() or 0))
            except (OSError, ValueError):
                done = 0
        return Segment(path, len(data), count, done, [(r.offset, r.count) for r in found.records])

    def _tally(self, path: Path, found: records.Scan) -> None:
        """Counts a file's damage once: `<file>.counted` remembers what earlier starts counted."""
        self.damage.seen = True
        counted_file = path.with_name(path.name + ".counted")
        before_records = before_points = 0
        with contextlib.suppress(OSError, ValueError):
            before_records, before_points = (int(x) for x in counted_file.read_text().split()[:2])
        new_records = max(0, len(found.damage) - before_records)
        new_points = max(0, found.damaged_points - before_points)
        if new_records or new_points:
            for d in found.damage:
                log.error("damaged journal record skipped", extra={
                    "file": str(path), "offset": d.offset, "bytes": d.length,
                    "points": d.count if d.count is not None else "unknown"})
            self.damage.records += new_records
            self.damage.points += new_points
            try:
                durable_write(counted_file, f"{len(found.damage)} {found.damaged_points}\n".encode())
            except OSError as exc:
                log.error("cannot record that a damaged segment was counted; it is counted again at the next "
                          "start", extra={"file": str(counted_file), "error": str(exc)})

    def _adopt_intake(self) -> int:
        """Turns the intake logs a stopped process left behind into journal segments, by rename."""
        adopted = 0
        for wal in sorted(self.dir.glob(f"*{Intake.SUFFIX}")):
            try:
                data = wal.read_bytes()
                if records.is_legacy(data):
                    end = complete_prefix(data)
                    if end < len(data):  # the process died inside a write: that line never fully arrived
                        log.warning("intake log (unframed format) ends in a partial line, which is discarded",
                                    extra={"segment": wal.name, "bytes": len(data) - end})
                        os.truncate(wal, end)
                        data = data[:end]
                if not data:
                    wal.unlink()
                    continue
                count = records.scan(data).points  # damage is counted when the segment is loaded
                os.replace(wal, wal.with_name(f"{wal.stem}-n{count}.lp"))
                adopted += count
            except OSError as exc:
                log.error("cannot adopt an intake log; left for the next start",
                          extra={"segment": wal.name, "error": str(exc)})
        if adopted:
            with contextlib.suppress(OSError):
                fsync_dir(self.dir)
            log.warning("delivering points a stopped bridge had accepted but not settled",
                        extra={"destination": self.dir.name, "points": adopted})
        return adopted

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def points(self) -> int:
        """Points still to deliver (acknowledged lines of a segment in progress excluded)."""
        return self._lines

    def oldest_time(self) -> float | None:
        """Wall time the oldest segment was written (its name), None when empty."""
        with self._lock:
            if not self._segments:
                return None
            name = self._segments[0].path.name
        try:
            return int(name[:20]) / 1e9
        except ValueError:
            return None

    def __len__(self) -> int:
        return len(self._segments)

    def append(self, chunk: Chunk) -> str | None:
        """Writes a batch as a new segment. None when written; else the drop reason
        (spool_full: the cap; disk_full: no space or the reserve reached; journal_error)."""
        if not chunk.count:
            return None
        data = records.frame(chunk.data, chunk.count)
        size = len(data)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                # Not an error of the disk, but points are dropped: health says so (the journal
                # part) whatever else it judges (a paced or scheduled link is judged by progress).
                self.failed_at = time.monotonic()
                self.last_error = (f"journal.max_bytes ({self.max_bytes} bytes) reached: "
                                   f"batches dropped (spool_full)")
                return "spool_full"
            if self.guard is not None and not self.guard.room(size):
                self.writable = False
                self.failed_at = time.monotonic()
                self.last_error = f"free space below the reserve of {self.guard.reserve} bytes"
                return "disk_full"
            self._seq += 1
            final = self.dir / f"{time.time_ns():020d}-{self._seq:08d}-n{chunk.count}.lp"
            try:
                durable_write(final, data)
            except OSError as exc:
                self.writable = False
                self.failed_at = time.monotonic()
                self.last_error = f"{type(exc).__name__}: {exc}"
                return disk_reason(exc)
            self.writable = True
            self._segments.append(Segment(final, size, chunk.count, 0, [(0, chunk.count)]))
            self._bytes += size
            self._lines += chunk.count
        return None

    @staticmethod
    def _verified(segment: Segment) -> tuple[list[bytes], list[int]]:
        """A segment's records read from disk and verified again: the payloads of those that
        verify, and the offsets of those that do not (OSError when the file cannot be read)."""
        data = segment.path.read_bytes()
        payloads, bad = [], []
        for offset, count in segment.records:
            record = records.verify(data, offset, count)
            if record is None:
                bad.append(offset)
            else:
                payloads.append(record.payload)
        return payloads, bad

    def oldest(self) -> tuple[Segment, Chunk] | None:
        """The oldest segment and what of it is still to deliver (verified again). A segment that
        cannot be read or no longer verifies is set aside (`_set_aside`) and the next one taken."""
        while True:
            with self._lock:
                if not self._segments:
                    return None
                segment = self._segments[0]
            try:
                payloads, bad = self._verified(segment)
            except OSError as exc:
                self._set_aside(segment, "journal_error", 0, f"{type(exc).__name__}: {exc}")
                continue
            if bad:
                self._set_aside(segment, "damaged", len(bad),
                                f"{len(bad)} record(s) no longer verify, the first at byte offset {bad[0]}")
                continue
            chunk = Chunk(b"".join(payloads), segment.count, -1, (self.oldest_time() or time.time()))
            return segment, chunk.skip(segment.done)

    def following(self, segment: Segment, points: int, max_bytes: int) -> list[tuple[Segment, Chunk]]:
        """The whole segments right after `segment` (none delivered in part), verified, holding at
        most `points` points and `max_bytes` bytes in all, with their chunks: the backlog's small
        segments (a closed window journals a partial batch per flush_interval) joined into one
        request instead of one request each. Stops at one that cannot be read or no longer
        verifies: oldest() sets it aside when its turn comes."""
        with self._lock:
            queued = list(self._segments)
        try:
            start = queued.index(segment) + 1
        except ValueError:
            return []
        out: list[tuple[Segment, Chunk]] = []
        for nxt in queued[start:]:
            if nxt.done or nxt.count > points or nxt.size > max_bytes:
                break
            try:
                payloads, bad = self._verified(nxt)
            except OSError:
                break
            if bad:
                break
            out.append((nxt, Chunk(b"".join(payloads), nxt.count)))
            points -= nxt.count
            max_bytes -= nxt.size
        return out

    def _set_aside(self, segment: Segment, reason: str, damaged: int, error: str) -> None:
        """Out of the queue, its remaining points reported lost, the file renamed `*.damaged`."""
        with self._lock:
            if segment not in self._segments:
                return
            self._segments.remove(segment)
            self._bytes -= segment.size
            lost = segment.count - segment.done
            self._lines -= lost
        log.error("journal segment unreadable or damaged while running: set aside, its remaining points "
                  "dropped", extra={"file": str(segment.path), "reason": reason, "points": lost, "error": error})
        if self.on_loss is not None:
            self.on_loss(lost, reason, damaged)  # counted (and the ledger saved) before the file goes
        try:
            if segment.path.exists() or segment.path.is_symlink():
                os.replace(segment.path, segment.path.with_name(segment.path.name + DAMAGED))
        except OSError as exc:
            log.error("cannot rename a damaged journal segment", extra={"file": str(segment.path),
                                                                          "error": str(exc)})
        for suffix in (".done", ".counted"):
            with contextlib.suppress(OSError):
                segment.path.with_name(segment.path.name + suffix).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            fsync_dir(self.dir)

    def progress(self, segment: Segment, lines: int) -> None:
        """`lines` more lines of the segment were acknowledged (it stays for the rest)."""
        with self._lock:
            segment.done += lines
            self._lines -= lines
        try:
            durable_write(segment.path.with_name(segment.path.name + ".done"), str(segment.done).encode(), sync=False)
        except OSError as exc:
            log.error("cannot record a journal segment's progress; its acknowledged lines would be sent again "
                      "after a restart", extra={"segment": segment.path.name, "error": str(exc)})

    def ack(self, segment: Segment) -> None:
        """InfluxDB acknowledged the whole segment: delete it (and its progress), durably."""
        with self._lock:
            if segment not in self._segments:
                return
            self._segments.remove(segment)
            self._bytes -= segment.size
            self._lines -= segment.count - segment.done
        for path in (segment.path, *(segment.path.with_name(segment.path.name + s) for s in (".done", ".counted"))):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.error("cannot delete a delivered journal segment", extra={"file": str(path), "error": str(exc)})
        with contextlib.suppress(OSError):
            fsync_dir(self.dir)
