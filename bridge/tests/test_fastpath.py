"""The compiled hot path (fastpath.py, _fastpath.c) against the Python path it stands in for.

Differential: for generated hostile bursts (msgpack records with every awkward value, broken
payloads, duplicate keys, invalid UTF-8; delimited text with number-like strings), the C path
produces exactly the Python mapper's line for a message, or hands the message back (and the
Python path then maps or refuses it): never a different line. The whole burst, the uniqueness
state after it and the cache's newest point per series are those of the Python path alone.
Through real ZMQ sockets: draining with libzmq from C gives the same lines, counts and order as
pyzmq plus the Python path, and the socket goes on working for pyzmq.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from fractions import Fraction

import msgpack
import pytest
import zmq
from compiled import require_compiled_path
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_stages import sub

from station_bridge import fastpath
from station_bridge.decoders import DecodeError, build
from station_bridge.lineproto import LineError
from station_bridge.mapping import MapError, Mapper


@pytest.fixture(autouse=True)
def _compiled_path() -> None:
    """Fails where a compiler could have built the extension, skips only where none is (compiled.py)."""
    require_compiled_path()

T0 = 1_700_000_000
FIELDS = {"bid": "float", "ask": "float", "volume": "integer", "flag": "boolean", "note": "string"}


def spec_for(framing="msgpack", time_format="epoch_s", **extra):
    # venue may be absent (optional: left out, in C and in Python); instrument may not (C hands
    # a message without it back, Python refuses it missing_field)
    mapping = {"tags": ["instrument", "venue"], "optional_tags": ["venue"], "derived_tags": [], "drop": [],
               "fields": FIELDS,
               "time": {"field": "timestamp", "format": time_format}, "static_tags": {"desk": "fx 1"}}
    if framing == "text_delimited":
        extra.setdefault("field_order", ["timestamp", "instrument", "venue", "bid", "ask", "volume", "note"])
    return sub(framing=framing, mapping=mapping, **extra)


def python_path(spec, mapper):
    """The Python path for one message: (line bytes or None, outcome); updates newest as the
    pipeline does (newest time per series, later wins a tie, declared fields only)."""
    decode = build(spec)
    names = list(spec.mapping.fields)

    def run(frames, newest, error=None):
        if error is not None:  # refused by the uniqueness the C path called
            return None, ("refused", getattr(error, "reason", type(error).__name__))
        try:
            topic, record = decode(frames)
            line, series, ts = mapper.keyed_line(topic, record)
            data = line.encode()
        except (DecodeError, MapError, LineError) as exc:
            return None, ("refused", exc.reason)
        except UnicodeEncodeError:  # a lone surrogate: the pipeline refuses the line (invalid_utf8)
            return None, ("refused", "invalid_utf8")
        if newest is not None:
            current = newest.get(series)
            if current is None or ts >= current[0]:
                newest[series] = (ts, {k: record[k] for k in names if record.get(k) is not None})
        return data, ("line", line)
    return run


def uniqueness_state(mapper):
    unique = getattr(mapper, "unique", None)
    if unique is None:
        return dict(mapper._last)

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return list(value) if hasattr(value, "tolist") else value
    return {name: plain(getattr(unique, name)) for name in type(unique).__slots__}


def differential(spec, bursts):
    """Runs the bursts through the Python path alone and through C + Python; compares."""
    reference, fast = Mapper(spec, station="ams1"), Mapper(spec, station="ams1")
    for mapper in (reference, fast):  # receive times (no time field): the same clock for both
        mapper._clock = itertools.count(T0 * 10**9, 7).__next__
    accelerator, why = fastpath.Accelerator.for_mapper(fast, spec)
    assert accelerator is not None, why
    ref_run, fast_run = python_path(spec, reference), python_path(spec, fast)
    compiled = 0
    for messages in bursts:
        ref_newest: dict = {}
        expected = []
        for frames in messages:
            _, outcome = ref_run(frames, ref_newest)
            expected.append(outcome)
        fast_newest: dict = {}
        handed: list = []

        def slow(frames, error, newest=fast_newest, handed=handed):
            line, outcome = fast_run(frames, newest, error)
            handed.append((frames, outcome))
            return line

        burst = accelerator.map(messages, slow, fast_newest)
        compiled += burst.compiled
        want = b"".join(o[1].encode() + b"\n" for o in expected if o[0] == "line")
        assert burst.data == want, (messages, expected, burst.data)
        assert burst.lines == sum(1 for o in expected if o[0] == "line")
        assert burst.received == len(messages)
        # Each message handed back got the reference's outcome, in order; each refused one was.
        index = {id(frames): i for i, frames in enumerate(messages)}
        positions = [index[id(frames)] for frames, _ in handed]
        assert positions == sorted(positions)
        assert [outcome for _, outcome in handed] == [expected[i] for i in positions]
        assert {i for i, o in enumerate(expected) if o[0] == "refused"} <= set(positions)
        assert fast_newest == ref_newest
        assert _same_types(fast_newest, ref_newest)
        assert uniqueness_state(fast) == uniqueness_state(reference)
    return compiled


def _same_types(a: dict, b: dict) -> bool:
    return all(type(v) is type(b[s][1][k]) for s, (_, rec) in a.items() for k, v in rec.items())


# --- generated msgpack records ------------------------------------------------------------------

_hostile_text = st.one_of(
    st.text(max_size=10),
    st.sampled_from(["EURUSD", "a,b=c d", "x\ny", "tail\\", "", "1.5", "true", 'q"uote', "tab\there", "\r",
                     "é", "日本", "\u0301", "#hash", " lead", "=", ",", "\x00", "\x7f", "1e5", "-0", "+7"]))
_values = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, -1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 2**64 - 1, 2**31, -(2**31)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 5e-324, 1e300, 1.5, 0.1]),
    _hostile_text, st.binary(max_size=6), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_times = st.one_of(
    st.sampled_from([T0 + 0.5, T0 + 0.5, T0 + 0.1, float(T0), T0, T0 + 1, T0 * 1000, T0 * 10**9, 1e17, -1.5, 0,
                     9.3e9, 2**63 // 10**9, "1700000000.5", "1700000000", "+1.5", "-0.25", "1e5", "", "x",
                     "1700000000123", "１７", float("nan"), float("inf"), True, None]),
    st.floats(min_value=-1e10, max_value=1e12), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(min_value=T0, max_value=T0 + 1).map(lambda x: x))
_records = st.fixed_dictionaries({}, optional={
    "instrument": st.one_of(st.sampled_from(["EURUSD", "GBPUSD", "EURUSD"]), _values),
    "venue": _values, "bid": _values, "ask": _values, "volume": _values, "flag": _values,
    "note": _values, "timestamp": _times, "seq": _values})
_plain = st.fixed_dictionaries({
    "instrument": st.sampled_from(["EURUSD", "GBPUSD"]), "bid": st.floats(0.5, 2.0), "ask": st.floats(0.5, 2.0),
    "volume": st.integers(0, 10**6),
    "timestamp": st.sampled_from([T0 + 0.5, T0 + 0.25, T0 + 0.5, float(T0), T0, T0 + 1])})


def _pack(record, single_float):
    try:
        return msgpack.packb(record, use_single_float=single_float)
    except (OverflowError, ValueError):
        return msgpack.packb({})


@st.composite
def _payloads(draw):
    """A msgpack payload: a record, or one broken in a way a decoder must notice."""
    record = draw(st.one_of(_plain, _plain, _records))
    packed = _pack(record, draw(st.booleans()))
    kind = draw(st.sampled_from(["ok"] * 8 + ["truncated", "trailing", "duplicate", "badutf8", "intkey",
                                              "nested_extra", "ext", "array", "reserved", "random"]))
    if kind == "truncated" and len(packed) > 1:
        return packed[:draw(st.integers(0, len(packed) - 1))]
    if kind == "trailing":
        return packed + draw(st.binary(min_size=1, max_size=3))
    if kind == "duplicate":  # a map with one key twice: the last wins in Python
        key = draw(st.sampled_from(["bid", "instrument", "timestamp", "seq"]))
        items = [*record.items(), (key, draw(_values))]
        body = b"".join(_pack(k, False) + _pack(v, False) for k, v in items)
        return (bytes([0x80 | len(items)]) if len(items) < 16 else b"\xde" + struct.pack(">H", len(items))) + body
    if kind == "badutf8":  # a str whose bytes are not UTF-8 (or a UTF-8 encoded surrogate)
        bad = draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80", b"\xe0\x80\x80"]))
        key = draw(st.sampled_from([b"instrument", b"note", b"other"]))
        return b"\x82\xaainstrument\xa6EURUSD" + bytes([0xa0 | len(key)]) + key + bytes([0xa0 | len(bad)]) + bad
    if kind == "intkey":
        return msgpack.packb({1: 2, "bid": 1.5, "timestamp": T0})
    if kind == "nested_extra":
        return msgpack.packb({**record, "extra": {"a": [1, 2]}}) if _packable(record) else packed
    if kind == "ext":
        return msgpack.packb({"bid": 1.5, "timestamp": msgpack.Timestamp(T0, 5)})
    if kind == "array":
        return msgpack.packb([1, 2])
    if kind == "reserved":
        return b"\x81\xa3bid\xc1"
    if kind == "random":
        return draw(st.binary(max_size=40))
    return packed


def _packable(record):
    try:
        msgpack.packb(record)
        return True
    except (OverflowError, ValueError):
        return False


@st.composite
def _messages(draw):
    shape = draw(st.sampled_from(["ok"] * 12 + ["one_frame", "three_frames", "bad_topic", "other_topic"]))
    payload = draw(_payloads())
    if shape == "one_frame":
        return [b"kraken_tick"]
    if shape == "three_frames":
        return [b"kraken_tick", payload, b"x"]
    if shape == "bad_topic":
        return [b"\xff\xfe", payload]
    if shape == "other_topic":
        return [b"kraken_tick.b", payload]
    return [b"kraken_tick", payload]


_bursts = st.lists(st.lists(_messages(), min_size=1, max_size=12), min_size=1, max_size=4)


@pytest.mark.parametrize("time_format", ["epoch_s", "epoch_ms", "epoch_ns", "auto"])
@given(bursts=_bursts)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_msgpack_bursts_give_the_python_paths_lines(time_format, bursts):
    differential(spec_for("msgpack", time_format), bursts)


def test_the_compiled_path_is_used_for_plain_ticks():
    bursts = [[[b"kraken_tick", msgpack.packb({"instrument": i, "bid": 1.5 + k, "ask": 2.5, "volume": k,
                                               "note": "n", "flag": True, "timestamp": T0 + k / 8})]
               for k in range(40) for i in ("EURUSD", "GBPUSD")]]
    assert differential(spec_for(), bursts) == 80


@pytest.mark.parametrize("framing", ["msgpack", "json"])
def test_keys_in_a_changing_order_find_their_fields(framing):
    # C tries first the field the key at the same position had in the last record: records whose
    # keys move, come and go, repeat (a duplicate goes back) or are undeclared get the same lines
    orders = [["instrument", "bid", "ask", "volume", "timestamp"], ["timestamp", "volume", "ask", "bid", "instrument"],
              ["instrument", "extra", "bid", "ask", "volume", "timestamp"], ["bid", "instrument", "timestamp"],
              ["instrument", "bid", "bid", "timestamp"], ["instrument", "ask", "volume", "timestamp", "bid"]]
    values = {"instrument": "EURUSD", "bid": 1.5, "ask": 2.5, "volume": 7, "timestamp": T0, "extra": "x"}
    burst = []
    for k in range(60):
        keys = orders[(k * 7) % len(orders)]
        items = [(key, values[key] + k if key == "timestamp" else values[key]) for key in keys]
        if framing == "msgpack":
            packer = msgpack.Packer()
            payload = packer.pack_map_header(len(items)) + b"".join(packer.pack(x) for kv in items for x in kv)
        else:
            payload = ("{" + ", ".join(f"{json.dumps(key)}: {json.dumps(v)}" for key, v in items) + "}").encode()
        burst.append([b"kraken_tick", payload])
    assert differential(spec_for(framing), [burst, burst[::-1]]) > 0


def test_repeated_times_are_nudged_like_the_python_path():
    # A run of one time, then the nudged times themselves, then out of order: the C path takes the
    # common case itself and leaves every other one to the mapper's own uniqueness.
    times = [T0 + 0.5] * 5 + [T0 + 0.5 + 1e-9 * k for k in range(1, 4)] + [T0, T0 + 0.5, T0 + 2, T0 + 1]
    burst = [[b"kraken_tick", msgpack.packb({"instrument": "EURUSD", "bid": 1.0, "timestamp": t})] for t in times]
    differential(spec_for(), [burst, burst])


def test_a_new_series_and_big_bursts():
    burst = [[b"kraken_tick", msgpack.packb({"instrument": f"I{k % 300}", "bid": k * 0.1, "timestamp": T0 + k})]
             for k in range(5000)]
    assert differential(spec_for(), [burst]) == 5000


def test_the_window_claimed_in_c_is_pythons_after_every_batch():
    # C keeps a batch's claims of the common case and puts them into the window's arrays at once
    # (_fastpath.c upend_t): the arrays must be those of claiming one by one, trims included (a
    # series claimed more than the trim's 64 past the window in one batch, several times), with
    # Python's rule in between (a repeated time: the mapper's claim; a message handed back: the
    # Python path), and more series in one batch than C keeps pending (256: settled midway).
    def tick(instrument, t, **more):
        return [b"kraken_tick", msgpack.packb({"instrument": instrument, "bid": 1.5, "timestamp": t, **more})]

    burst = []
    for k in range(1500):
        burst.append(tick("EURUSD", T0 + k * 1e-3))
        if k % 97 == 0:
            burst.append(tick("EURUSD", T0 + k * 1e-3))  # the same time again: nudged by Python's claim
        if k % 151 == 0:  # handed back (19 digits), mapped and claimed by the Python path
            burst.append(tick("EURUSD", T0 + k * 1e-3 + 1e-4, volume=2**60))
        if k % 163 == 0:
            burst.append(tick("EURUSD", T0 + k * 1e-3 + 2e-4, bid="x"))  # handed back, refused
        if k % 5 == 0:
            burst.append(tick("GBPUSD", T0 + k * 1e-3))
    many = [tick(f"I{k % 400}", T0 + k * 1e-3) for k in range(1200)]
    assert differential(spec_for(), [burst, many, burst[:300], many]) > 4000


# --- delimited text -----------------------------------------------------------------------------

_numberish = st.one_of(st.sampled_from(
    ["1.5", "-0", "+1", "1e5", "1E-3", ".5", "5.", "1_0", " 1", "1 ", "nan", "inf", "-inf", "0x10", "１２", "",
     "007", "1e400", "9223372036854775807", "999999999999999999", "1.7976931348623157e308", "2.5e-324",
     "1700000000.123456789", "1700000000", "1700000000123", "-1.5", "x"]),
    st.floats(allow_nan=False).map(repr), st.integers(-(10**20), 10**20).map(str), st.text(max_size=6))


@st.composite
def _delimited(draw):
    values = [draw(st.one_of(_numberish, st.sampled_from(["1700000000.5", "1700000000.25"]))),
              draw(st.one_of(st.sampled_from(["EURUSD", "GBPUSD"]), _hostile_text)),
              draw(_hostile_text), draw(_numberish), draw(_numberish), draw(_numberish), draw(_hostile_text)]
    if draw(st.booleans()):
        values = values[:draw(st.integers(0, 6))]
    payload = "\x01".join(values).encode("utf-8", "surrogatepass")
    shape = draw(st.sampled_from(["ok"] * 8 + ["no_space", "two_frames", "bad_utf8"]))
    if shape == "no_space":
        return [b"kraken_tick"]
    if shape == "two_frames":
        return [b"kraken_tick " + payload, b""]
    if shape == "bad_utf8":
        return [b"kraken_tick " + payload + b"\xff"]
    return [b"kraken_tick " + payload]


@pytest.mark.parametrize("time_format", ["auto"])
@given(bursts=st.lists(st.lists(_delimited(), min_size=1, max_size=10), min_size=1, max_size=3))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_delimited_bursts_give_the_python_paths_lines(time_format, bursts):
    differential(spec_for("text_delimited", time_format), bursts)


def test_the_compiled_path_is_used_for_plain_delimited_ticks():
    burst = [[f"kraken_tick {T0 + k / 4}\x01EURUSD\x01v\x01{1.5 + k}\x012.5\x01{k}\x01n".encode()] for k in range(30)]
    assert differential(spec_for("text_delimited", "auto"), [burst]) == 30


# --- times: the exact rule against rational arithmetic --------------------------------------------

def _exact(value, unit):
    q = Fraction(value) * unit
    n = math.floor(q)
    rest = q - n
    return n + 1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2) else n


@given(value=st.floats(allow_nan=False, allow_infinity=False, min_value=-9e9, max_value=9e9),
       unit=st.sampled_from([10**9, 10**6, 10**3, 1]))
@settings(max_examples=2000, deadline=None)
def test_exact_float_times_are_the_floats_value_rounded_half_even(value, unit):
    from station_bridge._fastpath import EXACT, float_ns
    expected = _exact(value, unit)
    got = float_ns(value, unit, EXACT)
    if -(2**63) + 2 <= expected <= 2**63 - 2:
        assert got == expected
    else:
        assert got is None


@given(whole=st.integers(0, 10**19), frac=st.text("0123456789", max_size=9), sign=st.sampled_from(["", "-", "+"]),
       unit=st.sampled_from([10**9, 10**6, 10**3, 1, 0]))
@settings(max_examples=2000, deadline=None)
def test_exact_decimal_times(whole, frac, sign, unit):
    from station_bridge._fastpath import text_ns
    text = f"{sign}{whole}" + (f".{frac}" if frac else "")
    value = Fraction(int(f"{whole}{frac}"), 10 ** len(frac))
    use = unit or (10**9 if whole < 10**11 else 10**6 if whole < 10**14 else 10**3 if whole < 10**17 else 1)
    expected = _exact(value, use) * (-1 if sign == "-" else 1)
    got = text_ns(text, unit)
    if abs(expected) <= 2**63 - 2 and len(str(whole)) <= 18:  # 19 digits and more: Python decides
        assert got == expected, text
    else:
        assert got is None


def test_exact_times_near_a_half_and_at_the_edges():
    from station_bridge._fastpath import EXACT, PRODUCT, float_ns
    assert float_ns(1700000000.123456, 10**9, EXACT) == _exact(1700000000.123456, 10**9)
    assert float_ns(0.5e-9, 10**9, EXACT) == _exact(0.5e-9, 10**9)
    assert float_ns(2.5e-9, 10**9, EXACT) == _exact(2.5e-9, 10**9)
    assert float_ns(-1.5, 1, EXACT) == -2 and float_ns(-2.5, 1, EXACT) == -2 and float_ns(2.5, 1, EXACT) == 2
    assert float_ns(9.3e9, 10**9, EXACT) is None and float_ns(float("nan"), 10**9, EXACT) is None
    assert float_ns(1700000000.5, 10**9, PRODUCT) == round(1700000000.5 * 1e9)


# --- through real sockets ---------------------------------------------------------------------------

def test_draining_libzmq_from_c_equals_pyzmq_and_the_python_path(zmq_context):
    spec = spec_for()
    context = zmq_context
    pub, sock = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    for socket in (pub, sock):
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
    pub.bind("inproc://fastpath-test")
    sock.connect("inproc://fastpath-test")
    messages = []
    for k in range(3000):
        record = {"instrument": f"I{k % 7}", "bid": 1.0 + k, "ask": 2.0, "volume": k, "timestamp": T0 + k // 3}
        if k % 97 == 5:
            record["bid"] = float("nan")  # refused by the Python path
        if k % 211 == 7:
            messages.append([b"kraken_tick"])  # one frame: bad framing
            continue
        if k % 301 == 9:
            messages.append([b"kraken_tick", msgpack.packb(record), b"extra"])
            continue
        if k % 401 == 11:
            messages.append([b"kraken_tick", b"\xff" * 2_000_000])  # oversized
            continue
        messages.append([b"kraken_tick", msgpack.packb(record)])
    for frames in messages:
        pub.send_multipart(frames)
    fast = Mapper(spec, station="ams1")
    accelerator, why = fastpath.Accelerator.for_mapper(fast, spec)
    assert accelerator is not None, why
    run = python_path(spec, fast)
    newest: dict = {}
    handed = []

    def slow(frames, error):
        handed.append(frames)
        return run(frames, newest, error)[0]

    data, received, compiled = b"", 0, 0
    while received < len(messages):
        assert sock.poll(2000)
        burst = accelerator.receive(sock, 1000, slow, newest)
        assert burst.errno == 0
        data += burst.data
        received += burst.received
        compiled += burst.compiled
    reference = Mapper(spec, station="ams1")
    ref_run, ref_newest = python_path(spec, reference), {}
    want = b"".join(line + b"\n" for line in (ref_run(f, ref_newest)[0] for f in messages) if line is not None)
    assert data == want
    assert received == len(messages) and compiled > 2800
    assert [f for f in messages if f not in handed] and all(f in messages for f in handed)
    assert newest == ref_newest
    # pyzmq goes on using the same socket
    pub.send_multipart([b"after", b"x"])
    assert sock.recv_multipart() == [b"after", b"x"]
    sock.close(linger=0)
    pub.close(linger=0)
    context.term()


def test_a_closed_socket_is_an_error_not_a_crash(zmq_context):
    spec = spec_for()
    context = zmq_context
    sock = context.socket(zmq.SUB)
    accelerator, _ = fastpath.Accelerator.for_mapper(Mapper(spec), spec)
    burst = accelerator.receive(sock, 10, lambda f, e: None)
    assert (burst.received, burst.errno) == (0, 0)  # nothing there: EAGAIN
    sock.close(linger=0)
    context.term()


def test_shapes_the_compiled_path_does_not_cover_are_named():
    for spec, why in [(sub(mapping={"measurement": None, "measurement_from": "topic"}),
                       "the measurement comes from data (measurement_from: topic)"),
                      # each is compiled (tests/test_fastpath_forms.py), within C's limits
                      (sub(mapping={"each": "a.b.c.d.e.f.g.levels[*]",
                                    "fields": {"p": {"path": "[0]", "type": "float"}}}),
                       "an each path of more than 8 steps"),
                      (sub(framing="text_json", mapping={"fields": {"bid": {"path": "quote[-1]", "type": "float"}}}),
                       "negative list indexes in JSON (msgpack only)")]:
        accelerator, reason = fastpath.Accelerator.for_mapper(Mapper(spec), spec)
        assert accelerator is None and why in reason


# --- floats: repr without dtoa for the common range -------------------------------------------------

@given(x=st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                   st.builds(round, st.floats(-1e9, 1e9), st.integers(0, 12)),
                   st.builds(lambda n, k: n / 10**k, st.integers(-(10**16), 10**16), st.integers(0, 16)),
                   st.sampled_from([0.0, -0.0, 1e-4, 9.999999999999999e-05, 2.0**50, 2.0**50 - 1, 1e15, 1e16,
                                    0.1, 0.3, 1 / 3, 5e-324, 1.7976931348623157e308])))
@settings(max_examples=5000, deadline=None)
def test_floats_are_written_as_repr_writes_them(x):
    from station_bridge._fastpath import float_repr
    assert float_repr(x) == repr(x)
    assert float_repr(math.nextafter(x, math.inf)) == repr(math.nextafter(x, math.inf))


# --- JSON ---------------------------------------------------------------------------------------------

_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.sampled_from(["EURUSD", "a,b=c d", "x\ny", 'q"t', "back\\slash", "\u00e9", "tab\t"]))


@st.composite
def _json_payloads(draw):
    record = draw(st.one_of(_plain, st.fixed_dictionaries({}, optional={
        "instrument": st.one_of(st.sampled_from(["EURUSD", "GBPUSD"]), _json_scalars), "venue": _json_scalars,
        "bid": _json_scalars, "ask": _json_scalars, "volume": _json_scalars, "flag": _json_scalars,
        "note": _json_scalars, "timestamp": st.one_of(_json_scalars, st.sampled_from([T0 + 0.5, T0, "1700000000.5"])),
        "seq": st.one_of(_json_scalars, st.lists(st.integers(), max_size=2))})))
    text = json.dumps(record, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, None, 1])))
    kind = draw(st.sampled_from(["ok"] * 8 + ["raw", "duplicate", "nan", "bom", "trailing", "bad", "leading0",
                                              "utf16", "surrogate", "space"]))
    if kind == "raw":  # hand-written numbers and literals in JSON's grammar, and around it
        value = draw(st.sampled_from(["1", "-0", "-0.0", "1e5", "1E+5", "1.5e-3", "01", "1.", ".5", "+1", "-",
                                      "12345678901234567890", "1e400", "NaN", "Infinity", "-Infinity", "true",
                                      "True", "null", '"x"', "[1]", "{}"]))
        return f'{{"instrument": "EURUSD", "timestamp": {T0}, "bid": {value}}}'.encode()
    if kind == "duplicate":
        again = draw(st.sampled_from(["2.5", "null", '"x"']))
        return f'{{"bid": 1.5, "timestamp": {T0}, "bid": {again}}}'.encode()
    if kind == "nan":
        return f'{{"bid": NaN, "timestamp": {T0}}}'.encode()
    if kind == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if kind == "trailing":
        return text.encode() + draw(st.sampled_from([b" ", b"\n", b"x", b"{}", b","]))
    if kind == "bad":
        return text.encode()[:draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "leading0":
        return f'{{"bid": 007, "timestamp": {T0}}}'.encode()
    if kind == "utf16":
        return text.encode("utf-16")
    if kind == "surrogate":
        return b'{"instrument": "\xed\xa0\x80", "bid": 1.0, "timestamp": 1700000000}'
    if kind == "space":
        return b" \t\r\n" + text.encode() + b" \n"
    return text.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("framing", ["json", "text_json"])
@given(bursts=st.lists(st.lists(_json_payloads(), min_size=1, max_size=10), min_size=1, max_size=3))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_json_bursts_give_the_python_paths_lines(framing, bursts):
    if framing == "json":
        bursts = [[[b"kraken_tick", payload] for payload in burst] for burst in bursts]
    else:
        bursts = [[[b"kraken_tick " + payload] for payload in burst] for burst in bursts]
    differential(spec_for(framing, "auto"), bursts)


def test_the_compiled_path_is_used_for_plain_json_ticks():
    burst = [[b"kraken_tick", json.dumps({"instrument": "EURUSD", "bid": 1.5 + k, "ask": 2, "volume": k,
                                          "flag": False, "note": "n\u00e9", "timestamp": T0 + k / 4},
                                         ensure_ascii=False).encode()]
             for k in range(30)]
    assert differential(spec_for("json"), [burst]) == 30


def test_without_the_extension_the_python_path_is_used(monkeypatch):
    monkeypatch.setattr(fastpath, "_fastpath", None)
    monkeypatch.setattr(fastpath, "_IMPORT_ERROR", "the compiled extension is not installed (test)")
    spec = spec_for()
    accelerator, why = fastpath.Accelerator.for_mapper(Mapper(spec), spec)
    assert accelerator is None and "not installed" in why
    assert "not installed" in fastpath.Accelerator.covers(Mapper(spec), spec)


# --- integers of more than 18 digits: always Python's -------------------------------------------------
# The rule (_fastpath.c, INT_DIGITS_MAX): any integer literal of 19 digits or more that C scans, in
# a key the mapping uses or ignores, in every framing, hands the message back; Python decides
# (json.loads refuses 4,301 digits: integer_overflow; ranges; field types). Generated: 1 to 40
# digits (the 18/19 edge weighted), signs, leading zeros in text, fractions and exponents.

LONG = "9" * 4301  # beyond Python's int() digit limit: json.loads refuses it


@st.composite
def _digits(draw, leading_zeros=False):
    n = draw(st.one_of(st.integers(17, 20), st.integers(1, 40)))
    first = draw(st.sampled_from("0123456789" if leading_zeros or n == 1 else "123456789"))
    return first + draw(st.text("0123456789", min_size=n - 1, max_size=n - 1))


@st.composite
def _json_number(draw):
    text = draw(st.sampled_from(["", "-"])) + draw(_digits())
    if draw(st.integers(0, 3)) == 0:
        text += draw(st.sampled_from([".5", ".0", ".25"]))
    if draw(st.integers(0, 3)) == 0:
        text += draw(st.sampled_from(["e0", "E+2", "e-3", "e10", "E-20"]))
    return text


def _int_digits(text: str) -> int:
    """Digits before any fraction or exponent (the integer literal C scans)."""
    body = text.lstrip("+-")
    for stop in ".eE":
        body = body.split(stop)[0]
    return len(body)


_KEYS = ["seq", "venue", "volume", "bid", "timestamp", "extra"]  # ignored: seq, extra (venue: a tag)


def _json_message(framing, values: dict) -> list[bytes]:
    body = {"instrument": '"EURUSD"', "timestamp": str(T0), "bid": "1.5", "volume": "7", **values}
    payload = ("{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}").encode()
    return [b"kraken_tick", payload] if framing == "json" else [b"kraken_tick " + payload]


def _handed_back_alone(spec, message) -> bool:
    mapper = Mapper(spec, station="ams1")
    accelerator, why = fastpath.Accelerator.for_mapper(mapper, spec)
    assert accelerator is not None, why
    return accelerator.map([message], lambda frames, error: None).compiled == 0


@pytest.mark.parametrize("framing", ["json", "text_json"])
@given(numbers=st.lists(st.tuples(st.sampled_from(_KEYS), _json_number()), min_size=1, max_size=8))
@example(numbers=[("seq", LONG)]).via("the tester's case: 4,301 digits under an ignored key")
@example(numbers=[("extra", "-" + LONG), ("volume", "1" * 19)])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_json_integers_beyond_18_digits_are_pythons(framing, numbers):
    spec = spec_for(framing, "auto")
    messages = [_json_message(framing, {key: text}) for key, text in numbers]
    differential(spec, [messages])
    for (_, text), message in zip(numbers, messages, strict=True):
        if _int_digits(text) > 18:
            assert _handed_back_alone(spec, message), text


def test_4301_digits_under_an_ignored_key_are_refused_as_python_refuses_them():
    spec = spec_for("json")
    message = _json_message("json", {"seq": LONG})
    _, outcome = python_path(spec, Mapper(spec, station="ams1"))(message, None)
    assert outcome[0] == "refused"
    assert _handed_back_alone(spec, message)


@pytest.mark.parametrize("time_format", ["epoch_ns", "auto"])
@given(values=st.lists(st.tuples(st.sampled_from(_KEYS), st.sampled_from(["", "-"]), st.one_of(
    st.integers(17, 20), st.integers(1, 20))), min_size=1, max_size=8), data=st.data())
@example(values=[("seq", "", 19)], data=None).via("an ignored 19-digit integer")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_msgpack_integers_beyond_18_digits_are_pythons(time_format, values, data):
    spec = spec_for("msgpack", time_format)
    messages, long = [], []
    for key, sign, n in values:
        number = 10 ** (n - 1) + (data.draw(st.integers(0, 9 * 10 ** (n - 1) - 1)) if data else 0)
        number = -number if sign else number
        if not -(2**63) <= number < 2**64:
            continue
        record = {"instrument": "EURUSD", "timestamp": T0, "bid": 1.5, "volume": 7, key: number}
        messages.append([b"kraken_tick", msgpack.packb(record)])
        long.append(len(str(abs(number))) > 18)
    if messages:
        differential(spec, [messages])
    for message, is_long in zip(messages, long, strict=True):
        if is_long:
            assert _handed_back_alone(spec, message)


@given(values=st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["", "-", "+"]), _digits(leading_zeros=True),
                                 st.sampled_from(["", "", ".5", "e3"])), min_size=1, max_size=8))
@example(values=[(3, "", "1" * 19, "")]).via("a 19-digit integer field")
@example(values=[(0, "", "1" * 19, ".5")]).via("a time of 19 whole digits")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_delimited_integers_beyond_18_digits_are_pythons(values):
    # columns: timestamp, instrument, venue, bid, ask, volume, note
    spec = spec_for("text_delimited", "auto")
    messages, long = [], []
    for column, sign, digits, tail in values:
        row = [str(T0), "EURUSD", "v", "1.5", "2.5", "7", "n"]
        text = sign + digits + tail
        row[(0, 3, 4, 5)[column]] = text
        messages.append([b"kraken_tick " + "\x01".join(row).encode()])
        long.append(_int_digits(text) > 18)
    differential(spec, [messages])
    for message, is_long in zip(messages, long, strict=True):
        if is_long:
            assert _handed_back_alone(spec, message)


# --- empty topics and payloads (UBSan: no memcpy/memcmp with NULL, even of 0 bytes) ----------------

@pytest.mark.parametrize("framing", ["msgpack", "json", "text_json", "text_delimited"])
def test_an_empty_topic_first_then_others(framing):
    record = {"instrument": "EURUSD", "bid": 1.5, "timestamp": T0}
    if framing == "msgpack":
        payload = msgpack.packb(record)
    elif framing == "text_delimited":
        payload = "\x01".join([str(T0), "EURUSD", "v", "1.5", "2.5", "7", "n"]).encode()
    else:
        payload = json.dumps(record).encode()
    if framing in ("msgpack", "json"):
        burst = [[b"", payload], [b"", b""], [b"kraken_tick", payload], [b"", payload]]
    else:
        burst = [[b" " + payload], [b" "], [b"kraken_tick " + payload], [b" " + payload]]
    differential(spec_for(framing, "auto"), [burst, burst])


# --- libzmq through pyzmq's own extension module, its ABI checked -------------------------------------

def test_libzmq_is_resolved_through_pyzmqs_extension_module():
    import ctypes
    import os

    path = fastpath.pyzmq_extension()
    assert path == zmq.backend.cython._zmq.__file__
    lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    assert fastpath._abi_problem(lib, fastpath._fastpath.MSG_T_SIZE) == ""
    # The function found through the extension is the one in the libzmq its dependencies loaded.
    with open("/proc/self/maps") as maps:
        mapped = {line.split()[-1] for line in maps if "libzmq" in line.rsplit("/", 1)[-1]}
    assert len(mapped) == 1
    own = ctypes.CDLL(mapped.pop(), mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    assert ctypes.cast(lib.zmq_msg_recv, ctypes.c_void_p).value == ctypes.cast(own.zmq_msg_recv, ctypes.c_void_p).value


def test_a_libzmq_whose_msg_t_is_larger_than_compiled_leaves_python_running(monkeypatch, caplog):
    import ctypes
    import os

    lib = ctypes.CDLL(fastpath.pyzmq_extension(), mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    assert "larger than the 32 bytes" in fastpath._abi_problem(lib, 32)  # the real libzmq, probed
    monkeypatch.setattr(fastpath._fastpath, "MSG_T_SIZE", 32)  # as if the extension had been built so
    monkeypatch.setattr(fastpath, "_bound", None)
    spec = spec_for()
    with caplog.at_level("WARNING", logger="station_bridge.fastpath"):
        accelerator, why = fastpath.Accelerator.for_mapper(Mapper(spec), spec)
        fastpath.Accelerator.for_mapper(Mapper(spec), spec)
    assert accelerator is None and "zmq_msg_t is larger than the 32 bytes" in why
    warned = [r for r in caplog.records if r.name == "station_bridge.fastpath"]
    assert len(warned) == 1 and "zmq_msg_t is larger" in warned[0].why


def test_a_compiled_burst_is_bounded_by_the_bytes_of_its_output_too(zmq_context):
    """The burst's message count alone lets 2000 lines of whatever size through: its output is
    bounded by bytes as well (one line may pass the bound, never two), and nothing is lost."""
    spec = spec_for()
    pub, sock = zmq_context.socket(zmq.PAIR), zmq_context.socket(zmq.PAIR)
    for socket in (pub, sock):
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
    pub.bind("inproc://fastpath-bytes")
    sock.connect("inproc://fastpath-bytes")
    count = 400
    for k in range(count):
        record = {"instrument": "I" + "x" * 3000 + str(k % 5), "bid": 1.0 + k, "ask": 2.0, "volume": k,
                  "timestamp": T0 + k}
        pub.send_multipart([b"kraken_tick", msgpack.packb(record)])
    accelerator, why = fastpath.Accelerator.for_mapper(Mapper(spec, station="ams1"), spec)
    assert accelerator is not None, why
    bound = 64 << 10
    received, lines, bursts = 0, 0, 0
    while received < count:
        assert sock.poll(2000)
        burst = accelerator.receive(sock, 2000, lambda f, e: None, None, bound)
        one_line = max(len(line) for line in burst.data.split(b"\n")) + 1
        assert len(burst.data) < bound + one_line, (len(burst.data), bound)
        received += burst.received
        lines += burst.lines
        bursts += 1
    assert (received, lines) == (count, count)
    assert bursts >= count * 3000 // bound
    sock.close(linger=0)
    pub.close(linger=0)
