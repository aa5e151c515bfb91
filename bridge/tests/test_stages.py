"""Decoders, mapping, timestamps, binning, journal and configuration, stage by stage."""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station_bridge import config as cfg
from station_bridge.binning import TimeWeightedBinner
from station_bridge.decoders import DecodeError, build
from station_bridge.journal import Chunk, Intake, Journal
from station_bridge.lineproto import LineError
from station_bridge.mapping import MapError, Mapper
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
    for key, value in overrides.items():
        if key == "mapping":
            data["mapping"] = {**data["mapping"], **value}
        else:
            data[key] = value
    full = {"subscriptions": [data], "destinations": [{"name": "d", "url": "http://x", "database": "db"}]}
    return cfg.parse(full, "test.yml").subscriptions[0]


TICK = {"timestamp": T0 + 0.5, "instrument": "EURUSD", "bid": 1.08234, "ask": 1.08245, "volume": 1000000, "seq": 1}


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
    ("msgpack", [b"t", b"x" * 2_000_000], "oversized"),
    ("json", [b"t", b"{nope"], "undecodable"),
    ("text_json", [b"no-space"], "bad_framing"),
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


@pytest.mark.parametrize(("fmt", "tz", "value", "ns"), [
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
def test_timestamp_formats(fmt, tz, value, ns):
    assert parser(fmt, tz)(value) == ns


def test_binning_golden_check():
    second = 1_000_000_000
    base = T0 * second
    binner = TimeWeightedBinner(second, ["v"])
    out = []
    for offset, value in ((0.1, 100), (0.6, 200), (1.1, 100), (3.5, 50)):
        out += binner.add("s", base + int(offset * second), {"v": value})
    assert [(start - base, round(means["v"], 9)) for start, means in out] == [
        (0, 150.0), (second, 55.0), (2 * second, 50.0)]


def test_journal_segments_survive_restart_in_order_and_respect_the_cap(tmp_path: Path):
    journal = Journal(tmp_path, max_bytes=200)
    assert journal.append(Chunk.of(["a 1", "b 2"])) and journal.append(Chunk.of(["c 3"]))
    (tmp_path / "half-written.lp.tmp").write_text("never renamed")
    reopened = Journal(tmp_path, max_bytes=200)
    assert len(reopened) == 2 and reopened.points == 3
    assert not list(tmp_path.glob("*.tmp"))
    path, chunk = reopened.oldest()
    assert chunk.lines() == ["a 1", "b 2"] and chunk.count == 2
    reopened.ack(path)
    assert reopened.oldest()[1].lines() == ["c 3"] and reopened.points == 1
    assert reopened.append(Chunk.of(["x" * 300])) is False  # over the cap: refused, caller counts the drop
    assert reopened.bytes == len("c 3\n")


def test_chunks_split_and_join_by_lines():
    chunk = Chunk.of([f"m v={i} {i}" for i in range(10)], seq=100)
    head, rest = chunk.split(3)
    assert (head.lines(), head.count, head.seq) == ([f"m v={i} {i}" for i in range(3)], 3, 100)
    assert (rest.count, rest.seq, rest.lines()[0]) == (7, 103, "m v=3 3")
    assert Chunk.join([head, rest]) == Chunk(chunk.data, 10, 100)


def test_intake_log_forgets_only_what_is_settled_contiguously(tmp_path: Path):
    intake = Intake(tmp_path, segment_bytes=30)  # about two chunks per segment
    chunks = [Chunk.of([f"m v={i}i {i}", f"m v={i}i {i + 1}"]) for i in range(6)]
    for chunk in chunks:
        intake.append(chunk)
    assert [c.seq for c in chunks] == [0, 2, 4, 6, 8, 10]
    segments = sorted(tmp_path.glob("*.wal"))
    assert len(segments) >= 3
    # Settled out of order (a later batch journaled while an earlier one is still in flight):
    # nothing may be forgotten until the earlier one settles too.
    intake.settle(2, 8)
    assert sorted(tmp_path.glob("*.wal")) == segments
    intake.settle(0, 2)
    remaining = sorted(tmp_path.glob("*.wal"))
    assert remaining and b"m v=5i 6" in remaining[-1].read_bytes()
    intake.settle(10, 2)
    assert not list(tmp_path.glob("*.wal"))
    intake.append(Chunk.of(["m v=9i 9"]))  # a new segment after everything was forgotten
    assert len(list(tmp_path.glob("*.wal"))) == 1


def test_journal_adopts_an_intake_log_left_by_a_killed_process(tmp_path: Path):
    intake = Intake(tmp_path)
    intake.append(Chunk.of(["m v=1i 1", "m v=2i 2"]))
    intake.append(Chunk.of(["m v=3i 3"]))
    intake.settle(0, 1)  # written; the segment still holds it, which is harmless to write again
    wal = next(tmp_path.glob("*.wal"))
    with open(wal, "ab") as handle:
        handle.write(b"m v=4i")  # the process died inside a write
    journal = Journal(tmp_path, max_bytes=1 << 20)
    assert journal.adopted == 3 and journal.points == 3
    assert not list(tmp_path.glob("*.wal"))
    assert journal.oldest()[1].lines() == ["m v=1i 1", "m v=2i 2", "m v=3i 3"]


def test_config_errors_name_the_file_and_key(tmp_path: Path):
    path = tmp_path / "bridge.yml"
    path.write_text("subscriptions:\n  - name: a\n    endpoints: [tcp://x:1]\n    mapping:\n"
                    "      measurement: m\n      fields: {bid: flaot}\ndestinations: []\n")
    with pytest.raises(cfg.ConfigError, match=r"bridge.yml: subscriptions\[0\].mapping.fields.bid: unknown type"):
        cfg.load(path)
    path.write_text("subscriptions: []\ndestinations: [{name: d, url: http://x, database: db, batchsize: 1}]\n")
    with pytest.raises(cfg.ConfigError, match=r"destinations\[0\].batchsize: unknown key"):
        cfg.load(path)


def test_secrets_come_from_the_environment(monkeypatch):
    data = {"subscriptions": [], "destinations": [{"name": "central-1", "url": "http://x", "database": "db",
                                                   "password_env": "MY_PW"}]}
    with pytest.raises(cfg.ConfigError, match="MY_PW is not set"):
        cfg.parse(data)
    monkeypatch.setenv("MY_PW", "from-env")
    assert cfg.parse(data).destinations[0].password == "from-env"
    monkeypatch.setenv("STATION_BRIDGE_CENTRAL_1_PASSWORD", "override")
    assert cfg.parse(data).destinations[0].password == "override"
    # The secret stays out of the configuration's printable form.
    assert "override" not in repr(cfg.parse(data).raw) and "from-env" not in repr(cfg.parse(data).raw)


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
  - {name: local, url: "http://127.0.0.1:8086", database: tick, batch_size: 2000}
journal: {max_bytes: 64MiB}
""")
    toml, yml = cfg.load(tmp_path / "bridge.toml"), cfg.load(tmp_path / "bridge.yml")
    assert (toml.subscriptions, toml.destinations, toml.journal_max_bytes, toml.station) == \
        (yml.subscriptions, yml.destinations, yml.journal_max_bytes, yml.station)
    (tmp_path / "bad.toml").write_text("station = \n")
    with pytest.raises(cfg.ConfigError, match=r"bad\.toml: not valid TOML"):
        cfg.load(tmp_path / "bad.toml")


def test_metrics_expose_large_counts_exactly():
    from station_bridge.metrics import Metrics
    metrics = Metrics()
    metrics.inc("bridge_received_messages_total", 1_030_175, subscription="kraken")
    metrics.inc("bridge_write_seconds_sum", 0.125, destination="local")
    text = metrics.render()
    assert 'bridge_received_messages_total{subscription="kraken"} 1030175\n' in text
    assert 'bridge_write_seconds_sum{destination="local"} 0.125\n' in text
