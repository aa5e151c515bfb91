"""Each case prints what it did and what it counted, and fails on any loss.

Run with `make chaos` (part of `make test`); the whole suite is bounded to a few minutes.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgpack
import pytest
import zmq
from harness import BridgeProcess as Bridge
from harness import wait_for
from servers import Influxd, free_port

from station_bridge.demo import publish
from station_bridge.metrics import value

INFLUX_DOWN_S = 60
CENTRAL_DOWN_S = 180


def report(title: str, **counts: object) -> None:
    print(f"\n[chaos] {title}")
    for key, count in counts.items():
        print(f"[chaos]   {key:<28} {count}")


@pytest.fixture()
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def own_server(path: Path) -> Influxd:
    server = Influxd(path).start()
    server.query('CREATE DATABASE "tick"')
    return server


def publish_in_background(endpoint: str, count: int, rate: float, duration: float) -> tuple[threading.Thread, list]:
    sent: list[int] = []
    thread = threading.Thread(target=lambda: sent.append(
        publish(endpoint, "kraken_tick", count=count, rate=rate, duration=duration)))
    thread.start()
    return thread, sent


class DeliveryRecorder:
    """An HTTP hop in front of an InfluxDB that records, in delivery order, the `seq` of every
    line InfluxDB acknowledged: the order central received the points in. While the server is
    down it answers 503, as a load balancer in front of a stopped InfluxDB would."""

    SEQ = re.compile(rb"seq=(\d+)i")

    def __init__(self, target: Influxd) -> None:
        self.order: list[int] = []
        recorder, lock = self, threading.Lock()

        class Hop(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the bridge's client expects

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
                    conn.request("POST", self.path, body=body, headers={"Content-Type": "text/plain"})
                    response = conn.getresponse()
                    status, data = response.status, response.read()
                    conn.close()
                except OSError:
                    status, data = 503, b'{"error": "central unreachable"}'
                if status == 204:
                    with lock:
                        recorder.order.extend(int(n) for n in recorder.SEQ.findall(body))
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hop)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def first_deliveries(self) -> list[int]:
        """Each seq at its first acknowledgement (a batch re-sent after a lost reply repeats)."""
        seen: set[int] = set()
        return [n for n in self.order if not (n in seen or seen.add(n))]


def distinct_points(server: Influxd, db: str = "tick") -> set[tuple[str, int]]:
    return {(row["instrument"], row["time"]) for row in server.query("SELECT bid, instrument FROM ticks", db=db)}


def test_influxdb_stopped_60s_under_steady_rate_loses_nothing(tmp_path, endpoint):
    local = own_server(tmp_path / "influxd")
    try:
        bridge = Bridge(tmp_path, local, "tick", endpoint).start()
        rate = 500
        thread, sent = publish_in_background(endpoint, count=(INFLUX_DOWN_S + 10) * rate, rate=rate,
                                             duration=INFLUX_DOWN_S + 30)
        time.sleep(3)
        local.stop()
        time.sleep(INFLUX_DOWN_S)
        journaled = value(bridge.samples(), "bridge_journaled_points_total", destination="local")
        local.start()
        thread.join()
        wait_for(lambda: local.count("tick", "ticks") == sent[0], 90, "every point in InfluxDB")
        landed = local.count("tick", "ticks")
        values = bridge.samples()
        report(f"InfluxDB stopped {INFLUX_DOWN_S} s while publishing {rate}/s", published=sent[0],
               journaled_during_outage=int(journaled), landed=landed,
               dropped=int(value(values, "bridge_dropped_points_total", destination="local", reason="spool_full")),
               lost=sent[0] - landed)
        assert journaled > INFLUX_DOWN_S * rate * 0.9
        assert landed == sent[0] and len(distinct_points(local)) == sent[0]
        assert bridge.journal_lines() == []
        assert bridge.stop() == 0
    finally:
        local.stop()


def test_sigkill_under_load_delivers_every_point_the_bridge_had_accepted(tmp_path, endpoint):
    local = own_server(tmp_path / "influxd")
    try:
        local.stop()  # the destination is down: batches go to the journal while the load runs
        bridge = Bridge(tmp_path, local, "tick", endpoint).start()
        thread, sent = publish_in_background(endpoint, count=20_000, rate=2000, duration=60)
        wait_for(lambda: len(bridge.journal_lines()) >= 8000, 30, "8000 points journaled under load")
        bridge.process.kill()  # SIGKILL mid-stream: no flush, no cleanup
        bridge.process.wait(10)
        journaled = bridge.journal_lines()
        # What the bridge had accepted: the journal, and its write-ahead intake log (points in
        # memory, not yet written nor journaled).
        logged = [line for wal in sorted((tmp_path / "journal" / "local").glob("*.wal"))
                  for line in wal.read_text().splitlines() if line.endswith(tuple("0123456789"))]
        thread.join()
        local.start()
        restarted = Bridge(tmp_path, local, "tick", endpoint).start()  # what systemd's Restart= does
        accepted = {(re.search(r"instrument=(\w+)", line).group(1), int(line.rsplit(" ", 1)[1]))
                    for line in journaled + logged}
        wait_for(lambda: len(accepted - distinct_points(local)) == 0, 60, "every accepted point delivered")
        stored = distinct_points(local)
        report("bridge SIGKILLed under load (2000/s), restarted", published=sent[0],
               journaled_at_kill=len(journaled), in_memory_at_kill_logged=len(set(logged) - set(journaled)),
               accepted_points_landed=len(accepted & stored), lost_accepted=len(accepted - stored),
               not_accepted=f"{sent[0] - len(accepted)} (in ZeroMQ's buffers at the kill, or sent while no bridge ran)")
        assert accepted <= stored and len(accepted) > 8000
        assert restarted.stop() == 0
    finally:
        local.stop()


def test_central_unreachable_for_minutes_catches_up_in_order_without_duplicates(tmp_path, endpoint):
    local = own_server(tmp_path / "local")
    central = own_server(tmp_path / "central")
    try:
        hop = DeliveryRecorder(central)
        bridge = Bridge(tmp_path, local, "tick", endpoint, destinations_extra=[
            {"name": "central", "url": hop.url, "database": "tick", "batch_size": 500,
             "flush_interval": 0.5, "max_backoff": 5.0}]).start()
        rate = 200
        thread, sent = publish_in_background(endpoint, count=(CENTRAL_DOWN_S + 20) * rate, rate=rate,
                                             duration=CENTRAL_DOWN_S + 60)
        time.sleep(5)
        central.stop()
        time.sleep(CENTRAL_DOWN_S / 2)
        local_during = local.count("tick", "ticks")
        time.sleep(CENTRAL_DOWN_S / 2)
        journal_at_reconnect = len(bridge.journal_lines("central"))
        central.start()
        thread.join()
        wait_for(lambda: central.count("tick", "ticks") == sent[0], 120, "central caught up")
        wait_for(lambda: local.count("tick", "ticks") == sent[0], 30, "local complete")
        on_central, on_local = distinct_points(central), distinct_points(local)
        logs = [json.loads(line) for line in (tmp_path / "bridge.log").read_text().splitlines() if line.startswith("{")]
        replays = [e["segment"] for e in logs if e.get("destination") == "central" and "segment" in e]
        delivered = hop.first_deliveries()
        report(f"central unreachable {CENTRAL_DOWN_S} s at {rate}/s", published=sent[0],
               local_while_cut=local_during, journaled_for_central=journal_at_reconnect,
               on_central=central.count("tick", "ticks"), distinct_on_central=len(on_central),
               missing_on_central=len(on_local - on_central), replayed_segments=len(replays),
               acknowledged_lines=len(hop.order), sent_again=len(hop.order) - len(delivered),
               delivered_in_publish_order=delivered == sorted(delivered))
        assert local_during > CENTRAL_DOWN_S / 2 * rate * 0.8  # the station kept writing locally
        assert journal_at_reconnect > 0
        assert on_central == on_local and len(on_central) == sent[0]  # nothing lost, nothing twice
        # In order: central acknowledged the points in the order they were published.
        assert delivered == sorted(delivered) and len(delivered) == sent[0]
        assert bridge.stop() == 0
    finally:
        local.stop()
        central.stop()


def test_spool_cap_keeps_the_bridge_up_and_counts_every_drop(tmp_path, endpoint):
    local = own_server(tmp_path / "influxd")
    try:
        local.stop()
        bridge = Bridge(tmp_path, local, "tick", endpoint, journal={"max_bytes": 200_000}).start()
        sent = publish(endpoint, "kraken_tick", 10_000, rate=0, duration=30)

        def settled():
            v = bridge.samples()
            total = (value(v, "bridge_journaled_points_total", destination="local")
                     + value(v, "bridge_dropped_points_total", destination="local", reason="spool_full"))
            return v if total == sent else None

        values = wait_for(settled, 30, "every point journaled or dropped")
        dropped = int(value(values, "bridge_dropped_points_total", destination="local", reason="spool_full"))
        journaled = len(bridge.journal_lines())
        report("spool cap 200 kB reached with InfluxDB down", published=sent, journaled=journaled,
               dropped_and_counted=dropped, unaccounted=sent - journaled - dropped)
        assert dropped > 0 and journaled + dropped == sent
        assert bridge.healthy() and "journal full" in (tmp_path / "bridge.log").read_text()
        assert bridge.stop() == 0
    finally:
        local.stop()


def test_fuzzed_hostile_stream_never_crashes_and_valid_points_land_intact(tmp_path, influxd, database, endpoint):
    bridge = Bridge(tmp_path, influxd, database, endpoint).start()
    rng = random.Random(20261125)
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.bind(endpoint)
    time.sleep(0.5)
    base = time.time()
    injections = ["a,b=c d", "x\ny=1", 'q"uote', "back\\slash", "eq=ual", "sp ace", "\u00e9\u00e8", "t,ab=1 f=2 3"]
    valid, frames_sent = {}, 0
    huge = rng.randbytes(2_000_000)
    for i in range(20_000):
        kind = rng.random()
        if kind < 0.25:  # random bytes, random frame counts
            frames = [b"kraken_tick"] + [rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(0, 3))]
        elif kind < 0.255:
            frames = [b"kraken_tick", huge]  # oversized
        elif kind < 0.45:  # valid shape, hostile values
            tick = {"timestamp": base + i / 1000, "instrument": rng.choice(injections), "bid": rng.choice(
                [float("nan"), float("inf"), "1.0; DROP", None, 1.5]), "ask": 1.6, "volume": 1, "seq": i}
            frames = [b"kraken_tick", msgpack.packb(tick)]
        elif kind < 0.50:
            frames = [b"kraken_tick", b"\xff\xfe invalid utf-8 \xc3\x28"]
        else:
            tick = {"timestamp": base + i / 1000, "instrument": rng.choice(["EURUSD", "GBPUSD"]),
                    "bid": round(rng.uniform(1, 2), 5), "ask": 2.5, "volume": rng.randint(1, 10**6), "seq": i}
            valid[i] = tick
            frames = [b"kraken_tick", msgpack.packb(tick)]
        pub.send_multipart(frames)
        frames_sent += 1
    pub.close(linger=5000)
    wait_for(lambda: value(bridge.samples(), "bridge_received_messages_total", subscription="kraken")
             == frames_sent, 60, "every frame received")
    values = bridge.samples()
    rejected = {key: int(v) for key, v in values.items() if key.startswith("bridge_rejected_messages_total")}
    wait_for(lambda: influxd.count(database, "ticks", field="seq") >= frames_sent - sum(rejected.values()), 30,
             "accepted points")
    rows = {row["seq"]: row for row in influxd.query("SELECT * FROM ticks", db=database)}
    intact = sum(1 for i, t in valid.items() if i in rows and rows[i]["bid"] == t["bid"]
                 and rows[i]["instrument"] == t["instrument"] and rows[i]["volume"] == t["volume"])
    report("fuzzed hostile stream (seed 20261125)", frames=frames_sent, valid=len(valid),
           rejected=sum(rejected.values()), accepted=len(rows), valid_landed_intact=intact,
           **{re.search(r'reason="(\w+)"', k).group(1): v for k, v in sorted(rejected.items())})
    assert bridge.process.poll() is None and bridge.healthy()  # no crash
    assert sum(rejected.values()) + len(rows) == frames_sent  # every frame accounted for
    assert intact == len(valid)
    # Whatever hostile-but-valid points were accepted carry only the declared fields.
    columns = set().union(*(set(r) for r in rows.values()))
    assert columns <= {"_measurement", "time", "bid", "ask", "volume", "seq", "instrument", "station"}, columns
    assert bridge.stop() == 0
