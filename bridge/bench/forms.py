"""CPU per point of the mapping forms, Python path against compiled path, in one process and one run.

    cd bridge && python bench/forms.py [--messages 200000] [--rounds 3]

For each form (a flat tick; the lab's own feed with derived tags; topic regex tags; rfc3339 date
strings; the receive time; numbers as text; paths into a nested document; `each`: an order book
with captured pair/side/level, a telemetry document with captured sensor keys) the same msgpack
messages go, in bursts of 2,000, through the Python path as the pipeline runs it (decode,
`keyed_line` or `keyed_lines`, the newest point per series for the cache) and through
`Accelerator.map` (C, with the same newest dict). The thread's CPU time per point is reported
(with `each` a message is several points: the order book 20, the telemetry document 8),
the least of `rounds` alternating rounds (the machine is shared); both outputs are compared byte
for byte. No sockets, no InfluxDB: this is the mapping's cost alone (receive, journal and HTTP
are the bench's end-to-end rows).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from station_bridge import config as cfg
from station_bridge.decoders import build
from station_bridge.demo import INSTRUMENTS, ticks
from station_bridge.fastpath import Accelerator
from station_bridge.mapping import Mapper

BURST = 2000
FLAT = {"measurement": "ticks", "tags": ["instrument"], "fields": {"bid": "float", "ask": "float", "volume": "integer"},
        "time": {"field": "timestamp", "format": "epoch_s"}}
LAB = {**FLAT, "drop": ["seq"],  # inventories/local: the kraken subscription
       "derived_tags": [{"source": "instrument", "regex": "^(?P<base>[A-Z]{3})(?P<term>[A-Z]{3})$"}]}
FORMS = {
    "flat": FLAT,
    "lab (derived tags)": LAB,
    "topic regex": {**FLAT, "topic": {"regex": "^(?P<venue>[a-z]+)_(?P<kind>[a-z]+)$"}},
    "rfc3339": {**FLAT, "time": {"field": "timestamp", "format": "rfc3339"}},
    "receive time": {**FLAT, "time": {"field": None}},
    "numbers as text": FLAT,
    "nested paths": {"measurement": "ticks", "tags": {"instrument": "meta.sym"},
                     "fields": {"bid": {"path": "quote.bid", "type": "float"},
                                "ask": {"path": "quote.ask", "type": "float"},
                                "volume": {"path": "quote.size", "type": "integer"}},
                     "time": {"path": "meta.t[0]", "format": "epoch_s"}},
    "order book (each, captured side/level)": {
        "measurement": "depth", "each": "result.<pair>.<side:asks|bids>[<level>]",
        "fields": {"price": {"path": "[0]", "type": "float"}, "volume": {"path": "[1]", "type": "float"}},
        "time": {"path": "[2]", "format": "epoch_s"}},
    "telemetry (each, captured keys)": {
        "measurement": "telemetry", "each": "sensors.<sensor>", "tags": {"unit": "unit"},
        "fields": {"value": {"path": "value", "type": "float"}, "station_id": {"path": "$.id", "type": "integer"}},
        "time": {"path": "$.ts", "format": "epoch_s"}},
}
POINTS = {"order book (each, captured side/level)": 20, "telemetry (each, captured keys)": 8}  # per message
SENSORS = [("t_air", "C"), ("t_dew", "C"), ("p", "hPa"), ("rh", "%"), ("wind", "m/s"), ("gust", "m/s"),
           ("rain", "mm"), ("solar", "W/m2")]


def frames(form: str, count: int) -> list[list[bytes]]:
    out = []
    for tick in ticks(count, list(INSTRUMENTS)):
        if form == "rfc3339":
            seconds = tick["timestamp"]
            whole = int(seconds)
            tick["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + \
                f".{round((seconds - whole) * 1e6):06d}Z"
        if form == "nested paths":
            tick = {"quote": {"bid": tick["bid"], "ask": tick["ask"], "size": tick["volume"]},
                    "meta": {"sym": tick["instrument"], "t": [tick["timestamp"]], "seq": tick["seq"]}}
        if form == "numbers as text":
            tick.update(bid=repr(tick["bid"]), ask=repr(tick["ask"]), volume=str(tick["volume"]))
        if form.startswith("order book"):  # Kraken depth: 10 levels a side, prices as text
            t, bid = tick["timestamp"], tick["bid"]
            tick = {"error": [], "result": {tick["instrument"]: {
                "asks": [[f"{bid + (i + 1) / 1e4:.5f}", f"{i + 0.5:.3f}", t] for i in range(10)],
                "bids": [[f"{bid - i / 1e4:.5f}", f"{i + 0.25:.3f}", t] for i in range(10)]}}}
        if form.startswith("telemetry"):
            tick = {"id": tick["seq"] % 50, "ts": tick["timestamp"],
                    "sensors": {name: {"value": tick["bid"] * (k + 1), "unit": unit}
                                for k, (name, unit) in enumerate(SENSORS)}}
        out.append([b"kraken_tick", msgpack.packb(tick)])
    return out


def spec_of(mapping: dict):
    data = {"subscriptions": [{"name": "bench", "endpoints": ["tcp://127.0.0.1:1"], "framing": "msgpack",
                               "mapping": mapping}],
            "destinations": [{"name": "d", "url": "http://127.0.0.1:1", "database": "db"}], "station": "lab"}
    return cfg.parse(data, "bench").subscriptions[0]


def python_run(spec, messages: list[list[bytes]]) -> tuple[float, bytes, int]:
    mapper, decode = Mapper(spec, "lab"), build(spec)
    mapper._clock = itertools.count(1_700_000_000 * 10**9, 1000).__next__
    out = []
    points = 0
    started = time.thread_time_ns()
    for start in range(0, len(messages), BURST):
        newest: dict = {}
        lines = []
        for message in messages[start:start + BURST]:
            topic, record = decode(message)
            if mapper.multi:
                made = mapper.keyed_lines(topic, record)
            else:
                line, series, ts = mapper.keyed_line(topic, record)
                made = [(line, series, ts, record)]
            for line, series, ts, values in made:
                lines.append(line)
                current = newest.get(series)
                if current is None or ts >= current[0]:
                    newest[series] = (ts, values)
        points += len(lines)
        out.append("\n".join(lines).encode() + b"\n")
    return (time.thread_time_ns() - started) / points / 1000, b"".join(out), points


def compiled_run(spec, messages: list[list[bytes]]) -> tuple[float, bytes, int]:
    mapper = Mapper(spec, "lab")
    mapper._clock = itertools.count(1_700_000_000 * 10**9, 1000).__next__
    accelerator, why = Accelerator.for_mapper(mapper, spec)
    if accelerator is None:
        raise SystemExit(f"not compiled: {why}")
    out, compiled, points = [], 0, 0

    def slow(handed, error):
        raise AssertionError(f"handed back: {handed!r} {error!r}")

    started = time.thread_time_ns()
    for start in range(0, len(messages), BURST):
        burst = accelerator.map(messages[start:start + BURST], slow, {})
        out.append(burst.data)
        compiled += burst.compiled
        points += burst.lines
    return (time.thread_time_ns() - started) / points / 1000, b"".join(out), compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.messages} messages per form, bursts of {BURST}, least of {args.rounds} rounds (thread CPU)")
    print("form | python us/point | compiled us/point | python / compiled | identical")
    for form, mapping in FORMS.items():
        spec, messages = spec_of(mapping), frames(form, max(1, args.messages // POINTS.get(form, 1)))
        if form == "topic regex":
            messages = [[b"kraken_tick" if i % 2 else b"kraken_spot", m[1]] for i, m in enumerate(messages)]
            spec = spec_of({**mapping, "topic": {"regex": "^(?P<venue>[a-z]+)_(?P<kind>[a-z]+)$"}})
        best_py = best_c = float("inf")
        same = True
        for _ in range(args.rounds):
            py, reference, _ = python_run(spec, messages)
            c, data, compiled = compiled_run(spec, messages)
            same = same and data == reference and compiled == len(messages)
            best_py, best_c = min(best_py, py), min(best_c, c)
        print(f"{form} | {best_py:.2f} | {best_c:.2f} | {best_py / best_c:.1f}x | {same}")


if __name__ == "__main__":
    main()
