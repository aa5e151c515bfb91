"""Round 9 of attacks on the bridge's promise: today's changes (the uniqueness claim in C, float
and integer formatting in C, the intake log's CRC and writev, the cache's coalescing, Chunk.split
by counting newlines, scheduled links)."""

from __future__ import annotations

import msgpack
import pytest
import zmq
from harness import BridgeProcess, publisher, quiet_ledger, subscribed, wait_for
from servers import Influxd

from station_bridge.journal.chunk import Chunk
from station_bridge.lineproto import LineError, count_lines
from station_bridge.mapping import MapError, Mapper
from station_bridge.metrics import total, value

T0 = 1_764_000_000

NOTE_MAPPING = {"measurement": "ticks", "tags": ["instrument", "venue"], "optional_tags": ["venue"],
                "fields": {"bid": "float", "note": "string"},
                "time": {"field": "timestamp", "format": "epoch_s"}}

# A tag value holding a backslash before a character the tag escape adds a backslash to (a space,
# a comma, an equals sign): the line influxd reads ends somewhere else than the one the bridge wrote
# once a later string field holds a newline (influxd's line scanner pairs backslashes left to right)
HOSTILE_VENUES = ["\\ \\,", "a\\ b", "x\\,y", "\\=", "\\ "]


def _note_lines(venue: str) -> str | None:
    from test_stages import sub  # the configuration builder of the unit tests
    mapper = Mapper(sub(mapping={**NOTE_MAPPING, "derived_tags": [], "drop": []}), station="s")
    try:
        line, _, _ = mapper.keyed_line("t", {"instrument": "I", "venue": venue, "note": "one\ntwo",
                                             "bid": 1.0, "timestamp": T0})
    except (MapError, LineError):
        return None
    return line


def test_a_line_the_mapper_writes_is_one_line_for_the_scanner_that_splits_batches():
    """Every line the mapper writes is read back as one line by the rule influxd and Chunk.split
    use to find line ends; a value that cannot be is refused, never written as two lines."""
    assert _note_lines("\\ \\,") is None  # refused (it was written, and read back as two lines)
    assert _note_lines("x\\,y") is not None  # a backslash before a comma alone is harmless
    for venue in HOSTILE_VENUES:
        line = _note_lines(venue)
        if line is None:
            continue
        data = line.encode() + b"\n"
        assert count_lines(data) == 1, (venue, line)
        assert Chunk(data, 1).lines() == [line.encode()]


@pytest.mark.parametrize("fast_path", ["off", "auto"])
def test_a_hostile_tag_with_a_newline_in_a_string_field_is_stored_or_refused_never_lost(
        tmp_path, influxd: Influxd, database: str, endpoint: str, zmq_context: zmq.Context, fast_path: str):
    """Before: `\\ \\,` as a tag with "one\ntwo" in a string field was accepted; influxd read its
    line as two unparseable ones (400) and the ledger never closed: accepted 30 != written 29 +
    dropped 3. Now such a tag is refused (unrepresentable) and every accepted point is stored."""
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscription={"mapping": NOTE_MAPPING}, fast_path=fast_path).start()
    pub = publisher(zmq_context, endpoint)
    try:
        subscribed(pub, "kraken_tick")
        sent = 0
        for k, venue in enumerate(HOSTILE_VENUES * 2):
            pub.send_multipart([b"kraken_tick", msgpack.packb(
                {"instrument": "I", "venue": venue, "note": "one\ntwo", "bid": 1.0, "timestamp": T0 + k})])
            sent += 1
        for k in range(20):
            pub.send_multipart([b"kraken_tick", msgpack.packb(
                {"instrument": "J", "note": "plain", "bid": 1.0, "timestamp": T0 + k})])
            sent += 1
        wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == sent, 20,
                 "every message received")
        samples = quiet_ledger(bridge)
        written = value(samples, "bridge_written_points_total", destination="local")
        stored = influxd.query("SELECT count(bid) FROM ticks", db=database)
        assert written == (stored[0]["count"] if stored else 0)
        assert written == value(samples, "bridge_accepted_points_total", destination="local")
        assert total(samples, "bridge_dropped_points_total", destination="local") == 0
        # the three venues with a backslash before a space are refused, the two others stored
        assert value(samples, "bridge_rejected_messages_total", subscription="kraken",
                     reason="unrepresentable") == 6
        assert written == sent - 6
    finally:
        pub.close()
        bridge.stop()


@pytest.mark.parametrize("interval", [0.0, 0.05])
def test_the_cache_never_puts_an_older_point_after_a_newer_one(tmp_path, interval):
    """Real Redis. Coalescing keeps the newest point per series within one pipeline; a point of an
    older time offered after that pipeline went (an out-of-order feed, a replay, a second feed of
    the series) overwrote the newer one: the cache held t=5 after t=10 had been cached."""
    import time

    import redis
    from servers import RedisServer

    from station_bridge.cache import LatestCache
    from station_bridge.config import CacheSpec
    from station_bridge.metrics import Metrics

    server = RedisServer(tmp_path / "redis").start()
    metrics = Metrics()
    cache = LatestCache(CacheSpec(url=f"redis://127.0.0.1:{server.port}/0", username=None, password=server.password,
                                  ttl=600, key_prefix="latest", timeout=1.0, min_interval=interval), metrics)
    cache.start()
    client = redis.Redis(port=server.port, password=server.password, decode_responses=True)
    try:
        t0 = T0 * 10**9
        cache.offer(["v", "w"], {"m,k=a": (t0 + 10, {"v": "new", "w": 1}), "m,k=b": (-5, {"v": "neg"})})
        wait_for(lambda: client.hget("latest:m,k=a", "v") == "new", 5, "the newest point cached")
        wait_for(lambda: metrics.get("bridge_cache_updates_total") == 2, 5, "both series sent")
        time.sleep(interval + 0.05)  # the next offer is another pipeline
        cache.offer(["v"], {"m,k=a": (t0 + 5, {"v": "old"}), "m,k=b": (-6, {"v": "older"}),
                            "m,k=c": (1, {"v": "c"})})
        cache.offer(["v"], {"m,k=a": (t0 + 9, {"v": "old too"})})
        cache.stop(5)
        assert client.hgetall("latest:m,k=a") == {"v": "new", "w": "1", "time": str(t0 + 10)}
        assert client.hgetall("latest:m,k=b") == {"v": "neg", "time": "-5"}
        assert client.hget("latest:m,k=c", "v") == "c"
        assert 0 < client.pttl("latest:m,k=a") <= 600_000
        # the same time again is the newer arrival (as within one pipeline), a later one wins
        cache2 = LatestCache(cache.spec, metrics)
        cache2.start()
        cache2.offer(["v"], {"m,k=a": (t0 + 10, {"v": "again"}), "m,k=b": (10**18, {"v": "later"})})
        cache2.stop(5)
        assert client.hget("latest:m,k=a", "v") == "again"
        assert client.hgetall("latest:m,k=b") == {"v": "later", "time": str(10**18)}
    finally:
        cache.stop(1)
        server.stop()


def test_a_closed_window_journals_partial_batches_and_the_backlog_is_sent_in_full_batches(
        tmp_path, influxd: Influxd, database: str, endpoint: str, zmq_context: zmq.Context):
    """Outside its window a destination journals a partial batch once its flush_interval is over
    (so what waits in memory at the opening is fresh): a slow feed through a closed window made a
    segment per flush_interval, and each segment was one request when the window opened (a day of
    1 s segments: 86,400 requests where 18 batches of 5,000 did). Here 40 segments of 10 points
    were 40 requests; the backlog now goes in requests of up to batch_size points."""
    import math
    import time

    from test_links import clock, tick

    t0 = math.ceil(time.time())
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           destination={"batch_size": 500, "flush_interval": "100ms",
                                        "schedule": [f"{clock(t0 + 7)}-{clock(t0 + 120)}"]}).start()
    pub = publisher(zmq_context, endpoint)
    try:
        subscribed(pub, "kraken_tick")
        for i in range(400):
            pub.send_multipart(tick("SLOW", i, time.time()))
            time.sleep(0.008)
        wait_for(lambda: bridge.value("bridge_journal_points", destination="local") == 400, 10,
                 "every point journaled while the window is closed")
        segments = len(list((tmp_path / "journal" / "local").glob("*.lp")))
        assert segments >= 10, segments  # partial batches, journaled once flush_interval is over
        assert bridge.value("bridge_write_seconds_count", destination="local") == 0
        wait_for(lambda: time.time() > t0 + 7, 15, "the window to open")
        samples = quiet_ledger(bridge)
        assert value(samples, "bridge_written_points_total", destination="local") == 400
        assert influxd.count(database, "ticks") == 400
        requests = value(samples, "bridge_write_seconds_count", destination="local")
        assert requests <= 2, f"{segments} segments of the backlog took {requests:.0f} requests"
        assert not list((tmp_path / "journal" / "local").glob("*.lp"))
    finally:
        pub.close()
        bridge.stop()
