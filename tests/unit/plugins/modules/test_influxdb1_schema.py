"""influxdb1_schema (the list form: a whole schema per call) against a real influxd."""

import json

OHLC = ("SELECT first(bid) AS open, max(bid) AS high, min(bid) AS low, last(bid) AS close "
        "INTO long_term.ohlc FROM ticks GROUP BY time(1h), *")


def schema(db, cq_query=OHLC, **kw):
    """A database with a default policy, a second one and a CQ whose FROM names no policy (so it
    follows the default); a writer and a reader with grants on it."""
    return dict(
        databases=[dict(name=db, retention_policies=[
            dict(name="standard", duration="30d", shard_duration="1d", default=True),
            dict(name="long_term", duration="365d", shard_duration="7d")],
            continuous_queries=[dict(name="ohlc", query=cq_query, resample_every="10m", resample_for="2h")])],
        users=[dict(name=db + "_writer", password="w-secret-" + db, grants=[dict(database=db, privilege="WRITE")]),
               dict(name=db + "_reader", password="r-secret-" + db, grants=[dict(database=db, privilege="READ")])],
        **kw)


def policies(server, db):
    return {r["name"]: (r["duration"], r["default"]) for r in server.query(f'SHOW RETENTION POLICIES ON "{db}"')}


def cqs(server, db):
    return {r["name"]: r["query"] for r in server.query("SHOW CONTINUOUS QUERIES") if r["_series"] == db}


def users(server):
    return {r["user"] for r in server.query("SHOW USERS")}


def grants(server, name):
    return {r["database"]: r["privilege"] for r in server.query(f'SHOW GRANTS FOR "{name}"')
            if r["privilege"] != "NO PRIVILEGES"}


def test_check_mode_on_a_new_schema_is_truthful_then_one_call_creates_it_and_a_rerun_changes_nothing(run, server):
    args = server.login(**schema("sch_new"))
    # Check mode: the policies, the CQ and the grants are planned against the database this call
    # would create (the single-object modules cannot: their database does not exist yet).
    checked = run("influxdb1_schema", args, check=True)
    assert checked["changed"] and "failed" not in checked, checked
    assert "sch_new" not in [r["name"] for r in server.query("SHOW DATABASES")]
    assert "sch_new_writer" not in users(server)
    created = run("influxdb1_schema", args)
    assert created["changed"] and "failed" not in created, created
    # What check mode said is what ran, object by object (the CQ's text qualified with the
    # default policy planned in the same call).
    assert created["queries"] == checked["queries"]
    assert created["diff"] == checked["diff"]
    assert [(r["kind"], r["name"], r["changed"]) for r in created["objects"]] == [
        ("database", "sch_new", True), ("retention_policy", "standard", True),
        ("retention_policy", "long_term", True), ("continuous_query", "ohlc", True),
        ("user", "sch_new_writer", True), ("user", "sch_new_reader", True)]
    # One diff entry per changed object, headed with its name.
    assert [d["before_header"] for d in created["diff"]] == [
        "database sch_new", "retention policy sch_new.standard", "retention policy sch_new.long_term",
        "continuous query sch_new.ohlc", "user sch_new_writer", "user sch_new_reader"]
    assert policies(server, "sch_new") == {"autogen": ("0s", False), "standard": ("720h0m0s", True),
                                           "long_term": ("8760h0m0s", False)}
    # The CQ's unqualified FROM follows the default planned in the same call (standard, not
    # autogen), on the server and in what check mode showed.
    assert "FROM sch_new.standard.ticks" in cqs(server, "sch_new")["ohlc"], cqs(server, "sch_new")
    assert "FROM sch_new.standard.ticks" in checked["diff"][3]["after"]
    assert grants(server, "sch_new_writer") == {"sch_new": "WRITE"}
    assert grants(server, "sch_new_reader") == {"sch_new": "READ"}
    again = run("influxdb1_schema", args)
    assert again["changed"] is False and again["queries"] == [] and again["diff"] == [], again
    assert run("influxdb1_schema", args, check=True)["changed"] is False


def test_the_single_object_modules_agree_with_it(run, server):
    args = server.login(**schema("sch_same"))
    run("influxdb1_schema", args)
    db = args["databases"][0]
    for rp in db["retention_policies"]:
        assert run("influxdb1_retention_policy", server.login(database="sch_same", **rp))["changed"] is False
    cq = db["continuous_queries"][0]
    assert run("influxdb1_continuous_query", server.login(database="sch_same", **cq))["changed"] is False
    for user in args["users"]:
        assert run("influxdb1_user", server.login(**user))["changed"] is False


def test_only_what_differs_changes_with_a_diff_per_object(run, server):
    args = server.login(**schema("sch_drift"))
    run("influxdb1_schema", args)
    args["databases"][0]["retention_policies"][1]["duration"] = "400d"
    args["users"][0]["password"] = "w-rotated"
    result = run("influxdb1_schema", args)
    assert result["changed"], result
    assert result["queries"] == ['ALTER RETENTION POLICY "long_term" ON "sch_drift" DURATION 400d',
                                 "SET PASSWORD FOR \"sch_drift_writer\" = '********'"]
    assert [r["name"] for r in result["objects"] if r["changed"]] == ["long_term", "sch_drift_writer"]
    assert [d["before_header"] for d in result["diff"]] == ["retention policy sch_drift.long_term",
                                                            "user sch_drift_writer"]
    assert result["diff"][0]["before"]["duration"] == "365d" and result["diff"][0]["after"]["duration"] == "400d"
    assert policies(server, "sch_drift")["long_term"] == ("9600h0m0s", False)
    status, _body = server.http("/query", {"q": "SHOW DATABASES"}, auth=("sch_drift_writer", "w-rotated"))
    assert status != 401


def test_no_password_in_the_result_and_check_mode_changes_none(run, server):
    args = server.login(**schema("sch_pw"))
    run("influxdb1_schema", args)
    args["users"][1]["password"] = "r-rotated-secret"
    checked = run("influxdb1_schema", args, check=True)
    assert checked["changed"]
    status, _body = server.http("/query", {"q": "SHOW DATABASES"}, auth=("sch_pw_reader", "r-secret-sch_pw"))
    assert status != 401  # check mode set nothing
    for result in (checked, run("influxdb1_schema", args)):
        text = json.dumps(result)
        for secret in ("r-rotated-secret", "w-secret-sch_pw", "r-secret-sch_pw", server.admin[1]):
            assert secret not in text, secret


def test_a_bad_declaration_anywhere_fails_before_any_change(run, server):
    args = server.login(**schema("sch_bad_first"))
    second = schema("sch_bad_second")["databases"][0]
    second["retention_policies"][1]["duration"] = "30m"  # InfluxDB refuses under 1h
    args["databases"].append(second)
    for check in (True, False):
        result = run("influxdb1_schema", args, check=check)
        assert result["failed"] and "retention policy sch_bad_second.long_term" in result["msg"], result
        assert "1h" in result["msg"]
    names = [r["name"] for r in server.query("SHOW DATABASES")]
    assert "sch_bad_first" not in names and "sch_bad_second" not in names
    assert "sch_bad_first_writer" not in users(server)


def test_a_refusal_while_applying_names_the_object_and_what_was_applied(run, server):
    # A CQ without GROUP BY time(): planned fine, refused by the server when created.
    args = server.login(**schema("sch_refused", cq_query="SELECT mean(bid) INTO long_term.raw FROM ticks"))
    result = run("influxdb1_schema", args)
    assert result["failed"], result
    assert "continuous query sch_refused.ohlc" in result["msg"], result["msg"]
    assert "applied before it: database sch_refused, retention policy sch_refused.standard" in result["msg"]
    assert "sch_refused_writer" not in users(server)  # users come after: not reached


def test_prune_drops_what_is_undeclared_but_never_a_database_nor_kept_users(run, server):
    args = server.login(**schema("sch_prune"))
    run("influxdb1_schema", args)
    run("influxdb1_retention_policy", server.login(database="sch_prune", name="stray", duration="2d"))
    run("influxdb1_continuous_query", server.login(database="sch_prune", name="stray_cq", query=OHLC))
    run("influxdb1_database", server.login(name="sch_prune_other"))
    for name in ("sch_prune_stray", "sch_prune_kept"):
        run("influxdb1_user", server.login(name=name, password="x"))
    pruning = dict(args, prune=True, keep_users=["sch_prune_kept"])
    # Every other test's users are undeclared here: keep them out of the prune (and out of the way).
    others = sorted(u for u in users(server) if not u.startswith("sch_prune"))
    pruning["keep_users"] += others
    checked = run("influxdb1_schema", pruning, check=True)
    assert {(r["kind"], r["name"]) for r in checked["objects"] if r["state"] == "absent"} == {
        ("continuous_query", "stray_cq"), ("retention_policy", "stray"), ("retention_policy", "autogen"),
        ("user", "sch_prune_stray")}
    assert "stray" in policies(server, "sch_prune")
    result = run("influxdb1_schema", pruning)
    assert result["changed"]
    assert set(policies(server, "sch_prune")) == {"standard", "long_term"}
    assert set(cqs(server, "sch_prune")) == {"ohlc"}
    assert "sch_prune_stray" not in users(server)
    assert {"sch_prune_kept", server.admin[0], *others} <= users(server)
    assert "sch_prune_other" in [r["name"] for r in server.query("SHOW DATABASES")]
    assert run("influxdb1_schema", pruning)["changed"] is False


def test_duplicates_are_refused(run, server):
    args = server.login(**schema("sch_dup"))
    args["users"].append(dict(args["users"][0]))
    result = run("influxdb1_schema", args)
    assert result["failed"] and "user declared more than once: 'sch_dup_writer'" in result["msg"], result


def test_prune_in_a_new_database_drops_its_autogen_in_the_same_call(run, server):
    # CREATE DATABASE adds `autogen`: undeclared, it goes in the call that created the database,
    # so the next converge changes nothing (and check mode said so).
    args = server.login(**schema("sch_prune_new"), prune=True)
    args["keep_users"] = sorted(users(server))
    checked = run("influxdb1_schema", args, check=True)
    created = run("influxdb1_schema", args)
    assert created["queries"] == checked["queries"]
    assert 'DROP RETENTION POLICY "autogen" ON "sch_prune_new"' in created["queries"], created["queries"]
    assert set(policies(server, "sch_prune_new")) == {"standard", "long_term"}
    assert run("influxdb1_schema", args)["changed"] is False


def test_planning_asks_each_show_statement_once(run, server, monkeypatch):
    # InfluxDB checks the credentials of every request (bcrypt, ~70 ms on a station): the
    # single-object reads asked SHOW DATABASES and a database's policies once per object.
    from ansible_collections.station_stack.station.plugins.module_utils import influxdb1_api

    args = server.login(**schema("sch_count"), prune=True)
    args["keep_users"] = sorted(users(server))
    run("influxdb1_schema", args)
    asked = []
    query = influxdb1_api.InfluxDBClient.query

    def counting(self, statement, database=None, credentials=True):
        asked.append(statement)
        return query(self, statement, database, credentials)

    monkeypatch.setattr(influxdb1_api.InfluxDBClient, "query", counting)
    assert run("influxdb1_schema", args)["changed"] is False
    # SHOW DATABASES unauthenticated (the auth state), as the admin, and as each user (its login).
    assert {s for s in asked if asked.count(s) > 1} == {"SHOW DATABASES"}, asked
    assert asked.count("SHOW DATABASES") == 2 + len(args["users"]), asked
    assert len(asked) == 9, asked  # without the planning cache: 22


def test_a_default_switch_away_from_a_default_holding_data_is_refused_unless_allowed(run, server):
    """The guard the role's influxdb_allow_default_rp_switch sets, as the role calls it (this module,
    its allow_default_switch): a declared default policy would replace autogen, which holds data
    written before the schema: refused before any change, in check mode too; allowed, it switches.
    A database this call creates holds nothing: its default is set without the flag."""
    run("influxdb1_database", server.login(name="sch_guard"))  # autogen is its default
    status, body = server.http("/write", {"db": "sch_guard", "rp": "autogen", "precision": "s"},
                               body=b"m1 v=1 1700000000\nm1 v=2 1700000001\nm2 x=1 1700000000")
    assert status == 204, body
    args = server.login(**schema("sch_guard"))
    args["databases"].append(schema("sch_guard_new")["databases"][0])
    args.pop("users")
    for check in (True, False):
        refused = run("influxdb1_schema", args, check=check)
        assert refused["failed"], refused
        assert "retention policy sch_guard.standard" in refused["msg"], refused["msg"]
        assert "current default 'autogen' holds 3 points (in 2 measurements)" in refused["msg"], refused["msg"]
        assert "influxdb_allow_default_rp_switch" in refused["msg"]
    assert policies(server, "sch_guard") == {"autogen": ("0s", True)}  # nothing changed, not even the other policy
    assert "sch_guard_new" not in [r["name"] for r in server.query("SHOW DATABASES")]
    allowed = run("influxdb1_schema", dict(args, allow_default_switch=True))
    assert allowed["changed"] and "failed" not in allowed, allowed
    assert policies(server, "sch_guard") == {"autogen": ("0s", False), "standard": ("720h0m0s", True),
                                             "long_term": ("8760h0m0s", False)}
    assert policies(server, "sch_guard_new")["standard"] == ("720h0m0s", True)
    # Already the default: the guard has nothing to refuse.
    again = run("influxdb1_schema", args)
    assert again["changed"] is False and "failed" not in again, again
