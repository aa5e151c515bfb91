# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""InfluxDB 1.x duration filters, on the collection's one duration parser (module_utils/influxdb1_duration.py).

The influxdb role's preflight checks use them, so a duration the checks accept is one the
influxdb1_* modules accept, and the reason for a refusal is the same text in both.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import (
    DurationError,
    duration_error,
    parse_duration,
    retention_policy_error,
)


def influxdb1_duration(value):
    """Duration text -> nanoseconds (INF and 0 -> 0); fails on anything InfluxDB refuses."""
    try:
        return parse_duration(value)
    except DurationError as exc:
        raise AnsibleFilterError("influxdb1_duration: %s" % exc) from exc


def influxdb1_duration_error(value):
    """'' when InfluxDB accepts the duration, else the reason."""
    return duration_error(value)


def influxdb1_retention_policy_error(policy):
    """'' when InfluxDB accepts a retention policy {duration, shard_duration?, replication?}, else the reason."""
    if not isinstance(policy, dict):
        raise AnsibleFilterError("influxdb1_retention_policy_error: expects a dict, got %s" % type(policy).__name__)
    problem = retention_policy_error(policy.get("duration"), policy.get("shard_duration"))
    if problem:
        return problem
    replication = policy.get("replication", 1)
    if isinstance(replication, bool) or not isinstance(replication, int) or replication < 1:
        return "replication must be an integer >= 1, got %r" % (replication,)
    return ""


class FilterModule:
    def filters(self):
        return {
            "influxdb1_duration": influxdb1_duration,
            "influxdb1_duration_error": influxdb1_duration_error,
            "influxdb1_retention_policy_error": influxdb1_retention_policy_error,
        }
