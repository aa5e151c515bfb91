import time

import pytest
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_backfill import format_time, parse_time

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


# --- backfill ---------------------------------------------------------------------------------------
# Raw points written before the CQ exists (and late, after it ran): the backfill must make the
# target hold what the CQ computes live, compared with values computed here in Python from the
# raw points themselves, per tag and time. The test influxd runs no CQ itself ([continuous_queries]
# enabled = false), so every point in a target was written by the module.

HOUR = 3600 * 10**9
SECOND = 10**9
PROBE = "__station_stack_probe"
time_text = format_time
parse = parse_time


def write(server, db, rp, lines):
    status, body = server.http("/write", {"db": db, "rp": rp, "precision": "ns"}, body="\n".join(lines).encode())
    assert status == 204, body


def rows(server, q):
    """{(host, time): {field: value}} of a query."""
    _status, payload = server.http("/query", {"q": q, "epoch": "ns"})
    result = payload["results"][0]
    assert "error" not in result, result
    out = {}
    for series in result.get("series", []):
        for values in series.get("values") or []:
            row = dict(zip(series["columns"], values, strict=True))
            out[((series.get("tags") or {}).get("host"), row.pop("time"))] = row
    return out


def expected(raw, start, end, aggregate):
    """Per (host, hour bucket) in [start, end): {"v": aggregate(values), "n": count}."""
    buckets = {}
    for host, ns, value in raw:
        if start <= ns < end:
            buckets.setdefault((host, ns - ns % HOUR), []).append(value)
    return {key: {"n": len(values), "v": aggregate(values)} for key, values in buckets.items()}


def mean(values):
    return sum(values) / len(values)


def assert_same(got, want):
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    for key, row in want.items():
        assert got[key]["n"] == row["n"], (key, got[key], row)
        assert got[key]["v"] == pytest.approx(row["v"]), (key, got[key], row)


@pytest.fixture(scope="module")
def raw(run, server):
    """Database bfdb: raw points in raw.m (hosts a and b), 14 h back, several per hour, none aggregated yet."""
    run("influxdb1_database", server.login(name="bfdb"))
    run("influxdb1_retention_policy", server.login(database="bfdb", name="raw", duration="30d", default=True))
    run("influxdb1_retention_policy", server.login(database="bfdb", name="agg", duration="INF"))
    now = time.time_ns()
    current = now - now % HOUR
    points = []
    for hour in range(-14, 1):  # hour 0: the bucket in progress, which the backfill must leave alone
        for k, minute in enumerate((1, 17, 29, 44, 58)):
            for host, scale in (("a", 1.0), ("b", 10.0)):
                if host == "b" and hour == -5:
                    continue  # a bucket with points of one host only
                ns = current + hour * HOUR + minute * 60 * SECOND
                if ns < now:
                    points.append((host, ns, scale * (hour + 20) + k * 0.25))
    write(server, "bfdb", "raw", [f"m,host={h} v={v} {ns}" for h, ns, v in points])
    return dict(points=points, current=current)


def backfilled(server, name, query, backfill, **kw):
    return server.login(database="bfdb", name=name, query=query, backfill=backfill, **kw)


MEAN = "SELECT mean(v) AS v, count(v) AS n INTO agg.{target} FROM raw.m GROUP BY time(1h), host"


def target(server, name, start=None, end=None):
    where = " WHERE time >= %d AND time < %d" % (start, end) if start is not None else ""
    return rows(server, "SELECT v, n FROM bfdb.agg.%s%s GROUP BY host" % (name, where))


def test_backfill_on_create_equals_the_live_cq_then_reruns_change_nothing(run, server, raw):
    since = raw["current"] - 10 * HOUR - 20 * 60 * SECOND  # mid-bucket: the whole bucket of -11 h counts
    args = backfilled(server, "bf_mean", MEAN.format(target="bf_mean"),
                      {"since": time_text(since)}, resample_every="10m", resample_for="2h")
    created = run("influxdb1_continuous_query", args)
    assert created["changed"], created
    summary = created["backfill"]
    start, end = parse(summary["start"]), parse(summary["end"])
    assert start == raw["current"] - 11 * HOUR
    assert end in (raw["current"], raw["current"] + HOUR)  # the bucket in progress at the run is left out
    assert summary["reason"] == "created" and summary["chunk"] == "2h"  # RESAMPLE FOR: what one run covers
    assert summary["chunks"] == -(-(end - start) // (2 * HOUR))
    assert summary["first_query"].startswith("SELECT mean(v) AS v, count(v) AS n INTO bfdb.agg.bf_mean "
                                             "FROM bfdb.raw.m WHERE time >= '%s' AND time < '%s' GROUP BY"
                                             % (summary["start"], summary["first"]["end"])), summary
    want = expected(raw["points"], start, end, mean)
    assert summary["written"] == len(want)
    stored_rows = target(server, "bf_mean")
    assert_same(stored_rows, want)
    # The same buckets computed the plain way by InfluxDB itself, over the whole window at once, agree.
    plain = rows(server, "SELECT mean(v) AS v, count(v) AS n FROM bfdb.raw.m WHERE time >= '%s' AND time < '%s' "
                         "GROUP BY time(1h), host fill(none)" % (summary["start"], summary["end"]))
    assert_same(stored_rows, plain)
    assert "bf_mean" in stored(server, "bfdb") and not any(PROBE in n for n in stored(server, "bfdb"))
    again = run("influxdb1_continuous_query", args)
    assert again["changed"] is False and again["queries"] == [], again
    assert again["backfill"]["reason"] == "none" and again["backfill"]["chunks"] == 0
    assert target(server, "bf_mean") == stored_rows


def test_changed_cq_recomputes_the_window_the_new_way(run, server, raw):
    window = {"window": "8h"}
    run("influxdb1_continuous_query", backfilled(server, "bf_change", MEAN.format(target="bf_change"), window))
    changed = run("influxdb1_continuous_query", backfilled(
        server, "bf_change", MEAN.format(target="bf_change").replace("mean(v)", "max(v)"), window))
    assert changed["changed"] and [q.split(" ")[0] for q in changed["queries"]] == ["DROP", "CREATE"]
    summary = changed["backfill"]
    assert summary["reason"] == "changed" and summary["chunk"] == "1h"  # no RESAMPLE FOR: one interval
    assert "max(v)" in stored(server, "bfdb")["bf_change"]
    start, end = parse(summary["start"]), parse(summary["end"])
    assert_same(target(server, "bf_change", start, end), expected(raw["points"], start, end, max))
    assert not any(PROBE in name for name in stored(server, "bfdb"))


def test_backfill_request_picks_up_late_points_and_reports_changed(run, server, raw):
    query = MEAN.format(target="bf_late")
    run("influxdb1_continuous_query", backfilled(server, "bf_late", query, {"window": "6h"}))
    # An outage's backlog: points of 3 h ago arrive after their interval was computed.
    late_ns = raw["current"] - 3 * HOUR + 30 * 60 * SECOND
    write(server, "bfdb", "raw", [f"m,host=a v=1000 {late_ns}"])
    key = ("a", raw["current"] - 3 * HOUR)
    assert target(server, "bf_late")[key]["n"] == 5
    request = backfilled(server, "bf_late", query, {"since": time_text(raw["current"] - 4 * HOUR), "run": "always"})
    checked = run("influxdb1_continuous_query", request, check=True)
    assert checked["changed"] and checked["backfill"]["reason"] == "requested" and checked["queries"] == []
    assert "-- backfill (requested)" in checked["diff"]["after"]
    assert target(server, "bf_late")[key]["n"] == 5  # check mode ran nothing
    done = run("influxdb1_continuous_query", request)
    assert done["changed"] and done["backfill"]["chunks"] >= 4 and done["queries"] == []
    start, end = parse(done["backfill"]["start"]), parse(done["backfill"]["end"])
    got = target(server, "bf_late", start, end)
    assert got[key]["n"] == 6
    assert_same(got, expected(raw["points"] + [("a", late_ns, 1000.0)], start, end, mean))


def test_check_mode_reports_the_chunks_and_runs_nothing(run, server, raw):
    args = backfilled(server, "bf_check", MEAN.format(target="bf_check"), {"window": "5h"})
    result = run("influxdb1_continuous_query", args, check=True)
    summary = result["backfill"]
    assert result["changed"] and summary["reason"] == "created" and summary["chunks"] in (5, 6)
    assert parse(summary["last"]["end"]) - parse(summary["last"]["start"]) == HOUR
    after = result["diff"]["after"]
    assert "-- backfill (created): %d chunk(s) of up to 1h" % summary["chunks"] in after
    assert summary["first_query"] in after and summary["last_query"] in after
    assert "bf_check" not in stored(server, "bfdb")
    assert "bf_check" not in {r["name"] for r in server.query("SHOW MEASUREMENTS ON bfdb")}


def test_failed_chunk_names_it_and_leaves_the_cq_to_the_next_run(run, server, raw):
    # agg.bf_fail.v already holds strings: the backfill's floats conflict with that field type.
    write(server, "bfdb", "agg", [f'bf_fail,host=a v="text" {raw["current"] - 3 * HOUR}'])
    result = run("influxdb1_continuous_query", backfilled(server, "bf_fail", MEAN.format(target="bf_fail"),
                                                          {"window": "3h"}))
    assert result["failed"]
    assert "backfill chunk 1/" in result["msg"] and "field type conflict" in result["msg"], result["msg"]
    assert "was not created" in result["msg"]
    assert "bf_fail" not in stored(server, "bfdb")


def test_backfill_aligns_chunks_to_time_zone_days(run, server, raw):
    """GROUP BY time(1d) TZ(...): buckets start at local midnight, so chunks must too, or a day would be
    computed in two parts and the later part overwrite the whole."""
    now = time.time_ns()
    # 4.4 days of points, every 90 min: a 3d window aligned down to local midnight starts at most 4 days back,
    # so each of its 3 days holds points whatever the time of day the test runs at.
    write(server, "bfdb", "raw", [f"mtz,host=z v={k % 7 + k / 10} {now - k * 90 * 60 * SECOND}" for k in range(1, 72)])
    query = ("SELECT mean(v) AS v, count(v) AS n INTO agg.bf_tz FROM raw.mtz GROUP BY time(1d), host "
             "TZ('America/Sao_Paulo')")
    result = run("influxdb1_continuous_query", backfilled(server, "bf_tz", query, {"window": "3d"}))
    summary = result["backfill"]
    assert summary["start"].endswith("T03:00:00Z") and summary["end"].endswith("T03:00:00Z"), summary
    plain = rows(server, "SELECT mean(v) AS v, count(v) AS n FROM bfdb.raw.mtz WHERE time >= '%s' AND time < '%s' "
                         "GROUP BY time(1d), host fill(none) TZ('America/Sao_Paulo')"
                 % (summary["start"], summary["end"]))
    got = rows(server, "SELECT v, n FROM bfdb.agg.bf_tz GROUP BY host")
    assert len(plain) >= 3 and set(got) == set(plain)
    for key, row in plain.items():
        assert got[key]["n"] == row["n"] and got[key]["v"] == pytest.approx(row["v"])


# --- repair (backfill.run=repair): compare each chunk, rewrite only those that differ ---------------

LATE = "SELECT mean(v) AS v, count(v) AS n, sum(q) AS q INTO agg.{target} FROM raw.late GROUP BY time(1h), *"


def computed_now(server, query_from, start, end, tail="GROUP BY time(1h), * fill(none)"):
    """What the CQ's SELECT computes now over [start, end), by InfluxDB itself (no INTO)."""
    return rows(server, "SELECT mean(v) AS v, count(v) AS n, sum(q) AS q FROM %s WHERE time >= %d AND time < %d %s"
                % (query_from, start, end, tail))


def test_repair_rewrites_exactly_the_chunks_whose_raw_points_arrived_late(run, server, raw):
    current = raw["current"]
    # Its own raw measurement (other tests add points to raw.m): 10 h of floats and integers, two hosts.
    write(server, "bfdb", "raw", [f"late,host={h},site=x v={k * 0.1 + (3 if h == 'b' else 0)},q={k}i "
                                  f"{current - hour * HOUR + k * 7 * 60 * SECOND}"
                                  for hour in range(1, 11) for k in range(8) for h in ("a", "b")])
    args = backfilled(server, "bf_repair", LATE.format(target="bf_repair"), {"window": "12h", "run": "repair"})
    created = run("influxdb1_continuous_query", args)
    assert created["changed"] and created["backfill"]["reason"] == "created", created
    # Unchanged: every chunk compared, none differs, nothing written.
    again = run("influxdb1_continuous_query", args)
    summary = again["backfill"]
    assert again["changed"] is False and again["queries"] == [], again
    assert summary["reason"] == "repair" and summary["chunks"] == 0 and summary["compared"] >= 10, summary
    # An outage's backlog: late raw points in two of the hours (4 h and 7 h ago), delivered now,
    # and one in the hour that just ended, which the live CQ still recomputes (no RESAMPLE FOR: its
    # next run covers the last interval): left to it.
    now = time.time_ns()
    late = [current - 4 * HOUR + 30 * 60 * SECOND, current - 7 * HOUR + 5 * SECOND]
    write(server, "bfdb", "raw", [f"late,host=a,site=x v=50.5,q=1000i {ns}"
                                  for ns in [*late, now - now % HOUR - HOUR + 10 * 60 * SECOND]])
    before = target_late(server, "bf_repair", current)
    checked = run("influxdb1_continuous_query", args, check=True, diff=True)
    summary = checked["backfill"]
    assert checked["changed"] and checked["queries"] == [], checked
    differing = [(parse(c["start"]), parse(c["end"])) for c in summary["differing"]]
    assert differing == [(current - 7 * HOUR, current - 6 * HOUR), (current - 4 * HOUR, current - 3 * HOUR)], summary
    assert summary["chunks"] == 2 and summary["differing_points"] == 2
    assert "-- repair: [%s, %s)" % (time_text(current - 7 * HOUR), time_text(current - 6 * HOUR)) \
        in checked["diff"]["after"]
    assert target_late(server, "bf_repair", current) == before  # check mode wrote nothing
    done = run("influxdb1_continuous_query", args)
    assert done["changed"] and done["queries"] == [] and done["backfill"]["chunks"] == 2, done
    assert done["backfill"]["written"] == 4  # each rewritten hour: hosts a and b
    after = target_late(server, "bf_repair", current)
    rewritten = {key for key in after if after[key] != before.get(key)}
    assert rewritten == {("a", current - 7 * HOUR), ("a", current - 4 * HOUR)}, rewritten
    window = (current - 11 * HOUR, current - HOUR)
    fresh = computed_now(server, "bfdb.raw.late", *window)
    assert after == fresh and len(fresh) == 18, (after, fresh)  # hours -10 .. -2, hosts a and b
    assert after[("a", current - 4 * HOUR)]["n"] == 9 and after[("a", current - 4 * HOUR)]["q"] == 1028
    # A rerun right after changes nothing.
    rerun = run("influxdb1_continuous_query", args)
    assert rerun["changed"] is False and rerun["backfill"]["chunks"] == 0, rerun


def target_late(server, name, current):
    return rows(server, "SELECT v, n, q FROM bfdb.agg.%s WHERE time >= %d AND time < %d GROUP BY host"
                % (name, current - 11 * HOUR, current - HOUR))


@pytest.mark.parametrize("name, query", [
    ("fill0_backref", "SELECT count(v) AS n INTO agg.:MEASUREMENT FROM raw.gappy GROUP BY time(1h), * fill(0)"),
    ("null_fill_float", "SELECT mean(v) AS v, max(v) AS top INTO agg.bf_nullfill FROM raw.gappy GROUP BY time(30m)"),
])
def test_repair_of_an_unchanged_cq_is_idempotent_with_fill_and_backreference(run, server, raw, name, query):
    """fill(0) writes zeros for empty buckets, fill(null) writes nothing for them, floats from
    means: none of them may read as a difference once computed."""
    # Hours with gaps (empty buckets), floats that are not exact in binary.
    write(server, "bfdb", "raw", [f"gappy,host=g v={k / 3} {raw['current'] - hour * HOUR + k * SECOND}"
                                  for hour in (2, 3, 6, 9) for k in range(1, 4)])
    # Chunks of 4 h: fill(0) then writes zeros for the empty hours within a chunk.
    args = backfilled(server, "bf_" + name, query, {"window": "12h", "run": "repair", "chunk": "4h"})
    assert run("influxdb1_continuous_query", args)["backfill"]["reason"] == "created"
    again = run("influxdb1_continuous_query", args)
    assert again["changed"] is False and again["backfill"]["compared"] >= 3, again
    assert again["backfill"]["chunks"] == 0, again["backfill"]
    # The first one's target really holds zeros for the empty hours (so they were compared).
    if name == "fill0_backref":
        zeros = rows(server, "SELECT n FROM bfdb.agg.gappy WHERE n = 0")
        assert len(zeros) >= 3, zeros


def test_repair_compares_more_chunks_than_one_request_holds(run, server, raw):
    """More than REPAIR_BATCH chunks (3 days of hours): read in several requests, each chunk paired
    with its own reads (a late point in the first batch and one in the last found, nothing else)."""
    args = backfilled(server, "bf_wide", LATE.format(target="bf_wide"), {"window": "3d", "run": "repair"})
    run("influxdb1_continuous_query", args)
    current = raw["current"]
    late = [current - 60 * HOUR + 60 * SECOND, current - 5 * HOUR + 60 * SECOND]
    write(server, "bfdb", "raw", [f"late,host=c v=1.5,q=2i {ns}" for ns in late])
    result = run("influxdb1_continuous_query", args)
    summary = result["backfill"]
    assert summary["compared"] > 60 and result["changed"], summary
    assert [parse(c["start"]) for c in summary["differing"]] == [current - 60 * HOUR, current - 5 * HOUR], summary
    assert run("influxdb1_continuous_query", args)["changed"] is False
