"""Schema changes converge exactly, --check --diff tells the truth and touches nothing.

Starts from the converged schema_v1.yml and puts it back afterwards, so it runs in any order.
The runs are limited to the first platform and to the concerns a schema change touches
(`schema`, `users`; preflight always runs): the whole role's idempotence and check mode are
molecule's own idempotence and check steps.
"""

from __future__ import annotations

import pytest
from conftest import run_converge

testinfra_hosts = ["ansible://station-stack-influxdb"]
ONLY = ("--limit", "station-stack-influxdb", "--tags", "schema,users")

ROLE = "station_stack.station.influxdb : "
TASK = ROLE + "Manage databases, retention policies, continuous queries, users and grants"
# One module call for the whole schema (influxdb1_schema): what changed, object by object.
EXPECTED = {
    ("retention_policy", "tick.high_frequency", "present"),
    ("continuous_query", "tick.ticks_ohlc_1h", "present"),
    ("user", "analyst", "absent"),
}


def _changed_objects(result):
    """(kind, [database.]name, state) of every object the schema task changed (or would)."""
    assert {task for task, _label in result.changed} <= {TASK}, result.changed
    return {(o["kind"], ".".join(filter(None, [o.get("database"), o["name"]])), o["state"])
            for play in result.output["plays"] for task in play["tasks"] if task["task"]["name"] == TASK
            for host in task["hosts"].values() for o in host.get("objects", []) if o["changed"]}


def _server_state(influx):
    rps = {r["name"]: r["duration"] for r in influx.query("SHOW RETENTION POLICIES ON tick").rows()}
    series = influx.query("SHOW CONTINUOUS QUERIES").series()
    cqs = {v[0]: v[1] for s in series if s["name"] == "tick" for v in s.get("values", [])}
    users = sorted(r["user"] for r in influx.query("SHOW USERS").rows())
    return rps, cqs, users


@pytest.fixture(scope="module")
def from_v1(influx):
    rps, _cqs, users = _server_state(influx)
    assert rps["high_frequency"] == "168h0m0s" and "analyst" in users, "expected the converged schema_v1.yml"
    yield
    restored = run_converge("schema_v1.yml", *ONLY)
    assert restored.rc == 0 and restored.changed, restored.output.get("stats")


def test_schema_evolution(influx, from_v1):
    before = _server_state(influx)
    checked = run_converge("schema_v2.yml", *ONLY, "--check", "--diff")
    assert checked.rc == 0
    assert _changed_objects(checked) == EXPECTED
    assert _server_state(influx) == before
    # One diff entry per changed object, headed with its name.
    diffs = {entry["before_header"]: entry for play in checked.output["plays"] for task in play["tasks"]
             if task["task"]["name"] == TASK for host in task["hosts"].values() for entry in host["diff"]}
    assert set(diffs) == {"retention policy tick.high_frequency", "continuous query tick.ticks_ohlc_1h", "user analyst"}
    rp_diff = diffs["retention policy tick.high_frequency"]
    assert rp_diff["before"]["duration"] == "1w" and rp_diff["after"]["duration"] == "2w"
    # The CQ's diff: both sides in one canonical form, so only the real change differs (issue 13).
    cq_diff = diffs["continuous query tick.ticks_ohlc_1h"]
    assert cq_diff["before"].startswith("CREATE CONTINUOUS QUERY ticks_ohlc_1h ON tick RESAMPLE EVERY 10m FOR 2h")
    assert cq_diff["after"] == cq_diff["before"].replace(
        "sum(volume) AS volume", "sum(volume) AS volume, count(bid) AS ticks")

    applied = run_converge("schema_v2.yml", *ONLY)
    assert applied.rc == 0
    assert _changed_objects(applied) == EXPECTED
    rps, cqs, users = _server_state(influx)
    assert rps["high_frequency"] == "336h0m0s"
    assert "count(bid) AS ticks" in cqs["ticks_ohlc_1h"]
    assert users == ["admin", "bridge", "grafana"]

    again = run_converge("schema_v2.yml", *ONLY)
    assert again.rc == 0
    assert again.changed == set()
