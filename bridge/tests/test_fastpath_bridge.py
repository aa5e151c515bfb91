"""The compiled path inside the running bridge against the pure Python path (`fast_path: off`).

Two bridge processes subscribe to the same publishers (msgpack, text_delimited and JSON
subscriptions): one runs the compiled path where it can, the other Python only. The same
bursts of valid and hostile messages (NaN and infinities, int64 edges and beyond, lone
surrogates, huge strings, wrong types, truncated msgpack, oversized frames, broken framings,
repeated and out-of-range times) reach both. Stored points in a real influxd (one database
each) and every counter of the ledger's equations must be identical; the dead letters name the
same reasons. Receive times (a record without its time) differ between processes by nature:
those points are compared without their time.
"""

from __future__ import annotations

import json

import msgpack
import pytest
import zmq
from compiled import require_compiled_path
from harness import BridgeProcess, publisher, quiet_ledger, subscribed, wait_for
from servers import free_port

from station_bridge.metrics import total

T0 = 1_700_000_000
MAX_FRAME = 65536
FIELDS = {"bid": "float", "ask": "float", "volume": "integer", "note": "string", "flag": "boolean"}
MAPPING = {"measurement": "ticks", "tags": ["instrument"], "fields": FIELDS,
           "time": {"field": "timestamp", "format": "epoch_s"}}
ORDER = ["timestamp", "instrument", "bid", "ask", "volume", "note"]
TEXT_MAPPING = {"measurement": "tticks", "tags": ["instrument"],
                "fields": {k: FIELDS[k] for k in ORDER[2:]}, "time": {"field": "timestamp", "format": "auto"}}
JSON_MAPPING = {**MAPPING, "measurement": "jticks"}
NO_TIME = "NOTIME"  # instrument of records without a time: compared without it
COUNTERS = ("bridge_received_messages_total", "bridge_mapped_messages_total", "bridge_rejected_messages_total",
            "bridge_timestamp_fallbacks_total", "bridge_mapped_points_total", "bridge_accepted_points_total",
            "bridge_written_points_total", "bridge_dropped_points_total", "bridge_dead_letters_total")
SUBS = ("mp", "txt", "js")


def hostile_records() -> list[dict]:
    """Valid ticks interleaved with every awkward value the mapping must name or carry."""
    out: list[dict] = []
    awkward: list[dict] = [
        {"bid": float("nan")}, {"ask": float("inf")}, {"bid": float("-inf")},
        {"volume": 2**63 - 1}, {"volume": -(2**63)}, {"volume": 2**63}, {"volume": 2**64 - 1},
        {"volume": 1.5}, {"volume": "12"}, {"volume": True}, {"bid": "x"}, {"bid": 3}, {"bid": True},
        {"flag": "true"}, {"flag": 1}, {"flag": False}, {"note": 7}, {"note": b"\xff\xfe"}, {"note": b"bytes"},
        {"note": "x" * 30_000}, {"note": "é,日本 =\\\"q\n"}, {"note": ""}, {"instrument": ""},
        {"instrument": "a,b=c d\\"}, {"instrument": [1]}, {"instrument": {"a": 1}}, {"instrument": 5},
        {"instrument": "x" * 70_000}, {"bid": [1.0]}, {"bid": {"v": 1}}, {"bid": None, "ask": None},
        {"bid": None, "ask": None, "volume": None, "note": None, "flag": None},
        {"timestamp": float("nan")}, {"timestamp": "1700000000.5"}, {"timestamp": 1e30}, {"timestamp": -1.5},
        {"timestamp": 2**63}, {"timestamp": True}, {"timestamp": T0 * 1000}, {"timestamp": T0 + 0.1},
        {"timestamp": T0 + 1e-9}, {"timestamp": T0}, {"timestamp": T0}, {"timestamp": T0},
        {"timestamp": None, "instrument": NO_TIME}, {"seq": 1, "extra": [1, 2]}, {"bid": 5e-324}, {"bid": -0.0},
        {"bid": 1e308}, {"ask": 0.1 + 0.2},
    ]
    for k in range(600):
        record: dict = {"instrument": ("EURUSD", "GBPUSD", "USDJPY")[k % 3], "bid": 1.0 + k / 7,
                        "ask": 1.5 + k / 3, "volume": k * 1000, "note": f"n{k}", "flag": k % 2 == 0,
                        "timestamp": T0 + k // 4 + (k % 4) * 0.25}
        if k % 5 == 0:
            patch = awkward[(k // 5) % len(awkward)]
            record.update(patch)
            if record.get("timestamp") is None:
                record.pop("timestamp", None)
                record["instrument"] = NO_TIME
            record = {key: v for key, v in record.items() if v is not None}
        out.append(record)
    return out


def msgpack_messages(records: list[dict]) -> list[list[bytes]]:
    out = []
    for k, record in enumerate(records):
        try:
            payload = msgpack.packb(record)
        except OverflowError:
            continue
        out.append([b"mp_tick", payload])
        if k % 37 == 3:
            out.append([b"mp_tick", payload[:-2]])  # truncated
        if k % 41 == 4:
            out.append([b"mp_tick", msgpack.packb({**record, "note": "\ud800x"}, unicode_errors="surrogatepass")])
        if k % 43 == 5:
            out.append([b"mp_tick", msgpack.packb({**record, "note": "y" * (MAX_FRAME + 10)})])  # oversized
        if k % 47 == 6:
            out.append([b"mp_tick"])  # one frame
            out.append([b"mp_tick", payload, b"extra"])  # three
            out.append([b"mp_tick", msgpack.packb([1, 2])])  # not a map
            out.append([b"mp_tick", b"\xc1"])  # never used by msgpack
            out.append([b"mp_tick", msgpack.packb(record) + b"\x00"])  # extra data
            out.append([b"mp_tick", msgpack.packb({**record, "seq": 2**64 - 1})])  # 20 digits, ignored
            out.append([b"mp_tick", msgpack.packb({**record, "volume": -(10**18)})])  # 19 digits, used
    return out


def _text(value: object) -> str:
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


def text_messages(records: list[dict]) -> list[list[bytes]]:
    out = []
    for k, record in enumerate(records):
        values = [_text(record.get(name, "")) for name in ORDER]
        try:
            payload = "\x01".join(values).encode("utf-8")
        except UnicodeEncodeError:
            continue
        out.append([b"txt_tick " + payload])
        if k % 37 == 3:
            out.append([b"txt_tick " + payload + b"\x01extra"])  # one value too many
        if k % 41 == 4:
            out.append([b"txt_tick " + payload.replace(b"\x01", b"\x01\xed\xa0\x80", 1)])  # a WTF-8 surrogate
            out.append([b"txt_tick " + payload + b"\xff"])  # not UTF-8
        if k % 43 == 5:
            out.append([b"txt_tick " + b"z" * (MAX_FRAME + 1)])  # oversized
        if k % 47 == 6:
            out.append([b"txt_tick"])  # no payload
            out.append([b"txt_tick ", b"second frame"])
            for text in ("nan", "inf", "-inf", "9223372036854775808", "-9223372036854775809", "1e400", "0x10",
                         " 1.5", "1_000", "١٢"):
                out.append([b"txt_tick " + "\x01".join([str(T0 + k), "EURUSD", text, text, text, text])
                            .encode("utf-8")])
    return out


def json_messages(records: list[dict]) -> list[list[bytes]]:
    out = []
    for k, record in enumerate(records):
        plain = {key: (v.decode("latin-1") if isinstance(v, bytes) else v) for key, v in record.items()}
        out.append([b"js_tick", json.dumps(plain, allow_nan=True).encode()])
        if k % 41 == 4:
            out.append([b"js_tick", json.dumps({**plain, "note": "\ud800"}).encode()])  # a lone surrogate escape
            out.append([b"js_tick", json.dumps({**plain, "instrument": "\udfff"}).encode()])
        if k % 43 == 5:
            out.append([b"js_tick", json.dumps({**plain, "volume": 10**30}).encode()])
            out.append([b"js_tick", b'{"bid": 1.0, "bid": 2.0, "timestamp": 1700000000}'])  # duplicate keys
            out.append([b"js_tick", json.dumps(plain).encode()[:-1]])  # truncated
            # integers of 19+ digits under an ignored key: the Python path decides (4,301 digits:
            # json.loads refuses them, integer_overflow)
            for digits in ("1" * 19, "-" + "7" * 40, "9" * 4301):
                out.append([b"js_tick", json.dumps(plain).encode()[:-1] + f', "seq": {digits}}}'.encode()])
    return out


@pytest.fixture()
def pair(tmp_path, influxd):
    endpoints = {name: f"tcp://127.0.0.1:{free_port()}" for name in SUBS}
    subs = [{"name": "mp", "endpoints": [endpoints["mp"]], "topics": ["mp_tick"], "framing": "msgpack",
             "max_frame_bytes": MAX_FRAME, "mapping": MAPPING},
            {"name": "txt", "endpoints": [endpoints["txt"]], "topics": ["txt_tick"], "framing": "text_delimited",
             "delimiter": "\x01", "field_order": ORDER, "max_frame_bytes": MAX_FRAME, "mapping": TEXT_MAPPING},
            {"name": "js", "endpoints": [endpoints["js"]], "topics": ["js_tick"], "framing": "json",
             "max_frame_bytes": MAX_FRAME, "mapping": JSON_MAPPING}]
    bridges = {}
    for mode in ("auto", "off"):
        db = f"fp_{mode}_{free_port()}"
        influxd.query(f'CREATE DATABASE "{db}"')
        tmp = tmp_path / mode
        tmp.mkdir()
        bridges[mode] = (BridgeProcess(tmp, influxd, db, "", subscription=subs[0], subscriptions_extra=subs[1:],
                                       destination={"batch_size": 5000, "flush_interval": "50ms"},
                                       fast_path=mode), db)
    context = zmq.Context()
    sockets = {}
    for name, endpoint in endpoints.items():
        sockets[name] = publisher(context, endpoint)
    for bridge, _ in bridges.values():
        bridge.start()
    for pub in sockets.values():
        subscribed(pub, subscribers=len(bridges))
    yield bridges, sockets
    for pub in sockets.values():
        pub.close(linger=0)
    context.term()
    for bridge, _ in bridges.values():
        if bridge.alive:
            assert bridge.stop() == 0


def _rows(influxd, db: str) -> list[tuple]:
    rows = []
    for measurement in ("ticks", "tticks", "jticks"):
        for row in influxd.query(f'SELECT * FROM "{measurement}"', db=db):
            if row.get("instrument") == NO_TIME:
                row["time"] = None
            rows.append(tuple(sorted((k, repr(v)) for k, v in row.items())))
    return sorted(rows)


def _counters(samples: dict) -> dict:
    return {(name, labels): v for (name, labels), v in samples.items() if name in COUNTERS and v}


def test_compiled_and_pure_bridges_store_the_same_points_and_counts(pair, influxd):
    bridges, sockets = pair
    compiled, pure = bridges["auto"][0], bridges["off"][0]
    require_compiled_path()  # fails where a compiler could have built it (tests/compiled.py)
    expected = "compiled"
    for name in SUBS:
        assert compiled.health()[1]["subscriptions"][name]["fast_path"].startswith(expected)
        assert pure.health()[1]["subscriptions"][name]["fast_path"] == "python: fast_path: off"
    assert compiled.value("bridge_fast_path_compiled", subscription="mp") == (expected == "compiled")
    records = hostile_records()
    bursts = {"mp": msgpack_messages(records), "txt": text_messages(records), "js": json_messages(records)}
    sent = 0
    for _round in range(2):  # the second round repeats every time: nudged by uniqueness alike
        for name, messages in bursts.items():
            for frames in messages:
                sockets[name].send_multipart(frames)
            sent += len(messages)
    for bridge, _ in bridges.values():
        wait_for(lambda b=bridge: total(b.samples(), "bridge_received_messages_total") == sent, 30,
                 f"{sent} messages received")
    samples = {mode: quiet_ledger(bridge, subscriptions=SUBS) for mode, (bridge, _) in bridges.items()}  # delivered
    assert _counters(samples["auto"]) == _counters(samples["off"])
    rejected = {dict(labels)["reason"] for (name, labels), v in samples["auto"].items()
                if name == "bridge_rejected_messages_total" and v}
    assert {"non_finite", "oversized", "undecodable", "bad_framing", "wrong_type", "invalid_utf8",
            "integer_overflow", "bad_timestamp"} <= rejected, rejected
    assert "unexpected" not in rejected
    stored = {mode: _rows(influxd, db) for mode, (_, db) in bridges.items()}
    assert len(stored["auto"]) > 2000
    assert stored["auto"] == stored["off"]
    dead = {}
    for mode, (bridge, _) in bridges.items():
        lines = (bridge.tmp / "dead" / "input.jsonl").read_text().splitlines()
        dead[mode] = sorted((d["subscription"], d["reason"]) for d in map(json.loads, lines))
    assert dead["auto"] == dead["off"]
    started = [r for r in compiled.log_records() if r.get("msg") == "fast path"]
    assert started and set(started[0]["subscriptions"]) == set(SUBS)
    for name in SUBS:  # the compiled path carried the bulk of it, and handed back the rest
        handled = compiled.value("bridge_fast_path_messages", subscription=name)
        assert handled > 0.5 * samples["auto"][("bridge_mapped_messages_total", (("subscription", name),))]
        assert compiled.value("bridge_fast_path_handed_back", subscription=name) > 0


# --- each: an order book on the compiled path ------------------------------------------------------

DEPTH_MAPPING = {"measurement": "depth", "each": "result.<pair>.<side:asks|bids>[<level>]",
                 "tags": {"venue": "$.venue"}, "optional_tags": ["venue"],
                 "fields": {"price": {"path": "[0]", "type": "float"}, "volume": {"path": "[1]", "type": "float"}},
                 "time": {"path": "[2]", "format": "epoch_s"}}


def depth_messages() -> list[list[bytes]]:
    """Kraken depth snapshots (text_json), every tenth one made hostile: refusals of each
    (no_points, missing_field, wrong_type, too_many_points), keys that need escapes, a lone
    surrogate, a key sent twice, NaN; the second round repeats every time (nudged alike)."""
    out = []
    for k in range(300):
        book = {"asks": [[f"{563.4 + i / 8:.5f}", "0.750", T0 + k // 3 + i / 4] for i in range(1 + k % 3)],
                "bids": [[f"{540.0 - i / 8:.5f}", f"{k / 7:.3f}", T0 + k // 3] for i in range(k % 4)]}
        doc = {"error": [], "venue": ("kraken", "kr,x=1 y", "")[k % 3],
               "result": {("XXBTZCAD", "XETHZEUR")[k % 2]: book}}
        text = json.dumps(doc)
        if k % 10 == 5:
            text = json.dumps([
                {"error": ["EQuery:Unknown asset pair"]}, {"result": {"X": {"asks": [], "bids": []}}},
                {"result": {"X": {"asks": {}, "bids": []}}}, {"result": {"X": {"asks": [[1.5, 2, T0]] * 30}}},
                {"result": {"a b,c=d\\": book}}, {"result": {"\ud800": book}}, {"result": {"X": [book]}},
                {"result": {"X": {"asks": [[float("nan"), 1, T0]]}}}, {"result": {"日本": book}},
                {"result": {"X": {"asks": [None, [1.5, None, T0], [None, None, T0]]}}}][(k // 10) % 10],
                ensure_ascii=k % 20 == 5)
        if k % 50 == 7:
            text = text[:-1] + ', "result": {"Y": {"asks": [[1, 2, 3]]}}}'  # result twice
        out.append([b"depth " + text.encode("utf-8", "surrogatepass")])
    return out


def test_an_order_book_with_each_runs_compiled_and_stores_what_python_stores(tmp_path, influxd):
    require_compiled_path()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = {"name": "depth", "endpoints": [endpoint], "topics": ["depth"], "framing": "text_json",
           "max_frame_bytes": MAX_FRAME, "mapping": {**DEPTH_MAPPING, "max_points": 20}}
    bridges = {}
    for mode in ("auto", "off"):
        db = f"each_{mode}_{free_port()}"
        influxd.query(f'CREATE DATABASE "{db}"')
        (tmp_path / mode).mkdir()
        bridges[mode] = (BridgeProcess(tmp_path / mode, influxd, db, "", subscription=sub,
                                       destination={"batch_size": 5000, "flush_interval": "50ms"}, fast_path=mode), db)
    context = zmq.Context()
    pub = publisher(context, endpoint)
    try:
        for bridge, _ in bridges.values():
            bridge.start()
        subscribed(pub, subscribers=len(bridges))
        compiled, pure = bridges["auto"][0], bridges["off"][0]
        assert compiled.health()[1]["subscriptions"]["depth"]["fast_path"] == "compiled"
        assert pure.health()[1]["subscriptions"]["depth"]["fast_path"] == "python: fast_path: off"
        assert compiled.value("bridge_fast_path_compiled", subscription="depth") == 1
        messages = depth_messages()
        for _round in range(2):
            for frames in messages:
                pub.send_multipart(frames)
        for bridge, _ in bridges.values():
            wait_for(lambda b=bridge: total(b.samples(), "bridge_received_messages_total") == 2 * len(messages), 30,
                     "every message received")
        samples = {mode: quiet_ledger(bridge, subscriptions=("depth",)) for mode, (bridge, _) in bridges.items()}
        assert _counters(samples["auto"]) == _counters(samples["off"])
        rejected = {dict(labels)["reason"] for (name, labels), v in samples["auto"].items()
                    if name == "bridge_rejected_messages_total" and v}
        assert {"no_points", "missing_field", "wrong_type", "too_many_points", "non_finite"} <= rejected, rejected
        stored = {}
        for mode, (_, db) in bridges.items():
            rows = influxd.query('SELECT * FROM "depth"', db=db)
            stored[mode] = sorted(tuple(sorted((k, repr(v)) for k, v in row.items())) for row in rows)
        assert len(stored["auto"]) > 500
        assert stored["auto"] == stored["off"]
        handled = compiled.value("bridge_fast_path_messages", subscription="depth")
        assert handled > 0.5 * samples["auto"][("bridge_mapped_messages_total", (("subscription", "depth"),))]
        assert compiled.value("bridge_fast_path_handed_back", subscription="depth") > 0
    finally:
        pub.close(linger=0)
        context.term()
        for bridge, _ in bridges.values():
            if bridge.alive:
                assert bridge.stop() == 0
