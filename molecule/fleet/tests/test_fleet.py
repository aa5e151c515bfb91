"""A fleet reached like real hosts: over SSH as `deploy` with sudo, host keys checked.

Every playbook runs over SSH exactly as an operator runs it (the scenario's inventory, the
project's ansible.cfg, the lab's extra vars); the verifier inspects hosts through `docker exec`
(testinfra's docker backend), the lab's console, so that looking never depends on what is tested.
The converged fleet is shared by every check; checks that break something put it back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import testinfra
import yaml
from conftest import Influx, wait_until
from verifier import http

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SCENARIO = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
EPHEMERAL = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
EXAMPLE = PROJECT / "inventories/fleet-example"
PLAYBOOKS = PROJECT / "playbooks"
LAB_VARS = SCENARIO / "lab.yml"
CENTRAL = "station-stack-fleet-central"
CENTRAL2 = "station-stack-fleet-central2"
CENTRALS = {"central": CENTRAL, "central2": CENTRAL2}
STATIONS = {"ams": "station-stack-fleet-ams", "bcn": "station-stack-fleet-bcn", "cpt": "station-stack-fleet-cpt"}
ADMIN = ("admin", "fleet-admin-Tq2x")
BRIDGE = "/opt/station-bridge/venv/bin/station-bridge"
# What a validation publisher ever sent: the demo publisher's default instruments (the old
# rollout's ticks), the validate command's own instrument and tag. The lab's feeds send XBTEUR and
# ETHEUR, the WAN test USDZAR and EURZAR.
SYNTHETIC_INSTRUMENTS = ["EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "USDCHF", "EURGBP", "USDCAD", "NZDUSD", "VALIDATION"]


def host(name: str):
    """The lab's console into a container: root, no SSH, no sudo."""
    return testinfra.get_host(f"docker://{name}")


def central_query(q: str, db: str = "fleet", central: str = CENTRAL) -> list[dict]:
    return Influx(host(central)).query(q, auth=ADMIN, db=db).rows()


def local_query(code: str, q: str) -> list[dict]:
    return Influx(host(STATIONS[code])).query(q, auth=ADMIN, db="tick").rows()


def inventory() -> str:
    return os.environ["MOLECULE_INVENTORY_FILE"]


def ansible_env(**extra: str) -> dict[str, str]:
    """The operator's ansible.cfg, JSON on stdout (no task timing printed into it)."""
    return dict(os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
                ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json", **extra)


def play(playbook: str | Path, *flags: str, inventory_file: str | None = None,
         raw: dict | None = None, **env_extra: str) -> tuple[int, float, dict]:
    """ansible-playbook over SSH with the scenario's inventory and lab vars; JSON output (the JSON
    callback's document ends stdout, after what -v.. prints). `raw` receives stdout and stderr."""
    env = ansible_env(**env_extra)
    started = time.monotonic()
    proc = subprocess.run(["ansible-playbook", "-i", inventory_file or inventory(), str(PLAYBOOKS / playbook),
                           "-e", f"@{LAB_VARS}", *flags], capture_output=True, text=True, env=env, check=False,
                          timeout=900)
    took = time.monotonic() - started
    assert proc.stdout, proc.stderr
    if raw is not None:
        raw.update(stdout=proc.stdout, stderr=proc.stderr)
    document = proc.stdout if proc.stdout.startswith("{") else proc.stdout[proc.stdout.rindex("\n{\n") + 1:]
    return proc.returncode, took, json.loads(document)


def adhoc(pattern: str, *args: str, inventory_file: str | None = None) -> subprocess.CompletedProcess:
    env = ansible_env(ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    return subprocess.run(["ansible", "-i", inventory_file or inventory(), pattern, *args], capture_output=True,
                          text=True, env=env, check=False, timeout=120)


def adhoc_results(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    output = json.loads(proc.stdout)
    return {h: r for p in output["plays"] for t in p["tasks"] for h, r in t["hosts"].items()}


def changed_tasks(output: dict) -> list[str]:
    return [f"{h}: {t['task']['name']}" for p in output["plays"] for t in p["tasks"]
            for h, r in t["hosts"].items() if r.get("changed")]


# Tasks whose failure a play ignores on purpose: an unreachable or hanging station is skipped (and
# shown failed in the recap, the run's exit status following rollout_max_unreachable).
REACH_TASKS = {"Reach the station as its sudo user", "Reach the station at its batch's start and gather its facts",
               "Show each skipped station as failed in the recap", "Reach the central"}


def message(result: dict) -> str:
    """A task result's msg: a role's folded checks give a list (every failure at once)."""
    msg = result.get("msg", "")
    return "; ".join(map(str, msg)) if isinstance(msg, list) else str(msg)


def failures(output: dict) -> list[tuple[str, str]]:
    return [(h, message(r) + json.dumps(r.get("results", ""))) for p in output["plays"] for t in p["tasks"]
            if t["task"]["name"] not in REACH_TASKS for h, r in t["hosts"].items() if r.get("failed")]


def bridge_state(h) -> tuple[str, str]:
    return (h.check_output("cat /etc/station-bridge/kraken.yml"),
            h.check_output("systemctl show station-bridge@kraken -p MainPID --value"))


def points(rows: list[dict]) -> set[tuple[str, int]]:
    return {(r["instrument"], r["time"]) for r in rows}


def scenario_inventory(tmp_path: Path) -> Path:
    """A copy of the scenario's inventory a test may change (group_vars linked, host_vars copied)."""
    directory = tmp_path / "inventory"
    directory.mkdir()
    shutil.copy(inventory(), directory / "hosts.yml")
    (directory / "group_vars").symlink_to(EXAMPLE / "group_vars")
    shutil.copytree(EXAMPLE / "host_vars", directory / "host_vars")
    return directory


# --- the converged fleet ------------------------------------------------------------------------


def rollout_plan(output: dict) -> list[str]:
    """What the rollout printed before it started: canary, batches, skipped stations, the report's path."""
    (plan,) = [r["msg"] for p in output["plays"] for t in p["tasks"]
               if t["task"]["name"] == "Name the canary and the batches" for r in t["hosts"].values()]
    return plan


def station_batches(output: dict) -> list[list[str]]:
    """The hosts of each batch of the station play, in order (one JSON play per serial batch)."""
    return [sorted({h for t in p["tasks"] for h in t["hosts"]}) for p in output["plays"]
            if p["play"]["name"] == "Stations, canary first"]


@pytest.mark.parametrize("central", list(CENTRALS.values()))
def test_central_holds_each_stations_data_tagged_with_its_code(central):
    """Every central of fleet_centrals (each station forwards to both, one destination each)."""
    per_station = {row["station"]: row["count"] for row in central_query(
        "SELECT count(bid) FROM long_term.ticks GROUP BY station", central=central)}
    print(f"ticks at {central} per station:", per_station)
    assert set(per_station) == set(STATIONS) and min(per_station.values()) >= 10
    weather = {row["station"] for row in central_query("SELECT count(bid) FROM long_term.weather GROUP BY station",
                                                       central=central)}
    assert weather == {"bcn"}  # only Barcelona runs that feed
    health = {row["station"] for row in central_query(
        "SELECT last(written) FROM long_term.station_bridge GROUP BY station", central=central)}
    assert health == set(STATIONS)  # each bridge's own metrics are forwarded too


# Each central's writer password per station (the vault's lab values): central's, central2's.
CENTRAL_PASSWORDS = {"central": "fleet-{code}-Kx7{code}", "central2": "fleet2-{code}-Wz4{code}"}


def test_each_station_forwards_with_its_own_central_user():
    for central, name in CENTRALS.items():
        users = {row["user"]: row["admin"] for row in Influx(host(name)).query("SHOW USERS", auth=ADMIN).rows()}
        assert {f"station-{code}" for code in STATIONS} <= set(users), central
        assert not any(users[f"station-{code}"] for code in STATIONS), central
    for code, name in STATIONS.items():
        station = host(name)
        env = station.check_output("cat /etc/station-bridge/*.env")
        others = [c for c in STATIONS if c != code]
        for central, password in CENTRAL_PASSWORDS.items():
            # Each central's password under the variable of its own destination, in every instance.
            variable = f"STATION_BRIDGE_{central.upper()}_PASSWORD"
            for instance in station.check_output("ls /etc/station-bridge/").split():
                if instance.endswith(".env"):
                    assert f"{variable}={password.format(code=code)}" in station.check_output(
                        f"cat /etc/station-bridge/{instance}").replace("'", "").replace('"', ""), (code, instance)
            assert not any(password.format(code=c) in env for c in others), f"{code} holds another's credentials"
        # One destination, and one journal, per central (gzip: a WAN link).
        config = yaml.safe_load(station.check_output("cat /etc/station-bridge/kraken.yml"))
        centrals = [d for d in config["destinations"] if d["name"] != "local"]
        assert [(d["name"], d["url"], d["gzip"], d["username"]) for d in centrals] == [
            (c, f"http://{n}:8086", True, f"station-{code}") for c, n in CENTRALS.items()], centrals


def synthetic_points(query, db_rp: str) -> dict[str, int]:
    """Points of a validation publisher in any measurement but station_validation."""
    found = {}
    instruments = "|".join(SYNTHETIC_INSTRUMENTS)
    for row in query("SHOW MEASUREMENTS"):
        name = row["name"]
        for where in (f"\"instrument\" =~ /^({instruments})$/", "\"validation\" = 'demo'"):
            rows = query(f'SELECT count(*) FROM {db_rp}."{name}" WHERE {where}')
            count = max((v for r in rows for k, v in r.items() if k.startswith("count")), default=0)
            if count:
                found[f"{name} WHERE {where}"] = count
    return found


def test_validate_observes_over_ssh_and_nothing_synthetic_exists_anywhere():
    rc, _, output = play("validate.yml")
    assert rc == 0, failures(output)
    tables = [r["msg"] for p in output["plays"] for t in p["tasks"] if t["task"]["name"] == "Show the validation table"
              for r in t["hosts"].values()]
    print("\n".join(line for table in tables for line in table))
    assert len(tables) == len(STATIONS) and all(any("| feed kraken | received" in line for line in t) for t in tables)
    # After the rollout and the validation: nothing synthetic in any production measurement, at the
    # stations or at central, and the validation measurement does not exist (observe writes nothing).
    for code in STATIONS:
        measurements = {r["name"] for r in local_query(code, "SHOW MEASUREMENTS")}
        assert "station_validation" not in measurements, code
        assert synthetic_points(lambda q, c=code: local_query(c, q), '"tick"."standard"') == {}, code
    assert "station_validation" not in {r["name"] for r in central_query("SHOW MEASUREMENTS")}
    assert synthetic_points(central_query, '"fleet"."long_term"') == {}
    for code in ("ams", "bcn"):  # the stations with Redis: no validation or demo series cached
        keys = redis_keys(code)
        assert keys and all("instrument=XBTEUR" in k or "instrument=ETHEUR" in k or "USDZAR" in k or "EURZAR" in k
                            for k in keys), keys
        assert not [k for k in keys if "station_validation" in k or any(i in k for i in SYNTHETIC_INSTRUMENTS)]


def redis_keys(code: str) -> list[str]:
    """Every key in the station's Redis, read as its admin (password from the inventory's vault)."""
    result = adhoc_results(adhoc(STATIONS[code], "-m", "ansible.builtin.debug", "-a", "var=redis_admin_password"))
    password = result[STATIONS[code]]["redis_admin_password"]
    out = host(STATIONS[code]).run(f"REDISCLI_AUTH='{password}' redis-cli --no-auth-warning --user admin --scan")
    assert out.rc == 0, out.stderr
    return out.stdout.split()


# --- the fleet overview on central ----------------------------------------------------------------

# What Grafana substitutes before it sends a raw InfluxQL query.
MACROS = {"$timeFilter": "time > now() - 1h", "$__interval": "10s", "$interval": "10s"}
DASHBOARDS = "/var/lib/grafana/dashboards/station-stack"
DATASOURCES = "/etc/grafana/provisioning/datasources/station-stack.yaml"


@pytest.mark.parametrize("central", list(CENTRALS.values()))
def test_fleet_overview_panels_return_rows_from_every_station(central):
    """On each central: a datasource per central; the overview reads its `central` variable (this
    central's own InfluxDB by default), and every panel answers for every station from each central."""
    central_host = host(central)
    files = central_host.check_output(f"ls {DASHBOARDS}").split()
    assert files == ["fleet-overview.json"], files  # central: the overview only
    dashboard = json.loads(central_host.file(f"{DASHBOARDS}/fleet-overview.json").content_string)
    assert dashboard["uid"] == "ss-fleet-overview"
    sources = yaml.safe_load(central_host.file(DATASOURCES).content_string)
    by_uid = {ds["uid"]: ds for ds in sources["datasources"]}
    assert {f"central-{c}" for c in CENTRALS} <= set(by_uid), sorted(by_uid)
    assert {by_uid[f"central-{c}"]["url"] for c in CENTRALS} == {f"http://{n}:8086" for n in CENTRALS.values()}
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "central" and variable["type"] == "datasource"
    assert variable["current"]["value"] == "station-influxdb"  # this central's own, by default
    reader = (by_uid["station-influxdb"]["user"], by_uid["station-influxdb"]["secureJsonData"]["password"])
    # The panels as Grafana sends them: to the variable's default, and to each central's datasource
    # (asked from this central: the other central's URL is reached over the network).
    for uid in ["station-influxdb", *(f"central-{c}" for c in CENTRALS)]:
        source = by_uid[uid]
        report, empty = [], []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert target["rawQuery"] is True and target["datasource"]["uid"] == "${central}"
                query = target["query"]
                for macro, value in MACROS.items():
                    query = query.replace(macro, value)
                assert "$" not in query, query
                rows = http(central_host, "POST", source["url"] + "/query",
                            {"q": query, "db": source["jsonData"]["dbName"], "epoch": "ns"}, auth=reader).rows()
                stations = {r.get("station") for r in rows if any(v is not None for k, v in r.items() if k != "time")}
                report.append(f"{len(rows):5d} rows, stations {sorted(s for s in stations if s)}  {panel['title']}")
                if stations != set(STATIONS):
                    empty.append(f"{panel['title']}: stations {stations}: {query}")
        print(f"{central} via {uid}:\n" + "\n".join(report))
        assert not empty, f"{central} via {uid}: panels without every station's rows:\n" + "\n".join(empty)
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for concern in ("last message age per feed", "journal backlog", "failing", "processes"):
        assert concern in titles, concern


# --- two centrals: one down while the stations publish --------------------------------------------

# Seconds central2's InfluxDB is down (issue 24: 120 s): twice the bridge's destination_grace (60 s:
# its destination is failing, not merely slow) and a dozen retries at max_backoff (10 s). The checks
# that need no central2 (SSH and sudo, host keys, service.yml restarting bcn's bridges, backup and
# restore) run meanwhile instead of a test waiting idle (fixture central2_down).
OUTAGE_S = 120
# A counted feed on each of these stations during the outage, four hours in the past (its own
# instruments, never a production series of the lab's feeds): hours the live CQ (RESAMPLE FOR 2h)
# no longer recomputes, so only the centrals' repair (influxdb_cq_repair_window) computes them, and
# the downsampled series can be compared on both centrals.
# Not bcn: service.yml restarts its station.target (and so its lab feed) during the outage.
OUTAGE_STATIONS = ("ams", "cpt")
OUTAGE_COUNT = 2000
OUTAGE_INSTRUMENTS = "USDNOK|EURNOK"
OUTAGE_SHIFT_S = 4 * 3600

# Runs on a station with the bridge's own Python (PyYAML, pyzmq, msgpack).
_PAST_PUBLISHER = r"""
import sys, time, msgpack, zmq
count, rate, shift = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
sock = zmq.Context().socket(zmq.PUB)
sock.bind("tcp://127.0.0.1:5556")
time.sleep(2)  # the bridge's subscription reconnects
for n in range(count):
    instrument = ("USDNOK", "EURNOK")[n % 2]
    sock.send_multipart([b"kraken_tick", msgpack.packb({"timestamp": time.time() - shift, "instrument": instrument,
                         "bid": 10.0 + n / 1000, "ask": 10.01 + n / 1000, "volume": n})])
    time.sleep(1 / rate)
time.sleep(1)
"""

_BRIDGE_METRICS = r"""
import glob, json, os, urllib.request, yaml
out = {}
for path in sorted(glob.glob("/etc/station-bridge/*.yml")):
    listen = (yaml.safe_load(open(path)).get("http") or {}).get("listen")
    text = urllib.request.urlopen("http://%s/metrics" % listen, timeout=5).read().decode()
    out[os.path.basename(path)[:-4]] = [line for line in text.splitlines()
                                        if line.startswith(("bridge_journal_points{", "bridge_dead_letters_total"))]
print(json.dumps(out))
"""


def bridge_backlog(code: str) -> tuple[dict[str, float], float]:
    """Per destination, the points in a station's journals (all instances), and its dead letters."""
    lines = json.loads(host(STATIONS[code]).check_output(
        "/opt/station-bridge/venv/bin/python -c %s", _BRIDGE_METRICS))
    journal: dict[str, float] = {}
    dead = 0.0
    for instance_lines in lines.values():
        for line in instance_lines:
            value = float(line.rsplit(" ", 1)[1])
            if line.startswith("bridge_journal_points"):
                name = re.search(r'destination="([^"]+)"', line).group(1)
                journal[name] = journal.get(name, 0) + value
            else:
                dead += value
    return journal, dead


def counts_per_station(central: str, start: int, end: int) -> dict[tuple[str, str], dict]:
    """count(*) per station and measurement in [start, end) (raw: the CQ's own measurement apart)."""
    out = {}
    for row in central_query("SHOW MEASUREMENTS", central=central):
        if row["name"] == "ticks_1h":
            continue
        for r in central_query(f'SELECT count(*) FROM long_term."{row["name"]}" WHERE time >= {start} '
                               f"AND time < {end} GROUP BY station", central=central):
            out[(r.pop("station"), row["name"])] = {k: v for k, v in r.items() if k != "time"}
    return out


def influx_answers(name: str) -> bool:
    ping = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8086/ping')"
    return host(name).run("python3 -c %s", ping).rc == 0



class CentralOutage(threading.Thread):
    """central2's InfluxDB stopped for OUTAGE_S while every station publishes (the lab feeds, and a
    counted feed on each of OUTAGE_STATIONS); what the stations journaled and what central held is
    read just before it comes back. Runs beside the tests that need no central2."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.error: BaseException | None = None
        self.start_ns = self.end_ns = 0
        self.down_s = 0.0
        self.during: dict[str, dict[str, float]] = {}
        self.at_central: dict[str, int] = {}

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        stations = {code: host(STATIONS[code]) for code in OUTAGE_STATIONS}
        c2 = host(CENTRAL2)
        self.start_ns = int(stations["cpt"].check_output("date +%s%N"))
        try:
            for station in stations.values():
                station.check_output("systemctl stop station-lab-feed-kraken")  # the counted feed takes its endpoint
                station.check_output("nohup /opt/station-bridge/venv/bin/python -c %s %s 50 %s "
                                     "> /tmp/outage-publisher.log 2>&1 &", _PAST_PUBLISHER, str(OUTAGE_COUNT),
                                     str(OUTAGE_SHIFT_S))
            time.sleep(4)
            c2.check_output("systemctl stop influxdb")
            stopped = time.monotonic()
            try:
                time.sleep(OUTAGE_S - 10)
                # bcn's bridges may be restarting (service.yml): asked until they answer.
                self.during = {code: wait_until(lambda c=code: _journal_or_none(c), 10, f"{code}'s metrics")
                               for code in STATIONS}
                for code in OUTAGE_STATIONS:
                    where = f"{outage_counted(self.start_ns)} AND station = '{code}'"
                    rows = central_query(f"SELECT count(bid) FROM long_term.ticks WHERE {where}")
                    self.at_central[code] = rows[0]["count"] if rows else 0
                time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
            finally:
                c2.check_output("systemctl start influxdb")
                self.down_s = time.monotonic() - stopped
            wait_until(lambda: influx_answers(CENTRAL2), 60, "central2's InfluxDB answering")
            for code, station in stations.items():
                wait_until(lambda s=station: s.run("pgrep -f 'sock[.]bind'").rc != 0 or None, 60,
                           f"the counted feed at {code} done")
        finally:
            for station in stations.values():
                station.check_output("systemctl start station-lab-feed-kraken")
        self.end_ns = int(stations["cpt"].check_output("date +%s%N"))


def outage_counted(start_ns: int, end_ns: int | None = None) -> str:
    """InfluxQL: the counted feeds' points of an outage that began at start_ns (and ended at end_ns)."""
    shift = OUTAGE_SHIFT_S * 10**9
    until = f" AND time < {end_ns - shift}" if end_ns else ""
    return f"instrument =~ /^({OUTAGE_INSTRUMENTS})$/ AND time >= {start_ns - shift}{until}"


def _journal_or_none(code: str) -> dict[str, float] | None:
    try:
        return bridge_backlog(code)[0]
    except (AssertionError, ValueError):  # an instance restarting: no metrics for a moment
        return None


@pytest.fixture(scope="module")
def central2_down():
    """central2 down for OUTAGE_S (CentralOutage), from the first test that asks for it; the tests
    that use it run meanwhile, test_a_central_down_... waits for its end and checks the aftermath."""
    outage = CentralOutage()
    outage.start()
    try:
        yield outage
    finally:
        outage.join(OUTAGE_S + 200)
        host(CENTRAL2).check_output("systemctl start influxdb")


# --- while central2 is down: SSH as deploy, sudo, host keys, service, backup ------------------
#
# Each of these takes central2_down: they need no central2 and run during its outage.


# --- the connection: SSH as deploy, sudo, host keys --------------------------------------------


def test_every_host_is_reached_over_ssh_as_deploy_with_sudo(central2_down):
    hostvars = json.loads(subprocess.run(["ansible-inventory", "-i", inventory(), "--list"], capture_output=True,
                                         text=True, check=True).stdout)["_meta"]["hostvars"]
    for name in [*CENTRALS.values(), *STATIONS.values()]:
        assert hostvars[name]["ansible_connection"] == "ssh" and hostvars[name]["ansible_user"] == "deploy", name
        assert "StrictHostKeyChecking=yes" in hostvars[name]["ansible_ssh_common_args"], name
    plain = adhoc_results(adhoc("all", "-m", "ansible.builtin.command", "-a", "id -un"))
    become = adhoc_results(adhoc("all", "-b", "-m", "ansible.builtin.command", "-a", "id -un"))
    everyone = [*CENTRALS.values(), *STATIONS.values()]
    assert {h: r["stdout"] for h, r in plain.items()} == dict.fromkeys(everyone, "deploy")
    assert {h: r["stdout"] for h, r in become.items()} == dict.fromkeys(everyone, "root")
    # bcn's sudo asks for deploy's password (given from the vault); the others do not.
    asks = host(STATIONS["bcn"]).run("runuser -u deploy -- sudo -n true")
    assert asks.rc != 0 and "password is required" in asks.stderr
    assert host(STATIONS["cpt"]).run("runuser -u deploy -- sudo -n true").rc == 0
    # ams requires a tty for sudo, except for deploy (pipelined sudo has none).
    assert "Defaults requiretty" in host(STATIONS["ams"]).check_output("cat /etc/sudoers.d/station-stack-lab")


def test_a_changed_host_key_is_refused(tmp_path, central2_down):
    inv = yaml.safe_load(Path(inventory()).read_text())
    known = EPHEMERAL / "ssh/known_hosts"
    forged = tmp_path / "known_hosts"
    # Every host's line with cpt's key: ams now presents a key that known_hosts does not list.
    lines = known.read_text().splitlines()
    cpt_key = next(line.split(" ", 1)[1] for line in lines
                   if line.startswith(inv["all"]["hosts"][STATIONS["cpt"]]["ansible_host"] + " "))
    forged.write_text("".join(f"{line.split(' ', 1)[0]} {cpt_key}\n" for line in lines))
    for hostvars in inv["all"]["hosts"].values():
        hostvars["ansible_ssh_common_args"] = hostvars["ansible_ssh_common_args"].replace(str(known), str(forged))
        # A fresh control socket: the reused master connection must not hide the check.
        hostvars["ansible_ssh_extra_args"] = f"-o ControlPath={tmp_path}/cp-%C"
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inv))
    result = adhoc_results(adhoc(STATIONS["ams"], "-m", "ansible.builtin.ping",
                                 inventory_file=str(tmp_path / "inventory.yml")))
    assert result[STATIONS["ams"]].get("unreachable"), result
    assert "Host key verification failed" in json.dumps(result), result


def test_become_user_other_than_root_gets_readable_temporary_files(central2_down):
    """deploy -> sudo -u nobody: the module's files must be readable by nobody (acl on the host)."""
    result = adhoc_results(adhoc(STATIONS["bcn"], "-b", "--become-user", "nobody", "-m", "ansible.builtin.copy",
                                 "-a", "content=lab dest=/tmp/written-as-nobody mode=0644"))
    assert not result[STATIONS["bcn"]].get("failed"), result
    assert host(STATIONS["bcn"]).file("/tmp/written-as-nobody").user == "nobody"


def test_service_playbook_over_ssh_with_a_sudo_password(central2_down):
    rc, _, output = play("service.yml", "-e", "state=restarted", "--limit", STATIONS["bcn"])
    assert rc == 0, failures(output)
    units = host(STATIONS["bcn"]).check_output("systemctl is-active station-bridge@kraken station-bridge@weather")
    assert units.split() == ["active", "active"]


def test_backup_and_restore_over_ssh(tmp_path, central2_down):
    code = "cpt"
    rc, _, output = play("backup.yml", "--limit", STATIONS[code], "-e", f"backup_controller_dir={tmp_path}",
                         "-e", '{"backup_databases": ["tick"]}')
    assert rc == 0, failures(output)
    (archive,) = tmp_path.glob(f"{STATIONS[code]}/tick-*.tar.gz")
    assert archive.stat().st_mode & 0o077 == 0
    try:
        rc, _, output = play("restore.yml", "--limit", STATIONS[code], "-e", f"restore_archive={archive}",
                             "-e", "restore_database=tick", "-e", "restore_as=tick_restored")
        assert rc == 0, failures(output)
        restored = Influx(host(STATIONS[code])).query("SELECT count(bid) FROM tick_restored.standard.ticks",
                                                      auth=ADMIN).rows()
        assert restored and restored[0]["count"] > 0
    finally:
        Influx(host(STATIONS[code])).query('DROP DATABASE "tick_restored"', auth=ADMIN)


# --- a central's private CA, delivered by the roles (during central2's outage too) ----------------

# A TLS front on central (Python's ssl, in front of its InfluxDB), its certificate signed by a CA made
# here: the third central of bcn's fleet_centrals for one converge, with that CA as its ca_cert.
_TLS_FRONT = r"""
import socket, ssl, sys, threading
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server = socket.create_server(("0.0.0.0", int(sys.argv[3])))

def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

def serve(client):
    try:
        tls = context.wrap_socket(client, server_side=True)
    except OSError:
        client.close()
        return
    upstream = socket.create_connection(("127.0.0.1", 8086))
    threading.Thread(target=pipe, args=(tls, upstream), daemon=True).start()
    pipe(upstream, tls)

while True:
    client, _ = server.accept()
    threading.Thread(target=serve, args=(client,), daemon=True).start()
"""
TLS_PORT = 8443
# bcn's bridges configured (and restarted by the role's handler) during central2's outage: not the
# role's service tasks, whose wait for a healthy bridge cannot pass while a central is down longer
# than the bridge's destination_grace; nor its install tasks (nothing to install). About 70 s here.
CONFIGURE_BCN_BRIDGES = ("--limit", "station-stack-fleet-bcn", "--tags", "bridge", "--skip-tags", "install,service")
TLS_DIR = "/root/lab-tls-front"
SAVED = "/root/lab-bridge-files"


def private_ca(directory: Path, name: str) -> tuple[str, str, str]:
    """A CA and a server certificate it signed for `name`: (CA PEM, certificate PEM, key PEM)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=station-stack lab CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", f"/CN={name}")
    (directory / "server.ext").write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                                          f"subjectAltName=DNS:{name}\nauthorityKeyIdentifier=keyid\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext")
    return tuple((directory / f).read_text() for f in ("ca.pem", "server.pem", "server.key"))


def put(name: str, path: str, content: str) -> None:
    subprocess.run(["docker", "exec", "-i", name, "sh", "-c", f"umask 077 && cat > {path}"], input=content,
                   text=True, check=True)


def destination_counters(code: str, destination: str) -> dict[str, dict[str, float]]:
    """Per instance: written points and journaled points of one destination (from /metrics)."""
    lines = json.loads(host(STATIONS[code]).check_output(
        "/opt/station-bridge/venv/bin/python -c %s", _BRIDGE_METRICS.replace(
            '("bridge_journal_points{", "bridge_dead_letters_total")',
            '("bridge_journal_points{", "bridge_written_points_total{")')))
    out = {}
    for instance, instance_lines in lines.items():
        ours = [line for line in instance_lines if f'destination="{destination}"' in line]
        out[instance] = {line.split("{", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in ours}
    return out


def test_a_centrals_private_ca_is_delivered_by_the_roles_and_trusted(tmp_path, central2_down):
    """fleet_centrals' ca_cert: the bridge role writes it on the station (root, the bridge's group,
    0640) and names it as that central's destination's ca_file; the station's bridges restart and
    deliver through TLS to a certificate of that CA. Put back as it was afterwards."""
    bcn, name = host(STATIONS["bcn"]), "central_tls"
    ca, cert, key = private_ca(tmp_path, CENTRAL)
    subprocess.run(["docker", "exec", CENTRAL, "mkdir", "-p", TLS_DIR], check=True)
    for path, content in {"server.pem": cert, "server.key": key, "front.py": _TLS_FRONT}.items():
        put(CENTRAL, f"{TLS_DIR}/{path}", content)
    host(CENTRAL).check_output(f"cd {TLS_DIR} && (nohup python3 front.py server.pem server.key {TLS_PORT} "
                               "> front.log 2>&1 & echo $! > front.pid)")
    centrals = yaml.safe_load((EXAMPLE / "group_vars/all/main.yml").read_text())["fleet_centrals"]
    extra = tmp_path / "centrals.json"
    extra.write_text(json.dumps({"fleet_centrals": [*centrals, {
        "name": name, "url": f"https://{CENTRAL}:{TLS_PORT}", "ca_cert": ca}]}))
    path = f"/etc/station-bridge/{name}-ca.pem"
    bcn.check_output(f"mkdir -p {SAVED} && cp -a /etc/station-bridge/*.yml /etc/station-bridge/*.env {SAVED}/")
    try:
        rc, took, output = play("station.yml", *CONFIGURE_BCN_BRIDGES, "-e", f"@{extra}")
        print(f"bcn's bridges configured with {name} in {took:.0f} s")
        assert rc == 0, failures(output)
        changed = changed_tasks(output)
        assert f"{STATIONS['bcn']}: bridge : Write each central's CA certificate" in changed, changed
        assert f"{STATIONS['bcn']}: bridge : Restart station-bridge instances" in changed, changed
        written = bcn.file(path)
        assert (written.user, written.group, written.mode) == ("root", "station-bridge", 0o640)
        assert written.content_string == ca.strip() + "\n"
        for instance in ("kraken", "weather"):
            config = yaml.safe_load(bcn.check_output(f"cat /etc/station-bridge/{instance}.yml"))
            (tls,) = [d for d in config["destinations"] if d["name"] == name]
            assert tls["ca_file"] == path and tls["url"] == f"https://{CENTRAL}:{TLS_PORT}", tls
        # Through TLS with that CA: points written, nothing left in the destination's journal.
        counters = wait_until(lambda: (lambda c: c if all(
            v.get("bridge_written_points_total", 0) > 0 and v.get("bridge_journal_points") == 0 for v in c.values())
            else None)(destination_counters("bcn", name)), 60, "bcn's bridges writing through TLS")
        print(f"through {name} (TLS, the private CA):", counters)
    finally:
        # Back as it was, without a second converge (40 s here): the instances' files as they were
        # (the next rollout finds nothing to change), the CA file and the removed destination's
        # journal directories gone (the bridge reports a journal no destination names).
        bcn.check_output("systemctl stop station-bridge@kraken station-bridge@weather")
        # (The files, not SAVED/.: that would give /etc/station-bridge the saved directory's mode.)
        bcn.check_output(f"cp -a {SAVED}/*.yml {SAVED}/*.env /etc/station-bridge/ && rm -rf {SAVED} {path} "
                         f"/var/lib/station-bridge/*/journal/{name}")
        bcn.check_output("systemctl start station-bridge@kraken station-bridge@weather")
        host(CENTRAL).run(f"kill $(cat {TLS_DIR}/front.pid)")
    assert name not in bcn.check_output("cat /etc/station-bridge/kraken.yml /etc/station-bridge/kraken.env")


def test_a_central_down_while_stations_publish_ends_identical_to_the_other(central2_down):
    """central2's InfluxDB stopped for OUTAGE_S while every station publishes (the lab feeds, and on
    ams and cpt a counted feed; bcn's bridges restarted meanwhile by service.yml): central keeps
    receiving, every station journals for central2; once it is back, both centrals hold the same
    counts per station and measurement, raw and (after central.yml's repair of the continuous
    queries, no window given) downsampled, the journals are empty and nothing is a dead letter; a
    rerun of central.yml with both centrals up changes nothing."""
    outage = central2_down
    outage.join(OUTAGE_S + 200)
    assert not outage.is_alive(), "the outage did not end"
    if outage.error:
        raise outage.error
    start, end = outage.start_ns, outage.end_ns
    print(f"central2 down {outage.down_s:.0f} s: journaled for it at each station {outage.during}; "
          f"central meanwhile held {outage.at_central} of the counted feeds")
    assert outage.down_s >= OUTAGE_S
    # During the outage every station journaled for central2, and central received everything.
    assert all(journal.get("central2", 0) > 0 for journal in outage.during.values()), outage.during
    assert outage.at_central == dict.fromkeys(OUTAGE_STATIONS, OUTAGE_COUNT), outage.at_central
    counted = outage_counted(start, end)

    def caught_up():
        ours = {c: {r["station"]: r["count"] for r in central_query(
            f"SELECT count(bid) FROM long_term.ticks WHERE {counted} GROUP BY station", central=c)}
            for c in CENTRALS.values()}
        if any(ours[c] != dict.fromkeys(OUTAGE_STATIONS, OUTAGE_COUNT) for c in CENTRALS.values()):
            return None
        counts = {c: counts_per_station(c, start, end) for c in CENTRALS.values()}
        return counts if counts[CENTRAL] == counts[CENTRAL2] else None

    counts = wait_until(caught_up, 180, "both centrals holding the same counts")
    assert {station for station, _ in counts[CENTRAL]} == set(STATIONS)
    print("counts per station and measurement, identical on both:", len(counts[CENTRAL]), "series")

    def drained():
        backlogs = {code: bridge_backlog(code) for code in STATIONS}
        return backlogs if all(not any(j.values()) for j, _ in backlogs.values()) else None

    backlogs = wait_until(drained, 60, "every station's journals empty")
    assert all(dead == 0 for _, dead in backlogs.values()), backlogs
    for code in STATIONS:
        assert host(STATIONS[code]).check_output(
            "find /var/lib/station-bridge -path '*dead-letter*' -type f -size +0c") == "", code

    # The downsampled series: the README's step after an outage, central.yml (its converge repairs
    # each CQ over influxdb_cq_repair_window: the hours whose raw points arrived late rewritten, on
    # both centrals: neither CQ ever computed the counted feeds' hours), then identical per station
    # over every hour the live CQ no longer recomputes (older than its RESAMPLE FOR, 2h).
    repair = "influxdb : Repair the continuous queries whose intervals got raw points late"
    rc, took, output = play("central.yml")
    assert rc == 0, failures(output)
    assert set(changed_tasks(output)) == {f"{c}: {repair}" for c in CENTRALS.values()}, changed_tasks(output)
    now_s = int(host(CENTRAL).check_output("date +%s"))
    since_s = (start // 10**9 - OUTAGE_SHIFT_S) // 3600 * 3600 - 3600
    closed = f"time >= {since_s * 10**9} AND time < {(now_s - 2 * 3600) // 3600 * 3600 * 10**9}"
    hourly = {c: central_query(f"SELECT * FROM long_term.ticks_1h WHERE {closed} GROUP BY station", central=c)
              for c in CENTRALS.values()}
    assert hourly[CENTRAL] and hourly[CENTRAL] == hourly[CENTRAL2], hourly
    for code in OUTAGE_STATIONS:
        volume = sum(r["volume"] for r in hourly[CENTRAL] if r["station"] == code and re.match(
            f"^({OUTAGE_INSTRUMENTS})$", r["instrument"]))
        assert volume == sum(range(OUTAGE_COUNT)), (code, volume)
    print(f"central.yml repaired both in {took:.0f} s; hourly rows per station, identical on both:",
          {code: sum(r["station"] == code for r in hourly[CENTRAL]) for code in STATIONS})
    # The full converge of both centrals again, both up: the repair compares and finds nothing.
    rc, took, output = play("central.yml")
    assert rc == 0, failures(output)
    assert changed_tasks(output) == [], changed_tasks(output)
    print(f"central.yml rerun with both centrals up: changed=0 in {took:.0f} s")


# --- faults -------------------------------------------------------------------------------------


def stop_sshd(name: str) -> None:
    """sshd down, and deploy's sessions with it (a reused master connection would still get through)."""
    host(name).check_output("systemctl stop ssh.service && (pkill -KILL -u deploy || true)")


class WanCut(threading.Thread):
    """cpt under load loses its link to everything for 40 s; runs beside the rollouts of the others."""

    count = 9000

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.error: BaseException | None = None
        self.report = ""

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        station = host(STATIONS["cpt"])
        # The lab feed holds the feed's endpoint: the counted publisher takes its place.
        station.check_output("systemctl stop station-lab-feed-kraken")
        try:
            start = int(station.check_output("date +%s%N"))
            station.check_output(f"nohup {BRIDGE} publish-demo --count {self.count} --rate 150 --duration 120 "
                                 "--instruments USDZAR,EURZAR > /tmp/wan-publisher.log 2>&1 &")
            time.sleep(8)
            subprocess.run(["docker", "network", "disconnect", "station-stack-lab", STATIONS["cpt"]], check=True)
            try:
                time.sleep(40)
                window = f"WHERE time >= {start} AND station = 'cpt' AND instrument =~ /^(USDZAR|EURZAR)$/"
                during = local_query("cpt", f"SELECT count(bid) FROM standard.ticks {window}")
                journal = station.check_output(
                    "cat /var/lib/station-bridge/kraken/journal/central/*.lp 2>/dev/null | wc -l")
            finally:
                subprocess.run(["docker", "network", "connect", "station-stack-lab", STATIONS["cpt"]], check=True)
            local = wait_until(lambda: (lambda r: r and r[0]["count"] == self.count and r[0]["count"])(
                local_query("cpt", f"SELECT count(bid) FROM standard.ticks {window}")), 120, "every point locally")
            central = wait_until(lambda: (lambda r: r and r[0]["count"] == self.count and r[0]["count"])(
                central_query(f"SELECT count(bid) FROM long_term.ticks {window}")), 180, "central caught up")
            self.stored_local = points(local_query("cpt", f"SELECT bid, instrument FROM standard.ticks {window}"))
            self.stored_central = points(central_query(f"SELECT bid, instrument FROM long_term.ticks {window}"))
            self.during = during[0]["count"] if during else 0
            self.journal = int(journal)
            self.report = (f"WAN cut 40 s at 150/s: published {self.count}, local while cut {self.during}, "
                           f"journaled for central at reconnect {journal} points, local {local}, central {central}")
        finally:
            station.check_output("systemctl start station-lab-feed-kraken")


@pytest.fixture(scope="module")
def cpt_offline():
    """cpt is down for the rest of the module: its sshd stopped (the rollouts must skip it) and, at the
    same time, its WAN link cut under load (test_wan_cut_...), checked at the end; the rollouts of the
    other stations run meanwhile. Everything is put back afterwards."""
    stop_sshd(STATIONS["cpt"])
    cut = WanCut()
    cut.start()
    try:
        yield cut
    finally:
        cut.join(400)
        host(STATIONS["cpt"]).check_output("systemctl start ssh.service")


def vault_values() -> dict[str, str]:
    """Every secret of the fleet inventory's vault, decrypted with the lab vault password."""
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret((EXAMPLE / "lab-vault-password").read_bytes().strip()))])

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!vault", lambda loader, node: vault.decrypt(loader.construct_scalar(node)).decode())
    found: dict[str, str] = {}

    def walk(name: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{name}.{key}", inner)
        else:
            found[name] = str(value)

    for path in sorted(EXAMPLE.glob("group_vars/*/vault.yml")):
        for name, value in yaml.load(path.read_text(), Loader=Loader).items():  # noqa: S506 (SafeLoader subclass)
            walk(name, value)
    return found


@pytest.fixture(scope="module")
def rollout_with_cpt_down(cpt_offline, tmp_path_factory):
    """The rollout re-run with cpt down and central2 lost (its sshd and InfluxDB stopped) and declared
    so (fleet_centrals_down), at -vvv with the JSON callback and a log_path, once for the tests that
    read it; before it, central.yml without the declaration (it must stop and name the way out).
    central2 is back, and the stations' journals for it empty, before the tests run."""
    log = tmp_path_factory.mktemp("verbose") / "ansible.log"
    raw: dict = {}
    stop_sshd(CENTRAL2)
    host(CENTRAL2).check_output("systemctl stop influxdb")
    try:
        refused = play("central.yml")
        rc, took, output = play("rollout.yml", "-vvv", "-e", '{"fleet_centrals_down": ["central2"]}', raw=raw,
                                ANSIBLE_LOG_PATH=str(log))
    finally:
        host(CENTRAL2).check_output("systemctl start influxdb ssh.service")
    for code in ("ams", "bcn"):
        wait_until(lambda c=code: (_journal_or_none(c) or {"central2": 1}).get("central2", 0) == 0 or None, 120,
                   f"{code}'s journal for central2 to drain")
    return rc, took, output, raw, log.read_text(), refused


def test_a_verbose_rollout_shows_no_secret(rollout_with_cpt_down):
    """-vvv, the JSON callback (every task result, loop items included) and the log file: no vault
    value anywhere: neither the central writer passwords that central's user checks loop over, nor a
    task's `environment:` (part of the SSH command line -vvv prints)."""
    rc, _, output, raw, log, _ = rollout_with_cpt_down
    secrets = vault_values()
    assert len(secrets) >= 10 and "vault_fleet_station_passwords.ams" in secrets, sorted(secrets)
    # The run was verbose and logged (a scan of nothing would pass).
    assert "ESTABLISH SSH CONNECTION" in raw["stdout"] + raw["stderr"] and "ESTABLISH SSH CONNECTION" in log, log[:2000]
    # The check that once looped over central's users (passwords included) ran, on central.
    assert "Check the passwords, install source, databases, retention policies, continuous queries and grants" in \
        json.dumps(output)
    for where, text in {"stdout": raw["stdout"], "stderr": raw["stderr"], "log_path": log}.items():
        leaked = sorted(name for name, value in secrets.items() if value in text)
        assert not leaked, f"{where} holds the value of {leaked}"


def test_a_stopped_station_is_skipped_and_reported_while_the_others_roll_out(rollout_with_cpt_down):
    """Also the rollout re-run over SSH: canary first, then the rest, nothing changed on central, ams
    (sudo requires a tty for all but deploy) and bcn (sudo asks the vault's password)."""
    stopped = STATIONS["cpt"]
    rc, took, output, _, _, _ = rollout_with_cpt_down
    report = [r["msg"] for p in output["plays"] for t in p["tasks"]
              if t["task"]["name"] == "List the stations skipped as unreachable" for r in t["hosts"].values()]
    print(f"rollout re-run over SSH with {stopped} down: {took:.0f} s; batches {station_batches(output)}; {report}")
    assert rc == 0, failures(output)
    assert failures(output) == []
    assert changed_tasks(output) == []
    batches = station_batches(output)
    assert batches == [[STATIONS["ams"]], [STATIONS["bcn"]]], batches  # the canary alone, then the rest
    (table,) = report
    assert table[0] == "station | reason" and len(table) == 2 and table[1].startswith(f"{stopped} | ")
    assert re.search(r"ssh|connect|timed out", table[1], re.I), table
    # The others were validated (post-check) in this run.
    validated = {h for p in output["plays"] for t in p["tasks"] if t["task"]["name"] == "Fail when a check failed"
                 for h, r in t["hosts"].items() if not r.get("failed")}
    assert validated == {STATIONS["ams"], STATIONS["bcn"]}
    # The recap shows the skipped station failed (the exit status stays 0: within rollout_max_unreachable).
    assert output["stats"][stopped]["failures"] == 1
    assert all(output["stats"][STATIONS[c]]["failures"] == 0 for c in ("ams", "bcn"))
    # The run's report on the controller: one row per station.
    plan = rollout_plan(output)
    assert plan[0] == f"canary: {STATIONS['ams']}", plan
    report = json.loads(Path(plan[-1].removeprefix("report: ")).read_text())
    assert {r["station"]: r["status"] for r in report["stations"]} == {
        STATIONS["ams"]: "converged", STATIONS["bcn"]: "converged", stopped: "skipped"}, report
    # Beyond rollout_max_unreachable the run ends non-zero, and says why.
    rc, _, output = play("rollout.yml", "--limit", stopped, "-e", "rollout_max_unreachable=0")
    assert rc != 0
    message = "1 stations unreachable, more than rollout_max_unreachable (0 = 0)"
    assert any(message in m for _, m in failures(output)), failures(output)


def test_a_central_declared_down_is_left_alone_while_the_stations_roll_out(rollout_with_cpt_down):
    """Issue 24: central2 lost during a campaign (sshd and InfluxDB stopped). Undeclared, central.yml
    stops at it and names fleet_centrals_down; declared, the rollout does not contact it, and every
    reachable station passes its pre-check and validation with central2 reported as declared down
    (its journal keeps the points: they drained once it was back, in the fixture)."""
    rc, _, output, _, _, (refused_rc, _, refused) = rollout_with_cpt_down
    said = [m for h, m in failures(refused) if h == CENTRAL2]
    assert refused_rc != 0 and said, failures(refused)
    assert "cannot be reached" in said[0] and '"fleet_centrals_down": ["central2"]' in said[0], said
    assert rc == 0, failures(output)
    ran = {t["task"]["name"] for p in output["plays"] for t in p["tasks"] if CENTRAL2 in t["hosts"]}
    assert ran <= {"Leave a central declared down alone"}, ran
    plan = rollout_plan(output)
    assert "centrals declared down (not converged, journaled for): central2" in plan, plan
    assert json.loads(Path(plan[-1].removeprefix("report: ")).read_text())["centrals_down"] == ["central2"]
    ready = {h: r["msg"] for p in output["plays"] for t in p["tasks"]
             if t["task"]["name"] == "Stop here when the station is not ready" for h, r in t["hosts"].items()}
    assert set(ready) == {STATIONS["ams"], STATIONS["bcn"]}, ready
    assert all("central2" in m and "declared down (fleet_centrals_down)" in m for m in ready.values()), ready
    tables = {h: r["msg"] for p in output["plays"] for t in p["tasks"]
              if t["task"]["name"] == "Show the validation table" for h, r in t["hosts"].items()}
    assert set(tables) == {STATIONS["ams"], STATIONS["bcn"]}, tables
    for station, table in tables.items():
        rows = [row for row in table if "| destination central2 |" in row]
        assert rows and all(", declared_down" in row and row.endswith("| True | -") for row in rows), (station, table)


def test_broken_canary_halts_the_rollout_and_names_the_cause(tmp_path, cpt_offline):
    directory = scenario_inventory(tmp_path)
    broken = yaml.safe_load((EXAMPLE / "host_vars/station-stack-fleet-ams.yml").read_text())
    broken["station_feeds"] = [{"name": "kraken", "endpoint": "tcp://127.0.0.1:5556", "topic": "kraken_tick",
                                "measurement": "ticks", "tags": ["instrument"], "fields": {"bid": "flaot"}}]
    (directory / "host_vars/station-stack-fleet-ams.yml").write_text(yaml.safe_dump(broken))
    others = {code: host(name) for code, name in STATIONS.items() if code != "ams"}
    before = {code: bridge_state(h) for code, h in others.items()}
    canary_pid = host(STATIONS["ams"]).check_output("systemctl show station-bridge@kraken -p MainPID --value")

    rc, _, output = play("rollout.yml", inventory_file=str(directory / "hosts.yml"))
    assert rc != 0
    failed = failures(output)
    print("rollout stopped at:", [(h, m[:300]) for h, m in failed])
    assert failed and all(h == STATIONS["ams"] for h, _ in failed)
    assert any("unknown type 'flaot'" in m for _, m in failed)
    touched = {h for batch in station_batches(output) for h in batch}
    assert touched == {STATIONS["ams"]}, f"the rollout went past the canary: {touched}"
    # The report says which station failed and why, and that the others were not rolled out.
    plan = rollout_plan(output)
    rows = {r["station"]: r for r in json.loads(Path(plan[-1].removeprefix("report: ")).read_text())["stations"]}
    assert rows[STATIONS["ams"]]["status"] == "failed" and "unknown type 'flaot'" in rows[STATIONS["ams"]]["reason"]
    assert rows[STATIONS["bcn"]]["status"] == "not_started" and rows[STATIONS["cpt"]]["status"] == "skipped", rows
    after = {code: bridge_state(h) for code, h in others.items()}
    assert after == before
    # The canary keeps running its previous, valid configuration.
    assert host(STATIONS["ams"]).check_output("systemctl show station-bridge@kraken -p MainPID --value") == canary_pid


def test_a_canary_whose_new_mapping_refuses_its_sample_halts_before_any_station_changes(tmp_path, cpt_offline):
    """Issue 21: one wrong key (the feed sends bid, the new mapping reads price) is caught before
    the canary changes: the feed's sample (messages as `station-bridge capture` records them) is
    tried with the bridge's own `try` in the bridge role's preflight; the rollout stops there."""
    import base64

    import msgpack
    directory = scenario_inventory(tmp_path)
    frames = [b"kraken_tick", msgpack.packb({"instrument": "EURUSD", "bid": 1.0823, "ask": 1.0824,
                                             "volume": 1000, "timestamp": time.time()})]
    records = [{"time": time.time_ns(), "endpoint": "tcp://127.0.0.1:5556", "encoding": "base64",
                "frames": [base64.b64encode(f).decode() for f in frames], "bytes": sum(map(len, frames))}] * 5
    (directory / "kraken-sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    miskeyed = yaml.safe_load((EXAMPLE / "host_vars/station-stack-fleet-ams.yml").read_text())
    miskeyed["station_feeds"] = [{"name": "kraken", "endpoint": "tcp://127.0.0.1:5556", "topic": "kraken_tick",
                                  "measurement": "ticks", "tags": ["instrument"], "fields": {"price": "float"},
                                  "sample": "kraken-sample.jsonl"}]
    (directory / "host_vars/station-stack-fleet-ams.yml").write_text(yaml.safe_dump(miskeyed))
    everyone = {code: host(name) for code, name in STATIONS.items() if code != "cpt"}
    before = {code: bridge_state(h) for code, h in everyone.items()}

    rc, _, output = play("rollout.yml", inventory_file=str(directory / "hosts.yml"))
    assert rc != 0
    failed = failures(output)
    assert failed and all(h == STATIONS["ams"] for h, _ in failed), failed
    assert any("its mapping refuses its sample" in m and "missing_field" in m for _, m in failed), failed
    touched = {h for batch in station_batches(output) for h in batch}
    assert touched == {STATIONS["ams"]}, f"the rollout went past the canary: {touched}"
    assert {code: bridge_state(h) for code, h in everyone.items()} == before  # the canary too: nothing changed


def test_wan_cut_under_load_loses_nothing_and_duplicates_nothing(cpt_offline):
    wan_cut = cpt_offline
    wan_cut.join(400)
    assert not wan_cut.is_alive(), "the WAN cut did not finish"
    if wan_cut.error:
        raise wan_cut.error
    print(wan_cut.report)
    assert wan_cut.during > 0  # the station kept writing locally
    assert wan_cut.journal > 0
    assert wan_cut.stored_central == wan_cut.stored_local and len(wan_cut.stored_central) == wan_cut.count
