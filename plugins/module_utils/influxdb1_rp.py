# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""A retention policy's read and pure plan: shared by influxdb1_retention_policy (one
policy per call) and influxdb1_schema (a whole schema per call)."""

from __future__ import annotations

from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    Plan,
    PlanError,
    quote_ident,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import (
    default_shard_duration,
    effective_shard_duration,
    format_duration,
    format_retention,
    parse_duration,
    retention_policy_error,
)


def count_points(client, database, rp):
    """(points, measurements) in a retention policy: per measurement its largest field count."""
    answer = client.query("SELECT count(*) FROM %s.%s./.*/" % (quote_ident(database), quote_ident(rp)),
                          database=database)
    points = measurements = 0
    for series in answer.get("series") or []:
        counts = [value for row in series.get("values") or []
                  for column, value in zip(series["columns"], row, strict=True) if column != "time" and value]
        if counts:
            points += max(counts)
            measurements += 1
    return points, measurements


def read(client, database, name, default=False, allow_default_switch=True):
    """The server's side: whether the database exists, the policy (durations in ns) or None, the
    database's current default policy and, when this one would take its place and the switch is
    not allowed anyway, the points that default holds."""
    if database not in client.databases():
        return dict(database_exists=False, policy=None)
    have = dict(database_exists=True, policy=None, current_default=None, current_default_points=None)
    for row in client.rows("SHOW RETENTION POLICIES ON %s" % quote_ident(database)):
        if row["default"]:
            have["current_default"] = row["name"]
        if row["name"] == name:
            have["policy"] = dict(
                name=name, duration=parse_duration(row["duration"]),
                shard_duration=parse_duration(row["shardGroupDuration"]),
                replication=row["replicaN"], default=row["default"])
    current = have["current_default"]
    if default and not allow_default_switch and current and current != name:
        have["current_default_points"] = count_points(client, database, current)
    return have


def default_switch_error(want, have, label):
    """'' when making this policy the default is safe (or allowed), else why it is refused."""
    current, counted = have.get("current_default"), have.get("current_default_points")
    if want.get("allow_default_switch") or not current or current == want["name"] or not counted:
        return ""
    points, measurements = counted
    if not points:
        return ""
    database = want["database"]
    return (
        "%s: refusing to make it the default retention policy of database %r: the current default %r holds "
        "%d points (in %d measurements). Queries and writes that name no retention policy would use %r only, so "
        "that data would seem to vanish (it stays readable as %s.%s.<measurement>). Move or drop it first, or "
        "set allow_default_switch=true (role: influxdb_allow_default_rp_switch: true) to switch anyway." % (
            label, database, current, points, measurements, want["name"], database, current))


def shown(policy):
    """A policy with readable durations, for diff and return values."""
    if not policy:
        return {}
    out = dict(policy)
    out["duration"] = format_retention(out["duration"])
    out["shard_duration"] = format_duration(out["shard_duration"])
    return out


def plan(want, have):
    """Pure: the CREATE, ALTER or DROP that turns the server's policy into the declared one.

    `want` holds the module's options (durations as text), `have` what read() returned.
    Raises PlanError for a declaration InfluxDB would refuse, before anything runs.
    """
    database, name = want["database"], want["name"]
    label = "retention policy %s.%s" % (database, name)
    if not have["database_exists"]:
        raise PlanError("database %r does not exist: create it before its retention policy %r" % (database, name))
    before = have["policy"]
    target = "%s ON %s" % (quote_ident(name), quote_ident(database))
    if want["state"] == "absent":
        result = Plan(before=shown(before), after={})
        if before:
            result.add("DROP RETENTION POLICY " + target)
        return result

    if want.get("duration") is None:
        raise PlanError("%s: duration is required when state=present" % label)
    problem = retention_policy_error(want["duration"], want.get("shard_duration"))
    if problem:
        raise PlanError("%s: %s" % (label, problem))
    if want["replication"] < 1:
        raise PlanError("%s: replication must be >= 1, got %d" % (label, want["replication"]))
    duration = parse_duration(want["duration"])
    # As the server will store it: under 1h is raised to 1h, 0 is its own choice for the duration.
    shard = (None if want.get("shard_duration") is None
             else effective_shard_duration(parse_duration(want["shard_duration"]), duration))

    if want["default"] and not (before and before["default"]):
        refused = default_switch_error(want, have, label)
        if refused:
            raise PlanError(refused)

    if before is None:
        after = dict(name=name, duration=duration, replication=want["replication"],
                     shard_duration=default_shard_duration(duration) if shard is None else shard,
                     default=bool(want["default"]))
        clauses = ["DURATION %s" % format_retention(duration), "REPLICATION %d" % want["replication"]]
        if shard is not None:
            clauses.append("SHARD DURATION %s" % format_duration(shard))
        if want["default"]:
            clauses.append("DEFAULT")
        return Plan(before={}, after=shown(after)).add("CREATE RETENTION POLICY %s %s" % (target, " ".join(clauses)))

    after = dict(before)
    clauses = []
    if before["duration"] != duration:
        clauses.append("DURATION %s" % format_retention(duration))
        after["duration"] = duration
    if before["replication"] != want["replication"]:
        clauses.append("REPLICATION %d" % want["replication"])
        after["replication"] = want["replication"]
    if shard is not None and before["shard_duration"] != shard:
        clauses.append("SHARD DURATION %s" % format_duration(shard))
        after["shard_duration"] = shard
    if duration and after["shard_duration"] > duration:
        raise PlanError(
            "%s: duration %s is shorter than the policy's current shard group duration %s, which InfluxDB "
            "refuses: declare a shard_duration of at most %s" % (
                label, want["duration"], format_duration(after["shard_duration"]), format_duration(duration)))
    # default: false never un-sets: InfluxDB cannot (it only moves the default), and it would flip-flop.
    if want["default"] and not before["default"]:
        clauses.append("DEFAULT")
        after["default"] = True
    result = Plan(before=shown(before), after=shown(after))
    if clauses:
        result.add("ALTER RETENTION POLICY %s %s" % (target, " ".join(clauses)))
    return result
