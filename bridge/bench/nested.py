"""Bench rows for the nested forms of issue 22, end to end (run.py's `nested` phase).

    python bridge/bench/run.py --only nested [--points 300000]

Three msgpack feeds, each through a real bridge configured as a station runs it (run.Bridge:
write-ahead intake log, uniqueness, the Redis cache, /metrics; `fast_path: auto`) into the same
influxd as the rest of the bench, from a publisher that queued every message beforehand:
- an order book: each message a book snapshot of one pair with LEVELS levels per side,
  `each: '<side:asks|bids>[<level>]'`, price and volume from `[0]` and `[1]`, the pair and the
  time from the whole record (`$.pair`, `$.ts`): 2 x LEVELS points per message;
- a telemetry document of one device with SENSORS sensors under captured keys
  (`each: 'sensors.<sensor>'`, value and status from each entry, `$.device`, `$.ts`): SENSORS
  points per message;
- the lab's own feed: the demo ticks with `derived_tags` (forms.py `LAB`): one point per message.
Each row: points/s until InfluxDB acknowledged the last point, the bridge's CPU per point (the
/metrics polls taken out) over influxd's (its background subtracted, run.quiesce), and the path
the subscription ran: `bridge_fast_path_compiled` and `bridge_fast_path_messages` from /metrics,
and /healthz's reason when it is not compiled. The run fails unless every message was mapped
(none refused) and InfluxDB counts every point. Issue 22's target: <= 0.5 for each.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import run as bench
import stages
from forms import LAB
from servers import Influxd, RedisServer, free_port
from stages import cpu_seconds, thread_groups

LEVELS = 5  # per side: 10 points per book snapshot
SENSORS = ("temperature", "humidity", "pressure", "co2", "voltage", "current")
PAIRS = ("XBTUSD", "ETHUSD", "XBTEUR", "ETHEUR", "SOLUSD", "ADAUSD", "DOTUSD", "XRPUSD")
DEVICES = ("st-ams-1", "st-fra-2", "st-lon-3", "st-par-4")

BOOK = {"measurement": "book", "each": "<side:asks|bids>[<level>]", "tags": {"pair": "$.pair"},
        "fields": {"price": {"path": "[0]", "type": "float"}, "volume": {"path": "[1]", "type": "float"}},
        "time": {"path": "$.ts", "format": "epoch_s"}}
TELEMETRY = {"measurement": "telemetry", "each": "sensors.<sensor>", "tags": {"device": "$.device"},
             "fields": {"value": {"path": "value", "type": "float"},
                        "status": {"path": "status", "type": "integer"}},
             "time": {"path": "$.ts", "format": "epoch_s"}}


def book_messages(count: int, topic: bytes, seed: int = 11, later: float = 0.0) -> list[list[bytes]]:
    """`count` book snapshots, a pair each in turn, LEVELS levels a side, 1 ms apart, from an hour
    ago (+ `later` seconds)."""
    rng = random.Random(seed)
    base = time.time() - 3600 + later
    mids = {pair: 100.0 * (k + 1) for k, pair in enumerate(PAIRS)}
    out = []
    for i in range(count):
        pair = PAIRS[i % len(PAIRS)]
        mid = mids[pair] = round(mids[pair] * (1 + rng.gauss(0, 2e-5)), 2)
        asks = [[round(mid + 0.05 * (k + 1), 2), round(rng.uniform(0.001, 5), 4)] for k in range(LEVELS)]
        bids = [[round(mid - 0.05 * (k + 1), 2), round(rng.uniform(0.001, 5), 4)] for k in range(LEVELS)]
        out.append([topic, msgpack.packb({"pair": pair, "ts": round(base + i / 1000, 6), "asks": asks,
                                          "bids": bids})])
    return out


def telemetry_messages(count: int, topic: bytes, seed: int = 13, later: float = 0.0) -> list[list[bytes]]:
    """`count` documents, a device each in turn, every sensor under its own key, 1 ms apart, from
    an hour ago (+ `later` seconds)."""
    rng = random.Random(seed)
    base = time.time() - 3600 + later
    out = []
    for i in range(count):
        sensors = {name: {"value": round(rng.uniform(0, 100), 3), "status": rng.randrange(4)} for name in SENSORS}
        out.append([topic, msgpack.packb({"device": DEVICES[i % len(DEVICES)], "ts": round(base + i / 1000, 6),
                                          "sensors": sensors})])
    return out


def lab_messages(count: int, topic: bytes, later: float = 0.0) -> list[list[bytes]]:
    return stages.messages("msgpack", count, topic.decode())  # stamped now: later than any burst before


# name -> (mapping, messages(count, topic), points per message, measurement, a field to count)
FEEDS = {
    f"order book ({LEVELS} levels a side, each '<side:...>[<level>]')":
        (BOOK, book_messages, 2 * LEVELS, "book", "price"),
    f"telemetry document ({len(SENSORS)} sensors, each 'sensors.<sensor>')":
        (TELEMETRY, telemetry_messages, len(SENSORS), "telemetry", "value"),
    "lab feed (flat ticks, derived_tags)": (LAB, lab_messages, 1, "ticks", "bid"),
}


def _metric(text: str, name: str, subscription: str = "bench") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'subscription="{subscription}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def feed_end_to_end(tmp: Path, influx: Influxd, redis: RedisServer, label: str, mapping: dict,
                    make: Callable[[int], list[list[bytes]]], per_message: int, measurement: str, field: str,
                    fast_path: str = "auto", bursts: int = 2) -> dict:
    """One bridge, one subscription of `mapping`, fed `make(burst)`'s frames by a preloaded
    publisher, `bursts` times (as run.end_to_end: the last measured, each after the first into its
    database dropped and created again, the first's figures under `cold`): points/s until InfluxDB
    acknowledged every point, CPU per point of the bridge and influxd (as run.end_to_end measures
    them), and the path the subscription ran."""
    db = f"nested_{label}"
    influx.query(f'CREATE DATABASE "{db}"')
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    topic = f"{bench.TOPIC}_{label}"
    sub = {"name": "bench", "endpoints": [endpoint], "topics": [topic], "rcvhwm": 1_000_000, "framing": "msgpack",
           "mapping": mapping}
    bridge = bench.Bridge(tmp, label, influx, redis, db, [sub], fast_path)
    cold = None
    try:
        for b in range(bursts):
            if b:
                bench.fresh_database(influx, db)
            result = _feed_burst(influx, redis, bridge, label, make(b), per_message, endpoint, topic)
            stored = influx.count(db, measurement, field)
            if result["mapped"] != result["messages"] or stored != result["points"]:
                raise RuntimeError(f"{label}: {result['mapped']:.0f} of {result['messages']} messages mapped, "
                                   f"{stored} of {result['points']} points in InfluxDB")
            if b == 0 and bursts > 1:
                cold = result
    finally:
        bridge.stop()
    result["cold"] = cold
    result["bursts"] = bursts
    return result


def _feed_burst(influx: Influxd, redis: RedisServer, bridge: bench.Bridge, label: str, frames: list[list[bytes]],
                per_message: int, endpoint: str, topic: str) -> dict:
    """One burst of feed_end_to_end, measured; the counters as deltas from before it."""
    messages, points = len(frames), len(frames) * per_message
    names = ("bridge_received_messages_total", "bridge_rejected_messages_total", "bridge_fast_path_messages",
             "bridge_fast_path_handed_back", "bridge_mapped_messages_total")
    text = stages.scrape(bridge.port)
    base = {name: _metric(text, name) for name in names}
    base_written = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("bridge_written_points_total{"))
    publisher, loaded, go = stages.start_publisher(endpoint, frames, topic)
    try:
        if not loaded.wait(60):
            raise RuntimeError("publisher not ready: " + bridge.tail())
        pids = {"influxd": influx.process.pid, "redis": redis.process.pid, "bridge": bridge.process.pid}
        background = bench.quiesce(influx.process.pid)
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        threads_before = thread_groups(bridge.process.pid)
        scrapes_before = bridge.scrapes
        started = time.perf_counter()
        go.set()
        while True:
            bridge.scrapes += 1
            text = stages.scrape(bridge.port)
            received = _metric(text, "bridge_received_messages_total") - base["bridge_received_messages_total"]
            rejected = _metric(text, "bridge_rejected_messages_total") - base["bridge_rejected_messages_total"]
            written = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                          if line.startswith("bridge_written_points_total{")) - base_written
            if rejected:
                raise RuntimeError(f"{label}: {rejected:.0f} messages refused: " + bridge.tail())
            if written >= points:
                break
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"{label}: {written:.0f} of {points} points written ({received:.0f} of "
                                   f"{messages} messages received) within 300 s: " + bridge.tail())
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = {name: (cpu_seconds(pid) - before[name]) / points * 1e6 for name, pid in pids.items()}
        cpu["influxd"] = bench.net_cpu(pids["influxd"], before["influxd"], elapsed, background) / points * 1e6
        threads = {name: (value - threads_before[name]) / points * 1e6
                   for name, value in thread_groups(bridge.process.pid).items()}
        text = stages.scrape(bridge.port)
        compiled = _metric(text, "bridge_fast_path_compiled")
        in_c = _metric(text, "bridge_fast_path_messages") - base["bridge_fast_path_messages"]
        handed_back = _metric(text, "bridge_fast_path_handed_back") - base["bridge_fast_path_handed_back"]
        mapped = _metric(text, "bridge_mapped_messages_total") - base["bridge_mapped_messages_total"]
        reason = bridge.paths()["bench"]
        scrape_us = bridge.scrape_cost() * (bridge.scrapes - scrapes_before) / points * 1e6
    finally:
        publisher.terminate()
        publisher.join()
    if compiled:
        path = f"compiled (bridge_fast_path_compiled 1; {in_c:,.0f} messages in C, {handed_back:,.0f} handed back)"
    else:
        path = f"Python (bridge_fast_path_compiled 0: {reason})"
    bridge_us = cpu["bridge"] - scrape_us
    threads["other (metrics, ledger, exited threads)"] = bridge_us - sum(threads.values())
    return {"rate": points / elapsed, "messages": messages, "points": points, "bridge": bridge_us,
            "influxd": cpu["influxd"], "redis": cpu["redis"], "background": background, "compiled": bool(compiled),
            "path": path, "threads": threads, "scrape_us": scrape_us, "mapped": mapped}


def nested_phase(tmp: Path, influx: Influxd, redis: RedisServer, points: int, bursts: int = 2) -> dict[str, dict]:
    """Every feed of FEEDS end to end with about `points` points each (whole messages), `bursts`
    bursts each, the last measured (feed_end_to_end)."""
    results = {}
    for k, (name, (mapping, make, per_message, measurement, field)) in enumerate(FEEDS.items()):
        label = f"nest{k}"
        count = max(1, points // per_message)
        topic = f"{bench.TOPIC}_{label}".encode()

        def frames(burst: int, make=make, count=count, topic=topic) -> list[list[bytes]]:
            # each burst's times after the last one's (1 ms apart): the uniqueness window's common case
            return make(count, topic, later=burst * (count / 1000 + 1))

        result = feed_end_to_end(tmp, influx, redis, label, mapping, frames, per_message, measurement, field,
                                 bursts=bursts)
        results[name] = result
        bench.say(f"nested: {name}: {result['rate']:,.0f} points/s, bridge {result['bridge']:.2f} / influxd "
                  f"{result['influxd']:.2f} us/point, {result['path']}")
    return results


def nested_rows(results: dict[str, dict]) -> list[tuple[str, str, str]]:
    """The table's rows (no `|` in a cell: lab/bench.py splits the table on it)."""
    out = []
    for name, r in results.items():
        out.append((f"nested, end to end: {name}",
                    f"{r['rate']:,.0f} points/s; bridge / influxd {r['bridge']:.2f} / {r['influxd']:.2f} us per point",
                    f"{r['bridge'] / r['influxd']:.2f}, target <= 0.5; {r['path'].replace('|', '/')}"
                    + bench._cold(r)))
        split = ", ".join(f"{k.split(' (')[0]} {v:.2f}" for k, v in r["threads"].items())
        out.append((f"nested, bridge CPU per point by thread (us): {name}", split,
                    f"{r['messages']:,} messages, {r['points']:,} points"))
    return out
