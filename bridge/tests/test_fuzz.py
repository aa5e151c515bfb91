"""Differential fuzzing through the running bridge against a real influxd (issue 11).

Hypothesis generates batches of messages with hostile measurements, tags, field values and times
(every escape character, control characters, combining marks, lone surrogates, empty strings,
64 KiB strings, NaN/inf, int64 edges and beyond, nested and deeply nested values, broken
framings) mixed with ordinary ones, and publishes them to one running bridge (msgpack and JSON
subscriptions). The oracle: for every message whose values have the declared types, the test
writes its own plainly escaped line to a second database and reads it back; the message is
representable exactly when that line comes back identical. Per batch:
- the bridge process is alive;
- every representable message landed identical (measurement, tags, fields, time);
- every other message is counted under a named reason and dead-lettered, none under `unexpected`;
- received == landed + counted, exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from itertools import count

import msgpack
import pytest
import zmq
from harness import BridgeProcess, publisher, quiet_ledger, subscribed, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import free_port

from station_bridge.metrics import total, value

NAMED = {"bad_framing", "undecodable", "not_a_map", "invalid_utf8", "oversized", "missing_field", "wrong_type",
         "nested_value", "integer_overflow", "non_finite", "bad_timestamp", "unrepresentable", "key_too_long",
         "too_deep"}
MIN_T, MAX_T = -9223372036854775806, 9223372036854775806
NOW = (time.time_ns() // 10**9 - 3600) * 10**9

_chars = st.sampled_from([*' ,="\\\'#\t\r\n\x00\x0b\x7f', "é", "\u0301", "\u200b", "\ufeff", "€", "😀", "\ud800",
                          "\udfff", "a", "b", "Z", "1"])
HOSTILE_TEXT = st.one_of(st.text(_chars, max_size=8), st.text(max_size=6), st.just(""),
                         st.sampled_from(["ticks", "EURUSD", "x" * 65536, "a\\\nb", "#c", "\tlead", "end\\"]))
ORDINARY_TEXT = st.sampled_from(["ticks", "EURUSD", "GBPUSD", "venue one", "desk-7"])
NESTED = st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
                   st.just({"a": {"b": [1, {"c": 2}]}}))
BIG_INTS = st.sampled_from([2**63 - 1, -(2**63), 2**63, 2**64 - 1, -(2**63) - 1, 0, -1, 10**30])
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e308, 5e-324]))


def _numeric_string(text: str) -> str:
    return "x" + text  # never parses as a number or a boolean: the declared type decides


MESSAGE = st.fixed_dictionaries({
    "m": st.one_of(HOSTILE_TEXT, ORDINARY_TEXT),
}, optional={
    "t1": st.one_of(HOSTILE_TEXT, ORDINARY_TEXT, st.none(), st.integers(-5, 5), NESTED),
    "t2": st.one_of(HOSTILE_TEXT, st.none()),
    "f": st.one_of(FLOATS, BIG_INTS, st.integers(-10**6, 10**6), st.booleans(), NESTED, st.none(),
                   HOSTILE_TEXT.map(_numeric_string)),
    "i": st.one_of(BIG_INTS, st.integers(-10**6, 10**6), st.booleans(), NESTED, st.none(),
                   HOSTILE_TEXT.map(_numeric_string)),
    "s": st.one_of(HOSTILE_TEXT, ORDINARY_TEXT, NESTED, st.none()),
    "b": st.one_of(st.booleans(), NESTED, st.none(), HOSTILE_TEXT.map(_numeric_string)),
    "ts": st.one_of(st.none(), st.sampled_from([MIN_T - 1, MIN_T, 0, MAX_T, MAX_T + 1, 2**63, -(2**63), 2**70]),
                    st.integers(NOW, NOW + 10**12)),
})
# Type-correct values with hostile text: what decides their fate is InfluxDB's representability.
_storable = st.sampled_from([*' ,="\\\'#\t\r\n\x0b', "é", "\u0301", "€", "😀", "a", "b", "Z", "1", "_"])
STORABLE_TEXT = st.one_of(st.text(_storable, min_size=1, max_size=10), ORDINARY_TEXT, st.just("y" * 65536))
TYPED = st.fixed_dictionaries({
    "m": st.one_of(st.text(_storable, min_size=1, max_size=10), ORDINARY_TEXT),
    "t1": st.one_of(STORABLE_TEXT, st.just("")),
}, optional={
    "t2": STORABLE_TEXT,
    "f": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63)),
    "i": st.integers(-(2**63), 2**63 - 1),
    "s": st.one_of(STORABLE_TEXT, st.text(max_size=20), st.just("")),
    "b": st.booleans(),
    "ts": st.integers(NOW, NOW + 10**12),
}).filter(lambda m: any(k in m for k in ("f", "i", "s", "b")))
BROKEN = st.one_of(  # framings that never decode: a wrong frame count, garbage, too deep, too big
    st.just([b""]), st.just([b"fz"]), st.lists(st.binary(max_size=20), min_size=3, max_size=4),
    st.binary(max_size=40).map(lambda b: [b"fz", b"\xc1" + b]),
    st.just([b"fz", b"\x91" * 5000 + b"\x00"]),  # nested beyond msgpack's stack
    st.just([b"fz", b"\x00" * 2_000_000]),  # above max_frame_bytes
)
BATCH = st.lists(st.one_of(st.tuples(st.sampled_from(["msgpack", "json"]), TYPED),
                           st.tuples(st.sampled_from(["msgpack", "json"]), TYPED),
                           st.tuples(st.sampled_from(["msgpack", "json"]), MESSAGE),
                           st.tuples(st.just("broken"), BROKEN)), min_size=1, max_size=12)

# t1 and t2 may be absent (optional: left out, as the oracle writes them); times are hostile on
# purpose, over InfluxDB's whole range: no window around the receive time (tested apart, in
# test_strict_mapping.py).
MAPPING = {"measurement_from": "field", "measurement_field": "m", "tags": ["k", "t1", "t2"],
           "optional_tags": ["t1", "t2"],
           "fields": {"f": "float", "i": "integer", "s": "string", "b": "boolean"},
           "time": {"field": "ts", "format": "epoch_ns", "accept_ahead": None, "accept_behind": None}}


@pytest.fixture(scope="module")
def running(tmp_path_factory, influxd):
    tmp = tmp_path_factory.mktemp("fuzz")
    influxd.query('CREATE DATABASE "fuzz"')
    influxd.query('CREATE DATABASE "fuzz_oracle"')
    endpoints = {"msgpack": f"tcp://127.0.0.1:{free_port()}", "json": f"tcp://127.0.0.1:{free_port()}"}
    bridge = BridgeProcess(tmp, influxd, "fuzz", endpoints["msgpack"],
                           subscription={"name": "fz", "topics": [""], "mapping": MAPPING},
                           subscriptions_extra=[{"name": "fzj", "endpoints": [endpoints["json"]], "framing": "json",
                                                 "topics": [""], "mapping": MAPPING}],
                           destination={"batch_size": 5000, "flush_interval": "50ms"}, station=None)
    bridge.start()
    context = zmq.Context()
    sockets = {}
    for framing, endpoint in endpoints.items():
        sockets[framing] = publisher(context, endpoint)
    for pub in sockets.values():
        subscribed(pub)
    yield bridge, sockets, influxd
    print(f"\n[fuzz] {', '.join(f'{k}={int(v)}' for k, v in sorted(STATS.items()))}")
    for pub in sockets.values():
        pub.close(linger=0)
    context.term()
    assert bridge.stop() == 0


# --- the model: which values have the declared type (the bridge's documented coercions) ----------

def _typed(kind: str, v: object) -> tuple[bool, object, str]:
    """(has the declared type, the value InfluxDB should hold, the value as line protocol)."""
    if isinstance(v, dict | list):
        return False, None, ""
    if kind == "float":
        if isinstance(v, bool) or not isinstance(v, int | float):
            return False, None, ""
        try:
            number = float(v)
        except OverflowError:
            return False, None, ""
        return True, number, repr(number)
    if kind == "integer":
        if isinstance(v, bool) or not isinstance(v, int):
            return False, None, ""
        return True, v, f"{v}i"
    if kind == "boolean":
        if not isinstance(v, bool):
            return False, None, ""
        return True, v, "true" if v else "false"
    if not isinstance(v, str):
        return False, None, ""
    return True, v, '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tag(v: object) -> tuple[bool, str | None]:
    if v is None:
        return True, None
    if isinstance(v, dict | list):
        return False, None
    text = str(v)
    return True, (text or None)


def _plain_line(msg: dict, ts: int) -> tuple[str, dict, dict] | None:
    """The oracle's own line: measurement `,` and space escaped; tags `,` `=` space; strings
    `\\` and `"`. None when the values do not have their declared types."""
    measurement = msg["m"]
    if not isinstance(measurement, str):
        return None
    tags, fields, parts = {}, {}, []
    for key in ("k", "t1", "t2"):
        ok, text = _tag(msg.get(key))
        if not ok:
            return None
        if text is not None:
            tags[key] = text
    for key, kind in MAPPING["fields"].items():
        if msg.get(key) is None:
            continue
        ok, stored, text = _typed(kind, msg[key])
        if not ok:
            return None
        fields[key] = stored
        parts.append(f"{key}={text}")
    if not parts:
        return None
    esc = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
    head = measurement.replace(",", r"\,").replace(" ", r"\ ")
    head += "".join(f",{k}={v.translate(esc)}" for k, v in sorted(tags.items()))
    return f"{head} {','.join(parts)} {ts}", tags, fields


def _rows(influxd, db: str, prefix: str) -> dict[str, dict]:
    rows = influxd.query(f"SELECT * FROM /(?s).*/ WHERE \"k\" =~ /^{prefix}/", db=db)
    return {row["k"]: row for row in rows}


def _same(row: dict | None, measurement: str, tags: dict, fields: dict, ts: int | None) -> bool:
    if row is None or row["_measurement"] != measurement:
        return False
    if any(row.get(k) != v for k, v in tags.items()) or any(row.get(k) is not None for k in ("t1", "t2")
                                                             if k not in tags):
        return False
    for key in MAPPING["fields"]:
        want, got = fields.get(key), row.get(key)
        if isinstance(want, float) and isinstance(got, int | float):
            if not (float(got) == want or (math.isnan(want) and math.isnan(got))):
                return False
        elif want != got:
            return False
    return ts is None or row["time"] == ts


_ids = count()
STATS: dict[str, float] = {}


def _stat(key: str, n: float = 1) -> None:
    STATS[key] = STATS.get(key, 0) + n


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(batch=BATCH)
def test_differential_fuzz_through_the_running_bridge(running, batch):
    bridge, sockets, influxd = running
    before = bridge.samples()
    dead_file = bridge.tmp / "dead" / "input.jsonl"
    dead_before = len(dead_file.read_text().splitlines()) if dead_file.exists() else 0
    prefix = f"e{next(_ids)}x"
    expected: dict[str, tuple] = {}  # k -> (measurement, tags, fields, time) for representable messages
    sent = 0
    for n, (framing, item) in enumerate(batch):
        if framing == "broken":
            sockets["msgpack"].send_multipart(item)
            sent += 1
            continue
        msg = {"k": f"{prefix}{n}", **item}
        ts = msg.get("ts")
        oracle_ts = ts if isinstance(ts, int) else NOW + n
        if framing == "msgpack":
            try:
                payload = msgpack.packb(msg)
            except OverflowError:  # an integer beyond 64 bits: only JSON carries it
                framing, payload = "json", json.dumps(msg, allow_nan=True).encode()
            except UnicodeEncodeError:  # a lone surrogate: sent as a broken publisher would (WTF-8)
                try:
                    payload = msgpack.packb(msg, unicode_errors="surrogatepass")
                except OverflowError:
                    framing, payload = "json", json.dumps(msg, allow_nan=True).encode()
                else:
                    msg = None  # not UTF-8: refused before mapping
        else:
            payload = json.dumps(msg, allow_nan=True).encode()  # lone surrogates as \ud800 escapes
        sockets[framing].send_multipart([b"fz", payload])
        sent += 1
        if msg is None:
            continue
        plain = _plain_line(msg, oracle_ts)
        if plain is None:
            continue
        line, tags, fields = plain
        try:
            status, _ = influxd.write(line, "fuzz_oracle")
        except UnicodeEncodeError:
            continue  # a lone surrogate: no UTF-8 line exists for it
        if status != 204:
            continue
        oracle = _rows(influxd, "fuzz_oracle", msg["k"] + "$").get(msg["k"])
        if _same(oracle, msg["m"], tags, fields, oracle_ts):
            expected[msg["k"]] = (msg["m"], tags, fields, ts if isinstance(ts, int) else None)
    received = lambda s: total(s, "bridge_received_messages_total")  # noqa: E731
    wait_for(lambda: received(bridge.samples()) - received(before) == sent, 20, f"{sent} messages received")
    after = quiet_ledger(bridge, subscriptions=("fz", "fzj"))  # also: nothing pending
    assert bridge.alive
    landed_rows = _rows(influxd, "fuzz", prefix)
    for k, (measurement, tags, fields, ts) in expected.items():
        assert _same(landed_rows.get(k), measurement, tags, fields, ts), (k, expected[k], landed_rows.get(k))
    assert set(landed_rows) == set(expected), "landed exactly what InfluxDB can represent"
    rejected: dict[str, float] = {}
    for (name, labels), v in after.items():
        if name == "bridge_rejected_messages_total" and v - before.get((name, labels), 0):
            reason = dict(labels)["reason"]
            rejected[reason] = rejected.get(reason, 0) + v - before.get((name, labels), 0)
    dropped = total(after, "bridge_dropped_points_total") - total(before, "bridge_dropped_points_total")
    written = value(after, "bridge_written_points_total", destination="local") - \
        value(before, "bridge_written_points_total", destination="local")
    assert set(rejected) <= NAMED, rejected  # never `unexpected`
    assert sent == len(landed_rows) + sum(rejected.values()) + dropped  # received == landed + counted
    assert written == len(landed_rows) and value(after, "bridge_pending_points", destination="local") == 0
    # Every message that did not land is counted and dead-lettered with its reason.
    dead = [json.loads(x) for x in dead_file.read_text().splitlines()[dead_before:]] if dead_file.exists() else []
    assert len(dead) == sum(rejected.values()) and {d["reason"] for d in dead} == set(rejected)
    _stat("messages", sent)
    _stat("representable_landed_identical", len(expected))
    _stat("landed", len(landed_rows))
    for reason, n in rejected.items():
        _stat(f"rejected_{reason}", n)
