"""The ledger: the bridge's counters persisted across restarts, so that its equations hold for
the life of the station, not of the process.

    per subscription:  received == mapped + sum(rejected by reason)
    per destination:   accepted == written + sum(dropped by reason) + pending

`journal.dir/ledger.json` holds every counter. It is written (temp file, rename) on a timer,
before any journal or intake-log file is deleted, and at shutdown; the timer and shutdown
writes are fsynced (file and directory). A rename needs free space for the new file; on a full
disk (ENOSPC: the bridge's reserve used up, or another process took the last byte) the ledger
is written in place into `ledger.json.spare`, a file allocated while there was room (at least
four times the ledger's size), padded with spaces (still JSON). Every write carries a sequence
number; at start the newer readable one of the two wins.

At start the ledger is read and reconciled with what is on disk, per destination:
pending_then = accepted - written - dropped (the ledger's view), pending_now = the journal's
points after adopting the intake log (its verified records: journal/records.py). A clean shutdown leaves
them equal. After a SIGKILL the disk holds more: points accepted after the last ledger write,
and points already written whose intake-log segment had not been deleted yet (they are written
again; InfluxDB keeps one point per series and time). The difference is counted as
`bridge_recovered_points_total` and added to `accepted`, so the equation closes. Because every
deletion is preceded by a ledger write, the disk can hold less than the ledger's pending only if
points lived in memory alone (the intake log was off, or could not be written: disk full) when
the process died: those are counted as dropped with reason `lost_in_crash`. After a power cut
neither the intake log nor the last ledger write is guaranteed (no fsync per burst): the same
reconciliation runs, and its counts are then an estimate (see the README's guarantees). Records
the journal's reader found damaged are counted dropped with reason `damaged`: their points where
a record's header verified, and the rest of the shortfall when any damage was seen in the
destination's files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .journal import DamageTally, disk_reason, durable_write
from .metrics import Metrics

log = logging.getLogger("station_bridge.ledger")

VERSION = 1
SPARE_MIN_BYTES = 64 << 10


class Ledger:
    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.path = path
        self.metrics = metrics
        self.spare = path.with_name(path.name + ".spare")
        self._lock = threading.Lock()
        self.last_error = ""
        self.previous: dict | None = None
        self.seq = 0
        # State saved with every ledger write (window.py): called with (sync, clean).
        self.before_save: Callable[[bool, bool], None] | None = None
        try:
            self._spare_bytes = self.spare.stat().st_size
        except OSError:
            self._spare_bytes = 0

    def load(self) -> bool:
        """Restores the counters; False when there was no (readable) ledger."""
        data = read_latest(self.path)
        if data is None:
            self._set_aside_unreadable("no readable ledger (garbage, truncated or another version)")
            return False
        try:
            self.metrics.restore(data["counters"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("ledger unreadable: counters start from zero", extra={"file": str(self.path),
                                                                           "error": str(exc)})
            self.metrics.counters.clear()  # none of a half-restored ledger
            self._set_aside_unreadable(f"{type(exc).__name__}: {exc}")
            return False
        self.seq = int(data.get("seq", 0))
        self.previous = data
        return True

    def _set_aside_unreadable(self, why: str) -> None:
        """A ledger file that exists and cannot be read: kept as `ledger.json.unreadable-<time>`
        (never overwritten by the next write), counted in bridge_ledger_resets_total (which the new
        ledger carries on): the counters start from zero, visibly."""
        for candidate in (self.path, self.spare):
            try:
                raw = candidate.read_bytes()
            except OSError:
                continue
            if candidate == self.spare and not raw.strip(b"\0 "):
                continue  # a spare allocated and never written
            kept = candidate.with_name(f"{candidate.name}.unreadable-{int(time.time())}")
            try:
                os.replace(candidate, kept)
            except OSError as exc:
                log.error("cannot set the unreadable ledger aside", extra={"file": str(candidate), "error": str(exc)})
                kept = candidate
            if candidate == self.spare:
                self._spare_bytes = 0
            self.metrics.inc("bridge_ledger_resets_total")
            log.error("ledger unreadable: counters start from zero, the file is kept", extra={
                "file": str(candidate), "kept_as": str(kept), "error": why})

    def pending(self, destination: str) -> float:
        m = self.metrics
        return (m.get("bridge_accepted_points_total", destination=destination)
                - m.get("bridge_written_points_total", destination=destination)
                - m.total("bridge_dropped_points_total", destination=destination))

    def reconcile(self, destination: str, on_disk: int, damage: DamageTally | None = None) -> tuple[int, int]:
        """Closes the destination's equation against the points found verified on disk at start.
        `damage`: what the journal's reader found damaged (not counted by an earlier start): its
        known points are counted dropped (reason `damaged`), and so is any other shortfall when
        damage was seen (else `lost_in_crash`). Returns (recovered, lost)."""
        damage = damage or DamageTally()
        m = self.metrics
        delta = on_disk + damage.points - round(self.pending(destination))
        if damage.records:
            m.inc("bridge_journal_damaged_records_total", damage.records, destination=destination)
        if damage.points:
            m.inc("bridge_dropped_points_total", damage.points, destination=destination, reason="damaged")
        if delta > 0:
            m.inc("bridge_recovered_points_total", delta, destination=destination)
            m.inc("bridge_accepted_points_total", delta, destination=destination)
            return delta, damage.points
        if delta < 0:
            m.inc("bridge_dropped_points_total", -delta, destination=destination,
                  reason="damaged" if damage.seen else "lost_in_crash")
        return 0, damage.points - delta

    def save(self, clean: bool = False, sync: bool = False) -> bool:
        with self._lock:
            if self.before_save is not None:
                self.before_save(sync, clean)
            self.seq += 1
            data = {"version": VERSION, "seq": self.seq, "saved": time.time(), "pid": os.getpid(), "clean": clean,
                    "counters": self.metrics.snapshot()}
            blob = json.dumps(data, separators=(",", ":")).encode()
            try:
                try:
                    durable_write(self.path, blob, sync=sync)
                except OSError as exc:
                    if disk_reason(exc) != "disk_full":
                        raise
                    self._write_spare(blob, sync)
                else:
                    self._allocate_spare(len(blob))
            except OSError as exc:
                if not self.last_error:
                    log.error("cannot write the ledger", extra={"file": str(self.path), "error": str(exc)})
                self.last_error = f"{type(exc).__name__}: {exc}"
                return False
            self.last_error = ""
            return True

    def _allocate_spare(self, size: int) -> None:
        """Room for the next ledgers while there is room (ignored when there is none now)."""
        want = max(SPARE_MIN_BYTES, 4 * size)
        if self._spare_bytes >= want:
            return
        try:
            fd = os.open(self.spare, os.O_RDWR | os.O_CREAT, 0o640)
            try:
                os.posix_fallocate(fd, 0, want)
            finally:
                os.close(fd)
        except OSError:
            return
        self._spare_bytes = want

    def _write_spare(self, blob: bytes, sync: bool) -> None:
        """The ledger in place, in blocks allocated earlier: needs no free space."""
        if len(blob) > self._spare_bytes:
            raise OSError(28, f"the ledger ({len(blob)} bytes) is larger than its spare ({self._spare_bytes} bytes)")
        padded = memoryview(blob + b" " * (self._spare_bytes - len(blob)))
        fd = os.open(self.spare, os.O_WRONLY)
        try:
            done = 0
            while done < len(padded):
                done += os.pwrite(fd, padded[done:], done)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)


def _check(data: dict) -> None:
    """Raises ValueError unless `data` holds what save() writes: an integer `seq` >= 0 and
    counters {name: [[[[key, value], ...], count], ...]} with finite counts >= 0. A ledger whose
    values are not counters (a hand edit, a bit flip that left valid JSON) is unreadable: restored,
    NaN or a negative count broke the equations for good, and a `seq` that is not an integer
    stopped every start with a traceback."""
    seq = data.get("seq", 0)
    if type(seq) is not int or seq < 0:
        raise ValueError(f"seq {seq!r} is not a sequence number")
    counters = data.get("counters")
    if not isinstance(counters, dict):
        raise ValueError("counters is not a map")
    for name, entries in counters.items():
        if not isinstance(entries, list):
            raise ValueError(f"{name}: not a list of counts")
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list)):
                raise ValueError(f"{name}: {str(entry)[:80]} is not [labels, count]")
            labels, count = entry
            if not all(isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
                       for pair in labels):
                raise ValueError(f"{name}: labels {str(labels)[:80]} are not [name, value] pairs")
            if type(count) not in (int, float) or not math.isfinite(count) or count < 0:
                raise ValueError(f"{name}: count {count!r} is not a finite number >= 0")


def read_latest(path: Path) -> dict | None:
    """The newest readable ledger of `path` and its spare (by sequence number), or None."""
    best: dict | None = None
    for candidate in (path, path.with_name(path.name + ".spare")):
        try:
            raw = candidate.read_bytes()
            if not raw.strip(b"\0 "):
                continue  # a spare allocated and never written
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version') if isinstance(data, dict) else None!r}")
            _check(data)
        except FileNotFoundError:
            continue
        except (OSError, ValueError, RecursionError) as exc:
            log.error("ledger file unreadable", extra={"file": str(candidate), "error": str(exc)})
            continue
        if best is None or int(data.get("seq", 0)) > int(best.get("seq", 0)):
            best = data
    return best
