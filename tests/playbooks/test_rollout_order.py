"""playbooks/rollout.yml's own steps (reach, plan, batches, pre-checks, report, recap) on an 11-station
fleet of stand-ins, run for real by ansible-playbook on this machine with the project's ansible.cfg.

Each stand-in is the controller itself over the local connection, behind a Python interpreter that
waits before every module: the first station answers last (and every run adds its own jitter), the
way SSH connections to a real fleet finish in any order. A station that is down is an SSH host on a
closed port: really unreachable. The stations' roles are left out (--skip-tags station): what is
tested is the rollout around them, in --check as the README's first fleet command runs it. (A failed
station's report row is proven by the fleet scenario's broken canary.)"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
STATIONS = [f"station-{n:02d}" for n in range(1, 12)]


def inventory(tmp_path: Path, down: tuple[str, ...] = (), host_vars: dict | None = None) -> Path:
    rng = random.Random()
    hosts = {}
    for index, name in enumerate(STATIONS):
        # The first station slowest, the last fastest, each with some jitter of its own.
        # Its connection settings are read by the worker that runs each of its tasks (modules and
        # in-memory steps like group_by alike): reading them takes the delay.
        delay = 0.02 * (len(STATIONS) - index) + rng.uniform(0, 0.05)
        slow = f"{{{{ (lookup('ansible.builtin.pipe', 'sleep {delay:.3f}') ~ 'false') | bool }}}}"
        hosts[name] = {"station_code": name[-2:], "ansible_python_interpreter": sys.executable,
                       **({"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1}
                          if name in down else {"ansible_connection": "local", "ansible_become": slow}),
                       **(host_vars or {}).get(name, {})}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump({"all": {
        "vars": {"fleet_central_url": "http://127.0.0.1:9", "rollout_require_clock_sync": False,
                 "rollout_min_free_mib": 1, "rollout_reach_timeout": 10},
        "children": {"central": {"hosts": {}}, "stations": {"hosts": hosts}}}}))
    return path


def rollout(tmp_path: Path, hosts: Path, *flags: str) -> tuple[int, dict, dict]:
    """rollout.yml --check without the stations' roles; returns rc, the JSON output, the report."""
    reports = tmp_path / "reports"
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.json", ANSIBLE_HOME=str(tmp_path / ".ansible"))
    for old in reports.glob("*.json"):
        old.unlink()
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(hosts),
                           str(ROOT / "playbooks/rollout.yml"), "--check", "--diff", "--skip-tags", "station",
                           "-e", f"rollout_report_dir={reports}", *flags],
                          capture_output=True, text=True, env=env, timeout=300, check=False, cwd=ROOT)
    assert proc.stdout, proc.stderr
    (report,) = [json.loads(p.read_text()) for p in reports.glob("rollout-*.json")]
    return proc.returncode, json.loads(proc.stdout), report


def plan(output: dict) -> list[str]:
    """The canary, batches and skipped stations printed before the run (not the report's path: it has the time)."""
    return [r["msg"] for p in output["plays"] for t in p["tasks"]
            if t["task"]["name"] == "Name the canary and the batches" for r in t["hosts"].values()][0][:-1]


def batches(output: dict) -> list[list[str]]:
    """The hosts of each batch the station play ran, in the order the batches ran."""
    return [sorted({h for t in p["tasks"] for h in t["hosts"]}) for p in output["plays"]
            if p["play"]["name"] == "Stations, canary first"]


def test_canary_and_batches_follow_the_inventory_every_run(tmp_path):
    seen = []
    for _ in range(2):
        hosts = inventory(tmp_path)  # new delays (jitter) every run
        rc, output, report = rollout(tmp_path, hosts, "-e", '{"rollout_serial": [1, 3, "50%"]}')
        assert rc == 0, output
        seen.append((plan(output), batches(output)))
        # Named before it starts, and followed: 1, then 3, then 50% of 11 (5), then the rest.
        assert plan(output)[0] == "canary: station-01"
        assert batches(output) == [STATIONS[:1], STATIONS[1:4], STATIONS[4:9], STATIONS[9:]]
        assert report["canary"] == "station-01" and report["batches"] == batches(output)
        assert [(r["station"], r["status"]) for r in report["stations"]] == [(s, "checked") for s in STATIONS]
        # Central was never installed (nothing answers its URL): under --check that is not a failure.
        messages = [r.get("msg", "") for p in output["plays"] for t in p["tasks"]
                    if t["task"]["name"] == "Stop here when the station is not ready" for r in t["hosts"].values()]
        assert len(messages) == 11 and all("would be checked after central converges" in m for m in messages)
    assert all(s == seen[0] for s in seen), seen


def test_the_first_reachable_station_is_the_canary_and_a_skipped_one_shows_in_the_recap(tmp_path):
    rc, output, report = rollout(tmp_path, inventory(tmp_path, down=("station-01",)))
    # One of 11 skipped: within rollout_max_unreachable (10% of 11, rounded up: 2), the run ends 0.
    assert rc == 0, output
    assert plan(output)[0] == "canary: station-02"
    assert batches(output) == [STATIONS[1:2], STATIONS[2:]]
    rows = {r["station"]: r for r in report["stations"]}
    assert rows["station-01"]["status"] == "skipped" and "unreachable" in rows["station-01"]["reason"]
    assert {rows[s]["status"] for s in STATIONS[1:]} == {"checked"}
    # The recap does not show it as healthy.
    assert output["stats"]["station-01"]["failures"] == 1
    assert all(output["stats"][s]["failures"] == 0 for s in STATIONS[1:])

