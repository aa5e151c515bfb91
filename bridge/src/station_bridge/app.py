"""The running bridge: sources -> decoders -> mapping -> (binning) -> sinks and cache."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import zmq

from .binning import TimeWeightedBinner
from .cache import LatestCache
from .config import Config, SubscriptionSpec
from .decoders import DecodeError, build
from .journal import Chunk, DeadLetters, Intake, Journal
from .lineproto import LineError, escape_key, format_line
from .mapping import MapError, Mapper, Point
from .metrics import Metrics, serve
from .sinks import InfluxSink

log = logging.getLogger("station_bridge")

# Messages taken from one socket before the others get a turn.
_DRAIN = 2000


_NOBLOCK = int(zmq.NOBLOCK)


def _drain(socket: zmq.Socket) -> list[list[bytes]]:
    """Up to _DRAIN multipart messages without blocking.

    Frames with their `more` flag instead of recv_multipart: pyzmq's RCVMORE lookup converts
    the option to an enum on every frame, which halved the receive rate in profiles. The
    common two-frame message [topic, payload] takes the shortest path.
    """
    messages = []
    recv = socket.recv
    try:
        for _ in range(_DRAIN):
            first = recv(_NOBLOCK, copy=False)
            if not first.more:
                messages.append([first.bytes])
                continue
            frame = recv(_NOBLOCK, copy=False)
            frames = [first.bytes, frame.bytes]
            while frame.more:
                frame = recv(_NOBLOCK, copy=False)
                frames.append(frame.bytes)
            messages.append(frames)
    except zmq.Again:
        pass
    return messages


class RateLimitedLog:
    """At most `per_second` log lines per reason; the rest are only counted."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._windows: dict[str, tuple[float, int]] = {}

    def warn(self, reason: str, message: str, **extra: object) -> None:
        now = time.monotonic()
        start, count = self._windows.get(reason, (now, 0))
        if now - start >= 1.0:
            start, count = now, 0
        if count < self.per_second:
            log.warning(message, extra={"reason": reason, **extra})
        self._windows[reason] = (start, count + 1)


class Subscription:
    def __init__(self, spec: SubscriptionSpec, config: Config, socket: zmq.Socket) -> None:
        self.spec = spec
        self.name = spec.name
        self.socket = socket
        self.decode = build(spec)
        self.mapper = Mapper(spec, config.station)
        self.binner = TimeWeightedBinner(spec.binning.interval_ns, spec.binning.fields) if spec.binning else None
        self.received = 0
        self.rejected: dict[str, int] = defaultdict(int)


class Bridge:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.context = zmq.Context.instance()
        self.dead_input = DeadLetters(config.dead_letter_dir / "input.jsonl")
        self.sinks = [
            InfluxSink(d, Journal(config.journal_dir / d.name, config.journal_max_bytes),
                       DeadLetters(config.dead_letter_dir / f"{d.name}.jsonl"), self.metrics,
                       Intake(config.journal_dir / d.name) if config.journal_write_ahead else None)
            for d in config.destinations
        ]
        self.cache = LatestCache(config.cache, self.metrics) if config.cache else None
        self.subscriptions = [Subscription(s, config, self._open(s)) for s in config.subscriptions]
        self.rate_log = RateLimitedLog(config.log_rate_per_s)
        self._stop = threading.Event()
        self.http = None
        self.metrics.gauge("bridge_queue_points", lambda: {(("destination", s.name),): s.queued for s in self.sinks})
        self.metrics.gauge("bridge_journal_bytes",
                           lambda: {(("destination", s.name),): s.journal.bytes for s in self.sinks})
        self.metrics.gauge("bridge_intake_bytes", lambda: {(("destination", s.name),): s.intake.bytes
                                                          for s in self.sinks if s.intake is not None})
        self.metrics.gauge("bridge_journal_points",
                           lambda: {(("destination", s.name),): s.journal.points for s in self.sinks})

    def _open(self, spec: SubscriptionSpec) -> zmq.Socket:
        from .sources import open_subscription
        return open_subscription(self.context, spec)

    def health(self) -> dict:
        return {
            "ok": not self._stop.is_set(),
            "destinations": {s.name: {"queue": s.queued, "journal_points": s.journal.points,
                                      "journal_bytes": s.journal.bytes, "failing": bool(s.backoff.failures),
                                      "last_error": s.last_error} for s in self.sinks},
        }

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def _reject(self, sub: Subscription, reason: str, detail: str, frames: list[bytes]) -> None:
        sub.rejected[reason] += 1
        self.metrics.inc("bridge_rejected_messages_total", 1, subscription=sub.name, reason=reason)
        self.rate_log.warn(reason, "message rejected", subscription=sub.name, detail=detail[:300])
        self.dead_input.write(subscription=sub.name, reason=reason, detail=detail[:500],
                              frames=[f[:256].hex() for f in frames])

    def process(self, sub: Subscription, messages: list[list[bytes]]) -> list[str]:
        """Decodes and maps a burst of messages; returns their lines. Never raises on bad input."""
        lines: list[str] = []
        decode, mapper = sub.decode, sub.mapper
        points: list[Point] = []
        # The cache needs only the newest point per series: lines for all, Points for those few.
        newest: dict[str, tuple[int, str, dict]] = {}
        binned = sub.binner is not None
        keep_raw = not binned or sub.spec.binning.keep_raw  # type: ignore[union-attr]
        cached = self.cache is not None and not binned and sub.spec.cache
        for frames in messages:
            try:
                topic, record = decode(frames)
                if binned:
                    point = mapper.point(topic, record)
                    points.append(point)
                    if keep_raw:
                        lines.append(point.line)
                elif cached:
                    line, series, ts = mapper.keyed_line(topic, record)
                    lines.append(line)
                    newest[series] = (ts, topic, record)
                else:
                    lines.append(mapper.line(topic, record))
            except (DecodeError, MapError, LineError) as exc:
                self._reject(sub, exc.reason, str(exc), frames)
            except Exception as exc:  # hostile input must never stop the bridge
                self._reject(sub, "unexpected", f"{type(exc).__name__}: {exc}", frames)
        sub.received += len(messages)
        self.metrics.inc("bridge_received_messages_total", len(messages), subscription=sub.name)
        if binned and points:
            lines.extend(self._bin(sub, points))
        if self.cache is not None and sub.spec.cache:
            if newest:
                points = [mapper.cached_point(topic, record, series, ts)
                          for series, (ts, topic, record) in newest.items()]
            if points:
                self.cache.update(points)
        return lines

    def _bin(self, sub: Subscription, points: list[Point]) -> list[str]:
        spec = sub.spec.binning
        assert spec is not None and sub.binner is not None
        out = []
        for point in points:
            try:
                values = {name: float(point.fields[name]) for name in spec.fields}  # type: ignore[arg-type]
            except (KeyError, TypeError, ValueError):
                continue
            for start, means in sub.binner.add(point.series, point.time_ns, values):
                measurement = spec.measurement or point.measurement + "_binned"
                tags = sorted((escape_key(k), escape_key(v, "tag value")) for k, v in point.tags.items())
                fields = [(escape_key(k, "field"), repr(v)) for k, v in means.items()]
                out.append(format_line(measurement, tags, fields, start))
        return out

    def self_report(self, now_ns: int) -> list[str]:
        """The bridge's own counters as one point per destination (self_metrics)."""
        spec = self.config.self_metrics
        assert spec is not None
        m = self.metrics
        received = int(m.total("bridge_received_messages_total"))
        rejected = int(m.total("bridge_rejected_messages_total"))
        base = [("instance", spec.instance)] + ([("station", self.config.station)] if self.config.station else [])
        lines = []
        for sink in self.sinks:
            tags = sorted([(escape_key(k), escape_key(v, "tag value")) for k, v in [*base, ("destination", sink.name)]])
            dropped = sum(v for labels, v in m.counters["bridge_dropped_points_total"].items()
                          if ("destination", sink.name) in labels)
            fields = [("received", f"{received}i"), ("rejected", f"{rejected}i"),
                      ("written", f"{int(m.get('bridge_written_points_total', destination=sink.name))}i"),
                      ("dropped", f"{int(dropped)}i"), ("journal_bytes", f"{sink.journal.bytes}i"),
                      ("queue_depth", f"{sink.queued}i")]
            lines.append(format_line(spec.measurement, tags, fields, now_ns))
        return lines

    def dispatch(self, lines: list[str]) -> None:
        if lines:
            chunk = Chunk.of(lines)  # encoded once for every destination
            for sink in self.sinks:
                sink.submit(chunk)

    def run(self, ready: Callable[[], None] | None = None) -> int:
        for sink in self.sinks:
            sink.start()
        if self.config.http_listen:
            self.http = serve(self.metrics, self.config.http_listen, self.health)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        poller = zmq.Poller()
        by_socket = {}
        for sub in self.subscriptions:
            poller.register(sub.socket, zmq.POLLIN)
            by_socket[sub.socket] = sub
        log.info("bridge running", extra={"subscriptions": [s.name for s in self.subscriptions],
                                          "destinations": [s.name for s in self.sinks]})
        if ready:
            ready()
        report_every = self.config.self_metrics.interval_ns / 1e9 if self.config.self_metrics else None
        next_report = time.monotonic() + (report_every or 0)
        while not self._stop.is_set():
            for socket, _ in poller.poll(200):
                messages = _drain(socket)
                if messages:
                    self.dispatch(self.process(by_socket[socket], messages))
            if report_every and time.monotonic() >= next_report:
                next_report += report_every
                self.dispatch(self.self_report(time.time_ns()))
        return self.shutdown()

    def shutdown(self) -> int:
        log.info("stopping: flushing destinations", extra={"timeout_s": self.config.shutdown_timeout})
        for sub in self.subscriptions:
            sub.socket.close(linger=0)
        threads = [threading.Thread(target=s.stop, args=(self.config.shutdown_timeout,)) for s in self.sinks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.http is not None:
            self.http.shutdown()
        log.info("stopped", extra={d.name: {"journal_points": d.journal.points} for d in self.sinks})
        return 0
