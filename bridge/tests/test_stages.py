"""Decoders, mapping, timestamps, binning, journal and configuration, stage by stage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station_bridge import config as cfg
from station_bridge.binning import TimeWeightedBinner
from station_bridge.decoders import DecodeError, build
from station_bridge.journal import Journal
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


def test_the_seeds_kraken_tick_maps_to_one_line():
    spec = sub()
    topic, record = build(spec)([b"kraken_tick", msgpack.packb(TICK)])
    line = Mapper(spec, station="ams1").line(topic, record)
    assert line == ("ticks,instrument=EURUSD,base=EUR,term=USD,station=ams1 "
                    "bid=1.08234,ask=1.08245,volume=1000000i 1700000000500000000")


def test_json_and_text_framings():
    spec = sub(framing="json")
    assert build(spec)([b"t", json.dumps(TICK).encode()])[1]["bid"] == 1.08234
    spec = sub(framing="text_json")
    assert build(spec)([b"t " + json.dumps(TICK).encode()]) == ("t", json.loads(json.dumps(TICK)))
    spec = sub(framing="text_delimited", field_order=["timestamp", "instrument", "bid", "ask", "volume"])
    topic, record = build(spec)([b"fx 1700000000.5\x01EURUSD\x011.1\x011.2\x017"])
    line = Mapper(spec).line(topic, {**record, "timestamp": float(record["timestamp"])})
    assert line.startswith("ticks,instrument=EURUSD,base=EUR,term=USD bid=1.1,ask=1.2,volume=7i ")


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


@pytest.mark.parametrize(("record", "reason"), [
    ({"timestamp": T0, "instrument": "X"}, "missing_field"),
    ({"timestamp": T0, "bid": float("nan")}, "non_finite"),
    ({"timestamp": T0, "bid": "1.x"}, "wrong_type"),
    ({"timestamp": "yesterday", "bid": 1.0}, "bad_timestamp"),
    ({"timestamp": T0, "bid": 1.0, "instrument": "a\nb"}, "invalid_tag"),
    ({"timestamp": T0, "bid": 1.0, "instrument": b"\xff"}, "invalid_utf8"),
])
def test_bad_records_are_refused_with_a_reason(record, reason):
    with pytest.raises((MapError, LineError)) as err:
        Mapper(sub()).line("t", record)
    assert err.value.reason == reason


def test_measurement_from_topic_and_unknown_topics():
    mapper = Mapper(sub(mapping={"measurement": None, "measurement_from": "topic",
                                 "measurements": {"kraken_tick": "ticks"}}))
    assert mapper.line("kraken_tick", TICK).startswith("ticks,")
    with pytest.raises(MapError) as err:
        mapper.line("other", TICK)
    assert err.value.reason == "unknown_topic"


def test_same_series_same_timestamp_never_overwrites():
    mapper = Mapper(sub())
    stamps = [mapper.line("t", dict(TICK)).rsplit(" ", 1)[1] for _ in range(3)]
    assert stamps == ["1700000000500000000", "1700000000500000001", "1700000000500000002"]


def test_receive_time_is_unique_without_a_time_field():
    mapper = Mapper(sub(mapping={"time": {"field": None}}))
    stamps = [int(mapper.line("t", {"bid": 1.0}).rsplit(" ", 1)[1]) for _ in range(1000)]
    assert len(set(stamps)) == 1000 and stamps == sorted(stamps)


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
    assert journal.append(["a 1", "b 2"]) and journal.append(["c 3"])
    (tmp_path / "half-written.lp.tmp").write_text("never renamed")
    reopened = Journal(tmp_path, max_bytes=200)
    assert len(reopened) == 2 and reopened.points == 3
    assert not list(tmp_path.glob("*.tmp"))
    path, lines = reopened.oldest()
    assert lines == ["a 1", "b 2"]
    reopened.ack(path)
    assert reopened.oldest()[1] == ["c 3"] and reopened.points == 1
    assert reopened.append(["x" * 300]) is False  # over the cap: refused, caller counts the drop
    assert reopened.bytes == len("c 3\n")


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
    assert "STATION_BRIDGE_CENTRAL_1_PASSWORD" in os.environ


def test_print_config_is_a_valid_configuration(tmp_path: Path, capsys):
    from station_bridge.cli import main
    main(["print-config"])
    path = tmp_path / "default.yml"
    path.write_text(capsys.readouterr().out)
    assert main(["check-config", str(path)]) == 0
