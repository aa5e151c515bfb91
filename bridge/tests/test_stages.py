"""Decoders, timestamps, binning, journal, intake log, dead letters, ledger, metrics and
configuration, stage by stage. Disk faults happen on a real tmpfs (we are root)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import msgpack
import pytest
import yaml
from harness import tmpfs
from hypothesis import given, settings
from hypothesis import strategies as st

from station_bridge import config as cfg
from station_bridge.binning import TimeWeightedBinner
from station_bridge.decoders import DecodeError, build
from station_bridge.journal import Chunk, DeadLetters, DiskGuard, Intake, Journal
from station_bridge.journal.records import HEADER_BYTES
from station_bridge.ledger import Ledger
from station_bridge.lineproto import LineError
from station_bridge.mapping import MapError, Mapper
from station_bridge.metrics import Metrics, parse, total, value
from station_bridge.timestamps import parser

T0 = 1_700_000_000


def sub(**overrides):
    data = {
        "name": "s", "endpoints": ["tcp://127.0.0.1:1"], "framing": "msgpack",
        "mapping": {"measurement": "ticks", "tags": ["instrument"], "fields": {"bid": "float", "ask": "float",
                    "volume": "integer"}, "drop": ["seq"],
                    "derived_tags": [{"source": "instrument", "regex": "^(?P<base>[A-Z]{3})(?P<term>[A-Z]{3})$"}],
                    "time": {"field": "timestamp", "format": "epoch_s"}},
    }
    for key, val in overrides.items():
        if key == "mapping":
            data["mapping"] = {**data["mapping"], **val}
        else:
            data[key] = val
    full = {"subscriptions": [data], "destinations": [{"name": "d", "url": "http://x", "database": "db"}]}
    return cfg.parse(full, "test.yml").subscriptions[0]


TICK = {"timestamp": T0 + 0.5, "instrument": "EURUSD", "bid": 1.08234, "ask": 1.08245, "volume": 1000000, "seq": 1}


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory):
    """A real 2 MiB tmpfs, filled on demand (`fill`) and emptied between tests."""
    with tmpfs(tmp_path_factory.mktemp("tmpfs"), "2m") as path:
        yield path


def fill(path: Path) -> Path:
    """Fills the filesystem until write(2) fails with ENOSPC."""
    filler = path / f"filler{len(list(path.glob('filler*')))}"
    with open(filler, "wb", buffering=0) as handle:
        for size in (65536, 4096, 1):
            try:
                while True:
                    if handle.write(b"\0" * size) < size:
                        break
            except OSError:
                pass
    return filler


@pytest.fixture()
def disk(small_disk: Path):
    for child in small_disk.iterdir():
        if child.is_dir():
            for inner in child.iterdir():
                inner.unlink()
            child.rmdir()
        else:
            child.unlink()
    return small_disk


# --- decoders ----------------------------------------------------------------------------------

def test_json_and_text_framings():
    spec = sub(framing="json")
    assert build(spec)([b"t", json.dumps(TICK).encode()])[1]["bid"] == 1.08234
    spec = sub(framing="text_json")
    assert build(spec)([b"t " + json.dumps(TICK).encode()]) == ("t", json.loads(json.dumps(TICK)))
    spec = sub(framing="text_delimited", field_order=["timestamp", "instrument", "bid", "ask", "volume"])
    topic, record = build(spec)([b"fx 1700000000.5\x01EURUSD\x011.1\x011.2\x017"])
    line = Mapper(spec).line(topic, {**record, "timestamp": float(record["timestamp"])})
    assert line.startswith("ticks,base=EUR,instrument=EURUSD,term=USD bid=1.1,ask=1.2,volume=7i ")


@pytest.mark.parametrize(("framing", "frames", "reason"), [
    ("msgpack", [b"t"], "bad_framing"),
    ("msgpack", [b"t", b"\xc1"], "undecodable"),
    ("msgpack", [b"t", msgpack.packb([1, 2])], "not_a_map"),
    ("msgpack", [b"\xff\xfe", msgpack.packb({})], "invalid_utf8"),
    ("msgpack", [b"t", b"\xa2\xed\xa0"], "invalid_utf8"),
    ("msgpack", [b"t", b"x" * 2_000_000], "oversized"),
    ("msgpack", [b"t", b"\x91" * 100_000 + b"\x00"], "too_deep"),
    ("json", [b"t", b"{nope"], "undecodable"),
    ("json", [b"t", b"[" * 100_000 + b"]" * 100_000], "too_deep"),
    ("json", [b"t", b'{"a": ' + b"7" * 5000 + b"}"], "integer_overflow"),
    ("text_json", [b"no-space"], "bad_framing"),
    ("text_json", [b"t " + b"[" * 100_000], "too_deep"),
])
def test_bad_frames_are_refused_with_a_reason(framing, frames, reason):
    with pytest.raises(DecodeError) as err:
        build(sub(framing=framing))(frames)
    assert err.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.binary(max_size=64), min_size=0, max_size=3))
def test_random_frames_never_escape_as_other_errors(frames):
    spec = sub()
    mapper = Mapper(spec)
    try:
        topic, record = build(spec)(frames)
        mapper.line(topic, record)
    except (DecodeError, MapError, LineError):
        pass


def test_measurement_from_topic_and_unknown_topics():
    mapper = Mapper(sub(mapping={"measurement": None, "measurement_from": "topic",
                                 "measurements": {"kraken_tick": "ticks"}}))
    assert mapper.line("kraken_tick", TICK).startswith("ticks,")
    with pytest.raises(MapError) as err:
        mapper.line("other", TICK)
    assert err.value.reason == "unknown_topic"


@pytest.mark.parametrize(("fmt", "tz", "val", "ns"), [
    ("epoch_s", None, 1700000000, 1700000000_000000000),
    ("epoch_s", None, 1700000000.5, 1700000000_500000000),
    ("epoch_ms", None, 1700000000123, 1700000000_123000000),
    ("epoch_us", None, 1700000000123456, 1700000000_123456000),
    ("epoch_ns", None, 1700000000123456789, 1700000000_123456789),
    ("rfc3339", None, "2023-11-14T22:13:20.123456Z", 1700000000_123456000),
    ("rfc3339", None, "2023-11-14T22:13:20.123456789Z", 1700000000_123456789),
    ("rfc3339", None, "2023-11-14T23:13:20.5+01:00", 1700000000_500000000),
    ("naive", "Europe/Amsterdam", "2023-11-14 23:13:20.250", 1700000000_250000000),
    ("naive", "UTC", "2023-11-14 22:13:20", 1700000000_000000000),
    ("auto", None, 1700000000123, 1700000000_123000000),
    ("auto", None, "2023-11-14T22:13:20Z", 1700000000_000000000),
])
def test_timestamp_formats(fmt, tz, val, ns):
    assert parser(fmt, tz)(val) == ns


def test_binning_golden_check():
    second = 1_000_000_000
    base = T0 * second
    binner = TimeWeightedBinner(second, ["v"])
    out = []
    for offset, v in ((0.1, 100), (0.6, 200), (1.1, 100), (3.5, 50)):
        out += binner.add("s", base + int(offset * second), {"v": v})
    assert [(start - base, round(means["v"], 9)) for start, means in out] == [
        (0, 150.0), (second, 55.0), (2 * second, 50.0)]


# --- chunks, journal, intake log ------------------------------------------------------------------

def test_chunks_split_and_join_by_lines_even_with_newlines_inside_strings():
    """Issue 11: splitting a rejected batch tore string fields holding a newline apart."""
    lines = ['m s="a\nb" 1', "m v=1 2", 'm s="\\"\nx\\\\" 3', 'm\\\nname v=1 4', "m v=5 5"]
    chunk = Chunk.of(lines, seq=100)
    assert chunk.count == 5 and [x.decode() for x in chunk.lines()] == lines
    head, rest = chunk.split(3)
    assert ([x.decode() for x in head.lines()], head.count, head.seq) == (lines[:3], 3, 100)
    assert ([x.decode() for x in rest.lines()], rest.count, rest.seq) == (lines[3:], 2, 103)
    assert Chunk.join([head, rest]).data == chunk.data
    plain = Chunk.of([f"m v={i} {i}" for i in range(10)], seq=0)
    assert plain.split(4)[1].lines()[0] == b"m v=4 4"


_line_text = st.one_of(
    st.integers(0, 10**6).map(lambda i: f"m v={i} {i}"),  # plain, short
    st.text("ab ,=", max_size=300).map(lambda t: "m,k=" + t.replace(" ", "\\ ").replace(",", "\\,").replace("=", "\\=")
                                        + "x v=1 1"),  # escapes, any length
    st.text("ab\n\"\\", max_size=40).map(lambda t: 'm s="' + t.replace("\\", "\\\\").replace('"', '\\"') + '" 1'),
    st.just("m\\\nname v=1 4"))


@given(lines=st.lists(_line_text, min_size=1, max_size=120), data=st.data())
@settings(max_examples=300, deadline=None)
def test_a_chunk_splits_at_every_count_where_its_lines_end(lines, data):
    # Chunk.split finds the count-th line's end by counting newlines where every newline ends a
    # line (no quote, no backslash-newline), and by parsing where one may not: the same lines.
    chunk = Chunk.of(lines, seq=7)
    count = data.draw(st.integers(1, max(1, len(lines) - 1)))
    if count >= len(lines):
        return
    head, rest = chunk.split(count)
    assert (head.data, rest.data) == (("\n".join(lines[:count]) + "\n").encode(),
                                       ("\n".join(lines[count:]) + "\n").encode())
    assert (head.count, head.seq, rest.count, rest.seq) == (count, 7, len(lines) - count, 7 + count)


def test_the_nth_line_end_of_uneven_lines():
    # Lines of very different lengths (the interpolation's guesses land far off; the bisection
    # steps bound the search): every n, against the offsets of the newlines themselves.
    from station_bridge.lineproto import nth_line_end
    lines = [("x" * (1 if i % 7 else 5000)) + f" v={i} {i}" for i in range(400)]
    data = ("\n".join(lines) + "\n").encode()
    ends = [i + 1 for i, c in enumerate(data) if c == 10]
    assert [nth_line_end(data, n, len(lines)) for n in range(1, len(lines) + 1)] == ends
    with pytest.raises(ValueError):
        nth_line_end(data[:ends[9]], 11, 400)  # fewer newlines than said: never another line's end


def test_the_nth_line_end_of_lines_of_about_one_length():
    # The interpolation lands a few lines before or past the n-th: walked to from the guess
    from station_bridge.lineproto import nth_line_end
    lines = [f"ticks,instrument=I{i % 8} bid={1 + i / 1e6!r},seq={i}i {1700000000000000000 + i * 997}"
             for i in range(2000)]
    data = ("\n".join(lines) + "\n").encode()
    ends = [i + 1 for i, c in enumerate(data) if c == 10]
    assert [nth_line_end(data, n, len(lines)) for n in range(1, len(lines) + 1)] == ends
    with pytest.raises(ValueError):
        nth_line_end(data[:ends[999]], 1005, 1010)  # fewer newlines than said: never another line's end


def test_journal_segments_survive_restart_in_order_respect_the_cap_and_record_progress(tmp_path: Path):
    journal = Journal(tmp_path, max_bytes=200)
    assert journal.append(Chunk.of(["a v=1 1", 'b s="x\ny" 2'])) is None
    assert journal.append(Chunk.of(["c v=3 3"])) is None
    (tmp_path / "half-written.lp.tmp").write_text("never renamed")
    reopened = Journal(tmp_path, max_bytes=200)
    assert len(reopened) == 2 and reopened.points == 3
    assert not list(tmp_path.glob("*.tmp"))
    segment, chunk = reopened.oldest()
    assert [x.decode() for x in chunk.lines()] == ["a v=1 1", 'b s="x\ny" 2'] and chunk.count == 2
    reopened.progress(segment, 1)  # the first line was acknowledged, the rest not yet
    again = Journal(tmp_path, max_bytes=200)
    segment, chunk = again.oldest()
    assert chunk.lines() == [b'b s="x\ny" 2'] and again.points == 2
    again.ack(segment)
    assert again.oldest()[1].lines() == [b"c v=3 3"] and again.points == 1
    assert not list(tmp_path.glob("*.done"))
    assert again.append(Chunk.of(["x" * 300])) == "spool_full"  # over the cap: the caller counts the drop
    assert again.bytes == len("c v=3 3\n") + HEADER_BYTES


def test_journal_write_on_a_full_disk_is_a_reason_not_an_exception(disk: Path):
    journal = Journal(disk / "j", max_bytes=1 << 30)
    fill(disk)
    assert journal.append(Chunk.of(["m v=1 1"] * 1000)) == "disk_full"
    assert not list((disk / "j").glob("*.tmp")), "a failed write leaves no temporary file"
    assert journal.writable is False and "No space" in journal.last_error
    guarded = Journal(disk / "g", max_bytes=1 << 30, guard=DiskGuard(disk, reserve=1 << 40))
    assert guarded.append(Chunk.of(["m v=1 1"])) == "disk_full"  # the reserve, before the disk is full


def test_intake_failures_neither_forget_undelivered_points_nor_grow_the_log(disk: Path):
    """Issue 11: a failed append at the start of a batch made the log grow forever; in the middle
    of a batch it marked undelivered points as settled (lost on kill -9)."""
    wal = disk / "wal"
    intake = Intake(wal, segment_bytes=1 << 20)
    a, b, c, d = (Chunk.of([f"m v={i}i {i}"] * 1000) for i in range(4))  # 9 kB each: beyond a free page
    assert intake.append(a)
    filler = fill(disk)
    assert not intake.append(b)  # disk full: b lives in memory only, its range settled at once
    filler.unlink()
    assert intake.append(c) and intake.append(d)
    assert (a.seq, b.seq, c.seq, d.seq) == (0, 1000, 2000, 3000)
    # A batch that starts with the unlogged chunk is written: the log forgets only that.
    intake.settle(b.seq, 1000)
    intake.settle(c.seq, 1000)
    logged = b"".join(p.read_bytes() for p in sorted(wal.glob("*.wal")))
    assert logged.count(b"m v=0i") == 1000 and logged.count(b"m v=3i") == 1000  # a and d still undelivered
    intake.settle(a.seq, 1000)
    intake.settle(d.seq, 1000)
    assert not list(wal.glob("*.wal")), "everything settled: the log is empty again"


def test_intake_log_forgets_only_what_is_settled_contiguously(tmp_path: Path):
    intake = Intake(tmp_path, segment_bytes=30)  # about two chunks per segment
    chunks = [Chunk.of([f"m v={i}i {i}", f"m v={i}i {i + 1}"]) for i in range(6)]
    for chunk in chunks:
        intake.append(chunk)
    assert [c.seq for c in chunks] == [0, 2, 4, 6, 8, 10]
    segments = sorted(tmp_path.glob("*.wal"))
    assert len(segments) >= 3
    intake.settle(2, 8)
    assert sorted(tmp_path.glob("*.wal")) == segments
    intake.settle(0, 2)
    remaining = sorted(tmp_path.glob("*.wal"))
    assert remaining and b"m v=5i 6" in remaining[-1].read_bytes()
    intake.settle(10, 2)
    assert not list(tmp_path.glob("*.wal"))


def test_intake_log_ranges_settled_twice_still_free_the_log(tmp_path: Path):
    """An append that fails is settled at once; the writer settles the batch it was joined into
    again (Chunk.join). Found by the disk-full chaos test with the compiled path: the log was
    never deleted again, and a restart delivered points counted as dropped."""
    intake = Intake(tmp_path, segment_bytes=30)
    chunks = [Chunk.of([f"m v={i}i {i}", f"m v={i}i {i + 1}"]) for i in range(4)]
    for chunk in chunks:
        intake.append(chunk)
    intake.settle(0, 2)
    intake.settle(2, 2)  # the failed append, settled at once
    intake.settle(2, 4)  # the joined batch that held it, settled by the writer
    intake.settle(6, 2)
    assert not list(tmp_path.glob("*.wal"))
    more = Chunk.of(["m v=9i 9"])
    intake.append(more)
    intake.settle(8, 1)
    assert not list(tmp_path.glob("*.wal")), "contiguous settlement goes on after an overlap"
    for chunk in (Chunk.of(["m v=1i 1"]), Chunk.of(["m v=2i 2"]), Chunk.of(["m v=3i 3"])):
        intake.append(chunk)
    intake.settle(10, 1)  # ahead of the low mark, twice
    intake.settle(10, 1)
    intake.settle(9, 1)
    assert sorted(tmp_path.glob("*.wal")), "point 11 is not settled yet"
    intake.settle(11, 1)
    assert not list(tmp_path.glob("*.wal"))


def test_journal_adopts_the_intake_log_by_rename_even_on_a_full_disk(disk: Path):
    """Issue 11: adopting the log copied it and crashed every restart on a full disk."""
    directory = disk / "local"
    intake = Intake(directory)
    intake.append(Chunk.of(["m v=1i 1", 'm s="two\nlines" 2']))
    intake.append(Chunk.of(["m v=3i 3"]))
    intake.settle(0, 1)  # written; the segment still holds it, which is harmless to write again
    wal = next(directory.glob("*.wal"))
    with open(wal, "ab") as handle:
        handle.write(b'm s="torn')  # the process died inside a write
    inode = wal.stat().st_ino
    fill(disk)
    journal = Journal(directory, max_bytes=1 << 20)
    assert journal.adopted == 3 and journal.points == 3
    segment, chunk = journal.oldest()
    assert segment.path.stat().st_ino == inode, "renamed, not copied"
    assert chunk.lines() == [b"m v=1i 1", b'm s="two\nlines" 2', b"m v=3i 3"]


def test_dead_letters_rotate_at_their_cap_and_count_what_rotation_deletes(disk: Path):
    dead = DeadLetters(disk / "dead.jsonl", max_bytes=2000)
    for i in range(100):
        assert dead.write(n=i, line="x" * 50)
    assert (disk / "dead.jsonl").stat().st_size <= 2000 and (disk / "dead.jsonl.1").stat().st_size <= 2000
    kept = sum(len(p.read_text().splitlines()) for p in disk.glob("dead.jsonl*"))
    assert kept + dead.discarded == 100 and dead.rotations >= 2
    fill(disk)
    assert dead.write(n=101, line="y" * 20_000) is False and dead.errors == 1 and dead.last_error


# --- ledger and metrics -----------------------------------------------------------------------------

def test_ledger_persists_counters_and_reconciles_with_the_disk(tmp_path: Path):
    metrics = Metrics()
    metrics.inc("bridge_accepted_points_total", 100, destination="d")
    metrics.inc("bridge_written_points_total", 60, destination="d")
    metrics.inc("bridge_dropped_points_total", 10, destination="d", reason="spool_full")
    ledger = Ledger(tmp_path / "ledger.json", metrics)
    assert ledger.save(clean=True, sync=True)
    restored = Metrics()
    again = Ledger(tmp_path / "ledger.json", restored)
    assert again.load() and restored.get("bridge_written_points_total", destination="d") == 60
    assert again.pending("d") == 30
    assert again.reconcile("d", 45) == (15, 0)  # more on disk: recovered, accepted too
    assert restored.get("bridge_accepted_points_total", destination="d") == 115
    assert again.reconcile("d", 40) == (0, 5)  # less on disk: points that lived in memory only
    assert restored.get("bridge_dropped_points_total", destination="d", reason="lost_in_crash") == 5
    assert again.pending("d") == 40


def test_metrics_text_round_trips_through_the_one_parser():
    metrics = Metrics()
    metrics.inc("bridge_received_messages_total", 1_030_175, subscription="kraken")
    metrics.inc("bridge_write_seconds_sum", 0.125, destination="local")
    metrics.inc("bridge_rejected_messages_total", 2, subscription='we"ird\\ \nname', reason="x")
    metrics.gauge("bridge_pending_points", lambda: {(("destination", "local"),): 7.0})
    text = metrics.render()
    assert 'bridge_received_messages_total{subscription="kraken"} 1030175\n' in text
    samples = parse(text)
    assert value(samples, "bridge_received_messages_total", subscription="kraken") == 1_030_175
    assert value(samples, "bridge_write_seconds_sum", destination="local") == 0.125
    assert value(samples, "bridge_rejected_messages_total", subscription='we"ird\\ \nname', reason="x") == 2
    assert total(samples, "bridge_rejected_messages_total") == 2
    assert value(samples, "bridge_pending_points", destination="local") == 7
    with pytest.raises(ValueError):
        parse("not a sample line at all {")


# --- configuration --------------------------------------------------------------------------------

def test_config_errors_name_the_file_and_key(tmp_path: Path):
    path = tmp_path / "bridge.yml"
    path.write_text("subscriptions:\n  - name: a\n    endpoints: [tcp://x:1]\n    mapping:\n"
                    "      measurement: m\n      fields: {bid: flaot}\ndestinations: []\n")
    with pytest.raises(cfg.ConfigError, match=r"bridge.yml: subscriptions\[0\].mapping.fields.bid: unknown type"):
        cfg.load(path)
    path.write_text("subscriptions: []\ndestinations: [{name: d, url: http://x, database: db, batchsize: 1}]\n")
    with pytest.raises(cfg.ConfigError, match=r"destinations\[0\].batchsize: unknown key"):
        cfg.load(path)


@pytest.mark.parametrize(("mapping", "message"), [
    ({"measurement": "#m"}, "mapping.measurement: InfluxDB cannot store it"),
    ({"fields": {"a\\b": "float"}}, r"mapping.fields.a.*: InfluxDB cannot store it"),
    ({"static_tags": {"venue": "ends\\"}}, "mapping.static_tags.venue: InfluxDB cannot store it"),
    ({"static_tags": {"instrument": "x"}}, "tag key 'instrument' also comes from tags"),
    ({"tags": ["base"]}, "tag key 'base' also comes from tags"),
])
def test_config_refuses_names_influxdb_cannot_store_and_tags_with_two_sources(mapping, message):
    with pytest.raises(cfg.ConfigError, match=message):
        sub(mapping=mapping)


@pytest.mark.parametrize(("text", "seconds"), [
    (10, 10.0), (0.5, 0.5), ("10", 10.0), ("1.5", 1.5), ("500ms", 0.5), ("10s", 10.0), ("1m", 60.0),
    ("1h30m", 5400.0), ("720h0m0s", 2_592_000.0), ("250us", 0.00025), ("1d", 86400.0)])
def test_durations_accept_units_and_plain_seconds(text, seconds):
    assert cfg.parse_duration(text, "x") == pytest.approx(seconds)


def test_every_duration_key_accepts_units():
    data = {"subscriptions": [{"name": "s", "endpoints": ["tcp://x:1"], "binning": {"interval": "500ms",
                                                                                   "fields": ["v"]},
                               "mapping": {"measurement": "m", "fields": {"v": "float"}}}],
            "destinations": [{"name": "d", "url": "http://x", "database": "db", "flush_interval": "250ms",
                              "timeout": "3s", "max_backoff": "1m"}],
            "cache": {"url": "redis://x", "ttl": "2h", "timeout": "1500ms", "min_interval": "20ms"},
            "journal": {"ledger_interval": "2s"}, "http": {"timeout": "1s"},
            "health": {"destination_grace": "15s", "subscription_grace": "1m", "probe_interval": "5s"},
            "self_metrics": {"interval": "30s"}, "shutdown_timeout": "45s"}
    c = cfg.parse(data)
    d = c.destinations[0]
    assert (d.flush_interval, d.timeout, d.max_backoff) == (0.25, 3.0, 60.0)
    assert (c.cache.ttl, c.cache.timeout, c.ledger_interval, c.http_timeout, c.shutdown_timeout) == \
        (7200, 1.5, 2.0, 1.0, 45.0)
    assert c.cache.min_interval == 0.02 and c.effective()["cache"]["min_interval_s"] == 0.02
    assert cfg.parse({**data, "cache": {"url": "redis://x"}}).cache.min_interval == 0.05  # the default
    assert cfg.parse({**data, "cache": {"url": "redis://x", "min_interval": 0}}).cache.min_interval == 0
    with pytest.raises(cfg.ConfigError, match=r"cache\.min_interval: must not be negative"):
        cfg.parse({**data, "cache": {"url": "redis://x", "min_interval": -1}})
    assert (c.health.destination_grace, c.health.subscription_grace, c.health.probe_interval) == (15, 60, 5)
    assert c.subscriptions[0].binning.interval_ns == 500_000_000 and c.self_metrics.interval_ns == 30 * 10**9
    with pytest.raises(cfg.ConfigError, match="invalid duration"):
        cfg.parse({**data, "shutdown_timeout": "soon"})


def test_secrets_come_from_the_environment(monkeypatch):
    data = {"subscriptions": [], "destinations": [{"name": "central-1", "url": "http://x", "database": "db",
                                                   "password_env": "MY_PW"}]}
    with pytest.raises(cfg.ConfigError, match="MY_PW is not set"):
        cfg.parse(data)
    monkeypatch.setenv("MY_PW", "from-env")
    assert cfg.parse(data).destinations[0].password == "from-env"
    monkeypatch.setenv("STATION_BRIDGE_CENTRAL_1_PASSWORD", "override")
    assert cfg.parse(data).destinations[0].password == "override"
    assert "override" not in json.dumps(cfg.parse(data).effective())


def test_validate_reads_an_instances_env_file_without_touching_the_process_environment(tmp_path, monkeypatch):
    """`station-bridge validate` reads each unit's <instance>.env for its secrets: into that
    instance's configuration only, never into os.environ (the next instance, or the validator's own
    credentials, would see them)."""
    from station_bridge.validate import load_instance
    monkeypatch.delenv("MY_PW", raising=False)
    config = tmp_path / "kraken.yml"
    config.write_text(yaml.safe_dump({"subscriptions": [], "destinations": [
        {"name": "central", "url": "http://x", "database": "db", "password_env": "MY_PW"}]}))
    (tmp_path / "kraken.env").write_text("# the unit's secrets\nMY_PW=\"from-file\"\n")
    before = dict(os.environ)
    assert load_instance(config).destinations[0].password == "from-file"
    assert dict(os.environ) == before
    with pytest.raises(cfg.ConfigError, match="MY_PW is not set"):
        cfg.load(config)


def _reference() -> dict:
    from importlib import resources
    return yaml.safe_load(resources.files("station_bridge").joinpath("default-config.yml").read_text())


# Reference values that are examples, not defaults (the file says so next to each).
EXAMPLES = {"subscriptions[0].topics", "subscriptions[0].mapping.tags", "subscriptions[0].mapping.static_tags",
            "subscriptions[0].mapping.drop", "subscriptions[0].mapping.derived_tags",
            "subscriptions[0].mapping.time.field", "subscriptions[0].mapping.fields", "destinations[0].username"}


def _leaves(data: object, path: str = "") -> list[tuple[str, list]]:
    """(printable path, access path) of every key, depth first."""
    out = []
    if isinstance(data, dict):
        for key, val in data.items():
            here = f"{path}.{key}" if path else key
            out.append((here, [key]))
            out += [(p, [key, *a]) for p, a in _leaves(val, here) if isinstance(val, dict | list)]
    elif isinstance(data, list):
        for i, val in enumerate(data):
            if isinstance(val, dict):
                out += [(p, [i, *a]) for p, a in _leaves(val, f"{path}[{i}]")]
    return out


def test_print_config_reference_holds_the_code_defaults():
    """Every value of print-config's reference is the code's default (or a marked example):
    deleting a key changes nothing in the parsed configuration."""
    reference = _reference()
    full = cfg.parse(reference)
    checked = []
    for printable, access in _leaves(reference):
        if any(printable == e or printable.startswith((e + ".", e + "[")) or e.startswith((printable + ".",
               printable + "[")) for e in EXAMPLES):
            continue  # an example, inside one, or holding one
        data = copy.deepcopy(reference)
        parent = data
        for key in access[:-1]:
            parent = parent[key]
        del parent[access[-1]]
        try:
            without = cfg.parse(data)
        except cfg.ConfigError:
            continue  # required (or required by its neighbours): no default to compare
        assert without == full, f"{printable}: the reference's value is not the code's default"
        checked.append(printable)
    assert {"destinations[0].batch_size", "journal.min_free_bytes", "health.destination_grace",
            "uniqueness.window", "http.listen", "shutdown_timeout"} <= set(checked)


def test_print_config_reference_names_every_key_the_code_reads(monkeypatch):
    reference = _reference()
    read: set[str] = set()
    original = cfg._Reader.get

    def recording(self, name, *args, **kwargs):
        read.add(f"{self.path}.{name}" if self.path else name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(cfg._Reader, "get", recording)
    cfg.parse(reference)
    present = {p for p, _ in _leaves(reference)}
    documented_in_comments = {"destinations[0].password_env", "subscriptions[0].mapping.derived_tags[0].path"}
    assert read - present - documented_in_comments == set()


def test_print_config_is_a_valid_configuration(tmp_path: Path, capsys):
    from station_bridge.cli import main
    main(["print-config"])
    path = tmp_path / "default.yml"
    path.write_text(capsys.readouterr().out)
    assert main(["check-config", str(path)]) == 0


def test_a_toml_file_configures_the_same_bridge_as_yaml(tmp_path: Path):
    (tmp_path / "bridge.toml").write_text("""
station = "ams1"
[[subscriptions]]
name = "kraken"
endpoints = ["tcp://127.0.0.1:5556"]
topics = ["kraken_tick"]
[subscriptions.mapping]
measurement = "ticks"
tags = ["instrument"]
fields = {bid = "float", volume = "integer"}
time = {field = "timestamp", format = "epoch_s"}
[[destinations]]
name = "local"
url = "http://127.0.0.1:8086"
database = "tick"
batch_size = 2000
flush_interval = "500ms"
[journal]
max_bytes = "64MiB"
""")
    (tmp_path / "bridge.yml").write_text("""
station: ams1
subscriptions:
  - {name: kraken, endpoints: ["tcp://127.0.0.1:5556"], topics: [kraken_tick],
     mapping: {measurement: ticks, tags: [instrument], fields: {bid: float, volume: integer},
               time: {field: timestamp, format: epoch_s}}}
destinations:
  - {name: local, url: "http://127.0.0.1:8086", database: tick, batch_size: 2000, flush_interval: 0.5}
journal: {max_bytes: 64MiB}
""")
    toml, yml = cfg.load(tmp_path / "bridge.toml"), cfg.load(tmp_path / "bridge.yml")
    assert toml.effective() | {"source": ""} == yml.effective() | {"source": ""}
    (tmp_path / "bad.toml").write_text("station = \n")
    with pytest.raises(cfg.ConfigError, match=r"bad\.toml: not valid TOML"):
        cfg.load(tmp_path / "bad.toml")


def test_http_listen_absent_or_null_is_the_default_and_empty_turns_it_off():
    base = {"subscriptions": [], "destinations": [{"name": "d", "url": "http://x", "database": "db"}]}
    assert cfg.parse(base).http_listen == "127.0.0.1:9108"
    assert cfg.parse({**base, "http": {"listen": None}}).http_listen == "127.0.0.1:9108"
    assert cfg.parse({**base, "http": {"listen": ""}}).http_listen is None


def test_durable_files_are_fsynced_with_their_directory(tmp_path: Path):
    """The journal's create, rename and delete reach the disk with their directory entries: a
    strace-free check that each durable step calls fsync on the file and the directory."""
    calls: list[str] = []
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    os.fsync = recording
    try:
        journal = Journal(tmp_path, max_bytes=1 << 20)
        journal.append(Chunk.of(["m v=1 1"]))
        created = list(calls)
        calls.clear()
        journal.ack(journal.oldest()[0])
        deleted = list(calls)
    finally:
        os.fsync = real_fsync
    assert any(c.endswith(".lp.tmp") for c in created) and str(tmp_path) in created  # file, then directory
    assert deleted == [str(tmp_path)]
