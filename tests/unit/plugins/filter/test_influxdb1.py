"""The duration filters, and the influxdb role's preflight checks that use them, run by ansible-playbook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.station_stack.station.plugins.filter.influxdb1 import FilterModule

FILTERS = FilterModule().filters()


def test_filters_read_durations_with_the_modules_parser():
    duration = FILTERS["influxdb1_duration"]
    assert duration("30d") == duration("720h0m0s") == duration("4w2d") == 30 * 86400 * 10**9
    assert duration("INF") == duration("0") == 0
    with pytest.raises(AnsibleFilterError, match="influxdb1_duration: '30 days' is not an InfluxDB duration"):
        duration("30 days")
    assert FILTERS["influxdb1_duration_error"]("1h30m") == ""
    assert "negative" in FILTERS["influxdb1_duration_error"]("-1h")


@pytest.mark.parametrize(("policy", "problem"), [
    ({"duration": "30d", "shard_duration": "1d", "replication": 1}, ""),
    ({"duration": "INF"}, ""),
    ({"duration": "30m"}, "shorter than InfluxDB's minimum retention of 1h"),
    ({"duration": "1d", "shard_duration": "2d"}, "is longer than duration"),
    ({"duration": "1d", "replication": 0}, "replication must be an integer >= 1"),
    ({"duration": "1d", "replication": True}, "replication must be an integer >= 1"),
    ({}, "duration None is not a duration"),
])
def test_retention_policy_filter(policy, problem):
    found = FILTERS["influxdb1_retention_policy_error"](policy)
    assert (found == "") == (problem == "") and problem in found


def _checkout():
    for parent in Path(__file__).resolve().parents:
        if (parent / "galaxy.yml").is_file() and (parent / "roles").is_dir():
            return parent
    raise RuntimeError("no checkout above %s" % __file__)


# One host per case, all on the controller: one ansible-playbook run checks them all.
CASES = {
    "good": ({"retention_policies": [{"name": "s", "duration": "720h0m0s", "shard_duration": "30m", "default": True},
                                     {"name": "f", "duration": "INF", "shard_duration": "0"}],
              "continuous_queries": [{"name": "c", "query": "SELECT mean(v) INTO s.x FROM y GROUP BY time(1h)",
                                      "resample_every": "600s", "resample_for": "1h30m"}]}, None),
    "negative": ({"retention_policies": [{"name": "s", "duration": "-30d"}]},
                 "influxdb_databases[tick].retention_policies[s]: duration '-30d': negative durations are not allowed"),
    "short": ({"retention_policies": [{"name": "s", "duration": "30m"}]},
              "influxdb_databases[tick].retention_policies[s]: duration '30m' is shorter than InfluxDB's minimum"),
    "shard": ({"retention_policies": [{"name": "s", "duration": "1d", "shard_duration": "1w"}]},
              "influxdb_databases[tick].retention_policies[s]: shard_duration '1w' is longer than duration '1d'"),
    "resample": ({"retention_policies": [{"name": "s", "duration": "1d"}],
                  "continuous_queries": [{"name": "c", "query": "SELECT mean(v) INTO s.x FROM y GROUP BY time(1h)",
                                          "resample_every": "0s", "resample_for": "2 hours"}]},
                 "influxdb_databases[tick].continuous_queries[c]: resample_every must be longer than 0 (omit it for "
                 "the server's default); resample_for '2 hours' is not an InfluxDB duration"),
}


def test_role_preflight_uses_the_filters(tmp_path):
    root = _checkout()
    inventory = {"all": {"hosts": {
        case: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
               "influxdb_databases": [dict(name="tick", **database)]}
        for case, (database, _message) in CASES.items()}}}
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "vars": {"influxdb_admin_password": "a", "influxdb_writer_password": "w", "influxdb_reader_password": "r"},
        "roles": [{"role": "station_stack.station.influxdb"}],
    }]))
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(root / "collections"),
               ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_LOAD_CALLBACK_PLUGINS="true", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    env.pop("PYTHONPATH", None)  # ansible-test narrows it for unit tests
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    playbook = Path(sys.executable).with_name("ansible-playbook")
    proc = subprocess.run([str(playbook), "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "play.yml"),
                           "--tags", "preflight"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    output = json.loads(proc.stdout)
    # A role's folded checks fail with a list of messages (every failure at once).
    failures = {host: " ".join(" ".join(r["msg"]) if isinstance(r["msg"], list) else r["msg"]
                               for r in result.get("results", [result]) if r.get("failed"))
                for play in output["plays"] for task in play["tasks"]
                for host, result in task["hosts"].items() if result.get("failed")}
    for case, (_database, message) in CASES.items():
        if message is None:
            assert case not in failures, failures.get(case)
            assert output["stats"][case]["failures"] == 0
        else:
            assert message in " ".join(failures[case].split()), failures[case]
