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
  - Durations are compared by value, so C(30d) matches the server's C(720h0m0s), and a shard
    duration is compared as the server stores it (under 1h is raised to 1h, C(0) is its default).
  - A declaration InfluxDB would refuse (a duration under 1h other than C(INF), a shard duration
    longer than the duration, replication under 1) fails before any statement runs.
  - C(default=false) never un-sets a current default (InfluxDB can only move the default to
    another policy), so declaring one default per database never flip-flops.
  - Making a policy the default while the database's current default policy holds data is
    refused, naming that policy and its point count, unless O(allow_default_switch=true), because
    queries and writes that name no retention policy use the new default only, so the data in
    the old one seems to vanish (it is still there, under C(<database>.<old policy>.<measurement>)).
    Check mode reports the same refusal.
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
    description:
      - How long data is kept. Required when O(state=present).
      - Any InfluxDB 1.x duration (C(30d), C(1h30m), C(720h0m0s)); C(INF), C(0) and C(0s) keep data forever.
      - At least C(1h) unless infinite.
    type: str
  shard_duration:
    description:
      - Shard group duration. When omitted the server chooses on creation and it is not compared.
      - C(0) asks for the server's choice for the duration (compared as such).
    type: str
  replication:
    description: Replication factor (1 on a single node).
    type: int
    default: 1
  default:
    description: Make this the database's default policy.
    type: bool
    default: false
  allow_default_switch:
    description:
      - Make this policy the default even when the current default policy holds data.
      - The points are counted (C(SELECT count(*)) over the current default, the largest field
        count per measurement, added up) only when a switch is planned and this is false.
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
  description: The policy as it is after the change (as it would be, in check mode), durations as InfluxQL.
  returned: when state is present
  sample: {name: standard, duration: 30d, shard_duration: 1d, replication: 1, default: true}
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import connection_spec, run
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_rp import (
    plan,
    read,
)


def main():
    module = AnsibleModule(
        argument_spec=connection_spec(
            database=dict(type="str", required=True),
            name=dict(type="str", required=True),
            duration=dict(type="str"),
            shard_duration=dict(type="str"),
            replication=dict(type="int", default=1),
            default=dict(type="bool", default=False),
            allow_default_switch=dict(type="bool", default=False),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        required_if=[("state", "present", ["duration"])],
        supports_check_mode=True,
    )
    params = module.params

    def make_plan(have):
        result = plan(params, have)
        if params["state"] == "present":
            result.result["retention_policy"] = result.after
        return result

    run(module, lambda client: read(client, params["database"], params["name"],
                                    params["state"] == "present" and params["default"],
                                    params["allow_default_switch"]), make_plan)


if __name__ == "__main__":
    main()
