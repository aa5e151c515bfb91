"""`station-bridge validate` against a real bridge process, a real influxd (auth on, a WRITE-only
writer and a READ-only reader, as on a station) and a real redis-server with ACL users.

Invariants tried here: observe writes nothing anywhere; publish writes only the validation
measurement (tagged validation=demo), never a feed's measurement, never Redis, and never binds
a feed's endpoint (a real publisher holds it); every failure names its cause; the checks fail
when the thing they check is broken (idle feed, dead destination, bridge down).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import redis
import yaml
import zmq
from harness import publisher
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import Influxd, RedisServer, free_port

from station_bridge import fastpath
from station_bridge.metrics import Metrics, parse

BRIDGE = str(Path(sys.executable).with_name("station-bridge"))
WRITER = ("bridge", "writer-pw")
READER = ("grafana", "reader-pw")
REDIS_ADMIN = ("admin", "redis-admin-pw")
REDIS_BRIDGE = ("bridge", "redis-bridge-pw")
DEMO_INSTRUMENTS = {"VALIDATION"}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def station_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = Influxd(tmp_path_factory.mktemp("influxd-validate"), auth=True).start()
    server.query('CREATE DATABASE "tick"')
    server.query('CREATE RETENTION POLICY "standard" ON "tick" DURATION 30d REPLICATION 1 DEFAULT')
    server.query(f"CREATE USER {WRITER[0]} WITH PASSWORD '{WRITER[1]}'")
    server.query(f'GRANT WRITE ON "tick" TO {WRITER[0]}')
    server.query(f"CREATE USER {READER[0]} WITH PASSWORD '{READER[1]}'")
    server.query(f'GRANT READ ON "tick" TO {READER[0]}')
    yield server
    server.stop()


@pytest.fixture(scope="module")
def station_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-validate")).start()
    client = redis.Redis(port=server.port, password=server.password)
    client.execute_command("ACL", "SETUSER", REDIS_ADMIN[0], "on", f">{REDIS_ADMIN[1]}", "~*", "+@all")
    # What roles/redis gives the bridge: its key pattern and the cache's commands only.
    client.execute_command("ACL", "SETUSER", REDIS_BRIDGE[0], "on", f">{REDIS_BRIDGE[1]}", "~latest:*",
                           "-@all", "+ping", "+hset", "+pexpire")
    yield server
    server.stop()


class Publisher(threading.Thread):
    """A feed's real publisher: binds the feed endpoint and sends ticks until stopped."""

    def __init__(self, endpoint: str, topic: str = "kraken_tick", rate: float = 50) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.topic, self.rate = endpoint, topic.encode(), rate
        self.socket = publisher(zmq.Context.instance(), endpoint)  # held for the whole test: nothing else may bind it
        self.stopped = threading.Event()
        self.sent = 0

    def run(self) -> None:
        while not self.stopped.wait(1 / self.rate):
            self.socket.send_multipart([self.topic, msgpack.packb({
                "timestamp": time.time(), "instrument": "XBTEUR", "bid": 1.0, "ask": 1.1, "volume": 3})])
            self.sent += 1
        self.socket.close(linger=0)


class StationBridge:
    """`station-bridge run` as a child process, configured as the bridge role renders an instance."""

    def __init__(self, tmp: Path, influx: Influxd, redis_server: RedisServer, feed: str, *,
                 validation: bool = True, extra_destination: dict | None = None,
                 self_measurement: str = "station_bridge", expected_interval: str | None = None,
                 pythonpath: str | None = None, journal: dict | None = None) -> None:
        self.tmp = tmp
        self.http = f"127.0.0.1:{free_port()}"
        self.validation_endpoint = f"ipc://{tmp}/validation.sock"
        subscriptions = [{
            "name": "kraken", "endpoints": [feed], "topics": ["kraken_tick"], "framing": "msgpack",
            **({"expected_interval": expected_interval} if expected_interval else {}),
            "mapping": {"measurement": "ticks", "tags": ["instrument"],
                        "fields": {"bid": "float", "ask": "float", "volume": "integer"},
                        "time": {"field": "timestamp", "format": "epoch_s"}}}]
        destinations = [{"name": "local", "url": influx.url, "database": "tick", "retention_policy": "standard",
                         "username": WRITER[0], "flush_interval": 0.2}]
        if extra_destination:
            destinations.append(extra_destination)
        self.config = {
            "station": "tst", "subscriptions": subscriptions, "destinations": destinations,
            "cache": {"url": f"redis://127.0.0.1:{redis_server.port}/0", "username": REDIS_BRIDGE[0], "ttl": 600},
            "journal": {"dir": str(tmp / "journal"), **(journal or {})}, "dead_letter": {"dir": str(tmp / "dead")},
            "http": {"listen": self.http},
            "self_metrics": {"interval": "1s", "instance": "kraken", "measurement": self_measurement},
            "shutdown_timeout": 5,
            # The bridge's own validation subscription, as roles/bridge sets it (bridge_validation).
            **({"validation": {"endpoint": self.validation_endpoint}} if validation else {}),
        }
        self.path = tmp / "kraken.yml"
        self.path.write_text(yaml.safe_dump(self.config))
        # The unit's EnvironmentFile, beside the configuration as the bridge role installs it.
        (tmp / "kraken.env").write_text(f"STATION_BRIDGE_LOCAL_PASSWORD={WRITER[1]}\n"
                                        f"STATION_BRIDGE_CACHE_PASSWORD={REDIS_BRIDGE[1]}\n")
        env = dict(os.environ, STATION_BRIDGE_LOCAL_PASSWORD=WRITER[1], STATION_BRIDGE_CACHE_PASSWORD=REDIS_BRIDGE[1],
                   STATION_BRIDGE_CENTRAL_PASSWORD="x", **({"PYTHONPATH": pythonpath} if pythonpath else {}))
        self.log = open(tmp / "bridge.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([BRIDGE, "run", "--config", str(self.path)], stdout=self.log,
                                        stderr=subprocess.STDOUT, env=env)
        wait_for(self._up, 15, "the bridge's /healthz")

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http}/healthz", timeout=1):
                return True
        except OSError as exc:
            return getattr(exc, "code", None) == 503

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        self.log.close()


def validate(*args: str, influx: bool = True, redis_admin: bool = True, stdin: bool = False) -> tuple[int, dict]:
    """Runs the CLI; secrets in the environment, or as JSON on stdin (how the playbook passes them)."""
    env = dict(os.environ)
    for name in ("STATION_BRIDGE_LOCAL_PASSWORD", "STATION_BRIDGE_CACHE_PASSWORD"):
        env.pop(name, None)  # validate reads the unit's .env itself
    flags, secrets = [], {}
    if influx:
        flags += ["--influx-user", READER[0]]
        secrets["influx_password"] = READER[1]
    if redis_admin:
        flags += ["--redis-user", REDIS_ADMIN[0]]
        secrets["redis_password"] = REDIS_ADMIN[1]
    if stdin:
        flags.append("--secrets-stdin")
    else:
        env.update({"STATION_VALIDATE_INFLUX_PASSWORD": READER[1], "STATION_VALIDATE_REDIS_PASSWORD": REDIS_ADMIN[1]})
    proc = subprocess.run([BRIDGE, "validate", "--json", *flags, *args], capture_output=True, text=True,
                          input=json.dumps(secrets) if stdin else None, env=env, timeout=120, check=False)
    assert proc.stdout, proc.stderr
    assert "reader-pw" not in proc.stdout and "redis-admin-pw" not in proc.stdout
    return proc.returncode, json.loads(proc.stdout)


def failed(report: dict) -> dict[str, str]:
    return {c["check"]: c["detail"] for i in report["instances"] for c in i["checks"] if not c["ok"]}


def snapshot(influx: Influxd, redis_server: RedisServer) -> dict:
    """Every measurement's point count in the station's database and every Redis key."""
    counts = {}
    for row in influx.query("SHOW MEASUREMENTS", db="tick"):
        name = row["name"]
        if name in ("station_bridge", "station_bridge_feed"):
            continue  # the bridge's own heartbeat, written every interval whatever validate does
        rows = influx.query(f'SELECT count(*) FROM "standard"."{name}"', db="tick")
        counts[name] = max(v for k, v in rows[0].items() if k.startswith("count_")) if rows else 0
    client = redis.Redis(port=redis_server.port, username=REDIS_ADMIN[0], password=REDIS_ADMIN[1])
    keys = {k.decode(): client.hgetall(k) for k in client.scan_iter(count=1000)}
    return {"influx": counts, "redis": keys}


def demo_points(influx: Influxd) -> int:
    """Points of the validation publisher in any measurement other than station_validation."""
    total = 0
    for row in influx.query("SHOW MEASUREMENTS", db="tick"):
        if row["name"] == "station_validation":
            continue
        for q in (f"""SELECT count(*) FROM "standard"."{row['name']}" WHERE "instrument" = 'VALIDATION'""",
                  f"""SELECT count(*) FROM "standard"."{row['name']}" WHERE "validation" = 'demo'"""):
            rows = influx.query(q, db="tick")
            total += max((v for r in rows for k, v in r.items() if k.startswith("count_")), default=0)
    return total


@pytest.fixture()
def feed() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture()
def live(tmp_path: Path, station_influx: Influxd, station_redis: RedisServer, feed: str):
    publisher = Publisher(feed)
    publisher.start()
    bridge = StationBridge(tmp_path, station_influx, station_redis, feed)
    wait_for(lambda: station_influx.query(
        "SELECT count(bid) FROM \"standard\".\"ticks\" WHERE time > now() - 1m", db="tick"), 15, "live ticks")
    yield bridge, publisher
    bridge.stop()
    publisher.stopped.set()
    publisher.join()


def test_observe_on_a_live_feed_passes_and_writes_nothing(live, station_influx, station_redis):
    bridge, _ = live  # the feed keeps publishing: only its own measurement and cache key may change
    before = snapshot(station_influx, station_redis)
    rc, report = validate(str(bridge.path), "--window", "3")
    assert rc == 0, failed(report)
    inst = report["instances"][0]
    assert inst["instance"] == "kraken" and inst["station"] == "tst"
    (feed_row,) = inst["feeds"]
    assert feed_row["feed"] == "kraken" and feed_row["received"] > 0 and feed_row["landed"] > 0
    # the path the running bridge maps the feed on (its /healthz), in the row and the table
    path = "compiled" if not fastpath.unavailable() else f"python: {fastpath.unavailable()}"
    assert feed_row["path"] == path
    assert any(line.startswith("kraken | feed kraken |") and line.endswith(f"| True | {path}")
               for line in report["table"]), report["table"]
    assert report["table"][0].endswith("| ok | path")
    assert [d["destination"] for d in inst["destinations"]] == ["local"] and inst["destinations"][0]["written"] > 0
    checks = {c["check"]: c for c in inst["checks"]}
    assert checks["self-metrics"]["ok"] and not checks["self-metrics"].get("skipped")
    assert checks["cache"]["ok"] and checks["cache"]["validation_keys"] == 0
    after = snapshot(station_influx, station_redis)
    # Only the live feed wrote (ticks, its latest value); validate itself added nothing.
    assert set(after["influx"]) == set(before["influx"]) and "station_validation" not in after["influx"]
    assert {k: v for k, v in after["influx"].items() if k != "ticks"} == \
        {k: v for k, v in before["influx"].items() if k != "ticks"}
    assert set(after["redis"]) == set(before["redis"])
    assert demo_points(station_influx) == 0


def test_a_feed_on_python_where_the_wheel_carries_the_extension_fails_validate(tmp_path, station_influx,
                                                                              station_redis, feed):
    """Issue 22, no silent slow path: the bridge runs from a package whose extension file is there
    but does not load (a broken install, a foreign platform): it maps on Python, about 4x the CPU,
    and validate fails naming it (a pure wheel, built so on purpose, carries no such file)."""
    if not fastpath.extension_shipped():
        pytest.skip("this checkout's package carries no compiled extension (a pure build)")
    broken = tmp_path / "lib" / "station_bridge"
    shutil.copytree(Path(fastpath.__file__).parent, broken, ignore=shutil.ignore_patterns("__pycache__"))
    for library in broken.glob("_fastpath*.so"):
        library.write_bytes(b"not a shared object")
    publisher = Publisher(feed)
    publisher.start()
    bridge = StationBridge(tmp_path, station_influx, station_redis, feed, pythonpath=str(broken.parent))
    try:
        wait_for(lambda: station_influx.query(
            "SELECT count(bid) FROM \"standard\".\"ticks\" WHERE time > now() - 1m", db="tick"), 15, "live ticks")
        rc, report = validate(str(bridge.path), "--window", "2")
    finally:
        bridge.stop()
        publisher.stopped.set()
        publisher.join()
    assert rc != 0
    (row,) = report["instances"][0]["feeds"]
    assert row["path"].startswith("python: the compiled extension is not installed"), row
    assert "although its mapping is on the compiled path" in failed(report)["feed kraken path"]


def test_observe_reports_an_idle_feed_and_fails_one_overdue_for_its_cadence(tmp_path, station_influx,
                                                                             station_redis, feed):
    """Issue 24: an idle feed halted the rollout (most instruments of an observatory publish only
    in a campaign). Without a declared cadence an idle feed is reported, not failed; with
    `expected_interval` it fails once 3 intervals passed without a message (the health model)."""
    # A renamed self-metrics measurement: validate looks for it, and tells the playbook to ask
    # central for it (it hard-coded station_bridge).
    bridge = StationBridge(tmp_path, station_influx, station_redis, feed, self_measurement="kraken_bridge")
    try:
        # The directory, as the bridge role lays it out; the reader's password on stdin.
        rc, report = validate(str(tmp_path), "--window", "1", "--max-age", "5", stdin=True)
    finally:
        bridge.stop()
    assert rc == 0, failed(report)
    checks = {c["check"]: c for c in report["instances"][0]["checks"]}
    assert checks["feed kraken"]["idle"] and "no cadence declared" in checks["feed kraken"]["detail"]
    assert any(line.startswith("kraken | feed kraken | received 0 |") for line in report["table"]), report["table"]
    assert checks["self-metrics"]["ok"] and not checks["self-metrics"].get("skipped")  # the stdin password worked
    assert report["self_metrics"] == [{"station": "tst", "measurement": "kraken_bridge"}]
    cadenced = tmp_path / "cadenced"
    cadenced.mkdir()
    bridge = StationBridge(cadenced, station_influx, station_redis, feed, expected_interval="1s")
    try:
        time.sleep(3.5)  # 3 intervals since start without a message
        rc, report = validate(str(bridge.path), "--window", "1", "--max-age", "5")
    finally:
        bridge.stop()
    assert rc == 1
    problems = failed(report)
    assert set(problems) == {"feed kraken"}, problems
    assert "unhealthy: no message for" in problems["feed kraken"] and "expected every 1 s" in problems["feed kraken"]
    assert report["problems"] == [f"kraken: feed kraken: {problems['feed kraken']}"]


def validate_with_a_dead_central(tmp_path: Path, influx: Influxd, redis_server: RedisServer, feed: str,
                                 *flag_sets: list[str], journal: dict | None = None,
                                 **destination: object) -> list[tuple[int, dict]]:
    """A live feed, a bridge whose destination `central` answers nothing; once it is failing,
    validate (window 2 s) run once per set of flags."""
    dead = {"name": "central", "url": f"http://127.0.0.1:{free_port()}", "database": "fleet",
            "username": "station-tst", "flush_interval": 0.2, "max_backoff": 1.0, **destination}
    publisher = Publisher(feed)
    publisher.start()
    bridge = StationBridge(tmp_path, influx, redis_server, feed, extra_destination=dead, journal=journal)
    try:
        wait_for(lambda: destination_failing(bridge, "central"), 15, "the dead destination to be noticed")
        return [validate(str(bridge.path), "--window", "2", *flags) for flags in flag_sets]
    finally:
        bridge.stop()
        publisher.stopped.set()
        publisher.join()


def test_observe_names_a_failing_destination(tmp_path, station_influx, station_redis, feed):
    (rc, report), (declared_rc, declared) = validate_with_a_dead_central(
        tmp_path, station_influx, station_redis, feed, [], ["--declared-down", "central"])
    assert rc == 1
    problems = failed(report)
    assert set(problems) == {"destination central"}, problems
    assert "failing" in problems["destination central"] and "pending" in problems["destination central"]
    # Declared down by the operator (a central lost during a campaign): reported, not failed, while
    # its journal keeps the points.
    assert (declared_rc, failed(declared)) == (0, {}), declared
    (row,) = [d for i in declared["instances"] for d in i["destinations"] if d["destination"] == "central"]
    assert row["state"] == "declared_down" and row["pending"] > 0, row
    detail = {c["check"]: c["detail"] for i in declared["instances"] for c in i["checks"]}["destination central"]
    assert detail.startswith("declared down: ") and "kept in the journal" in detail, detail


def test_a_destination_declared_down_that_drops_points_still_fails(tmp_path, station_influx, station_redis, feed):
    """Declaring a central down excuses its failing, never a lost point: with its journal full
    (spool_full), validate --declared-down fails and says why."""
    ((rc, report),) = validate_with_a_dead_central(tmp_path, station_influx, station_redis, feed,
                                                   ["--declared-down", "central"], batch_size=10,
                                                   journal={"max_bytes": 4096})
    assert rc == 1
    problems = failed(report)
    assert set(problems) == {"destination central"}, problems
    assert problems["destination central"].startswith("declared down, and "), problems


def health_state(bridge: StationBridge) -> dict:
    """The bridge's /healthz document, whatever its status."""
    try:
        with urllib.request.urlopen(f"http://{bridge.http}/healthz", timeout=1) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def destination_failing(bridge: StationBridge, name: str) -> bool:
    state = health_state(bridge)
    return bool(state.get("destinations", {}).get(name, {}).get("failing_s"))  # seconds failing, 0 when not


def test_publish_writes_only_the_validation_measurement_never_a_feeds_endpoint_nor_redis(
        live, station_influx, station_redis):
    bridge, publisher = live  # the feed's real publisher holds its endpoint throughout
    before_redis = snapshot(station_influx, station_redis)["redis"]
    rc, report = validate(str(bridge.path), "--mode", "publish", "--count", "250", "--rate", "2000")
    assert rc == 0, failed(report)
    checks = {c["check"]: c for c in report["instances"][0]["checks"]}
    assert checks["validation ticks"]["published"] == 250 == checks["validation ticks"]["landed"]
    assert checks["validation ticks"]["received"] == 250
    # The destination's counters are read once the ticks are in: they count them.
    (local,) = report["instances"][0]["destinations"]
    assert local["written"] >= 250 and local["ok"], local
    rows = station_influx.query('SELECT * FROM "standard"."station_validation"', db="tick")
    assert len(rows) == 250
    assert {(r["validation"], r["station"], r["instrument"], r["instance"]) for r in rows} == {
        ("demo", "tst", "VALIDATION", "kraken")}
    # What central must hold, from the bridge's one definition (the playbook's query reads it).
    assert report["validation"] == {"measurement": "station_validation", "field": "bid", "tags": {"validation": "demo"}}
    assert demo_points(station_influx) == 0  # nothing in ticks or any other measurement
    after_redis = snapshot(station_influx, station_redis)["redis"]
    assert not [k for k in after_redis if "station_validation" in k or "VALIDATION" in k]
    assert set(after_redis) == set(before_redis)
    assert publisher.is_alive()  # its endpoint was never taken from it


def test_publish_is_refused_without_a_validation_subscription(tmp_path, station_influx, station_redis, feed):
    bridge = StationBridge(tmp_path, station_influx, station_redis, feed, validation=False)
    try:
        rc, report = validate(str(bridge.path), "--mode", "publish", "--count", "10")
    finally:
        bridge.stop()
    assert rc == 2 and report["ok"] is False
    assert "no `validation` subscription" in report["error"] and "never to a feed's" in report["error"]


def test_a_stopped_bridge_fails_alive(tmp_path, station_influx, station_redis, feed):
    bridge = StationBridge(tmp_path, station_influx, station_redis, feed)
    bridge.stop()
    rc, report = validate(str(bridge.path), "--window", "0")
    assert rc == 1
    assert set(failed(report)) == {"alive"} and "no answer from" in failed(report)["alive"]


def test_a_configuration_error_is_reported(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("subscriptions: []\ndestinations: []\n")
    rc, report = validate(str(path), influx=False, redis_admin=False)
    assert rc == 2 and "destinations" in report["error"]


LABEL_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), LABEL_TEXT, max_size=4),
       st.one_of(st.integers(-(2**53), 2**53), st.floats(allow_nan=False)))
def test_parse_reads_back_what_the_bridge_exposes(labels, value):
    metrics = Metrics()
    metrics.inc("bridge_test_total", value, **labels)
    parsed = parse(metrics.render())
    assert parsed == {("bridge_test_total", tuple(sorted(labels.items()))): float(value)}


def test_validate_counts_the_measurements_check_config_says_a_subscription_writes(tmp_path):
    """Issue 21: with binning and keep_raw: false the bridge writes `ticks_binned` only, and
    validate counted `ticks`. validate now asks the effective configuration (check-config --json)."""
    from station_bridge.config import parse
    from station_bridge.validate import measurements
    data = {"subscriptions": [{"name": "kraken", "endpoints": ["tcp://127.0.0.1:1"],
                               "mapping": {"measurement": "ticks", "fields": {"bid": "float"}},
                               "binning": {"interval": "1s", "fields": ["bid"], "keep_raw": False}}],
            "destinations": [{"name": "local", "url": "http://127.0.0.1:1", "database": "tick"}]}
    path = tmp_path / "b.yml"
    path.write_text(yaml.safe_dump(data))
    proc = subprocess.run([BRIDGE, "check-config", "--json", str(path)], capture_output=True, text=True, check=True)
    effective = {s["name"]: s["measurements"] for s in json.loads(proc.stdout)["subscriptions"]}
    assert measurements(parse(data)) == effective == {"kraken": ["ticks_binned"]}


def test_validate_fails_on_every_problem_healthz_names(tmp_path, station_influx, station_redis, feed):
    """The attacker's case: /healthz 503 (the ledger cannot be written) while validate said every
    check passed. validate now fails on every problem the health document names."""
    bridge = StationBridge(tmp_path, station_influx, station_redis, feed)
    try:
        (tmp_path / "journal" / "ledger.json.tmp").mkdir()  # the ledger's next write fails
        wait_for(lambda: destination_problem(bridge, "ledger"), 15, "the ledger problem in /healthz")
        rc, report = validate(str(bridge.path), "--window", "1")
    finally:
        bridge.stop()
        (tmp_path / "journal" / "ledger.json.tmp").rmdir()
    assert rc == 1
    problems = failed(report)
    assert "bridge health" in problems and "ledger" in problems["bridge health"], problems


def destination_problem(bridge: StationBridge, part: str) -> bool:
    return any(p.get("part") == part for p in health_state(bridge).get("problems", []))


def test_observe_fails_when_what_the_feed_mapped_is_not_queryable(tmp_path, station_influx, station_redis, feed):
    """Round 5: a proxy in front of influxd that answers 204 to every write and stores nothing.
    Before: validate passed (the bridge's acknowledgements said written; the landed count was
    reported, never checked). Now a feed's points mapped in the window must be queryable."""
    from types import SimpleNamespace

    from front import Front
    front = Front(station_influx.url)
    publisher = Publisher(feed)
    publisher.start()
    bridge = StationBridge(tmp_path, SimpleNamespace(url=front.url), station_redis, feed)  # type: ignore[arg-type]
    try:
        wait_for(lambda: station_influx.query(
            "SELECT count(bid) FROM \"standard\".\"ticks\" WHERE time > now() - 1m", db="tick"), 15, "live ticks")
        rc, report = validate(str(bridge.path), "--window", "2", "--timeout", "3")
        assert rc == 0, failed(report)  # through the proxy, storing: every mapped point is queryable
        check = next(c for c in report["instances"][0]["checks"] if c["check"] == "feed kraken landed")
        assert check["mapped"] > 0 and check["landed"] >= check["mapped"], check
        front.mode = "blackhole"
        rc, report = validate(str(bridge.path), "--window", "2", "--timeout", "3")
        assert rc == 1, report
        problems = failed(report)
        assert "feed kraken landed" in problems and "queryable" in problems["feed kraken landed"], problems
        assert "destination local" not in problems  # the bridge's own view: acknowledged, written
        # without a reader it says it cannot check, and does not pretend
        rc, report = validate(str(bridge.path), "--window", "1", influx=False)
        check = next(c for c in report["instances"][0]["checks"] if c["check"] == "feed kraken landed")
        assert check["ok"] and check.get("skipped") and "not checked" in check["detail"], check
    finally:
        bridge.stop()
        publisher.stopped.set()
        publisher.join()
        front.server.shutdown()


def test_the_validation_key_adds_the_bridges_own_validation_subscription_and_check_config_publishes_it(tmp_path):
    """Issue 23: the validation subscription is defined once, in the bridge; a configuration says
    only whether and where (`validation: {endpoint}`). check-config --json publishes it."""
    feed = {"name": "kraken", "endpoints": ["tcp://127.0.0.1:1"],
            "mapping": {"measurement": "ticks", "fields": {"bid": "float"}}}
    data = {"station": "tst", "subscriptions": [feed],
            "destinations": [{"name": "local", "url": "http://127.0.0.1:1", "database": "tick"}],
            "self_metrics": {"instance": "kraken"}, "validation": {"endpoint": f"ipc://{tmp_path}/v.sock"}}

    def check(config: dict) -> tuple[int, str]:
        path = tmp_path / "b.yml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.run([BRIDGE, "check-config", "--json", str(path)], capture_output=True, text=True)
        return proc.returncode, proc.stdout + proc.stderr

    rc, out = check(data)
    assert rc == 0, out
    effective = json.loads(out)
    assert effective["validation"] == {"endpoint": f"ipc://{tmp_path}/v.sock", "subscription": "validation",
                                       "topic": "validation", "measurement": "station_validation", "field": "bid",
                                       "tags": {"validation": "demo"}}
    feed_sub, sub = effective["subscriptions"]
    assert feed_sub["name"] == "kraken" and sub["name"] == "validation"
    assert sub["endpoints"] == [f"ipc://{tmp_path}/v.sock"] and sub["bind"] and sub["topics"] == ["validation"]
    assert sub["measurements"] == ["station_validation"] and not sub["cache"]
    assert sub["static_tags"] == {"validation": "demo", "instance": "kraken", "station": "tst"}
    assert "bid" in sub["fields"]
    # Without the key: no validation subscription, nothing bound.
    rc, out = check({k: v for k, v in data.items() if k != "validation"})
    assert rc == 0 and json.loads(out)["validation"] is None
    assert [s["name"] for s in json.loads(out)["subscriptions"]] == ["kraken"]
    # A feed named `validation`, a wildcard endpoint, a feed's endpoint: refused, named.
    rc, out = check({**data, "subscriptions": [{**feed, "name": "validation"}]})
    assert rc != 0 and "belongs to the bridge's validation subscription" in out, out
    rc, out = check({**data, "validation": {"endpoint": "tcp://127.0.0.1:*"}})
    assert rc != 0 and "validation.endpoint" in out, out
    rc, out = check({**data, "validation": {"endpoint": "tcp://127.0.0.1:1"}})
    assert rc != 0 and "never shares a feed's endpoint" in out, out
    rc, out = check({**data, "validation": {"endpoint": f"ipc://{tmp_path}/v.sock", "measurement": "x"}})
    assert rc != 0 and "validation.measurement: unknown key" in out, out
