"""The validation's question to an InfluxDB central (playbooks/tasks/central-influxdb-received.yml),
asked with ansible-playbook on this machine of a real influxd on loopback: central is asked for
exactly what validate's report names (issue 23: the bridge owns the contract, the playbook restates
none of it): the self-metrics measurement under its configured name, and in publish mode the
validation ticks' measurement, counted field and tags. About 5 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bridge" / "tests"))

from servers import Influxd  # noqa: E402  (one influxd launcher for every suite)

PLAYBOOK = """
- name: Ask central what the report names
  hosts: station1
  gather_facts: false
  tasks:
    - name: The validation's check
      ansible.builtin.include_tasks: {root}/playbooks/tasks/central-influxdb-received.yml
"""


def test_central_is_asked_for_what_the_report_names_a_renamed_self_metrics_measurement_too(tmp_path):
    influxd = Influxd(tmp_path / "influxd", auth=True).start()
    try:
        influxd.query('CREATE DATABASE "fleet"')
        started = time.time_ns()
        # What a station's bridge forwarded: self-metrics under a renamed measurement, and ticks
        # under a contract that differs from today's definition (the playbook must not restate it).
        status, text = influxd.write(f"kraken_bridge,station=ams,instance=kraken written=5i {started + 1}\n"
                                     f"lab_ticks,station=ams,validation=t,instance=kraken ask=1.5 {started + 2}\n",
                                     db="fleet")
        assert status == 204, text
        report = {"started_ns": started, "self_metrics": [{"station": "ams", "measurement": "kraken_bridge"}],
                  "validation": {"measurement": "lab_ticks", "field": "ask", "tags": {"validation": "t"}}}
        hosts = tmp_path / "hosts.yml"
        hosts.write_text(yaml.safe_dump({"all": {"hosts": {
            "station1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                         "validate_options": {"mode": "publish"}, "validate_report": report,
                         "validate_centrals": [{"name": "central", "host": "central1", "database": "fleet",
                                                "retention_policy": "", "backend": "influxdb"}]},
            "central1": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                         "influxdb_http_port": influxd.port, "influxdb_reader_user": influxd.admin[0],
                         "influxdb_reader_password": influxd.admin[1]}}}}))
        playbook = tmp_path / "ask.yml"
        playbook.write_text(PLAYBOOK.format(root=ROOT))
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
                   ANSIBLE_HOME=str(tmp_path / "ansible"))
        run = subprocess.run(["ansible-playbook", "-i", str(hosts), str(playbook)], capture_output=True, text=True,
                             env=env, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        output, _ = json.JSONDecoder().raw_decode(run.stdout[run.stdout.index("{"):])  # timings follow
        (task,) = [t for p in output["plays"] for t in p["tasks"]
                   if t["task"]["name"] == "Check every central receives this station's own metrics"]
        (result,) = task["hosts"]["station1"]["results"]
        # One answer per statement: the renamed self-metrics measurement and the ticks, each found.
        series = [r["series"][0] for r in result["json"]["results"]]
        assert [s["name"] for s in series] == ["kraken_bridge", "lab_ticks"]
        assert series[1]["values"][0][1] == 1  # count("ask") of the tagged ticks
    finally:
        influxd.stop()
