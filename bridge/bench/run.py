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


def ceiling(influx: Influxd, db: str, points: int) -> tuple[float, float]:
    """Points/s, and influxd's CPU microseconds per point."""
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

    cpu_before = cpu_seconds(influx.process.pid)
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(batches[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    influxd_cpu = (cpu_seconds(influx.process.pid) - cpu_before) / points * 1e6
    assert influx.count(db, "ceiling") == points
    return points / elapsed, influxd_cpu


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
    publish(endpoint, "kraken_tick", count, rate=rate, duration=600, on_start=ready.set)


def _preloaded_publisher(endpoint: str, count: int, loaded: multiprocessing.Event,
                         go: multiprocessing.Event) -> None:
    """Publishes `count` demo ticks at libzmq's speed, so the bridge is measured, not this process.

    Every message is packed and queued in an inproc pipe before timing starts; then zmq.proxy
    (a loop in libzmq, no Python per message) forwards the pipe to the PUB socket.
    """
    import msgpack
    import zmq

    from station_bridge.demo import INSTRUMENTS, ticks, wait_for_subscriber
    context = zmq.Context()
    # PAIR both ends: the proxy also forwards the XPUB's subscription messages back into the
    # pipe, where nobody reads them (a PULL end could not take them).
    pipe_out = context.socket(zmq.PAIR)
    pipe_out.setsockopt(zmq.RCVHWM, 0)
    pipe_out.setsockopt(zmq.SNDHWM, 0)
    pipe_out.bind("inproc://preloaded")
    pipe_in = context.socket(zmq.PAIR)
    pipe_in.setsockopt(zmq.SNDHWM, 0)
    pipe_in.setsockopt(zmq.RCVHWM, 0)
    pipe_in.connect("inproc://preloaded")
    for tick in ticks(count, list(INSTRUMENTS)):
        pipe_in.send_multipart([b"kraken_tick", msgpack.packb(tick)])
    publisher = context.socket(zmq.XPUB)
    publisher.setsockopt(zmq.SNDHWM, 0)  # never drop: the subscriber's pace sets the rate
    publisher.bind(endpoint)
    if not wait_for_subscriber(publisher, b"kraken_tick", 30):
        raise RuntimeError("the bridge did not subscribe within 30 s")
    loaded.set()
    go.wait()
    zmq.proxy(pipe_out, publisher)  # returns only when the process is terminated


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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def written(port: int) -> float:
    """The bridge's count of points InfluxDB acknowledged (queryable from then on)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("bridge_written_points_total{"))


def bridge_throughput(tmp: Path, influx: Influxd, db: str, points: int) -> tuple[float, subprocess.Popen, dict]:
    """Points/s from the first message to InfluxDB's acknowledgement of the last, and the CPU
    microseconds per point each process spent meanwhile (influxd, bridge, publisher)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    process, port = start_bridge(tmp, influx, db, endpoint)
    loaded, go = multiprocessing.Event(), multiprocessing.Event()
    publisher = multiprocessing.Process(target=_preloaded_publisher, args=(endpoint, points, loaded, go))
    publisher.start()
    loaded.wait()
    pids = {"influxd": influx.process.pid, "bridge": process.pid, "publisher": publisher.pid}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    go.set()
    # Polls the bridge's counter, not InfluxDB: a count(*) every 50 ms would load influxd.
    while written(port) < points:
        time.sleep(0.02)
        if time.perf_counter() - started > 120:
            process.terminate()
            raise RuntimeError(f"bridge wrote {written(port)} of {points} points within 120 s: "
                               + (tmp / "bridge.log").read_text()[-3000:])
    elapsed = time.perf_counter() - started
    cpu = {name: (cpu_seconds(pid) - before[name]) / points * 1e6 for name, pid in pids.items()}
    publisher.terminate()
    publisher.join()
    assert influx.count(db, "ticks") == points
    return points / elapsed, process, cpu


def latency(influx: Influxd, db: str, endpoint: str, port: int, rate: float, seconds: float) -> tuple[float, float]:
    """p50/p99 publish -> queryable: from each point's scheduled send time to the first poll (every
    20 ms) at which the bridge counts it acknowledged by InfluxDB (a 204: queryable from then on).
    The bridge's counter, not a count(*) per poll: that query over a growing series would load
    influxd and inflate what it measures. A final count checks every point is queryable."""
    count = int(rate * seconds)
    ready = multiprocessing.Event()
    before_written = written(port)
    before = influx.count(db, "ticks")
    publisher = multiprocessing.Process(target=_publisher, args=(endpoint, count, rate, ready))
    publisher.start()
    ready.wait()
    first_send = time.monotonic()
    arrivals: list[tuple[float, float]] = []
    deadline = first_send + seconds + 60
    while time.monotonic() < deadline:
        seen = written(port) - before_written
        arrivals.append((time.monotonic(), seen))
        if seen >= count:
            break
        time.sleep(0.02)
    publisher.join()
    queryable = influx.count(db, "ticks") - before
    if queryable != count:
        raise RuntimeError(f"only {queryable} of {count} points became queryable")
    delays = []
    k = 0
    for i in range(count):
        sent_at = first_send + i / rate
        while arrivals[k][1] < i + 1:
            k += 1
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


def table(rows: list[tuple[str, str, str]]) -> list[str]:
    width = max(len(r[0]) for r in rows)
    out = [f"| {'measurement':<{width}} | {'result':<34} | {'ratio to (a), target':<30} |",
           f"|{'-' * (width + 2)}|{'-' * 36}|{'-' * 32}|"]
    return out + [f"| {a:<{width}} | {b:<34} | {c:<30} |" for a, b, c in rows]


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
            a, a_influxd = ceiling(influx, "ceiling", args.points)
            say(f"ceiling {a:,.0f}/s")
            c = naive(influx, "naive", args.naive_points)
            say(f"naive {c:,.0f}/s")
            b, process, cpu = bridge_throughput(tmp, influx, "bridge", args.points)
            burst_rss = peak_rss_mib(process.pid)
            process.terminate()
            process.wait(30)
            say(f"bridge {b:,.0f}/s, CPU us/point {cpu}")
            # A fresh bridge for the steady half load: its peak RSS is not the burst's.
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            process, port = start_bridge(tmp, influx, "bridge", endpoint)
            p50, p99 = latency(influx, "bridge", endpoint, port, b / 2, 10)
            steady_rss = peak_rss_mib(process.pid)
            process.terminate()
            process.wait(30)
        finally:
            influx.stop()
    budget = sum(cpu.values())
    cores = os.cpu_count() or 1
    rows = [
        ("(a) ceiling: line protocol, 5000/batch, 2 threads", f"{a:,.0f} points/s", "1.00"),
        ("(b) bridge end to end: ZMQ msgpack -> InfluxDB", f"{b:,.0f} points/s", f"{b / a:.2f}, >= 0.80"),
        ("(c) naive: influxdb-python write_points, batch 500", f"{c:,.0f} points/s", f"{c / a:.2f}"),
        (f"bridge latency publish -> queryable at {b / 2:,.0f}/s", f"p50 {p50:.3f} s, p99 {p99:.3f} s",
         "p99 <= 1.5 s"),
        (f"bridge peak RSS at {b / 2:,.0f}/s", f"{steady_rss:.0f} MiB", "<= 150 MiB"),
        (f"bridge peak RSS, {args.points:,}-message burst at (b)", f"{burst_rss:.0f} MiB",
         "libzmq's receive queue (rcvhwm)"),
        ("CPU per point in (a): influxd", f"{a_influxd:.2f} us", f"{a * a_influxd / 1e6:.2f} cores busy at (a)"),
        ("CPU per point in (b): influxd, bridge, publisher",
         f"{cpu['influxd']:.2f}, {cpu['bridge']:.2f}, {cpu['publisher']:.2f} us",
         f"{cores} cores allow {cores * 1e6 / budget / a:.2f} x (a)"),
        ("CPU per point left to bridge + publisher at 0.8 x (a)",
         f"{cores * 1e6 / (0.8 * a) - cpu['influxd']:.2f} us", f"{cores} cores minus influxd's share"),
    ]
    print(f"\nstation-bridge benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {args.points:,} points (naive: {args.naive_points:,})\n")
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()
