"""The bridge end to end: real ZMQ sockets on loopback, a real influxd, the real CLI process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import msgpack
import pytest
import yaml
import zmq
from servers import Influxd, free_port

from station_bridge.config import parse
from station_bridge.demo import publish
from station_bridge.journal import Chunk, DeadLetters, Intake, Journal
from station_bridge.metrics import Metrics
from station_bridge.sinks import InfluxSink

# The issue asks for a 30 s outage: long enough for several backoff rounds and journal segments.
OUTAGE_S = 30
BRIDGE = str(Path(sys.executable).with_name("station-bridge"))


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Bridge:
    """`station-bridge run` as a child process with its own config, journal and metrics port."""

    def __init__(self, tmp: Path, influx: Influxd, db: str, endpoint: str, **overrides) -> None:
        self.tmp = tmp
        self.http_port = free_port()
        destination = {"name": "local", "url": influx.url, "database": db, "batch_size": 500,
                       "flush_interval": 0.2, "max_backoff": 2.0, **overrides.pop("destination", {})}
        self.config = {
            "station": "test1",
            "subscriptions": [{
                "name": "kraken", "endpoints": [endpoint], "topics": ["kraken_tick"], "framing": "msgpack",
                "mapping": {"measurement": "ticks", "tags": ["instrument"],
                            "fields": {"bid": "float", "ask": "float", "volume": "integer", "seq": "integer"},
                            "time": {"field": "timestamp", "format": "epoch_s"}},
            }],
            "destinations": [destination, *overrides.pop("destinations_extra", [])],
            "journal": {"dir": str(tmp / "journal"), **overrides.pop("journal", {})},
            "dead_letter": {"dir": str(tmp / "dead")},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "shutdown_timeout": 10,
            **overrides,
        }
        self.path = tmp / "bridge.yml"
        self.path.write_text(yaml.safe_dump(self.config))
        self.process: subprocess.Popen | None = None

    def start(self) -> Bridge:
        self.log = open(self.tmp / "bridge.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen([BRIDGE, "run", "--config", str(self.path)], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        wait_for(lambda: self.healthy(), 15, "bridge /healthz")
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def journal_lines(self, destination: str = "local") -> list[str]:
        lines: list[str] = []
        for segment in sorted((self.tmp / "journal" / destination).glob("*.lp")):
            lines += segment.read_text().splitlines()
        return lines

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(30)
        self.log.close()
        return code


def metric(values: dict[str, float], name: str, **labels: str) -> float:
    text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return values.get(f"{name}{{{text}}}", 0.0)


@pytest.fixture()
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture()
def own_influxd(tmp_path: Path):
    server = Influxd(tmp_path / "influxd").start()
    server.query('CREATE DATABASE "tick"')
    yield server
    server.stop()


def test_end_to_end_every_published_point_lands(tmp_path, influxd, database, endpoint):
    bridge = Bridge(tmp_path, influxd, database, endpoint).start()
    try:
        sent = publish(endpoint, "kraken_tick", 5000, rate=0, duration=30)
        assert sent == 5000
        wait_for(lambda: influxd.count(database, "ticks") == sent, 30, "all points in InfluxDB")
        rows = influxd.query('SELECT * FROM ticks WHERE seq = 42', db=database)
        assert len(rows) == 1 and rows[0]["station"] == "test1" and rows[0]["instrument"]
        values = bridge.metrics()
        assert metric(values, "bridge_received_messages_total", subscription="kraken") == sent
        assert metric(values, "bridge_written_points_total", destination="local") == sent
    finally:
        assert bridge.stop() == 0


def test_influxdb_outage_loses_nothing(tmp_path, own_influxd, endpoint):
    bridge = Bridge(tmp_path, own_influxd, "tick", endpoint).start()
    sent: list[int] = []
    publisher = threading.Thread(target=lambda: sent.append(
        publish(endpoint, "kraken_tick", count=(OUTAGE_S + 12) * 300, rate=300, duration=OUTAGE_S + 20)))
    publisher.start()
    time.sleep(3)
    own_influxd.stop()
    time.sleep(OUTAGE_S)
    journaled = metric(bridge.metrics(), "bridge_journaled_points_total", destination="local")
    own_influxd.start()
    publisher.join()
    wait_for(lambda: own_influxd.count("tick", "ticks") == sent[0], 60, "journal replayed into InfluxDB")
    assert journaled > 0
    values = bridge.metrics()
    assert metric(values, "bridge_dropped_points_total", destination="local", reason="spool_full") == 0
    assert bridge.journal_lines() == []
    assert bridge.stop() == 0


def test_kill_9_delivers_everything_that_was_journaled(tmp_path, own_influxd, endpoint):
    own_influxd.stop()  # every batch fails and is journaled
    bridge = Bridge(tmp_path, own_influxd, "tick", endpoint).start()
    publish(endpoint, "kraken_tick", 3000, rate=0, duration=30)
    wait_for(lambda: len(bridge.journal_lines()) == 3000, 30, "3000 points journaled")
    journaled = bridge.journal_lines()
    bridge.process.kill()  # SIGKILL: no flush, no cleanup
    bridge.process.wait(10)
    own_influxd.start()
    restarted = Bridge(tmp_path, own_influxd, "tick", endpoint).start()
    wait_for(lambda: own_influxd.count("tick", "ticks") == 3000, 60, "journal delivered after restart")
    stamps = {int(line.rsplit(" ", 1)[1]) for line in journaled}
    stored = {row["time"] for row in own_influxd.query("SELECT bid FROM ticks", db="tick")}
    assert stamps == stored
    assert restarted.stop() == 0


def test_kill_9_delivers_what_was_only_in_memory(tmp_path, own_influxd, endpoint):
    """The write-ahead intake log: points received but not yet written survive SIGKILL."""
    # A long flush interval and a huge batch keep every point in memory, unwritten.
    held = {"flush_interval": 600.0, "batch_size": 100000}
    bridge = Bridge(tmp_path, own_influxd, "tick", endpoint, destination=held).start()
    publish(endpoint, "kraken_tick", 2500, rate=0, duration=30)
    wait_for(lambda: metric(bridge.metrics(), "bridge_received_messages_total", subscription="kraken") == 2500,
             20, "2500 received")
    assert own_influxd.count("tick", "ticks") == 0 and bridge.journal_lines() == []
    bridge.process.kill()  # SIGKILL: no flush, no cleanup
    bridge.process.wait(10)
    restarted = Bridge(tmp_path, own_influxd, "tick", endpoint).start()
    wait_for(lambda: own_influxd.count("tick", "ticks") == 2500, 60, "the logged points delivered after restart")
    seqs = {row["seq"] for row in own_influxd.query("SELECT seq FROM ticks", db="tick")}
    assert seqs == set(range(2500))
    wait_for(lambda: not list((tmp_path / "journal" / "local").iterdir()), 10, "journal and intake log emptied")
    assert restarted.stop() == 0


def test_without_write_ahead_kill_9_loses_what_was_in_memory(tmp_path, own_influxd, endpoint):
    """The control for the test above: it fails for the reason the log exists."""
    held = {"flush_interval": 600.0, "batch_size": 100000}
    bridge = Bridge(tmp_path, own_influxd, "tick", endpoint, destination=held,
                    journal={"write_ahead": False}).start()
    publish(endpoint, "kraken_tick", 500, rate=0, duration=30)
    wait_for(lambda: metric(bridge.metrics(), "bridge_received_messages_total", subscription="kraken") == 500,
             20, "500 received")
    bridge.process.kill()
    bridge.process.wait(10)
    restarted = Bridge(tmp_path, own_influxd, "tick", endpoint).start()
    # The restarted bridge works (it delivers what it receives now), yet nothing from before.
    publish(endpoint, "kraken_tick", 100, rate=0, duration=30, start_seq=10_000)
    wait_for(lambda: own_influxd.count("tick", "ticks") == 100, 20, "the new points")
    seqs = {row["seq"] for row in own_influxd.query("SELECT seq FROM ticks", db="tick")}
    assert seqs == set(range(10_000, 10_100))
    assert restarted.stop() == 0


def test_sigterm_flushes_what_is_in_memory(tmp_path, influxd, database, endpoint):
    # A long flush interval keeps the points in memory until SIGTERM.
    bridge = Bridge(tmp_path, influxd, database, endpoint, destination={"flush_interval": 60.0,
                                                                        "batch_size": 100000}).start()
    publish(endpoint, "kraken_tick", 2000, rate=0, duration=30)
    wait_for(lambda: metric(bridge.metrics(), "bridge_received_messages_total", subscription="kraken") == 2000,
             20, "2000 received")
    assert influxd.count(database, "ticks") == 0
    assert bridge.stop(signal.SIGTERM) == 0
    assert influxd.count(database, "ticks") == 2000


def test_spool_cap_drops_are_counted_exactly(tmp_path, own_influxd, endpoint):
    own_influxd.stop()
    bridge = Bridge(tmp_path, own_influxd, "tick", endpoint, journal={"max_bytes": 60_000}).start()
    publish(endpoint, "kraken_tick", 3000, rate=0, duration=30)
    values = wait_for(lambda: (lambda v: v if metric(v, "bridge_journaled_points_total", destination="local")
                               + metric(v, "bridge_dropped_points_total", destination="local", reason="spool_full")
                               == 3000 else None)(bridge.metrics()), 30, "every point journaled or dropped")
    dropped = metric(values, "bridge_dropped_points_total", destination="local", reason="spool_full")
    assert 0 < dropped < 3000
    assert len(bridge.journal_lines()) == 3000 - dropped
    assert bridge.healthy()  # still up, and saying so
    assert "journal full" in (tmp_path / "bridge.log").read_text()
    bridge.stop()


def test_hostile_stream_is_counted_and_valid_points_land_intact(tmp_path, influxd, database, endpoint):
    bridge = Bridge(tmp_path, influxd, database, endpoint).start()
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    pub.bind(endpoint)
    time.sleep(0.5)
    good = {"timestamp": time.time(), "instrument": "EURUSD", "bid": 1.1, "ask": 1.2, "volume": 5, "seq": 1}
    hostile = [
        ([b"kraken_tick", b"\xc1\xc1"], "undecodable"),
        ([b"kraken_tick", msgpack.packb([1, 2, 3])], "not_a_map"),
        ([b"kraken_tick", msgpack.packb({**good, "bid": float("nan")})], "non_finite"),
        ([b"kraken_tick", msgpack.packb({**good, "bid": "drop table"})], "wrong_type"),
        ([b"kraken_tick", msgpack.packb({**good, "instrument": "a,b=c d\nx=1"})], "unrepresentable"),
        ([b"kraken_tick", b"\x00" * 2_000_000], "oversized"),
        ([b"kraken_tick"], "bad_framing"),
        ([b"kraken_tick", msgpack.packb({"timestamp": "never", "bid": 1.0})], "bad_timestamp"),
    ]
    for i in range(50):
        for frames, _ in hostile:
            pub.send_multipart(frames)
        pub.send_multipart([b"kraken_tick", msgpack.packb({**good, "seq": i, "timestamp": good["timestamp"] + i})])
    pub.close()
    wait_for(lambda: influxd.count(database, "ticks") == 50, 20, "the 50 valid points")
    values = bridge.metrics()
    for _, reason in hostile:
        assert metric(values, "bridge_rejected_messages_total", subscription="kraken", reason=reason) == 50, reason
    assert metric(values, "bridge_received_messages_total", subscription="kraken") == 50 * (len(hostile) + 1)
    rows = influxd.query("SELECT * FROM ticks", db=database)
    assert {r["instrument"] for r in rows} == {"EURUSD"} and {r["bid"] for r in rows} == {1.1}
    dead = [json.loads(line) for line in (tmp_path / "dead" / "input.jsonl").read_text().splitlines()]
    assert len(dead) == 50 * len(hostile)
    assert bridge.stop() == 0


def test_poisoned_line_is_dead_lettered_and_the_rest_lands(tmp_path, influxd, database):
    spec = parse({"subscriptions": [], "destinations": [{"name": "d", "url": influxd.url, "database": database}]})
    dest = spec.destinations[0]
    base = (time.time_ns() // 1_000_000_000 - 10) * 1_000_000_000
    lines = [f"ticks,instrument=EURUSD bid={1 + i / 1000} {base + i}" for i in range(100)]
    lines[37] = f'ticks,instrument=EURUSD bid="poison" {base + 37}'  # type conflict with the float field
    sink = InfluxSink(dest, Journal(tmp_path / "j", 10**7), DeadLetters(tmp_path / "dead.jsonl"), Metrics(),
                      Intake(tmp_path / "j"))
    sink.start()
    sink.submit(Chunk.of(lines))
    sink.stop(10)
    assert influxd.count(database, "ticks") == 99
    assert list((tmp_path / "j").iterdir()) == []  # written or dead-lettered: nothing left to recover
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["line"] for d in dead] == [lines[37]]
    assert "field type conflict" in dead[0]["error"]
    assert sink.metrics.get("bridge_dropped_points_total", destination="d", reason="rejected") == 1


def test_redis_latest_value_cache(tmp_path, influxd, database, endpoint, redis_server):
    import redis
    bridge = Bridge(tmp_path, influxd, database, endpoint,
                    cache={"url": f"redis://127.0.0.1:{redis_server.port}/0", "ttl": 600,
                           "password_env": "TEST_REDIS_PW"})
    os.environ["TEST_REDIS_PW"] = redis_server.password
    bridge.start()
    publish(endpoint, "kraken_tick", 800, rate=0, duration=30, instruments=["EURUSD", "GBPUSD"])
    wait_for(lambda: influxd.count(database, "ticks") == 800, 20, "800 points")
    client = redis.Redis(port=redis_server.port, password=redis_server.password, decode_responses=True)
    latest = client.hgetall("latest:ticks,instrument=EURUSD,station=test1")
    newest = influxd.query("SELECT last(bid) AS bid, last(seq) AS seq FROM ticks WHERE instrument = 'EURUSD'",
                           db=database)[0]
    assert float(latest["bid"]) == newest["bid"] and int(latest["seq"]) == newest["seq"]
    assert 0 < client.ttl("latest:ticks,instrument=EURUSD,station=test1") <= 600
    assert bridge.stop() == 0


def test_check_config_refuses_a_bad_file(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("subscriptions: []\ndestinations: [{name: d, url: ftp://x, database: db}]\n")
    proc = subprocess.run([BRIDGE, "check-config", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert f"{path}: destinations[0].url: 'ftp://x' must start with http://" in proc.stderr


def test_self_metrics_are_written_as_points(tmp_path, influxd, database, endpoint):
    bridge = Bridge(tmp_path, influxd, database, endpoint,
                    self_metrics={"interval": "300ms", "instance": "kraken"}).start()
    publish(endpoint, "kraken_tick", 300, rate=0, duration=30)
    wait_for(lambda: influxd.count(database, "ticks") == 300, 20, "300 points")

    def newest() -> dict:
        rows = influxd.query("SELECT * FROM station_bridge ORDER BY time DESC LIMIT 1", db=database)
        return rows[0] if rows else {}

    wait_for(lambda: newest().get("written", 0) >= 300, 10, "self-metrics point")
    row = newest()
    assert (row["instance"], row["destination"], row["station"]) == ("kraken", "local", "test1")
    assert row["received"] == 300 and row["rejected"] == 0 and row["dropped"] == 0 and row["journal_bytes"] == 0
    assert bridge.stop() == 0
