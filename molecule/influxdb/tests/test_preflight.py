"""Bad input fails before any change, with a message naming the variable."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

testinfra_hosts = ["ansible://station-stack-influxdb"]

CASES = {
    "negative_duration": "influxdb_databases[tick].retention_policies[standard]: duration '-30d': negative",
    "two_defaults": "influxdb_databases[tick]: `default: true` is set on several retention policies",
    "unknown_cq_target": "influxdb_databases[tick].continuous_queries[to_nowhere]: the INTO target",
    "wrong_type": "influxdb_http_port",
    "bad_backfill": ("influxdb_databases[tick].continuous_queries[both_windows].backfill: set exactly one of window "
                     "(e.g. 7d) and since (e.g. 2026-11-01T00:00:00Z); window '7 days' is not an InfluxDB duration"),
}


def test_bad_input_fails_early_and_names_the_variable(influx, tmp_path):
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    before = influx.query("SHOW RETENTION POLICIES ON tick").body
    # Every case is an alias of the same container: one ansible-playbook run checks them all.
    aliases = {}
    for case in CASES:
        variables = yaml.safe_load((scenario / "bad_input" / f"{case}.yml").read_text())
        aliases[f"bad_{case}"] = dict(variables, ansible_host="station-stack-influxdb",
                                      ansible_connection="community.docker.docker", ansible_user="root")
    inventory = tmp_path / "cases.yml"
    inventory.write_text(yaml.safe_dump({"preflight_cases": {"hosts": aliases}}))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    proc = subprocess.run(["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "-i", str(inventory),
                           "--limit", "preflight_cases", str(scenario / "preflight.yml")],
                          capture_output=True, text=True, env=env, check=False, timeout=600)
    assert proc.returncode != 0 and proc.stdout, proc.stderr
    output = json.loads(proc.stdout)
    failed: dict[str, list[str]] = {}
    changed = []
    for play in output["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                for item in result.get("results") or [result]:
                    if item.get("failed"):
                        failed.setdefault(host, []).append(json.dumps(item))
                    if item.get("changed"):
                        changed.append((host, task["task"]["name"]))
    for case, message in CASES.items():
        assert f"bad_{case}" in failed, f"{case}: nothing failed"
        assert message in " ".join(failed[f"bad_{case}"]), failed[f"bad_{case}"]
    assert changed == []
    assert influx.query("SHOW RETENTION POLICIES ON tick").body == before
