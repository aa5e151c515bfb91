"""Strict by default (issue 21): numbers from text follow JSON's grammar, a point's time lies in a
window around its receive time, a nudge past InfluxDB's last nanosecond is refused, an empty
`each` element makes no ghost point, an absent tag refuses its message unless declared optional
or defaulted. Each against an independent oracle (json.loads, the clock), through the mapper
and, where the compiled path takes the shape, through C as well."""

from __future__ import annotations

import json
import math
import time

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from station_bridge.config import parse
from station_bridge.lineproto import LineError, format_field_value

NUMBER_TEXT = st.one_of(
    st.text(alphabet="0123456789-+.eE_ \u0663\u00b2", max_size=12),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,5})?([eE][+-]?[0-9]{1,3})?\Z"),
    st.sampled_from(["NaN", "nan", "inf", "-Infinity", "Infinity", "1_000.5", "\u0661\u0662\u0663", " 12.5 ", "+1",
                     "01", "1.", ".5", "-0", "0", "1e5", "1E+5", "-", "", "0x10", "1e", "١٢٣"]),
)


def json_number(text: str) -> object:
    """The oracle: what JSON (RFC 8259) reads from `text` as a whole, or None when it is no number."""
    def refuse(_: str) -> None:
        raise ValueError("not JSON")
    if text != text.strip() or not text:
        return None
    try:
        value = json.loads(text, parse_constant=refuse)
    except ValueError:
        return None
    return value if type(value) in (int, float) else None


@given(NUMBER_TEXT)
@example("1_000.5")
@example("\u0661\u0662\u0663")
@example(" 12.5 ")
def test_a_float_from_text_is_accepted_exactly_when_json_reads_a_number(text):
    expected = json_number(text)
    for given_as in (text, text.encode("utf-8")):
        if expected is None:
            with pytest.raises(LineError) as refused:
                format_field_value(given_as, "float")
            assert refused.value.reason == "wrong_type"
        elif math.isfinite(float(text)):  # JSON's number, read as a double (-0 is -0.0)
            assert format_field_value(given_as, "float") == repr(float(text))
        else:
            with pytest.raises(LineError):
                format_field_value(given_as, "float")


@given(NUMBER_TEXT)
@example("01")
@example("+1")
def test_an_integer_from_text_is_accepted_exactly_when_json_reads_an_integer(text):
    expected = json_number(text)
    if type(expected) is int and -(2**63) <= expected < 2**63:
        assert format_field_value(text, "integer") == f"{expected}i"
    else:
        with pytest.raises(LineError):
            format_field_value(text, "integer")


def subscription(mapping: dict, framing: str = "msgpack", **extra: object):
    config = parse({"subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:1"], "framing": framing,
                                       "mapping": mapping, **extra}],
                    "destinations": [{"name": "d", "url": "http://127.0.0.1:1", "database": "x"}]})
    return config.subscriptions[0]


def test_two_points_of_one_series_at_influxdbs_last_nanosecond_land_once_and_the_other_is_counted(
        tmp_path, influxd, database, endpoint, zmq_context):
    """Issue 21: the uniqueness nudge moved the second point past InfluxDB's range: neither landed
    nor counted. Now one lands and the other is refused bad_timestamp, counted."""
    from harness import BridgeProcess, publisher, quiet_ledger, subscribed, wait_for

    from station_bridge.lineproto import MAX_TIME
    from station_bridge.metrics import value
    mapping = {"measurement": "edge", "tags": ["instrument"], "fields": {"bid": "float"},
               "time": {"field": "t", "format": "epoch_ns"}}
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscription={"mapping": mapping}).start()
    pub = publisher(zmq_context, endpoint)
    subscribed(pub)
    for t in (MAX_TIME, MAX_TIME, MAX_TIME - 1):
        pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": "X", "bid": 1.5, "t": t})])
    samples = wait_for(lambda: (lambda s: s if value(s, "bridge_received_messages_total", subscription="kraken")
                                == 3 else None)(bridge.samples()), 10, "received")
    samples = quiet_ledger(bridge)
    rows = influxd.query('SELECT bid FROM "edge"', db=database)
    landed = value(samples, "bridge_mapped_messages_total", subscription="kraken")
    refused = value(samples, "bridge_rejected_messages_total", subscription="kraken", reason="bad_timestamp")
    assert len(rows) == landed == value(samples, "bridge_written_points_total", destination="local")
    assert landed + refused == 3 and refused >= 1, (rows, landed, refused)
    bridge.stop()


def test_an_empty_each_element_makes_no_ghost_point():
    """Issue 21: with message-level fields ($.U), an empty level [] was stored with only the
    update ids. Now the message is refused (missing_field), whole."""
    from station_bridge.mapping import MapError, Mapper
    spec = subscription({"measurement": "depth", "each": "<side:b|a>[<level>]",
                         "fields": {"price": {"path": "[0]", "type": "float"}, "qty": {"path": "[1]", "type": "float"},
                                    "first": {"path": "$.U", "type": "integer"}},
                         "time": {"path": "$.E", "format": "epoch_ms"}})
    mapper = Mapper(spec)
    now_ms = time.time_ns() // 1_000_000
    ok = mapper.lines("depth", {"U": 7, "E": now_ms, "b": [["1.5", "2"], ["1.4", "3"]], "a": [["1.6", "1"]]})
    assert len(ok) == 3 and all(",side=" in line for line in ok)
    with pytest.raises(MapError) as refused:
        mapper.lines("depth", {"U": 8, "E": now_ms, "b": [["1.5", "2"], []], "a": []})
    assert refused.value.reason == "missing_field" and "element 1" in str(refused.value)


@pytest.mark.parametrize(("offset_s", "accepted"), [(0, True), (23 * 3600, True), (25 * 3600, False),
                                                    (-3650 * 86400 + 86400, True), (-3651 * 86400, False)])
@pytest.mark.parametrize("path", ["compiled", "general"])
def test_a_time_outside_the_window_around_the_receive_time_is_refused(offset_s, accepted, path):
    """Issue 21: a station clock or publisher bug stamping 2033 was stored as given."""
    from station_bridge.mapping import MapError, Mapper
    spec = subscription({"measurement": "m", "tags": ["i"], "fields": {"v": "float"},
                         "time": {"field": "t", "format": "epoch_s"}})
    mapper = Mapper(spec)
    assert mapper.flat
    function = mapper.line if path == "compiled" else mapper._line
    record = {"i": "x", "v": 1.0, "t": time.time() + offset_s}
    if accepted:
        assert function("t", record).startswith("m,i=x v=1.0 ")
    else:
        with pytest.raises(MapError) as refused:
            function("t", record)
        assert refused.value.reason == "bad_timestamp" and "receive time" in str(refused.value)
    wide = Mapper(subscription({"measurement": "m", "tags": ["i"], "fields": {"v": "float"},
                                "time": {"field": "t", "format": "epoch_s", "accept_ahead": None,
                                         "accept_behind": None}}))
    assert wide.line("t", record).startswith("m,i=x v=1.0 ")


@pytest.mark.parametrize("path", ["compiled", "general"])
def test_an_absent_tag_refuses_unless_optional_or_defaulted(path):
    """Issue 21: an OANDA message without `instrument` landed untagged, merged with every other."""
    from station_bridge.mapping import MapError, Mapper
    record = {"v": 1.0, "t": time.time()}

    def mapper(**extra):
        m = Mapper(subscription({"measurement": "m", "tags": ["instrument"], "fields": {"v": "float"},
                                 "time": {"field": "t", "format": "epoch_s"}, **extra}))
        return m.line if path == "compiled" else m._line
    with pytest.raises(MapError) as refused:
        mapper()("t", record)
    assert refused.value.reason == "missing_field" and "'instrument' is absent" in str(refused.value)
    assert mapper(optional_tags=["instrument"])("t", record).startswith("m v=1.0 ")
    assert mapper(tag_defaults={"instrument": "none"})("t", record).startswith("m,instrument=none v=1.0 ")
    assert mapper()("t", {**record, "instrument": "EUR"}).startswith("m,instrument=EUR v=1.0 ")
    # an empty value is no tag value either (InfluxDB stores none): refused, unless optional/defaulted
    with pytest.raises(MapError) as refused:
        mapper()("t", {**record, "instrument": ""})
    assert refused.value.reason == "missing_field" and "'instrument' is empty" in str(refused.value)
    assert mapper(optional_tags=["instrument"])("t", {**record, "instrument": ""}).startswith("m v=1.0 ")
    assert mapper(tag_defaults={"instrument": "none"})("t", {**record, "instrument": ""}).startswith(
        "m,instrument=none v=1.0 ")
