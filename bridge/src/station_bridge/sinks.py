"""Sinks: batching and delivery to one InfluxDB 1.x destination, backed by the journal.

Per destination, one writer thread:
- takes chunks of lines (logged first in the destination's intake log, see journal.py) and
  collects them into batches (batch_size, or flush_interval after the first line, so a
  quiet stream is flushed too);
- while the journal is empty, POSTs a batch; a retryable failure (connection refused,
  timeout, 5xx, auth or missing database) puts the batch in the journal and starts
  exponential backoff with jitter; new batches go to the journal while it is non-empty,
  so delivery order is kept;
- replays the journal oldest first, deleting a segment only after a 204;
- a permanent rejection (400, 413) is bisected until the offending lines are isolated:
  those go to the dead-letter file with the server's message, the rest is written.
  Re-sent lines are harmless: InfluxDB keeps one point per series and timestamp.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import logging
import random
import threading
import time
import urllib.parse
from collections import deque

from .config import DestinationSpec
from .journal import Chunk, DeadLetters, Intake, Journal
from .metrics import Metrics

log = logging.getLogger("station_bridge.sink")


class Retryable(Exception):
    pass


class InfluxWriter:
    """One keep-alive HTTP connection to /write."""

    def __init__(self, spec: DestinationSpec) -> None:
        self.spec = spec
        url = urllib.parse.urlsplit(spec.url)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 8086)
        params = {"db": spec.database, "precision": "ns"}
        if spec.retention_policy:
            params["rp"] = spec.retention_policy
        self._path = (url.path or "") + "/write?" + urllib.parse.urlencode(params)
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if spec.username:
            token = base64.b64encode(f"{spec.username}:{spec.password or ''}".encode()).decode()
            self._headers["Authorization"] = "Basic " + token
        if spec.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.spec.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post(self, body: bytes) -> tuple[int, str]:
        """Returns (status, error text); raises Retryable on transport failures."""
        if self.spec.gzip:
            body = gzip.compress(body, compresslevel=1)
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status == 204:
            return 204, ""
        try:
            message = json.loads(text).get("error", text)
        except ValueError:
            message = text.strip()
        return response.status, message


class Backoff:
    def __init__(self, maximum: float) -> None:
        self.maximum = maximum
        self.failures = 0
        self.until = 0.0

    def fail(self) -> float:
        self.failures += 1
        delay = min(self.maximum, 0.2 * 2 ** min(self.failures, 20))
        delay = random.uniform(delay / 2, delay)  # full jitter, bounded below
        self.until = time.monotonic() + delay
        return delay

    def reset(self) -> None:
        self.failures = 0
        self.until = 0.0

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())


class InfluxSink:
    def __init__(self, spec: DestinationSpec, journal: Journal, dead: DeadLetters, metrics: Metrics,
                 intake: Intake | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.journal = journal
        self.intake = intake
        self.dead = dead
        self.metrics = metrics
        self.writer = InfluxWriter(spec)
        self.backoff = Backoff(spec.max_backoff)
        self._queue: deque[Chunk] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"sink-{spec.name}", daemon=True)
        self.last_error = ""

    # --- producer side (receive thread) ---------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, chunk: Chunk) -> None:
        """Takes the chunk (logged first when there is an intake log); never blocks on the network."""
        if not chunk.count:
            return
        chunk = Chunk(chunk.data, chunk.count)  # each destination numbers its own copy
        if self.intake is not None:
            try:
                self.intake.append(chunk)
            except OSError as exc:
                # Disk full or gone: the points are still delivered from memory, only no longer
                # protected against a kill -9. Said loudly and counted, never fatal.
                chunk.seq = -1
                self.metrics.inc("bridge_intake_errors_total", chunk.count, destination=self.name)
                log.error("intake log write failed: points held in memory only", extra={
                    "destination": self.name, "points": chunk.count, "error": str(exc)})
        with self._cond:
            if self._queued + chunk.count > self.spec.queue_max_points:
                # Memory bound reached: everything queued, then this, goes to disk in order.
                pending = list(self._queue)
                self._queue.clear()
                self._queued = 0
                for queued in [*pending, chunk]:
                    self._to_journal(queued)
                return
            was_empty = not self._queued
            self._queue.append(chunk)
            self._queued += chunk.count
            if was_empty or self._queued >= self.spec.batch_size:
                self._cond.notify()

    @property
    def queued(self) -> int:
        return self._queued

    def stop(self, timeout: float) -> None:
        """Flushes what it can within timeout; journals the rest."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        self._thread.join(timeout + 5)
        if self.intake is not None:
            self.intake.close()

    # --- writer thread ------------------------------------------------------------------

    def _take(self, limit: int) -> Chunk | None:
        """Up to `limit` points from the head of the queue, as one chunk (called with the lock)."""
        taken: list[Chunk] = []
        room = limit
        while self._queue and room > 0:
            head = self._queue[0]
            if head.count <= room:
                taken.append(self._queue.popleft())
                room -= head.count
            else:
                first, rest = head.split(room)
                taken.append(first)
                self._queue[0] = rest
                room = 0
        if not taken:
            return None
        batch = Chunk.join(taken)
        self._queued -= batch.count
        return batch

    def _collect(self) -> Chunk | None:
        """Waits for a full batch, the flush interval, the end of backoff or stop."""
        with self._cond:
            flush_at = None
            while not self._stopping:
                now = time.monotonic()
                if self._queued >= self.spec.batch_size:
                    break
                if self._queued and flush_at is None:
                    flush_at = now + self.spec.flush_interval
                if flush_at is not None and now >= flush_at:
                    break
                if len(self.journal) and self.backoff.remaining() == 0:
                    break
                waits = [self.spec.flush_interval]
                if flush_at is not None:
                    waits.append(flush_at - now)
                if len(self.journal):
                    waits.append(self.backoff.remaining())
                self._cond.wait(max(0.005, min(waits)))
            return self._take(self.spec.batch_size)

    def _settle(self, chunk: Chunk) -> None:
        if self.intake is not None:
            self.intake.settle(chunk.seq, chunk.count)

    def _run(self) -> None:
        while True:
            batch = self._collect()
            stopping = self._stopping
            late = stopping and time.monotonic() > self._deadline
            if batch is not None:
                if len(self.journal) or late or not self._deliver(batch):
                    self._to_journal(batch)
                else:
                    self._settle(batch)
            self._drain_journal()
            if stopping and not self._queued and (not len(self.journal) or time.monotonic() > self._deadline):
                break
            if stopping and self.backoff.remaining() and time.monotonic() + self.backoff.remaining() > self._deadline:
                # No time left to retry: journal whatever is still in memory and stop.
                with self._cond:
                    rest = self._take(self._queued)
                if rest is not None:
                    self._to_journal(rest)
                break
        self.writer.close()

    def _drain_journal(self) -> None:
        while len(self.journal) and self.backoff.remaining() == 0:
            if self._stopping and time.monotonic() > self._deadline:
                return
            oldest = self.journal.oldest()
            if oldest is None:
                return
            path, chunk = oldest
            if not self._deliver(chunk):
                return
            self.journal.ack(path)
            log.info("replayed journal segment", extra={"destination": self.name, "segment": path.name,
                                                         "points": chunk.count,
                                                         "journal_points": self.journal.points})

    def _to_journal(self, chunk: Chunk) -> None:
        if self.journal.append(chunk):
            self.metrics.inc("bridge_journaled_points_total", chunk.count, destination=self.name)
        else:
            self.metrics.inc("bridge_dropped_points_total", chunk.count, destination=self.name,
                             reason="spool_full")
            log.error("journal full: points dropped", extra={
                "destination": self.name, "dropped": chunk.count, "journal_bytes": self.journal.bytes,
                "max_bytes": self.journal.max_bytes})
        self._settle(chunk)

    def _deliver(self, chunk: Chunk) -> bool:
        """True when every line was written or dead-lettered; False on a retryable failure."""
        size = self.spec.batch_size
        while chunk.count > size:
            first, chunk = chunk.split(size)
            if not self._write(first):
                return False
        return self._write(chunk)

    def _write(self, chunk: Chunk) -> bool:
        started = time.monotonic()
        try:
            status, message = self.writer.post(chunk.data)
        except Retryable as exc:
            return self._retry_later("connection", str(exc))
        if status == 204:
            self.metrics.inc("bridge_written_points_total", chunk.count, destination=self.name)
            self.metrics.inc("bridge_write_seconds_sum", time.monotonic() - started, destination=self.name)
            self.metrics.inc("bridge_write_seconds_count", 1, destination=self.name)
            if self.backoff.failures:
                log.info("destination reachable again", extra={"destination": self.name})
            self.backoff.reset()
            self.last_error = ""
            return True
        if status in (400, 413):
            return self._isolate(chunk, status, message)
        return self._retry_later(f"http_{status}", message)

    def _retry_later(self, kind: str, message: str) -> bool:
        self.metrics.inc("bridge_write_errors_total", 1, destination=self.name, kind=kind)
        delay = self.backoff.fail()
        self.last_error = message
        if self.backoff.failures in (1, 2) or self.backoff.failures % 20 == 0:
            log.warning("write failed, journaling and retrying", extra={
                "destination": self.name, "error": message, "retry_in_s": round(delay, 2),
                "failures": self.backoff.failures})
        return False

    def _isolate(self, chunk: Chunk, status: int, message: str) -> bool:
        if chunk.count == 1:
            self.metrics.inc("bridge_dropped_points_total", 1, destination=self.name, reason="rejected")
            self.dead.write(destination=self.name, line=chunk.data.decode("utf-8", "replace").rstrip("\n"),
                            status=status, error=message)
            log.warning("point rejected by InfluxDB, dead-lettered",
                        extra={"destination": self.name, "error": message})
            return True
        first, rest = chunk.split(chunk.count // 2)
        return self._write(first) and self._write(rest)
