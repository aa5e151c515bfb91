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
