"""The compiled path for the mapping forms beyond flat keys: derived tags (the lab's own feed),
topic tags and topic regex groups, tag defaults, non-string tag values, renamed keys.

Differential, as tests/test_fastpath.py: the same bursts through the Python path alone and through
C + Python give byte-identical lines, the same refusals with the same reasons and details, the
same uniqueness state and the same newest point per series. Derived and topic tags are made in C
from the mapper's own rules (Mapper._derived_pairs, TopicCapture + Mapper._tag_pair), cached per
distinct text, so the values here are the ones a cache could get wrong: every escape character,
lone surrogates, NaN and infinities, int64 edges, huge and deeply nested values, a derived tag
whose source is missing, texts that alternate between refused and accepted.
"""

from __future__ import annotations

import copy
import itertools
import json
import re

import msgpack
import pytest
from compiled import require_compiled_path
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_stages import sub

from station_bridge import fastpath
from station_bridge.decoders import DecodeError, build
from station_bridge.lineproto import LineError
from station_bridge.mapping import MapError, Mapper
from station_bridge.timestamps import TimestampError, parser


@pytest.fixture(autouse=True)
def _compiled_path() -> None:
    require_compiled_path()


T0 = 1_700_000_000
LAB_REGEX = "^(?P<base>[A-Z]{3})(?P<term>[A-Z]{3})$"
LAB = {"measurement": "ticks", "tags": ["instrument"], "fields": {"bid": "float", "ask": "float", "volume": "integer"},
       "drop": ["seq"], "derived_tags": [{"source": "instrument", "regex": LAB_REGEX}],
       "time": {"field": "timestamp", "format": "epoch_s"}}

# name -> (framing, mapping): every form the compiled path now covers
FORMS = {
    # inventories/local: the lab's own feed (kraken), derived base/term, both required
    "lab": ("msgpack", LAB),
    # optional and defaulted groups, a group that may not take part, a second source that is a
    # field (a float's repr), a catch-all group that lets every escape character through, group
    # names sorting before, between and after the configured and static tags
    "derived_mixed": ("msgpack", {
        **LAB, "tags": ["instrument", "venue"], "optional_tags": ["term", "venue", "aaa", "sym"],
        "tag_defaults": {"base": "XXX", "zz_size": "none"},
        "static_tags": {"desk": "fx 1"},
        "derived_tags": [{"source": "instrument", "regex": "^(?P<base>[A-Z]{3})(?P<term>[A-Z]{3})?"},
                         {"source": "bid", "regex": r"^(?P<aaa>\d)(?P<zz_size>\.\d)?"},
                         {"source": "venue", "regex": r"(?s)^(?P<sym>.*)$"}]}),
    # the topic as a tag, the topic's regex groups as tags (unknown_topic when it does not match)
    "topic_tag": ("msgpack", {**LAB, "derived_tags": [], "topic": {"tag": "pair"}}),
    "topic_regex": ("msgpack", {**LAB, "derived_tags": [],
                                "topic": {"regex": r"^(?P<base>[A-Z]{3})(?:_(?P<quote>[A-Z]{3}))?(?P<rest>.*)"}}),
    # renamed keys (map forms with one-key paths), a tag with a default, derived from a path
    "renamed": ("msgpack", {
        "measurement": "ticks", "tags": {"instrument": "sym", "venue": "$.v"}, "tag_defaults": {"venue": "otc"},
        "fields": {"bid": {"path": "b", "type": "float"}, "volume": {"path": "n", "type": "integer"}},
        "derived_tags": [{"path": "sym", "regex": LAB_REGEX}], "time": {"path": "t", "format": "epoch_ms"}}),
    "lab_json": ("text_json", {**LAB, "topic": {"tag": "pair"}}),
    # the receive time (no time field): the mapper's clock, drawn once per message
    "receive_time": ("msgpack", {**LAB, "time": {"field": None}}),
    # date strings: the mapper's own parser, called from C
    "rfc3339": ("msgpack", {**LAB, "time": {"field": "timestamp", "format": "rfc3339"}}),
    "naive": ("json", {**LAB, "time": {"field": "timestamp", "format": "naive", "timezone": "Europe/Amsterdam"}}),
    # numbers and booleans given as text (JSON's number grammar; true/false/1/0 exactly)
    "strings": ("msgpack", {**LAB, "fields": {"bid": "float", "ask": "float", "volume": "integer",
                                              "flag": "boolean"}}),
    # OANDA v20 (bridge/README.md): text_delimited, the topic as a tag, rfc3339 times
    "v20": ("text_delimited", {"measurement": "v20_prices", "tags": [], "derived_tags": [], "drop": [],
                               "topic": {"tag": "instrument"}, "fields": {"bid": "float", "ask": "float"},
                               "time": {"field": "time", "format": "rfc3339"}}),
    # paths into nested values: keys and indexes (negative ones in msgpack), a derived tag from a path
    "nested": ("msgpack", {
        "measurement": "ticks", "tags": {"instrument": "meta.sym"},
        "fields": {"bid": {"path": "quote.bid", "type": "float"}, "ask": {"path": "quote.levels[-1]", "type": "float"},
                   "volume": {"path": "quote.size", "type": "integer"}},
        "derived_tags": [{"path": "meta.sym", "regex": LAB_REGEX}],
        "time": {"path": "meta.t[0]", "format": "epoch_s"}}),
    "nested_json": ("text_json", {
        "measurement": "ticks", "tags": {"instrument": "meta.sym", "venue": '$.meta["venue name"]'},
        "optional_tags": ["venue"], "fields": {"bid": {"path": "quote.bid", "type": "float"},
                                               "ask": {"path": "quote.levels[1]", "type": "float"},
                                               "seq": {"path": "extra.seq", "type": "integer"}},
        "derived_tags": [], "time": {"path": "meta.t[0]", "format": "epoch_s"}}),
}
DATES = {"rfc3339", "naive", "v20"}
NESTED = {"nested", "nested_json"}
KEYS = {"renamed": {"instrument": "sym", "venue": "v", "bid": "b", "volume": "n", "timestamp": "t"}}


def spec_of(form: str):
    framing, mapping = FORMS[form]
    extra = {"field_order": ["time", "bid", "ask"]} if framing == "text_delimited" else {}
    return sub(framing=framing, mapping=mapping, **extra)


def python_path(spec, mapper):
    """The Python path for one message as the pipeline runs it (receive_compiled's `slow`):
    (line bytes or None, outcome), newest updated (newest time per series, later wins a tie,
    declared fields by name)."""
    decode = build(spec)
    names = list(spec.mapping.fields)

    def run(frames, newest, error=None):
        if error is not None:
            return None, ("refused", getattr(error, "reason", type(error).__name__), str(error))
        try:
            topic, record = decode(frames)
            if mapper.multi:  # each: every point of the message (one line each, in row order)
                points = mapper.keyed_lines(topic, record)
            else:
                line, series, ts = mapper.keyed_line(topic, record)
                points = [(line, series, ts, record)]
            data = [p[0].encode() for p in points]
        except (DecodeError, MapError, LineError) as exc:
            return None, ("refused", exc.reason, str(exc))
        except UnicodeEncodeError:
            return None, ("refused", "invalid_utf8", "")
        if newest is not None:
            for _, series, ts, values in points:
                current = newest.get(series)
                if current is None or ts >= current[0]:
                    newest[series] = (ts, {k: values[k] for k in names if values.get(k) is not None})
        return (data if mapper.multi else data[0]), ("line", "\n".join(p[0] for p in points), len(points))
    return run



def map_noting_outcomes(accelerator, spec, mapper, messages):
    """`accelerator.map(messages)` with the Python path as its `slow`: the burst, and the outcome
    of every message handed back, in order."""
    run = python_path(spec, mapper)
    outcomes = []

    def slow(frames, error):
        line, outcome = run(frames, None, error)
        outcomes.append(outcome)
        return line

    return accelerator.map(messages, slow), outcomes

def state(mapper):
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return list(value) if hasattr(value, "tolist") else value
    return {name: plain(getattr(mapper.unique, name)) for name in type(mapper.unique).__slots__}


def differential(spec, bursts) -> tuple[int, int]:
    """Both paths on the same bursts; returns (messages mapped in C, messages)."""
    reference, fast = Mapper(spec, station="lab"), Mapper(spec, station="lab")
    for mapper in (reference, fast):
        mapper._clock = itertools.count(T0 * 10**9, 7).__next__
    accelerator, why = fastpath.Accelerator.for_mapper(fast, spec)
    assert accelerator is not None, why
    ref_run, fast_run = python_path(spec, reference), python_path(spec, fast)
    compiled = total = 0
    for messages in bursts:
        ref_newest: dict = {}
        expected = [ref_run(frames, ref_newest)[1] for frames in messages]
        fast_newest: dict = {}
        handed: list = []

        def slow(frames, error, newest=fast_newest, handed=handed):
            line, outcome = fast_run(frames, newest, error)
            handed.append((frames, outcome))
            return line

        burst = accelerator.map(messages, slow, fast_newest)
        compiled += burst.compiled
        total += len(messages)
        want = b"".join(o[1].encode() + b"\n" for o in expected if o[0] == "line")
        assert burst.data == want, (messages, expected, burst.data)
        assert burst.lines == sum(o[2] for o in expected if o[0] == "line")
        index = {id(frames): i for i, frames in enumerate(messages)}
        positions = [index[id(frames)] for frames, _ in handed]
        assert positions == sorted(positions)
        assert [outcome for _, outcome in handed] == [expected[i] for i in positions]
        assert {i for i, o in enumerate(expected) if o[0] == "refused"} <= set(positions)
        assert fast_newest == ref_newest
        assert all(type(v) is type(ref_newest[s][1][k]) for s, (_, rec) in fast_newest.items() for k, v in rec.items())
        assert state(fast) == state(reference)
    return compiled, total


# --- hostile values --------------------------------------------------------------------------

DEEP: object = "x"
for _ in range(100):
    DEEP = [DEEP]
ESCAPES = ["a,b", "a=b", "a b", "a\\b", "tail\\", "x\ny", "x\\\ny", "tab\t", "\r", "\x00", "\x7f", 'q"t', "#h",
           " lead", "=", ",", "é", "日本", "\u0301", "\U0001f600", ""]
_text = st.one_of(st.sampled_from(["EURUSD", "GBPJPY", "EURUSD", "EURUS", "EURUSDX", "eurusd", "EUR,US", "EUR US",
                                   "EUR=US", "EUR\\US", "EURUS\\", "EUR\nUS", "1.5", "true", "EURUSD" * 3000,
                                   *ESCAPES]),
                  st.text(max_size=8))
_numberish = st.sampled_from(["1.5", "-0", "+1", "1e5", "1E-3", ".5", "5.", "1_0", " 1", "nan", "inf", "0x10", "１２",
                              "", "007", "1e400", "9223372036854775807", "999999999999999999", "1" * 19, "-1.5e-7"])
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, -1, 7, 10**18 - 1, -(10**18) + 1, 10**18, 2**63 - 1, -(2**63), 2**64 - 1, 2**53 + 1]),
    st.floats(),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 5e-324, 1e300, 1.5, 9.75, 1e16]),
    _text, st.binary(max_size=4), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2),
                                                                                      st.integers(), max_size=1),
    st.just(DEEP))
_good = st.fixed_dictionaries({
    "instrument": st.sampled_from(["EURUSD", "GBPJPY", "AUDNZD"]), "venue": st.sampled_from(["lmax", "ebs.ldn"]),
    "bid": st.sampled_from([1.08234, 5.5, 0.25, 7.0]), "ask": st.floats(0.5, 2.0), "volume": st.integers(0, 10**6),
    "timestamp": st.sampled_from([T0 + 0.5, T0 + 0.25, T0 + 0.5, float(T0), T0, T0 + 1])})
_hostile = st.fixed_dictionaries({}, optional={
    "instrument": st.one_of(st.sampled_from(["EURUSD", "GBPJPY"]), _scalar), "venue": _scalar, "bid": _scalar,
    "ask": _scalar, "volume": _scalar, "seq": _scalar,
    "timestamp": st.one_of(st.sampled_from([T0 + 0.5, T0, T0 + 1, "1700000000.5", None, float("nan")]), _scalar)})
# near T0 (within the accepted window around now), repeated (nudged), in a DST gap and fold
# (Amsterdam), out of range, not dates
_dates = st.one_of(st.sampled_from([
    "2023-11-14T22:13:20.123456789Z", "2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z", "2023-11-14T23:13:20+01:00",
    "2023-11-14 23:13:20", "2023-11-14 23:13:20.5", "2023-10-29 02:30:00", "2023-03-26 02:30:00",
    "2023-11-14T22:13:20.1234567891Z", "2023-02-30T00:00:00Z", "2099-01-01T00:00:00Z", "1677-09-21T00:12:43Z",
    "2262-04-11T23:47:16.854775808Z", "not a date", "", "1700000000", "2023-11-14t22:13:20z", "２０２３-11-14"]),
    st.text(max_size=12))
_topics = st.one_of(st.sampled_from([b"EUR_USD", b"GBP_JPY", b"EUR_USD", b"EUR", b"EURUSD", b"eur_usd", b"EUR_US",
                                     b"", b"a,b c=d", b"tail\\", b"x\ny", b"EUR_USD\\", b"EUR_USD x",
                                     "é_ü".encode(), b"\xff\xfe", b"\xed\xa0\x80", b"kraken_tick"]),
                    st.binary(max_size=6))


def _nest(record: dict) -> dict:
    """A flat tick as a nested document (the paths of the nested forms)."""
    out: dict = {"quote": {}, "meta": {}}
    if "bid" in record:
        out["quote"]["bid"] = record["bid"]
    if "ask" in record:
        out["quote"]["levels"] = [record.get("volume", 0), record["ask"]]
    if "volume" in record:
        out["quote"]["size"] = record["volume"]
    if "instrument" in record:
        out["meta"]["sym"] = record["instrument"]
    if "venue" in record:
        out["meta"]["venue name"] = record["venue"]
    if "timestamp" in record:
        out["meta"]["t"] = [record["timestamp"]]
    out["extra"] = {"seq": record.get("seq", 7), "list": [1, [2, {"x": None}]]}
    return out


def _renamed(record: dict, form: str) -> dict:
    if form in NESTED:
        return _nest(record)
    keys = KEYS.get(form, {})
    out = {keys.get(k, k): v for k, v in record.items()}
    if form == "renamed" and isinstance(out.get("t"), float):
        out["t"] = out["t"] * 1000
    return out


def _pack(record: dict, form: str, kind: str) -> bytes:
    record = _renamed(record, form)
    if kind == "surrogate":  # a lone surrogate, as its UTF-8 bytes (Python's decoder refuses them)
        key = KEYS.get(form, {}).get("instrument", "instrument").encode()
        return b"\x82" + bytes([0xa0 | len(key)]) + key + b"\xa3\xed\xa0\x80\xa3bid\xcb?\xf0\x00\x00\x00\x00\x00\x00"
    try:
        return msgpack.packb(record)
    except (OverflowError, ValueError, TypeError):
        return msgpack.packb({})


@st.composite
def _message(draw, form: str):
    # a good record with one or two keys made hostile (so that the rest maps and the hostile
    # value decides), or one hostile throughout
    record = draw(_good)
    for key in draw(st.lists(st.sampled_from([*record, "seq"]), min_size=0, max_size=2)):
        if draw(st.integers(0, 5)) == 0:
            record.pop(key, None)
        else:
            record[key] = draw(_scalar)
    if draw(st.integers(0, 5)) == 0:
        record = draw(_hostile)
    kind = draw(st.sampled_from(["ok"] * 10 + ["surrogate", "missing_source", "truncated"]))
    if kind == "missing_source":
        record.pop("instrument", None)
    if form in DATES and "timestamp" in record and draw(st.integers(0, 5)) > 0:
        record["timestamp"] = draw(_dates)
    if form == "receive_time" and draw(st.booleans()):
        record.pop("timestamp", None)
    if form == "strings":
        for key in ("bid", "ask", "volume"):
            if key in record and draw(st.booleans()):
                record[key] = str(record[key]) if draw(st.integers(0, 3)) else draw(_numberish)
        record["flag"] = draw(st.sampled_from([True, False, 0, 1, 2, "true", "false", "1", "0", "True", "", "yes",
                                               " 1", 1.0, None]))
    # packed after every edit above (the dates and numbers as text reach msgpack forms too)
    payload = _pack(record, form, kind)
    if kind == "truncated":
        payload = payload[:len(payload) // 2]
    topic = draw(_topics) if form.startswith("topic") or form in ("lab_json", "v20") else b"kraken_tick"
    if form in NESTED:
        return _nested_message(draw, form, record, topic)
    if form == "v20":
        values = [record.get("timestamp"), record.get("bid"), record.get("ask")]
        text = [v if isinstance(v, str) else repr(v) if isinstance(v, float) else draw(_numberish) for v in values]
        if draw(st.integers(0, 7)) == 0:
            text = text[:draw(st.integers(0, 2))]
        return [topic + b" " + "\x01".join(text).encode("utf-8", "surrogatepass")]
    if FORMS[form][0] in ("text_json", "json"):
        try:
            text = json.dumps(_renamed(record, form), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            text = b"{}"
        if FORMS[form][0] == "json":
            return [topic, text]
        return [topic.replace(b" ", b"_") + b" " + text]
    return [topic, payload]


_SUBTREES = ["quote", "quote.bid", "quote.levels", "quote.levels.1", "quote.levels.0", "quote.size", "meta",
             "meta.sym", "meta.t", "meta.t.0", "extra", "extra.list"]


def _nested_message(draw, form: str, record: dict, topic: bytes) -> list[bytes]:
    """The nested document with subtrees made hostile: a container of the other kind, a scalar
    where a container is, null on the way, short and empty lists, deep values, int map keys,
    a key met twice (at the top or inside)."""
    doc = _nest(record)
    for where in draw(st.lists(st.sampled_from(_SUBTREES), max_size=2)):
        *parents, last = where.split(".")
        node: object = doc
        for step in parents:
            if isinstance(node, dict):
                node = node.get(step)
            elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
                node = node[int(step)]
            else:
                node = None
        # fresh containers: never the shared DEEP (a later edit would make it hold itself)
        hostile = st.one_of(_scalar, st.sampled_from([None, [], {}, [1], {"bid": 1.5}, {1: 2}, DEEP]))
        value = copy.deepcopy(draw(hostile))
        if isinstance(node, dict):
            node[last] = value
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
    duplicate = draw(st.sampled_from([None] * 8 + ["top", "inside"]))
    if FORMS[form][0] == "text_json":
        try:
            text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
        except (TypeError, ValueError):
            text = "{}"
        if duplicate == "top":
            text = '{"quote": {"bid": 9.5}, ' + text[1:]
        elif duplicate == "inside":
            text = text.replace('"quote": {', '"quote": {"bid": 9.5, ', 1)
        return [topic.replace(b" ", b"_") + b" " + text.encode("utf-8", "surrogatepass")]
    try:
        items = [msgpack.packb(k) + msgpack.packb(v) for k, v in doc.items()]
        if duplicate == "top":
            items.insert(0, msgpack.packb("quote") + msgpack.packb({"bid": 9.5}))
        elif duplicate == "inside" and isinstance(doc.get("quote"), dict):
            inner = [msgpack.packb(k) + msgpack.packb(v) for k, v in doc["quote"].items()]
            inner.insert(0, msgpack.packb("bid") + msgpack.packb(9.5))
            at = list(doc).index("quote")
            items[at] = msgpack.packb("quote") + b"\xde" + len(inner).to_bytes(2, "big") + b"".join(inner)
    except (OverflowError, ValueError, TypeError):
        return [topic, msgpack.packb({})]
    return [topic, b"\xde" + len(items).to_bytes(2, "big") + b"".join(items)]


@pytest.mark.parametrize("form", list(FORMS))
@given(data=st.data())
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_every_form_gives_the_python_paths_lines_and_refusals(form, data):
    spec = spec_of(form)
    bursts = data.draw(st.lists(st.lists(_message(form), min_size=1, max_size=10), min_size=1, max_size=3))
    differential(spec, bursts)


def _tick(k: int, instrument: str = "EURUSD", **extra) -> dict:
    return {"instrument": instrument, "venue": "lmax", "bid": 1.5 + k, "ask": 2.5, "volume": k, "seq": k,
            "timestamp": T0 + k / 8, **extra}


@pytest.mark.parametrize("form", list(FORMS))
def test_plain_messages_of_every_form_are_mapped_in_c(form):
    spec = spec_of(form)
    records = [_tick(k, i) for k in range(50) for i in ("EURUSD", "GBPJPY")]
    for k, record in enumerate(records):  # values that are not strings, absent and empty ones
        record["venue"] = [None, "", 7, True, 1.5, "lmax"][k % 6]
        if k % 6 == 0:
            del record["venue"]
        if form in DATES:  # distinct times near T0 (within the accepted window)
            record["timestamp"] = f"2023-11-14{'T' if form != 'naive' else ' '}22:13:{k % 60:02d}.{k:09d}" + (
                "Z" if form != "naive" else "")
        if form == "receive_time":
            del record["timestamp"]
        if form == "strings":
            record.update(bid=str(record["bid"]), volume=str(record["volume"]), flag=["true", 0, "1", False][k % 4])
    if FORMS[form][0] == "text_json":
        burst = [[b"EUR_USD " + json.dumps(_renamed(r, form)).encode()] for r in records]
    elif FORMS[form][0] == "json":
        burst = [[b"EUR_USD", json.dumps(_renamed(r, form)).encode()] for r in records]
    elif form == "v20":
        burst = [[b"EUR_USD " + f"{r['timestamp']}\x01{r['bid']}\x01{r['ask']}".encode()] for r in records]
    else:
        burst = [[b"EUR_USD", _pack(r, form, "ok")] for r in records]
    assert differential(spec, [burst, burst]) == (200, 200)


@pytest.mark.parametrize("optional", [False, True])
def test_a_derived_tag_whose_source_is_missing_is_refused_as_python_refuses_it(optional):
    # instrument is a required tag itself (the lab) or optional: then the derived tag refuses
    spec = sub(framing="msgpack", mapping={**LAB, "optional_tags": ["instrument"] if optional else []})
    messages = [[b"kraken_tick", msgpack.packb(r)] for r in (
        {"bid": 1.0, "timestamp": T0},  # instrument absent
        {"instrument": None, "bid": 1.0, "timestamp": T0},  # null: absent
        {"instrument": "EURUS", "bid": 1.0, "timestamp": T0},  # no match
        {"instrument": "EURUSD", "bid": 1.0, "timestamp": T0})]
    mapper = Mapper(spec, station="lab")
    accelerator, _ = fastpath.Accelerator.for_mapper(mapper, spec)
    burst, outcomes = map_noting_outcomes(accelerator, spec, mapper, messages)
    assert burst.data == b"ticks,base=EUR,instrument=EURUSD,station=lab,term=USD bid=1.0 1700000000000000000\n"
    assert burst.compiled == 1
    assert [o[:2] for o in outcomes] == [("refused", "missing_field")] * 3
    assert ("derived tag 'base': its source is absent" if optional else "tag 'instrument' is absent") in outcomes[0][2]
    assert "'EURUS' does not match" in outcomes[2][2]
    assert differential(spec, [messages, messages]) == (2, 8)


def test_a_text_refused_once_is_refused_every_time_and_the_cache_is_bounded():
    # Far more distinct source texts than the text cache holds (it starts over), each seen twice,
    # refused and accepted texts interleaved: every line and refusal equals Python's.
    spec = spec_of("derived_mixed")
    texts = [f"{a}{b}" for a, b in itertools.product(["EUR", "GBP", "eu", "E,R"], [f"{k:03d}" for k in range(400)])]
    burst = [[b"t", msgpack.packb({**_tick(k), "instrument": t, "venue": t + "\\" * (k % 2)})]
             for k, t in enumerate(texts * 2)]
    compiled, total = differential(spec, [burst])
    assert total == 3200 and 0 < compiled < total


def test_the_lab_feed_runs_compiled_in_the_bridge_shape():
    """What the station reports: the kraken subscription of inventories/local is compiled."""
    spec = spec_of("lab")
    assert fastpath.not_covered(Mapper(spec, station="lab"), spec) == ""
    accelerator, why = fastpath.Accelerator.for_mapper(Mapper(spec, station="lab"), spec)
    assert accelerator is not None and why == ""


def test_check_config_names_the_path_and_reason_per_subscription(tmp_path, capsys):
    from station_bridge.cli import main

    def subscription(name: str, mapping: dict, **extra) -> dict:
        return {"name": name, "endpoints": [f"tcp://127.0.0.1:{len(name) + 1}"], "framing": "msgpack",
                "mapping": mapping, **extra}

    path = tmp_path / "bridge.yml"
    path.write_text(json.dumps({
        "station": "lab",
        "subscriptions": [
            subscription("kraken", LAB),
            subscription("v20", FORMS["v20"][1], framing="text_delimited", field_order=["time", "bid", "ask"]),
            subscription("depth", {"measurement": "kraken_depth", "each": "result.<pair>.<side:asks|bids>[<level>]",
                                   "fields": {"price": {"path": "[0]", "type": "float"}},
                                   "time": {"path": "[2]", "format": "epoch_s"}}, framing="text_json"),
            subscription("nested", {**LAB, "fields": {"bid": {"path": "quote.bid", "type": "float"}}}),
            subscription("last_level", {**LAB, "fields": {"bid": {"path": "levels[-1]", "type": "float"}}},
                         framing="json"),
            subscription("by_topic", {**LAB, "measurement": None, "measurement_from": "topic"}),
            subscription("heartbeats", LAB, ignore=[{"name": "hb", "topic": "^hb"}])],
        "destinations": [{"name": "d", "url": "http://127.0.0.1:1", "database": "db"}]}))
    assert main(["check-config", "--json", str(path)]) == 0
    effective = json.loads(capsys.readouterr().out)
    assert effective["fast_path"] == "auto"  # the setting, unchanged
    paths = effective["hot_path"]
    here = "compiled" if not fastpath.unavailable() else f"python: {fastpath.unavailable()}"
    assert paths["kraken"] == {"path": "compiled", "reason": None, "here": here}
    assert paths["v20"] == {"path": "compiled", "reason": None, "here": here}
    assert paths["depth"] == {"path": "compiled", "reason": None, "here": here}  # each (issue 22)
    assert paths["nested"] == {"path": "compiled", "reason": None, "here": here}
    assert paths["last_level"]["reason"] == "negative list indexes in JSON (msgpack only)"
    assert paths["by_topic"]["reason"] == "the measurement comes from data (measurement_from: topic)"
    assert paths["heartbeats"]["reason"] == "ignore rules run on the Python path"
    assert all(p["here"] == f"python: {p['reason']}" for p in paths.values() if p["path"] == "python")


# --- date strings: C's common shape against the mapper's parser ------------------------------------

@st.composite
def _date_texts(draw):
    year = draw(st.one_of(st.integers(1600, 2300), st.sampled_from([1677, 1678, 2000, 2100, 2261, 2262])))
    parts = [f"{year:04d}", "-", f"{draw(st.integers(0, 13)):02d}", "-", f"{draw(st.integers(0, 32)):02d}",
             draw(st.sampled_from(["T", "t", " ", "_"])), f"{draw(st.integers(0, 24)):02d}", ":",
             f"{draw(st.integers(0, 60)):02d}", ":", f"{draw(st.integers(0, 61)):02d}"]
    if draw(st.booleans()):
        parts.append("." + draw(st.text("0123456789", min_size=0, max_size=12)))
    parts.append(draw(st.one_of(
        st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "Zz", " Z"]),
        st.builds(lambda sign, h, m, colon: f"{sign}{h:02d}{colon}{m:02d}", st.sampled_from("+-"),
                  st.integers(0, 25), st.integers(0, 61), st.sampled_from([":", "", ";"])))))
    text = "".join(parts)
    if draw(st.integers(0, 9)) == 0:  # an edit anywhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "0", "x", "１", "-", ":"])) + text[at + 1:]
    return text


_PARSERS = [parser("rfc3339", zone) for zone in (None, "Europe/Amsterdam")]


@given(text=_date_texts())
@example(text="2023-02-29T00:00:00Z").via("not a leap year")
@example(text="2100-02-29T00:00:00Z").via("not a leap year: a century")
@example(text="2000-02-29T23:59:59.999999999-23:59").via("a leap year, the extremes of an offset")
@example(text="2024-12-31 23:59:59+0100").via("an offset without colon")
@settings(max_examples=1000, deadline=None)
def test_date_strings_in_c_are_the_parsers(text):
    from station_bridge._fastpath import date_ns

    got = date_ns(text)
    wants = []
    for parse in _PARSERS:
        try:
            wants.append(parse(text))
        except TimestampError:
            wants.append(None)
    if got is not None:  # C reads only what it is sure of, and then exactly what the parser reads
        assert got == wants[0] == wants[1], (text, got, wants)
    else:  # and hands back only a refusal, a zone, a year at the range's edges or beyond 9 digits
        shape = re.fullmatch(r"([0-9]{4})-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]+))?"
                             r"(Z|z|[+-][0-9]{2}:?[0-9]{2})", text, re.ASCII)
        assert (wants[0] is None or shape is None or not 1678 <= int(shape[1]) <= 2261
                or len(shape[2] or "") > 9), (text, wants)


# --- each: several points per message ------------------------------------------------------------

_NONE: dict = {"tags": [], "derived_tags": [], "drop": []}
KRAKEN_DEPTH = {**_NONE, "measurement": "kraken_depth", "each": "result.<pair>.<side:asks|bids>[<level>]",
                "fields": {"price": {"path": "[0]", "type": "float"}, "volume": {"path": "[1]", "type": "float"}},
                "time": {"path": "[2]", "format": "epoch_s"}}
TELEMETRY = {**_NONE, "measurement": "telemetry", "each": "sensors.<sensor>", "tags": {"unit": "unit"},
             "optional_tags": ["unit"],
             "fields": {"value": {"path": "value", "type": "float"}, "ok": {"path": "ok", "type": "boolean"},
                        "label": {"path": "unit", "type": "string"},  # a newline in a string: one line still
                        "station_id": {"path": "$.id", "type": "integer"}},
             "time": {"path": "$.ts", "format": "epoch_s"}}
BINANCE_DEPTH = {**_NONE, "measurement": "binance_depth", "each": "<side:b|a>[<level>]", "tags": {"symbol": "$.s"},
                 "fields": {"price": {"path": "[0]", "type": "float"}, "qty": {"path": "[1]", "type": "float"}},
                 "time": {"path": "$.E", "format": "epoch_ms"}}
# name -> (framing, mapping, document kind): the three documented forms in every framing C reads,
# and the rest of what each can meet: uncaptured wildcards (points nudged in one series), scalar
# elements (`.`), the receive time (the clock drawn per row), nested wildcards with a derived tag
# from the element and the topic as a tag, a negative index on the way (msgpack), max_points edges
EACH_FORMS = {
    "kraken_depth_json": ("text_json", KRAKEN_DEPTH, "kraken"),
    "kraken_depth_json_frames": ("json", KRAKEN_DEPTH, "kraken"),
    "kraken_depth_msgpack": ("msgpack", {**KRAKEN_DEPTH, "max_points": 4}, "kraken"),
    "telemetry": ("msgpack", TELEMETRY, "telemetry"),
    "telemetry_json": ("text_json", TELEMETRY, "telemetry"),
    "binance_depth": ("json", BINANCE_DEPTH, "binance"),
    "binance_depth_msgpack": ("msgpack", {**BINANCE_DEPTH, "max_points": 3}, "binance"),
    "uncaptured": ("msgpack", {**_NONE, "measurement": "levels", "each": "result.*.asks[*]",
                               "fields": {"price": {"path": "[0]", "type": "float"}},
                               "time": {"path": "$.ts", "format": "epoch_s"}}, "kraken"),
    "scalars": ("text_json", {**_NONE, "measurement": "series", "each": "values[<i>]",
                              "fields": {"v": {"path": ".", "type": "float"}},
                              "time": {"path": "$.ts", "format": "auto"}},
                "scalars"),
    "receive_time": ("msgpack", {**KRAKEN_DEPTH, "time": {"field": None}}, "kraken"),
    "nested_wild": ("msgpack", {**_NONE, "measurement": "depth", "each": "result.*.<side>[-2][<n>]",
                                "topic": {"tag": "feed"}, "tags": {"pair": "[2]"}, "optional_tags": ["base", "term"],
                                "derived_tags": [{"path": "[2]", "regex": LAB_REGEX}],
                                "fields": {"price": {"path": "[0]", "type": "float"},
                                           "count": {"path": "[1]", "type": "integer"}},
                                "time": {"path": "$.ts", "format": "epoch_s"}}, "nested"),
}
ESCAPE_KEYS = [*ESCAPES, "\ud800", "\udfff", "x\ud800y", "K" * 5000, "level", "0", "-1", "asks", "bids", "a", "b",
               "XXBTZCAD", "b=1", "a,b=c d", "\\", "sensor\\"]


def _each_doc(draw, kind: str) -> dict:
    """A good document of the form's kind (varied sizes, near T0, repeated times)."""
    ts = draw(st.sampled_from([T0, T0 + 1, T0 + 0.5, T0 + 2]))
    level = st.lists(st.sampled_from([1.5, 2.25, 0.1, 7.0, 1e-5, 65000.5]), min_size=2, max_size=2)
    if kind == "kraken":
        def side():
            return [[*draw(level), ts + k] for k in range(draw(st.integers(0, 3)))]
        pairs = draw(st.lists(st.sampled_from(["XXBTZCAD", "XETHZEUR", "DOTUSD"]), min_size=1, max_size=2, unique=True))
        return {"error": [], "ts": ts, "result": {p: {"asks": side(), "bids": side()} for p in pairs}}
    if kind == "telemetry":
        sensors = {name: {"value": draw(st.sampled_from([21.5, -3.0, 0.0, 1e10])), "ok": draw(st.booleans()),
                          "unit": draw(st.sampled_from(["C", "hPa", "%"]))}
                   for name in draw(st.lists(st.sampled_from(["t1", "t2", "p", "rh"]), min_size=1, max_size=4,
                                             unique=True))}
        return {"id": draw(st.integers(0, 9)), "ts": ts, "sensors": sensors}
    if kind == "binance":
        def book():
            return [[str(x) for x in draw(level)] for _ in range(draw(st.integers(0, 2)))]
        return {"e": "depthUpdate", "E": int(ts * 1000), "s": "BNBBTC", "b": book(), "a": book()}
    if kind == "scalars":
        values = st.lists(st.sampled_from([1.5, None, 2, -7.25, 1e300]), min_size=1, max_size=5)
        return {"ts": ts, "values": draw(values)}
    levels = [[draw(level)[0], draw(st.integers(-5, 5)), p + "EUR"] for p in ("EUR", "USD")]
    return {"ts": ts, "result": {p: {s: [[], [levels[k], [3.5, 2, "GBPJPY"]], "x"]
                                     for s in ("asks", "bids")} for k, p in enumerate(("EUR", "USD"))}}


def _places(node: object, at: tuple = ()) -> list[tuple]:
    """Every place (path of keys and indexes) in a document."""
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _places(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _places(v, (*at, i))
    return out


def _encode(node: object, kind: str, rng, ascii_only: bool) -> bytes:
    """msgpack or JSON of a document, a map's key sometimes sent twice (the decoded dict keeps the
    last value at the first's place)."""
    if isinstance(node, dict):
        items = list(node.items())
        if items and rng.random() < 0.05:
            items.append((items[0][0], items[-1][1]))
        if kind == "msgpack":
            return (b"\xdf" + len(items).to_bytes(4, "big")
                    + b"".join(msgpack.packb(k) + _encode(v, kind, rng, ascii_only) for k, v in items))
        return b"{" + b", ".join(json.dumps(k, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass") + b": "
                                 + _encode(v, kind, rng, ascii_only) for k, v in items) + b"}"
    if isinstance(node, list):
        if kind == "msgpack":
            return b"\xdd" + len(node).to_bytes(4, "big") + b"".join(_encode(v, kind, rng, ascii_only) for v in node)
        return b"[" + b", ".join(_encode(v, kind, rng, ascii_only) for v in node) + b"]"
    if kind == "msgpack":
        return msgpack.packb(node)
    return json.dumps(node, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def _each_message(draw, form: str):
    """A good document of the form with places made hostile: a value, a container of the other
    kind, null, an empty or long list, a key renamed to a hostile one (every escape character, a
    lone surrogate, empty, huge, an int key in msgpack), a key sent twice."""
    framing, _, kind = EACH_FORMS[form]
    doc = _each_doc(draw, kind)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        places = [p for p in _places(doc) if p]
        if not places:
            break
        *parent_at, last = draw(st.sampled_from(places))
        parent: object = doc
        for step in parent_at:
            parent = parent[step]  # type: ignore[index]
        what = draw(st.integers(0, 3))
        if what == 0 and isinstance(parent, dict):  # rename the key
            new = draw(st.one_of(st.sampled_from(ESCAPE_KEYS), st.text(max_size=3),
                                 st.integers(-3, 3) if framing == "msgpack" else st.nothing()))
            parent[new] = parent.pop(last)
        else:
            hostile = st.one_of(_scalar, st.sampled_from([None, [], {}, [[1.5, 2.5, T0]], {"asks": []},
                                                          [None, [1.5, None, T0]], list(range(40)), DEEP]))
            parent[last] = copy.deepcopy(draw(hostile))  # type: ignore[index]
    rng = __import__("random").Random(draw(st.integers(0, 2**32)))
    try:
        payload = _encode(doc, "msgpack" if framing == "msgpack" else "json", rng, draw(st.booleans()))
    except (OverflowError, ValueError, TypeError):
        payload = b"{}" if framing != "msgpack" else msgpack.packb({})
    if draw(st.integers(0, 15)) == 0:
        payload = payload[:len(payload) // 2]
    topic = draw(st.sampled_from([b"kr_depth", b"kr_depth", b"a,b c", b"x\\"]))
    if framing == "text_json":
        return [topic.replace(b" ", b"_") + b" " + payload]
    return [topic, payload]


def each_spec(form: str):
    framing, mapping, _ = EACH_FORMS[form]
    return sub(framing=framing, mapping=mapping)


@pytest.mark.parametrize("form", list(EACH_FORMS))
def test_each_forms_are_compiled(form):
    spec = each_spec(form)
    mapper = Mapper(spec, station="lab")
    assert fastpath.not_covered(mapper, spec) == ""
    assert fastpath.python_reason("auto", spec, mapper) == ""


@pytest.mark.parametrize("form", list(EACH_FORMS))
@given(data=st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_each_gives_the_python_paths_lines_and_refusals(form, data):
    bursts = data.draw(st.lists(st.lists(_each_message(form), min_size=1, max_size=8), min_size=1, max_size=3))
    differential(each_spec(form), bursts)


def _book(k: int, levels: int) -> dict:
    return {"error": [], "result": {"XXBTZCAD": {
        "asks": [[f"{563.4 + i}", "0.750", T0 + k] for i in range(levels)],
        "bids": [[f"{540.0 - i}", "0.002", T0 + k] for i in range(levels)]}}}


@pytest.mark.parametrize("form", ["kraken_depth_json", "kraken_depth_msgpack", "telemetry", "binance_depth",
                                  "uncaptured", "receive_time"])
def test_plain_each_messages_are_mapped_in_c(form):
    framing, _, kind = EACH_FORMS[form]
    spec = each_spec(form)
    docs = []
    for k in range(40):
        if kind == "kraken":
            docs.append({**_book(k, 1 + k % 2), "ts": T0 + k // 3})
        elif kind == "telemetry":
            docs.append({"id": 3, "ts": T0 + k, "sensors": {"t1": {"value": 20.5 + k, "unit": "C", "ok": True},
                                                            "": {"value": 1.0}, "rh": {"value": k, "unit": ""}}})
        else:
            docs.append({"E": (T0 + k) * 1000, "s": "BNBBTC", "b": [["1.5", "2"]], "a": [["1.75", "3"], ["1.8", "1"]]})
    encode = (lambda d: msgpack.packb(d)) if framing == "msgpack" else (lambda d: json.dumps(d).encode())
    burst = ([[b"kr_depth " + encode(d)] for d in docs] if framing == "text_json"
             else [[b"kr_depth", encode(d)] for d in docs])
    assert differential(spec, [burst, burst]) == (80, 80)


def test_max_points_edges_and_what_goes_back():
    """max_points rows map in C; one more is refused by Python (too_many_points); no row
    (no_points), a fixed step with no value (missing_field), a container of the other kind
    (wrong_type), an empty element (missing_field) and a key that needs a JSON escape go back."""
    spec = sub(framing="msgpack", mapping={**KRAKEN_DEPTH, "max_points": 4})
    messages = [[b"kr_depth", msgpack.packb(doc)] for doc in (
        _book(0, 2),  # 4 rows: compiled
        _book(1, 3) | {},  # 6 rows
        {"result": {"XXBTZCAD": {"asks": [], "bids": []}}},
        {"error": ["EQuery:Unknown asset pair"]},
        {"result": {"XXBTZCAD": {"asks": {}, "bids": []}}},
        {"result": {"XXBTZCAD": {"asks": [[]], "bids": []}}},
        _book(2, 1))]
    mapper = Mapper(spec, station="lab")
    accelerator, why = fastpath.Accelerator.for_mapper(mapper, spec)
    assert accelerator is not None, why
    burst, outcomes = map_noting_outcomes(accelerator, spec, mapper, messages)
    assert burst.compiled == 2 and burst.lines == 6
    assert [o[1] for o in outcomes] == ["too_many_points", "no_points", "missing_field", "wrong_type",
                                        "missing_field"]
    assert burst.data.startswith(b"kraken_depth,level=0,pair=XXBTZCAD,side=asks,station=lab price=563.4,volume=0.75 "
                                 b"1700000000000000000\n")
    assert differential(spec, [messages, messages]) == (4, 14)


@pytest.mark.parametrize("framing", ["msgpack", "json", "text_json"])
def test_rows_come_in_the_listed_order_and_maps_in_their_sent_order(framing):
    """<side:asks|bids> gives asks first whatever the map's order; `*` and <sensor> follow the
    map as sent; `[*]` points share a series and time (nudged t+1, t+2 in row order)."""
    spec = sub(framing=framing, mapping={**KRAKEN_DEPTH, "time": {"path": "$.ts", "format": "epoch_s"}})
    doc = {"ts": T0, "result": {"ZZZ": {"bids": [[1.0, 2.0]], "asks": [[3.0, 4.0], [5.0, 6.0]]},
                                "AAA": {"asks": [[7.0, 8.0]]}}}
    def encode(d: dict) -> list[bytes]:
        if framing == "msgpack":
            return [b"d", msgpack.packb(d)]
        return [b"d", json.dumps(d).encode()] if framing == "json" else [b"d " + json.dumps(d).encode()]
    mapper = Mapper(spec, station="lab")
    accelerator, why = fastpath.Accelerator.for_mapper(mapper, spec)
    assert accelerator is not None, why
    burst = accelerator.map([encode(doc)], lambda frames, error: None)
    assert burst.compiled == 1
    assert [line.split(b" ")[0] for line in burst.data.splitlines()] == [
        b"kraken_depth,level=0,pair=ZZZ,side=asks,station=lab", b"kraken_depth,level=1,pair=ZZZ,side=asks,station=lab",
        b"kraken_depth,level=0,pair=ZZZ,side=bids,station=lab", b"kraken_depth,level=0,pair=AAA,side=asks,station=lab"]
    uncaptured = sub(framing=framing, mapping={**EACH_FORMS["uncaptured"][1], "each": "result.*.<side:asks|bids>[*]"})
    assert differential(uncaptured, [[encode(doc) for _ in range(3)]]) == (3, 3)
    sensors = {"id": 1, "ts": T0, "sensors": {"z": {"value": 1.0}, "a": {"value": 2.0}, "m": {"value": None, "ok": 1}}}
    assert differential(sub(framing=framing, mapping=TELEMETRY), [[encode(sensors) for _ in range(2)]]) == (2, 2)
