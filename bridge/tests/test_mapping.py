"""Mapping: the one series key, uniqueness that holds, named reasons, compiled == general path."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station_bridge import config as cfg
from station_bridge.binning import Binning
from station_bridge.decoders import build
from station_bridge.lineproto import LineError, series_key
from station_bridge.mapping import MapError, Mapper, Uniqueness

T0 = 1_700_000_000
TICK = {"timestamp": T0 + 0.5, "instrument": "EURUSD", "bid": 1.08234, "ask": 1.08245, "volume": 1000000, "seq": 1}


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


def plain(**mapping):
    """A subscription the compiled fast path covers (no derived tags)."""
    return sub(mapping={"derived_tags": [], **mapping})


def test_the_seeds_kraken_tick_maps_to_one_line_with_tags_sorted_by_key():
    spec = sub()
    topic, record = build(spec)([b"kraken_tick", msgpack.packb(TICK)])
    line = Mapper(spec, station="ams1").line(topic, record)
    assert line == ("ticks,base=EUR,instrument=EURUSD,station=ams1,term=USD "
                    "bid=1.08234,ask=1.08245,volume=1000000i 1700000000500000000")


def test_both_paths_build_the_series_key_of_lineproto():
    spec = plain(tags=["zone", "instrument", "a"], static_tags={"m": "x y", "b": "1"})
    record = {**TICK, "zone": "eu,west", "a": "=", "instrument": "EUR USD"}
    expected = series_key("ticks", [("zone", "eu,west"), ("a", "="), ("instrument", "EUR USD"), ("m", "x y"),
                                    ("b", "1"), ("station", "ams1")])
    assert expected == r"ticks,a=\=,b=1,instrument=EUR\ USD,m=x\ y,station=ams1,zone=eu\,west"
    compiled, general = Mapper(spec, "ams1"), Mapper(spec, "ams1")
    assert compiled.line is not compiled._line
    for function in (compiled.keyed_line, general._keyed_line):
        line, series, _ = function("t", record)
        assert series == expected and line.startswith(expected + " ")


def test_measurement_from_topic_with_a_comma_or_space_keeps_one_escaping_everywhere():
    """Issue 11: with cache or binning on, a topic holding `,` or a space broke the series key."""
    spec = sub(mapping={"measurement": None, "measurement_from": "topic", "derived_tags": [],
                        "time": {"field": "timestamp", "format": "epoch_s"}},
               binning={"interval": "1s", "fields": ["bid"]})
    mapper = Mapper(spec, station="ams 1")
    binning = Binning(spec.binning)
    lines = []
    for i in range(3):
        point = mapper.point("fx ticks,eu", {**TICK, "timestamp": T0 + i})
        assert point.series == r"fx\ ticks\,eu,instrument=EURUSD,station=ams\ 1"
        assert point.tags == {"instrument": "EURUSD", "station": "ams 1"}
        lines += binning.lines(point)
    assert lines == [r"fx\ ticks\,eu_binned,instrument=EURUSD,station=ams\ 1 bid=1.08234 1700000000000000000",
                     r"fx\ ticks\,eu_binned,instrument=EURUSD,station=ams\ 1 bid=1.08234 1700000001000000000"]


@pytest.mark.parametrize(("record", "reason"), [
    ({"timestamp": T0, "instrument": "X"}, "missing_field"),
    ({"timestamp": T0, "bid": float("nan")}, "non_finite"),
    ({"timestamp": T0, "bid": "1.x"}, "wrong_type"),
    ({"timestamp": "yesterday", "bid": 1.0}, "bad_timestamp"),
    ({"timestamp": T0, "bid": 1.0, "instrument": "a\nb"}, "unrepresentable"),
    ({"timestamp": T0, "bid": 1.0, "instrument": "ends\\"}, "unrepresentable"),
    ({"timestamp": T0, "bid": 1.0, "instrument": b"\xff"}, "invalid_utf8"),
    ({"timestamp": T0, "bid": 1.0, "instrument": "\ud800"}, "invalid_utf8"),
    ({"timestamp": T0, "bid": {"a": {"b": 1}}}, "nested_value"),
    ({"timestamp": T0, "bid": 1.0, "instrument": [1, 2]}, "nested_value"),
    ({"timestamp": T0, "volume": 2**63}, "integer_overflow"),
    ({"timestamp": T0, "bid": 10**400}, "integer_overflow"),
    ({"timestamp": T0, "bid": 1.0, "instrument": "x" * 70_000}, "key_too_long"),
    ({"timestamp": 10**12, "bid": 1.0}, "bad_timestamp"),
])
@pytest.mark.parametrize("paths", ["compiled", "general"])
def test_bad_records_are_refused_with_a_named_reason(record, reason, paths):
    # (instrument optional: these records are about fields and times, most carry no instrument)
    mapper = Mapper(plain(fields={"bid": "float", "volume": "integer", "note": "string"}, optional_tags=["instrument"]))
    function = mapper.line if paths == "compiled" else mapper._line
    with pytest.raises((MapError, LineError)) as err:
        function("t", record)
    assert err.value.reason == reason


def test_nested_values_in_a_string_field_are_refused_not_stored_as_repr():
    mapper = Mapper(plain(fields={"note": "string"}, optional_tags=["instrument"]))
    with pytest.raises(LineError) as err:
        mapper.line("t", {"timestamp": T0, "note": {"a": {"b": 1}}})
    assert err.value.reason == "nested_value"
    assert mapper.line("t", {"timestamp": T0, "note": 'x "y"\nz\\'}).endswith(r' note="x \"y\"' + "\nz\\\\\" "
                                                                                + "1700000000000000000")


def test_measurement_names_influxdb_stores_are_accepted():
    """Issue 11 over-refusal: `=`, a backslash inside, carriage returns are stored by influxd 1.6.7."""
    mapper = Mapper(sub(mapping={"measurement": None, "measurement_from": "topic", "derived_tags": []}))
    for topic in ("a=b", "back\\slash", "cr\rname", 'q"uote', "tab\tinside"):
        assert mapper.line(topic, dict(TICK)).startswith(topic.replace(",", r"\,").replace(" ", r"\ "))
    for topic, reason in (("#comment", "unrepresentable"), ("\tlead", "unrepresentable"), ("end\\", "unrepresentable"),
                          ("a\\,b", "unrepresentable"), ("a\\=b", "unrepresentable"), ("", "unrepresentable")):
        with pytest.raises(LineError) as err:
            mapper.line(topic, dict(TICK))
        assert err.value.reason == reason, topic


# --- uniqueness --------------------------------------------------------------------------------

def stamps(mapper: Mapper, seconds: list[float], instrument: str = "EURUSD") -> list[int]:
    return [int(mapper.line("t", {**TICK, "instrument": instrument, "timestamp": s}).rsplit(" ", 1)[1])
            for s in seconds]


@pytest.mark.parametrize("paths", ["compiled", "general"])
def test_equal_source_times_never_share_a_timestamp(paths):
    mapper = Mapper(plain())
    if paths == "general":
        mapper.line = mapper._line
    ns = T0 * 10**9
    # A nudged t+1 must not take a real t+1, and t, t+5, t must not replace a point (issue 11).
    got = stamps(mapper, [T0, T0, T0 + 1e-9, T0, T0 + 5e-9, T0])
    assert len(set(got)) == len(got)
    assert got[0] == ns and got[1] == ns + 1
    # A repeated pattern: every point keeps a distinct time.
    pattern = [T0 + k for k in (0, 1, 2)] * 50
    got = stamps(mapper, pattern, "GBPUSD")
    assert len(set(got)) == len(got) == 150
    # Another series is independent.
    assert stamps(mapper, [T0], "USDJPY") == [ns]


def test_uniqueness_is_shared_by_every_subscription_of_a_bridge():
    shared = Uniqueness()
    a, b = Mapper(plain(), uniqueness=shared), Mapper(plain(), uniqueness=shared)
    assert len(set(stamps(a, [T0, T0]) + stamps(b, [T0, T0]))) == 4


def test_uniqueness_memory_is_bounded_and_the_bound_is_counted():
    unique = Uniqueness(window=8, max_series=10)
    for i in range(100):
        unique.claim(f"s{i}", 1000)
    assert len(unique.current) + len(unique.previous) <= 10 and unique.evicted >= 80
    for t in range(1000):
        unique.claim("one", 10_000 + t)
    times = unique.current["one"]
    assert len(times) <= unique.trim and list(times) == sorted(times)
    assert unique.claim("one", 10_000) == 10_000 and unique.unchecked == 1  # older than the window: counted
    # A run of equal times far longer than the window still never repeats a time.
    got = [unique.claim("run", 5) for _ in range(200)]
    assert got == list(range(5, 205))
    # Several repeated times interleaved, each repeated far more often than the window holds.
    got = [unique.claim("interleaved", 10**9 * (i % 7)) for i in range(3000)]
    assert len(set(got)) == 3000 and unique.unchecked == 1


def test_random_duplicates_against_a_reference_model():
    """Any stream whose duplicates stay within the window: every (series, time) is distinct."""
    rng = random.Random(11)
    unique = Uniqueness(window=2048)  # about 1,700 points per series: all within the window
    used: dict[str, set[int]] = {}
    for _ in range(5000):
        series = rng.choice("abc")
        t = 10_000 + rng.randrange(40)  # many equal and out-of-order times, all within the window
        got = unique.claim(series, t)
        assert got >= t and got not in used.setdefault(series, set())
        used[series].add(got)
    assert unique.unchecked == 0


def test_receive_time_is_unique_without_a_time_field():
    mapper = Mapper(sub(mapping={"time": {"field": None}, "optional_tags": ["instrument", "base", "term"]}))
    got = [int(mapper.line("t", {"bid": 1.0}).rsplit(" ", 1)[1]) for _ in range(1000)]
    assert len(set(got)) == 1000 and got == sorted(got)


def test_missing_time_field_counts_a_fallback():
    mapper = Mapper(plain())
    mapper.line("t", {"bid": 1.0, "instrument": "EURUSD"})
    assert mapper.timestamp_fallbacks == 1


# --- compiled fast path == general path -----------------------------------------------------------
_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=6),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["EURUSD", "a,b=c d", "x\ny", "tail\\", "", "1.5", "true", "\ud800", "e\u0301"]))
_records = st.fixed_dictionaries({}, optional={
    "instrument": _values, "venue": _values, "bid": _values, "ask": _values, "volume": _values,
    "flag": _values, "note": _values, "timestamp": _values})


def _outcome(function, record):
    try:
        return "line", function("t", record)
    except (MapError, LineError) as exc:
        return "refused", exc.reason


@pytest.mark.parametrize("time_format", ["epoch_s", "epoch_ms", "epoch_ns", "auto"])
@given(records=st.lists(_records, min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_compiled_mapping_agrees_with_the_general_path(time_format, records):
    spec = sub(mapping={"tags": ["instrument", "venue"], "derived_tags": [], "drop": [],
                        "static_tags": {"desk": "fx", "zz": "last"},
                        "fields": {"bid": "float", "ask": "float", "volume": "integer", "flag": "boolean",
                                   "note": "string"},
                        "time": {"field": "timestamp", "format": time_format}})
    compiled, general = Mapper(spec, station="ams1"), Mapper(spec, station="ams1")
    assert compiled.line is not compiled._line  # the generated function is in use
    for record in records:
        fast, slow = _outcome(compiled.line, record), _outcome(general._line, record)
        if record.get("timestamp") is None and fast[0] == "line" and slow[0] == "line":
            # Receive time: the two mappers' clocks differ; everything else must not.
            fast, slow = (fast[0], fast[1].rsplit(" ", 1)[0]), (slow[0], slow[1].rsplit(" ", 1)[0])
        assert fast == slow, record
