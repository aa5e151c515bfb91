# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""A continuous query's read, pure plan and apply (with its backfill): shared by
influxdb1_continuous_query (one CQ per call) and influxdb1_schema (a whole schema per call)."""

from __future__ import annotations

import math
import re
import time

from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    InfluxDBError,
    Plan,
    PlanError,
    apply,
    quote_ident,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_backfill import (
    BackfillError,
    bucket_start,
    chunk_duration,
    format_time,
    from_sources,
    group_by_time,
    into_target,
    load_zone,
    next_bucket,
    parse_time,
    windows,
    with_time_range,
    without_into,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import (
    DurationError,
    format_duration,
    parse_duration,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_influxql import (
    canonical_select,
    cq_create_text,
    cq_statement,
    parse_stored_cq,
    render,
)

# Chunks whose reads a repair sends per request (two requests per batch).
REPAIR_BATCH = 50

# The scratch name a changed CQ is validated under before the old one is dropped.
PROBE_SUFFIX = "__station_stack_probe"


def stored_query(client, database, name):
    for row in client.rows("SHOW CONTINUOUS QUERIES"):
        if row["_series"] == database and row["name"] == name:
            return row["query"]
    return None


def read(client, database, name, query=None, backfill=None):
    """The server's side: whether the database exists, the CQ's stored text, the default RP, and
    for a backfill the clock and the durations of the retention policies its FROM clause reads."""
    if database not in client.databases():
        return dict(database_exists=False, stored=None, default_rp=None)
    have = dict(database_exists=True, stored=stored_query(client, database, name),
                default_rp=client.default_retention_policy(database))
    if backfill and query:
        have["now"] = time.time_ns()
        have["retention"] = {}
        try:
            sources = from_sources(canonical_select(query, database, have["default_rp"]))
        except (ValueError, KeyError):
            sources = []  # the plan names what is wrong with the query
        existing = client.databases()
        for source_db in sorted({db for db, _rp in sources if db in existing}):
            for row in client.rows("SHOW RETENTION POLICIES ON %s" % quote_ident(source_db)):
                have["retention"][(source_db, row["name"])] = parse_duration(row["duration"])
        if backfill.get("run") == "repair" and have["stored"]:
            have["repair"] = read_repair(client, database, name, have, backfill)
    return have


def read_repair(client, database, name, have, spec):
    """Per chunk of a repair's window, what the stored CQ's SELECT computes now (read-only, without
    INTO) and what its target holds: {(start, end): (computed, held)}. None when the window cannot
    be planned (the plan names why)."""
    label = "continuous query %s.%s" % (database, name)
    try:
        _every, for_, select = parse_stored_cq(have["stored"])
        tokens = canonical_select(select, database, have["default_rp"])
        chunks = backfill_plan(spec, have, label, tokens, for_, "repair")["windows"]
        target = into_target(tokens)
    except (PlanError, BackfillError, ValueError, KeyError):
        return None
    # Both reads of every chunk in two requests per batch of chunks (a round trip per statement
    # cost most of a repair's time), each statement still bounded to its chunk.
    out = {}
    for first in range(0, len(chunks), REPAIR_BATCH):
        batch = chunks[first:first + REPAIR_BATCH]
        statements = [render(without_into(with_time_range(tokens, start, end))) for start, end in batch]
        try:
            computed = [_points(result, target[2]) for result in client.query_many(statements, database)]
            reads = []
            for (start, end), points in zip(batch, computed, strict=True):
                measurements = sorted({key[0] for key in points})
                fields = sorted({field for values in points.values() for field in values})
                if measurements and fields:
                    reads.append("SELECT %s FROM %s WHERE time >= '%s' AND time < '%s' GROUP BY *" % (
                        ", ".join(quote_ident(f) for f in fields),
                        ", ".join("%s.%s.%s" % (quote_ident(target[0]), quote_ident(target[1]), quote_ident(m))
                                  for m in measurements), format_time(start), format_time(end)))
            held = iter(client.query_many(reads, target[0]))
        except InfluxDBError as exc:
            raise InfluxDBError("%s: repair cannot compare [%s, %s): %s" % (
                label, format_time(batch[0][0]), format_time(batch[-1][1]), exc.message), exc.status) from exc
        for chunk, points in zip(batch, computed, strict=True):
            out[chunk] = (points, _points(next(held), None) if points else {})
    return out


def _points(result, measurement):
    """{(measurement, tags, time): {field: value}} of a query's series, as SELECT ... INTO writes
    them: null fields left out, rows of nulls only (fill(null)) not written, empty tags dropped, a
    later series' value for the same point winning (several sources into one measurement)."""
    out = {}
    for series in result.get("series") or []:
        tags = tuple(sorted((k, v) for k, v in (series.get("tags") or {}).items() if v not in (None, "")))
        name = series.get("name") if measurement in (None, ":MEASUREMENT") else measurement
        columns = series.get("columns") or []
        for values in series.get("values") or []:
            row = dict(zip(columns, values, strict=True))
            stamp = row.pop("time", None)
            fields = {k: v for k, v in row.items() if v is not None}
            if fields:
                out.setdefault((name, tags, stamp), {}).update(fields)
    return out


def _same(a, b):
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    # The same float64 read back; a relative 1e-12 absorbs a mean summed in another order.
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def differences(computed, held):
    """Pure: the points (measurement, tags, time) whose computed value the target lacks or holds
    otherwise. What the target holds beyond the computation (fields or series of an older
    definition, intervals whose raw points expired) is no difference: SELECT ... INTO cannot remove it."""
    out = []
    for key, fields in computed.items():
        have = held.get(key, {})
        if any(field not in have or not _same(value, have[field]) for field, value in fields.items()):
            out.append(key)
    return out


def create_statement(name, database, query, every=None, for_=None):
    """The CREATE statement the module runs: the declared SELECT as written, resample durations normalised."""
    return cq_create_text(quote_ident(name), quote_ident(database), query, every, for_)


def _resample(value, option, label):
    if value is None or value == "":
        return None
    try:
        ns = parse_duration(value)
    except DurationError as exc:
        raise PlanError("%s: %s %s" % (label, option, exc)) from exc
    if ns == 0:
        raise PlanError("%s: %s must be longer than 0 (omit it for the server's default)" % (label, option))
    return ns


class CQPlan(Plan):
    """A Plan with the backfill that goes with it: changed when a statement or a chunk runs."""

    def __init__(self, before=None, after=None):
        super().__init__(before, after)
        self.backfill = None

    @property
    def changed(self):
        return bool(self.changes) or bool(self.backfill and self.backfill["windows"])


def backfill_plan(spec, have, label, select_tokens, resample_for, reason):
    """Pure: the chunks of a backfill (windows of whole buckets), or PlanError naming the problem."""
    now = have["now"]
    try:
        interval, offset, tz_name = group_by_time(select_tokens)
        zone = load_zone(tz_name)
        if spec.get("window"):
            length = parse_duration(spec["window"])
            if length == 0:
                raise BackfillError("window must be longer than 0")
            since = now - length
        else:
            since = parse_time(spec["since"])
            if since > now:
                raise BackfillError("since %s is in the future" % spec["since"])
        chunk = chunk_duration(spec.get("chunk"), interval, resample_for)
        warnings = []
        # Raw points older than a source RP's duration may be gone: start at the first whole bucket.
        for (source_db, source_rp) in from_sources(select_tokens):
            duration = have.get("retention", {}).get((source_db, source_rp))
            if duration and since < now - duration:
                first = bucket_start(now - duration, interval, offset, zone)
                if first < now - duration:
                    first = next_bucket(first, interval, offset, zone)
                warnings.append(
                    "%s: backfill starts at %s instead of %s: older raw points in %s.%s (duration %s) may have "
                    "expired, and recomputing a partly expired interval would overwrite its value with a partial "
                    "one" % (label, format_time(first), format_time(since), source_db, source_rp,
                             format_duration(duration)))
                since = first
        # A repair leaves the buckets the live CQ still recomputes on its next runs (the last
        # RESAMPLE FOR, else the last interval) to the CQ: their raw points may still be arriving.
        until = now - max(resample_for or interval, interval) if reason == "repair" else now
        chunks = windows(since, until, interval, offset, zone, chunk)
    except (BackfillError, DurationError) as exc:
        raise PlanError("%s: backfill %s" % (label, exc)) from exc
    return dict(reason=reason, windows=chunks, chunk=chunk, interval=interval, offset=offset, zone=zone,
                select=select_tokens, warnings=warnings)


def backfill_summary(backfill):
    """The backfill as the module returns it (and shows in the diff)."""
    chunks = backfill["windows"]
    out = dict(reason=backfill["reason"], chunks=len(chunks), chunk=format_duration(backfill["chunk"]))
    if backfill["reason"] == "repair":
        out.update(compared=backfill["compared"], differing_points=backfill["differing_points"],
                   differing=[dict(start=format_time(a), end=format_time(b)) for a, b in chunks])
    if chunks:
        out.update(start=format_time(chunks[0][0]), end=format_time(chunks[-1][1]),
                   first=dict(start=format_time(chunks[0][0]), end=format_time(chunks[0][1])),
                   last=dict(start=format_time(chunks[-1][0]), end=format_time(chunks[-1][1])),
                   first_query=render(with_time_range(backfill["select"], *chunks[0])),
                   last_query=render(with_time_range(backfill["select"], *chunks[-1])))
    return out


def _diff_lines(summary):
    if not summary["chunks"]:
        return ""
    if summary["reason"] == "repair":
        return "".join("-- repair: [%s, %s) differs from what the CQ computes: rewritten\n" % (c["start"], c["end"])
                       for c in summary["differing"]) + "-- %d of %d chunk(s), %d point(s) differing\n" % (
            summary["chunks"], summary["compared"], summary["differing_points"])
    return ("-- backfill (%s): %d chunk(s) of up to %s, %s .. %s\n-- first: %s\n-- last: %s\n" % (
        summary["reason"], summary["chunks"], summary["chunk"], summary["start"], summary["end"],
        summary["first_query"], summary["last_query"]))


def plan(want, have):
    """Pure: DROP and/or CREATE that make the server's CQ equal to the declared one, and the backfill.

    Both sides are compared and shown (diff) in the same canonical form, so quoting, keyword
    case, qualification with database and default RP, and duration spellings never count as a
    difference. Raises PlanError for a declaration that cannot be a CQ, before anything runs.
    """
    database, name = want["database"], want["name"]
    label = "continuous query %s.%s" % (database, name)
    if not have["database_exists"]:
        raise PlanError("database %r does not exist: create it before its continuous query %r" % (database, name))
    stored, default_rp = have["stored"], have["default_rp"]
    before_text = ""
    stored_tokens = None
    if stored:
        try:
            s_every, s_for, s_select = parse_stored_cq(stored)
        except ValueError as exc:
            raise PlanError("%s: %s" % (label, exc)) from exc
        stored_tokens = canonical_select(s_select, database, default_rp)
        before_text = cq_statement(name, database, stored_tokens, s_every, s_for)
    drop = "DROP CONTINUOUS QUERY %s ON %s" % (quote_ident(name), quote_ident(database))

    if want["state"] == "absent":
        result = CQPlan(before=before_text + "\n" if stored else "", after="")
        if stored:
            result.add(drop)
        return result

    query = (want.get("query") or "").strip()
    if not re.match(r"(?i)^SELECT\b", query) or not re.search(r"(?i)\bINTO\b", query):
        raise PlanError("%s: query must be a SELECT ... INTO ... statement (without CREATE CONTINUOUS QUERY/"
                        "BEGIN/END), got: %s" % (label, query))
    every = _resample(want.get("resample_every"), "resample_every", label)
    for_ = _resample(want.get("resample_for"), "resample_for", label)
    tokens = canonical_select(query, database, default_rp)
    after_text = cq_statement(name, database, tokens, every, for_)
    result = CQPlan(before=before_text + "\n" if stored else "", after=after_text + "\n")
    changed = after_text != before_text
    spec = want.get("backfill")
    if changed and (stored or spec):
        # A CQ cannot be altered. Validate the new one under a scratch name first, so a query the
        # server refuses never leaves the old CQ dropped (and a backfill reads the server's text).
        probe = name + PROBE_SUFFIX
        result.check(create_statement(probe, database, query, every, for_))
        result.check("DROP CONTINUOUS QUERY %s ON %s" % (quote_ident(probe), quote_ident(database)))
    if changed:
        if stored:
            result.add(drop)
        result.add(create_statement(name, database, query, every, for_))
    if spec:
        reason = ("changed" if stored else "created") if changed else (
            {"always": "requested", "repair": "repair"}.get(spec.get("run"), "none"))
        if reason == "repair":
            result.backfill = repair_plan(spec, have, label, stored_tokens, for_)
            result.warnings.extend(result.backfill["warnings"])
        elif reason == "none":
            result.backfill = dict(reason=reason, windows=[], chunk=0, select=tokens)
            result.backfill["chunk"] = chunk_duration(spec.get("chunk"), _interval(tokens, label), for_)
        else:
            # Unchanged: the server's own text; new or changed: the declaration, which the server
            # stores as the same canonical tokens (apply reads them back from the scratch copy).
            result.backfill = backfill_plan(spec, have, label, tokens if changed else stored_tokens, for_, reason)
            result.warnings.extend(result.backfill["warnings"])
        summary = backfill_summary(result.backfill)
        result.result["backfill"] = summary
        result.after = result.after + _diff_lines(summary)
    return result


def repair_plan(spec, have, label, select_tokens, resample_for):
    """Pure: the repair's chunks (those whose target differs from what the CQ computes now, as
    read by read_repair) out of the window's chunks."""
    backfill = backfill_plan(spec, have, label, select_tokens, resample_for, "repair")
    compared = have.get("repair")
    if compared is None:
        raise PlanError("%s: repair needs the CQ's INTO target as db.rp.measurement and a window it can read"
                        % label)
    differing, points = [], 0
    for chunk in backfill["windows"]:
        computed, held = compared.get(chunk, (None, None))
        if computed is None:
            raise PlanError("%s: repair read no comparison for chunk [%s, %s)" % (
                label, format_time(chunk[0]), format_time(chunk[1])))
        missing = differences(computed, held)
        if missing:
            differing.append(chunk)
            points += len(missing)
    backfill.update(compared=len(backfill["windows"]), windows=differing, differing_points=points)
    return backfill


def _interval(tokens, label):
    try:
        return group_by_time(tokens)[0]
    except BackfillError as exc:
        raise PlanError("%s: backfill %s" % (label, exc)) from exc


# --- apply ------------------------------------------------------------------------------------------


def _run(client, change):
    try:
        client.query(change.statement, credentials=change.credentials)
    except InfluxDBError as exc:
        raise InfluxDBError("InfluxDB refused `%s`: %s" % (change.shown, exc.message), exc.status) from exc


def run_chunks(client, database, label, select, chunks, note):
    """Runs each chunk's SELECT ... INTO; returns the points written. Fails naming the chunk."""
    written = 0
    for number, (start, end) in enumerate(chunks, 1):
        statement = render(with_time_range(select, start, end))
        try:
            answer = client.query(statement, database=database)
        except InfluxDBError as exc:
            raise InfluxDBError(
                "%s: backfill chunk %d/%d [%s, %s) failed: InfluxDB refused `%s`: %s. %s" % (
                    label, number, len(chunks), format_time(start), format_time(end), statement, exc.message,
                    note), exc.status) from exc
        for series in answer.get("series") or []:
            if "written" in series.get("columns", []):
                column = series["columns"].index("written")
                written += sum(int(row[column] or 0) for row in series.get("values") or [])
    return written


def apply_plan(client, result, params, have):
    """Runs the plan: without a backfill as every module does; with one, in the order that never
    leaves a gap reported as done (see the backfill option's documentation)."""
    backfill = result.backfill
    database, name = params["database"], params["name"]
    label = "continuous query %s.%s" % (database, name)
    if not backfill or not backfill["windows"]:
        apply(client, result)
        return
    select = backfill["select"]
    if result.changes:
        probe_create, probe_drop = result.checks
        _run(client, probe_create)
        try:
            probe_text = stored_query(client, database, name + PROBE_SUFFIX)
        finally:
            _run(client, probe_drop)
        if probe_text:  # the CQ as the server stores it: its SELECT is what the backfill runs
            select = canonical_select(parse_stored_cq(probe_text)[2], database, have["default_rp"])
        for change in result.changes[:-1]:  # the old definition's DROP
            _run(client, change)
        note = ("The continuous query was not created%s: a rerun backfills again and creates it." % (
            " (its old definition was dropped)" if have["stored"] else ""))
    else:
        note = "The continuous query is unchanged; %s." % (
            "a rerun compares again and rewrites the chunks that still differ" if backfill["reason"] == "repair"
            else "rerun the request to recompute the window")
    written = run_chunks(client, database, label, select, backfill["windows"], note)
    catch_up = []
    if result.changes:
        _run(client, result.changes[-1])
        # Buckets that completed while the backfill ran: the new CQ's first run computes only the last.
        end = backfill["windows"][-1][1]
        catch_up = windows(end, time.time_ns(), backfill["interval"], backfill["offset"], backfill["zone"],
                           backfill["chunk"])
        written += run_chunks(client, database, label, select, catch_up,
                              "The continuous query was created; rerun with backfill.run=always.")
    result.result["backfill"].update(written=written, catch_up_chunks=len(catch_up))
