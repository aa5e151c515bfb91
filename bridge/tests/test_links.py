"""Scheduled links, a send budget with the live stream first, and `ca_file` (bridge destinations).

Real parts throughout: influxd, the bridge as a process, ZeroMQ, and a userspace TCP proxy
between the bridge and influxd that counts the bytes (and lines) of each second on the link.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import ssl
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import msgpack
import pytest
import yaml
from harness import BRIDGE, BridgeProcess, ledger_problems, publisher, quiet_ledger, subscribed, wait_for

from station_bridge import config as cfg
from station_bridge.health import BridgeState, DestinationState, Thresholds, evaluate
from station_bridge.journal import Chunk
from station_bridge.schedule import DAY, Pacer, Schedule
from station_bridge.sinks import Delivery, InfluxWriter, Retryable
from station_bridge.validate import table

# --- a TCP proxy that measures the link ---------------------------------------------------------


class LinkProxy:
    """Forwards loopback TCP connections to `target_port`; counts what goes upstream (client to
    server) per wall-clock second, and the lines of line protocol in it (a newline not preceded
    by a carriage return: bodies are sent uncompressed in these tests). With `tls`, it is the TLS
    end for the client and forwards plain bytes."""

    def __init__(self, target_port: int, tls: ssl.SSLContext | None = None) -> None:
        self.target_port = target_port
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.per_second: dict[int, int] = defaultdict(int)
        self.lines = 0
        self.handshake_errors: list[str] = []
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.port}"

    def total(self) -> int:
        with self._lock:
            return sum(self.per_second.values())

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.tls is not None:
            try:
                client = self.tls.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(str(exc))
                client.close()
                return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        with self._lock:
            self._sockets += [client, upstream]
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        previous = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    with self._lock:
                        self.per_second[int(time.time())] += len(data)
                        self.lines += data.count(b"\n") - data.count(b"\r\n") - (
                            previous == b"\r" and data[:1] == b"\n")
                    previous = data[-1:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()


# --- the schedule, the budget, the configuration ----------------------------------------------


def test_daily_windows_cross_midnight_and_name_the_next_opening():
    s = Schedule.daily(["02:00-04:30", "22:00-01:00"])
    day = 20_000 * DAY
    assert s.is_open(day + 2 * 3600) and s.is_open(day + 4 * 3600 + 1799) and not s.is_open(day + 4.5 * 3600)
    assert s.is_open(day + 23 * 3600) and s.is_open(day + 0.5 * 3600) and not s.is_open(day + 1 * 3600)
    assert s.window_start(day + 0.5 * 3600) == day - 2 * 3600  # yesterday's 22:00
    assert s.next_open(day + 5 * 3600) == day + 22 * 3600
    assert s.next_open(day + 1.5 * 3600) == day + 2 * 3600
    whole = Schedule.daily(["00:00-24:00"])
    assert whole.is_open(day) and whole.is_open(day + DAY - 1)


def test_periodic_windows_start_at_each_multiple_of_every():
    s = Schedule.periodic(1800, 600)  # 10 minutes every 30 minutes
    t = 20_000 * DAY
    assert s.is_open(t) and s.is_open(t + 599) and not s.is_open(t + 600) and s.is_open(t + 1800)
    assert s.next_open(t + 601) == t + 1800 and s.window_start(t + 1801) == t + 1800


def test_the_pacer_never_lets_more_than_the_rate_plus_one_request_through():
    pacer = Pacer(None, 1000)
    start = time.monotonic()
    delays = [pacer.take(1, 400) for _ in range(10)]  # 4000 bytes: 3.6 s of waiting in all
    assert delays[0] == 0 and delays[1] == pytest.approx(0.4, abs=0.05)
    assert delays[-1] == pytest.approx(3.6, abs=0.05)
    assert time.monotonic() - start < 0.5  # take only reserves
    assert Pacer(100, None).take(50, 10**9) == 0 and not Pacer(None, None).limited


def central(**state) -> dict:
    d = DestinationState(name="central", pending=5000, queue=0, journal_points=5000, journal_bytes=1 << 20,
                         failing_s=0.0, last_error="", alive=True, oldest_pending_s=7200.0, flush_interval=1.0,
                         journal_failed_s=None, journal_error="", free_bytes=1 << 30, reserve_bytes=1 << 20)
    for key, value in state.items():
        setattr(d, key, value)
    return evaluate(BridgeState([d], []), Thresholds(destination_grace=60.0))


def test_health_judges_a_scheduled_link_from_its_window():
    closed = central(scheduled=True, window_age_s=None, next_window="2026-12-07T14:00:00Z")
    assert closed["ok"] and closed["destinations"]["central"]["state"] == "pending_by_schedule"
    assert closed["destinations"]["central"]["next_window"] == "2026-12-07T14:00:00Z"
    # Two hours of backlog, 90 s into the window, written to a moment ago: catching up, healthy.
    opened = central(scheduled=True, live_first=True, window_age_s=90.0, idle_s=0.5, oldest_live_s=1.0)
    assert opened["ok"] and opened["destinations"]["central"]["state"] == "catching_up"
    drained = central(scheduled=True, live_first=True, window_age_s=90.0, journal_points=0, pending=10,
                      oldest_live_s=0.5, oldest_pending_s=0.5)
    assert drained["ok"] and drained["destinations"]["central"]["state"] == "ok"
    late = central(scheduled=True, live_first=True, window_age_s=90.0, idle_s=0.5, oldest_live_s=75.0)
    assert not late["ok"] and "oldest unacknowledged point is 75 s old" in late["problems"][0]["reason"]
    stuck = central(scheduled=True, live_first=True, window_age_s=90.0, idle_s=90.0, oldest_live_s=1.0)
    assert not stuck["ok"] and stuck["destinations"]["central"]["state"] == "degraded"
    assert "not draining" in stuck["problems"][0]["reason"]
    assert "counted from its window's start" in stuck["problems"][0]["reason"]
    paced = central(live_first=True, idle_s=2.0, oldest_live_s=1.0)  # a budget, no schedule: the same rules
    assert paced["ok"] and paced["destinations"]["central"]["state"] == "catching_up"
    always = central()  # no schedule: the same backlog is simply old
    assert not always["ok"] and not always["destinations"]["central"]["pending_by_schedule"]
    broken = central(scheduled=True, window_age_s=None, free_bytes=0)  # the journal rules hold at any time
    assert not broken["ok"] and [p["part"] for p in broken["problems"]] == ["journal"]


def base(**destination) -> dict:
    return {"subscriptions": [], "destinations": [{"name": "central", "url": "http://127.0.0.1:8086",
                                                   "database": "fleet", **destination}]}


@pytest.mark.parametrize(("destination", "message"), [
    ({"schedule": ["25:00-26:00"]}, "is not a time of day"),
    ({"schedule": ["02:00"]}, 'a window is "HH:MM-HH:MM"'),
    ({"schedule": ["02:00-02:00"]}, "zero length"),
    ({"schedule": ["02:00-04:00", "03:00-05:00"]}, "windows overlap"),
    ({"schedule": ["23:00-01:00", "00:30-02:00"]}, "windows overlap"),
    ({"schedule": []}, "never send"),
    ({"schedule": {"every": "10m", "for": "20m"}}, "must be shorter than every"),
    ({"schedule": {"every": "10m"}}, "schedule.for: is required"),
    ({"schedule": {"every": "10m", "for": "1m", "at": "02:00"}}, "schedule.at: unknown key"),
    ({"schedule": "always"}, "expected list or dict"),
    # Attack round 10: non-finite and huge durations passed, then /healthz answered 500 and the
    # writer thread failed in a loop (every duration of the configuration is bounded at load).
    ({"schedule": {"every": float("inf"), "for": 1}}, "schedule.every: must be a finite number"),
    ({"schedule": {"every": "nan", "for": 1}}, "schedule.every: invalid duration 'nan'"),
    ({"schedule": {"every": "99999999999999999999h", "for": "1m"}}, "at most 3650 days"),
    ({"schedule": {"every": "1000000000h", "for": "1m"}}, "at most 3650 days"),
    ({"schedule": {"every": "10m", "for": float("nan")}}, "schedule.for: must be a finite number"),
    ({"flush_interval": "inf"}, "flush_interval: invalid duration 'inf'"),
    ({"max_points_per_second": float("inf")}, "max_points_per_second: must be a finite number"),
    ({"schedule": {"every": "10m", "for": 1e-300}}, "schedule.for: must be at least 1ms"),
    ({"timeout": "100us"}, "timeout: must be at least 1ms"),
    ({"max_bytes_per_second": 0}, "must be positive"),
    ({"max_points_per_second": -5}, "must be positive"),
    ({"max_bytes_per_second": "lots"}, "invalid size"),
    ({"ca_file": "/nonexistent/ca.pem", "url": "https://central:8086"}, "does not exist"),
    ({"ca_file": "/etc/hostname", "url": "http://central:8086"}, "only used with an https:// url"),
])
def test_bad_links_are_refused_at_load_with_the_key(destination, message):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.parse(base(**destination))
    assert "destinations[0]." in str(info.value) and message in str(info.value), str(info.value)


def test_a_ca_file_that_holds_no_certificate_is_refused(tmp_path):
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(cfg.ConfigError, match=r"destinations\[0\]\.ca_file: .* holds no usable CA certificate"):
        cfg.parse(base(url="https://central:8086", ca_file=str(junk)))


def test_a_ca_file_of_another_host_is_checked_for_form_only(monkeypatch):
    """The Ansible preflight checks a station's configuration on the controller, where the
    station's CA bundle is not: STATION_BRIDGE_FILES_ELSEWHERE=1 checks the path's form only."""
    remote = base(url="https://central:8086", ca_file="/etc/station-bridge/central-ca.pem")
    with pytest.raises(cfg.ConfigError, match="does not exist"):
        cfg.parse(remote)
    monkeypatch.setenv(cfg.FILES_ELSEWHERE_ENV, "1")
    assert cfg.parse(remote).destinations[0].ca_file == "/etc/station-bridge/central-ca.pem"
    with pytest.raises(cfg.ConfigError, match="must be an absolute path"):
        cfg.parse(base(url="https://central:8086", ca_file="central-ca.pem"))


def test_check_config_names_a_bad_schedule_and_prints_the_new_keys(tmp_path):
    path = tmp_path / "bridge.yml"
    path.write_text(yaml.safe_dump(base(schedule=["14:00-15:00", "02:00-4:30x"])))
    proc = subprocess.run([BRIDGE, "check-config", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "destinations[0].schedule" in proc.stdout + proc.stderr
    path.write_text(yaml.safe_dump(base(schedule={"every": "30m", "for": "10m"}, max_bytes_per_second="64KiB")))
    proc = subprocess.run([BRIDGE, "check-config", "--json", str(path)], capture_output=True, text=True, check=True)
    central = json.loads(proc.stdout)["destinations"][0]
    assert central["schedule"] == {"every_s": 1800.0, "for_s": 600.0}
    assert central["max_bytes_per_second"] == 65536 and central["max_points_per_second"] is None
    assert central["ca_file"] is None


# --- ca_file: a real TLS end in front of a real influxd -------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "server.key", tmp / "server.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_ca_file_is_the_trust_for_an_https_destination(tmp_path, influxd, database):
    cert, key = self_signed(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    proxy = LinkProxy(influxd.port, tls=server)
    try:
        destination = {"url": proxy.url, "database": database}
        trusted = cfg.parse(base(**destination, ca_file=str(cert))).destinations[0]
        untrusted = cfg.parse(base(**destination)).destinations[0]
        t = time.time_ns()
        out = Delivery(InfluxWriter(trusted), 100).deliver(Chunk.of([f"tls,via=ca_file v=1i {t}"]))
        assert out.written == 1 and out.retry is None, out.error
        with pytest.raises(Retryable, match="CERTIFICATE_VERIFY_FAILED"):
            InfluxWriter(untrusted).post(f"tls,via=system v=2i {t + 1}\n".encode())
        assert InfluxWriter(trusted).ping()
        rows = influxd.query('SELECT "v", "via" FROM "tls"', db=database)
        assert [(r["via"], r["v"]) for r in rows] == [("ca_file", 1)]
    finally:
        proxy.close()


# --- a scheduled, paced link end to end -----------------------------------------------------------

CAP = 16_000  # bytes per second on the link
BATCH = 40


def clock(t: float) -> str:
    t %= DAY
    return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{int(t % 60):02d}"


def tick(instrument: str, seq: int, ts: float) -> list[bytes]:
    return [b"kraken_tick", msgpack.packb({"instrument": instrument, "bid": 1.0 + seq / 1e4, "ask": 2.0 + seq / 1e4,
                                           "volume": seq, "seq": seq, "timestamp": ts})]


def scheduled_bridge(tmp_path: Path, proxy: LinkProxy, database: str, endpoint: str,
                     windows: list[str]) -> BridgeProcess:
    return BridgeProcess(tmp_path, None, database, endpoint,
                         destination={"name": "central", "url": proxy.url, "batch_size": BATCH,
                                      "schedule": windows, "max_bytes_per_second": CAP},
                         health={"destination_grace": "10s"})


def test_a_scheduled_paced_link_sends_live_first_within_the_cap_and_nothing_outside(
        tmp_path, influxd, database, endpoint, zmq_context):
    proxy = LinkProxy(influxd.port)
    t0 = math.ceil(time.time())
    opens = [t0 + 9, t0 + 19, t0 + 29]  # room for a slow start, the backlog and validate before the first
    windows = [f"{clock(w)}-{clock(w + 4)}" for w in opens]  # 4 s up, 6 s down
    pub = publisher(zmq_context, endpoint)
    bridge = scheduled_bridge(tmp_path, proxy, database, endpoint, windows)
    bridge.start()
    backlog = 1000
    published: dict[int, float] = {}  # live seq -> when published
    stop = threading.Event()
    try:
        subscribed(pub)
        assert time.time() < opens[0] - 3, "the bridge took too long to start"
        # Down: the backlog arrives and is journaled; /healthz and validate say pending_by_schedule.
        ts = time.time() - 3600
        for i in range(backlog):
            pub.send_multipart(tick("BACKLOG", i, ts + i / 1000))
        wait_for(lambda: bridge.value("bridge_accepted_points_total", destination="central") == backlog, 5,
                 "the backlog accepted")
        status, doc = bridge.health()
        central = doc["destinations"]["central"]
        assert status == 200 and central["state"] == "pending_by_schedule" and central["pending_by_schedule"]
        assert central["next_window"].endswith(clock(opens[0]) + "Z"), central
        assert bridge.value("bridge_destination_pending_by_schedule", destination="central") == 1
        proc = subprocess.run([BRIDGE, "validate", "--json", "--window", "1", str(bridge.path)],
                              capture_output=True, text=True, timeout=30, check=False)
        checks = {c["check"]: c for i in json.loads(proc.stdout)["instances"] for c in i["checks"]}
        assert checks["destination central"]["ok"], checks["destination central"]
        assert "central: pending_by_schedule, next window at" in checks["destination central"]["detail"]
        # ... and its table's row too (the attack of round 10 read "N pending, pending_by_schedule" alone)
        row = next(line for line in table(json.loads(proc.stdout)) if "destination central" in line)
        assert "pending_by_schedule, next window at " + central["next_window"] in row, row
        assert time.time() < opens[0] - 0.2, "the checks of the closed link ran into its window"
        assert proxy.total() == 0, dict(proxy.per_second)  # nothing at all on the link while it was down

        # Up: live ticks (one each 250 ms) must land within 2 s while the backlog drains behind them.
        def live() -> None:
            seq = 0
            while not stop.is_set():
                published[seq] = time.time()
                pub.send_multipart(tick("LIVE", seq, time.time()))
                seq += 1
                stop.wait(0.25)

        wait_for(lambda: time.time() >= opens[0], 10, "the first window")
        feeder = threading.Thread(target=live, daemon=True)
        feeder.start()
        seen: dict[int, float] = {}

        def landed() -> bool:
            for row in influxd.query("""SELECT "seq" FROM "ticks" WHERE "instrument" = 'LIVE'""", db=database):
                seen.setdefault(row["seq"], time.time())
            backlog_rows = influxd.query("""SELECT count("seq") FROM "ticks" WHERE "instrument" = 'BACKLOG'""",
                                         db=database)
            return bool(backlog_rows) and backlog_rows[0]["count"] == backlog and time.time() > opens[1] + 2.5

        wait_for(landed, 25, "the backlog to drain in the second window", interval=0.1)
        stop.set()
        feeder.join()
        # The backlog needed more than one window: the cap held it back, and the first window's
        # live ticks were not behind it.
        in_window = {seq: at for seq, at in published.items()
                     if any(w <= at <= w + 2 for w in opens[:2])}
        assert len(in_window) >= 12
        late = {seq: round(seen.get(seq, math.inf) - at, 2) for seq, at in in_window.items()
                if seen.get(seq, math.inf) - at > 2.0}
        assert not late, f"live ticks later than 2 s while the backlog drained: {late}"
        # Never above the cap in any second (tolerance: one request of BATCH lines and the headers).
        request = BATCH * 110 + 400
        busiest = max(proxy.per_second.values())
        assert busiest <= CAP + request, dict(proxy.per_second)
        assert busiest >= CAP // 2, dict(proxy.per_second)  # the backlog did use the link
        # Nothing on the link between the windows (a request under way at the close may finish).
        for second, sent in proxy.per_second.items():
            assert any(w <= second <= w + 4 for w in opens), (second, sent, opens)
    finally:
        stop.set()
        pub.close(linger=0)
    samples = quiet_ledger(bridge, destinations=("central",), timeout=30)
    assert not ledger_problems(samples, ["central"], ["kraken"])
    total = backlog + len(published)
    assert bridge.value("bridge_written_points_total", destination="central") == total
    rows = influxd.query('SELECT count("seq") FROM "ticks"', db=database)
    assert rows[0]["count"] == total  # every point, once: the same series and time would count once
    assert proxy.lines == total, (proxy.lines, total)  # and each sent once on the link
    assert bridge.stop() == 0
    proxy.close()


def test_a_link_closed_for_hours_journals_everything_and_stops_at_once(tmp_path, influxd, database, endpoint,
                                                                       zmq_context):
    """Down until its window in an hour: the points are journaled (a partial batch too, once its
    flush_interval is over: what waits in memory when a window opens goes first as live, so it
    must be fresh), nothing reaches the link, /healthz is 200 though they age, and SIGTERM does
    not wait for a window (nor for shutdown_timeout)."""
    proxy = LinkProxy(influxd.port)
    opens = time.time() + 3600
    pub = publisher(zmq_context, endpoint)
    bridge = scheduled_bridge(tmp_path, proxy, database, endpoint, [f"{clock(opens)}-{clock(opens + 600)}"])
    bridge.config["health"]["destination_grace"] = "1s"
    bridge.path.write_text(yaml.safe_dump(bridge.config))
    bridge.start()
    try:
        subscribed(pub)
        for i in range(BATCH * 3 + 7):
            pub.send_multipart(tick("CLOSED", i, time.time() - 60 + i / 1000))
        wait_for(lambda: bridge.value("bridge_journal_points", destination="central") == BATCH * 3 + 7, 5,
                 "three batches and the partial one journaled")
        time.sleep(2.5)  # older than destination_grace + flush_interval: a closed link does not mind
        status, doc = bridge.health()
        assert status == 200 and doc["destinations"]["central"]["state"] == "pending_by_schedule", doc
        assert doc["destinations"]["central"]["failing_s"] == 0
        assert bridge.value("bridge_oldest_pending_seconds", destination="central") > 2  # the real age
        started = time.monotonic()
        assert bridge.stop() == 0
        assert time.monotonic() - started < 5
    finally:
        pub.close(linger=0)
        proxy.close()
    assert len(bridge.journal_lines("central")) == BATCH * 3 + 7
    assert proxy.total() == 0
