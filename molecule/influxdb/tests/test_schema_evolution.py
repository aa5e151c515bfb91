"""Schema changes converge exactly, --check --diff tells the truth and touches nothing.

Runs after test_influxdb.py (pytest collects files alphabetically within the dir).
"""

from __future__ import annotations

from conftest import run_converge

# Each converge runs on every platform; the checks run once, from the first one.
testinfra_hosts = ["ansible://station-stack-influxdb"]

EXPECTED = {
    ("influxdb : Manage retention policies", "tick.high_frequency"),
    ("influxdb : Manage continuous queries", "tick.ticks_ohlc_1h"),
    ("influxdb : Drop undeclared users", "analyst"),
}


def _server_state(influx):
    rps = {r["name"]: r["duration"] for r in influx.query("SHOW RETENTION POLICIES ON tick").rows()}
    series = influx.query("SHOW CONTINUOUS QUERIES").series()
    cqs = {v[0]: v[1] for s in series if s["name"] == "tick" for v in s.get("values", [])}
    users = sorted(r["user"] for r in influx.query("SHOW USERS").rows())
    return rps, cqs, users


def test_check_diff_reports_changes_and_touches_nothing(influx):
    before = _server_state(influx)
    result = run_converge("schema_v2.yml", "--check", "--diff")
    assert result.rc == 0
    assert result.changed == EXPECTED
    assert _server_state(influx) == before
    diffs = [
        res.get("diff")
        for play in result.output["plays"] for task in play["tasks"]
        if task["task"]["name"] == "influxdb : Manage retention policies"
        for host in task["hosts"].values() for res in host.get("results", [])
        if res.get("changed")
    ]
    assert diffs and diffs[0]["before"]["duration"] != diffs[0]["after"]["duration"]


def test_second_converge_applies_exactly_the_changes(influx):
    result = run_converge("schema_v2.yml")
    assert result.rc == 0
    assert result.changed == EXPECTED
    rps, cqs, users = _server_state(influx)
    assert rps["high_frequency"] == "336h0m0s"
    assert "count(bid) AS ticks" in cqs["ticks_ohlc_1h"]
    assert users == ["admin", "bridge", "grafana"]


def test_third_converge_changes_nothing(influx):
    result = run_converge("schema_v2.yml")
    assert result.rc == 0
    assert result.changed == set()
