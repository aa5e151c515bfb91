"""The ledger: the bridge's counters persisted across restarts, so that its equations hold for
the life of the station, not of the process.

    per subscription:  received == mapped + sum(rejected by reason)
    per destination:   accepted == written + sum(dropped by reason) + pending

`journal.dir/ledger.json` holds every counter. It is written (temp file, rename) on a timer,
before any journal or intake-log file is deleted, and at shutdown; the timer and shutdown
writes are fsynced (file and directory).

At start the ledger is read and reconciled with what is on disk, per destination:
pending_then = accepted - written - dropped (the ledger's view), pending_now = the journal's
points after adopting the intake log. A clean shutdown leaves them equal. After a SIGKILL the
disk holds more: points accepted after the last ledger write, and points already written whose
intake-log segment had not been deleted yet (they are written again; InfluxDB keeps one point
per series and time). The difference is counted as `bridge_recovered_points_total` and added to
`accepted`, so the equation closes. Because every deletion is preceded by a ledger write, the
disk can hold less than the ledger's pending only if points lived in memory alone (the intake
log was off, or could not be written: disk full) when the process died: those are counted as
dropped with reason `lost_in_crash`. After a power cut neither the intake log nor the last
ledger write is guaranteed (no fsync per burst): the same reconciliation runs, and its counts
are then an estimate (see the README's guarantees).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from .journal import durable_write
from .metrics import Metrics

log = logging.getLogger("station_bridge.ledger")

VERSION = 1


class Ledger:
    def __init__(self, path: Path, metrics: Metrics) -> None:
        self.path = path
        self.metrics = metrics
        self._lock = threading.Lock()
        self.last_error = ""
        self.previous: dict | None = None

    def load(self) -> bool:
        """Restores the counters; False when there was no (readable) ledger."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            self.metrics.restore(data["counters"])
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ledger unreadable: counters start from zero", extra={"file": str(self.path),
                                                                           "error": str(exc)})
            return False
        self.previous = data
        return True

    def pending(self, destination: str) -> float:
        m = self.metrics
        return (m.get("bridge_accepted_points_total", destination=destination)
                - m.get("bridge_written_points_total", destination=destination)
                - m.total("bridge_dropped_points_total", destination=destination))

    def reconcile(self, destination: str, on_disk: int) -> tuple[int, int]:
        """Closes the destination's equation against the points found on disk at start.
        Returns (recovered, lost)."""
        delta = on_disk - round(self.pending(destination))
        if delta > 0:
            self.metrics.inc("bridge_recovered_points_total", delta, destination=destination)
            self.metrics.inc("bridge_accepted_points_total", delta, destination=destination)
            return delta, 0
        if delta < 0:
            self.metrics.inc("bridge_dropped_points_total", -delta, destination=destination, reason="lost_in_crash")
            return 0, -delta
        return 0, 0

    def save(self, clean: bool = False, sync: bool = False) -> bool:
        data = {"version": VERSION, "saved": time.time(), "pid": os.getpid(), "clean": clean,
                "counters": self.metrics.snapshot()}
        with self._lock:
            try:
                durable_write(self.path, json.dumps(data, separators=(",", ":")).encode(), sync=sync)
            except OSError as exc:
                if not self.last_error:
                    log.error("cannot write the ledger", extra={"file": str(self.path), "error": str(exc)})
                self.last_error = f"{type(exc).__name__}: {exc}"
                return False
            self.last_error = ""
            return True
