# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""InfluxDB 1.x durations: the one parser of the collection.

Used by the influxdb1_* modules and by the filter plugins the influxdb role's preflight checks
call (plugins/filter/influxdb1.py), so a value the checks accept is a value the modules accept.
Pure Python, no Ansible import: nothing here talks to a server.

Accepted, as InfluxDB accepts them:
- InfluxQL duration literals: integers with a unit, concatenated: ``30d``, ``1h30m``, ``2w1d``,
  ``500ms``, ``10u``, ``10µ``, ``100ns`` (units ns, u, µ, ms, s, m, h, d, w; case-sensitive);
- Go's spelling, which the server prints (``SHOW RETENTION POLICIES``) and reads in its
  configuration: ``720h0m0s``, ``1h0m0.5s``, ``1.5h``, ``10us``, ``10µs``;
- ``INF`` (any case), ``0`` and ``0s``: zero, which InfluxDB reads as "infinite" for a
  retention policy's duration.

Refused: negative values, bare numbers other than 0, unknown or upper-case units, spaces inside,
and anything over int64 nanoseconds (InfluxDB's "overflowed duration").
"""

from __future__ import annotations

import re

NANOSECOND = 1
MICROSECOND = 1000
MILLISECOND = 1000 * MICROSECOND
SECOND = 1000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
MAX_NS = 2**63 - 1

UNITS = {
    "ns": NANOSECOND,
    "u": MICROSECOND, "µ": MICROSECOND, "us": MICROSECOND, "µs": MICROSECOND, "μs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
    "d": DAY,
    "w": WEEK,
}

# Longest units first, so that "ms" is never read as "m" followed by garbage.
_PART = re.compile(r"([0-9]+)(?:\.([0-9]+))?(ns|us|µs|μs|ms|u|µ|s|m|h|d|w)")

# The smallest retention policy and shard group duration InfluxDB keeps (meta.MinRetentionPolicyDuration).
MIN_RETENTION = HOUR


class DurationError(ValueError):
    """A value InfluxDB would refuse as a duration; the message says why."""


def parse_duration(value):
    """Duration text (or a non-negative int of nanoseconds) -> int nanoseconds; INF and 0 -> 0.

    Raises DurationError with a message naming the value and the accepted forms.
    """
    if isinstance(value, bool):
        raise DurationError("%r is not a duration" % (value,))
    if isinstance(value, int):
        if value < 0:
            raise DurationError("%d: negative durations are not allowed" % value)
        if value > MAX_NS:
            raise DurationError("%d ns overflows InfluxDB's int64 durations: choose a smaller duration or INF" % value)
        return value
    if not isinstance(value, str):
        raise DurationError("%r is not a duration: use text such as 30d, 1h30m, 720h0m0s or INF" % (value,))
    text = value.strip()
    if text.upper() == "INF" or text == "0":
        return 0
    if text.startswith("-"):
        raise DurationError("%r: negative durations are not allowed" % value)
    total, pos = 0, 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        whole, fraction, unit = match.groups()
        scale = UNITS[unit]
        total += int(whole) * scale
        if fraction:
            # Exact decimal arithmetic: 1.5h is 5400 s, never a float's approximation.
            total += int(fraction) * scale // 10 ** len(fraction)
        pos = match.end()
    if not text or pos != len(text):
        raise DurationError(
            "%r is not an InfluxDB duration: use whole numbers with the units ns, u (or µ), ms, s, m, h, d, w "
            "(30d, 1h30m, 500ms), Go's spelling the server prints (720h0m0s), or INF" % value)
    if total > MAX_NS:
        raise DurationError("%r overflows InfluxDB's int64 durations: choose a smaller duration or INF" % value)
    return total


def duration_error(value):
    """'' when value is a duration parse_duration accepts, else the reason."""
    try:
        parse_duration(value)
    except DurationError as exc:
        return str(exc)
    return ""


def format_duration(ns):
    """Nanoseconds -> the InfluxQL literal with the largest exact unit (168h -> 1w, 90m -> 90m, 0 -> 0s).

    This is how InfluxDB itself prints durations inside statements (influxql.FormatDuration).
    """
    if ns == 0:
        return "0s"
    for unit in ("w", "d", "h", "m", "s", "ms", "u"):
        if ns % UNITS[unit] == 0:
            return "%d%s" % (ns // UNITS[unit], unit)
    return "%dns" % ns


def format_retention(ns):
    """A retention policy's duration as InfluxQL: INF for 0, else format_duration."""
    return "INF" if ns == 0 else format_duration(ns)


def default_shard_duration(duration_ns):
    """The shard group duration InfluxDB picks for a retention policy duration (meta.shardGroupDuration)."""
    if duration_ns == 0 or duration_ns >= 180 * DAY:
        return WEEK
    if duration_ns >= 2 * DAY:
        return DAY
    return HOUR


def effective_shard_duration(shard_ns, duration_ns):
    """The shard group duration InfluxDB stores for a requested one (meta.normalisedShardDuration).

    0 means "the server's choice" for the duration; anything under 1h is raised to 1h.
    """
    if shard_ns == 0:
        return default_shard_duration(duration_ns)
    if shard_ns < MIN_RETENTION:
        return default_shard_duration(MIN_RETENTION)
    return shard_ns


def retention_policy_error(duration, shard_duration=None):
    """'' when InfluxDB accepts a retention policy with these durations, else the reason.

    shard_duration None means "not declared": the server's choice, which always fits.
    """
    try:
        duration_ns = parse_duration(duration)
    except DurationError as exc:
        return "duration %s" % exc
    if duration_ns and duration_ns < MIN_RETENTION:
        return ("duration %r is shorter than InfluxDB's minimum retention of 1h (use 1h or more, or INF)"
                % (duration,))
    if shard_duration is None:
        return ""
    try:
        shard_ns = parse_duration(shard_duration)
    except DurationError as exc:
        return "shard_duration %s" % exc
    effective = effective_shard_duration(shard_ns, duration_ns)
    if duration_ns and effective > duration_ns:
        stored = "" if effective == shard_ns else " (stored as %s)" % format_duration(effective)
        return ("shard_duration %r%s is longer than duration %r: InfluxDB requires the retention duration "
                "to be at least the shard group duration" % (shard_duration, stored, duration))
    return ""
