"""Sixth attack round: the compiled hot path's new forms (derived and topic tags, tag defaults,
paths, dates, numbers as text) against the Python path and the README's promises.

- Texts the feed chooses (tag values, derived-tag sources, topics, measurements from data) were
  cached per distinct text, bounded by count only (100,000 tag texts, 10,000 topics and
  measurement names) whatever their size: 400 refused messages of 500 KB tags grew a bridge
  from 41 to 480 MiB RSS, on either path, and the bounds allowed tens of GiB;
- a source time repeated at InfluxDB's last nanosecond (`accept_ahead: null`): the uniqueness
  nudge wrote a time beyond the range into the window before refusing it, and the next repeat
  raised OverflowError (counted `unexpected`, which is reserved for a defect), in both paths;
- the state kept per series (the uniqueness window, open bins, a VictoriaMetrics destination's
  names and milliseconds) held every series key whole: 1,000 series of 60 KB tags kept 57 MiB in
  the window alone (its bound, 20,000 series, 1.2 GiB);
- a hung Redis: the cache's queue was bounded by bursts (1,000, each up to 8 MiB), and the
  Python path queued whole records;
- the compiled path's newest-point slots kept the capacity of the largest payload each had
  copied, for the life of the subscription.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tracemalloc

import msgpack
import pytest
from compiled import require_compiled_path
from test_fastpath_forms import LAB, T0, differential
from test_stages import sub

from station_bridge import fastpath
from station_bridge.decoders import build
from station_bridge.lineproto import LineError
from station_bridge.mapping import MapError, Mapper
from station_bridge.timestamps import MAX_NS

# --- 1. caches keyed by the feed's texts: bounded by bytes -------------------------------------------

BIG = 256 * 1024  # a text much longer than any cache keeps (and far below max_frame_bytes)
MESSAGES = 160  # x 256 KiB of distinct texts: 40 MiB of text the caches used to keep


def _forms() -> dict[str, tuple]:
    """name -> (spec, message maker k -> frames): each puts a distinct big text where a cache is."""
    catch_all = r"(?s)^(?P<sym>.*)$"
    derived = {**LAB, "tags": ["instrument", "venue"], "optional_tags": ["venue", "sym"],
               "derived_tags": [{"source": "venue", "regex": catch_all}]}

    def text(k: int) -> str:
        return f"v{k:06d}" + "x" * BIG

    def tick(**extra: object) -> dict:
        return {"instrument": "EURUSD", "bid": 1.5, "ask": 2.5, "volume": 1, "timestamp": T0, **extra}
    return {
        # a configured tag (key_too_long: refused, yet its escaped text was cached)
        "tag": (sub(framing="msgpack", mapping={**LAB, "derived_tags": [], "tags": ["instrument", "venue"],
                                                "optional_tags": ["venue"]}),
                lambda k: [b"t", msgpack.packb(tick(venue=text(k)))]),
        # a derived tag's source (the C path calls the mapper's rule for texts beyond its own cache)
        "derived": (sub(framing="msgpack", mapping=derived), lambda k: [b"t", msgpack.packb(tick(venue=text(k)))]),
        # the topic as a tag (TopicCapture's cache and the tag cache)
        "topic": (sub(framing="msgpack", mapping={**LAB, "derived_tags": [], "topic": {"tag": "pair"}}),
                  lambda k: [text(k).encode(), msgpack.packb(tick())]),
        # the measurement from the topic (Python path: the measurement cache)
        "measurement": (sub(framing="json", mapping={**LAB, "derived_tags": [], "measurement": None,
                                                     "measurement_from": "topic"}),
                        lambda k: [text(k).encode(), json.dumps(tick()).encode()]),
    }


def _growth(run, messages: list) -> int:
    """Bytes still allocated (tracemalloc: Python's and the extension's PyMem allocations) after
    running every message, the messages themselves made beforehand and freed as they go."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        while messages:
            run(messages.pop())
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("form", list(_forms()))
@pytest.mark.parametrize("path", ["python", "compiled"])
def test_the_feeds_texts_are_cached_within_a_bound_of_bytes(form, path):
    """Before: 160 distinct 256 KiB texts left 40 to 80 MiB allocated (every cache kept them);
    now a few MiB at most, on both paths, and the points and refusals are unchanged."""
    spec, make = _forms()[form]
    mapper = Mapper(spec, station="lab")
    mapper._clock = itertools.count(T0 * 10**9, 7).__next__
    if path == "compiled":
        require_compiled_path()
        accelerator, why = fastpath.Accelerator.for_mapper(mapper, spec)
        if form == "measurement":
            assert accelerator is None and "measurement comes from data" in why
            pytest.skip("the measurement from data runs on the Python path")
        assert accelerator is not None, why

        def run(frames: list[bytes]) -> None:
            accelerator.map([frames], lambda frames, error: None)
    else:
        decode = build(spec)

        def run(frames: list[bytes]) -> None:
            with contextlib.suppress(MapError, LineError):  # refused (key_too_long): the caches are measured
                mapper.keyed_line(*decode(frames))
    # warm up: interned names, compiled regexes, the caches' own tables
    run(make(10**6))
    grown = _growth(run, [make(k) for k in range(MESSAGES)])
    assert grown < 8 << 20, f"{form} on the {path} path kept {grown / 2**20:.1f} MiB after {MESSAGES} messages"


def test_short_texts_are_still_cached_and_big_ones_map_as_before():
    spec, _ = _forms()["derived"]
    mapper = Mapper(spec, station="lab")
    for k in range(50):
        mapper.keyed_line("t", {"instrument": "EURUSD", "venue": f"v{k % 5}", "bid": 1.0, "timestamp": T0 + k})
    assert 5 <= len(mapper._tag_cache) <= 12  # the five venues (and the configured tags' texts)
    big = "a,b c=d\\" + "y" * 70_000
    line, _, _ = Mapper(spec, station="lab").keyed_line("t", {"instrument": "EURUSD", "venue": big[:20_000],
                                                              "bid": 1.0, "timestamp": T0})
    assert ",sym=a\\,b\\ c\\=d\\" in line and line.count("y" * (20_000 - 8)) == 2


# --- 2. a repeated time at InfluxDB's last nanosecond ---------------------------------------------

@pytest.mark.parametrize("time_format", ["auto", "epoch_us", "rfc3339"])
def test_a_time_repeated_at_the_last_nanosecond_is_refused_bad_timestamp_on_both_paths(time_format):
    """Before: the third repeat of 9223372036854775806 raised OverflowError (array 'q'), counted
    `unexpected`; the refused nudge (2**63 - 1) stayed in the uniqueness window."""
    last = {"auto": MAX_NS, "epoch_us": MAX_NS // 1000, "rfc3339": "2262-04-11T23:47:16.854775806Z"}[time_format]
    spec = sub(framing="msgpack", mapping={**LAB, "derived_tags": [], "time": {
        "field": "timestamp", "format": time_format, "accept_ahead": None, "accept_behind": None}})
    mapper = Mapper(spec, station="lab")
    outcomes = []
    repeats = 810  # epoch_us: 9223372036854775000 reaches the last nanosecond after 806 nudges
    for _ in range(repeats):
        try:
            outcomes.append(mapper.keyed_line("t", {"instrument": "EURUSD", "bid": 1.0, "timestamp": last})[2])
        except Exception as exc:  # what is raised (OverflowError before) is the observation
            outcomes.append(getattr(exc, "reason", type(exc).__name__))
    first = {"auto": MAX_NS, "epoch_us": MAX_NS // 1000 * 1000, "rfc3339": MAX_NS}[time_format]
    assert outcomes == [first + k if first + k <= MAX_NS else "bad_timestamp" for k in range(repeats)], \
        outcomes[-6:]
    assert all(t <= MAX_NS for times in mapper.unique.current.values() for t in times)
    if fastpath.unavailable() == "":
        messages = [[b"t", msgpack.packb({"instrument": "EURUSD", "bid": 1.0 + k, "timestamp": last})]
                    for k in range(repeats)]
        differential(spec, [messages, [list(m) for m in messages]])


# --- 3. the uniqueness window keeps series keys: long ones by their digest ---------------------------

@pytest.mark.parametrize("path", ["python", "compiled"])
def test_long_series_keys_cost_the_uniqueness_window_a_digest_not_their_size(path):
    """Before: every series key (here 60 KB of tag) was kept whole by the window, up to
    `uniqueness.max_series` (20,000) of them: 1,000 accepted messages with distinct 60 KB tags
    left 57 MiB allocated (a bridge grew from 41 to 238 MiB RSS with 3,000 of them, its queue at
    8 MiB), 20,000 would be 1.2 GiB, and uniqueness.bin as large. Repeats of a long series are
    still nudged, also after the window was saved and read back."""
    spec = sub(framing="msgpack", mapping={**LAB, "derived_tags": [], "tags": ["instrument", "venue"]})
    mapper = Mapper(spec, station="lab")
    decode = build(spec)
    if path == "compiled":
        require_compiled_path()
        accelerator, why = fastpath.Accelerator.for_mapper(mapper, spec)
        assert accelerator is not None, why

        def run(frames: list[bytes]) -> bytes:
            def slow(frames: list[bytes], error: Exception | None) -> bytes | None:
                return None if error else mapper.keyed_line(*decode(frames))[0].encode()
            return accelerator.map([frames], slow).data
    else:
        def run(frames: list[bytes]) -> bytes:
            return mapper.keyed_line(*decode(frames))[0].encode() + b"\n"

    def tick(k: int, t: int = T0) -> list[bytes]:
        return [b"t", msgpack.packb({"instrument": "EURUSD", "venue": f"v{k:06d}" + "v" * 60_000, "bid": 1.5,
                                     "ask": 2.5, "volume": 1, "timestamp": t})]
    run(tick(-1))
    grown = _growth(lambda frames: run(frames), [tick(k) for k in range(1000)])
    assert len(mapper.unique.current) == 1001
    assert grown < 8 << 20, f"the window kept {grown / 2**20:.1f} MiB for 1,000 series of 60 KB"
    assert len(mapper.unique.dump()) < 1001 * 1200
    times = [int(run(tick(7, T0 + 5)).split()[-1]) for _ in range(3)]
    assert times == [(T0 + 5) * 10**9 + k for k in range(3)]
    again = Mapper(spec, station="lab")
    again.unique.restore(mapper.unique.dump())
    assert again.keyed_line(*decode(tick(7, T0 + 5)))[2] == (T0 + 5) * 10**9 + 3


# --- 4. the latest-value cache's queue: bounded by bytes, not only by bursts ------------------------

def test_a_hung_redis_holds_a_bounded_number_of_bytes_not_1000_bursts(tmp_path):
    """Before: the queue held up to `cache.queue_max` (1,000) bursts whatever their size (a burst
    ends at 8 MiB), and the Python path queued whole records (undeclared keys too): with
    redis-server SIGSTOPped, 4,000 messages of 400 KB grew a bridge from 41 to 536 MiB RSS at
    the default 2 s timeout (1,684 MiB at 20 s). Now the queue holds at most QUEUE_MAX_BYTES of
    declared values; the rest is dropped and counted, and what was queued is sent once Redis
    answers again."""
    import signal
    import time

    import redis
    from harness import wait_for
    from servers import RedisServer

    from station_bridge.cache import QUEUE_MAX_BYTES, LatestCache
    from station_bridge.config import CacheSpec
    from station_bridge.metrics import Metrics

    server = RedisServer(tmp_path / "redis").start()
    metrics = Metrics()
    cache = LatestCache(CacheSpec(url=f"redis://127.0.0.1:{server.port}/0", username=None,
                                  password=server.password, ttl=600, key_prefix="latest", timeout=1.0), metrics)
    cache.start()
    try:
        cache.offer(["note"], {"m,k=first": (1, {"note": "n"})})
        wait_for(lambda: metrics.get("bridge_cache_updates_total") == 1, 10, "the first update sent")
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(0.2)

        def burst(k: int) -> dict:  # one series, a declared 1 MB value and an undeclared one
            return {f"m,k={k}": (k, {"note": f"{k}" + "n" * 1_000_000, "ignored": "i" * 1_000_000})}
        offered = 150
        grown = _growth(lambda k: cache.offer(["note"], burst(k)), list(range(offered)))  # made as offered
        dropped = metrics.get("bridge_cache_dropped_total")
        # the queue, the batch the worker is sending and redis-py's encoding of it
        assert grown < 3 * QUEUE_MAX_BYTES + (4 << 20), f"the cache kept {grown / 2**20:.0f} MiB"
        assert offered - 2 * QUEUE_MAX_BYTES // 1_000_000 - 2 <= dropped < offered
        server.process.send_signal(signal.SIGCONT)
        sent = offered - dropped
        wait_for(lambda: metrics.get("bridge_cache_updates_total") >= 1 + sent, 30, "the queued updates sent",
                 detail=lambda: str(dict(metrics.counters)))
        client = redis.Redis(port=server.port, password=server.password)
        stored = [k for k in range(offered) if client.exists(f"latest:m,k={k}")]
        assert stored and all(client.hkeys(f"latest:m,k={k}") in ([b"note", b"time"], [b"time", b"note"])
                              for k in stored)
    finally:
        server.process.send_signal(signal.SIGCONT)
        cache.stop(5)
        server.stop()


# --- 5. a VictoriaMetrics destination's memories: long names and series by their digest -------------

def test_a_victoriametrics_destinations_memories_do_not_grow_with_the_feeds_names():
    """Before: the sample names (100,000 remembered) and series (20,000) were kept whole: 1,000
    measurements of 60 KB left 172 MiB allocated (17 GiB at the bound). Collisions and repeated
    milliseconds of long names and series are still caught."""
    from station_bridge.backend import Adapter

    adapter = Adapter(numeric_only=False, refuse_sub_ms=True, victoria=True)
    long = "m" * 60_000
    tags = ",".join(f"t{i}=" + "v" * 16_000 for i in range(3))

    def apply(k: int) -> None:
        adapter.apply(f"{long}{k:06d},{tags}{k:06d} bid=1.5 1700000000000000000\n".encode())
    apply(-1)
    grown = _growth(apply, list(range(200)))  # 44 MiB kept before
    assert grown < 4 << 20, f"the adapter kept {grown / 2**20:.0f} MiB"
    data, points, dropped, fields = adapter.apply(f"{long}x,a=1 v_w=1 1\n{long}x_v,a=1 w=2 2\n".encode())
    assert (points, dropped, fields) == (1, {"name_collision": 1}, {"name_collision": 1})
    assert b"v_w=1" in data and b"w=2" not in data
    data, points, dropped, _ = adapter.apply(f"{long}y,{tags} f=1 5000000\n{long}y,{tags} f=2 5000001\n".encode())
    assert (points, dropped) == (1, {"time_resolution": 1})
    assert b"f=1" in data and b"f=2" not in data


def test_the_binner_holds_long_series_keys_as_their_digest():
    """Before: an open bin per series kept its key whole (binning.max_series, 20,000 of them):
    1,000 series of 60 KB left 57 MiB allocated. Bins are made per series as before."""
    from station_bridge.binning import TimeWeightedBinner

    binner = TimeWeightedBinner(10**9, ["bid"])

    def sample(k: int) -> None:
        assert binner.add(f"m,venue=v{k:06d}" + "v" * 60_000, T0 * 10**9, {"bid": 1.0}) == []
    sample(-1)
    grown = _growth(sample, list(range(1000)))
    assert grown < 4 << 20, f"the binner kept {grown / 2**20:.0f} MiB"
    series = "m,venue=v000007" + "v" * 60_000
    # its open bin (from T0) found again: the time since its sample, weighted by the new value
    assert binner.add(series, T0 * 10**9 + 2 * 10**9, {"bid": 3.0}) == [(T0 * 10**9, {"bid": 3.0}),
                                                                         (T0 * 10**9 + 10**9, {"bid": 3.0})]
    assert binner.add(series + "x", T0 * 10**9 + 2 * 10**9, {"bid": 3.0}) == []  # another series: a new bin


# --- 6. the compiled path's newest point per series (for the cache): no capacity kept per slot ------

def test_the_compiled_paths_newest_points_keep_no_capacity_between_bursts():
    """Before: each slot of the burst's newest-point table (one per series of a burst) kept the
    capacity of the largest payload it ever copied, until the subscription stopped: bursts of k
    small ticks then one of 256 KB (a new series at slot k) kept 256 KB per slot, 300 bursts
    75 MiB (2,000 series per burst and 1 MiB frames: 2 GiB). Now a slot keeps at most 1 KiB."""
    require_compiled_path()
    spec = sub(framing="msgpack", mapping={**LAB, "derived_tags": [],
                                          "fields": {"bid": "float", "note": "string"}})
    mapper = Mapper(spec, station="lab")
    accelerator, why = fastpath.Accelerator.for_mapper(mapper, spec)
    assert accelerator is not None, why

    def tick(instrument: str, note: str) -> list[bytes]:
        return [b"t", msgpack.packb({"instrument": instrument, "bid": 1.5, "note": note, "timestamp": T0})]

    def burst(k: int) -> None:
        messages = [tick(f"S{i}", "n") for i in range(k)] + [tick(f"BIG{k}", "x" * 256_000)]
        newest: dict = {}
        result = accelerator.map(messages, lambda frames, error: None, newest)
        assert result.compiled == k + 1 and len(newest) == k + 1
        assert newest[f"ticks,instrument=BIG{k},station=lab"][1]["note"] == "x" * 256_000
    burst(0)
    grown = _growth(burst, list(range(1, 300)))
    assert grown < 8 << 20, f"the compiled plan kept {grown / 2**20:.0f} MiB after 300 bursts"


@pytest.mark.parametrize("interval", [0.0, 0.4])
def test_the_cache_sends_at_most_one_pipeline_per_min_interval(tmp_path, interval):
    # Real Redis. Bursts offered every 10 ms for a second: with min_interval 0.4 s they coalesce
    # into a pipeline per 0.4 s (each of its one series: bridge_cache_updates_total counts the
    # series per pipeline), the newest point of each series wins; with 0, one per batch of bursts.
    # A stop sends what is queued at once (it does not wait out the interval).
    import time

    import redis
    from harness import wait_for
    from servers import RedisServer

    from station_bridge.cache import LatestCache
    from station_bridge.config import CacheSpec
    from station_bridge.metrics import Metrics

    server = RedisServer(tmp_path / "redis").start()
    metrics = Metrics()
    cache = LatestCache(CacheSpec(url=f"redis://127.0.0.1:{server.port}/0", username=None, password=server.password,
                                  ttl=600, key_prefix="latest", timeout=1.0, min_interval=interval), metrics)
    cache.start()
    try:
        for k in range(100):
            cache.offer(["v"], {"m,k=a": (k, {"v": k})})
            time.sleep(0.01)
        client = redis.Redis(port=server.port, password=server.password, decode_responses=True)
        wait_for(lambda: client.hget("latest:m,k=a", "v") == "99", 5, "the newest point cached",
                 detail=lambda: str(client.hgetall("latest:m,k=a")))
        sends = metrics.get("bridge_cache_updates_total")
        if interval:
            assert 2 <= sends <= 5, sends  # about 1.0-1.5 s of offers / 0.4 s, plus the first at once
        else:
            assert sends >= 20, sends  # every batch of bursts the worker found queued
        cache.offer(["v"], {"m,k=a": (100, {"v": "last"})})
        started = time.monotonic()
        cache.stop(5)
        assert time.monotonic() - started < 0.3
        assert client.hget("latest:m,k=a", "v") == "last"
    finally:
        cache.stop(1)
        server.stop()
