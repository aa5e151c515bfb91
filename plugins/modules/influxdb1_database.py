#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: influxdb1_database
short_description: Create or drop an InfluxDB 1.x database
description:
  - Creates or drops a database over the InfluxDB 1.x HTTP API.
  - Check mode reports the change without executing it; diff mode shows the database before and after.
  - C(state=absent) drops the database with all its data; the role never does that implicitly.
options:
  name:
    description: Database name.
    type: str
    required: true
  state:
    description: Whether the database exists. C(absent) drops it and all its data.
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
- name: Create the tick database
  station_stack.station.influxdb1_database:
    name: tick
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"
"""

RETURN = r"""
queries:
  description: Statements executed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    connection_spec,
    database_plan,
    run,
)

# The pure plan, by the name the unit tests use.
plan = database_plan


def main():
    module = AnsibleModule(
        argument_spec=connection_spec(
            name=dict(type="str", required=True),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    run(module, lambda client: client.databases(), lambda databases: plan(params["name"], params["state"], databases))


if __name__ == "__main__":
    main()
