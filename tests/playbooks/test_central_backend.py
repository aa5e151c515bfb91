"""`central_backend` per entry of fleet_centrals, rendered by the roles' own variables with
ansible-playbook on this machine (nothing is installed): a fleet with one InfluxDB central and one
VictoriaMetrics central. A station's bridge gets a destination per central, the VictoriaMetrics one
writing /influx/write with numeric_only and time_resolution ms (accepted by the bridge's own
configuration parser); the VictoriaMetrics central gets each station's writer password as its vmauth
credential; Grafana gets a Prometheus-type datasource for it. About 5 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bridge" / "src"))

from station_bridge.config import parse  # noqa: E402

PLAYBOOK = """
- name: Render what each host gets
  hosts: all
  gather_facts: false
  connection: local
  vars_files:
    - {root}/roles/fleet/defaults/main.yml
    - {root}/roles/fleet/vars/main.yml
    - {root}/roles/bridge/vars/main.yml
    - {root}/roles/grafana/vars/main.yml
  vars:
    bridge_centrals: "{{{{ fleet_centrals_list }}}}"
    bridge_central_user: "{{{{ fleet_station_user }}}}"
    grafana_central_datasources: >-
      {{%- set out = [] -%}}
      {{%- for central in fleet_centrals_list -%}}
      {{%- set _ = out.append({{'name': central.name, 'url': central.url, 'database': central.database,
            'backend': central.backend, 'user': 'grafana', 'password': 'reader-pw'}}) -%}}
      {{%- endfor -%}}
      {{{{ out }}}}
  tasks:
    - name: Write them down
      ansible.builtin.copy:
        content: >-
          {{{{ {{'destinations': bridge_central_destinations if station_code is defined else [],
                'vm_stations': fleet_central_vm_stations, 'self': fleet_central_self,
                'datasources': grafana_central_datasources_provisioned}} | to_json }}}}
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0600"
"""


def test_one_central_of_each_kind(tmp_path):
    passwords = {"ams": "ams-pw", "bcn": "bcn-pw"}
    fleet = {"fleet_station_passwords": passwords, "fleet_centrals": [
        {"name": "central", "url": "http://ix1:8086", "host": "ix1"},
        {"name": "central_vm", "url": "http://vm1:8427/", "host": "vm1", "central_backend": "victoriametrics",
         "retention": "2y"}]}
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))  # extra vars: above the roles' defaults
    inventory = {"all": {"vars": {"ansible_python_interpreter": sys.executable}, "children": {
        "central": {"hosts": {"ix1": {}, "vm1": {}}},
        "stations": {"hosts": {"ams": {"station_code": "ams"}, "bcn": {"station_code": "bcn"}}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "render.yml").write_text(PLAYBOOK.format(root=ROOT, out=tmp_path))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    run = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'fleet.json'}",
                          str(tmp_path / "render.yml")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = {host: json.loads((tmp_path / f"{host}.json").read_text()) for host in ("ams", "bcn", "ix1", "vm1")}

    influx, vm = got["ams"]["destinations"]
    assert influx["url"] == "http://ix1:8086" and influx["retention_policy"] == "long_term"
    assert "numeric_only" not in influx and "time_resolution" not in influx
    assert vm["url"] == "http://vm1:8427/influx" and vm["retention_policy"] is None
    assert (vm["numeric_only"], vm["time_resolution"], vm["on_collision"]) == (True, "ms", "refuse")
    assert vm["username"] == "station-ams"
    # The central's retention (its -retentionPeriod, 2y) bounds what the destination sends: older points
    # are dropped and counted, not skipped by VictoriaMetrics with a 204.
    assert vm["retention_period"] == "730d" and "retention_period" not in influx
    assert got["vm1"]["self"]["retention"] == "2y"
    # Every key of a fleet_centrals_list entry is one the bridge role's argument spec accepts in
    # bridge_centrals (its default): a key added to one and not the other fails every station.
    spec = yaml.safe_load((ROOT / "roles/bridge/meta/argument_specs.yml").read_text())
    accepted = spec["argument_specs"]["main"]["options"]["bridge_centrals"]["options"]
    assert set(got["vm1"]["self"]) <= set(accepted), set(got["vm1"]["self"]) - set(accepted)
    # The bridge takes the rendered destinations as they are.
    config = parse({"subscriptions": [{"name": "kraken", "endpoints": ["tcp://127.0.0.1:5555"], "topics": ["t"],
                                       "mapping": {"measurement": "m", "fields": {"v": "float"}}}],
                    "destinations": got["ams"]["destinations"]})
    parsed = {d.name: d for d in config.destinations}
    assert parsed["central_vm"].numeric_only and parsed["central_vm"].time_resolution == "ms"
    assert parsed["central_vm"].retention_period == 730 * 86400 and parsed["central"].retention_period is None
    assert not parsed["central"].numeric_only and parsed["central"].time_resolution == "ns"

    assert got["vm1"]["self"]["backend"] == "victoriametrics" and got["ix1"]["self"]["backend"] == "influxdb"
    assert got["vm1"]["vm_stations"] == passwords

    types = {d["name"]: d["type"] for d in got["ix1"]["datasources"]}
    assert types == {"Central central": "influxdb", "Central central_vm": "prometheus"}
    prometheus = next(d for d in got["ix1"]["datasources"] if d["type"] == "prometheus")
    assert prometheus["basicAuth"] and prometheus["url"] == "http://vm1:8427"


def test_influxdb_playbooks_leave_a_victoriametrics_central_alone(tmp_path):
    """backfill.yml would run InfluxQL continuous queries on a VictoriaMetrics central: it ends
    that host first (nothing is asked of it), and the run succeeds. (backup.yml and restore.yml
    back a VictoriaMetrics central up with vmbackup/vmrestore: the victoriametrics scenario.)"""
    fleet = {"fleet_station_passwords": {}, "restore_archive": str(tmp_path), "restore_database": "fleet",
             "fleet_centrals": [{"name": "central_vm", "url": "http://vm1:8427", "host": "vm1",
                                 "central_backend": "victoriametrics"}]}
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"central": {"hosts": {"vm1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    for playbook in ("backfill.yml",):
        argv = ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'fleet.json'}",
                str(ROOT / "playbooks" / playbook)]
        run = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert run.returncode == 0, playbook + run.stdout[-3000:] + run.stderr[-2000:]
        tasks = [line.partition("]")[0] for line in run.stdout.splitlines() if line.startswith("TASK [")]
        assert tasks == ["TASK [Leave a VictoriaMetrics central alone"], run.stdout[-2000:]
