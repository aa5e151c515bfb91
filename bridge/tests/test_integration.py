"""The bridge end to end: real ZMQ sockets on loopback, a real influxd, the real CLI process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import pytest
import yaml
import zmq
from harness import BRIDGE, TICKS_MAPPING, BridgeProcess, ledger_problems, publisher, quiet_ledger, wait_for

from station_bridge.config import parse
from station_bridge.demo import publish, wait_for_subscriber
from station_bridge.journal import Chunk, DeadLetters, Intake, Journal
from station_bridge.ledger import read_latest
from station_bridge.metrics import Metrics, total, value
from station_bridge.sinks import InfluxSink

# Long enough for several backoff rounds and journal segments.
OUTAGE_S = 12


def test_end_to_end_every_published_point_lands_and_the_ledger_closes(tmp_path, influxd, database, endpoint):
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint).start()
    try:
        sent = publish(endpoint, "kraken_tick", 5000, rate=0, duration=30)
        assert sent == 5000
        wait_for(lambda: influxd.count(database, "ticks") == sent, 30, "all points in InfluxDB")
        rows = influxd.query('SELECT * FROM ticks WHERE seq = 42', db=database)
        assert len(rows) == 1 and rows[0]["station"] == "test1" and rows[0]["instrument"]
        samples = quiet_ledger(bridge)
        assert value(samples, "bridge_received_messages_total", subscription="kraken") == sent
        assert value(samples, "bridge_written_points_total", destination="local") == sent
        assert value(samples, "bridge_pending_points", destination="local") == 0
        assert bridge.health()[0] == 200
    finally:
        assert bridge.stop() == 0


def test_influxdb_outage_loses_nothing(tmp_path, own_influxd, endpoint):
    bridge = BridgeProcess(tmp_path, own_influxd, "tick", endpoint).start()
    sent: list[int] = []
    publisher = threading.Thread(target=lambda: sent.append(
        publish(endpoint, "kraken_tick", count=(OUTAGE_S + 6) * 300, rate=300, duration=OUTAGE_S + 20)))
    publisher.start()
    time.sleep(2)
    own_influxd.stop()
    time.sleep(OUTAGE_S)
    journaled = bridge.value("bridge_journaled_points_total", destination="local")
    own_influxd.start()
    publisher.join()
    wait_for(lambda: own_influxd.count("tick", "ticks") == sent[0], 60, "journal replayed into InfluxDB")
    assert journaled > 0
    samples = quiet_ledger(bridge)
    assert total(samples, "bridge_dropped_points_total", destination="local") == 0
    assert value(samples, "bridge_written_points_total", destination="local") == sent[0]
    assert bridge.journal_lines() == []
    assert bridge.stop() == 0


def test_kill_9_delivers_everything_that_was_journaled(tmp_path, own_influxd, endpoint):
    own_influxd.stop()  # every batch fails and is journaled
    bridge = BridgeProcess(tmp_path, own_influxd, "tick", endpoint).start()
    publish(endpoint, "kraken_tick", 3000, rate=0, duration=30)
    wait_for(lambda: len(bridge.journal_lines()) == 3000, 30, "3000 points journaled")
    journaled = bridge.journal_lines()
    bridge.kill()  # SIGKILL: no flush, no cleanup
    own_influxd.start()
    restarted = BridgeProcess(tmp_path, own_influxd, "tick", endpoint).start()
    wait_for(lambda: own_influxd.count("tick", "ticks") == 3000, 60, "journal delivered after restart")
    stamps = {int(line.rsplit(b" ", 1)[1]) for line in journaled}
    stored = {row["time"] for row in own_influxd.query("SELECT bid FROM ticks", db="tick")}
    assert stamps == stored
    quiet_ledger(restarted)  # across the kill: the ledger closes (re-delivered points counted as recovered)
    assert restarted.stop() == 0


def test_kill_9_delivers_what_was_only_in_memory(tmp_path, own_influxd, endpoint):
    """The write-ahead intake log: points received but not yet written survive SIGKILL."""
    # A long flush interval and a huge batch keep every point in memory, unwritten.
    held = {"flush_interval": "10m", "batch_size": 100000, "flush_points": 100000}
    bridge = BridgeProcess(tmp_path, own_influxd, "tick", endpoint, destination=held).start()
    publish(endpoint, "kraken_tick", 2500, rate=0, duration=30)
    wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == 2500,
             20, "2500 received")
    assert own_influxd.count("tick", "ticks") == 0 and bridge.journal_lines() == []
    bridge.kill()
    restarted = BridgeProcess(tmp_path, own_influxd, "tick", endpoint).start()
    wait_for(lambda: own_influxd.count("tick", "ticks") == 2500, 60, "the logged points delivered after restart")
    seqs = {row["seq"] for row in own_influxd.query("SELECT seq FROM ticks", db="tick")}
    assert seqs == set(range(2500))
    wait_for(lambda: not list((tmp_path / "journal" / "local").glob("*.[lw]*")), 10, "journal and intake log emptied")
    samples = quiet_ledger(restarted)
    assert value(samples, "bridge_recovered_points_total", destination="local") == 2500
    assert value(samples, "bridge_written_points_total", destination="local") == 2500
    assert restarted.stop() == 0


def test_without_write_ahead_kill_9_loses_what_was_in_memory_and_counts_it(tmp_path, own_influxd, endpoint):
    """The control for the test above: it fails for the reason the log exists, and the ledger
    says so (lost_in_crash) instead of pretending."""
    held = {"flush_interval": "10m", "batch_size": 100000, "flush_points": 100000}
    bridge = BridgeProcess(tmp_path, own_influxd, "tick", endpoint, destination=held,
                           journal={"write_ahead": False, "ledger_interval": "100ms"}).start()
    publish(endpoint, "kraken_tick", 500, rate=0, duration=30)
    wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == 500,
             20, "500 received")
    time.sleep(0.5)  # the ledger has recorded the 500 accepted points
    bridge.kill()
    restarted = BridgeProcess(tmp_path, own_influxd, "tick", endpoint).start()
    publish(endpoint, "kraken_tick", 100, rate=0, duration=30, start_seq=10_000)
    wait_for(lambda: own_influxd.count("tick", "ticks") == 100, 20, "the new points")
    seqs = {row["seq"] for row in own_influxd.query("SELECT seq FROM ticks", db="tick")}
    assert seqs == set(range(10_000, 10_100))
    samples = quiet_ledger(restarted)
    assert value(samples, "bridge_dropped_points_total", destination="local", reason="lost_in_crash") == 500
    assert restarted.stop() == 0


def test_sigterm_flushes_what_is_in_memory(tmp_path, influxd, database, endpoint):
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           destination={"flush_interval": "60s", "batch_size": 100000,
                                        "flush_points": 100000}).start()
    publish(endpoint, "kraken_tick", 2000, rate=0, duration=30)
    wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == 2000,
             20, "2000 received")
    assert influxd.count(database, "ticks") == 0
    assert bridge.stop(signal.SIGTERM) == 0
    assert influxd.count(database, "ticks") == 2000
    ledger = read_latest(tmp_path / "journal" / "ledger.json")
    assert ledger["clean"] is True


def test_spool_cap_drops_are_counted_exactly(tmp_path, own_influxd, endpoint):
    own_influxd.stop()
    bridge = BridgeProcess(tmp_path, own_influxd, "tick", endpoint, journal={"max_bytes": 60_000}).start()
    publish(endpoint, "kraken_tick", 3000, rate=0, duration=30)
    wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == 3000, 20, "3000")
    # InfluxDB is down: wait until nothing is left in memory (a batch waiting out its backoff is
    # journaled or dropped at its next attempt), so the journal holds every pending point.
    samples = wait_for(lambda: (lambda s: s if not ledger_problems(s, ["local"], ["kraken"])
                                and value(s, "bridge_pending_points", destination="local")
                                == value(s, "bridge_journal_points", destination="local") else None)(bridge.samples()),
                       30, "every pending point journaled")
    dropped = value(samples, "bridge_dropped_points_total", destination="local", reason="spool_full")
    assert 0 < dropped < 3000
    assert len(bridge.journal_lines()) == 3000 - dropped == value(samples, "bridge_pending_points", destination="local")
    assert bridge.alive
    assert any(r.get("reason") == "spool_full" for r in bridge.log_records())
    assert bridge.stop() == 0
    # The drop counters live in the ledger: a restart keeps them (they vanished before).
    restarted = BridgeProcess(tmp_path, own_influxd, "tick", endpoint, journal={"max_bytes": 60_000}).start()
    again = quiet_ledger(restarted, delivered=False)  # still down: the journal holds them
    assert value(again, "bridge_dropped_points_total", destination="local", reason="spool_full") == dropped
    assert value(again, "bridge_received_messages_total", subscription="kraken") == 3000
    assert restarted.stop() == 0


def test_hostile_stream_is_counted_and_valid_points_land_intact(tmp_path, influxd, database, endpoint):
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint).start()
    pub = publisher(zmq.Context.instance(), endpoint)
    assert wait_for_subscriber(pub, b"kraken_tick", 15)
    good = {"timestamp": time.time(), "instrument": "EURUSD", "bid": 1.1, "ask": 1.2, "volume": 5, "seq": 1}
    hostile = [
        ([b"kraken_tick", b"\xc1\xc1"], "undecodable"),
        ([b"kraken_tick", msgpack.packb([1, 2, 3])], "not_a_map"),
        ([b"kraken_tick", msgpack.packb({**good, "bid": float("nan")})], "non_finite"),
        ([b"kraken_tick", msgpack.packb({**good, "bid": "drop table"})], "wrong_type"),
        ([b"kraken_tick", msgpack.packb({**good, "instrument": "a,b=c d\nx=1"})], "unrepresentable"),
        ([b"kraken_tick", msgpack.packb({**good, "bid": {"a": {"b": 1}}})], "nested_value"),
        ([b"kraken_tick", msgpack.packb({**good, "volume": 2**64 - 1})], "integer_overflow"),
        ([b"kraken_tick", b"\x91" * 2000 + b"\x00"], "too_deep"),
        ([b"kraken_tick", b"\x00" * 2_000_000], "oversized"),
        ([b"kraken_tick"], "bad_framing"),
        ([b"kraken_tick", msgpack.packb({"timestamp": "never", "bid": 1.0, "instrument": "X"})], "bad_timestamp"),
        ([b"kraken_tick", msgpack.packb({**good, "instrument": None})], "missing_field"),  # would merge series
        ([b"kraken_tick", msgpack.packb({**good, "bid": "1_000.5"})], "wrong_type"),  # not JSON's number grammar
        ([b"kraken_tick", msgpack.packb({**good, "timestamp": good["timestamp"] + 7 * 86400})], "bad_timestamp"),
    ]
    for i in range(50):
        for frames, _ in hostile:
            pub.send_multipart(frames)
        pub.send_multipart([b"kraken_tick", msgpack.packb({**good, "seq": i, "timestamp": good["timestamp"] + i})])
    for i in range(5):  # no time field: the receive time, counted as a fallback
        pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": "EURUSD", "bid": 1.1, "seq": 100 + i})])
    pub.close()
    wait_for(lambda: influxd.count(database, "ticks") == 55, 20, "the 55 valid points")
    samples = quiet_ledger(bridge)
    for _, reason in hostile:
        expected = 50 * sum(1 for _, r in hostile if r == reason)
        found = value(samples, "bridge_rejected_messages_total", subscription="kraken", reason=reason)
        assert found == expected, reason
    assert value(samples, "bridge_received_messages_total", subscription="kraken") == 50 * (len(hostile) + 1) + 5
    assert value(samples, "bridge_timestamp_fallbacks_total", subscription="kraken") == 5
    rows = influxd.query("SELECT * FROM ticks", db=database)
    assert {r["instrument"] for r in rows} == {"EURUSD"} and {r["bid"] for r in rows} == {1.1}
    # Every refused message is dead-lettered whole (2 MB each for the oversized ones): what the
    # 64 MiB rotation deleted is counted.
    dead = [json.loads(line) for name in ("input.jsonl", "input.jsonl.1")
            for line in (tmp_path / "dead" / name).read_text().splitlines()]
    discarded = value(samples, "bridge_dead_letters_discarded_total", file="input.jsonl")
    assert len(dead) + discarded == 50 * len(hostile)
    assert bridge.stop() == 0


def test_poisoned_line_is_dead_lettered_in_one_request_and_the_rest_lands(tmp_path, influxd, database):
    spec = parse({"subscriptions": [], "destinations": [{"name": "d", "url": influxd.url, "database": database}]})
    dest = spec.destinations[0]
    base = (time.time_ns() // 1_000_000_000 - 10) * 1_000_000_000
    lines = [f"ticks,instrument=EURUSD bid={1 + i / 1000} {base + i}" for i in range(100)]
    lines[37] = f'ticks,instrument=EURUSD bid="poison" {base + 37}'  # type conflict with the float field
    influxd.write(lines[0], database)  # the field exists as float before the batch
    metrics = Metrics()
    sink = InfluxSink(dest, Journal(tmp_path / "j", 10**7), DeadLetters(tmp_path / "dead.jsonl"), metrics,
                      Intake(tmp_path / "j"))
    sink.start()
    sink.submit(Chunk.of(lines))
    sink.stop(10)
    assert influxd.count(database, "ticks") == 99
    assert [p.name for p in (tmp_path / "j").iterdir()] == []  # written or dead-lettered: nothing left
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["line"] for d in dead] == [lines[37]]
    assert "field type conflict" in dead[0]["error"]
    assert metrics.get("bridge_dropped_points_total", destination="d", reason="rejected") == 1
    assert metrics.get("bridge_written_points_total", destination="d") == 99
    assert metrics.get("bridge_write_requests_total", destination="d") == 1  # the message named the line


def test_redis_latest_value_cache(tmp_path, influxd, database, endpoint, redis_server):
    import redis
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscription={"mapping": {**TICKS_MAPPING,
                                                     "measurement": "fx ticks,eu"}},
                           cache={"url": f"redis://127.0.0.1:{redis_server.port}/0", "ttl": "10m",
                                  "password_env": "TEST_REDIS_PW"})
    bridge.env["TEST_REDIS_PW"] = redis_server.password
    bridge.start()
    publish(endpoint, "kraken_tick", 800, rate=0, duration=30, instruments=["EURUSD", "GBPUSD"])
    wait_for(lambda: influxd.count(database, "fx ticks,eu") == 800, 20, "800 points")
    client = redis.Redis(port=redis_server.port, password=redis_server.password, decode_responses=True)
    key = r"latest:fx\ ticks\,eu,instrument=EURUSD,station=test1"  # the series key, escaped once
    wait_for(lambda: client.hgetall(key).get("seq") is not None, 10, "the cache updated")
    latest = client.hgetall(key)
    newest = influxd.query('SELECT last(bid) AS bid, last(seq) AS seq FROM "fx ticks,eu" WHERE instrument = \'EURUSD\'',
                           db=database)[0]
    wait_for(lambda: int(client.hget(key, "seq")) == newest["seq"], 10, "the newest tick cached")
    latest = client.hgetall(key)
    assert float(latest["bid"]) == newest["bid"]
    assert 0 < client.ttl(key) <= 600
    assert bridge.stop() == 0


def test_check_config_refuses_a_bad_file(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("subscriptions: []\ndestinations: [{name: d, url: ftp://x, database: db}]\n")
    proc = subprocess.run([BRIDGE, "check-config", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert f"{path}: destinations[0].url: 'ftp://x' must start with http://" in proc.stderr


def test_check_config_json_is_the_effective_configuration(tmp_path):
    path = tmp_path / "bridge.yml"
    path.write_text(yaml.safe_dump({
        "station": "ams1",
        "subscriptions": [{"name": "kraken", "endpoints": ["tcp://127.0.0.1:5556"],
                           "mapping": {"measurement": "ticks", "tags": ["instrument"], "static_tags": {"venue": "k"},
                                       "fields": {"bid": "float", "seq": "integer"}}},
                          {"name": "topics", "endpoints": ["tcp://127.0.0.1:5557"], "bind": True,
                           "mapping": {"measurement_from": "topic", "fields": {"v": "float"}}}],
        "destinations": [{"name": "local", "url": "http://127.0.0.1:8086", "database": "tick",
                          "password": "s3cret", "flush_interval": "500ms"}],
        "http": {"listen": None}, "self_metrics": {"interval": "1m", "instance": "kraken"},
    }))
    proc = subprocess.run([BRIDGE, "check-config", "--json", str(path)], capture_output=True, text=True, check=True)
    assert "s3cret" not in proc.stdout
    effective = json.loads(proc.stdout)
    kraken, topics = effective["subscriptions"]
    assert kraken["measurements"] == ["ticks"] and kraken["fields"] == {"bid": "float", "seq": "integer"}
    assert kraken["tags"] == ["instrument", "station", "venue"] and kraken["cache"] is False
    assert topics["measurements"] is None and topics["require_connection"] is False
    local = effective["destinations"][0]
    assert (local["flush_interval_s"], local["batch_size"], local["password_set"]) == (0.5, 5000, True)
    assert effective["http"]["listen"] == "127.0.0.1:9108"  # null means the default address ("" turns it off)
    assert effective["self_metrics"] == {"interval_s": 60.0, "measurement": "station_bridge",
                                         "feed_measurement": "station_bridge_feed", "instance": "kraken"}
    assert effective["shutdown_timeout_s"] == 20.0


def test_self_metrics_are_written_as_points(tmp_path, influxd, database, endpoint):
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           self_metrics={"interval": "300ms", "instance": "kraken"}).start()
    publish(endpoint, "kraken_tick", 300, rate=0, duration=30)
    wait_for(lambda: influxd.count(database, "ticks") == 300, 20, "300 points")

    def newest(measurement: str) -> dict:
        rows = influxd.query(f"SELECT * FROM {measurement} ORDER BY time DESC LIMIT 1", db=database)
        return rows[0] if rows else {}

    wait_for(lambda: newest("station_bridge").get("written", 0) >= 300, 10, "self-metrics point")
    row = newest("station_bridge")
    assert (row["instance"], row["destination"], row["station"]) == ("kraken", "local", "test1")
    assert row["received"] == 300 and row["rejected"] == 0 and row["dropped"] == 0 and row["journal_bytes"] == 0
    assert row["accepted"] >= row["written"] >= 300 and row["healthy"] is True
    assert abs(row["started"] - time.time()) < 60
    types = {(r["_measurement"], r["fieldKey"]): r["fieldType"] for r in influxd.query("SHOW FIELD KEYS", db=database)}
    assert {k: v for k, v in types.items() if k[0] == "station_bridge"} == {
        ("station_bridge", name): kind for name, kind in [
            ("accepted", "integer"), ("dropped", "integer"), ("failing_s", "float"), ("healthy", "boolean"),
            ("journal_bytes", "integer"), ("journal_points", "integer"), ("oldest_pending_s", "float"),
            ("pending", "integer"), ("pending_by_schedule", "boolean"), ("received", "integer"),
            ("rejected", "integer"), ("started", "integer"), ("written", "integer")]}
    feed = wait_for(lambda: newest("station_bridge_feed"), 10, "feed point")
    assert (feed["subscription"], feed["received"], feed["rejected"], feed["points"]) == ("kraken", 300, 0, 300)
    assert feed["connected"] in (True, False) and 0 <= feed["last_message_age_s"] < 60  # the publisher has left
    assert {k[1]: v for k, v in types.items() if k[0] == "station_bridge_feed"} == {
        "connected": "boolean", "last_message_age_s": "float", "points": "integer", "received": "integer",
        "rejected": "integer", "healthy": "boolean", "rejected_share": "float", "ignored": "integer"}
    samples = quiet_ledger(bridge)
    assert value(samples, "bridge_self_points_total") > 0
    assert bridge.stop() == 0


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path, influxd, database, endpoint):
    """sd_notify over a real datagram socket, as systemd's Type=notify and WatchdogSec use it."""
    import socket
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(10)
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint)
    bridge.env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    bridge.start()
    got = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum("WATCHDOG=1" in g for g in got) < 3:
        got.append(listener.recv(4096).decode())
    assert got[0].startswith("READY=1") and sum("WATCHDOG=1" in g for g in got) >= 3
    assert bridge.stop() == 0
    rest = []
    listener.settimeout(0.5)
    try:
        while True:
            rest.append(listener.recv(4096).decode())
    except OSError:
        pass
    assert any(m.startswith("STOPPING=1") for m in rest)
    listener.close()
    os.unlink(path)


def test_http_listener_is_bounded(tmp_path, influxd, database, endpoint):
    """1,000 idle connections neither take 1,000 threads nor keep /metrics down for long."""
    import socket
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           http={"listen": None, "max_connections": 8, "timeout": "1s"})
    bridge.config["http"]["listen"] = f"127.0.0.1:{bridge.http_port}"
    bridge.path.write_text(yaml.safe_dump(bridge.config))
    bridge.start()
    idle = []
    for _ in range(1000):
        s = socket.create_connection(("127.0.0.1", bridge.http_port))
        idle.append(s)
    time.sleep(0.5)
    threads = int(Path(f"/proc/{bridge.process.pid}/status").read_text().split("Threads:")[1].split()[0])
    assert threads < 30, threads
    wait_for(bridge.answers, 10, "/metrics answering again after the idle connections timed out")
    for s in idle:
        s.close()
    assert bridge.value("bridge_http_refused_total") > 0
    assert bridge.stop() == 0


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread dies on purpose
def test_a_writer_thread_that_dies_anyway_is_restarted_and_nothing_is_lost(tmp_path, influxd, database):
    """A BaseException the loop does not contain (SystemExit raised asynchronously in the thread):
    ensure_alive (called by the bridge every 200 ms) restarts it, counts it, and the queue goes on."""
    import ctypes
    spec = parse({"subscriptions": [], "destinations": [{"name": "d", "url": influxd.url, "database": database,
                                                         "flush_interval": "100ms"}]})
    metrics = Metrics()
    sink = InfluxSink(spec.destinations[0], Journal(tmp_path / "j", 10**7), DeadLetters(tmp_path / "dead.jsonl"),
                      metrics, Intake(tmp_path / "j"))
    sink.start()
    base = (time.time_ns() // 1_000_000_000 - 10) * 1_000_000_000
    sink.submit(Chunk.of([f"w v={i} {base + i}" for i in range(100)]))
    wait_for(lambda: metrics.get("bridge_written_points_total", destination="d") == 100, 10, "first points")
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(sink._thread.ident), ctypes.py_object(SystemExit))
    wait_for(lambda: not sink.alive, 10, "the thread to die")
    sink.submit(Chunk.of([f"w v={i} {base + 100 + i}" for i in range(100)]))  # queued while it is dead
    assert sink.ensure_alive() is False and sink.alive
    wait_for(lambda: metrics.get("bridge_written_points_total", destination="d") == 200, 10, "the rest")
    assert metrics.get("bridge_sink_restarts_total", destination="d") == 1
    assert influxd.count(database, "w", "v") == 200 and sink.pending == 0
    sink.stop(5)


def test_healthz_reports_a_subscription_without_a_connection(tmp_path, influxd, database, endpoint, zmq_context):
    """Issue 11: /healthz said 200 with the publisher gone. Connecting subscriptions require a
    connection; after health.subscription_grace without one, 503 names the subscription."""
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint, health={"subscription_grace": "1s"}).start()
    _, body = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(bridge.health()), 10, "503")
    assert body["problems"] == [{"part": "subscription", "name": "kraken",
                                 "reason": body["problems"][0]["reason"]}]
    assert bridge.value("bridge_subscription_connected", subscription="kraken") == 0
    context = zmq_context
    pub = publisher(context, endpoint)  # the publisher comes (back)
    wait_for(bridge.healthy, 10, "/healthz 200 once connected")
    assert bridge.value("bridge_subscription_connected", subscription="kraken") == 1
    pub.close(linger=0)
    context.term()
    assert bridge.stop() == 0
