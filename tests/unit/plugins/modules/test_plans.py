"""Each module's plan(): declared state + the server's state -> statements, before/after. Pure: no server."""

from __future__ import annotations

import json

import pytest
from ansible_collections.station_stack.station.plugins.module_utils import influxdb1_backfill as bf
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import PlanError
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import DAY, HOUR, WEEK
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_influxql import canonical_select, render
from ansible_collections.station_stack.station.plugins.modules import (
    influxdb1_continuous_query as cq,
)
from ansible_collections.station_stack.station.plugins.modules import (
    influxdb1_database as database,
)
from ansible_collections.station_stack.station.plugins.modules import (
    influxdb1_retention_policy as rp,
)
from ansible_collections.station_stack.station.plugins.modules import (
    influxdb1_user as user,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# --- database ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "existing", "queries", "before", "after"), [
    ("present", [], ['CREATE DATABASE "tick"'], {}, {"name": "tick"}),
    ("present", ["tick"], [], {"name": "tick"}, {"name": "tick"}),
    ("absent", ["tick"], ['DROP DATABASE "tick"'], {"name": "tick"}, {}),
    ("absent", ["other"], [], {}, {}),
])
def test_database_plan(state, existing, queries, before, after):
    plan = database.plan("tick", state, existing)
    assert plan.queries == queries and plan.changed == bool(queries)
    assert (plan.before, plan.after) == (before, after)


# --- retention policy ------------------------------------------------------------------------------


def rp_want(**kw):
    want = dict(database="tick", name="standard", duration="30d", shard_duration=None, replication=1,
                default=False, state="present")
    want.update(kw)
    return want


def rp_have(policy=None, database_exists=True):
    return dict(database_exists=database_exists, policy=policy)


def server_policy(duration, shard, replication=1, default=False):
    return dict(name="standard", duration=duration, shard_duration=shard, replication=replication, default=default)


def test_rp_create_states_every_clause_and_predicts_the_server():
    plan = rp.plan(rp_want(shard_duration="1d", default=True), rp_have())
    assert plan.queries == ['CREATE RETENTION POLICY "standard" ON "tick" DURATION 30d REPLICATION 1 '
                            "SHARD DURATION 1d DEFAULT"]
    assert plan.before == {}
    assert plan.after == dict(name="standard", duration="30d", shard_duration="1d", replication=1, default=True)


@pytest.mark.parametrize(("duration", "expected_shard"), [("1d", "1h"), ("3d", "1d"), ("200d", "1w"), ("INF", "1w")])
def test_rp_create_without_shard_predicts_the_servers_choice(duration, expected_shard):
    plan = rp.plan(rp_want(duration=duration), rp_have())
    assert "SHARD" not in plan.queries[0]
    assert plan.after["shard_duration"] == expected_shard


@pytest.mark.parametrize(("declared", "server"), [
    (dict(duration="30d"), server_policy(30 * DAY, DAY)),
    (dict(duration="720h0m0s", shard_duration="24h"), server_policy(30 * DAY, DAY)),
    (dict(duration="4w2d", shard_duration="1440m"), server_policy(30 * DAY, DAY)),
    # Under 1h the server stores 1h; 0 is the server's choice for the duration.
    (dict(duration="1d", shard_duration="30m"), server_policy(DAY, HOUR)),
    (dict(duration="1d", shard_duration="0s"), server_policy(DAY, HOUR)),
    (dict(duration="INF", shard_duration="0"), server_policy(0, WEEK)),
    (dict(duration="inf"), server_policy(0, WEEK)),
    # default: false never un-sets the default: InfluxDB cannot, and it would flip-flop.
    (dict(duration="30d", default=False), server_policy(30 * DAY, DAY, default=True)),
])
def test_rp_equivalent_declarations_change_nothing(declared, server):
    plan = rp.plan(rp_want(**declared), rp_have(server))
    assert plan.queries == [] and not plan.changed
    assert plan.before == plan.after


def test_rp_alter_names_only_what_differs():
    plan = rp.plan(rp_want(duration="14d", shard_duration="1h", replication=2, default=True),
                   rp_have(server_policy(7 * DAY, HOUR)))
    assert plan.queries == ['ALTER RETENTION POLICY "standard" ON "tick" DURATION 2w REPLICATION 2 DEFAULT']
    assert plan.before["duration"] == "1w" and plan.after["duration"] == "2w"
    assert plan.after["default"] is True and plan.after["replication"] == 2


@pytest.mark.parametrize(("declared", "server", "reason"), [
    (dict(duration="-30d"), None, "negative durations are not allowed"),
    (dict(duration="30 days"), None, "is not an InfluxDB duration"),
    (dict(duration="59m"), None, "shorter than InfluxDB's minimum retention of 1h"),
    (dict(duration="1d", shard_duration="1w"), None, "is longer than duration '1d'"),
    (dict(duration="1d", shard_duration="-1h"), None, "shard_duration '-1h': negative"),
    (dict(duration="1d", replication=0), None, "replication must be >= 1"),
    (dict(duration=None), None, "duration is required"),
    # Shortening the duration below the shard group duration the server keeps.
    (dict(duration="1d"), server_policy(30 * DAY, WEEK), "shorter than the policy's current shard group duration 1w"),
])
def test_rp_refused_declarations_fail_before_any_statement(declared, server, reason):
    with pytest.raises(PlanError, match="retention policy tick.standard: ") as exc:
        rp.plan(rp_want(**declared), rp_have(server))
    assert reason in str(exc.value)


def test_rp_missing_database_and_absent():
    with pytest.raises(PlanError, match="database 'tick' does not exist"):
        rp.plan(rp_want(), rp_have(database_exists=False))
    plan = rp.plan(rp_want(state="absent"), rp_have(server_policy(DAY, HOUR)))
    assert plan.queries == ['DROP RETENTION POLICY "standard" ON "tick"'] and plan.after == {}
    assert rp.plan(rp_want(state="absent"), rp_have()).queries == []


# --- continuous query --------------------------------------------------------------------------------

STORED = ("CREATE CONTINUOUS QUERY ticks_ohlc_1h ON tick RESAMPLE EVERY 10m FOR 2h BEGIN SELECT first(bid) AS open, "
          "max(bid) AS high INTO tick.long_term.ticks_ohlc_1h FROM tick.standard.ticks GROUP BY time(1h), * END")


def cq_want(**kw):
    want = dict(database="tick", name="ticks_ohlc_1h", state="present", resample_every="10m", resample_for="2h",
                query="SELECT first(bid) AS open, max(bid) AS high INTO long_term.ticks_ohlc_1h FROM standard.ticks "
                      "GROUP BY time(1h), *")
    want.update(kw)
    return want


def cq_have(stored=STORED, default_rp="standard", database_exists=True):
    return dict(database_exists=database_exists, stored=stored, default_rp=default_rp)


@pytest.mark.parametrize("query", [
    'select FIRST("bid") as "open", MAX(bid) AS high into "long_term"."ticks_ohlc_1h" from "standard"."ticks" '
    "group by time(60m), *",
    "SELECT first(bid) AS open, max(bid) AS high INTO tick.long_term.ticks_ohlc_1h FROM tick..ticks "
    "GROUP BY time(3600s),*",
    "SELECT first(bid) AS open,\n  max(bid) AS high\nINTO long_term.ticks_ohlc_1h FROM ticks GROUP BY time(1h), *",
])
def test_cq_spelling_differences_are_no_change_and_no_diff(query):
    plan = cq.plan(cq_want(query=query, resample_every="600s", resample_for="120m"), cq_have())
    assert not plan.changed
    assert plan.before == plan.after


def test_cq_diff_shows_both_sides_normalised_and_only_the_real_change():
    declared = ('select FIRST("bid") as "open", MIN(bid) AS high into "long_term".ticks_ohlc_1h from ticks '
                "group by time(60m), *")
    plan = cq.plan(cq_want(query=declared), cq_have())
    assert plan.changed
    # Same canonical text on both sides: the only difference left is the one the operator made.
    assert plan.before.replace("max(bid)", "min(bid)") == plan.after
    assert plan.after == ("CREATE CONTINUOUS QUERY ticks_ohlc_1h ON tick RESAMPLE EVERY 10m FOR 2h BEGIN SELECT "
                          "first(bid) AS open, min(bid) AS high INTO tick.long_term.ticks_ohlc_1h FROM "
                          "tick.standard.ticks GROUP BY time(1h), * END\n")
    # A CQ cannot be altered: validated under a scratch name, then dropped and created again.
    assert [change.shown.split(" ")[0] for change in plan.checks] == ["CREATE", "DROP"]
    assert "__station_stack_probe" in plan.checks[0].shown
    assert plan.queries[0] == 'DROP CONTINUOUS QUERY "ticks_ohlc_1h" ON "tick"'
    assert plan.queries[1].startswith('CREATE CONTINUOUS QUERY "ticks_ohlc_1h" ON "tick" RESAMPLE EVERY 10m FOR 2h '
                                      "BEGIN " + declared)


def test_cq_unqualified_measurements_follow_the_databases_default_rp():
    query = "SELECT mean(bid) INTO long_term.m FROM ticks GROUP BY time(1h)"
    stored = ("CREATE CONTINUOUS QUERY c ON tick BEGIN SELECT mean(bid) INTO tick.long_term.m FROM tick.standard.ticks "
              "GROUP BY time(1h) END")
    assert not cq.plan(cq_want(name="c", query=query, resample_every=None, resample_for=None),
                       cq_have(stored)).changed
    # Another default RP: the same declaration means another source.
    assert cq.plan(cq_want(name="c", query=query, resample_every=None, resample_for=None),
                   cq_have(stored, default_rp="autogen")).changed


def test_cq_new_and_absent():
    plan = cq.plan(cq_want(), cq_have(stored=None))
    assert plan.before == "" and len(plan.queries) == 1 and plan.checks == []
    assert plan.after.startswith("CREATE CONTINUOUS QUERY ticks_ohlc_1h ON tick RESAMPLE EVERY 10m FOR 2h BEGIN")
    gone = cq.plan(cq_want(state="absent", query=None), cq_have())
    assert gone.queries == ['DROP CONTINUOUS QUERY "ticks_ohlc_1h" ON "tick"'] and gone.after == ""
    assert cq.plan(cq_want(state="absent"), cq_have(stored=None)).queries == []


@pytest.mark.parametrize(("declared", "reason"), [
    (dict(query="CREATE CONTINUOUS QUERY x ON tick BEGIN SELECT 1 END"), "must be a SELECT ... INTO"),
    (dict(query="SELECT mean(v) FROM t GROUP BY time(1h)"), "must be a SELECT ... INTO"),
    (dict(resample_every="0s"), "resample_every must be longer than 0"),
    (dict(resample_for="2 hours"), "resample_for '2 hours' is not an InfluxDB duration"),
])
def test_cq_refused_declarations_fail_before_any_statement(declared, reason):
    with pytest.raises(PlanError, match="continuous query tick.ticks_ohlc_1h: ") as exc:
        cq.plan(cq_want(**declared), cq_have())
    assert reason in str(exc.value)
    with pytest.raises(PlanError, match="database 'tick' does not exist"):
        cq.plan(cq_want(), cq_have(database_exists=False))


# --- continuous query: backfill ------------------------------------------------------------------------

NOW = bf.parse_time("2026-12-06T10:40:00Z")


def bf_have(stored=STORED, retention=None):
    return dict(cq_have(stored), now=NOW, retention=retention or {})


def test_cq_backfill_on_create_is_planned_in_whole_buckets_and_shown():
    plan = cq.plan(cq_want(backfill=dict(window="7d", run="on_change")), bf_have(stored=None))
    summary = plan.result["backfill"]
    # From the bucket holding now - 7d up to the bucket in progress, in chunks of RESAMPLE FOR (2h).
    assert (summary["start"], summary["end"], summary["chunk"], summary["chunks"]) == (
        "2026-11-29T10:00:00Z", "2026-12-06T10:00:00Z", "2h", 84)
    assert summary["last"] == {"start": "2026-12-06T08:00:00Z", "end": "2026-12-06T10:00:00Z"}
    assert summary["first_query"] == (
        "SELECT first(bid) AS open, max(bid) AS high INTO tick.long_term.ticks_ohlc_1h FROM tick.standard.ticks "
        "WHERE time >= '2026-11-29T10:00:00Z' AND time < '2026-11-29T12:00:00Z' GROUP BY time(1h), *")
    assert plan.changed and len(plan.queries) == 1
    # Validated (and read back) under a scratch name before anything is written.
    assert [c.shown.split(" ")[0] for c in plan.checks] == ["CREATE", "DROP"]
    assert plan.after.endswith("-- backfill (created): 84 chunk(s) of up to 2h, 2026-11-29T10:00:00Z .. "
                               "2026-12-06T10:00:00Z\n-- first: %s\n-- last: %s\n" % (
                                   summary["first_query"], summary["last_query"]))


def test_cq_backfill_runs_on_an_unchanged_cq_only_on_request():
    unchanged = cq.plan(cq_want(backfill=dict(since="2026-12-06T06:00:00Z", run="on_change")), bf_have())
    assert not unchanged.changed and unchanged.result["backfill"]["chunks"] == 0
    assert unchanged.before == unchanged.after
    requested = cq.plan(cq_want(backfill=dict(since="2026-12-06T06:00:00Z", run="always", chunk="1h")), bf_have())
    assert requested.changed and requested.queries == [] and requested.checks == []
    assert requested.result["backfill"]["reason"] == "requested" and requested.result["backfill"]["chunks"] == 4


def test_cq_backfill_starts_at_the_first_whole_bucket_the_source_retention_still_holds():
    plan = cq.plan(cq_want(backfill=dict(window="7d", run="on_change")),
                   bf_have(stored=None, retention={("tick", "standard"): 3 * DAY}))
    assert plan.result["backfill"]["start"] == "2026-12-03T11:00:00Z"
    assert "older raw points in tick.standard (duration 3d) may have expired" in plan.warnings[0]


@pytest.mark.parametrize(("backfill", "reason"), [
    (dict(since="2026-12-07T00:00:00Z"), "is in the future"),
    (dict(since="yesterday"), "not an RFC 3339 time"),
    (dict(since="2026-12-01T00:00:00"), "not an RFC 3339 time"),
    (dict(window="0s"), "window must be longer than 0"),
    (dict(window="10 days"), "is not an InfluxDB duration"),
    (dict(window="5000w", chunk="1h"), "more than 100000"),
])
def test_cq_backfill_refused_before_any_statement(backfill, reason):
    with pytest.raises(PlanError, match="continuous query tick.ticks_ohlc_1h: backfill") as exc:
        cq.plan(cq_want(backfill=dict(backfill, run="always")), bf_have())
    assert reason in str(exc.value)


def test_backfill_time_range_keeps_the_cqs_own_condition_whole():
    tokens = canonical_select("SELECT max(v) INTO agg.m FROM raw WHERE a = 'x' OR b = 'y' GROUP BY time(1h) fill(0)",
                              "db", "rp")
    assert render(bf.with_time_range(tokens, 0, HOUR)) == (
        "SELECT max(v) INTO db.agg.m FROM db.rp.raw WHERE time >= '1970-01-01T00:00:00Z' AND "
        "time < '1970-01-01T01:00:00Z' AND (a = 'x' OR b = 'y') GROUP BY time(1h) fill(0)")
    assert bf.group_by_time(canonical_select("SELECT max(v) INTO a.m FROM r GROUP BY time(1h, -15m) TZ('UTC')",
                                             "db", "rp")) == (HOUR, 45 * 60 * 10**9, "UTC")


def test_backfill_buckets_follow_offsets_and_daylight_saving():
    # time(1h, 15m): buckets start at a quarter past.
    assert [(bf.format_time(a), bf.format_time(b)) for a, b in bf.windows(
        NOW - 2 * HOUR, NOW, HOUR, 15 * 60 * 10**9)] == [
        ("2026-12-06T08:15:00Z", "2026-12-06T09:15:00Z"), ("2026-12-06T09:15:00Z", "2026-12-06T10:15:00Z")]
    # time(1d) TZ('Europe/Paris') across the end of summer time: a 25 h day, chunks at local midnight.
    paris = bf.load_zone("Europe/Paris")
    days = bf.windows(bf.parse_time("2026-10-24T12:00:00Z"), bf.parse_time("2026-10-27T12:00:00Z"), DAY, 0, paris)
    assert [(bf.format_time(a), (b - a) // HOUR) for a, b in days] == [
        ("2026-10-23T22:00:00Z", 24), ("2026-10-24T22:00:00Z", 25), ("2026-10-25T23:00:00Z", 24)]
    # At most 72 h per chunk, in whole local days: the 25 h day never shares a chunk with two others.
    chunks = bf.windows(bf.parse_time("2026-10-20T12:00:00Z"), bf.parse_time("2026-10-30T12:00:00Z"), DAY, 0, paris,
                        3 * DAY)
    assert [(b - a) // HOUR for a, b in chunks] == [72, 48, 49, 72]


def test_rp_default_switch_refused_when_the_current_default_holds_data():
    have = dict(rp_have(), current_default="autogen", current_default_points=(12, 3))
    with pytest.raises(PlanError, match="the current default 'autogen' holds 12 points \\(in 3 measurements\\)"):
        rp.plan(rp_want(default=True), have)
    assert rp.plan(rp_want(default=True, allow_default_switch=True), have).changed
    assert rp.plan(rp_want(default=True), dict(have, current_default_points=(0, 0))).changed
    assert rp.plan(rp_want(default=False), have).queries[0].endswith("REPLICATION 1")  # no switch, no refusal

# --- user ------------------------------------------------------------------------------------------


def user_want(**kw):
    want = dict(name="bridge", password="pw", admin=False, grants=[], update_password="always", state="present")
    want.update(kw)
    return want


def user_have(auth="on", current=None, databases=("tick", "telemetry"), password_ok=None):
    return dict(auth=auth, user=current, databases=list(databases), password_ok=password_ok)


def test_user_bootstrap_creates_the_first_admin_unauthenticated():
    plan = user.plan(user_want(name="admin", password="s3cret", admin=True), user_have(auth="bootstrap"))
    assert plan.queries == ["CREATE USER \"admin\" WITH PASSWORD '********' WITH ALL PRIVILEGES"]
    assert plan.changes[0].credentials is False and plan.result["bootstrapped"] is True
    with pytest.raises(PlanError, match="no admin user yet: create the admin"):
        user.plan(user_want(), user_have(auth="bootstrap"))


def test_user_grants_are_authoritative_and_the_password_is_set_only_when_it_fails():
    current = dict(name="bridge", admin=False, grants={"tick": "READ", "old": "WRITE"})
    plan = user.plan(user_want(grants=[{"database": "tick", "privilege": "write"},
                                       {"database": "telemetry", "privilege": "WRITE"}]),
                     user_have(current=current, databases=("tick", "telemetry", "old"), password_ok=False))
    assert plan.queries == [
        "SET PASSWORD FOR \"bridge\" = '********'",
        'GRANT WRITE ON "telemetry" TO "bridge"',
        'REVOKE ALL ON "tick" FROM "bridge"',
        'GRANT WRITE ON "tick" TO "bridge"',
        'REVOKE ALL ON "old" FROM "bridge"',
    ]
    assert plan.after["grants"] == {"tick": "WRITE", "telemetry": "WRITE"} and plan.after["password"] == "changed"
    declared = [{"database": "tick", "privilege": "READ"}, {"database": "old", "privilege": "WRITE"}]
    same = user.plan(user_want(grants=declared),
                     user_have(current=current, databases=("tick", "old"), password_ok=True))
    assert same.queries == []


def test_user_auth_off_warns_instead_of_guessing_the_password():
    current = dict(name="bridge", admin=False, grants={})
    plan = user.plan(user_want(), user_have(auth="off", current=current))
    assert plan.queries == [] and "cannot be verified" in plan.warnings[0]


def test_user_refusals():
    with pytest.raises(PlanError, match="grant on database 'nope', which does not exist"):
        user.plan(user_want(grants=[{"database": "nope", "privilege": "READ"}]), user_have())
    with pytest.raises(PlanError, match="password is required to create it"):
        user.plan(user_want(password=None), user_have())


@settings(max_examples=200, deadline=None)
@given(secret=st.text(max_size=40), existing=st.booleans())
def test_user_passwords_never_appear_in_what_is_shown(secret, existing):
    password = "pw:" + secret  # every escape character, lone surrogates, quotes, backslashes
    current = dict(name="u", admin=False, grants={}) if existing else None
    plan = user.plan(user_want(name="u", password=password, grants=[{"database": "tick", "privilege": "READ"}]),
                     user_have(current=current, password_ok=False))
    assert plan.changed
    shown = json.dumps([plan.queries, plan.before, plan.after, plan.result, plan.warnings], ensure_ascii=False)
    assert password not in shown
    # ...while the statements that run carry it, quoted so that InfluxQL reads it back exactly.
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    assert any("'%s'" % escaped in change.statement for change in plan.changes)
