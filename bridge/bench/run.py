"""Bridge benchmark: one table of ratios, all measured in one run on this machine.

    python bridge/bench/run.py [--points 300000]

(a) ceiling: pre-serialised line protocol POSTed in 5000-line batches by 2 threads;
(b) the bridge end to end: ZMQ (msgpack ticks from a separate publisher process) ->
    `station-bridge run` -> InfluxDB, timed until the points are counted in the database;
(c) the naive pattern: influxdb-python `write_points` with JSON point dicts, batch 500;
then publish -> queryable latency at half of (b)'s rate and the bridge's peak RSS.
Each figure is relative to (a) from the same run: machines here are noisy.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from servers import Influxd, free_port  # noqa: E402


def ceiling(influx: Influxd, db: str, points: int) -> float:
    base = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000
    batches = []
    for start in range(0, points, 5000):
        batches.append("\n".join(
            f"ceiling,instrument=I{i % 8},station=b bid={1 + i / 1e6},ask={1.0001 + i / 1e6},volume={i}i {base + i}"
            for i in range(start, min(points, start + 5000))).encode())

    def worker(mine: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", influx.port, timeout=60)
        for body in mine:
            conn.request("POST", f"/write?db={db}&precision=ns", body=body)
            response = conn.getresponse()
            response.read()
            assert response.status == 204, response.status

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(batches[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert influx.count(db, "ceiling") == points
    return points / elapsed


def naive(influx: Influxd, db: str, points: int) -> float:
    from influxdb import InfluxDBClient
    client = InfluxDBClient("127.0.0.1", influx.port, database=db)
    base = time.time_ns() - 3600 * 10**9
    started = time.perf_counter()
    batch = []
    for i in range(points):
        batch.append({"measurement": "naive", "tags": {"instrument": f"I{i % 8}", "station": "b"},
                      "time": base + i, "fields": {"bid": 1 + i / 1e6, "ask": 1.0001 + i / 1e6, "volume": i}})
        if len(batch) == 500:
            client.write_points(batch, time_precision="n")
            batch = []
    if batch:
        client.write_points(batch, time_precision="n")
    elapsed = time.perf_counter() - started
    assert influx.count(db, "naive") == points
    return points / elapsed


def _publisher(endpoint: str, count: int, rate: float, ready: multiprocessing.Event) -> None:
    from station_bridge.demo import publish
    publish(endpoint, "kraken_tick", count, rate=rate, duration=600, warmup=1.0, prepack=not rate,
            on_start=ready.set)


def start_bridge(tmp: Path, influx: Influxd, db: str, endpoint: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = {
        "subscriptions": [{"name": "bench", "endpoints": [endpoint], "topics": ["kraken_tick"], "rcvhwm": 1_000_000,
                           "mapping": {"measurement": "ticks", "tags": ["instrument"],
                                       "fields": {"bid": "float", "ask": "float", "volume": "integer",
                                                  "seq": "integer"},
                                       "time": {"field": "timestamp", "format": "epoch_s"}}}],
        "destinations": [{"name": "local", "url": influx.url, "database": db, "batch_size": 5000,
                          "flush_interval": 0.2}],
        "journal": {"dir": str(tmp / "journal")}, "dead_letter": {"dir": str(tmp / "dead")},
        "http": {"listen": f"127.0.0.1:{port}"}, "log": {"level": "warning"},
    }
    (tmp / "bridge.yml").write_text(yaml.safe_dump(config))
    bridge = str(Path(sys.executable).with_name("station-bridge"))
    log = open(tmp / "bridge.log", "wb")  # noqa: SIM115 - lives as long as the bridge
    process = subprocess.Popen([bridge, "run", "--config", str(tmp / "bridge.yml")], stdout=log,
                               stderr=subprocess.STDOUT)
    time.sleep(1.0)
    return process, port


def bridge_throughput(tmp: Path, influx: Influxd, db: str, points: int) -> tuple[float, subprocess.Popen]:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    process, port = start_bridge(tmp, influx, db, endpoint)
    ready = multiprocessing.Event()
    publisher = multiprocessing.Process(target=_publisher, args=(endpoint, points, 0, ready))
    publisher.start()
    ready.wait()  # set just before the first message is sent
    started = time.perf_counter()
    while (seen := influx.count(db, "ticks")) < points:
        time.sleep(0.05)
        if time.perf_counter() - started > 120:
            import urllib.request
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            process.terminate()
            raise RuntimeError(f"bridge delivered {seen} of {points} points within 120 s: "
                               + (tmp / "bridge.log").read_text()[-3000:] + metrics)
    elapsed = time.perf_counter() - started
    publisher.join()
    return points / elapsed, process


def latency(influx: Influxd, db: str, endpoint: str, rate: float, seconds: float) -> tuple[float, float]:
    """p50/p99 publish -> queryable, polling the database every 50 ms (resolution ~50 ms)."""
    count = int(rate * seconds)
    ready = multiprocessing.Event()
    before = influx.count(db, "ticks")
    publisher = multiprocessing.Process(target=_publisher, args=(endpoint, count, rate, ready))
    publisher.start()
    ready.wait()
    first_send = time.monotonic()
    arrivals: list[tuple[float, int]] = []
    deadline = first_send + seconds + 60
    while time.monotonic() < deadline:
        seen = influx.count(db, "ticks") - before
        arrivals.append((time.monotonic(), seen))
        if seen >= count:
            break
        time.sleep(0.05)
    publisher.join()
    delays = []
    k = 0
    for i in range(count):
        sent_at = first_send + i / rate
        while k < len(arrivals) and arrivals[k][1] < i + 1:
            k += 1
        if k == len(arrivals):
            break
        delays.append(max(0.0, arrivals[k][0] - sent_at))
    delays.sort()
    return delays[len(delays) // 2], delays[int(len(delays) * 0.99) - 1]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=300_000)
    parser.add_argument("--naive-points", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        influx = Influxd(tmp / "influxd").start()
        try:
            for db in ("ceiling", "bridge", "naive"):
                influx.query(f'CREATE DATABASE "{db}"')
            a = ceiling(influx, "ceiling", args.points)
            say(f"ceiling {a:,.0f}/s")
            c = naive(influx, "naive", args.naive_points)
            say(f"naive {c:,.0f}/s")
            b, process = bridge_throughput(tmp, influx, "bridge", args.points)
            say(f"bridge {b:,.0f}/s")
            config = yaml.safe_load((tmp / "bridge.yml").read_text())
            p50, p99 = latency(influx, "bridge", config["subscriptions"][0]["endpoints"][0], b / 2, 10)
            rss = peak_rss_mib(process.pid)
            process.terminate()
            process.wait(30)
        finally:
            influx.stop()
    rows = [
        ("(a) ceiling: line protocol, 5000/batch, 2 threads", f"{a:,.0f} points/s", "1.00"),
        ("(b) bridge end to end: ZMQ msgpack -> InfluxDB", f"{b:,.0f} points/s", f"{b / a:.2f} (target >= 0.80)"),
        ("(c) naive: influxdb-python write_points, batch 500", f"{c:,.0f} points/s", f"{c / a:.2f}"),
        (f"bridge latency publish -> queryable at {b / 2:,.0f}/s", f"p50 {p50:.3f} s, p99 {p99:.3f} s",
         "target p99 <= 1.5 s"),
        ("bridge peak RSS", f"{rss:.0f} MiB", "target <= 150 MiB"),
    ]
    print(f"\nstation-bridge benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.points:,} points (naive: {args.naive_points:,})\n")
    print(f"| {'measurement':<52} | {'result':<28} | {'ratio to (a)':<22} |")
    print(f"|{'-' * 54}|{'-' * 30}|{'-' * 24}|")
    for name, value, ratio in rows:
        print(f"| {name:<52} | {value:<28} | {ratio:<22} |")


if __name__ == "__main__":
    main()
