import time

import pytest
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import (
    format_duration,
    format_retention,
    parse_duration,
)


@pytest.fixture(scope="module")
def db(run, server):
    run("influxdb1_database", server.login(name="rpdb"))
    return "rpdb"


def policies(server, db):
    return {r["name"]: (r["duration"], r["shardGroupDuration"], r["replicaN"], r["default"])
            for r in server.query(f'SHOW RETENTION POLICIES ON "{db}"')}


def rp(server, db, **kw):
    return server.login(database=db, **kw)


def test_create_then_idempotent_with_equivalent_units(run, server, db):
    result = run("influxdb1_retention_policy", rp(server, db, name="standard", duration="30d",
                                                  shard_duration="1d", default=True))
    assert result["changed"]
    assert result["queries"] == ['CREATE RETENTION POLICY "standard" ON "rpdb" DURATION 30d REPLICATION 1 '
                                 'SHARD DURATION 1d DEFAULT']
    assert policies(server, db)["standard"] == ("720h0m0s", "24h0m0s", 1, True)
    again = run("influxdb1_retention_policy", rp(server, db, name="standard", duration="720h",
                                                 shard_duration="24h", default=True))
    assert again["changed"] is False and again["queries"] == []


def test_alter_in_place_with_diff(run, server, db):
    run("influxdb1_retention_policy", rp(server, db, name="hf", duration="7d", shard_duration="1h"))
    result = run("influxdb1_retention_policy", rp(server, db, name="hf", duration="14d", shard_duration="1h"))
    assert result["queries"] == ['ALTER RETENTION POLICY "hf" ON "rpdb" DURATION 2w']
    assert result["diff"]["before"]["duration"] == "1w" and result["diff"]["after"]["duration"] == "2w"
    assert policies(server, db)["hf"] == ("336h0m0s", "1h0m0s", 1, False)


def test_check_mode_reports_alter_and_leaves_server(run, server, db):
    run("influxdb1_retention_policy", rp(server, db, name="chk", duration="2d"))
    before = policies(server, db)
    result = run("influxdb1_retention_policy", rp(server, db, name="chk", duration="3d"), check=True)
    assert result["changed"] and result["queries"][0].startswith("ALTER")
    assert policies(server, db) == before


def test_omitted_shard_duration_is_not_compared(run, server, db):
    run("influxdb1_retention_policy", rp(server, db, name="auto", duration="90d"))
    assert run("influxdb1_retention_policy", rp(server, db, name="auto", duration="90d"))["changed"] is False


def test_default_false_never_unsets_and_never_flip_flops(run, server):
    run("influxdb1_database", server.login(name="defdb"))
    a = dict(database="defdb", name="a", duration="30d", default=True)
    b = dict(database="defdb", name="b", duration="7d", default=False)
    for _round in range(2):
        run("influxdb1_retention_policy", server.login(**a))
        run("influxdb1_retention_policy", server.login(**b))
    assert run("influxdb1_retention_policy", server.login(**a))["changed"] is False
    assert run("influxdb1_retention_policy", server.login(**b))["changed"] is False
    assert policies(server, "defdb")["a"][3] is True
    # Moving the default is explicit, and the old default's `default: false` is then a no-op.
    assert run("influxdb1_retention_policy", server.login(**dict(b, default=True)))["changed"]
    assert run("influxdb1_retention_policy", server.login(**dict(a, default=False)))["changed"] is False
    got = policies(server, "defdb")
    assert got["b"][3] is True and got["a"][3] is False


def test_infinite_duration(run, server, db):
    run("influxdb1_retention_policy", rp(server, db, name="forever", duration="INF"))
    assert policies(server, db)["forever"][0] == "0s"
    assert run("influxdb1_retention_policy", rp(server, db, name="forever", duration="inf"))["changed"] is False


def test_missing_database_fails_clearly(run, server):
    result = run("influxdb1_retention_policy", server.login(database="nope", name="x", duration="1d"))
    assert result["failed"] and "database 'nope' does not exist" in result["msg"]


@pytest.mark.parametrize(("duration", "reason"), [
    ("-1d", "negative durations are not allowed"),
    ("30 days", "is not an InfluxDB duration"),
    ("1y", "is not an InfluxDB duration"),
    ("", "is not an InfluxDB duration"),
    ("30m", "shorter than InfluxDB's minimum retention of 1h"),
])
def test_bad_duration_fails_before_any_change(run, server, db, duration, reason):
    before = policies(server, db)
    result = run("influxdb1_retention_policy", rp(server, db, name="bad", duration=duration))
    assert result["failed"]
    assert result["msg"].startswith(f"retention policy rpdb.bad: duration {duration!r}") and reason in result["msg"]
    assert policies(server, db) == before


def test_absent(run, server, db):
    run("influxdb1_retention_policy", rp(server, db, name="gone", duration="1d"))
    assert run("influxdb1_retention_policy", rp(server, db, name="gone", state="absent"))["changed"]
    assert "gone" not in policies(server, db)
    assert run("influxdb1_retention_policy", rp(server, db, name="gone", state="absent"))["changed"] is False


# Each declaration, created and then altered from every other one: the plan's `after` is what the
# server then holds, and planning again changes nothing (the prediction check mode and diff show).
DECLARATIONS = [
    dict(duration="30d", shard_duration="1d"),
    dict(duration="720h0m0s"),
    dict(duration="4w2d", shard_duration="30m"),
    dict(duration="INF", shard_duration="0"),
    dict(duration="2h", shard_duration="2h", replication=1),
    dict(duration="1h30m", shard_duration="0s", default=True),
    dict(duration="200d"),
]


@pytest.mark.parametrize("first", [0, 3, 5])
def test_plan_predicts_the_server_exactly(run, server, first):
    database = "predict%d" % first
    run("influxdb1_database", server.login(name=database))
    for declared in [DECLARATIONS[first]] + DECLARATIONS:
        args = server.login(database=database, name="p", **declared)
        checked = run("influxdb1_retention_policy", args, check=True)
        applied = run("influxdb1_retention_policy", args)
        assert "failed" not in applied, applied
        on_server = [r for r in server.query(f'SHOW RETENTION POLICIES ON "{database}"') if r["name"] == "p"][0]
        assert applied["retention_policy"] == checked["retention_policy"] == checked["diff"]["after"]
        predicted = applied["retention_policy"]
        assert (predicted["duration"], predicted["shard_duration"]) == (
            format_retention(parse_duration(on_server["duration"])),
            format_duration(parse_duration(on_server["shardGroupDuration"])))
        assert predicted["default"] == on_server["default"]
        again = run("influxdb1_retention_policy", args, check=True)
        assert again["changed"] is False and again["queries"] == [], (declared, again)


# --- the default-RP guard ---------------------------------------------------------------------------
# Moving a database's default RP makes queries without an RP read the new one only: the old
# default's data seems to vanish. Refused while that default holds data, unless allowed.


def write_points(server, db, rp, lines):
    status, body = server.http("/write", {"db": db, "rp": rp, "precision": "s"}, body="\n".join(lines).encode())
    assert status == 204, body


def default_of(server, db):
    return [name for name, (_d, _s, _r, default) in policies(server, db).items() if default]


def test_default_switch_refused_while_the_current_default_holds_data(run, server):
    run("influxdb1_database", server.login(name="guarddb"))  # autogen is its default
    # m1: 3 points (field w on 2 of them), m2: 2 points: 5 points in 2 measurements.
    write_points(server, "guarddb", "autogen", ["m1 v=1,w=1 1700000000", "m1 v=2 1700000001", "m1 v=3,w=3 1700000002",
                                                "m2 x=1 1700000000", "m2 x=2 1700000001"])
    args = server.login(database="guarddb", name="standard", duration="30d", default=True)
    for check in (True, False):  # check mode reports the same refusal
        refused = run("influxdb1_retention_policy", args, check=check)
        assert refused["failed"], refused
        assert "current default 'autogen' holds 5 points (in 2 measurements)" in refused["msg"], refused["msg"]
        assert "allow_default_switch" in refused["msg"] and "guarddb.standard" in refused["msg"]
    assert "standard" not in policies(server, "guarddb") and default_of(server, "guarddb") == ["autogen"]
    # Without `default`, the same policy is created; moving the default later is refused the same way.
    assert run("influxdb1_retention_policy", dict(args, default=False))["changed"]
    refused = run("influxdb1_retention_policy", args)
    assert refused["failed"] and "'autogen' holds 5 points" in refused["msg"]
    assert default_of(server, "guarddb") == ["autogen"]
    allowed = run("influxdb1_retention_policy", dict(args, allow_default_switch=True))
    assert allowed["changed"] and allowed["queries"] == ['ALTER RETENTION POLICY "standard" ON "guarddb" DEFAULT']
    assert default_of(server, "guarddb") == ["standard"]
    again = run("influxdb1_retention_policy", args)  # already the default: nothing to refuse
    assert again["changed"] is False and "failed" not in again


def test_default_switch_proceeds_when_the_current_default_is_empty(run, server):
    run("influxdb1_database", server.login(name="guardempty"))
    run("influxdb1_retention_policy", server.login(database="guardempty", name="first", duration="7d", default=True))
    created = run("influxdb1_retention_policy", server.login(database="guardempty", name="second", duration="30d",
                                                             default=True))
    assert created["changed"] and "failed" not in created, created
    assert default_of(server, "guardempty") == ["second"]
    # The new default with data, and an empty third policy: moving to it is refused, naming `second`.
    write_points(server, "guardempty", "second", ["m v=1 %d" % (time.time() - 60)])
    refused = run("influxdb1_retention_policy", server.login(database="guardempty", name="first", duration="7d",
                                                             default=True), check=True)
    assert refused["failed"] and "current default 'second' holds 1 points" in refused["msg"], refused
