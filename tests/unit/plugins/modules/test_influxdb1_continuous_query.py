import pytest

REALISTIC = {
    "ohlc": ("SELECT first(bid) AS open, max(bid) AS high, min(bid) AS low, last(bid) AS close, "
             "sum(volume) AS volume INTO long_term.ticks_ohlc_1h FROM standard.ticks GROUP BY time(1h), *",
             "10m", "2h"),
    "unqualified_from_where_fill": (
        "select MEAN(bid) into cqdb.long_term.m from ticks where instrument = 'EURUSD' and bid > 1.0 "
        "group by time(60m), instrument fill(none)", None, None),
    "regex_backreference_offset": (
        'SELECT count("bid") AS "n" INTO "long_term".:MEASUREMENT FROM /.*/ GROUP BY time(1h,15m),* fill(0)',
        None, "120m"),
    "quoted_names_arithmetic_regex_where": (
        'SELECT max(v) * 2 + 1.50 AS x INTO "my rp"."weird name" FROM "select" '
        "WHERE host =~ /^a.*/ AND v != 0 GROUP BY time(1d)", "1h", None),
    "several_sources_tz": (
        "SELECT mean(v) AS m INTO long_term.agg FROM cqdb..src, long_term.b GROUP BY time(30s) TZ('Europe/Paris')",
        None, None),
    "escaped_string": (
        r"SELECT last(v) INTO long_term.esc FROM ticks WHERE t = 'it\'s' GROUP BY time(1w)", None, None),
}


@pytest.fixture(scope="module")
def db(run, server):
    run("influxdb1_database", server.login(name="cqdb"))
    for name, duration, default in (("standard", "30d", True), ("long_term", "365d", False),
                                    ("my rp", "1h", False)):
        run("influxdb1_retention_policy", server.login(database="cqdb", name=name, duration=duration,
                                                       default=default))
    return "cqdb"


def stored(server, db):
    return {r["name"]: r["query"] for r in server.query("SHOW CONTINUOUS QUERIES") if r["_series"] == db}


def cq(server, db, name, query, every=None, for_=None, **kw):
    args = server.login(database=db, name=name, query=query, **kw)
    if every:
        args["resample_every"] = every
    if for_:
        args["resample_for"] = for_
    return args


@pytest.mark.parametrize("name", sorted(REALISTIC))
def test_realistic_cq_is_created_then_idempotent(run, server, db, name):
    query, every, for_ = REALISTIC[name]
    first = run("influxdb1_continuous_query", cq(server, db, name, query, every, for_))
    assert first["changed"], first
    assert first["server_query"] == stored(server, db)[name]
    second = run("influxdb1_continuous_query", cq(server, db, name, query, every, for_))
    assert second["changed"] is False, (second, stored(server, db)[name])
    assert second["queries"] == []


def test_changed_query_is_dropped_and_recreated(run, server, db):
    base = "SELECT mean(bid) AS bid INTO long_term.drift FROM ticks GROUP BY time(1h)"
    run("influxdb1_continuous_query", cq(server, db, "drift", base))
    changed = base.replace("mean(bid)", "median(bid)")
    result = run("influxdb1_continuous_query", cq(server, db, "drift", changed))
    assert [q.split(" ")[0] for q in result["queries"]] == ["DROP", "CREATE"]
    assert "median(bid)" in stored(server, db)["drift"]
    assert "mean(bid)" in result["diff"]["before"] and "median(bid)" in result["diff"]["after"]
    assert run("influxdb1_continuous_query", cq(server, db, "drift", changed))["changed"] is False


@pytest.mark.parametrize("change", ["number", "group_by", "resample", "into"])
def test_every_kind_of_drift_is_detected(run, server, db, change):
    base = ("SELECT mean(bid) * 2 AS b INTO long_term.kinds FROM ticks GROUP BY time(1h)", None, "2h")
    name = f"kind_{change}"
    run("influxdb1_continuous_query", cq(server, db, name, *base))
    query, every, for_ = base
    if change == "number":
        query = query.replace("* 2", "* 3")
    elif change == "group_by":
        query = query.replace("time(1h)", "time(1h), instrument")
    elif change == "resample":
        for_ = "3h"
    else:
        query = query.replace("long_term.kinds", "long_term.kinds2")
    assert run("influxdb1_continuous_query", cq(server, db, name, query, every, for_))["changed"]


def test_check_mode_reports_drift_and_leaves_server(run, server, db):
    run("influxdb1_continuous_query", cq(server, db, "chk", "SELECT max(v) INTO long_term.c FROM t GROUP BY time(1h)"))
    before = stored(server, db)
    result = run("influxdb1_continuous_query",
                 cq(server, db, "chk", "SELECT min(v) INTO long_term.c FROM t GROUP BY time(1h)"), check=True)
    assert result["changed"] and len(result["queries"]) == 2
    assert stored(server, db) == before


def test_bad_target_fails_and_keeps_the_existing_cq(run, server, db):
    good = "SELECT max(v) INTO long_term.keep FROM t GROUP BY time(1h)"
    run("influxdb1_continuous_query", cq(server, db, "keep", good))
    result = run("influxdb1_continuous_query",
                 cq(server, db, "keep", "SELECT max(v) INTO missing_rp.keep FROM t GROUP BY time(1h)"))
    assert result["failed"] and "retention policy not found" in result["msg"]
    assert "long_term.keep" in stored(server, db)["keep"]
    assert not any("probe" in name for name in stored(server, db))


def test_not_a_select_fails_clearly(run, server, db):
    result = run("influxdb1_continuous_query", cq(server, db, "x", "CREATE CONTINUOUS QUERY x ON cqdb BEGIN END"))
    assert result["failed"] and "must be a SELECT ... INTO" in result["msg"]


def test_absent(run, server, db):
    run("influxdb1_continuous_query", cq(server, db, "gone", "SELECT max(v) INTO long_term.g FROM t GROUP BY time(1h)"))
    result = run("influxdb1_continuous_query", server.login(database=db, name="gone", state="absent"))
    assert result["changed"] and "gone" not in stored(server, db)
    assert run("influxdb1_continuous_query", server.login(database=db, name="gone", state="absent"))["changed"] is False


# Per case, one real change written the operator's way, and how it reads in the canonical text.
CHANGES = {
    "ohlc": ("sum(volume) AS volume", "SUM(volume) AS vol", "sum(volume) AS volume", "sum(volume) AS vol"),
    "unqualified_from_where_fill": ("MEAN(bid)", "median(bid)", "mean(bid)", "median(bid)"),
    "regex_backreference_offset": ('AS "n"', 'AS "m"', "AS n", "AS m"),
    "quoted_names_arithmetic_regex_where": ("* 2 +", "* 3 +", "* 2 +", "* 3 +"),
    "several_sources_tz": ("Europe/Paris", "Europe/Berlin", "Europe/Paris", "Europe/Berlin"),
    "escaped_string": ("last(v)", "FIRST(v)", "last(v)", "first(v)"),
}


@pytest.mark.parametrize("name", sorted(REALISTIC))
def test_check_diff_compares_normalised_texts_on_both_sides(run, server, db, name):
    """--check --diff of a real change shows that change and nothing else (issue 13): the server's
    stored text and the declared statement are normalised the same way."""
    query, every, for_ = REALISTIC[name]
    cq_name = "diff_" + name
    created = run("influxdb1_continuous_query", cq(server, db, cq_name, query, every, for_))
    assert created["changed"] and created["diff"]["before"] == ""
    unchanged = run("influxdb1_continuous_query", cq(server, db, cq_name, query, every, for_), check=True)
    assert unchanged["changed"] is False
    assert unchanged["diff"]["before"] == unchanged["diff"]["after"] == created["diff"]["after"]
    declared_old, declared_new, canonical_old, canonical_new = CHANGES[name]
    assert declared_old in query and canonical_old in unchanged["diff"]["before"]
    changed = run("influxdb1_continuous_query",
                  cq(server, db, cq_name, query.replace(declared_old, declared_new), every, for_), check=True)
    assert changed["changed"]
    before, after = changed["diff"]["before"], changed["diff"]["after"]
    assert before == unchanged["diff"]["before"]
    assert after == before.replace(canonical_old, canonical_new), (before, after)
