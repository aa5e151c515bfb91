"""A fleet: central first, canary first, forwarding tagged by station, nothing lost on a WAN cut."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import testinfra
import yaml
from conftest import Influx, wait_until

PROJECT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
EXAMPLE = PROJECT / "inventories/fleet-example"
ROLLOUT = PROJECT / "playbooks/rollout.yml"
CENTRAL = "station-stack-fleet-central"
STATIONS = {"ams": "station-stack-fleet-ams", "bcn": "station-stack-fleet-bcn", "cpt": "station-stack-fleet-cpt"}
ADMIN = ("admin", "fleet-admin-Tq2x")
BRIDGE = "/opt/station-bridge/venv/bin/station-bridge"


def host(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


def central_query(q: str) -> list[dict]:
    return Influx(host(CENTRAL)).query(q, auth=ADMIN, db="fleet").rows()


def local_query(code: str, q: str) -> list[dict]:
    return Influx(host(STATIONS[code])).query(q, auth=ADMIN, db="tick").rows()


def rollout(*flags: str, inventory: str | None = None) -> tuple[int, float, dict]:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    started = time.monotonic()
    proc = subprocess.run(["ansible-playbook", "-i", inventory or os.environ["MOLECULE_INVENTORY_FILE"], str(ROLLOUT),
                           *flags], capture_output=True, text=True, env=env, check=False, timeout=900)
    took = time.monotonic() - started
    assert proc.stdout, proc.stderr
    return proc.returncode, took, json.loads(proc.stdout)


def changed_tasks(output: dict) -> list[str]:
    return [f"{h}: {t['task']['name']}" for p in output["plays"] for t in p["tasks"]
            for h, r in t["hosts"].items() if r.get("changed")]


def bridge_state(h) -> tuple[str, str]:
    return (h.check_output("cat /etc/station-bridge/kraken.yml"),
            h.check_output("systemctl show station-bridge@kraken -p MainPID --value"))


def points(rows: list[dict]) -> set[tuple[str, int]]:
    return {(r["instrument"], r["time"]) for r in rows}




def test_central_holds_each_stations_data_tagged_with_its_code():
    per_station = {row["station"]: row["count"] for row in central_query(
        "SELECT count(bid) FROM long_term.ticks GROUP BY station")}
    print("ticks at central per station:", per_station)
    assert set(per_station) == set(STATIONS) and min(per_station.values()) >= 300
    weather = {row["station"] for row in central_query("SELECT count(bid) FROM long_term.weather GROUP BY station")}
    assert weather == {"bcn"}  # only Barcelona runs that feed
    health = {row["station"] for row in central_query(
        "SELECT last(written) FROM long_term.station_bridge GROUP BY station")}
    assert health == set(STATIONS)  # each bridge's own metrics are forwarded too


def test_each_station_forwards_with_its_own_central_user():
    users = {row["user"]: row["admin"] for row in Influx(host(CENTRAL)).query("SHOW USERS", auth=ADMIN).rows()}
    assert {f"station-{code}" for code in STATIONS} <= set(users)
    assert not any(users[f"station-{code}"] for code in STATIONS)
    for code, name in STATIONS.items():
        env = host(name).check_output("cat /etc/station-bridge/*.env")
        others = [c for c in STATIONS if c != code]
        assert f"fleet-{code}-Kx7{code}" in env
        assert not any(f"fleet-{c}-Kx7{c}" in env for c in others), f"{code} holds another station's credentials"


def test_rollout_wall_time_one_station_vs_all():
    rc_one, one, out_one = rollout("--limit", STATIONS["ams"])
    rc_all, all_, out_all = rollout()
    assert rc_one == 0 and rc_all == 0
    assert changed_tasks(out_one) == [] and changed_tasks(out_all) == []
    print(f"rollout (idempotent) wall time: 1 station {one:.0f} s, all {len(STATIONS)} stations + central "
          f"{all_:.0f} s, ratio {all_ / one:.2f}")


def test_wan_cut_under_load_loses_nothing_and_duplicates_nothing():
    station = host(STATIONS["cpt"])
    start = int(station.check_output("date +%s%N"))
    count = 9000
    station.check_output(f"nohup {BRIDGE} publish-demo --count {count} --rate 150 --duration 120 "
                         "--instruments USDZAR,EURZAR > /tmp/wan-publisher.log 2>&1 &")
    time.sleep(8)
    subprocess.run(["docker", "network", "disconnect", "station-stack-lab", STATIONS["cpt"]], check=True)
    try:
        time.sleep(40)
        local_during = local_query("cpt", f"SELECT count(bid) FROM standard.ticks WHERE time >= {start}")
        # Points held for central in journal segments while the link is down.
        journal = station.check_output("cat /var/lib/station-bridge/kraken/journal/central/*.lp 2>/dev/null | wc -l")
    finally:
        subprocess.run(["docker", "network", "connect", "station-stack-lab", STATIONS["cpt"]], check=True)
    window = f"WHERE time >= {start} AND station = 'cpt'"
    local = wait_until(lambda: (lambda r: r and r[0]["count"] == count and r[0]["count"])(
        local_query("cpt", f"SELECT count(bid) FROM standard.ticks {window}")), 120, "every point locally")
    central = wait_until(lambda: (lambda r: r and r[0]["count"] == count and r[0]["count"])(
        central_query(f"SELECT count(bid) FROM long_term.ticks {window}")), 180, "central caught up")
    stored_local = points(local_query("cpt", f"SELECT bid, instrument FROM standard.ticks {window}"))
    stored_central = points(central_query(f"SELECT bid, instrument FROM long_term.ticks {window}"))
    during = local_during[0]["count"] if local_during else 0
    print(f"WAN cut 40 s at 150/s: published {count}, local while cut {during}, "
          f"journaled for central at reconnect {journal} points, local {local}, central {central}")
    assert local_during and local_during[0]["count"] > 0  # the station kept writing locally
    assert int(journal) > 0
    assert stored_central == stored_local and len(stored_central) == count


def test_broken_canary_halts_the_rollout_before_other_stations(tmp_path):
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    shutil.copy(os.environ["MOLECULE_INVENTORY_FILE"], inventory / "hosts.yml")
    (inventory / "group_vars").symlink_to(EXAMPLE / "group_vars")
    shutil.copytree(EXAMPLE / "host_vars", inventory / "host_vars")
    broken = yaml.safe_load((EXAMPLE / "host_vars/station-stack-fleet-ams.yml").read_text())
    broken["station_feeds"] = [{"name": "kraken", "endpoint": "tcp://127.0.0.1:5556", "topic": "kraken_tick",
                                "measurement": "ticks", "tags": ["instrument"], "fields": {"bid": "flaot"}}]
    (inventory / "host_vars/station-stack-fleet-ams.yml").write_text(yaml.safe_dump(broken))
    others = {code: host(name) for code, name in STATIONS.items() if code != "ams"}
    before = {code: bridge_state(h) for code, h in others.items()}
    canary_pid = host(STATIONS["ams"]).check_output("systemctl show station-bridge@kraken -p MainPID --value")

    rc, _, output = rollout(inventory=str(inventory / "hosts.yml"))
    assert rc != 0
    failures = [(h, r.get("msg", "") + json.dumps(r.get("results", ""))) for p in output["plays"] for t in p["tasks"]
                for h, r in t["hosts"].items() if r.get("failed")]
    print("rollout stopped at:", [(h, m[:300]) for h, m in failures])
    assert failures and all(h == STATIONS["ams"] for h, _ in failures)
    assert any("unknown type 'flaot'" in m for _, m in failures)
    touched = {h for p in output["plays"][1:] for t in p["tasks"] for h in t["hosts"]}
    assert touched == {STATIONS["ams"]}, f"the rollout went past the canary: {touched}"
    after = {code: bridge_state(h) for code, h in others.items()}
    assert after == before
    # The canary keeps running its previous, valid configuration.
    assert host(STATIONS["ams"]).check_output("systemctl show station-bridge@kraken -p MainPID --value") == canary_pid
