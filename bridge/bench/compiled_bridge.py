"""A prototype of the bridge with the compiled path wired in, for the benchmark only (phase 1).

    python bridge/bench/compiled_bridge.py run --config FILE

Runs the installed `station-bridge` with its receive step replaced, without editing the bridge:
each subscription the compiled path covers receives a burst through
`station_bridge.fastpath.Accelerator` (libzmq -> C -> one bytes chunk), every message it hands
back goes through the bridge's own decoder, mapper and rejection, and the burst is handed to the
destinations as one chunk (one intake-log write) and the newest point per series to the cache.
Everything else (sinks, journal, intake log, metrics, cache client, shutdown) is the bridge's.
It fits the bridge's pipeline as of phase 1 (app._drain, Bridge.process/dispatch); on another
version it exits with status 3 and says why, and the benchmark leaves its row out.
"""

from __future__ import annotations

import sys

import named_threads  # noqa: F401 - names the threads for the benchmark's per-thread CPU


class _Burst(list):
    """What the patched _drain returns: looks like a non-empty message list to the loop."""

    def __init__(self, burst, newest) -> None:
        super().__init__([None])
        self.burst = burst
        self.newest = newest


def install() -> str:
    from station_bridge import app, fastpath
    from station_bridge.cache import LatestCache
    from station_bridge.decoders import DecodeError
    from station_bridge.journal import Chunk
    from station_bridge.lineproto import LineError
    from station_bridge.mapping import MapError, Point
    if not (hasattr(app, "_drain") and hasattr(app.Bridge, "dispatch") and hasattr(app.Bridge, "process")):
        return "this bridge's pipeline is not the one the prototype patches"
    why = fastpath.unavailable()
    if why:
        return why
    registry: dict[object, tuple] = {}
    original_init, original_drain = app.Bridge.__init__, app._drain
    original_process, original_dispatch = app.Bridge.process, app.Bridge.dispatch

    def init(self, *args, **kwargs) -> None:
        original_init(self, *args, **kwargs)
        for sub in self.subscriptions:
            if sub.binner is not None:
                continue
            accelerator, _ = fastpath.Accelerator.for_mapper(sub.mapper, sub.spec)
            if accelerator is not None:
                registry[sub.socket] = (self, sub, accelerator)

    def drain(socket):
        entry = registry.get(socket)
        if entry is None:
            return original_drain(socket)
        bridge, sub, accelerator = entry
        newest: dict | None = {} if bridge.cache is not None else None
        names = [key for key, _, _ in sub.mapper._fields]

        def slow(frames, error):
            if error is not None:
                bridge._reject(sub, getattr(error, "reason", "unexpected"), str(error), frames)
                return None
            try:
                topic, record = sub.decode(frames)
                line, series, ts = sub.mapper.keyed_line(topic, record)
                data = line.encode("utf-8")
            except (DecodeError, MapError, LineError) as exc:
                bridge._reject(sub, exc.reason, str(exc), frames)
                return None
            except UnicodeEncodeError:
                bridge._reject(sub, "invalid_utf8", "line holds a lone surrogate", frames)
                return None
            except Exception as exc:  # hostile input must never stop the bridge
                bridge._reject(sub, "unexpected", f"{type(exc).__name__}: {exc}", frames)
                return None
            if newest is not None:
                current = newest.get(series)
                if current is None or ts >= current[0]:
                    newest[series] = (ts, {k: record[k] for k in names if record.get(k) is not None})
            return data

        burst = accelerator.receive(socket, app._DRAIN, slow, newest)
        if not burst.received:
            return []
        return _Burst(burst, newest)

    def process(self, sub, messages):
        if not isinstance(messages, _Burst):
            return original_process(self, sub, messages)
        burst = messages.burst
        sub.received += burst.received
        self.metrics.inc("bridge_received_messages_total", burst.received, subscription=sub.name)
        if self.cache is not None and messages.newest:
            measurement = sub.mapper._fixed
            self.cache.update([Point(measurement, series, {}, values, ts, "")
                               for series, (ts, values) in messages.newest.items()])
        return messages

    def dispatch(self, lines):
        if not isinstance(lines, _Burst):
            return original_dispatch(self, lines)
        burst = lines.burst
        if burst.lines:
            chunk = Chunk(burst.data, burst.lines)
            for sink in self.sinks:
                sink.submit(chunk)
        return None

    app.Bridge.__init__ = init
    app._drain = drain
    app.Bridge.process = process
    app.Bridge.dispatch = dispatch
    # The cache keys by the series key itself (as the guarantees work does); the same key here.
    LatestCache.key = lambda self, point: f"{self.spec.key_prefix}:{point.series}"
    return ""


if __name__ == "__main__":
    why = install()
    if why:
        print(f"compiled bridge prototype not available: {why}", file=sys.stderr)
        sys.exit(3)
    from station_bridge.cli import main
    sys.exit(main(sys.argv[1:]))
