"""Mapping paths integrated (docs/mapping-paths.md, README "Mapping"): configuration keys and their
errors, the mapper's rows path (explosions, topic tags, paths) and its agreement with the flat
fast path."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from station_bridge import config as cfg
from station_bridge.binning import Binning
from station_bridge.cli import main
from station_bridge.decoders import build
from station_bridge.lineproto import LineError, parse_line
from station_bridge.mapping import MapError, Mapper, Uniqueness
from station_bridge.paths import Path

DESTINATIONS = [{"name": "d", "url": "http://x", "database": "db"}]
KRAKEN_MAPPING = {"measurement": "kraken_depth", "each": "result.<pair>.<side:asks|bids>[<level>]",
                  "fields": {"price": {"path": "[0]", "type": "float"}, "volume": {"path": "[1]", "type": "float"}},
                  "time": {"path": "[2]", "format": "epoch_s"}}
V20_MAPPING = {"measurement": "v20_prices", "topic": {"tag": "instrument"}, "fields": {"bid": "float", "ask": "float"},
               "time": {"field": "time", "format": "rfc3339"}}
KRAKEN_DEPTH = json.loads(
    '{"error":[],"result":{"XXBTZCAD":{"asks":[["563.45000","0.750",1764439880],["563.50000","1.2",1764439881]],'
    '"bids":[["540.00000","0.002",1764425123]]},"XETHZEUR":{"bids":[["1.5","3",1764425124]]}}}')


def subscription(mapping: dict[str, Any], framing: str = "text_json", **extra: Any) -> cfg.SubscriptionSpec:
    data = {"name": "s", "endpoints": ["tcp://127.0.0.1:1"], "framing": framing, "mapping": mapping, **extra}
    return cfg.parse({"subscriptions": [data], "destinations": DESTINATIONS}, "test.yml").subscriptions[0]


def reason(mapper: Mapper, topic: str, record: object) -> str:
    with pytest.raises((MapError, LineError)) as caught:
        mapper.lines(topic, record)  # type: ignore[arg-type]
    return caught.value.reason  # type: ignore[union-attr]


# --- configuration ----------------------------------------------------------------------------------


def test_each_max_points_and_path_forms_parse():
    m = subscription({**KRAKEN_MAPPING, "max_points": 50, "tags": {"venue": "$.meta.venue"},
                      "derived_tags": [{"path": "$.meta.symbol", "regex": "^(?P<base>[A-Z]{3})"}]}).mapping
    assert str(m.each) == "result.<pair>.<side:asks|bids>[<level>]" and m.each.captures == ("pair", "side", "level")
    assert m.captures == ("pair", "side", "level") and m.max_points == 50
    assert m.fields == {"price": "float", "volume": "float"}  # the types, as today
    assert {n: p.render() for n, p in m.field_paths.items()} == {"price": "[0]", "volume": "[1]"}
    assert m.tags == ["venue"] and m.tag_paths["venue"].render() == "$.meta.venue"
    assert m.time.field is None and m.time.path.render() == "[2]" and m.time.format == "epoch_s"
    assert m.derived_tags[0].source is None and m.derived_tags[0].path.render() == "$.meta.symbol"
    assert not m.is_flat
    assert list(m.sources()) == ["mapping.tags.venue", "mapping.derived_tags[0]", "mapping.fields.price",
                                 "mapping.fields.volume", "mapping.time"]


def test_literal_forms_keep_their_meaning_and_a_dot_stays_part_of_the_key():
    m = subscription({"measurement": "t", "tags": ["result.pair"], "fields": {"a.b": "float"},
                      "time": {"field": "t.s", "format": "epoch_s"}}, framing="msgpack").mapping
    assert m.tag_paths == {"result.pair": Path.key("result.pair")} and m.field_paths == {"a.b": Path.key("a.b")}
    assert m.time.field == "t.s" and m.time.path is None and m.is_flat
    # (times of 1970 on purpose: no window around the receive time here)
    mapper = Mapper(subscription({"measurement": "t", "tags": ["result.pair"], "fields": {"a.b": "float"},
                                  "time": {"field": "t.s", "format": "epoch_s", "accept_behind": None}},
                                 framing="msgpack"))
    assert not mapper.multi
    assert mapper.line("x", {"result.pair": "XY", "a.b": 1.5, "t.s": 2, "result": {"pair": "no"}}) == (
        "t,result.pair=XY a.b=1.5 2000000000")
    # a one-key path is flat too: the same generated function
    flat = subscription({"measurement": "t", "tags": {"pair": "pair"}, "fields": {"v": {"path": "v", "type": "float"}},
                         "time": {"path": "ts", "format": "epoch_s", "accept_behind": None}}, framing="msgpack")
    assert flat.mapping.is_flat
    assert Mapper(flat).line("x", {"pair": "p", "v": 1, "ts": 3}) == "t,pair=p v=1.0 3000000000"


def test_topic_keys_parse_and_appear_in_effective_tags():
    spec = subscription({**V20_MAPPING, "topic": {"tag": "instrument",
                                                  "regex": "^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$"}},
                        framing="text_delimited", field_order=["time", "bid", "ask"])
    assert spec.mapping.topic_tag == "instrument" and spec.mapping.topic_regex.groupindex.keys() == {"base", "quote"}
    assert spec.mapping.topic_tags == ("instrument", "base", "quote")
    config = cfg.parse({"station": "st1", "subscriptions": [
        {"name": "v20", "endpoints": ["tcp://127.0.0.1:1"], "framing": "text_delimited",
         "field_order": ["time", "bid", "ask"], "mapping": spec_mapping(spec)},
        {"name": "kr", "endpoints": ["tcp://127.0.0.1:2"], "framing": "text_json", "mapping": KRAKEN_MAPPING}],
        "destinations": DESTINATIONS})
    v20, kr = config.effective()["subscriptions"]
    assert v20["tags"] == ["base", "instrument", "quote", "station"]
    assert kr["tags"] == ["level", "pair", "side", "station"]
    # an explosion changes neither the measurements nor the fields
    assert kr["measurements"] == ["kraken_depth"] and kr["fields"] == {"price": "float", "volume": "float"}
    assert (kr["each"], kr["max_points"], kr["topic"]) == ("result.<pair>.<side:asks|bids>[<level>]", 10_000, None)
    assert kr["time"] == {"field": None, "path": "[2]", "format": "epoch_s", "timezone": None,
                          "accept_ahead_s": 86400.0, "accept_behind_s": 87600 * 3600.0}
    assert v20["topic"] == {"tag": "instrument", "regex": "^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$"}
    assert v20["each"] is None and v20["time"]["field"] == "time"


def spec_mapping(spec: cfg.SubscriptionSpec) -> dict:
    m = spec.mapping
    return {"measurement": m.measurement, "fields": m.fields, "time": {"field": m.time.field, "format": m.time.format},
            "topic": {"tag": m.topic_tag, "regex": m.topic_regex.pattern if m.topic_regex else None}}


@pytest.mark.parametrize(("mapping", "message"), [
    ({"each": "result.pair"}, "s.mapping.each: path result.pair has no wildcard"),
    ({"each": "result..x[*]"}, "s.mapping.each: path 'result..x[*]', at character 8: expected a key after '.'"),
    ({"each": "a.<k>.<k>"}, "s.mapping.each: path 'a.<k>.<k>': capture <k> appears twice"),
    ({"each": "a.<p>", "tags": ["p"]}, "s.mapping.each: tag key 'p' also comes from tags"),
    ({"each": "a.<price>"}, "s.mapping.each: capture <price> is also declared as a field (fields.price)"),
    ({"each": "a.<time>"}, "s.mapping.each: `time` cannot be a tag key"),
    ({"max_points": 0}, "s.mapping.max_points: must be positive, got 0"),
    ({"fields": {"price": {"path": "a.*", "type": "float"}}},
     "s.mapping.fields.price.path: path 'a.*': wildcards (*, <name>) are allowed only in `each`"),
    ({"fields": {"price": {"path": ["0"], "type": "float"}}},
     "s.mapping.fields.price.path: a path is a string, got ['0'] (in YAML, quote a path that starts with '['"),
    ({"fields": {"price": {"path": "[0]", "type": "decimal"}}}, "s.mapping.fields.price: unknown type 'decimal'"),
    ({"fields": {"price": {"path": "[0]"}}}, "s.mapping.fields.price.type: is required"),
    ({"fields": {"price": {"path": "[0]", "type": "float", "unit": "x"}}}, "s.mapping.fields.price.unit: unknown key"),
    ({"fields": {"price": 3}}, "s.mapping.fields.price: expected a type"),
    ({"tags": {"pair": "a..b"}}, "s.mapping.tags.pair: path 'a..b', at character 3"),
    ({"tags": {"price": "a"}}, "s.mapping.tags: 'price' is declared both as a tag and as a field"),
    ({"time": {"path": "[2]", "field": "t"}}, "s.mapping.time.path: give field (a literal key) or path, not both"),
    ({"measurement_path": "meta.kind"}, "s.mapping.measurement_path: applies only with measurement_from: field"),
    ({"measurement_from": "field", "measurement_field": "k", "measurement_path": "meta.kind"},
     "s.mapping.measurement_path: give measurement_field (a literal key) or measurement_path, not both"),
    ({"derived_tags": [{"regex": "(?P<b>x)"}]},
     "s.mapping.derived_tags[0].source: give source (a literal key) or path"),
    ({"derived_tags": [{"regex": "(?P<b>x)", "source": "a", "path": "b"}]}, "s.mapping.derived_tags[0].source: give"),
    ({"topic": {"regex": "^[A-Z]+$"}}, "s.mapping.topic.regex: needs named groups"),
    ({"topic": {"regex": "^(?P<a>[A-Z]+"}}, "s.mapping.topic.regex: invalid regular expression"),
    ({"topic": {"tag": "a", "regex": "^(?P<a>[A-Z]+)"}},
     "s.mapping.topic.regex: tag key 'a' also comes from topic.tag"),
    ({"topic": {"tag": "v"}, "tags": ["v"]}, "s.mapping.topic.tag: tag key 'v' also comes from tags"),
    ({"each": "a.<pair>", "topic": {"regex": "^(?P<pair>.+)"}}, "s.mapping.topic.regex: tag key 'pair' also comes "
                                                                  "from each"),
    ({"each": "a.<station>"}, "s.mapping.station: tag key 'station' also comes from each"),
])
def test_configuration_errors_name_the_subscription_and_key(mapping, message):
    base = {"measurement": "m", "fields": {"price": {"path": "[0]", "type": "float"}}}
    text = refused_with_station({**base, **mapping})
    assert "test.yml: subscriptions[0]." in text and message.replace("s.mapping", "mapping") in text, text


def refused_with_station(mapping: dict) -> str:
    data = {"station": "st1", "subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:1"],
                                                 "framing": "text_json", "mapping": mapping}],
            "destinations": DESTINATIONS}
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.parse(data, "test.yml")
    return str(caught.value)


def test_yaml_and_toml_write_the_same_kraken_mapping():
    toml = tomllib.loads("""
[[subscriptions]]
name = "kraken_depth"
endpoints = ["tcp://127.0.0.1:5558"]
topics = ["kr_depth"]
framing = "text_json"
[subscriptions.mapping]
measurement = "kraken_depth"
each = 'result.<pair>.<side:asks|bids>[<level>]'
fields.price = { path = '[0]', type = "float" }
fields.volume = { path = '[1]', type = "float" }
time = { path = '[2]', format = "epoch_s" }
[[destinations]]
name = "d"
url = "http://x"
database = "db"
""")
    yml = yaml.safe_load("""
subscriptions:
  - name: kraken_depth
    endpoints: ["tcp://127.0.0.1:5558"]
    topics: [kr_depth]
    framing: text_json
    mapping:
      measurement: kraken_depth
      each: 'result.<pair>.<side:asks|bids>[<level>]'
      fields:
        price: {path: '[0]', type: float}
        volume: {path: '[1]', type: float}
      time: {path: '[2]', format: epoch_s}
destinations: [{name: d, url: "http://x", database: db}]
""")
    assert cfg.parse(toml).subscriptions == cfg.parse(yml).subscriptions


# --- the mapper's rows path ---------------------------------------------------------------------------


def test_kraken_depth_makes_one_exact_line_per_level():
    spec = subscription({**KRAKEN_MAPPING}, topics=["kr_depth"])
    topic, record = build(spec)([b'kr_depth ' + json.dumps(KRAKEN_DEPTH).encode()])
    mapper = Mapper(spec, station="st1")
    assert mapper.multi and mapper.field_names == ["price", "volume"]
    assert mapper.lines(topic, record) == [
        "kraken_depth,level=0,pair=XXBTZCAD,side=asks,station=st1 price=563.45,volume=0.75 1764439880000000000",
        "kraken_depth,level=1,pair=XXBTZCAD,side=asks,station=st1 price=563.5,volume=1.2 1764439881000000000",
        "kraken_depth,level=0,pair=XXBTZCAD,side=bids,station=st1 price=540.0,volume=0.002 1764425123000000000",
        "kraken_depth,level=0,pair=XETHZEUR,side=bids,station=st1 price=1.5,volume=3.0 1764425124000000000"]
    # the same message again: every point keeps its series, the times move on by one nanosecond
    again = mapper.keyed_lines(topic, record)
    assert [ts for _, _, ts, _ in again] == [1764439880000000001, 1764439881000000001, 1764425123000000001,
                                             1764425124000000001]
    assert again[0][1] == "kraken_depth,level=0,pair=XXBTZCAD,side=asks,station=st1"
    assert again[0][3]["price"] == "563.45000"  # the values the cache writes, by field name


def test_the_documented_example_lines():
    spec = subscription(KRAKEN_MAPPING)
    doc = json.loads('{"error":[],"result":{"XXBTZCAD":{"asks":[["563.45000","0.750",1764439880]],'
                     '"bids":[["540.00000","0.002",1764425123]]}}}')
    assert Mapper(spec).lines("kr_depth", doc) == [
        "kraken_depth,level=0,pair=XXBTZCAD,side=asks price=563.45,volume=0.75 1764439880000000000",
        "kraken_depth,level=0,pair=XXBTZCAD,side=bids price=540.0,volume=0.002 1764425123000000000"]


def test_v20_topic_as_tag_and_regex_groups():
    spec = subscription(V20_MAPPING, framing="text_delimited", field_order=["time", "bid", "ask"])
    frame = b"EUR_USD 2025-11-29T18:11:20.123456789Z\x011.08234\x011.08245"
    topic, record = build(spec)([frame])
    mapper = Mapper(spec)
    assert mapper.multi  # topic tags: the rows path
    assert mapper.lines(topic, record) == ["v20_prices,instrument=EUR_USD bid=1.08234,ask=1.08245 1764439880123456789"]
    regex = subscription({**V20_MAPPING, "topic": {"regex": "^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$"}},
                         framing="text_delimited", field_order=["time", "bid", "ask"])
    by_regex = Mapper(regex)
    assert by_regex.lines(topic, record) == [
        "v20_prices,base=EUR,quote=USD bid=1.08234,ask=1.08245 1764439880123456789"]
    assert reason(by_regex, "EURUSD", record) == "unknown_topic"
    assert reason(by_regex, "EUR_USDX", record) == "unknown_topic"  # $ anchors the end


def test_refusals_are_named_and_atomic():
    spec = subscription({**KRAKEN_MAPPING, "max_points": 3})
    mapper = Mapper(spec)
    pair = {"asks": [["1", "2", 1764439880]], "bids": []}
    assert reason(mapper, "t", {"error": ["EQuery:Unknown asset pair"]}) == "missing_field"
    assert reason(mapper, "t", {"result": {"X": {"asks": {}, "bids": []}}}) == "wrong_type"
    assert reason(mapper, "t", {"result": {"X": {"asks": [], "bids": []}}}) == "no_points"
    assert reason(mapper, "t", {"result": {"X": {"asks": ["563.4"]}}}) == "wrong_type"  # a level not a list
    assert reason(mapper, "t", {"result": []}) == "wrong_type"
    assert reason(mapper, "t", {"result": {"X": {"asks": [["1", "2", 1764439880]] * 4}}}) == "too_many_points"
    # one bad level refuses the whole message, and leaves nothing behind in Uniqueness
    bad = {"result": {"X": pair, "Y": {"asks": [["1", "2", 1764439880], ["x", "2", 1764439881]]}}}
    assert reason(mapper, "t", bad) == "wrong_type"
    assert reason(mapper, "t", {"result": {"X": {"asks": [["1", "2", "yesterday"]]}}}) == "bad_timestamp"
    assert reason(mapper, "t", {"result": {"X": {"asks": [[None, None, 1764439880]]}}}) == "missing_field"
    assert mapper.unique.current == {}
    assert mapper.lines("t", {"result": {"X": pair}}) == [
        "kraken_depth,level=0,pair=X,side=asks price=1.0,volume=2.0 1764439880000000000"]
    # a level without its time takes the receive time (counted)
    assert len(mapper.lines("t", {"result": {"X": {"asks": [["1", "2"]]}}})) == 1
    assert mapper.timestamp_fallbacks == 1


def test_hostile_depth_costs_at_most_max_points():
    mapper = Mapper(subscription(KRAKEN_MAPPING))
    assert mapper.paths.max_points == 10_000
    huge = {"result": {"X": {"asks": [["1", "1", 1764439880]] * 20_000}}}
    assert reason(mapper, "t", huge) == "too_many_points"
    assert len(mapper.lines("t", {"result": {"X": {"asks": [["1", "1", 1764439880 + i] for i in range(10_000)]}}})) \
        == 10_000


def test_record_paths_measurement_path_and_derived_paths():
    spec = subscription({"measurement_from": "field", "measurement_path": "$.meta.kind",
                         "each": "book[<level>]", "tags": {"venue": "$.meta.venue"},
                         "derived_tags": [{"path": "$.meta.symbol", "regex": "^(?P<base>[A-Z]{3})"}],
                         "fields": {"px": {"path": "px", "type": "float"}, "n": {"path": "$.seq", "type": "integer"}},
                         "time": {"path": "$.ts", "format": "epoch_ms"}})
    mapper = Mapper(spec)
    record = {"meta": {"kind": "depth", "venue": "kr", "symbol": "BTCEUR"}, "seq": 7, "ts": 1700000000123,
              "book": [{"px": 1.5}, None, {"px": 2}]}
    assert mapper.lines("t", record) == [
        "depth,base=BTC,level=0,venue=kr px=1.5,n=7i 1700000000123000000",
        "depth,base=BTC,level=2,venue=kr px=2.0,n=7i 1700000000123000000"]
    assert reason(mapper, "t", {**record, "meta": {"venue": "kr"}}) == "missing_field"  # no measurement


def test_binning_gets_one_point_per_element():
    spec = subscription(KRAKEN_MAPPING, binning={"interval": "1s", "fields": ["price"]})
    mapper = Mapper(spec)
    points = mapper.points("t", KRAKEN_DEPTH)
    assert points[0].tags == {"level": "0", "pair": "XXBTZCAD", "side": "asks"}
    assert points[0].fields == {"price": "563.45000", "volume": "0.750"} and points[0].measurement == "kraken_depth"
    binning = Binning(spec.binning)
    assert [line for p in points for line in binning.lines(p)] == []  # first values of their bins
    with pytest.raises(MapError):
        mapper.point("t", KRAKEN_DEPTH)  # several points: Mapper.points


def test_check_config_warns_about_keys_that_never_match(tmp_path, capsys):
    path = tmp_path / "bridge.yml"
    path.write_text(yaml.safe_dump({
        "subscriptions": [{"name": "v20", "endpoints": ["tcp://127.0.0.1:1"], "framing": "text_delimited",
                           "field_order": ["time", "bid", "ask"],
                           "mapping": {"measurement": "v20", "fields": {"bid": "float", "mid": "float"},
                                       "time": {"field": "time", "format": "rfc3339"}}},
                          {"name": "kr", "endpoints": ["tcp://127.0.0.1:2"], "framing": "text_json",
                           "mapping": {"measurement": "kr", "tags": ["result.pair"], "fields": {"v": "float"}}}],
        "destinations": DESTINATIONS}))
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: subscription 'v20': mapping.fields.mid: path mid can never match: framing text_delimited yields "
        "only the keys 'time', 'bid', 'ask'",
        "warning: subscription 'kr': mapping.tags.result.pair: 'result.pair' matches only a key spelled exactly so, "
        "not a nested value; to read the path result.pair, use the map form: tags: {pair: 'result.pair'}"]
    assert main(["check-config", "--json", str(path)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["warnings"] == [line.removeprefix("warning: ") for line in err]
    clean = tmp_path / "clean.yml"
    clean.write_text(yaml.safe_dump({"subscriptions": [{"name": "kr", "endpoints": ["tcp://127.0.0.1:1"],
                                                        "framing": "text_json", "mapping": KRAKEN_MAPPING}],
                                     "destinations": DESTINATIONS}))
    assert main(["check-config", "--json", str(clean)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["warnings"] == [] and out.err == ""


# --- the rows path agrees with the flat fast path ---------------------------------------------------
_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=6),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["EURUSD", "a,b=c d", "x\ny", "tail\\", "", "1.5", "true", "\ud800", "1700000000.5"]))
_records = st.fixed_dictionaries({}, optional={
    "instrument": _values, "venue": _values, "bid": _values, "volume": _values, "flag": _values,
    "note": _values, "timestamp": _values, "symbol": _values})


def _outcome(function, record):
    try:
        return "lines", function("t", record)
    except (MapError, LineError) as exc:
        return "refused", exc.reason


@pytest.mark.parametrize(("time_format", "derived"), [("epoch_s", False), ("epoch_ns", False), ("auto", True)])
@given(records=st.lists(_records, min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_rows_path_agrees_with_the_flat_fast_path(time_format, derived, records):
    mapping = {"measurement": "ticks", "tags": ["instrument", "venue"], "static_tags": {"desk": "fx"},
               "fields": {"bid": "float", "volume": "integer", "flag": "boolean", "note": "string"},
               "time": {"field": "timestamp", "format": time_format}}
    if derived:
        mapping["derived_tags"] = [{"source": "symbol", "regex": "^(?P<base>[A-Z]{3})"}]
    spec = subscription(mapping, framing="msgpack")
    flat, rows = Mapper(spec, "ams1", Uniqueness()), Mapper(spec, "ams1", Uniqueness(), general=True)
    assert not flat.multi and rows.multi
    if not derived:
        assert flat.line is not flat._line  # the generated function is in use
    for record in records:
        fast, slow = _outcome(flat.lines, record), _outcome(rows.lines, record)
        if record.get("timestamp") is None and fast[0] == "lines" and slow[0] == "lines":
            # Receive time: the two mappers' clocks differ; everything else must not.
            fast = (fast[0], [line.rsplit(" ", 1)[0] for line in fast[1]])
            slow = (slow[0], [line.rsplit(" ", 1)[0] for line in slow[1]])
        assert fast == slow, record


# --- the README's worked examples, through the configuration and the mapper --------------------------


def readme_examples() -> tuple[list[dict], list[str], str]:
    """The README mapping section's YAML subscriptions, and the lines it says they make."""
    import re
    from pathlib import Path as FilePath
    text = (FilePath(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Mapping: paths, explosions, topic tags"):text.index("### Self-metrics")]
    subscriptions = []
    for block in re.findall(r"```yaml\n(.*?)```", section, re.S):
        data = yaml.safe_load(block)
        if isinstance(data, list):
            subscriptions += data
        elif "subscriptions" in data:
            subscriptions += data["subscriptions"]
    lines = [line for line in section.splitlines() if line.startswith(("kraken_depth,", "v20_prices,"))]
    return subscriptions, lines, section


def test_readme_examples_make_the_lines_it_shows():
    subscriptions, documented, section = readme_examples()
    assert [s["name"] for s in subscriptions] == ["kraken_depth", "oanda_v20"]
    config = cfg.parse({"subscriptions": subscriptions, "destinations": DESTINATIONS}, "README.md")
    kraken, oanda = (Mapper(s) for s in config.subscriptions)
    frame = ('kr_depth {"error":[],"result":{"XXBTZCAD":{"asks":[["563.45000","0.750",1764439880]],'
             '"bids":[["540.00000","0.002",1764425123]]}}}')
    assert f"`{frame}`" in section  # the message the README shows
    assert "`2025-11-29T18:11:20.123456789Z\\x011.08234\\x011.08245`" in section
    made = kraken.lines(*build(config.subscriptions[0])([frame.encode()]))
    v20_frame = b"EUR_USD 2025-11-29T18:11:20.123456789Z\x011.08234\x011.08245"
    made += oanda.lines(*build(config.subscriptions[1])([v20_frame]))
    assert documented == made and len(made) == 3
    # the reference block of every key is a valid mapping too
    start = section.index("```yaml\n") + len("```yaml\n")
    reference = yaml.safe_load(section[start:section.index("```", start)])
    config = cfg.parse({"subscriptions": [{"name": "ref", "endpoints": ["tcp://127.0.0.1:1"], "framing": "json",
                                           "mapping": reference["mapping"]}], "destinations": DESTINATIONS})
    assert config.effective()["subscriptions"][0]["tags"] == ["base", "level", "pair", "side", "venue"]
    assert unreachable_for(config) == []


def unreachable_for(config: cfg.Config) -> list[str]:
    from station_bridge.cli import warnings
    return warnings(config)


# --- the receive loop's accounting with multi-point messages (in process) -----------------------------


def bridge_for(tmp_path, mapping: dict, **extra: Any):
    from station_bridge.wiring import Parts
    config = cfg.parse({
        "subscriptions": [{"name": "kr", "endpoints": ["tcp://127.0.0.1:9"], "framing": "text_json",
                           "mapping": mapping, **extra}],
        "destinations": DESTINATIONS, "http": {"listen": ""},
        "journal": {"dir": str(tmp_path / "journal"), "min_free_bytes": 0},
        "dead_letter": {"dir": str(tmp_path / "dead")},
        "cache": {"url": "redis://127.0.0.1:9/0"}}, "test.yml")  # never started: process() only
    return Parts(config)


def close(bridge) -> None:
    for sub in bridge.subscriptions:
        sub.source.close()
    bridge.dead_input.close()
    bridge.context.term()


def test_process_counts_messages_once_and_lines_per_point(tmp_path):
    bridge = bridge_for(tmp_path, KRAKEN_MAPPING)
    try:
        sub = bridge.subscriptions[0]
        good = [b"kr_depth " + json.dumps(KRAKEN_DEPTH).encode()]
        messages = [good, [b'kr_depth {"result": {"X": {"asks": {}}}}'], good, [b"kr_depth not json"]]
        lines, raw, newest, counts, owners = bridge.pipeline.process(sub, messages)
        assert len(lines) == raw == 8 and owners == [id(good)] * 8
        assert [(name, n) for name, _, n in counts] == [
            ("bridge_received_messages_total", 4), ("bridge_mapped_messages_total", 2),
            ("bridge_rejected_messages_total", 1), ("bridge_rejected_messages_total", 1)]
        assert {dict(key)["reason"] for name, key, _ in counts if "rejected" in name} == {"wrong_type", "undecodable"}
        assert len(newest) == 4  # one entry per series, the newest time of the two copies
        assert newest["kraken_depth,level=0,pair=XETHZEUR,side=bids"] == (
            1764425124000000001, newest["kraken_depth,level=0,pair=XETHZEUR,side=bids"][1])
    finally:
        close(bridge)


def test_an_unencodable_line_refuses_its_whole_message(tmp_path):
    bridge = bridge_for(tmp_path, KRAKEN_MAPPING)
    try:
        sub = bridge.subscriptions[0]
        lines = ["m a=1 1", "m a=2 2", "m b=\ud800 3", "m a=4 4", "binned 5"]
        counts: list = []
        data = bridge.pipeline._encode(sub, lines, 4, counts, owners=[7, 8, 8, 9])
        assert data == b"m a=1 1\nm a=4 4\nbinned 5\n" and lines == ["m a=1 1", "m a=4 4", "binned 5"]
        assert [(name, n) for name, _, n in counts] == [("bridge_mapped_messages_total", -1),
                                                         ("bridge_rejected_messages_total", 1)]
    finally:
        close(bridge)


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**65), max_value=2**65),
              st.floats(allow_nan=True), st.text(max_size=6), st.sampled_from(["1.5", "1764439880", "asks", "bids"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["result", "asks", "bids", "X", "Y", "error"]), inner,
                                            max_size=4)),
    max_leaves=30)


_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**65), max_value=2**65),
                    st.floats(allow_nan=True), st.text(max_size=6),
                    st.sampled_from(["1.5", "563.45000", "0.750", "1764439880", "1e400", "-0"]))
_good_level = st.tuples(st.sampled_from(["1.5", "563.45000", 2, 1.25]), st.sampled_from(["0.75", 1, "3"]),
                        st.integers(min_value=1764439880, max_value=1764439890)).map(list)
_level = st.one_of(_good_level, _good_level.map(lambda level: [*level[:2], None]), st.lists(_scalar, max_size=4), _json)
_levels = st.one_of(st.lists(_good_level, max_size=4), st.lists(_level, max_size=4))
_depth = st.fixed_dictionaries({"result": st.one_of(
    st.dictionaries(st.sampled_from(["XXBTZCAD", "X,Y", "a b", "", "e\u0301"]),
                    st.one_of(st.dictionaries(st.sampled_from(["asks", "bids", "other"]), _levels, max_size=3), _json),
                    max_size=3),
    _json)})


@given(document=st.one_of(_depth, st.dictionaries(st.sampled_from(["result", "error", "meta"]), _json, max_size=3)))
@example(document={"result": {"a b": {"asks": [["1.5", "0.75", 1764439880]], "bids": [["1.5", "0.75", 1764439880]]}}})
@settings(max_examples=400, deadline=None)
def test_hostile_documents_are_mapped_whole_or_refused_whole_with_a_reason(document):
    mapper = Mapper(subscription({**KRAKEN_MAPPING, "max_points": 5}))
    try:
        lines = mapper.lines("kr_depth", document)
    except (MapError, LineError) as exc:
        assert exc.reason in {"no_points", "too_many_points", "wrong_type", "missing_field", "nested_value",
                              "non_finite", "integer_overflow", "bad_timestamp", "unrepresentable", "invalid_utf8"}
        assert mapper.unique.current == {}  # nothing claimed for a refused message
        return
    assert 1 <= len(lines) <= 5
    assert all(line.startswith("kraken_depth,level=") for line in lines)
    # one point per (series, time): the series key read by the line protocol's own parser (a
    # captured pair may hold an escaped space; splitting on " " merged two sides into one key)
    assert len({parse_line(line.encode())[1:4:2] for line in lines}) == len(lines)
