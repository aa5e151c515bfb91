"""Round 8 of attacks on the bridge's promise: `each` (one message, many points) and memory.

A receive burst is bounded in bytes (BURST_BYTES) on its way in, but with `each` a small message
makes many points, each carrying the record's `$` values: the points a burst (or one message)
makes were bounded by nothing but `max_points` rows.
"""

from __future__ import annotations

import msgpack
import zmq
from harness import RecordingDestination

from station_bridge.config import parse
from station_bridge.journal import DeadLetters
from station_bridge.mapping import Uniqueness
from station_bridge.metrics import Metrics
from station_bridge.pipeline import Pipeline, RateLimitedLog, Subscription
from station_bridge.sources import BURST_BYTES

T0_MS = 1_764_000_000_000


class BytesDestination(RecordingDestination):
    """Also the bytes of every chunk handed over."""

    def __init__(self, name: str = "d") -> None:
        super().__init__(name)
        self.sizes: list[int] = []

    def submit(self, chunk, counted: bool) -> None:
        super().submit(chunk, counted)
        self.sizes.append(len(chunk.data))


def each_config(max_points: int = 10_000, **mapping: object) -> object:
    return parse({"subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:9"], "framing": "msgpack",
                                     "mapping": {"measurement": "m", "each": "v[*]",
                                                 "fields": {"x": {"path": ".", "type": "integer"},
                                                            "note": {"path": "$.n", "type": "string"}},
                                                 "time": {"path": "$.t", "format": "epoch_ms"},
                                                 "max_points": max_points, **mapping}}],
                  "destinations": [{"name": "d", "url": "http://127.0.0.1:9", "database": "x"}]}, "t.yml")


def test_the_python_path_hands_a_burst_over_every_burst_bytes_of_points(tmp_path, zmq_context: zmq.Context):
    """fast_path: off (or any each subscription on the Python path): 300 messages of 10 KB, 10,000
    rows each, made 3 million lines held at once for one chunk, 2.7 GB RSS (the compiled path,
    which ends a batch at BURST_BYTES of lines: 231 MB). Now each part of a burst is handed over
    (its counters with it) once its lines hold BURST_BYTES."""
    config = each_config()
    sink = BytesDestination()
    metrics = Metrics()
    pipeline = Pipeline([sink], metrics, None, DeadLetters(tmp_path / "dead.jsonl"), 1 << 20,  # type: ignore[list-item]
                        RateLimitedLog(5))
    sub = Subscription(config.subscriptions[0], config, zmq_context, Uniqueness(128, 1000))
    try:
        note = "y" * 2000
        message = [b"t", msgpack.packb({"n": note, "t": T0_MS, "v": list(range(1000))})]  # ~2 MB of lines
        pipeline.receive(sub, [message] * 12)  # one burst of 12 x 7 KB: 24 MB of lines
        line = 2000 + 60  # a point: the note, x, the time
        assert sum(sink.chunks) == 12_000
        assert max(sink.sizes) <= BURST_BYTES + 1000 * line, sink.sizes  # one message past the bound at most
        assert len(sink.sizes) >= 2
        assert metrics.get("bridge_received_messages_total", subscription="s") == 12
        assert metrics.get("bridge_mapped_messages_total", subscription="s") == 12
        assert metrics.get("bridge_mapped_points_total", subscription="s") == 12_000
        assert metrics.get("bridge_accepted_points_total", destination="d") == 12_000
    finally:
        sub.source.close()
