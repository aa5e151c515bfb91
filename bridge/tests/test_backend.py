"""A VictoriaMetrics destination (backend.py): nothing its /influx/write would change silently is
sent. Real bridge processes, a real influxd and a real victoria-metrics (Debian's 1.79) on loopback.

What VictoriaMetrics does with line protocol is measured here too (test_what_victoriametrics_keeps),
so that the day a version behaves otherwise, the documentation's table is seen to be wrong."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import msgpack
import pytest
import zmq
from harness import BRIDGE, BridgeProcess, publisher, quiet_ledger, wait_for
from servers import VictoriaMetrics

from station_bridge.backend import Adapter
from station_bridge.metrics import value

OBS = {"measurement": "obs", "tags": ["inst"], "fields": {"v": "float", "note": "string", "ok": "boolean"},
       "time": {"field": "t", "format": "epoch_ns"}}
NOTES = {"measurement": "notes", "tags": ["inst"], "fields": {"note": "string"},
         "time": {"field": "t", "format": "epoch_ns"}}
VM_DEST = {"numeric_only": True, "time_resolution": "ms", "on_collision": "refuse"}


@pytest.fixture()
def victoria(tmp_path) -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics(tmp_path / "vm").start()
    yield server
    server.stop()


def _publish(endpoint: str, messages: list[tuple[str, dict]]) -> None:
    context = zmq.Context()
    socket = publisher(context, endpoint)
    # every topic covered by a subscription (wait_for_subscriber reads the others' away)
    waiting = {t.encode() for t, _ in messages}
    prefixes: set[bytes] = set()
    deadline = time.monotonic() + 10
    while waiting and socket.poll(max(1, int((deadline - time.monotonic()) * 1000)), zmq.POLLIN):
        message = socket.recv()
        if message[:1] == b"\x01":
            prefixes.add(message[1:])
        waiting = {t for t in waiting if not any(t.startswith(p) for p in prefixes)}
    assert not waiting, f"no subscriber for {waiting}"
    for topic, record in messages:
        socket.send_multipart([topic.encode(), msgpack.packb(record)])
    socket.close(linger=10_000)
    context.term()


def _counts(series: list[dict]) -> dict[tuple[str, str], int]:
    return {(s["metric"]["__name__"], s["metric"].get("inst", "")): len(s["timestamps"]) for s in series}


def test_what_victoriametrics_keeps(victoria):
    """The table in bridge/README.md: a string stored as 0 (a numeric one as its number), booleans
    as 1/0, floats rounded to about 12 significant digits, integers exact up to 2**53, two points
    of one series in one millisecond as one sample."""
    t = time.time_ns() // 1_000_000 * 1_000_000
    body = (f'k,inst=A s="hello",n="3.5",b=true,c=f,i=7i {t}\n'
            f"k,inst=A f=1 {t + 1000}\nk,inst=A f=2 {t + 2000}\n"
            f"k,inst=A p=0.4922337136339352,q=-449137.23093500524,r=0.30000000000000004,g=123456789.12345678,"
            f"e=1e-300,big=9007199254740993i,j=1234567890123456i {t}\n").encode()
    request = urllib.request.Request(victoria.url + "/influx/write?db=x&precision=ns", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204
    got = {s["metric"]["__name__"]: s["values"] for s in victoria.export('{__name__=~"k_.*"}')}
    assert got == {"k_s": [0], "k_n": [3.5], "k_b": [1], "k_c": [0], "k_i": [7], "k_f": [2],
                   # floats as decimals of about 12 significant digits; integers exact up to 2**53
                   "k_p": [0.492233713634], "k_q": [-449137.230935], "k_r": [0.3], "k_g": [123456789.12345678],
                   "k_e": [1e-300], "k_big": [2.0**53], "k_j": [1234567890123456]}


def test_numeric_only_and_milliseconds_against_victoriametrics(tmp_path, own_influxd, victoria, endpoint):
    """One stream to InfluxDB (everything) and to VictoriaMetrics (numeric_only, time_resolution
    ms, refuse): per series and field, VictoriaMetrics holds exactly the numeric samples InfluxDB
    holds, less the points refused for sharing a millisecond; no string field arrives as 0; a
    point with only string fields is dropped whole; every removal is counted and the ledger's
    equations hold for both destinations."""
    n, notes = 200, 50
    base = time.time_ns() // 1_000_000 * 1_000_000 - 10_000_000_000
    messages: list[tuple[str, dict]] = []
    colliding = 0
    for i in range(n):
        for inst, offset in (("A", 0), ("B", 300_000)):
            messages.append(("obs", {"t": base + i * 10_000_000 + offset, "inst": inst, "v": i + 0.5,
                                     "note": f"n{i}", "ok": i % 2 == 0}))
        if i % 10 == 0:  # a second point of A within the same millisecond: refused, counted
            messages.append(("obs", {"t": base + i * 10_000_000 + 400_000, "inst": "A", "v": -1.0,
                                     "note": "late", "ok": False}))
            colliding += 1
    messages += [("notes", {"t": base + j * 10_000_000 + 5_000_000, "inst": "A", "note": f"text {j}"})
                 for j in range(notes)]
    bridge = BridgeProcess(
        tmp_path, own_influxd, "tick", endpoint,
        subscription={"name": "obs", "topics": ["obs"], "mapping": OBS},
        subscriptions_extra=[{"name": "notes", "endpoints": [endpoint], "topics": ["notes"], "framing": "msgpack",
                              "mapping": NOTES}],
        destinations_extra=[{"name": "vm", "url": victoria.url + "/influx", "database": "tick",
                             "batch_size": 500, "flush_interval": "200ms", "max_backoff": "2s", **VM_DEST}],
    ).start()
    _publish(endpoint, messages)
    samples = quiet_ledger(bridge, ("local", "vm"), ("obs", "notes"))
    assert value(samples, "bridge_written_points_total", destination="local") == len(messages)
    assert value(samples, "bridge_written_points_total", destination="vm") == 2 * n
    assert value(samples, "bridge_dropped_points_total", destination="vm", reason="non_numeric") == notes
    assert value(samples, "bridge_dropped_points_total", destination="vm", reason="time_resolution") == colliding
    assert value(samples, "bridge_dropped_fields_total", destination="vm", reason="non_numeric") == \
        2 * n + colliding + notes
    assert value(samples, "bridge_dropped_fields_total", destination="vm", reason="time_resolution") == 2 * colliding
    assert value(samples, "bridge_dropped_fields_total", destination="local", reason="non_numeric") == 0

    influx = {}
    for inst in ("A", "B"):
        for f in ("v", "ok", "note"):
            rows = own_influxd.query(f"SELECT count(\"{f}\") FROM obs WHERE inst = '{inst}'", db="tick")
            influx[(f"obs_{f}", inst)] = int(rows[0]["count"])
    assert influx[("obs_note", "A")] == n + colliding  # InfluxDB keeps the strings
    exported = victoria.export('{__name__=~"(obs|notes)_.*"}')
    expected = {(name, inst): count - (colliding if inst == "A" else 0)
                for (name, inst), count in influx.items() if name != "obs_note"}
    assert _counts(exported) == expected
    by_name = {(s["metric"]["__name__"], s["metric"]["inst"]): s for s in exported}
    assert -1.0 not in by_name[("obs_v", "A")]["values"]  # the first point of a millisecond wins
    assert sorted(by_name[("obs_v", "B")]["values"]) == [i + 0.5 for i in range(n)]
    assert by_name[("obs_ok", "B")]["values"].count(1) == n // 2
    assert bridge.stop() == 0


class HoldingProxy:
    """HTTP in front of VictoriaMetrics: forwards every request and passes its answer back, except
    the answer to request number `hold_at` (of /influx/write), which it keeps until `release` is set:
    that batch is stored by the server and never acknowledged to the bridge, which is then certainly
    waiting for it when the test kills it."""

    def __init__(self, target: str, hold_at: int) -> None:
        self.target, self.hold_at = target, hold_at
        self.writes = 0
        self.bodies: list[bytes] = []  # every write's body, in arrival order
        self.held, self.release = threading.Event(), threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if self.command == "POST" else None
                request = urllib.request.Request(proxy.target + self.path, data=body, method=self.command)
                for name in ("Content-Type", "Content-Encoding", "Authorization"):
                    if self.headers.get(name):
                        request.add_header(name, self.headers[name])
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, answer = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    status, answer = exc.code, exc.read()
                if self.path.startswith("/influx/write"):
                    with lock:
                        proxy.bodies.append(body or b"")
                        proxy.writes += 1
                        hold = proxy.writes == proxy.hold_at
                    if hold:
                        proxy.held.set()
                        proxy.release.wait(60)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = _forward

        lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_replay_killed_midway_leaves_no_duplicate_in_victoriametrics(tmp_path, victoria, endpoint):
    """Points logged while VictoriaMetrics was unreachable; the bridge is killed (SIGKILL) while
    it replays them, with a batch certainly stored by the server and not yet acknowledged (a proxy
    holds the server's answer to the 10th request until the kill), then restarted: it sends that
    batch again (identical times) and the server's deduplication (-dedup.minScrapeInterval=1ms,
    as the role runs it) keeps one sample each. Without that flag this test fails, every run
    (duplicates in the export)."""
    n = 3000
    base = time.time_ns() // 1_000_000 * 1_000_000 - 60_000_000_000
    messages = [("obs", {"t": base + i * 1_000_000, "inst": "A\\\\B", "v": float(i), "note": "x", "ok": True})
                for i in range(n)]  # the tag as VictoriaMetrics reads it from every send, replays too
    dest = {"name": "vm", "url": "http://127.0.0.1:9/influx", "batch_size": 50, "max_backoff": "1s", **VM_DEST}
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint, destination=dest, shutdown_timeout=1,
                           subscription={"name": "obs", "topics": ["obs"], "mapping": OBS}).start()
    _publish(endpoint, messages)
    wait_for(lambda: value(bridge.samples(), "bridge_pending_points", destination="vm") == n, 20, "points logged")
    bridge.kill()  # the points stay in one intake-log file, adopted whole as one journal segment
    proxy = HoldingProxy(victoria.url, hold_at=10)
    try:
        bridge.config["destinations"][0].update(url=proxy.url + "/influx")
        bridge.path.write_text(json.dumps(bridge.config))
        bridge.start()
        # The 10th batch is stored and its answer held: the bridge waits for it, 50 points in flight.
        assert proxy.held.wait(30), "the replay did not reach its 10th request"
        assert victoria.requests() >= 10
        assert value(bridge.samples(), "bridge_written_points_total", destination="vm") < n
        bridge.kill()
        proxy.release.set()
        bridge.start()
        quiet_ledger(bridge, ("vm",), ("obs",), timeout=60)
    finally:
        proxy.close()
    # The held batch (stored by the server, never acknowledged) was sent again, whole.
    held = proxy.bodies[proxy.hold_at - 1]
    assert held and proxy.bodies.count(held) >= 2, (proxy.writes, len(set(proxy.bodies)))
    exported = victoria.export('{__name__="obs_v"}')
    assert len(exported) == 1 and exported[0]["metric"]["inst"] == "A\\\\B"
    stamps = exported[0]["timestamps"]
    assert len(stamps) == len(set(stamps)) == n
    assert bridge.stop() == 0


def test_check_config_warns_about_feeds_that_can_collide_in_a_millisecond(tmp_path, endpoint):
    """on_collision: warn names every feed; refuse (it counts instead) and nanosecond destinations do not."""
    def warnings(**dest: object) -> list[str]:
        bridge = BridgeProcess(tmp_path, None, "tick", endpoint, destination=dest,
                               subscription={"name": "obs", "topics": ["obs"], "mapping": OBS})
        out = subprocess.run([BRIDGE, "check-config", "--json", str(bridge.path)], capture_output=True,
                             text=True, check=True)
        return [w for w in json.loads(out.stdout)["warnings"] if "keeps milliseconds" in w]

    found = warnings(time_resolution="ms", on_collision="warn", numeric_only=True)
    assert len(found) == 1 and "'obs'" in found[0] and "epoch_ns" in found[0]
    assert warnings(time_resolution="ms", on_collision="refuse", numeric_only=True) == []
    assert warnings(numeric_only=True) == []
    found = [w for w in warnings(time_resolution="ms") if "stored as 0" in w]  # OBS has a string field
    assert len(found) == 1 and "'obs'" in found[0]
    assert not [w for w in warnings(time_resolution="ms", numeric_only=True) if "stored as 0" in w]


@pytest.mark.parametrize(("line", "kept", "fields"), [
    (b'm,t=a v=1,s="x" 5', b"m,t=a v=1 5", 1),
    (b'm,t=a s="a,b=\\"c\\" d",v=2i 5', b"m,t=a v=2i 5", 1),
    (b'm,t=a s="multi\nline",b=true 5', b"m,t=a b=true 5", 1),
    (b'm="x,t=a\\=" v=1.5 5', b'm="x,t=a\\=" v=1.5 5', 0),
    (b'm,t=a s="only" 5', None, 1),
])
def test_numeric_only_removes_exactly_the_string_fields(line, kept, fields):
    data, points, dropped, removed = Adapter(True, False).apply(line + b"\n")
    assert removed == ({"non_numeric": fields} if fields else {})
    if kept is None:
        assert (data, points, dropped) == (b"", 0, {"non_numeric": 1})
    else:
        assert (data, points, dropped) == (kept + b"\n", 1, {})


def test_replay_to_victoriametrics_filters_and_counts_like_the_running_bridge(tmp_path, victoria):
    """`station-bridge replay` of exported points into a numeric_only, ms destination: strings
    removed and counted, a string-only point and a point in a used millisecond dropped and
    counted, nothing stored as 0."""
    t = time.time_ns() // 1_000_000 * 1_000_000 - 5_000_000_000
    records = [{"measurement": "rp", "tags": {"inst": "A"}, "fields": {"v": 1.5, "s": "x"}, "time": t},
               {"measurement": "rp", "tags": {"inst": "A"}, "fields": {"s": "only"}, "time": t + 2_000_000},
               {"measurement": "rp", "tags": {"inst": "A"}, "fields": {"v": 2.5}, "time": t + 300_000},
               {"measurement": "rp", "tags": {"inst": "A"}, "fields": {"v": 3.5, "ok": True}, "time": t + 1_000_000}]
    exported = tmp_path / "export.jsonl"
    exported.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = tmp_path / "replay.yml"
    config.write_text(json.dumps({
        "subscriptions": [{"name": "obs", "endpoints": ["tcp://127.0.0.1:9"], "topics": ["obs"], "mapping": OBS}],
        "destinations": [{"name": "vm", "url": victoria.url + "/influx", "database": "tick", **VM_DEST}],
        "journal": {"dir": str(tmp_path / "journal")}, "dead_letter": {"dir": str(tmp_path / "dead")}}))
    done = subprocess.run([BRIDGE, "replay", "--config", str(config), "--dead-letter", str(tmp_path / "again.jsonl"),
                           str(exported)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "replayed 2 points" in done.stdout, done.stdout
    assert "{'non_numeric': 1, 'time_resolution': 1} points, 3 fields" in done.stdout, done.stdout
    got = {s["metric"]["__name__"]: s["values"] for s in victoria.export('{__name__=~"rp_.*"}')}
    assert got == {"rp_v": [1.5, 3.5], "rp_ok": [1]}


# Tag values InfluxDB stores as they are but VictoriaMetrics' parser reads otherwise: it reads
# `\\` as one backslash and a backslash before `,`, space or `=` as an escape, so these came out
# changed (`a\\b` as `a\b`, merging two series) or the line was skipped whole (answer 204).
# (no backslash before a space: refused unrepresentable since round 9, for every destination: influxd's
# line scanner ends the tag set there; test_attack_round9)
BACKSLASHED = ["a\\b", "a\\\\b", "\\\\x", "x\\,y", "x\\\\ y", "x\\=y", "\\\\,", "\\\"q", "p\\é", "\\#", "c, d=e"]
BY_FIELD = {"measurement_from": "field", "measurement_field": "m", "tags": ["inst"],
            "fields": {"v": "float", "w": "float", "v_w": "float"}, "time": {"field": "t", "format": "epoch_ns"}}


def test_victoriametrics_gets_each_sample_unchanged_and_once(tmp_path, victoria, endpoint):
    """Per sample VictoriaMetrics keeps (`<measurement>_<field>` and the tags):
    - tag values with backslashes arrive as they are (were changed, or their line skipped);
    - two feeds sending other fields of one series in one millisecond are both kept: they are
      distinct samples (the second point was refused whole);
    - `x`.`v_w` and `x_v`.`w` would be one sample `x_v_w`: the second is removed and counted
      `name_collision` (VictoriaMetrics kept one value of the two, silently)."""
    t = time.time_ns() // 1_000_000 * 1_000_000 - 5_000_000_000
    obs = [("obs", {"t": t + i * 1_000_000, "inst": v, "v": float(i), "note": "", "ok": True})
           for i, v in enumerate(BACKSLASHED)]
    by_field = [("pump", {"m": "pump", "inst": "A", "v": 1.0, "t": t}),
                ("pump", {"m": "pump", "inst": "A", "w": 2.0, "t": t + 100}),
                ("pump", {"m": "pump", "inst": "A", "v": 3.0, "w": 4.0, "t": t + 200}),  # both taken: refused
                ("pump", {"m": "x", "inst": "A", "v_w": 5.0, "t": t + 10_000_000}),
                ("pump", {"m": "x_v", "inst": "A", "w": 7.0, "v": 8.0, "t": t + 10_000_000})]
    bridge = BridgeProcess(
        tmp_path, None, "tick", endpoint, subscription={"name": "obs", "topics": ["obs"], "mapping": OBS},
        subscriptions_extra=[{"name": "pumps", "endpoints": [endpoint], "topics": ["pump"], "framing": "msgpack",
                              "mapping": BY_FIELD}],
        destination={"name": "vm", "url": victoria.url + "/influx", "database": "tick", "batch_size": 100,
                     "flush_interval": "200ms", "max_backoff": "1s", **VM_DEST}).start()
    _publish(endpoint, obs + by_field)
    samples = quiet_ledger(bridge, ("vm",), ("obs", "pumps"))
    assert value(samples, "bridge_written_points_total", destination="vm") == len(BACKSLASHED) + 4
    assert value(samples, "bridge_dropped_points_total", destination="vm", reason="time_resolution") == 1
    assert value(samples, "bridge_dropped_fields_total", destination="vm", reason="time_resolution") == 2
    assert value(samples, "bridge_dropped_fields_total", destination="vm", reason="name_collision") == 1
    got = {s["metric"]["inst"]: s["values"] for s in victoria.export('{__name__="obs_v"}')}
    assert got == {v: [float(i)] for i, v in enumerate(BACKSLASHED)}
    got = {s["metric"]["__name__"]: s["values"] for s in victoria.export('{__name__=~"(pump|x|x_v)_.*"}')}
    assert got == {"pump_v": [1.0], "pump_w": [2.0], "x_v_w": [5.0], "x_v_v": [8.0]}
    assert bridge.stop() == 0


def test_victoriametrics_adapter_refuses_a_line_it_cannot_carry():
    """VictoriaMetrics ends a line at every newline (a tag's escaped one, a string's): such a line
    is dropped and counted, never sent to be read as two lines (the second half its own point)."""
    adapter = Adapter(False, True, victoria=True)
    lines = [b"m,t=a\\\nb\\ f\\=1 v=1 5", b'm,t=a s="x\nevil v=9 6",v=1 5', b"m,t=a v=2 7000000",
             b"m\\ n,__name__=x,t=b v=3 5",  # VictoriaMetrics drops a tag __name__: series would merge
             b"m,db=fleet v=3 5",  # it labels every sample db=<database>: m,db=fleet and m would merge
             # at its default limits it drops labels beyond 30 (tags and db) and cuts values beyond 16 KiB
             b"m," + b",".join(b"t%02d=v" % i for i in range(30)) + b" v=4 5",
             b"m,t=" + b"x" * 16_385 + b" v=5 5"]
    kept = [b"m,t=a v=2 7000000", b"m," + b",".join(b"t%02d=v" % i for i in range(29)) + b" v=4 5",
            b"m,t=" + b"x" * 16_384 + b" v=5 5"]
    assert adapter.apply_lines(lines + kept[1:]) == (kept, {"unrepresentable": 6}, {})


def _ignored(victoria: VictoriaMetrics) -> dict[str, int]:
    """Rows VictoriaMetrics skipped after answering 204 (its own /metrics), by reason."""
    with urllib.request.urlopen(victoria.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {line.split('"')[1]: int(float(line.rpartition(" ")[2])) for line in text.splitlines()
            if line.startswith("vm_rows_ignored_total{")}


def test_points_victoriametrics_would_skip_for_their_time_are_counted(tmp_path, victoria, endpoint):
    """VictoriaMetrics (run with -retentionPeriod=1y) skips a point older than its retention or
    more than 2 days ahead and still answers 204: with `retention_period` the bridge drops those
    and counts them `outside_retention`, so nothing counted written is skipped by the server."""
    now = time.time_ns() // 1_000_000 * 1_000_000
    day = 86_400 * 10**9
    stamps = {"recent": now - 5 * 10**9, "old": now - 300 * day, "tomorrow": now + day,
              "too_old": now - 400 * day, "too_new": now + 3 * day}
    mapping = {**OBS, "time": {**OBS["time"], "accept_ahead": None}}
    bridge = BridgeProcess(
        tmp_path, None, "tick", endpoint, subscription={"name": "obs", "topics": ["obs"], "mapping": mapping},
        destination={"name": "vm", "url": victoria.url + "/influx", "database": "tick", "flush_interval": "200ms",
                     "max_backoff": "1s", "retention_period": "8760h", **VM_DEST}).start()
    _publish(endpoint, [("obs", {"t": t, "inst": name, "v": 1.0, "note": "", "ok": True})
                        for name, t in stamps.items()])
    samples = quiet_ledger(bridge, ("vm",), ("obs",))
    assert value(samples, "bridge_written_points_total", destination="vm") == 3
    assert value(samples, "bridge_dropped_points_total", destination="vm", reason="outside_retention") == 2
    assert sorted(s["metric"]["inst"] for s in victoria.export('{__name__="obs_v"}')) == ["old", "recent"]
    assert sum(_ignored(victoria).values()) == 0
    assert bridge.stop() == 0
