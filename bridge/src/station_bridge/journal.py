"""On-disk state of one destination: the journal, the write-ahead intake log, dead letters.

Points travel as `Chunk`s: line protocol bytes (each line ends in a newline; a string field may
hold newlines too, so lines are found with `lineproto.line_ends`), their count and the intake
sequence number of their first line, so no stage re-joins or re-splits lines needlessly.

Both files hold framed, checksummed records (records.py: one chunk = one record): a record that
does not verify (torn, zeroed, flipped) is skipped and counted, never sent; a file's points are
what its verified records hold (a segment's name keeps a count for humans, never trusted).

- Ownership: `JournalLock` (an flock on `journal.dir/.lock`) is taken before any file of the
  directory is touched; a second bridge on the same directory is refused, naming the first.
- Journal: segment files (`*.lp`) of batches that could not be written now. Each is written to
  a temporary name, fsynced, renamed, and its directory fsynced, so a crash or a power cut
  leaves whole segments or nothing; deletions are fsynced the same way. Replayed oldest first,
  deleted only after InfluxDB acknowledged every line (a segment delivered in part records its
  progress in `<segment>.done`, so no acknowledged line is sent twice). Damage found at start is
  counted once (`<segment>.counted` remembers it across restarts); a segment that cannot be read
  or no longer verifies while the bridge runs is set aside (renamed `*.damaged`), its remaining
  points reported to `on_loss` (the sink counts them dropped), and delivery goes on. A size cap
  (`journal.max_bytes`) and a free-space reserve (`journal.min_free_bytes`) bound the spool: a
  batch that does not fit is refused and the caller counts the drop (spool_full, disk_full).
- Intake (write-ahead log, `*.wal`): every point a destination accepts is appended before it
  is queued in memory, one write(2) per burst, no fsync (it survives a killed process, not a
  power cut), and forgotten once settled. Every point gets a sequence number, logged or not:
  a failed append (disk full) settles its own range at once, so the log never waits for it
  and never forgets a point that was logged and is still undelivered. At the next start the
  journal adopts what is left by renaming it (no copy: adoption needs no free space); a torn
  last record is damage like any other. An intake log of the unframed format (a bridge upgraded
  with points on disk) is read once as such, its torn last line cut.
- DeadLetters: append-only JSONL of what was refused for good, capped in size: beyond
  `dead_letter.max_bytes` the file is rotated to `<name>.1` (the previous `.1` is deleted and
  its records counted as discarded).
Nothing here raises into the pipeline on a disk error: writes report failure, the caller counts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import records
from .lineproto import complete_prefix, line_ends

log = logging.getLogger("station_bridge.journal")


@dataclass(slots=True)
class Chunk:
    """`count` lines of line protocol, each ending in a newline; `seq` numbers the first one."""

    data: bytes
    count: int
    seq: int = -1
    born: float = field(default_factory=time.time)  # when its oldest point was accepted

    @classmethod
    def of(cls, lines: list[str], seq: int = -1) -> Chunk:
        return cls(("\n".join(lines) + "\n").encode("utf-8") if lines else b"", len(lines), seq)

    @classmethod
    def of_bytes(cls, lines: list[bytes]) -> Chunk:
        """From lines without their newlines."""
        return cls(b"".join(line + b"\n" for line in lines), len(lines))

    def lines(self) -> list[bytes]:
        """Each line without its newline."""
        out, start = [], 0
        for end in self._ends():
            out.append(self.data[start:end - 1])
            start = end
        return out

    def _ends(self, limit: int | None = None) -> list[int]:
        if self.data.count(b"\n") == self.count:  # no newline inside a string: every one ends a line
            ends, pos = [], -1
            for _ in range(self.count if limit is None else min(limit, self.count)):
                pos = self.data.index(b"\n", pos + 1)
                ends.append(pos + 1)
            return ends
        return line_ends(self.data, limit)

    def split(self, count: int) -> tuple[Chunk, Chunk]:
        """The first `count` lines, and the rest."""
        if self.data.count(b"\n") == self.count:
            parts = self.data.split(b"\n", count)
            head = b"\n".join(parts[:count]) + b"\n"
            rest = parts[count]
        else:
            cut = line_ends(self.data, count)[-1]
            head, rest = self.data[:cut], self.data[cut:]
        rest_seq = self.seq + count if self.seq >= 0 else -1
        return Chunk(head, count, self.seq, self.born), Chunk(rest, self.count - count, rest_seq, self.born)

    def skip(self, count: int) -> Chunk:
        return self.split(count)[1] if count else self

    @staticmethod
    def join(chunks: list[Chunk]) -> Chunk:
        if len(chunks) == 1:
            return chunks[0]
        return Chunk(b"".join(c.data for c in chunks), sum(c.count for c in chunks), chunks[0].seq,
                     min(c.born for c in chunks))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes, sync: bool = True) -> None:
    """Temp file, (fsync), rename, (fsync the directory). Leaves no temp file behind on failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def disk_reason(exc: OSError) -> str:
    return "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "journal_error"


class DiskGuard:
    """Free space on the journal's filesystem against a reserve, without a statvfs per write."""

    def __init__(self, path: Path, reserve: int, refresh_s: float = 0.5) -> None:
        self.path = path
        self.reserve = reserve
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._free = 0
        self._at = -1e9

    def free(self) -> int:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self.refresh_s:
                try:
                    st = os.statvfs(self.path)
                    self._free = st.f_bavail * st.f_frsize
                except OSError:
                    self._free = 0
                self._at = now
            return self._free

    def room(self, nbytes: int) -> bool:
        """True when `nbytes` can be written and the reserve still left free."""
        if self.free() - nbytes < self.reserve:
            return False
        with self._lock:
            self._free -= nbytes
        return True


class JournalLocked(RuntimeError):
    """Another process holds the journal directory."""


class JournalLock:
    """Exclusive ownership of a journal directory: a non-blocking flock on `<dir>/.lock` (fd
    close-on-exec), the owner's pid and command line written in the file. Held until the
    process exits (or `release`)."""

    NAME = ".lock"

    def __init__(self, directory: Path) -> None:
        import fcntl
        self.path = directory / self.NAME
        directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                owner = os.pread(self.fd, 4096, 0).decode("utf-8", "replace").strip()
            except OSError:
                owner = ""
            os.close(self.fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid, _, command = owner.partition("\n")
            raise JournalLocked(
                f"journal.dir {directory} is in use by another process (pid {pid or 'unknown'}: "
                f"{command or 'command line unknown'}); refusing to start: stop it first, or give this "
                f"bridge its own journal.dir") from None
        command = " ".join(sys.argv) or "?"
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
            command = cmdline.replace(b"\0", b" ").decode("utf-8", "replace").strip() or command
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n{command}\n".encode(), 0)
        except OSError as exc:  # the lock holds all the same; only the message naming us is missing
            log.error("cannot write the journal lock's owner", extra={"file": str(self.path), "error": str(exc)})

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = -1


_SEGMENT = re.compile(r"^(?P<stem>.+?)(?:-n(?P<count>\d+))?\.lp$")
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

    def oldest(self) -> tuple[Segment, Chunk] | None:
        """The oldest segment and what of it is still to deliver (verified again). A segment that
        cannot be read or no longer verifies is set aside (`_set_aside`) and the next one taken."""
        while True:
            with self._lock:
                if not self._segments:
                    return None
                segment = self._segments[0]
            try:
                data = segment.path.read_bytes()
            except OSError as exc:
                self._set_aside(segment, "journal_error", 0, f"{type(exc).__name__}: {exc}")
                continue
            payloads, bad = [], []
            for offset, count in segment.records:
                record = records.verify(data, offset, count)
                if record is None:
                    bad.append(offset)
                else:
                    payloads.append(record.payload)
            if bad:
                self._set_aside(segment, "damaged", len(bad),
                                f"{len(bad)} record(s) no longer verify, the first at byte offset {bad[0]}")
                continue
            chunk = Chunk(b"".join(payloads), segment.count, -1, (self.oldest_time() or time.time()))
            return segment, chunk.skip(segment.done)

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
                data = records.frame(chunk.data, chunk.count)  # one chunk, one record, one write(2)
                if self.guard is not None and not self.guard.room(len(data)):
                    raise OSError(errno.ENOSPC, f"free space below the reserve of {self.guard.reserve} bytes")
                if self._handle is None:
                    self._count += 1
                    path = self.dir / f"{time.time_ns():020d}-w{self._count:07d}{self.SUFFIX}"
                    self._handle = open(path, "ab", buffering=0)  # noqa: SIM115 - open until rotated
                    self._segments.append([path, chunk.seq, 0])
                    fsync_dir(self.dir)
                written = self._handle.write(data)  # unbuffered: in the kernel when this returns
                if written != len(data):
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
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
            active[2] += len(data)
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


class DeadLetters:
    """Append-only JSONL of what was refused for good, for an operator to inspect; capped."""

    def __init__(self, path: Path, max_bytes: int = 64 << 20, guard: DiskGuard | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.guard = guard
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._handle = None
        self._size = self._records = 0
        self._torn = False  # a short write left a partial record: end it before the next one
        self.errors = 0  # records that could not be written
        self.discarded = 0  # records deleted by rotation
        self.rotations = 0
        self.last_error = ""

    def _open(self) -> None:
        self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
        self._size = self.path.stat().st_size
        if self._size and not self._records:
            with open(self.path, "rb") as handle:
                self._records = sum(b.count(b"\n") for b in iter(lambda: handle.read(1 << 20), b""))

    def _rotate(self) -> None:
        old = self.path.with_name(self.path.name + ".1")
        if old.exists():
            with open(old, "rb") as handle:
                self.discarded += sum(b.count(b"\n") for b in iter(lambda: handle.read(1 << 20), b""))
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        os.replace(self.path, old)
        self.rotations += 1
        self._records = 0
        self._open()

    def write(self, **record: object) -> bool:
        record.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            try:
                if self.guard is not None and not self.guard.room(len(data)):
                    raise OSError(errno.ENOSPC, f"free space below the reserve of {self.guard.reserve} bytes")
                if self._handle is None:
                    self._open()
                if self._size + len(data) > self.max_bytes and self._size:
                    self._rotate()
                if self._torn:
                    data = b"\n" + data
                written = self._handle.write(data) or 0
                self._size += written
                if written < len(data):
                    self._torn = True
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
                self._torn = False
                self._records += 1
                self.last_error = ""
                return True
            except OSError as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._handle is not None:
                    with contextlib.suppress(OSError):
                        self._handle.close()
                    self._handle = None
                return False

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
