"""Sinks: batching and delivery to one InfluxDB 1.x destination, backed by the journal.

`InfluxWriter` is the one InfluxDB client (writes, /ping, queries for `export`); `Delivery` is the
one write path (the writer thread here and `station-bridge replay` use it):
- a batch of up to `batch_size` lines is POSTed; 204: written;
- connection errors, timeouts and every status but 204, 400 and 413 (5xx, 401/403/404/408/429,
  a redirect, a 200 from something that is not InfluxDB's /write) are retryable: the caller
  journals what was not attempted and retries with backoff; nothing already accepted is sent again;
- 400 `partial write: ... dropped=N` means InfluxDB stored every other line: the refused lines
  are told apart from the message where it names them (`unable to parse '<line>'`, `field type
  conflict: input field "f" on measurement "m" is type T` (every line with that field and type),
  `points beyond retention policy` (the N oldest lines)); only what the message leaves open is
  found by bisection, re-sending lines InfluxDB already holds (harmless: same series and time),
  counted once. A 400 or 413 that stored nothing is split and re-sent until the refused lines
  are isolated. Refused lines go to the dead-letter file with InfluxDB's message.

`InfluxSink` is one writer thread per destination:
- takes chunks (logged first in the destination's intake log) and batches them: a batch is sent
  when it holds batch_size points, when its oldest point has waited flush_interval (counted from
  that point's arrival, not from when the writer looked), or, while no request is in flight and the
  batch would be delivered now (no backoff, no backlog ahead of it), as soon as it holds
  flush_points: the writer never idles while a batch that size waits (issue 22: at half load a
  batch otherwise waited to fill up, 5000 points in 0.13 s at 38,000/s, on top of its request).
  What arrives during a request is the next batch, so under load batches grow to batch_size on
  their own; a feed slower than flush_points per flush_interval is sent once per flush_interval
  as before;
- while the journal is empty, delivers a batch; a retryable failure journals the rest and starts
  exponential backoff with jitter; later batches go to the journal while it is not empty, so
  delivery order is kept, except while the journal refuses writes (full, its cap, read-only):
  then a batch is delivered at once when the destination is not backing off (out of order
  rather than dropped behind the journal, JOURNAL_BYPASS_S); when it cannot be written at all
  (`journal_error`: read-only, permissions) and the destination is backing off, a batch is held
  in memory within the queue's bounds until the backoff ends (`_hold`); the journal is replayed oldest
  first (verified records only: a segment that cannot be read or no longer verifies is set
  aside, its points counted dropped with reason `journal_error` or `damaged`, and the next one
  delivered);
- every failure of its own is contained: a journal write that fails (disk full, the reserve
  reached) is a counted drop, an unexpected exception is counted and logged and the loop goes on;
  a thread that dies anyway is restarted by the bridge (`ensure_alive`) and counted.
Counters per destination: accepted == written + dropped(reason) + pending (queue, in flight,
journal), exact at any quiet moment.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .backend import Adapter, wire
from .config import DestinationSpec, HealthSpec
from .health import RecentOutcomes
from .journal import Chunk, DeadLetters, Intake, Journal
from .lineproto import _simple as simple_lines
from .lineproto import nth_line_end, parse_line
from .logs import RateLimitedLog
from .metrics import Metrics
from .schedule import Pacer

log = logging.getLogger("station_bridge.sink")

# The only answers that refuse points: 400 (bad lines, partial writes, limits) and 413 (too large:
# split). 204 is written; every other status is retryable (see Delivery._write).
REFUSAL_STATUS = {400, 413}
# A batch that keeps getting 5xx (POISON_AFTER failed attempts in a row) is split to find lines the
# server fails alone while it stores the rest (InfluxSink, Delivery._isolate).
POISON_AFTER = 5
CONTROL_MAX_AGE_S = 300.0  # a line stored this recently may be an isolation's control (sent again)
POISON_CONFIRM = 3  # a suspect line is sent alone this many more times before it is refused `poison`
ISOLATE_BUDGET = 12  # requests without anything stored: the server fails everything, not a line
POISON_STICKY_S = 60.0  # after poison was found, a 5xx isolates at once for this long
# While the journal refuses writes (full, its cap, read-only, permissions), a batch is delivered
# at once even though older points wait in the journal: out of order, rather than dropped behind
# them while the destination is up. Only what the destination also fails goes to the journal.
JOURNAL_BYPASS_S = 5.0
TAKE_MAX_BYTES = 8 << 20  # a batch taken from the queue (each copy of it: joined, split, journaled)


# `gzip: true`: ISA-L's deflate when the `isal` package is installed (level 1: about 0.3 of zlib's
# CPU and a few percent fewer bytes on line protocol, bench/gzipcost.py), else zlib's.
try:
    from isal import isal_zlib as _DEFLATE
except ImportError:
    _DEFLATE = zlib


def gzip_body(body: bytes) -> bytes:
    """`body` as one gzip member, level 1, in one call (what `gzip: true` sends)."""
    return _DEFLATE.compress(body, 1, 31)


class Retryable(Exception):
    def __init__(self, message: str, kind: str = "connection", remaining: Chunk | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.remaining = remaining


class InfluxWriter:
    """One keep-alive HTTP connection to an InfluxDB 1.x: /write, /ping, /query."""

    def __init__(self, spec: DestinationSpec) -> None:
        self.spec = spec
        url = urllib.parse.urlsplit(spec.url)
        self._https = url.scheme == "https"
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or (443 if self._https else 8086)
        self._base = url.path or ""
        params = {"db": spec.database, "precision": "ns"}
        if spec.retention_policy:
            params["rp"] = spec.retention_policy
        self._path = self._base + "/write?" + urllib.parse.urlencode(params)
        # VictoriaMetrics (and vmauth) take writes at /influx/write but answer /ping at the root only.
        self._ping = (self._base.removesuffix("/influx") if self._base.endswith("/influx") else self._base) + "/ping"
        self._auth: dict[str, str] = {}
        if spec.username:
            token = base64.b64encode(f"{spec.username}:{spec.password or ''}".encode()).decode()
            self._auth["Authorization"] = "Basic " + token
        self._headers = {"Content-Type": "text/plain; charset=utf-8", **self._auth}
        if spec.gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0
        # https: the system's CAs, or the destination's own bundle (`ca_file`).
        self._tls = ssl.create_default_context(cafile=spec.ca_file) if self._https else None
        self.pacer = Pacer(spec.max_points_per_second, spec.max_bytes_per_second)
        # Asked while a request waits for the send budget: True when it must not be sent any more
        # (the sink's window closed, its stop's deadline passed): the request is not sent (Paused).
        self.cancel: Callable[[], bool] | None = None
        # What a write request adds to its body on the wire (request line, headers), for the
        # byte budget: the path and our headers, and Host, Accept-Encoding, Content-Length.
        self._overhead = (len(self._path) + 120 + len(self._host)
                          + sum(len(k) + len(v) + 4 for k, v in self._headers.items()))

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.spec.timeout, context=self._tls)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.spec.timeout)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = self._new_connection()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def abort(self) -> None:
        """From another thread: shuts the connection's socket, so a request blocked on it fails
        at once (Retryable) instead of waiting for its timeout."""
        conn = self._conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, str]:
        self.requests += 1
        try:
            conn = self._connection()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise Retryable(f"{type(exc).__name__}: {exc}") from exc
        if 300 <= response.status < 400:
            text = (f"HTTP {response.status} redirect to {response.getheader('Location')!r}: not followed "
                    "(a POST is not re-sent elsewhere): set the destination's url to the final address")
        return response.status, text

    def post(self, body: bytes, points: int | None = None) -> tuple[int, str]:
        """Returns (status, InfluxDB's error text); raises Retryable on transport failures. Waits
        for the destination's send budget first (max_points/bytes_per_second: the bytes sent)."""
        lines = points if points is not None else body.count(b"\n")
        if self.spec.time_resolution == "ms":  # VictoriaMetrics reads backslashes otherwise (backend.wire)
            body = wire(body)
        if self.spec.gzip:
            body = gzip_body(body)
        if self.cancel is not None and self.cancel():
            # Every request goes through here (a batch, its halves, isolation, probes): none is
            # sent once the window closed or the stop's deadline passed.
            raise Retryable("paused: the window closed or the stop's deadline passed: not sent", "paused")
        if not self.pacer.wait(lines, len(body) + self._overhead, self.cancel):
            raise Retryable("paused while waiting for the send budget (the window closed or the stop's deadline "
                            "passed): not sent", "paused")
        status, text = self._request("POST", self._path, body, self._headers)
        if status == 204:
            return 204, ""
        try:
            doc = json.loads(text)
            message, influx = doc.get("error", text), "error" in doc
        except (ValueError, AttributeError, TypeError):
            message, influx = text.strip(), False
        if status == 400 and not influx:
            # InfluxDB's 400 always carries {"error": ...}: this one is a proxy's or another
            # service's, about the request, not these points: kept and retried, never bisected.
            raise Retryable(f"HTTP 400 that is not InfluxDB's (no JSON error): {str(message)[:300]}", "http_400")
        return status, str(message)

    def ping(self) -> bool:
        try:
            status, _ = self._request("GET", self._ping, None, self._auth)
        except Retryable:
            return False
        return status == 204

    def query(self, query: str, chunk_size: int = 10_000) -> Iterator[dict]:
        """Results of a chunked InfluxQL query (one JSON document per chunk), on its own connection."""
        params = urllib.parse.urlencode({"db": self.spec.database, "q": query, "epoch": "ns",
                                         "chunked": "true", "chunk_size": str(chunk_size)})
        conn = self._new_connection()
        try:
            conn.request("GET", f"{self._base}/query?{params}", headers=self._auth)
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {response.read().decode('utf-8', 'replace')[:500]}")
            for raw in response:
                if raw.strip():
                    yield json.loads(raw)
        finally:
            conn.close()


@dataclass
class Outcome:
    """What a delivery did: counts for the caller to add, lines to dead-letter."""

    written: int = 0
    rejected: list[tuple[bytes, int, str, str]] = field(default_factory=list)  # line, status, message, reason
    unidentified: int = 0  # refused by InfluxDB but not told apart (probing was cut short)
    unidentified_message: str = ""
    retry: Chunk | None = None  # the part not attempted (retryable failure, or paused)
    error: str = ""
    kind: str = ""  # of the failure; "paused": stopped between requests on purpose (not a failure)


_DROPPED = re.compile(r" dropped=(\d+)\s*$")


def _told_dropped(message: str, parsed: set[int]) -> int | None:
    """How many lines a `partial write` answer says InfluxDB dropped besides those it could not
    parse (its `dropped=N` leaves those out), or None when it does not say: no `dropped=N`,
    `dropped=0` and no line it could not parse (a partial write that dropped nothing), or a line it
    could not parse that is not one of the lines sent (`parsed` holds those it named)."""
    found = _DROPPED.search(message)
    if found is None or message.count(_PARSE_PREFIX) > len(parsed):
        return None
    if int(found.group(1)) == 0 and not parsed:
        return None  # a partial write that dropped nothing: it does not say what it dropped
    return int(found.group(1))


# InfluxDB's refusals for a limit of the database, told apart (their points are dropped with this reason).
_LIMITS = (("max-series-per-database limit exceeded", "max_series"),
           ("max-values-per-tag limit exceeded", "max_values_per_tag"))


# 500s that tell of the server's state, not of the lines: never taken for poison.
_TRANSIENT = ("timeout", "cache-max-memory-size", "max-concurrent", "too many", "hinted handoff", "shutting down",
              "unavailable", "overloaded")


def _transient(message: str) -> bool:
    lowered = message.lower()
    return any(text in lowered for text in _TRANSIENT)


def refusal_reason(message: str) -> str:
    """The dropped reason of points InfluxDB refused with `message`: a database limit by name,
    else `rejected` (a line it cannot parse, a type conflict, beyond retention, ...)."""
    for text, reason in _LIMITS:
        if text in message:
            return reason
    return "rejected"
_PARSE_PREFIX = "unable to parse '"


class Delivery:
    """The one write path: batching, retryable errors, partial writes (see the module's docstring)."""

    def __init__(self, writer: InfluxWriter, batch_size: int) -> None:
        self.writer = writer
        self.batch_size = batch_size
        # A line the destination stored lately (the first of the last request it acknowledged): the
        # control of an isolation that stores nothing itself (a suspect alone at the backlog's head).
        self.stored: bytes | None = None
        self.stored_at = -float("inf")

    def _piece_size(self, chunk: Chunk) -> int:
        """Points per request: batch_size, and with a send budget at most one second of it (so
        that one request never holds the link much longer than a second, and the live stream
        can go between two requests of a backlog)."""
        size = self.batch_size
        pacer = self.writer.pacer
        if pacer.points_per_s is not None:
            size = min(size, pacer.points_per_s)
        if pacer.bytes_per_s is not None and len(chunk.data) > pacer.bytes_per_s:
            size = min(size, chunk.count * pacer.bytes_per_s // len(chunk.data))
        return max(1, size)

    def deliver(self, chunk: Chunk, pause: Callable[[], bool] | None = None, isolate: bool = False) -> Outcome:
        """`pause`: asked before each request; True stops there, the rest returned as `retry`
        with kind "paused" (a closed window, live points waiting). `isolate`: a batch that gets a
        5xx is split to find the lines the server fails on their own while it stores the others
        (`_isolate`)."""
        out = Outcome()
        while chunk.count:
            if pause is not None and pause():
                out.retry, out.kind = chunk, "paused"
                return out
            size = self._piece_size(chunk)
            piece, rest = chunk.split(size) if chunk.count > size else (chunk, None)
            try:
                try:
                    self._write(piece, out)
                except Retryable as exc:
                    if not (isolate and exc.kind == "http_500" and not _transient(str(exc))
                            and exc.remaining is not None and exc.remaining.count):
                        raise
                    self._isolate(exc.remaining, out, str(exc))
            except Retryable as exc:
                remaining = exc.remaining if exc.remaining is not None else piece
                out.retry = Chunk.join([remaining, rest]) if rest is not None and rest.count else remaining
                out.error, out.kind = str(exc), exc.kind
                return out
            if rest is None:
                break
            chunk = rest
        return out

    def _write(self, chunk: Chunk, out: Outcome) -> None:
        """Raises Retryable (with `remaining`: what was not stored) before anything of that
        remainder was accepted."""
        status, message = self.writer.post(chunk.data, chunk.count)
        if status == 204:
            out.written += chunk.count
            self.stored, self.stored_at = chunk.data[:chunk.data.find(b"\n")], time.monotonic()
            return
        if status not in REFUSAL_STATUS:
            # Not an answer of InfluxDB's /write about these points (5xx, auth, a redirect, a 200
            # from something that is not InfluxDB, ...): kept and retried, never dropped.
            raise Retryable(f"HTTP {status}: {message[:500]}", f"http_{status}", chunk)
        if status == 413 or (status == 400 and "entity too large" in message.lower()):
            if chunk.count == 1:
                out.rejected.append((chunk.data.rstrip(b"\n"), status, message, "too_large"))
                return
            self._halves(chunk, out)
            return
        self._resolve(chunk, status, message, out)

    def _isolate(self, chunk: Chunk, out: Outcome, error: str) -> None:
        """Nothing of `chunk` was stored and the server answered 5xx: its parts are sent
        separately, halving those that fail, down to single lines. Lines that fail alone while
        others are stored, and fail again alone POISON_CONFIRM times, are refused `poison` (the
        server cannot take them: they would block every later point forever); when nothing is
        stored within ISOLATE_BUDGET requests the server fails everything: Retryable, no loss."""
        pending: list[list[bytes]] = [chunk.lines()]
        suspects: list[bytes] = []
        written_before = out.written
        requests = 0
        # A line this isolation saw stored: sent again (the same point: InfluxDB keeps one) right
        # after each failure of a suspect, it proves the server was storing lines at that moment.
        # A line is poison only when it fails while the control around it is stored: an outage
        # that begins mid-isolation (a disk filling: 500 for everything) fails the control too.
        control: bytes | None = None

        def rest() -> Chunk:
            return Chunk.of_bytes([line for part in pending for line in part] + suspects)

        while pending:
            if out.written == written_before and requests >= ISOLATE_BUDGET:
                raise Retryable(error, "http_5xx", rest())
            part = pending[0]
            requests += 1
            try:
                status, message = self.writer.post(b"".join(line + b"\n" for line in part))
            except Retryable as exc:
                exc.remaining = rest()
                raise
            if status == 204:
                out.written += len(part)
                control = part[0]
                self.stored, self.stored_at = control, time.monotonic()
                pending.pop(0)
            elif status == 500 and not _transient(message):
                pending.pop(0)
                if len(part) == 1:
                    suspects.append(part[0])
                else:
                    middle = len(part) // 2
                    pending[:0] = [part[:middle], part[middle:]]
                error = f"HTTP {status}: {message[:500]}"
            elif status >= 500:  # unavailable, a gateway, overloaded: not about these lines
                raise Retryable(f"HTTP {status}: {message[:500]}", f"http_{status}", rest())
            else:  # any other answer: the usual path, for this part
                pending.pop(0)
                try:
                    self._write(Chunk.of_bytes(part), out)
                except Retryable as exc:
                    exc.remaining = Chunk.join([exc.remaining or Chunk.of_bytes(part), rest()])
                    raise
        if suspects and control is None and time.monotonic() - self.stored_at < CONTROL_MAX_AGE_S:
            # Nothing stored in this isolation (a suspect alone: what an isolation cut short left
            # at the backlog's head): a line stored lately is the control.
            control = self.stored
        if suspects and control is None:
            raise Retryable(error, "http_5xx", Chunk.of_bytes(suspects))
        message = error
        for attempt in range(POISON_CONFIRM):
            time.sleep(0.1 * (attempt + 1))  # each round later than the first failures
            still: list[bytes] = []
            for k, line in enumerate(suspects):
                try:
                    status, message = self.writer.post(line + b"\n")
                except Retryable as exc:
                    exc.remaining = Chunk.of_bytes(still + suspects[k:])
                    raise
                if status == 204:
                    out.written += 1
                elif status == 500 and not _transient(message):
                    still.append(line)
                    self._control(control, message, Chunk.of_bytes(still + suspects[k + 1:]))
                elif status >= 500:
                    raise Retryable(f"HTTP {status}: {message[:500]}", f"http_{status}",
                                    Chunk.of_bytes(still + suspects[k:]))
                else:
                    try:
                        self._write(Chunk.of_bytes([line]), out)
                    except Retryable as exc:
                        exc.remaining = Chunk.of_bytes(still + suspects[k:])
                        raise
            suspects = still
            if not suspects:
                break
        for line in suspects:
            out.rejected.append((line, 500, message, "poison"))

    def _control(self, line: bytes, failure: str, remaining: Chunk) -> None:
        """Right after a suspect failed alone: a line already stored must be stored again, or the
        server is failing everything now (not that line): Retryable, every suspect kept."""
        try:
            status, _message = self.writer.post(line + b"\n")
        except Retryable as exc:
            exc.remaining = remaining
            raise
        if status != 204:
            raise Retryable(f"HTTP 500 for a suspect line, then HTTP {status} for a line already stored "
                            f"(the server fails everything, not that line): {failure[:300]}",
                            f"http_{status}" if status != 500 else "http_5xx", remaining)

    def _halves(self, chunk: Chunk, out: Outcome) -> None:
        """Nothing of `chunk` was stored: deliver its halves separately."""
        first, second = chunk.split(chunk.count // 2)
        try:
            self._write(first, out)
        except Retryable as exc:
            exc.remaining = Chunk.join([exc.remaining or first, second])
            raise
        self._write(second, out)

    def _resolve(self, chunk: Chunk, status: int, message: str, out: Outcome) -> None:
        lines = chunk.lines()
        partial = message.startswith("partial write")
        parsed, named = self._identify(lines, message)
        if not partial:
            # Nothing was stored: refuse what the message names, re-send the rest.
            refused = parsed | named
            if not refused and len(lines) == 1:
                refused = {0}
            for i in sorted(refused):
                out.rejected.append((lines[i], status, message, refusal_reason(message)))
            if refused and len(refused) < len(lines):
                rest = [line for i, line in enumerate(lines) if i not in refused]
                self._write(Chunk.of_bytes(rest), out)
            elif not refused:
                self._halves(chunk, out)
            return
        dropped = _told_dropped(message, parsed)
        refused = parsed | named
        unknown = 0
        if dropped is None:
            # A partial write that does not say how many it dropped, or names lines that are not
            # these (attack round 10: a 400 `partial write: ...` without `dropped=N` was counted
            # written whole): the refused lines are found by re-sending the rest.
            rest = [i for i in range(len(lines)) if i not in refused]
            more, complete = self._find_all([lines[i] for i in rest])
            refused |= {rest[i] for i in more}
            for i in sorted(refused):
                out.rejected.append((lines[i], status, message, refusal_reason(message)))
            if not complete:
                # Cut short (the destination stopped answering): the lines not told apart are sent
                # again later; those InfluxDB already holds are rewritten (the same points), counted once.
                left = [lines[i] for i in range(len(lines)) if i not in refused]
                raise Retryable(f"HTTP {status}: {message[:500]} (refused lines not all found)", "http_400",
                                Chunk.of_bytes(left))
            out.written += len(lines) - len(refused)
            return
        if len(named) < dropped:
            rest = [i for i in range(len(lines)) if i not in refused]
            more, unknown = self._probe([lines[i] for i in rest], dropped - len(named))
            refused |= {rest[i] for i in more}
            if unknown:
                out.unidentified += unknown
                out.unidentified_message = message
        for i in sorted(refused):
            out.rejected.append((lines[i], status, message, refusal_reason(message)))
        out.written += len(lines) - len(refused) - unknown

    def _identify(self, lines: list[bytes], message: str) -> tuple[set[int], set[int]]:
        """(lines that failed to parse, lines refused for a reason the message names)."""
        parsed: set[int] = set()
        if _PARSE_PREFIX in message:
            texts = {line.decode("utf-8", "replace"): i for i, line in enumerate(lines)}
            start = message.find(_PARSE_PREFIX)
            while start >= 0:
                begin = start + len(_PARSE_PREFIX)
                end = message.find("': ", begin)
                while end >= 0:
                    i = texts.get(message[begin:end])
                    if i is not None:
                        parsed.add(i)
                        break
                    end = message.find("': ", end + 1)
                start = message.find(_PARSE_PREFIX, begin)
        named: set[int] = set()
        if "field type conflict: input field" in message:
            parsed_lines = {}
            triples: dict[tuple[str, str, str], list[int]] = {}
            for i, line in enumerate(lines):
                if i in parsed:
                    continue
                try:
                    measurement, _, fields, _ = parse_line(line)
                except ValueError:
                    continue
                parsed_lines[i] = fields
                for key, kind in fields.items():
                    triples.setdefault((measurement, key, kind), []).append(i)
            for (measurement, key, kind), members in triples.items():
                if (f'input field "{key}" on measurement "{measurement}" is type {kind}, already exists as type'
                        in message):
                    named.update(members)
        if "points beyond retention policy" in message:
            found = _DROPPED.search(message)
            count = int(found.group(1)) if found else 0
            stamps = []
            for i, line in enumerate(lines):
                try:
                    stamps.append((parse_line(line)[3], i))
                except ValueError:
                    continue
            stamps.sort(key=lambda s: (s[0] is None, s[0] or 0))
            if 0 < count <= len(stamps) and (count == len(stamps) or stamps[count - 1][0] != stamps[count][0]):
                named.update(i for _, i in stamps[:count])
        return parsed, named - parsed

    def _probe(self, lines: list[bytes], expected: int) -> tuple[set[int], int]:
        """Finds the `expected` refused lines among `lines` (InfluxDB stored the others) by
        re-sending halves. Returns (their indexes, how many stayed unidentified)."""
        if expected <= 0 or not lines:
            return set(), 0
        if expected >= len(lines):
            return set(range(len(lines))), 0
        found, complete = self._split_find(lines)
        return found, 0 if complete else max(0, expected - len(found))

    def _find_all(self, lines: list[bytes]) -> tuple[set[int], bool]:
        """Every line of `lines` InfluxDB refuses, however many: (indexes, whether complete)."""
        if not lines:
            return set(), True
        return self._find(lines) if len(lines) == 1 else self._split_find(lines)

    def _split_find(self, lines: list[bytes]) -> tuple[set[int], bool]:
        found: set[int] = set()
        middle = len(lines) // 2
        for offset, part in ((0, lines[:middle]), (middle, lines[middle:])):
            here, complete = self._find(part)
            found |= {offset + i for i in here}
            if not complete:
                return found, False
        return found, True

    def _find(self, part: list[bytes]) -> tuple[set[int], bool]:
        """Re-sends `part`: (indexes InfluxDB refuses, whether the answer was complete)."""
        try:
            status, message = self.writer.post(b"".join(line + b"\n" for line in part))
        except Retryable:
            return set(), False
        if status == 204:
            return set(), True
        if status not in REFUSAL_STATUS or status == 413:
            return set(), False
        parsed, named = self._identify(part, message)
        here = parsed | named
        if message.startswith("partial write"):
            told = _told_dropped(message, parsed)
            if told is None:
                if len(part) == 1:
                    return {0}, True  # a line sent alone and not stored whole: refused
                rest = [i for i in range(len(part)) if i not in here]
                more, complete = self._find_all([part[i] for i in rest])
                return here | {rest[i] for i in more}, complete
            dropped = len(parsed) + told
        elif here:
            dropped = len(here)
        elif len(part) == 1:
            return {0}, True
        else:
            return self._split_find(part)
        if len(here) >= dropped:
            return here, True
        rest = [i for i in range(len(part)) if i not in here]
        more, unknown = self._probe([part[i] for i in rest], dropped - len(here))
        return here | {rest[i] for i in more}, unknown == 0


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
                 intake: Intake | None = None, health: HealthSpec | None = None,
                 before_delete: Callable[[], None] | None = None, queue_max_bytes: int | None = None,
                 rate_log: RateLimitedLog | None = None) -> None:
        self.spec = spec
        # The in-memory queue's bound in bytes (its share of the memory budget, memory.py), with
        # queue_max_points: whichever is reached first spills the queue to the journal.
        self.queue_max_bytes = queue_max_bytes if queue_max_bytes is not None else 1 << 62
        self.name = spec.name
        self.journal = journal
        self.intake = intake
        self.dead = dead
        self.metrics = metrics
        self.health = health or HealthSpec()
        # What InfluxDB answered for lately (written, refused by reason): the health model's refused share.
        self.recent = RecentOutcomes(self.health.rejection_window, self.health.rejection_min_messages)
        self.before_delete = before_delete or (lambda: None)
        # Per-batch errors (the journal refusing every batch) through the bridge's rate limit.
        self.rate_log = rate_log or RateLimitedLog(5)
        if intake is not None:
            intake.before_delete = self.before_delete
        journal.on_loss = self._journal_loss
        self.writer = InfluxWriter(spec)
        self.writer.cancel = self._cancel_send
        self.delivery = Delivery(self.writer, spec.batch_size)
        self.backoff = Backoff(spec.max_backoff)
        self._queue: deque[Chunk] = deque()
        self._queued = 0
        self._queued_bytes = 0
        # What batches took of the queue's head so far (_take_part): its first `_cut_lines` lines,
        # `_cut` bytes. The head stands for the rest of it (queued, queued_bytes count only that),
        # which `_whole_head` makes a chunk of before anything but _take reads or passes it.
        self._cut = self._cut_lines = 0
        self._cut_simple: bool | None = None  # whether the head's lines are simple (asked once per head)
        self._inflight: Chunk | None = None
        self.batch_wait_max = 0.0  # the longest a live batch's oldest point waited before its request (s)
        self._cond = threading.Condition()
        self._stopping = False
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._last_attempt = time.monotonic()
        self.failing_since: float | None = None  # monotonic time of the first failure since the last success
        self.last_success = time.monotonic()  # of the last write the destination acknowledged (or the start)
        self.last_error = ""
        self._last_kind = ""  # of the last failure (a run of 5xx starts the poison isolation)
        self._poison_at = -float("inf")  # monotonic time poison lines were last found
        # The backlog's head (the journal's oldest request) and its failures in a row: on a live-first
        # link live batches succeed between its attempts, so the destination's run of failures never
        # grows (attack round 10: poison in the backlog was retried 112 times, never isolated, while
        # /healthz said ok). Isolation and the failing time also follow the head.
        self._head: bytes | None = None
        self._head_5xx = 0
        self._head_failing_since: float | None = None
        self._journal_refused_at = -float("inf")  # monotonic time the journal last refused a batch
        self._journal_refused_reason = ""  # ... and why (journal.append's reason)
        self._labels = {"destination": spec.name}
        self.key = Metrics.key(destination=spec.name)
        # What the backend would change silently, refused and counted instead (backend.py); None: nothing.
        self.adapter = Adapter.for_spec(spec)
        self.schedule = spec.schedule
        # Live first: with a schedule or a send budget, fresh points are sent before the journal
        # (the backlog), which drains behind them; otherwise everything goes in order.
        self.live_first = spec.schedule is not None or self.writer.pacer.limited

    # --- the schedule -------------------------------------------------------------------

    def link_open(self, now: float | None = None) -> bool:
        return self.schedule is None or self.schedule.is_open(time.time() if now is None else now)

    def window_age(self, now: float | None = None) -> float | None:
        """Seconds since the current window opened; None without a schedule or while it is
        closed (health judges ages and failures from the window's start)."""
        if self.schedule is None:
            return None
        now = time.time() if now is None else now
        start = self.schedule.window_start(now)
        return None if start is None else now - start

    def next_window(self, now: float | None = None) -> float | None:
        """When the link opens next (epoch seconds) while it is closed; None otherwise."""
        now = time.time() if now is None else now
        if self.schedule is None or self.schedule.is_open(now):
            return None
        return self.schedule.next_open(now)

    def _cancel_send(self) -> bool:
        """A request waiting for the send budget is not sent once the window closed or the stop's
        deadline passed (it is journaled like any paused batch)."""
        return (self._stopping and time.monotonic() > self._deadline) or not self.link_open()

    def _live_due(self) -> bool:
        """Fresh points wait to be sent: a full batch, or the oldest one's flush_interval is over."""
        with self._cond:
            if not self._queue:
                return False
            return (self._queued >= self.spec.batch_size
                    or time.time() - self._queue[0].born >= self.spec.flush_interval)

    # --- producer side (receive thread) ---------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def ensure_alive(self) -> bool:
        """Restarts a writer thread that died (counted); False when it had to."""
        if self.alive or self._stopping or self._thread is None:
            return True
        self.metrics.inc("bridge_sink_restarts_total", 1, **self._labels)
        log.error("writer thread died: restarting it", extra=self._labels)
        self._recover_inflight()
        self.start()
        return False

    def _recover_inflight(self) -> None:
        with self._cond:
            if self._inflight is not None:
                self._whole_head()
                self._queue.appendleft(self._inflight)
                self._queued += self._inflight.count
                self._queued_bytes += len(self._inflight.data)
                self._inflight = None

    def submit(self, chunk: Chunk, counted: bool = False) -> None:
        """Takes the chunk (logged first when there is an intake log); never blocks on the
        network, never raises. `counted`: the caller counted it as accepted already (with the
        rest of its burst's counters, in one update)."""
        if not chunk.count:
            return
        mine = Chunk(chunk.data, chunk.count, -1, chunk.born)  # each destination numbers its own copy
        if self.intake is not None and not self.intake.append(mine):
            # Disk full or gone: the points are still delivered from memory, only no longer
            # protected against a kill -9. Counted (and visible in /healthz), never fatal.
            self.metrics.inc("bridge_intake_errors_total", mine.count, **self._labels)
        if not counted:
            self.metrics.bump([("bridge_accepted_points_total", self.key, mine.count)])
        overflow: list[Chunk] = []
        with self._cond:
            if (self._queued + mine.count > self.spec.queue_max_points
                    or self._queued_bytes + len(mine.data) > self.queue_max_bytes):
                # Memory bound reached: everything queued, then this, goes to disk in order.
                self._whole_head()
                overflow = [*self._queue, mine]
                self._queue.clear()
                self._queued = 0
                self._queued_bytes = 0
            else:
                before = self._queued
                self._queue.append(mine)
                self._queued += mine.count
                self._queued_bytes += len(mine.data)
                if (not before or self._queued >= self.spec.batch_size
                        or before < self.spec.flush_points <= self._queued):
                    self._cond.notify()  # a new flush deadline, a full batch, or one of flush_points
        for queued in overflow:
            self._to_journal(queued)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def pending(self) -> int:
        inflight = self._inflight
        return self._queued + (inflight.count if inflight is not None else 0) + self.journal.points

    def oldest_pending_seconds(self) -> float:
        times = []
        with self._cond:
            if self._inflight is not None:
                times.append(self._inflight.born)
            if self._queue:
                times.append(self._queue[0].born)
        journal = self.journal.oldest_time()
        if journal is not None:
            times.append(journal)
        return max(0.0, time.time() - min(times)) if times else 0.0

    def oldest_live_seconds(self) -> float:
        """Age of the oldest point still in memory (queued or in flight), the journal's backlog left out."""
        with self._cond:
            times = [c.born for c in (self._inflight, self._queue[0] if self._queue else None) if c is not None]
        return max(0.0, time.time() - min(times)) if times else 0.0

    def idle_seconds(self) -> float:
        """Seconds since the destination last acknowledged a write; with a schedule counted from
        the window's start (0 while it is closed)."""
        idle = time.monotonic() - self.last_success
        if self.schedule is not None:
            age = self.window_age()
            return 0.0 if age is None else min(idle, age)
        return idle

    def failing_seconds(self) -> float:
        """Seconds failing (the destination, or the backlog's head while live batches succeed);
        with a schedule counted from the window's start, 0 while it is closed."""
        since = min((t for t in (self.failing_since, self._head_failing_since) if t is not None), default=None)
        if since is None:
            return 0.0
        failing = time.monotonic() - since
        if self.schedule is not None:
            age = self.window_age()
            return 0.0 if age is None else min(failing, age)
        return failing

    def stop(self, timeout: float) -> None:
        """Flushes what it can within timeout; journals the rest."""
        with self._cond:
            self._stopping = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # A request still in flight at the deadline (a destination that accepts and never
                # answers waits up to its `timeout`): cut its connection, so the writer journals
                # the batch now and the stop stays within shutdown_timeout.
                self.writer.abort()
                self._thread.join(5)
        if self._thread is not None and self._thread.is_alive():
            # Stuck (a request beyond the deadline): journal what is still in memory from here.
            log.error("writer thread did not stop in time: journaling its queue", extra=self._labels)
        with self._cond:
            rest = self._take(self._queued)
        if rest is not None:
            self._to_journal(rest)
        if self.intake is not None:
            self.intake.close()

    # --- writer thread ------------------------------------------------------------------

    def _take(self, limit: int) -> Chunk | None:
        """Up to `limit` points from the head of the queue, as one chunk (called with the lock),
        and at most about TAKE_MAX_BYTES of them (a batch is joined, copied and journaled whole:
        50 points of 900 KB are 45 MB per copy): the first chunk always, then whole chunks that
        fit."""
        taken: list[Chunk] = []
        room = limit
        size = 0
        while self._queue and room > 0:
            head = self._queue[0]
            head_bytes, head_count = len(head.data) - self._cut, head.count - self._cut_lines
            if taken and size + head_bytes > TAKE_MAX_BYTES:
                break
            size += head_bytes
            if head_count <= room:
                self._whole_head()
                taken.append(self._queue.popleft())
                self._cut_simple = None
                room -= head_count
            else:
                taken.append(self._take_part(room))
                room = 0
        if not taken:
            return None
        batch = Chunk.join(taken)
        self._queued -= batch.count
        self._queued_bytes -= len(batch.data)
        return batch

    def _take_part(self, count: int) -> Chunk:
        """(Called with the lock.) The next `count` lines of the queue's head, fewer than it holds:
        cut from where the last part ended, the rest left in place (`_cut`). A chunk larger than a
        batch (a burst of `each` lines: 8 MB, 80,000 lines) is copied once, a batch at a time;
        Chunk.split copied the rest with each batch, and asked _simple of it (all of it, twice)."""
        head = self._queue[0]
        if self._cut_simple is None:
            self._cut_simple = simple_lines(head.data)
        if self._cut_simple:
            with contextlib.suppress(ValueError):  # fewer newlines than lines: cannot be (Chunk.split then)
                end = nth_line_end(head.data, count, head.count - self._cut_lines, self._cut)
                seq = head.seq + self._cut_lines if head.seq >= 0 else -1
                part = Chunk(head.data[self._cut:end], count, seq, head.born)
                self._cut, self._cut_lines = end, self._cut_lines + count
                return part
        self._whole_head()
        part, self._queue[0] = self._queue[0].split(count)
        return part

    def _whole_head(self) -> None:
        """(Called with the lock.) The queue's head as the chunk of what is left of it (_take_part)."""
        if self._cut_lines:
            head = self._queue[0]
            seq = head.seq + self._cut_lines if head.seq >= 0 else -1
            self._queue[0] = Chunk(head.data[self._cut:], head.count - self._cut_lines, seq, head.born)
        self._cut = self._cut_lines = 0
        self._cut_simple = None

    def _flush_at(self, now: float) -> float | None:
        """(Called with the lock.) When the queue is due by flush_interval, in monotonic time:
        flush_interval after its oldest point arrived (a point that arrived during a request waits
        no longer than one that arrived while the writer idled), never beyond now + flush_interval
        (the arrival time is wall-clock: a clock step must not hold a batch back); None when empty."""
        if not self._queue:
            return None
        left = self._queue[0].born + self.spec.flush_interval - time.time()
        return now + max(0.0, min(self.spec.flush_interval, left))

    def _sends_now(self) -> bool:
        """(Called with the lock, no request in flight.) Whether a batch taken now would be
        delivered at once (not journaled behind a backlog nor held for a backoff): the condition
        under which a partial batch of flush_points is sent early (_collect)."""
        return self.backoff.remaining() == 0 and (self.live_first or not len(self.journal))

    def _collect(self) -> Chunk | None:
        """Waits for a full batch, the flush interval (from the oldest point's arrival), a batch
        of flush_points that would be sent now, the end of backoff or stop; takes the batch as in
        flight."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._queued >= self.spec.batch_size:
                    break
                if not self.link_open():
                    # Outside the window: nothing is sent (no request, no probe); full batches, and
                    # a partial one once flush_interval is over, go to the journal (_step), so
                    # that what waits in memory when the window opens is fresh: those points go
                    # first (live), and old ones there would hold the live stream behind them.
                    flush_at = self._flush_at(now)
                    if flush_at is not None and now >= flush_at:
                        break
                    until = self.next_window() or time.time()
                    waits = [1.0, until - time.time()] + ([flush_at - now] if flush_at is not None else [])
                    self._cond.wait(max(0.005, min(waits)))
                    continue
                flush_at = self._flush_at(now)
                if flush_at is not None and now >= flush_at:
                    break
                if self._queued >= self.spec.flush_points and self._sends_now():
                    break  # the writer is free: what arrived meanwhile is the next batch
                if len(self.journal) and self.backoff.remaining() == 0:
                    break
                idle_probe = self._last_attempt + self.health.probe_interval
                if not self._queued and not len(self.journal) and now >= idle_probe:
                    break
                waits = [self.spec.flush_interval, max(0.0, idle_probe - now)]
                if flush_at is not None:
                    waits.append(flush_at - now)
                if len(self.journal) or self._queued >= self.spec.flush_points:
                    waits.append(self.backoff.remaining())
                self._cond.wait(max(0.005, min(waits)))
            batch = self._take(self.spec.batch_size)
            self._inflight = batch
            return batch

    def _settle(self, chunk: Chunk) -> None:
        if self.intake is not None:
            self.intake.settle(chunk.seq, chunk.count)

    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    break
            except Exception as exc:  # contained: counted, logged, the loop goes on
                self.metrics.inc("bridge_stage_errors_total", 1, stage=f"sink:{self.name}")
                log.exception("writer thread error (contained)", extra={**self._labels, "error": repr(exc)})
                self._recover_inflight()
                time.sleep(0.5)
        self.writer.close()

    def _step(self) -> bool:
        """One round; False when stopped."""
        batch = self._collect()
        stopping = self._stopping
        late = stopping and time.monotonic() > self._deadline
        if batch is not None:
            refusing = not late and not stopping and time.monotonic() - self._journal_refused_at < JOURNAL_BYPASS_S
            if (refusing and self._journal_refused_reason == "journal_error" and self.backoff.remaining() > 0
                    and self._hold(batch)):
                with self._cond:  # the journal would refuse it: memory holds it until the backoff ends
                    self._cond.wait(min(1.0, max(0.005, self.backoff.remaining())))
                return True
            bypass = refusing and self.backoff.remaining() == 0
            live = (not len(self.journal) or bypass
                    or (self.live_first and self.backoff.remaining() == 0))  # live first: before the backlog
            if late or not live or not self.link_open():
                self._to_journal(batch)
            else:
                self._deliver_batch(batch)
            with self._cond:
                self._inflight = None
        elif not stopping and not len(self.journal) and not self._queued:
            self._probe_idle()
        self._drain_journal()
        if stopping and not self._queued and (not len(self.journal) or time.monotonic() > self._deadline
                                              or not self.link_open()):
            return False  # (outside its window the journal waits for the next run)
        if stopping and self.backoff.remaining() and time.monotonic() + self.backoff.remaining() > self._deadline:
            # No time left to retry: journal whatever is still in memory and stop.
            with self._cond:
                rest = self._take(self._queued)
            if rest is not None:
                self._to_journal(rest)
            return False
        return True

    def _probe_idle(self) -> None:
        """Nothing to write for a while: ask /ping, so /healthz knows the destination's state."""
        self._last_attempt = time.monotonic()
        if self.writer.ping():
            self._succeeded()
        else:
            self._failed("ping", "no answer to /ping")

    def _deliver_batch(self, batch: Chunk) -> None:
        # How long its oldest point waited in memory before its request: the bridge's own share of
        # the latency (the request's is bridge_write_seconds).
        wait = max(0.0, time.time() - batch.born)
        self.metrics.add([("bridge_batch_wait_seconds_sum", wait, self._labels),
                          ("bridge_batch_wait_seconds_count", 1, self._labels)])
        self.batch_wait_max = max(self.batch_wait_max, wait)
        out = self._deliver(batch, (lambda: not self.link_open()) if self.schedule is not None else None)
        if out.retry is not None:
            self._to_journal(out.retry)
        self._settle(batch)

    def _drain_journal(self) -> None:
        pause = None
        if self.live_first:
            # Between two requests of the backlog: stop when the window closed or live points wait.
            def pause() -> bool:
                return not self.link_open() or self._live_due() or (
                    self._stopping and time.monotonic() > self._deadline)
        while len(self.journal) and self.backoff.remaining() == 0 and self.link_open():
            if self._stopping and time.monotonic() > self._deadline:
                return
            if pause is not None and pause():
                return
            oldest = self.journal.oldest()
            if oldest is None:
                return
            segment, chunk = oldest
            # Small segments that follow go in the same request, up to batch_size points (a closed
            # window journals a partial batch per flush_interval: a day of them was a day of
            # requests, one per segment, when the window opened).
            parts = [(segment, chunk)]
            if chunk.count < self.spec.batch_size:
                parts += self.journal.following(segment, self.spec.batch_size - chunk.count,
                                                TAKE_MAX_BYTES - len(chunk.data))
                if len(parts) > 1:
                    chunk = Chunk.join([part for _, part in parts])
            head = chunk.data[:chunk.data.find(b"\n") + 1]
            out = self._deliver(chunk, pause, stuck=head == self._head and self._head_5xx >= POISON_AFTER)
            self._head_outcome(head, out)
            done = chunk.count - (out.retry.count if out.retry is not None else 0)
            if out.retry is None:
                self.before_delete()  # the ledger records the written points before the file goes
                for delivered, _ in parts:
                    self.journal.ack(delivered)
                log.info("replayed journal segment", extra={**self._labels, "segment": segment.path.name,
                                                             "segments": len(parts), "points": chunk.count,
                                                             "journal_points": self.journal.points})
            elif not chunk.data.endswith(out.retry.data):
                # What is left is not the chunk's tail (an isolation or a partial write cut short:
                # lines stored here and there, attack round 10 lost a suspect line counted as
                # written when this was taken for a prefix): it is journaled anew, then the
                # segments go. A journal that refuses it counts it dropped with its reason.
                self._journaled(out.retry, self.journal.append(out.retry))
                self.before_delete()
                for delivered, _ in parts:
                    self.journal.ack(delivered)
                return
            else:
                # What was done is a prefix: the segments it covers whole go, the next records its progress
                deleting = True
                for delivered, part in parts:
                    if done >= part.count:
                        if deleting:
                            self.before_delete()
                            deleting = False
                        self.journal.ack(delivered)
                        done -= part.count
                    else:
                        if done:
                            self.journal.progress(delivered, done)
                        break
                return

    def _journal_loss(self, points: int, reason: str, damaged_records: int) -> None:
        """A segment was set aside while running (unreadable, or no longer verifies): its
        remaining points are dropped, counted before its file is renamed."""
        if damaged_records:
            self.metrics.inc("bridge_journal_damaged_records_total", damaged_records, **self._labels)
        if points:
            self.metrics.inc("bridge_dropped_points_total", points, **self._labels, reason=reason)
        self.before_delete()

    def _hold(self, chunk: Chunk) -> bool:
        """Back to the head of the in-memory queue (the journal refuses it, the destination is
        backing off), when the queue's bounds leave room; False when they do not."""
        with self._cond:
            if (self._queued + chunk.count > self.spec.queue_max_points
                    or self._queued_bytes + len(chunk.data) > self.queue_max_bytes):
                return False
            self._whole_head()
            self._queue.appendleft(chunk)
            self._queued += chunk.count
            self._queued_bytes += len(chunk.data)
            if self._inflight is chunk:
                self._inflight = None
            return True

    def _to_journal(self, chunk: Chunk) -> None:
        original = chunk
        reason = self.journal.append(chunk)
        if reason is not None:
            self._journal_refused_at = time.monotonic()
            self._journal_refused_reason = reason
            if (threading.current_thread() is self._thread and not self._stopping
                    and self.backoff.remaining() == 0 and chunk.count and self.link_open()):
                # The journal refuses it and the destination is not backing off: delivered now
                # (out of order) rather than dropped; only what the destination fails too is.
                # Never outside a scheduled window: the link is not there (nothing is sent).
                out = self._deliver(chunk)
                chunk = out.retry if out.retry is not None else Chunk(b"", 0)
                reason = self.journal.append(chunk) if chunk.count else None
            if (reason == "journal_error" and threading.current_thread() is self._thread and not self._stopping
                    and self._hold(chunk)):
                chunk, reason = Chunk(b"", 0), None  # held in memory (its bound) until the backoff ends
        self._journaled(chunk, reason)
        self._settle(original)

    def _journaled(self, chunk: Chunk, reason: str | None) -> None:
        """Counts a journal write: the points journaled, or dropped with the journal's reason."""
        if reason is None:
            if chunk.count:
                self.metrics.inc("bridge_journaled_points_total", chunk.count, **self._labels)
        else:
            self.metrics.inc("bridge_dropped_points_total", chunk.count, **self._labels, reason=reason)
            # Rate limited (one line per batch was 50,000 lines in one run): the count is exact,
            # the first line and a periodic summary of the suppressed ones are logged.
            self.rate_log.error(reason, "journal write refused: points dropped", key=f"journal:{self.name}:{reason}",
                                logger=log, destination=self.name, dropped=chunk.count,
                                journal_bytes=self.journal.bytes, max_bytes=self.journal.max_bytes,
                                error=self.journal.last_error)

    def _head_outcome(self, head: bytes, out: Outcome) -> None:
        """Follows the backlog's head: failures in a row of the same head, from when. A pause (the
        window closed, live points due) is neither: a head that fails twice in each short window
        reaches the isolation over several windows."""
        if out.kind == "paused" and not out.written and head == self._head:
            return
        if out.retry is None or out.written or head != self._head:
            self._head, self._head_5xx, self._head_failing_since = None, 0, None
        if out.retry is not None and out.kind != "paused" and not out.written:
            if self._head is None:
                self._head, self._head_failing_since = head, time.monotonic()
            if out.kind.startswith("http_5"):
                self._head_5xx += 1

    def _deliver(self, chunk: Chunk, pause: Callable[[], bool] | None = None, stuck: bool = False) -> Outcome:
        """Delivers a chunk and counts what happened; `retry` is what is left to do later.
        `stuck`: the backlog's head failed POISON_AFTER times in a row with 5xx: isolate now."""
        started = time.monotonic()
        self._last_attempt = started
        before = self.writer.requests
        # Isolation after a run of 5xx, and at the first 5xx while poison was found lately (a feed
        # that keeps sending poison would otherwise wait out POISON_AFTER backoffs per batch).
        isolate = ((self.backoff.failures >= POISON_AFTER and self._last_kind.startswith("http_5")) or stuck
                   or time.monotonic() - self._poison_at < POISON_STICKY_S)
        out = self.delivery.deliver(chunk, pause, isolate=isolate)
        if any(reason == "poison" for *_, reason in out.rejected):
            self._poison_at = time.monotonic()
        self.metrics.inc("bridge_write_requests_total", self.writer.requests - before, **self._labels)
        if out.written:
            self.metrics.inc("bridge_written_points_total", out.written, **self._labels)
            self.metrics.inc("bridge_write_seconds_sum", time.monotonic() - started, **self._labels)
            self.metrics.inc("bridge_write_seconds_count", 1, **self._labels)
        for line, status, message, reason in out.rejected:
            self.metrics.inc("bridge_dropped_points_total", 1, **self._labels, reason=reason)
            self._dead_letter(line=line.decode("utf-8", "replace"), status=status, error=message[:2000],
                              reason=reason)
        refused: dict[str, int] = {}
        examples: dict[str, str] = {}
        for _line, _status, message, reason in out.rejected:
            refused[reason] = refused.get(reason, 0) + 1
            examples[reason] = message
        if out.unidentified:
            reason = refusal_reason(out.unidentified_message)
            refused[reason] = refused.get(reason, 0) + out.unidentified
            examples[reason] = out.unidentified_message
            self.metrics.inc("bridge_dropped_points_total", out.unidentified, **self._labels, reason=reason)
            self._dead_letter(unidentified_points=out.unidentified, error=out.unidentified_message[:2000],
                              reason=reason)
        self.recent.add(out.written + sum(refused.values()), refused, {r: m[:300] for r, m in examples.items()})
        if out.rejected:
            log.warning("points refused by InfluxDB, dead-lettered",
                        extra={**self._labels, "points": len(out.rejected), "error": out.rejected[0][2][:300]})
        if out.retry is not None and out.kind != "paused":
            self._failed(out.kind, out.error)
        elif out.retry is None or out.written:
            self._succeeded()
        return out

    def _dead_letter(self, **record: object) -> None:
        if self.dead.write(destination=self.name, **record):
            self.metrics.inc("bridge_dead_letters_total", 1, file=self.dead.path.name)
        else:
            self.metrics.inc("bridge_dead_letter_errors_total", 1, file=self.dead.path.name)

    def _succeeded(self) -> None:
        if self.backoff.failures:
            log.info("destination reachable again", extra=self._labels)
        self.backoff.reset()
        self.failing_since = None
        self.last_success = time.monotonic()
        self.last_error = ""

    def _failed(self, kind: str, message: str) -> None:
        self._last_kind = kind
        self.metrics.inc("bridge_write_errors_total", 1, **self._labels, kind=kind)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        delay = self.backoff.fail()
        self.last_error = message
        if self.backoff.failures in (1, 2) or self.backoff.failures % 20 == 0:
            log.warning("write failed, journaling and retrying", extra={
                **self._labels, "error": message[:300], "retry_in_s": round(delay, 2),
                "failures": self.backoff.failures})
