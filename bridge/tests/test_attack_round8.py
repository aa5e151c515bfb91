"""Round 8 of attacks on the bridge's promise: `each` (one message, many points) and memory.

A receive burst is bounded in bytes (BURST_BYTES) on its way in, but with `each` a small message
makes many points, each carrying the record's `$` values: the points a burst (or one message)
makes were bounded by nothing but `max_points` rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest
import zmq
from compiled import require_compiled_path
from harness import BridgeProcess, RecordingDestination, publisher, quiet_ledger, subscribed, wait_for
from servers import free_port

from station_bridge.config import parse
from station_bridge.journal import DeadLetters
from station_bridge.mapping import Uniqueness
from station_bridge.metrics import Metrics, total
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


def test_a_message_whose_points_pass_max_bytes_is_refused_whole_before_any_claim():
    """A 40 KB message repeating a 30 KB `$` string in each of 10,000 rows made 300 MB of lines
    (three of them: 2 GB RSS on the compiled path). `mapping.max_bytes` (8 MiB by default) bounds
    what one message's points hold: beyond it the message is refused whole (too_many_points),
    counted while the rows are built, before any time is claimed."""
    from station_bridge.mapping import MapError, Mapper

    config = each_config(max_bytes="4KiB")
    unique = Uniqueness(128, 1000)
    mapper = Mapper(config.subscriptions[0], None, unique)
    fits = mapper.lines("t", {"n": "y" * 1000, "t": T0_MS, "v": [1, 2, 3]})
    assert len(fits) == 3 and sum(map(len, fits)) < 4096
    try:
        mapper.lines("t", {"n": "y" * 1000, "t": T0_MS, "v": [1, 2, 3, 4]})
    except MapError as exc:
        assert exc.reason == "too_many_points" and "mapping.max_bytes" in str(exc)
    else:
        raise AssertionError("a message of more than max_bytes of points was mapped")
    # nothing of the refused message was claimed: the next one at that time takes t+3
    assert mapper.lines("t", {"n": "", "t": T0_MS, "v": [9]})[0].endswith(f" {T0_MS * 10**6 + 3}")
    assert each_config().subscriptions[0].mapping.max_bytes == 8 << 20


EACH_COUNTERS = ("bridge_received_messages_total", "bridge_mapped_messages_total", "bridge_rejected_messages_total",
                 "bridge_mapped_points_total", "bridge_accepted_points_total", "bridge_written_points_total",
                 "bridge_dropped_points_total", "bridge_dead_letters_total", "bridge_uniqueness_nudged_total")


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def boundary_messages() -> list[dict]:
    """Messages whose points hold about 4 KiB (max_bytes of the `edge` subscription), with
    multi-byte characters and characters the line protocol escapes."""
    out = []
    for rows in (1, 2, 3, 5, 8):
        for size in range(0, 4200, 59):
            if rows * (size + 60) > 9000:
                continue
            k = len(out)
            out.append({"s": "é" * (1 + k % 3), "n": ('ü"\\' * size)[:size], "t": T0_MS + k,
                        "v": [k + 0.1 * i for i in range(rows)]})
    return out


@pytest.mark.parametrize("framing", ["msgpack", "text_json"])
def test_max_bytes_bounds_memory_and_both_paths_refuse_the_same_messages(tmp_path, influxd, zmq_context, framing):
    """Both paths, side by side on one stream: three 40 KB messages that would each make 300 MB of
    points are refused (too_many_points) without the bridge growing (before: 2 GB RSS compiled,
    more on the Python path); messages around a 4 KiB max_bytes are mapped or refused alike (the
    compiled path hands back what its buffers hold beyond it; Python decides); every counter and
    stored point agrees."""
    require_compiled_path()
    endpoints = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("big", "edge")}
    mapping = {"measurement": "m", "each": "v[<i>]", "tags": {"s": "$.s"}, "optional_tags": ["s"],
               "fields": {"x": {"path": ".", "type": "float"}, "note": {"path": "$.n", "type": "string"}},
               "time": {"path": "$.t", "format": "epoch_ms"}}
    subs = [{"name": name, "endpoints": [endpoints[name]], "topics": ["m"], "framing": framing,
             "max_frame_bytes": 1 << 20,
             "mapping": {**mapping, "measurement": name, **({"max_bytes": "4KiB"} if name == "edge" else {})}}
            for name in ("big", "edge")]
    bridges = {}
    for mode in ("auto", "off"):
        db = f"r8_{mode}_{free_port()}"
        influxd.query(f'CREATE DATABASE "{db}"')
        (tmp_path / mode).mkdir()
        bridges[mode] = (BridgeProcess(tmp_path / mode, influxd, db, "", subscription=subs[0],
                                       subscriptions_extra=subs[1:], fast_path=mode,
                                       destination={"batch_size": 5000, "flush_interval": "50ms"}), db)
    pubs = {name: publisher(zmq_context, endpoint) for name, endpoint in endpoints.items()}
    try:
        for bridge, _ in bridges.values():
            bridge.start()
        for pub in pubs.values():
            subscribed(pub, subscribers=2)

        def frames(doc: dict) -> list[bytes]:
            if framing == "msgpack":
                return [b"m", msgpack.packb(doc)]
            return [b"m " + json.dumps(doc, ensure_ascii=False).encode()]

        huge = {"s": "a", "n": "y" * 30_000, "t": T0_MS, "v": [0] * 10_000}  # 300 MB of points
        big = [huge if k % 8 == 3 else {"s": "a", "n": "short", "t": T0_MS + k, "v": list(range(50))}
               for k in range(24)]
        for doc in big:
            pubs["big"].send_multipart(frames(doc))
        edge = boundary_messages()
        for doc in edge:
            pubs["edge"].send_multipart(frames(doc))
        sent = len(big) + len(edge)
        for bridge, _ in bridges.values():
            wait_for(lambda b=bridge: total(b.samples(), "bridge_received_messages_total") == sent, 60,
                     f"{sent} messages received")
        samples = {mode: quiet_ledger(bridge, subscriptions=("big", "edge"), timeout=90)
                   for mode, (bridge, _) in bridges.items()}
        counters = {mode: {(n, labels): v for (n, labels), v in s.items() if n in EACH_COUNTERS and v}
                    for mode, s in samples.items()}
        assert counters["auto"] == counters["off"]
        assert counters["auto"][("bridge_rejected_messages_total",
                                 (("reason", "too_many_points"), ("subscription", "big")))] == 3
        refused_edge = counters["auto"].get(("bridge_rejected_messages_total",
                                             (("reason", "too_many_points"), ("subscription", "edge"))), 0)
        assert 0 < refused_edge < len(edge)
        for mode, (bridge, _) in bridges.items():
            assert peak_rss_bytes(bridge.process.pid) < 400 << 20, mode  # before: 2 GB compiled
        stored = {}
        for mode, (_, db) in bridges.items():
            rows = influxd.query('SELECT * FROM "big"', db=db) + influxd.query('SELECT * FROM "edge"', db=db)
            stored[mode] = sorted(tuple(sorted((k, repr(v)) for k, v in row.items())) for row in rows)
        assert len(stored["auto"]) == 21 * 50 + samples["auto"][("bridge_mapped_points_total",
                                                                 (("subscription", "edge"),))]
        assert stored["auto"] == stored["off"]
        assert bridges["auto"][0].value("bridge_fast_path_messages", subscription="edge") > 0
    finally:
        for pub in pubs.values():
            pub.close(linger=0)
        for bridge, _ in bridges.values():
            if bridge.alive:
                assert bridge.stop() == 0


def test_healthz_judges_an_each_feeds_message_sizes_as_received_on_both_paths(tmp_path, influxd, zmq_context):
    """The compiled path told the health model the size of a burst's lines, not of its messages:
    an order book of 2.8 KB messages (1,000 levels, 256 KB of lines each) declared with
    `message_bytes: 16KiB` was unhealthy on /healthz ("messages of up to 255780 bytes ... 3939 MiB")
    while the Python path said 200, and its bursts shrank to 32 messages. Both now watch what was
    received: small messages are fine on both; messages really larger than declared are named by both."""
    require_compiled_path()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = {"name": "book", "endpoints": [endpoint], "topics": ["m"], "framing": "msgpack", "message_bytes": "16KiB",
           "mapping": {"measurement": "m", "each": "v[<i>]", "tags": {"venue": "$.venue"},
                       "fields": {"x": {"path": ".", "type": "integer"}},
                       "time": {"path": "$.t", "format": "epoch_ms"}}}
    bridges = {}
    for mode in ("auto", "off"):
        (tmp_path / mode).mkdir()
        db = f"r8h_{mode}_{free_port()}"
        influxd.query(f'CREATE DATABASE "{db}"')
        bridges[mode] = BridgeProcess(tmp_path / mode, influxd, db, "", subscription=sub, fast_path=mode,
                                      destination={"batch_size": 5000, "flush_interval": "50ms"})
    pub = publisher(zmq_context, endpoint)
    try:
        for bridge in bridges.values():
            bridge.start()
        subscribed(pub, subscribers=2)
        for k in range(50):
            pub.send_multipart([b"m", msgpack.packb({"venue": "v" * 200, "t": T0_MS + k, "v": list(range(1000))})])
        for mode, bridge in bridges.items():
            wait_for(lambda b=bridge: total(b.samples(), "bridge_received_messages_total") == 50, 30, "received")
            quiet_ledger(bridge, subscriptions=("book",))
            status, body = bridge.health()
            assert status == 200 and body["subscriptions"]["book"]["ok"], (mode, body.get("problems"))
        big = msgpack.packb({"venue": "v", "t": T0_MS + 100, "v": [0], "pad": "p" * 100_000})
        for _ in range(3):
            pub.send_multipart([b"m", big])
        for mode, bridge in bridges.items():
            wait_for(lambda b=bridge: total(b.samples(), "bridge_received_messages_total") == 53, 30, "received")
            status, body = bridge.health()
            reasons = [p["reason"] for p in body["problems"] if p["part"] == "subscription"]
            assert status == 503 and any(r.startswith("messages of up to 1000") for r in reasons), (mode, reasons)
    finally:
        pub.close(linger=0)
        for bridge in bridges.values():
            if bridge.alive:
                assert bridge.stop() == 0


def test_a_source_time_repeated_beyond_the_window_continues_its_run_after_a_restart():
    """The saved window held times only: a source time repeated more than `window` times kept the
    run's newest `window` times, so after a restart that time fell below them, was given back
    unchecked and overwrote the run's first points. The runs are saved with the times now (and
    files of the older format are still read)."""
    import struct
    import zlib

    t = 1_764_000_000 * 10**9
    unique = Uniqueness(window=4, max_series=8)
    given = [unique.claim("m,s=a", t) for _ in range(10)]
    assert given == [t + k for k in range(10)]
    again = Uniqueness(window=4, max_series=8)
    assert again.restore(unique.dump()) == 1
    assert again.claim("m,s=a", t) == t + 10 and again.unchecked == 0  # before: t, unchecked (overwritten)
    assert again.claim("m,s=a", t + 3) not in given
    # the older format (times only) is still read
    body = Uniqueness.MAGIC_V1 + struct.pack("<II", 5, 2) + b"m,s=b" + struct.pack("<qq", t, t + 1)
    old = Uniqueness(window=4, max_series=8)
    assert old.restore(body + struct.pack("<I", zlib.crc32(body))) == 1
    assert old.claim("m,s=b", t + 1) == t + 2


def test_an_each_feed_repeating_one_time_stores_every_point_across_restarts(tmp_path, influxd, database,
                                                                             zmq_context):
    """100 messages of 3 rows, one series and one time, three times with a restart between (SIGTERM):
    900 points in InfluxDB (before: 300, the later rounds overwriting the first)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = {"name": "a", "endpoints": [endpoint], "topics": ["a"], "framing": "msgpack",
           "mapping": {"measurement": "u", "each": "lv[*]", "tags": {"sym": "$.s"},
                       "fields": {"p": {"path": ".", "type": "float"}}, "time": {"path": "$.t", "format": "epoch_ms"}}}
    pub = publisher(zmq_context, endpoint)
    seq = 0
    for _round in range(3):
        bridge = BridgeProcess(tmp_path, influxd, database, "", subscription=sub,
                               destination={"flush_interval": "100ms"}).start()
        subscribed(pub)
        for _ in range(100):
            pub.send_multipart([b"a", msgpack.packb({"s": "X", "t": T0_MS, "lv": [seq + 0.1, seq + 0.2, seq + 0.3]})])
            seq += 1
        quiet_ledger(bridge, subscriptions=("a",))
        wait_for(lambda b=bridge: b.value("bridge_uniqueness_nudged_total") >= 299, 10, "claimed")
        assert bridge.value("bridge_uniqueness_unchecked_total") == 0
        assert bridge.stop() == 0
        while pub.poll(100):  # the unsubscription
            pub.recv()
    rows = influxd.query('SELECT count(p) FROM "u"', db=database)
    assert rows[0]["count"] == 900
