#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: influxdb1_retention_policy
short_description: Manage an InfluxDB 1.x retention policy
description:
  - Creates, alters in place or drops a retention policy.
  - Durations are compared by value, so C(30d) matches the server's C(720h0m0s).
  - C(default=false) never un-sets a current default (InfluxDB can only move the default to
    another policy), so declaring one default per database never flip-flops.
options:
  database:
    description: Database of the policy; it must exist.
    type: str
    required: true
  name:
    description: Policy name.
    type: str
    required: true
  duration:
    description: How long data is kept (C(30d), C(168h), C(INF)). Required when I(state=present).
    type: str
  shard_duration:
    description: Shard group duration. When omitted the server chooses and it is not compared.
    type: str
  replication:
    description: Replication factor (1 on a single node).
    type: int
    default: 1
  default:
    description: Make this the database's default policy.
    type: bool
    default: false
  state:
    description: Whether the policy exists.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - station_stack.station.influxdb1
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
author: station-stack contributors (@station-stack)
"""

EXAMPLES = r"""
- name: Keep raw ticks for 30 days by default
  station_stack.station.influxdb1_retention_policy:
    database: tick
    name: standard
    duration: 30d
    shard_duration: 1d
    default: true
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"
"""

RETURN = r"""
queries:
  description: Statements executed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
retention_policy:
  description: The policy as the server reports it after the change.
  returned: when state is present
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    connection_spec,
    format_duration,
    parse_duration,
    quote_ident,
    run_module,
)


def current_policy(client, database, name):
    for row in client.rows("SHOW RETENTION POLICIES ON %s" % quote_ident(database)):
        if row["name"] == name:
            return dict(name=name, duration=parse_duration(row["duration"]),
                        shard_duration=parse_duration(row["shardGroupDuration"]),
                        replication=row["replicaN"], default=row["default"])
    return None


def shown(policy):
    """Policy with readable durations for diff and return values."""
    if not policy:
        return {}
    out = dict(policy)
    for key in ("duration", "shard_duration"):
        if out.get(key) is not None:
            out[key] = "INF" if out[key] == 0 and key == "duration" else format_duration(out[key])
    return out


def ensure(module, client):
    p = module.params
    database, name = p["database"], p["name"]
    if database not in client.databases():
        module.fail_json(msg="database %r does not exist: create it before its retention policy %r"
                         % (database, name))
    before = current_policy(client, database, name)
    target = quote_ident(name) + " ON " + quote_ident(database)
    queries = []
    after = None

    if p["state"] == "absent":
        if before:
            queries.append("DROP RETENTION POLICY " + target)
    else:
        if p["duration"] is None:
            module.fail_json(msg="retention policy %s.%s: duration is required when state=present"
                             % (database, name))
        try:
            duration = parse_duration(p["duration"])
            shard = parse_duration(p["shard_duration"]) if p["shard_duration"] else None
        except ValueError as exc:
            module.fail_json(msg="retention policy %s.%s: %s" % (database, name, exc))
        if p["replication"] < 1:
            module.fail_json(msg="retention policy %s.%s: replication must be >= 1" % (database, name))
        clauses = []
        after = dict(before or {}, name=name)
        if not before or before["duration"] != duration:
            clauses.append("DURATION %s" % (format_duration(duration) if duration else "INF"))
            after["duration"] = duration
        if not before or before["replication"] != p["replication"]:
            clauses.append("REPLICATION %d" % p["replication"])
            after["replication"] = p["replication"]
        if shard is not None and (not before or before["shard_duration"] != shard):
            clauses.append("SHARD DURATION %s" % format_duration(shard))
            after["shard_duration"] = shard
        # default: false never un-sets: InfluxDB cannot, and it would flip-flop.
        if p["default"] and not (before and before["default"]):
            clauses.append("DEFAULT")
            after["default"] = True
        after.setdefault("default", False)
        if not before:
            queries.append("CREATE RETENTION POLICY %s %s" % (target, " ".join(clauses)))
        elif clauses:
            queries.append("ALTER RETENTION POLICY %s %s" % (target, " ".join(clauses)))

    if not module.check_mode:
        for statement in queries:
            client.query(statement)
        if p["state"] == "present" and queries:
            after = current_policy(client, database, name)
    result = dict(changed=bool(queries), queries=queries)
    if p["state"] == "present":
        result["retention_policy"] = shown(after)
    if module._diff:
        result["diff"] = dict(before=shown(before), after=shown(after) if p["state"] == "present" else {})
    return result


def main():
    module = AnsibleModule(
        argument_spec=connection_spec(
            database=dict(type="str", required=True),
            name=dict(type="str", required=True),
            duration=dict(type="str"),
            shard_duration=dict(type="str"),
            replication=dict(type="int", default=1),
            default=dict(type="bool", default=False),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        required_if=[("state", "present", ["duration"])],
        supports_check_mode=True,
    )
    run_module(module, lambda client: ensure(module, client))


if __name__ == "__main__":
    main()
