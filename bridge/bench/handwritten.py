"""The minimal hand-written alternative of issue 22, and the bench rows that compare the bridge to it
(run.py's `handwritten` phase).

    python bridge/bench/run.py --only handwritten [--points 300000]

What a user might write instead of the bridge (`alternative()` below, run as its own process):
pyzmq SUB, `msgpack.unpackb` per message, the flat tick as a line of line protocol with its tag
escaped, the time converted to nanoseconds, urllib3 POSTing 5,000 lines per request (keep-alive),
no journal, no uniqueness, no cache, no metrics. It receives the same queued messages (the bench's
msgpack ticks, from a preloaded publisher) into the same influxd, and writes the same points as
the bridge's flat msgpack subscription (measurement, tags, fields, types; each pair checks that
both databases hold the same count and sums per series).

The comparison alternates the bridge as a station runs it (run.end_to_end, msgpack, `fast_path:
auto`: the compiled path) and the alternative, `repeats` times back to back in this run: each
one's points/s until InfluxDB acknowledged the last point, and CPU per point (the process's,
from /proc; the bridge's /metrics polls taken out; the alternative is not polled). Ratios are
per pair, with their median. Issue 22's targets: bridge / alternative CPU per point <= 0.25,
throughput >= 1.5.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import run as bench
import stages
from servers import Influxd, RedisServer, free_port
from stages import cpu_seconds

HERE = Path(__file__).resolve().parent


def alternative(endpoint: str, topic: str, url: str, db: str, count: int) -> None:
    """The hand-written program: receives `count` msgpack ticks, POSTs them 5,000 lines at a time.
    Prints `ready` once subscribed and `done` once InfluxDB acknowledged the last line."""
    import msgpack
    import urllib3
    import zmq

    def tag(value: str) -> str:
        return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")

    http = urllib3.PoolManager(maxsize=1)
    write = f"{url}/write?db={db}&precision=ns"

    def post(lines: list[str]) -> None:
        response = http.request("POST", write, body=("\n".join(lines) + "\n").encode(),
                                headers={"Content-Type": "text/plain"})
        if response.status != 204:
            raise RuntimeError(f"InfluxDB answered {response.status}: {response.data[:300]!r}")

    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, 0)
    socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
    socket.connect(endpoint)
    print("ready", flush=True)
    lines: list[str] = []
    for _ in range(count):
        _, payload = socket.recv_multipart()
        t = msgpack.unpackb(payload)
        lines.append(f"ticks,instrument={tag(t['instrument'])},station=bench ask={float(t['ask'])!r},"
                     f"bid={float(t['bid'])!r},seq={int(t['seq'])}i,volume={int(t['volume'])}i "
                     f"{round(t['timestamp'] * 1e9)}")
        if len(lines) == 5000:
            post(lines)
            lines = []
    if lines:
        post(lines)
    print("done", flush=True)
    socket.close(linger=0)
    context.term()


def alternative_end_to_end(influx: Influxd, label: str, points: int) -> dict:
    """The alternative as its own process, fed the bench's msgpack ticks by a preloaded publisher:
    points/s until its last POST was answered 204, its CPU per point and influxd's (net of its
    background, as run.end_to_end)."""
    db = f"alt_{label}"
    influx.query(f'CREATE DATABASE "{db}"')
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    topic = f"{bench.TOPIC}_{label}"
    frames = stages.messages("msgpack", points, topic)
    program = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import handwritten; "
               f"handwritten.alternative({endpoint!r}, {topic!r}, {influx.url!r}, {db!r}, {points})")
    child = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    publisher, loaded, go = stages.start_publisher(endpoint, frames, topic)
    try:
        if child.stdout is None or child.stdout.readline().strip() != "ready" or not loaded.wait(60):
            raise RuntimeError("the alternative or its publisher did not start")
        background = bench.quiesce(influx.process.pid)
        pids = {"alternative": child.pid, "influxd": influx.process.pid, "publisher": publisher.pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        go.set()
        if child.stdout.readline().strip() != "done":
            raise RuntimeError(f"the alternative failed (exit status {child.wait(30)})")
        elapsed = time.perf_counter() - started
        cpu = {name: (cpu_seconds(pid) - before[name]) / points * 1e6 for name, pid in pids.items()}
        cpu["influxd"] = bench.net_cpu(pids["influxd"], before["influxd"], elapsed, background) / points * 1e6
        if child.wait(30) != 0:
            raise RuntimeError(f"the alternative exited {child.returncode}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        publisher.terminate()
        publisher.join()
    stored = influx.count(db, "ticks")
    if stored != points:
        raise RuntimeError(f"the alternative: {stored} of {points} points in InfluxDB")
    return {"rate": points / elapsed, "cpu": cpu["alternative"], "influxd": cpu["influxd"],
            "publisher": cpu["publisher"], "background": background}


def handwritten_phase(tmp: Path, influx: Influxd, redis: RedisServer, points: int, repeats: int) -> dict:
    """`repeats` pairs, back to back: the bridge (msgpack, fast_path auto) then the alternative."""
    pairs = []
    for r in range(repeats):
        station = bench.end_to_end(tmp, influx, redis, f"hwbridge{r}", "msgpack", points)
        alt = alternative_end_to_end(influx, f"hw{r}", points)
        same = 'SELECT count("ask"), sum("volume"), sum("seq") FROM "ticks" GROUP BY "instrument", "station"'
        if influx.query(same, db=f"e2e_hwbridge{r}_0") != influx.query(same, db=f"alt_hw{r}"):
            raise RuntimeError("the alternative did not store the points the bridge stored")
        pairs.append((station, alt))
        bench.say(f"hand-written alternative, pair {r + 1}: bridge ({station['path']}) {station['rate']:,.0f}/s, "
                  f"{station['bridge']:.2f} us/point; alternative {alt['rate']:,.0f}/s, {alt['cpu']:.2f} us/point; "
                  f"influxd {station['influxd']:.2f} / {alt['influxd']:.2f}")
    return {"pairs": pairs}


def handwritten_rows(result: dict) -> list[tuple[str, str, str]]:
    pairs = result["pairs"]
    cpu = [s["bridge"] / a["cpu"] for s, a in pairs]
    with_redis = [(s["bridge"] + s["redis"]) / a["cpu"] for s, a in pairs]
    rate = [s["rate"] / a["rate"] for s, a in pairs]
    runs = len(pairs)
    middle = sorted(range(runs), key=lambda i: cpu[i])[(runs - 1) // 2]  # the pair of the median CPU ratio
    station, alt = pairs[middle]

    def each(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    return [
        ("hand-written alternative (pyzmq, msgpack, urllib3, 5,000 per POST), msgpack ticks",
         f"{alt['rate']:,.0f} points/s; {alt['cpu']:.2f} us per point (influxd {alt['influxd']:.2f})",
         f"pair {middle + 1} of {runs} (its CPU ratio the median, or the lower of two)"),
        (f"the bridge in the same pair, msgpack, {station['path']}",
         f"{station['rate']:,.0f} points/s; {station['bridge']:.2f} us per point (influxd {station['influxd']:.2f})",
         "station configuration: intake log, uniqueness, Redis cache, /metrics"),
        ("bridge / alternative: CPU per point", f"{statistics.median(cpu):.2f} (pairs: {each(cpu)})",
         f"target <= 0.25; with redis-server's CPU on the bridge's side {statistics.median(with_redis):.2f}"),
        ("bridge / alternative: throughput", f"{statistics.median(rate):.2f} (pairs: {each(rate)})", "target >= 1.5"),
    ]
