"""The uniqueness window across restarts (mapping.Uniqueness), kept beside the ledger.

Without it a restart forgets which times each series used: a feed that repeats a source time
(several points in one second with second-resolution times) gets t, t+1, t+2 before a restart
and t again after it, and InfluxDB overwrites the stored point silently. Mechanism:
- `journal.dir/uniqueness.bin` (Uniqueness.dump: the window's times per series, CRC-checked) is
  written with the ledger (the ledger calls `save` first): before any journal or intake-log file
  is deleted, at shutdown, and on the ledger's timer at most every TIMER_S; unchanged windows
  are not written again;
- at start it is read back, and the times of every point still on disk (the journal after
  adopting the intake log: points accepted after the last save, whether or not InfluxDB already
  holds them) are added (`remember`).
Every point InfluxDB may hold was therefore in a saved window or is on disk: a deletion is
always preceded by a save. What the window itself forgets (beyond `window` times or `max_series`
series) is counted as before (`unchecked`, `evicted`). A file that does not verify (garbage,
truncated) is logged and the window starts from the disk alone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from pathlib import Path

from .journal import durable_write
from .lineproto import split_lines
from .mapping import Uniqueness
from .metrics import Metrics

log = logging.getLogger("station_bridge.window")

TIMER_S = 30.0  # the ledger timer's writes of the window: at most one per this many seconds
RESCAN_MAX_BYTES = 64 << 20  # per destination: the newest journal segments read at start
_SERIES_END = re.compile(rb"(?<!\\) ")


class WindowStore:
    def __init__(self, path: Path, unique: Uniqueness, metrics: Metrics) -> None:
        self.path = path
        self.unique = unique
        self.metrics = metrics
        self.last_error = ""
        self._saved_crc: bytes | None = None
        self._written_at = -float("inf")
        self.restored_series = 0
        self.remembered_points = 0

    def load(self, payloads: Iterable[bytes]) -> None:
        """The saved window, then the times of the points on disk (`payloads`: journal lines)."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            blob = None
        except OSError as exc:
            log.error("cannot read the uniqueness window: it starts from the journal alone",
                      extra={"file": str(self.path), "error": str(exc)})
            blob = None
        if blob is not None:
            try:
                self.restored_series = self.unique.restore(blob)
                self._saved_crc = blob[-4:]
            except (ValueError, UnicodeDecodeError, IndexError) as exc:
                self.metrics.inc("bridge_uniqueness_restore_errors_total")
                log.error("uniqueness window file unreadable: it starts from the journal alone",
                          extra={"file": str(self.path), "error": str(exc)})
        remember = self.unique.remember
        for payload in payloads:
            for line in split_lines(payload):
                # Our own lines: the series key ends at the first unescaped space, the time
                # follows the last space (string field values may hold spaces, never the time).
                cut = _SERIES_END.search(line)
                stamp = line.rstrip(b"\n").rpartition(b" ")[2]
                if cut is None or not stamp.lstrip(b"-").isdigit():
                    continue
                remember(line[:cut.start()].decode("utf-8", "surrogatepass"), int(stamp))
                self.remembered_points += 1
        if self.restored_series or self.remembered_points:
            log.info("uniqueness window restored", extra={"series": self.restored_series,
                                                          "journal_points": self.remembered_points})

    def save(self, sync: bool = False, clean: bool = False) -> None:
        """Called by the ledger before each of its writes (any thread). Correctness needs the
        writes before a deletion (sync=False) and at shutdown (clean); those of the ledger's
        timer (sync, not clean) are kept to one per TIMER_S (the file may be megabytes)."""
        now = time.monotonic()
        if sync and not clean and now - self._written_at < TIMER_S:
            return
        blob = self.unique.dump()
        if blob[-4:] == self._saved_crc:
            return
        try:
            durable_write(self.path, blob, sync=sync)
        except OSError as exc:
            self.metrics.inc("bridge_uniqueness_save_errors_total")
            if self.last_error != str(exc):
                log.error("cannot write the uniqueness window", extra={"file": str(self.path), "error": str(exc)})
            self.last_error = str(exc)
            return
        self.last_error = ""
        self._saved_crc = blob[-4:]
        self._written_at = now
