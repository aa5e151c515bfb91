"""roles/victoriametrics as a central: services and flags, loopback-only storage, vmauth's per-station
credentials, and a real station bridge (this checkout's, on the controller) forwarding to it over
the lab network with numeric_only and time_resolution ms, as the fleet configures a VM central."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import msgpack
import pytest
import zmq
from conftest import ROOT
from harness import BridgeProcess, quiet_ledger, wait_for
from servers import Influxd, free_port
from station_bridge.demo import wait_for_subscriber
from station_bridge.metrics import value
from verifier import http, run_playbook

VM = "http://127.0.0.1:8428"
AMS = ("station-ams", "molecule-vm-ams-pw")
BCN = ("station-bcn", "molecule-vm-bcn-pw")
READER = ("grafana", "molecule-vm-grafana-pw")
MAPPING = {"measurement": "obs", "tags": ["inst"], "fields": {"v": "float", "n": "integer", "note": "string"},
           "time": {"field": "t", "format": "epoch_ns"}}


@pytest.fixture(scope="module")
def vmauth_url(host) -> str:
    address = host.interface("eth0").addresses[0]
    return f"http://{address}:8427"


def export(host, match: str) -> list[dict]:
    """The export API (no query delay) on the central's loopback, after a flush; read until two
    reads a second apart agree (rows reach the searchable storage a moment after the write)."""
    previous = None
    for _ in range(30):
        http(host, "GET", VM + "/internal/force_flush")
        answer = http(host, "POST", VM + "/api/v1/export", {"match[]": match})
        assert answer.status == 200, answer
        found = sorted((json.loads(line) for line in answer.body.splitlines() if line.strip()),
                       key=lambda s: json.dumps(s["metric"], sort_keys=True))
        if found and found == previous:
            return found
        previous = found
        time.sleep(1)
    return previous or []


def vm_requests(host) -> int:
    for line in http(host, "GET", VM + "/metrics").body.splitlines():
        if line.startswith('vm_http_requests_total{path="/influx/write"'):
            return int(float(line.rpartition(" ")[2]))
    return 0


def publish(endpoint: str, records: list[dict], topic: bytes = b"obs") -> None:
    context = zmq.Context()
    socket = context.socket(zmq.XPUB)
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.bind(endpoint)
    assert wait_for_subscriber(socket, topic, 15), "the bridge did not subscribe"
    for record in records:
        socket.send_multipart([topic, msgpack.packb(record)])
    socket.close(linger=10_000)
    context.term()


def wait_received(bridge: BridgeProcess, subscription: str, n: int) -> None:
    """Until the bridge has taken in all `n` messages: the ledger also closes, trivially, while the
    messages are still on their way (on a loaded machine it did, with nothing written yet)."""
    wait_for(lambda: value(bridge.samples(), "bridge_received_messages_total", subscription=subscription) >= n, 30,
             f"{n} messages received on {subscription}")


def read_api(vmauth_url: str, path: str, params: dict[str, str]) -> dict:
    """The query or export API as Grafana reaches it: through vmauth from another host (this
    controller), with the reader's credential."""
    request = urllib.request.Request(f"{vmauth_url}{path}", data=urllib.parse.urlencode(params).encode())
    request.add_header("Authorization", "Basic " + base64.b64encode(":".join(READER).encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read().decode()
    return json.loads(body) if path != "/api/v1/export" else {"series": [json.loads(x) for x in body.splitlines() if x]}


@pytest.fixture()
def bridge(tmp_path, vmauth_url) -> Iterator[BridgeProcess]:
    """A station bridge (code ams) whose one destination is the central's vmauth."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    dest = {"name": "central_vm", "url": vmauth_url + "/influx", "database": "fleet", "username": AMS[0],
            "batch_size": 200, "max_backoff": "1s", "numeric_only": True, "time_resolution": "ms"}
    process = BridgeProcess(tmp_path, None, "fleet", endpoint, destination=dest, shutdown_timeout=2,
                            subscription={"name": "obs", "topics": ["obs"], "mapping": MAPPING})
    process.endpoint = endpoint  # type: ignore[attr-defined]
    # This checkout's bridge, whatever the virtualenv's editable install points at.
    process.env["PYTHONPATH"] = str(ROOT / "bridge" / "src")
    process.env["STATION_BRIDGE_CENTRAL_VM_PASSWORD"] = AMS[1]
    yield process
    if process.alive:
        process.kill()


def test_services_and_flags(host):
    for unit in ("victoria-metrics", "vmauth"):
        assert host.service(unit).is_running and host.service(unit).is_enabled
    flags = host.check_output("cat /proc/$(systemctl show victoria-metrics -p MainPID --value)/cmdline | tr '\\0' ' '")
    for flag in ("-dedup.minScrapeInterval=1ms", "-retentionPeriod=2y", "-httpListenAddr=127.0.0.1:8428"):
        assert flag in flags, flags
    assert host.file("/etc/victoria-metrics/vmauth.yml").mode == 0o640


def test_the_operators_playbook_converges_it_the_same(host, tmp_path):
    """playbooks/central.yml (what site.yml and rollout.yml run on a central), with the fleet's variables
    an operator writes (central.yml next to this file: the entry with central_backend: victoriametrics, its
    retention, the stations' writer passwords) and the host in group `central` beside two stations (never
    contacted): nothing to change on the host the role converged (the idempotence step's check, on the
    rollout's path). vmauth's listen address comes from the entry's url, its users from the stations'
    passwords, the retention from the entry. One idempotent pass of the role: about 20 s."""
    (tmp_path / "fleet.yml").write_text(json.dumps({"all": {"children": {
        "central": {"hosts": {"station-stack-victoriametrics": {}}},
        "stations": {"hosts": {"ams": {"station_code": "ams"}, "bcn": {"station_code": "bcn"}}}}}}))
    run = run_playbook(ROOT / "playbooks" / "central.yml", "central.yml", "-i", str(tmp_path / "fleet.yml"),
                       "-e", json.dumps({"fleet_station_passwords": {"ams": AMS[1], "bcn": BCN[1]},
                                         "influxdb_reader_password": READER[1]}))
    assert run.rc == 0, json.dumps(run.output)[-3000:]
    assert run.changed == set(), run.changed
    ran = {t["task"]["name"] for play in run.output["plays"] for t in play["tasks"]
           if any(not r.get("skipped") for r in t["hosts"].values())}
    assert {"victoriametrics : Render vmauth's users (one per station)",
            "victoriametrics : Wait until vmauth refuses an unauthenticated write"} <= ran, ran


def test_storage_on_loopback_only_and_vmauth_open(host):
    listening = host.check_output("ss -Hltn 'sport = :8428'")
    assert {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()} == {"127.0.0.1"}, listening
    assert host.check_output("ss -Hltn 'sport = :8427'").split()[3].startswith(("0.0.0.0:", "*:")), "vmauth"


def test_units_exposure_at_most_3(host):
    scores = {}
    for unit in ("victoria-metrics.service", "vmauth.service"):
        out = host.check_output(f"systemd-analyze security {unit} --no-pager")
        scores[unit] = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print("systemd-analyze security:", json.dumps(scores))
    assert all(score <= 3.0 for score in scores.values()), scores


def test_a_station_cannot_write_as_another_nor_read(host, vmauth_url):
    t = time.time_ns()
    # ams claims to be bcn: vmauth's route for ams sets station=ams whatever the line says.
    assert http(host, "POST", vmauth_url + "/influx/write", {"db": "fleet"},
                f"spoof,station=bcn v=1 {t}", auth=AMS).status == 204
    assert http(host, "POST", vmauth_url + "/influx/write", {"db": "fleet"},
                f"spoof v=2 {t}", auth=BCN).status == 204
    stations = sorted(s["metric"]["station"] for s in export(host, '{__name__="spoof_v"}'))
    assert stations == ["ams", "bcn"], stations
    assert http(host, "POST", vmauth_url + "/influx/write", {"db": "fleet"}, f"spoof v=3 {t}",
                auth=(AMS[0], "wrong")).status in (400, 401)
    assert http(host, "POST", vmauth_url + "/influx/write", {"db": "fleet"}, f"spoof v=3 {t}").status == 401
    # A station writes; it neither reads nor exports (not even its own series).
    assert http(host, "POST", vmauth_url + "/api/v1/export", {"match[]": '{__name__="spoof_v"}'},
                auth=AMS).status in (400, 401, 403)
    # The reader reads through vmauth, and cannot write.
    assert http(host, "GET", vmauth_url + "/api/v1/query", {"query": "1"}, auth=READER).status == 200
    assert http(host, "POST", vmauth_url + "/influx/write", {"db": "fleet"}, f"spoof v=4 {t}",
                auth=READER).status in (400, 401, 403)


DUAL = {"measurement": "dual", "tags": ["inst"],
        "fields": {"v": "float", "n": "integer", "ok": "boolean", "note": "string"},
        "time": {"field": "t", "format": "epoch_ns"}}
# When the stations of the next test last wrote their self-metrics (the overview test reads them).
SELF_METRICS: dict[str, float] = {}


def test_stations_forward_to_an_influxdb_and_a_victoriametrics_central_at_once(host, vmauth_url, tmp_path):
    """Two stations' bridges (ams, bcn; this checkout's, on the controller), each with two centrals:
    a real InfluxDB (influxd on the controller, all fields) and this VictoriaMetrics through vmauth
    (numeric_only, time_resolution ms), as the fleet configures one central of each kind. Per
    station and field, VictoriaMetrics holds as many samples as InfluxDB landed for each numeric
    (and boolean) field; the string field is in InfluxDB, nowhere in VictoriaMetrics (not as 0),
    and counted dropped for that destination alone. Their self-metrics feed the overview test."""
    central = Influxd(tmp_path / "influxd").start()
    central.query("CREATE DATABASE fleet")
    n = 200
    base = time.time_ns() // 1_000_000 * 1_000_000 - 60_000_000_000
    bridges = {}
    try:
        for code, credential in (("ams", AMS), ("bcn", BCN)):
            (tmp_path / code).mkdir()
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            vm = {"name": "central_vm", "url": vmauth_url + "/influx", "database": "fleet", "username": credential[0],
                  "batch_size": 200, "max_backoff": "1s", "numeric_only": True, "time_resolution": "ms"}
            process = BridgeProcess(tmp_path / code, None, "fleet", endpoint, station=code, shutdown_timeout=2,
                                    destination={"name": "central", "url": central.url, "max_backoff": "1s"},
                                    destinations_extra=[vm], self_metrics={"interval": "1s", "instance": "dual"},
                                    subscription={"name": "dual", "topics": ["dual"], "mapping": DUAL})
            process.env["PYTHONPATH"] = str(ROOT / "bridge" / "src")
            process.env["STATION_BRIDGE_CENTRAL_VM_PASSWORD"] = credential[1]
            bridges[code] = (process.start(), endpoint)
        for code, (_, endpoint) in bridges.items():
            publish(endpoint, [{"t": base + i * 2_000_000, "inst": f"{'AB'[i % 2]}-{base}", "v": i / 8, "n": i,
                                "ok": i % 3 == 0, "note": f"{code} {i}"} for i in range(n)], topic=b"dual")
        for process, _ in bridges.values():
            wait_received(process, "dual", n)
            samples = quiet_ledger(process, ("central", "central_vm"), ("dual",), timeout=60)
            assert value(samples, "bridge_dropped_fields_total", destination="central_vm", reason="non_numeric") == n
            assert value(samples, "bridge_dropped_fields_total", destination="central", reason="non_numeric") == 0
        # Two self-metrics reports after the data (and a rate's two samples) for the overview.
        time.sleep(2)
        for process, _ in bridges.values():
            assert process.stop() == 0
        SELF_METRICS["written"] = time.time()
        counted = central.query(f"SELECT count(*) FROM dual WHERE inst =~ /-{base}$/ GROUP BY station", db="fleet")
        landed = {(row["station"], field.removeprefix("count_")): row[field]
                  for row in counted for field in row if field.startswith("count_")}
        assert landed == {(code, f): n for code in bridges for f in ("v", "n", "ok", "note")}, landed
        http(host, "GET", VM + "/internal/force_flush")
        match = f'{{__name__=~"dual_.*",inst=~"[AB]-{base}"}}'
        series = read_api(vmauth_url, "/api/v1/export", {"match[]": match})["series"]
        in_vm: dict[tuple[str, str], int] = {}
        for s in series:
            key = (s["metric"]["station"], s["metric"]["__name__"].removeprefix("dual_"))
            in_vm[key] = in_vm.get(key, 0) + len(s["values"])
        print("per station and field, InfluxDB:", landed, "VictoriaMetrics:", in_vm)
        assert in_vm == {key: count for key, count in landed.items() if key[1] != "note"}, in_vm
    finally:
        for process, _ in bridges.values():
            if process.alive:
                process.kill()
        central.stop()


def test_forwarded_points_land_per_numeric_field_and_strings_are_counted(host, bridge):
    """Per series and field, as many samples as numeric fields sent; the string field nowhere
    (not as 0), counted by the bridge; the station label is the credential's."""
    n = 300
    base = time.time_ns() // 1_000_000 * 1_000_000 - 30_000_000_000
    records = [{"t": base + i * 2_000_000, "inst": ("A", "B")[i % 2], "v": i / 4, "n": i, "note": f"text {i}"}
               for i in range(n)]
    bridge.start()
    publish(bridge.endpoint, records)
    wait_received(bridge, "obs", n)
    samples = quiet_ledger(bridge, ("central_vm",), ("obs",), timeout=60)
    assert value(samples, "bridge_written_points_total", destination="central_vm") == n
    assert value(samples, "bridge_dropped_fields_total", destination="central_vm", reason="non_numeric") == n
    series = export(host, '{__name__=~"obs_.*"}')
    counts = {(s["metric"]["__name__"], s["metric"]["inst"], s["metric"]["station"]): len(s["values"])
              for s in series}
    assert counts == {(f"obs_{f}", inst, "ams"): n // 2 for f in ("v", "n") for inst in ("A", "B")}, counts
    got = sorted(v for s in series if s["metric"]["__name__"] == "obs_v" for v in s["values"])
    assert got == sorted(i / 4 for i in range(n))
    assert bridge.stop() == 0


def test_the_validation_finds_a_stations_self_metrics_through_the_export_api(host, bridge, tmp_path):
    """playbooks/tasks/central-vm-received.yml (the rollout's and validate.yml's question to a
    VictoriaMetrics central) against a real bridge's self-metrics: found for the station that
    forwards them (under the label vmauth set), not found for a station that sent nothing."""
    started = time.time_ns()
    bridge.config["self_metrics"] = {"interval": "1s", "instance": "obs"}
    bridge.config["station"] = "ams"
    bridge.path.write_text(json.dumps(bridge.config))
    bridge.start()
    wait_for(lambda: value(bridge.samples(), "bridge_written_points_total", destination="central_vm") >= 2, 30,
             "self-metrics forwarded")
    assert bridge.stop() == 0

    def check(station: str, retries: int) -> int:
        extra = tmp_path / f"check-{station}.json"
        extra.write_text(json.dumps({
            "validate_report": {"started_ns": started, "self_metrics": [{"station": station,
                                                                         "measurement": "station_bridge"}]},
            "validate_centrals": [{"name": "central_vm", "host": host.backend.host, "backend": "victoriametrics"}],
            "validate_central_retries": retries}))
        scenario = ROOT / "molecule" / "victoriametrics"
        return run_playbook(scenario / "check-received.yml", str(extra)).rc

    assert check("ams", 30) == 0
    assert check("zzz", 1) != 0


def test_a_bridge_killed_mid_replay_leaves_no_duplicate_timestamp(host, bridge):
    """Points logged while the central was unreachable, a SIGKILL while they are replayed (some
    acknowledged, the segment not), a restart: every timestamp once in the export."""
    n = 3000
    base = time.time_ns() // 1_000_000 * 1_000_000 - 120_000_000_000
    records = [{"t": base + i * 1_000_000, "inst": "R", "v": float(i), "n": i, "note": "x"} for i in range(n)]
    reachable = bridge.config["destinations"][0]["url"]
    bridge.config["destinations"][0]["url"] = "http://127.0.0.1:9/influx"
    bridge.path.write_text(json.dumps(bridge.config))
    bridge.start()
    publish(bridge.endpoint, records)
    wait_for(lambda: value(bridge.samples(), "bridge_pending_points", destination="central_vm") == n, 30,
             "the points logged")
    bridge.kill()
    bridge.config["destinations"][0].update(url=reachable, batch_size=50, max_points_per_second=1000)
    bridge.path.write_text(json.dumps(bridge.config))
    before = vm_requests(host)
    bridge.start()
    wait_for(lambda: vm_requests(host) >= before + 10, 30, "the replay under way", interval=0.05)
    assert value(bridge.samples(), "bridge_written_points_total", destination="central_vm") < n
    bridge.kill()
    bridge.start()
    quiet_ledger(bridge, ("central_vm",), ("obs",), timeout=60)
    # The journal keeps its progress per acknowledged request: only a request in flight at the kill
    # is sent again, and a kill between two requests resends nothing (the deduplication of resent
    # points is proven against the real server in bridge/tests/test_backend.py). What must hold
    # either way: the replay was cut (asserted above), then every timestamp lands exactly once.
    print(f"requests after the kill: {vm_requests(host) - before} for {n // 50} batches")
    (exported,) = export(host, '{__name__="obs_v",inst="R"}')
    stamps = exported["timestamps"]
    assert len(stamps) == len(set(stamps)) == n
    assert bridge.stop() == 0


def test_migrate_a_central_influxdbs_history_and_compare_counts(host, vmauth_url, tmp_path):
    """playbooks/migrate-to-victoriametrics.yml against a real central InfluxDB (influxd with auth
    on the controller, on the lab network's side): every numeric and boolean field copied with
    equal counts per measurement and field, the string field counted and not copied, from the fleet's
    retention policy (long_term: the database has no autogen) by default; then two points of one series
    5 ns apart (one in VictoriaMetrics) make the playbook fail, naming it; and a source with no point
    fails unless migrate_allow_empty is set."""
    gateway = host.check_output("ip -4 route show default").split()[2]
    central = Influxd(tmp_path / "influxd", auth=True)
    config = central.workdir / "influxdb.conf"
    config.write_text(config.read_text().replace(f'"127.0.0.1:{central.port}"', f'"{gateway}:{central.port}"'))
    central.url = f"http://{gateway}:{central.port}"
    central.start()
    try:
        database = f"history_{int(time.time())}"  # a rerun's copy apart from an earlier one's
        # Like the fleet's central database: long_term (fleet_retention_policy) its only retention policy.
        central.query(f"CREATE DATABASE {database} WITH DURATION 260w NAME long_term")
        t = time.time_ns() // 1_000_000 * 1_000_000 - 6 * 3600 * 10**9
        lines = "\n".join(f"history,station={('ams', 'bcn')[i % 2]},inst=I{i % 5} v={i / 3},n={i}i,"
                          f"ok={str(i % 4 == 0).lower()},note=\"n{i}\" {t + i * 7_000_000}" for i in range(3000))
        assert central.write(lines, database)[0] == 204
        extra = ("-e", f"migrate_influx_url={central.url}", "-e", f"migrate_database={database}",
                 "-e", "migrate_influx_user=admin", "-e", f"migrate_influx_password={central.admin[1]}",
                 "-e", "migrate_hosts=all")
        migrated = run_playbook(ROOT / "playbooks" / "migrate-to-victoriametrics.yml", "central.yml", *extra)
        assert migrated.rc == 0, migrated.output
        copied: dict[tuple[str, str], int] = {}
        for series in read_api(vmauth_url, "/api/v1/export", {"match[]": f'{{db="{database}"}}'})["series"]:
            key = (series["metric"]["__name__"], series["metric"]["station"])
            copied[key] = copied.get(key, 0) + len(series["values"])
        assert copied == {(f"history_{f}", code): 1500 for f in ("v", "n", "ok") for code in ("ams", "bcn")}, copied
        assert host.run("test -e /root/.station-stack-migrate.env").rc != 0, "the settings file was left"

        assert central.write(f"history,station=ams,inst=X v=1 {t}\nhistory,station=ams,inst=X v=2 {t + 5}",
                             database)[0] == 204
        differs = run_playbook(ROOT / "playbooks" / "migrate-to-victoriametrics.yml", "central.yml", *extra)
        assert differs.rc != 0
        assert '"field": "v"' in json.dumps(differs.output) and "Counts differ" in json.dumps(differs.output)

        # An empty source (here an empty database; as well a wrong retention policy or window) copies nothing
        # and compares equal: refused, unless the operator says it is expected.
        central.query(f"CREATE DATABASE {database}_empty WITH DURATION 260w NAME long_term")
        empty = tuple(f"migrate_database={database}_empty" if x == f"migrate_database={database}" else x for x in extra)
        refused = run_playbook(ROOT / "playbooks" / "migrate-to-victoriametrics.yml", "central.yml", *empty)
        assert refused.rc != 0 and "holds no point" in json.dumps(refused.output), refused.output
        allowed = run_playbook(ROOT / "playbooks" / "migrate-to-victoriametrics.yml", "central.yml", *empty,
                               "-e", "migrate_allow_empty=true")
        assert allowed.rc == 0, allowed.output
    finally:
        central.stop()


# What Grafana substitutes in a Prometheus datasource's expression.
PROM_MACROS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


def test_metricsql_fleet_overview_panels_return_rows_for_every_station(vmauth_url, tmp_path):
    """roles/grafana's MetricsQL overview, rendered by its template: each panel's expressions as
    Grafana sends them (instant for a table, range for a time series; macros substituted; no
    `nocache`, so through the 30 s -search.latencyOffset) through vmauth as the reader, each with
    rows for both stations whose self-metrics the two-central test forwarded."""
    assert SELF_METRICS, "needs test_stations_forward_to_an_influxdb_and_a_victoriametrics_central_at_once"
    dest = tmp_path / "fleet-overview-vm.json"
    rendered = run_playbook(ROOT / "molecule" / "victoriametrics" / "render-overview.yml", "central.yml",
                            "-e", f"overview_dest={dest}")
    assert rendered.rc == 0, rendered.output
    dashboard = json.loads(dest.read_text())
    assert dashboard["uid"] == "ss-fleet-overview-vm"
    (variable,) = dashboard["templating"]["list"]
    assert variable["query"] == "prometheus" and variable["current"]["value"] == "central-central_vm"
    targets = [(panel["title"], target) for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(dashboard["panels"]) == 8 and len(targets) >= 8

    def stations(target: dict) -> set[str]:
        expr = target["expr"]
        for macro, replacement in PROM_MACROS.items():
            expr = expr.replace(macro, replacement)
        assert "$" not in expr, expr
        now = time.time()
        if target["instant"]:
            answer = read_api(vmauth_url, "/api/v1/query", {"query": expr, "time": f"{now:.3f}"})
        else:
            answer = read_api(vmauth_url, "/api/v1/query_range",
                              {"query": expr, "start": f"{now - 3600:.3f}", "end": f"{now:.3f}", "step": "15"})
        assert answer["status"] == "success", answer
        return {r["metric"].get("station") for r in answer["data"]["result"] if r.get("value") or r.get("values")}

    # The overview sees samples once they are older than the latency offset.
    missing: list[str] = []

    def all_answer() -> bool:
        missing[:] = [f"{title}: {target['expr']}: {sorted(s or '' for s in found)}" for title, target in targets
                      if (found := stations(target)) != {"ams", "bcn"}]
        return not missing

    try:
        wait_for(all_answer, max(10.0, SELF_METRICS["written"] + 45 - time.time()), "every panel", interval=2)
    except AssertionError as exc:
        raise AssertionError("panels without both stations' rows:\n" + "\n".join(missing)) from exc
    print(f"{len(targets)} expressions answered for ams and bcn "
          f"{time.time() - SELF_METRICS['written']:.0f} s after the last self-metrics")


def test_no_secret_in_world_readable_files(host):
    out = host.run("grep -rl molecule-vm- /etc /var/lib/victoria-metrics 2>/dev/null").stdout.split()
    for path in out:
        assert host.file(path).mode & 0o004 == 0, path



# --- backup and restore (last: it wipes the central's data) -------------------------------------

def samples_per_series(host, vmauth_url: str) -> dict[str, int]:
    """Every series of the central (name and labels) -> its sample count, from the export API (as
    the reader, from the controller: one round trip each), after a flush; read until two reads a
    second apart agree."""
    http(host, "GET", VM + "/internal/force_flush")
    previous = None
    for _ in range(30):
        series = read_api(vmauth_url, "/api/v1/export", {"match[]": '{__name__=~".+"}'})["series"]
        found = {json.dumps(s["metric"], sort_keys=True): len(s["values"]) for s in series}
        if found == previous:
            return found
        previous = found
        time.sleep(1)
    raise AssertionError("the export kept changing")


def test_backup_lose_everything_restore_counts_equal(host, vmauth_url, tmp_path):
    """playbooks/backup.yml (vmbackup from a snapshot, archive fetched 0600) and restore.yml
    (vmrestore into the stopped server): every series back with as many samples as before a loss
    of the whole data directory."""
    t = time.time_ns() // 1_000_000 * 1_000_000
    lines = "\n".join(f"backup_probe,run={t},sensor=s{i % 3} v={i} {t - i * 1_000_000}" for i in range(500))
    assert http(host, "POST", VM + "/influx/write", {"db": "fleet"}, lines).status == 204
    before = samples_per_series(host, vmauth_url)
    assert sum(n for k, n in before.items() if f'"run": "{t}"' in k) == 500
    assert len(before) >= 3, before  # and what the earlier tests wrote

    backup = run_playbook(ROOT / "playbooks" / "backup.yml", "central.yml", "-e", f"backup_controller_dir={tmp_path}")
    assert backup.rc == 0, backup.output
    archives = list(tmp_path.glob("*/victoriametrics-*.tar.gz"))
    assert len(archives) == 1 and archives[0].stat().st_mode & 0o077 == 0, archives
    assert host.run("ls /var/lib/victoria-metrics/snapshots").stdout.strip() == "", "the snapshot was not deleted"

    # The data directory lost: the server starts empty.
    host.run_expect([0], "systemctl stop victoria-metrics && rm -rf /var/lib/victoria-metrics/* "
                         "&& systemctl start victoria-metrics")
    health = f"python3 -c 'import urllib.request; urllib.request.urlopen(\"{VM}/health\")'"
    wait_for(lambda: host.run(health).rc == 0, 30, "VictoriaMetrics back")
    assert samples_per_series(host, vmauth_url) == {}

    refused = run_playbook(ROOT / "playbooks" / "restore.yml", "central.yml", "-e", f"restore_archive={archives[0]}")
    assert refused.rc != 0  # restore_replace=true is required: it replaces everything
    restore = run_playbook(ROOT / "playbooks" / "restore.yml", "central.yml", "-e", f"restore_archive={archives[0]}",
                           "-e", "restore_replace=true")
    assert restore.rc == 0, restore.output
    assert samples_per_series(host, vmauth_url) == before
    assert host.service("victoria-metrics").is_running
    assert host.check_output("find /var/lib/victoria-metrics ! -user _victoria-metrics | head -1") == ""
