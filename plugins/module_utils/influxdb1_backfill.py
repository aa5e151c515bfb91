# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""Backfilling a continuous query: its own SELECT ... INTO over past intervals, in chunks.

A CQ computes only from the moment it exists, and only the intervals whose raw points had
arrived when it ran. Backfilling runs the CQ's SELECT (as the server stores it, in the canonical
token form of influxdb1_influxql) with `WHERE time >= a AND time < b` added, over chunks whose
bounds are boundaries of the CQ's GROUP BY time() buckets (its offset and TZ() included), so
every bucket is computed from all of its raw points in exactly one statement and lands at the
same series and time as the live CQ's result: a rerun rewrites the same values.

Pure Python: nothing here talks to a server.
"""

from __future__ import annotations

import datetime
import re

from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import (
    SECOND,
    DurationError,
    format_duration,
    parse_duration,
)

try:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
except ImportError:  # Python < 3.9: TZ() clauses cannot be aligned (refused with a message)
    ZoneInfo = None
    ZoneInfoNotFoundError = Exception

# More chunks than this is a mistake (a window of years over 1s buckets), refused before any runs.
MAX_CHUNKS = 100000

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$", re.I)


class BackfillError(ValueError):
    """A backfill that cannot be planned; the message says why."""


# --- time ---------------------------------------------------------------------------------------


def parse_time(text):
    """RFC 3339 with a zone (2026-11-01T00:00:00Z, 2026-11-01T02:00:00+02:00) -> ns since the epoch."""
    match = _RFC3339.match(str(text).strip())
    if not match:
        raise BackfillError("%r is not an RFC 3339 time with a zone, such as 2026-11-01T00:00:00Z" % (text,))
    day, clock, fraction, zone = match.groups()
    zone = "+00:00" if zone.upper() == "Z" else zone
    try:
        moment = datetime.datetime.fromisoformat("%sT%s%s" % (day, clock, zone))
    except ValueError as exc:
        raise BackfillError("%r is not a valid time: %s" % (text, exc)) from exc
    delta = moment - _EPOCH
    ns = (delta.days * 86400 + delta.seconds) * SECOND
    if fraction:
        ns += int(fraction.ljust(9, "0"))
    return ns


def format_time(ns):
    """ns since the epoch -> RFC 3339 in UTC, with a fraction only when there is one."""
    seconds, fraction = divmod(ns, SECOND)
    text = (_EPOCH + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += ("." + "%09d" % fraction).rstrip("0")
    return text + "Z"


# --- the CQ's GROUP BY time() -----------------------------------------------------------------------


def _depth_scan(tokens):
    """(index, token, parenthesis depth) for each token."""
    depth = 0
    for i, tok in enumerate(tokens):
        if tok == ("op", ")"):
            depth -= 1
        yield i, tok, depth
        if tok == ("op", "("):
            depth += 1


def group_by_time(tokens):
    """(interval_ns, offset_ns, tz name or None) of a canonical SELECT's GROUP BY time(...) and TZ()."""
    interval = offset = tz = None
    in_group = False
    for i, tok, depth in _depth_scan(tokens):
        if depth != 0:
            continue
        if tok[0] == "kw":
            if tok[1] == "GROUP":
                in_group = True
            elif tok[1] not in ("BY",):
                in_group = False
        if in_group and tok == ("func", "time"):
            args, sign, j = [], 1, i + 2
            while j < len(tokens) and tokens[j] != ("op", ")"):
                kind, value = tokens[j]
                if (kind, value) == ("op", "-"):
                    sign = -1
                elif kind == "duration":
                    args.append(sign * int(value))
                    sign = 1
                elif (kind, value) != ("op", ","):
                    raise BackfillError("GROUP BY time(...) with %r cannot be backfilled (a duration and an "
                                        "optional duration offset are)" % value)
                j += 1
            if not args or args[0] <= 0 or len(args) > 2:
                raise BackfillError("GROUP BY time(...) needs an interval longer than 0")
            interval = args[0]
            # As InfluxDB reads an offset: modulo the interval, never negative.
            offset = (args[1] if len(args) == 2 else 0) % interval
        if tok == ("func", "tz") and i + 2 < len(tokens) and tokens[i + 2][0] == "string":
            tz = tokens[i + 2][1]
    if interval is None:
        raise BackfillError("the query has no GROUP BY time(...) interval to backfill by")
    return interval, offset, tz


def from_sources(tokens):
    """(database, retention policy) of each measurement the FROM clause names (qualified tokens)."""
    sources = []
    in_from = False
    for i, tok, depth in _depth_scan(tokens):
        if depth != 0:
            continue
        if tok[0] == "kw":
            in_from = tok[1] == "FROM"
            continue
        # A qualified name: db . rp . measurement (the canonical form always has the three parts).
        if (in_from and tok[0] == "ident" and i + 4 < len(tokens) and tokens[i - 1] != ("op", ".")
                and tokens[i + 1] == ("op", ".") and tokens[i + 3] == ("op", ".")):
            sources.append((tok[1], tokens[i + 2][1]))
    return sorted(set(sources))


# --- buckets and chunks ---------------------------------------------------------------------------


def _zone_ns(tz, ns):
    if tz is None:
        return 0
    moment = _EPOCH + datetime.timedelta(seconds=ns // SECOND)
    return int(moment.astimezone(tz).utcoffset().total_seconds()) * SECOND


def load_zone(name):
    """The tzinfo for a CQ's TZ('...') clause, or None without one."""
    if name is None:
        return None
    if ZoneInfo is None:
        raise BackfillError("TZ('%s') needs Python's zoneinfo (3.9 or later) on the managed host" % name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BackfillError("unknown time zone in TZ('%s'): %s" % (name, exc)) from exc


def bucket_start(ns, interval, offset=0, zone=None):
    """Start of the GROUP BY time(interval, offset) TZ(zone) bucket holding ns, as InfluxDB's
    query engine computes it (IteratorOptions.Window): aligned to the epoch plus the offset, in
    the zone's local time, and moved by a daylight-saving change shorter than the interval."""
    t = ns - offset
    zone_offset = _zone_ns(zone, t)
    start = t - (t + zone_offset) % interval
    if zone is not None:
        change = zone_offset - _zone_ns(zone, start)
        if change and abs(change) < interval:
            start += change
    return start + offset


def next_bucket(start, interval, offset=0, zone=None):
    """Start of the bucket after the one starting at `start` (a 23 h or 25 h day under TZ())."""
    following = bucket_start(start + interval, interval, offset, zone)
    if following <= start:
        following = bucket_start(start + interval + interval // 2, interval, offset, zone)
    return following


def windows(since, until, interval, offset=0, zone=None, chunk=None):
    """[start, end) chunks of whole buckets covering the buckets from the one holding `since` up to
    (not including) the one holding `until`: each chunk spans at least one bucket and at most
    `chunk` ns (when longer than a bucket). Refuses more than MAX_CHUNKS."""
    start, end = bucket_start(since, interval, offset, zone), bucket_start(until, interval, offset, zone)
    if end <= start:
        return []
    chunk = max(chunk or interval, interval)
    estimate = (end - start) // (chunk - chunk % interval)  # a chunk holds whole buckets only
    if estimate > MAX_CHUNKS:
        raise BackfillError("the window %s .. %s is about %d chunks of %s (more than %d): choose a later start or "
                            "a longer chunk" % (format_time(start), format_time(end), estimate,
                                                format_duration(chunk), MAX_CHUNKS))
    out = []
    low = start
    while low < end:
        high = next_bucket(low, interval, offset, zone)
        while high < end and next_bucket(high, interval, offset, zone) - low <= chunk:
            high = next_bucket(high, interval, offset, zone)
        high = min(high, end)
        out.append((low, high))
        low = high
    return out


# --- the statements ---------------------------------------------------------------------------------


def with_time_range(tokens, start, end):
    """The canonical SELECT tokens with `time >= start AND time < end` added to its WHERE clause."""
    where = group = None
    for i, tok, depth in _depth_scan(tokens):
        if depth == 0 and tok == ("kw", "WHERE") and where is None:
            where = i
        if depth == 0 and tok == ("kw", "GROUP") and group is None:
            group = i
    if group is None:
        raise BackfillError("the query has no GROUP BY clause")
    condition = [("ident", "time"), ("op", ">="), ("string", format_time(start)), ("kw", "AND"),
                 ("ident", "time"), ("op", "<"), ("string", format_time(end))]
    if where is None:
        return tokens[:group] + [("kw", "WHERE")] + condition + tokens[group:]
    # The CQ's own condition kept whole in parentheses, so its ORs stay inside the time range.
    return (tokens[:where + 1] + condition + [("kw", "AND"), ("op", "(")] + tokens[where + 1:group]
            + [("op", ")")] + tokens[group:])


def without_into(tokens):
    """The canonical SELECT tokens without their INTO clause: the read-only query a repair compares."""
    out, skipping = [], False
    for _i, tok, depth in _depth_scan(tokens):
        if depth == 0 and tok == ("kw", "INTO"):
            skipping = True
            continue
        if depth == 0 and tok[0] == "kw" and tok[1] != "INTO":
            skipping = False
        if not skipping:
            out.append(tok)
    return out


def into_target(tokens):
    """(database, retention policy, measurement) of the canonical SELECT's INTO clause; the
    measurement is ":MEASUREMENT" for a backreference (each source measurement's own name)."""
    for i, tok, depth in _depth_scan(tokens):
        if depth == 0 and tok == ("kw", "INTO"):
            parts = tokens[i + 1:i + 6]
            if len(parts) == 5 and parts[1] == ("op", ".") and parts[3] == ("op", "."):
                return parts[0][1], parts[2][1], parts[4][1]
            break
    raise BackfillError("the query has no INTO db.rp.measurement target to compare with")


def chunk_duration(value, interval, resample_for):
    """The chunk length in ns: declared, or what one run of the CQ covers (RESAMPLE FOR, else the
    GROUP BY interval)."""
    if value in (None, ""):
        return max(resample_for or interval, interval)
    try:
        ns = parse_duration(value)
    except DurationError as exc:
        raise BackfillError("chunk %s" % exc) from exc
    return max(ns, interval)
