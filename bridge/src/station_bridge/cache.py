"""Redis latest-value cache: per series, a hash of the newest fields and their time.

Key: `<key_prefix>:<series>` where series is the point's series key (as lineproto.series_key builds it:
escaped measurement and tags sorted by key, as InfluxDB keys it:
`ticks,instrument=EURUSD,venue=kraken`), so that a reader can build the key from the tags
without knowing the bridge's configuration. Hash fields: the point's fields as text plus `time`
(ns since the epoch). Each update also sets the TTL, so a silent series expires.
A dashboard reads the newest tick with one `HGETALL latest:ticks,instrument=EURUSD,...`.

The cache runs off the receive thread: the receive loop offers the newest record per series of
each burst to a bounded queue (never blocking: when the queue is full, Redis is slow or hung,
and the update is dropped and counted in `bridge_cache_dropped_total`); one worker thread
coalesces what is queued (newest time per series wins, and a point older than the one its series
last sent is left out: SENT_SERIES) and sends one pipeline. InfluxDB
remains the record: a slow or dead Redis never slows the database path.

The queue is bounded by bytes too: an update keeps only the declared fields' values (the Python
path offered whole records), and updates beyond QUEUE_MAX_BYTES of them (estimated with
sys.getsizeof) are dropped and counted like those beyond `queue_max`. Bounded by bursts alone, a
hung Redis let 1,000 bursts of up to 8 MiB wait: 4,000 messages of 400 KB grew a bridge from 41
to 536 MiB RSS at the default 2 s timeout.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time

import redis

from .config import CacheSpec
from .metrics import Metrics

log = logging.getLogger("station_bridge.cache")

Update = tuple[list[str], dict[str, tuple[int, dict]], int]  # field names, series -> (time, record), bytes

QUEUE_MAX_BYTES = 16 << 20  # declared values waiting for Redis (one update alone may pass it)
ENTRY_BYTES = 200  # per series: its tuple, dict and the queue's share, beyond key and values
# Series whose newest time sent is remembered (two generations: a series not sent for this many
# other series' sends is forgotten; about 3 MiB). Coalescing keeps the newest point within one
# pipeline, but a point of an older time arriving after its series' newer one was sent (an
# out-of-order feed, two subscriptions writing one series, a receive burst behind another)
# overwrote the newer hash. Without new Redis commands (the bridge's ACL user has ping, hset and
# pexpire): a forgotten series, or one sent by another process or before a restart, is unchecked.
SENT_SERIES = 20_000


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class LatestCache:
    def __init__(self, spec: CacheSpec, metrics: Metrics) -> None:
        self.spec = spec
        self.metrics = metrics
        self.client = redis.Redis.from_url(spec.url, username=spec.username, password=spec.password,
                                           socket_timeout=spec.timeout, socket_connect_timeout=spec.timeout)
        self._ttl_ms = spec.ttl * 1000
        self._queue: queue.Queue[Update | None] = queue.Queue(maxsize=spec.queue_max)
        self._bytes = 0  # what the queued updates hold (QUEUE_MAX_BYTES)
        self._bytes_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sent: dict[str, int] = {}  # series -> newest time sent (the worker's own)
        self._sent_before: dict[str, int] = {}  # the previous generation
        self.last_error = ""
        self._failing_logged = 0.0

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cache", daemon=True)
        self._thread.start()

    def offer(self, fields: list[str], newest: dict[str, tuple[int, dict]]) -> None:
        """From the receive thread: never blocks. Only the declared fields are kept."""
        size = 0
        update: dict[str, tuple[int, dict]] = {}
        for series, (ts, record) in newest.items():
            values = {k: record[k] for k in fields if record.get(k) is not None}
            size += sys.getsizeof(series) + ENTRY_BYTES + sum(sys.getsizeof(v) for v in values.values())
            update[series] = (ts, values)
        with self._bytes_lock:
            full = self._bytes > 0 and self._bytes + size > QUEUE_MAX_BYTES
            if not full:
                self._bytes += size
        if not full:
            try:
                self._queue.put_nowait((fields, update, size))
                return
            except queue.Full:
                self._taken(size)
        self.metrics.inc("bridge_cache_dropped_total", len(newest))

    def _taken(self, size: int) -> None:
        with self._bytes_lock:
            self._bytes -= size

    def stop(self, timeout: float) -> None:
        """Sends what is queued if Redis answers within `timeout`, then stops."""
        if self._thread is None:
            return
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        next_send = 0.0  # monotonic: spec.min_interval after the last pipeline started
        while True:
            item = self._queue.get()
            if item is None:
                return
            # At most one pipeline per min_interval: what arrives meanwhile joins this batch. Each
            # pipeline costs the worker about as much CPU as its commands (redis-py packs and parses
            # each), so at high rates, with a burst every few milliseconds, a pipeline per burst was
            # a tenth of the bridge's CPU per point (bench/run.py, docs/performance.md).
            wait = next_send - time.monotonic()
            if wait > 0:
                self._stopping.wait(wait)  # stop: what is queued goes at once
            next_send = time.monotonic() + self.spec.min_interval
            batch: dict[str, tuple[int, dict[str, str]]] = {}
            stop = False
            while True:
                fields, newest, size = item
                self._taken(size)
                for series, (ts, record) in newest.items():
                    current = batch.get(series)
                    if current is None and ts < self._sent_time(series, ts):
                        continue  # older than what the hash holds already
                    if current is None or ts >= current[0]:
                        batch[series] = (ts, {k: _text(record[k]) for k in fields if record.get(k) is not None})
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
            try:
                self._send(batch)
            except Exception as exc:  # contained: the cache is a convenience
                self.metrics.inc("bridge_stage_errors_total", 1, stage="cache")
                log.exception("cache worker error (contained)", extra={"error": repr(exc)})
            if stop:
                return

    def _sent_time(self, series: str, default: int) -> int:
        sent = self._sent.get(series)
        if sent is None:
            sent = self._sent_before.get(series)
        return default if sent is None else sent

    def _remember(self, batch: dict[str, tuple[int, dict[str, str]]]) -> None:
        sent = self._sent
        for series, (ts, _) in batch.items():
            if series not in sent and len(sent) >= SENT_SERIES:
                self._sent_before, sent = sent, {}
                self._sent = sent
            previous = sent.get(series)
            if previous is None:
                previous = self._sent_before.pop(series, None)
            sent[series] = ts if previous is None or ts > previous else previous

    def _send(self, batch: dict[str, tuple[int, dict[str, str]]]) -> None:
        if not batch:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for series, (ts, mapping) in batch.items():
                key = f"{self.spec.key_prefix}:{series}"
                pipe.hset(key, mapping={**mapping, "time": str(ts)})
                pipe.pexpire(key, self._ttl_ms)
            pipe.execute()
            self._remember(batch)
            self.metrics.inc("bridge_cache_updates_total", len(batch))
            self.last_error = ""
        except (redis.RedisError, OSError) as exc:
            self.metrics.inc("bridge_cache_errors_total", 1)
            self.last_error = f"{type(exc).__name__}: {exc}"
            now = time.monotonic()
            if now - self._failing_logged > 10:
                self._failing_logged = now
                log.warning("redis cache update failed", extra={"error": self.last_error})
