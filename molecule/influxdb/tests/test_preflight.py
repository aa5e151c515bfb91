"""Bad input fails before any change, with a message naming the variable."""

from __future__ import annotations

import json

import pytest
from conftest import run_converge

testinfra_hosts = ["ansible://station-stack-influxdb"]

CASES = {
    "negative_duration": "influxdb_databases[tick].retention_policies[standard]: duration '-30d'",
    "two_defaults": "influxdb_databases[tick]: `default: true` is set on several retention policies",
    "unknown_cq_target": "influxdb_databases[tick].continuous_queries[to_nowhere]: the INTO target",
    "wrong_type": "influxdb_http_port",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_early_and_names_the_variable(influx, case):
    before = influx.query("SHOW RETENTION POLICIES ON tick").body
    result = run_converge(f"bad_input/{case}.yml")
    assert result.rc != 0
    failed = [
        (task["task"]["name"], res.get("msg", ""))
        for play in result.output["plays"] for task in play["tasks"]
        for res in task["hosts"].values() if res.get("failed")
        or any(item.get("failed") for item in res.get("results", []))
    ]
    assert failed, "nothing failed"
    text = json.dumps(result.output)
    assert CASES[case] in text, failed
    assert result.changed == set()
    assert influx.query("SHOW RETENTION POLICIES ON tick").body == before
