"""Counters and gauges, exposed as Prometheus text on /metrics, with /healthz; and `parse`, the
one reader of that text (tests, `station-bridge validate`).

Counters are updated under one lock (several threads count: the receive loop, one writer per
destination, the cache worker); gauges are read when rendered. The ledger (ledger.py) persists
the counters, so that they and the equations they satisfy survive restarts.

The HTTP listener (`HttpServer`) is one thread around a selector: each connection has a total
deadline of `http.timeout` from its accept, at most `http.max_connections` are open (a new one
closes the oldest, counted), so slow or silent clients never keep a fresh /healthz from an answer.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import selectors
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable

log = logging.getLogger("station_bridge.metrics")

HELP = {
    # per subscription: received == mapped + sum(rejected) + sum(ignored)
    "bridge_received_messages_total": "Messages received from ZMQ, per subscription.",
    "bridge_mapped_messages_total": "Messages mapped to a point, per subscription.",
    "bridge_rejected_messages_total": "Messages refused, per subscription and reason.",
    "bridge_ignored_messages_total": "Messages an ignore rule says are not data, per subscription and rule.",
    "bridge_mapped_points_total": "Points a subscription handed to every destination (raw and binned).",
    "bridge_self_points_total": "Self-metrics points handed to every destination.",
    "bridge_timestamp_fallbacks_total": "Points whose configured time field was missing (receive time used).",
    "bridge_binning_gaps_total": "Silences of a binned series longer than binning.max_gap (their bins not filled).",
    "bridge_binning_evicted_total": "Binned series forgotten beyond binning.max_series (least recently sampled; "
                                    "their open bin not written).",
    "bridge_binning_skipped_total": "Binned points without every binned field as a number (reason missing_field) "
                                    "and bins whose mean is not finite (reason non_finite): not binned.",
    "bridge_subscription_reconnects_total": "Connections re-opened after libzmq dropped them, per subscription.",
    "bridge_subscription_start_errors_total": "Failed socket set-ups (connect, bind), retried in the background.",
    "bridge_subscription_handshake_failures_total": "Connections whose ZMTP handshake failed, per subscription.",
    "bridge_uniqueness_nudged_total": "Points moved to the next free nanosecond of their series.",
    "bridge_uniqueness_unchecked_total": "Points older than their series' uniqueness window (not checked).",
    "bridge_uniqueness_evicted_total": "Series forgotten by the uniqueness window (least recently used).",
    "bridge_uniqueness_save_errors_total": "Failed writes of the uniqueness window file (uniqueness.bin).",
    "bridge_uniqueness_restore_errors_total": "Uniqueness window files found unreadable at start (ignored).",
    "bridge_uniqueness_restored_series": "Series whose uniqueness window was read back from uniqueness.bin at start.",
    # per destination: accepted == written + sum(dropped) + pending
    "bridge_accepted_points_total": "Points a destination accepted (queued, logged), including recovered ones.",
    "bridge_recovered_points_total": "Points found on disk at start beyond what the ledger had pending.",
    "bridge_written_points_total": "Points acknowledged by InfluxDB, per destination.",
    "bridge_dropped_points_total": "Points dropped, per destination and reason.",
    "bridge_dropped_fields_total": "Fields removed from points a destination's backend cannot keep (numeric_only), "
                                   "or would merge with another sample (time_resolution, name_collision).",
    "bridge_pending_points": "Points not yet written nor dropped: queue, in flight and journal.",
    "bridge_journaled_points_total": "Points written to the journal, per destination.",
    "bridge_journal_damaged_records_total": "Journal or intake-log records that failed their checksum (skipped).",
    "bridge_write_errors_total": "Failed write requests, per destination and kind.",
    "bridge_write_requests_total": "Write requests sent, per destination.",
    "bridge_intake_errors_total": "Points the write-ahead intake log could not store (held in memory only).",
    "bridge_intake_bytes": "Bytes in the write-ahead intake log, per destination.",
    "bridge_queue_points": "Points waiting in memory, per destination.",
    "bridge_journal_bytes": "Bytes in the journal, per destination.",
    "bridge_journal_points": "Points in the journal, per destination.",
    "bridge_write_seconds_sum": "Total time of successful write requests, per destination.",
    "bridge_write_seconds_count": "Successful write requests, per destination.",
    "bridge_batch_wait_seconds_sum": "Total time the oldest point of each batch sent live waited in memory "
                                     "before its request, per destination.",
    "bridge_batch_wait_seconds_count": "Batches sent live (from memory), per destination.",
    "bridge_dead_letters_total": "Records written to a dead-letter file, per file.",
    "bridge_dead_letter_errors_total": "Dead-letter records that could not be written, per file.",
    "bridge_dead_letters_discarded_total": "Dead-letter records deleted by rotation, per file.",
    "bridge_dead_letters_truncated_total": "Refused messages stored cut (dead_letter.max_record_bytes), per file.",
    "bridge_sink_restarts_total": "Writer threads restarted after they died, per destination.",
    "bridge_stage_errors_total": "Unexpected errors caught and contained, per stage.",
    "bridge_cache_errors_total": "Failed Redis cache updates.",
    "bridge_cache_updates_total": "Series updated in the Redis cache.",
    "bridge_cache_dropped_total": "Cache updates dropped because the cache queue was full (Redis slow or hung).",
    "bridge_ledger_resets_total": "Ledger files found unreadable at start (kept aside): counters restarted from zero.",
    "bridge_http_refused_total": "HTTP connections closed because max_connections were open (the oldest goes).",
    "bridge_http_timeouts_total": "HTTP connections closed because no whole request came within http.timeout.",
    # health gauges
    "bridge_destination_failing_seconds": "Seconds since the destination's first failure without a success (0: ok).",
    "bridge_oldest_pending_seconds": "Age of the oldest point not yet written, per destination.",
    "bridge_destination_pending_by_schedule": "1 while the destination's scheduled link is down (outside its windows).",
    "bridge_sink_alive": "1 while the destination's writer thread runs.",
    "bridge_journal_writable": "1 while the journal can be written (last write succeeded, reserve free).",
    "bridge_journal_free_bytes": "Free bytes on the journal's filesystem.",
    "bridge_subscription_connected": "Peers whose ZMTP handshake succeeded, per subscription.",
    "bridge_last_message_age_seconds": "Seconds since the subscription's last message (-1: none yet).",
    "bridge_cache_queue": "Cache updates waiting for Redis.",
    "bridge_healthy": "1 when /healthz answers 200.",
    "bridge_destination_healthy": "1 while the health model finds nothing wrong with the destination.",
    "bridge_subscription_healthy": "1 while the health model finds nothing wrong with the subscription.",
    "bridge_subscription_rejected_share": "Share of the subscription's recent messages (health window) rejected.",
    "bridge_start_time_seconds": "Process start, unix seconds.",
    "bridge_fast_path_compiled": "1 when the subscription runs on the compiled path.",
    "bridge_fast_path_messages": "Messages the compiled path mapped, per subscription (since start).",
    "bridge_fast_path_handed_back": "Messages the compiled path handed back to Python, per subscription (since start).",
    "bridge_memory_budget_bytes": "The memory budget in bytes (memory.budget_bytes, or derived from the cgroup limit).",
    "bridge_queue_bytes": "Bytes waiting in memory, per destination.",
    "bridge_reloads_total": "SIGHUP reloads, per result (applied, unchanged, refused).",
    "bridge_signals_total": "Signals handled, per signal.",
}

Labels = tuple[tuple[str, str], ...]


def _number(value: float) -> str:
    """Exact for counts (no exponent: 1030175, not 1.03018e+06), repr for the rest."""
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, Callable[[], dict[Labels, float]]] = {}
        self.started = time.time()
        self.lock = threading.Lock()

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self.lock:
            self.counters[name][key] += value

    @staticmethod
    def key(**labels: str) -> Labels:
        """A label set in the form counters are stored under (for `bump`)."""
        return tuple(sorted(labels.items()))

    def bump(self, updates: list[tuple[str, Labels, float]]) -> None:
        """Several counters with precomputed label keys, atomically (the hot path's form of `add`)."""
        with self.lock:
            counters = self.counters
            for name, key, amount in updates:
                if amount:
                    counters[name][key] += amount

    def add(self, updates: list[tuple[str, float, dict[str, str]]]) -> None:
        """Several counters at once: a snapshot (the ledger) sees all of them or none."""
        keyed = [(name, tuple(sorted(labels.items())), amount) for name, amount, labels in updates if amount]
        with self.lock:
            for name, key, amount in keyed:
                self.counters[name][key] += amount

    def get(self, name: str, **labels: str) -> float:
        with self.lock:
            return self.counters[name].get(tuple(sorted(labels.items())), 0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every label set that includes `labels`."""
        want = set(labels.items())
        with self.lock:
            return sum(v for k, v in self.counters[name].items() if want <= set(k))

    def gauge(self, name: str, read: Callable[[], dict[Labels, float]]) -> None:
        self.gauges[name] = read

    def snapshot(self) -> dict[str, list]:
        with self.lock:
            return {name: [[list(map(list, labels)), value] for labels, value in values.items()]
                    for name, values in self.counters.items() if values}

    def restore(self, data: dict[str, list]) -> None:
        with self.lock:
            for name, entries in data.items():
                for labels, value in entries:
                    self.counters[name][tuple(tuple(pair) for pair in labels)] += float(value)

    def render(self) -> str:
        out: list[str] = []
        with self.lock:
            series = {name: dict(values) for name, values in self.counters.items()}
        for name, read in list(self.gauges.items()):
            try:
                series[name] = read()
            except Exception as exc:  # a gauge must never break /metrics
                log.warning("gauge failed", extra={"gauge": name, "error": repr(exc)})
        for name in sorted(series):
            kind = "counter" if name.endswith(("_total", "_sum", "_count")) else "gauge"
            out.append(f"# HELP {name} {HELP.get(name, name)}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in sorted(series[name].items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                out.append(f"{name}{{{text}}} {_number(value)}" if text else f"{name} {_number(value)}")
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


Sample = tuple[str, Labels]
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_UNESCAPE = re.compile(r"\\(.)")


def parse(text: str) -> dict[Sample, float]:
    """Prometheus text exposition -> {(name, sorted labels): value}; comments and blank lines skipped.

    The one parser of /metrics for every suite and for `station-bridge validate`. Raises
    ValueError naming the line it cannot read.
    """
    samples: dict[Sample, float] = {}
    for raw in text.split("\n"):  # the format's only line break (a label value may hold \r or U+2028)
        line = raw.strip(" \t")
        if not line or line.startswith("#"):
            continue
        match = _NAME.match(line)
        if not match:
            raise ValueError(f"not a sample: {raw!r}")
        name, pos = match.group(), match.end()
        labels: list[tuple[str, str]] = []
        if line[pos:pos + 1] == "{":
            pos += 1
            while True:
                rest = line[pos:].lstrip()
                if rest.startswith("}"):
                    pos = len(line) - len(rest) + 1
                    break
                label = _LABEL.match(line, pos)
                if not label:
                    raise ValueError(f"bad labels: {raw!r}")
                value = _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), label.group(2))
                labels.append((label.group(1), value))
                pos = label.end()
                if label.group(3) == "}":
                    break
        fields = line[pos:].split()
        if not fields:
            raise ValueError(f"sample without a value: {raw!r}")
        samples[(name, tuple(sorted(labels)))] = float(fields[0])
    return samples


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """One sample of parse()'s result (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """Sum of a metric over every label set that includes `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


class HttpServer:
    """/metrics and /healthz from one thread around a selector: no thread, no blocking call per
    client. A request must arrive whole, and its answer be taken, within `timeout` of the
    connection's accept (a total deadline, not one per read: a client sending a byte at a time
    is cut at the same time as one sending nothing; counted in bridge_http_timeouts_total). At
    most `max_connections` are open: a new one closes the oldest (counted in
    bridge_http_refused_total), so however many slow clients there are, a fresh health check is
    read and answered at once. A request line and headers beyond MAX_REQUEST_BYTES are refused (431)."""

    MAX_REQUEST_BYTES = 16 << 10

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: Callable[[], dict],
                 max_connections: int, timeout: float) -> None:
        self._metrics = metrics
        self._health = health
        self._max = max(1, max_connections)
        self._timeout = timeout
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.server_address = self._listener.getsockname()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[socket.socket, _Conn] = {}  # insertion order: oldest first
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.server_close()

    def server_close(self) -> None:
        for conn in list(self._conns.values()):
            self._close(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError, KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def serve_forever(self) -> None:
        while not self._stopped.is_set():
            try:
                self._round()
            except Exception as exc:  # the health endpoint must outlive any one request's failure
                self._metrics.inc("bridge_stage_errors_total", 1, stage="http")
                log.exception("http server error (contained)", extra={"error": repr(exc)})
                time.sleep(0.05)

    def _round(self) -> None:
        now = time.monotonic()
        wait = 1.0
        if self._conns:
            wait = max(0.0, min(wait, next(iter(self._conns.values())).deadline - now))
        for key, mask in self._selector.select(wait):
            if key.data is None:
                self._accept()
            elif key.data == "wake":
                with contextlib.suppress(OSError):
                    self._wake_r.recv(64)
            else:
                conn: _Conn = key.data
                if conn.sock not in self._conns:
                    continue
                if mask & selectors.EVENT_READ:
                    self._read(conn)
                if mask & selectors.EVENT_WRITE and conn.sock in self._conns:
                    self._write(conn)
        now = time.monotonic()
        for conn in list(self._conns.values()):  # every deadline is accept + timeout: oldest first
            if conn.deadline > now:
                break
            self._metrics.inc("bridge_http_timeouts_total")
            self._close(conn)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) and self._conns:
                    # Out of descriptors: the oldest client makes room (the listener stays readable).
                    self._metrics.inc("bridge_http_refused_total")
                    self._close(next(iter(self._conns.values())))
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.05)  # nothing of ours to close: let the others release some
                return
            if len(self._conns) >= self._max:
                self._metrics.inc("bridge_http_refused_total")
                self._close(next(iter(self._conns.values())))
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic() + self._timeout)
            self._conns[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.sock, None) is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = conn.inbuf.find(b"\n\n")
        if end < 0:
            if len(conn.inbuf) > self.MAX_REQUEST_BYTES:
                self._respond(conn, 431, "text/plain", b"request header fields too large\n")
            return
        self._respond(conn, *self._answer(bytes(conn.inbuf[:end])))

    def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        parts = head.split(b"\n", 1)[0].decode("latin-1").split()
        if len(parts) < 2:
            return 400, "text/plain", b"bad request\n"
        method, path = parts[0], parts[1].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        try:
            if path == "/metrics":
                return 200, "text/plain; version=0.0.4", self._metrics.render().encode()
            if path == "/healthz":
                state = self._health()
                return 200 if state.get("ok") else 503, "application/json", json.dumps(state, default=str).encode()
        except Exception as exc:  # answered 500, counted and logged: the next request is served
            self._metrics.inc("bridge_stage_errors_total", 1, stage="http")
            log.exception("http handler error (contained)", extra={"path": path, "error": repr(exc)})
            return 500, "text/plain", f"internal error: {type(exc).__name__}\n".encode()
        return 404, "text/plain", b"not found\n"

    def _respond(self, conn: _Conn, status: int, kind: str, body: bytes) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  431: "Request Header Fields Too Large", 500: "Internal Server Error",
                  503: "Service Unavailable"}.get(status, "")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        method = conn.inbuf[:5]
        conn.out = memoryview(head if method.startswith(b"HEAD") else head + body)
        conn.inbuf = bytearray()
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if not len(conn.out):
            self._close(conn)


class _Conn:
    __slots__ = ("deadline", "inbuf", "out", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbuf = bytearray()
        self.out = memoryview(b"")


def serve(metrics: Metrics, listen: str, health: Callable[[], dict], max_connections: int = 16,
          timeout: float = 5.0) -> HttpServer:
    host, _, port = listen.rpartition(":")
    return HttpServer((host.strip("[]") or "127.0.0.1", int(port)), metrics, health, max_connections, timeout).start()
