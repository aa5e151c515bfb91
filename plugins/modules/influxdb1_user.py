#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: influxdb1_user
short_description: Manage an InfluxDB 1.x user, its admin flag and its grants
description:
  - Creates, updates or drops a user. The declared I(grants) are authoritative
    (missing ones are granted, others revoked).
  - First-admin bootstrap. With auth on and no admin yet, InfluxDB accepts exactly
    C(CREATE USER ... WITH ALL PRIVILEGES) without credentials. The module detects that state
    and creates the admin, so a role can log in as the admin it is about to create.
  - Passwords are verified by logging in as the user when auth is on. With auth off a password
    cannot be verified; it is then only set on creation and a warning says so.
  - The diff never contains a password.
options:
  name:
    description: User name.
    type: str
    required: true
  password:
    description: Password. Required to create a user.
    type: str
  admin:
    description: Whether the user has all privileges.
    type: bool
    default: false
  grants:
    description: Privileges per database; the whole list is enforced.
    type: list
    elements: dict
    default: []
    suboptions:
      database:
        description: Database name.
        type: str
        required: true
      privilege:
        description: Privilege.
        type: str
        required: true
        choices: [READ, WRITE, ALL]
  update_password:
    description: C(always) sets a password that does not authenticate; C(on_create) only sets it for new users.
    type: str
    choices: [always, on_create]
    default: always
  state:
    description: Whether the user exists.
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
- name: Bootstrap the admin (also works while no admin exists yet)
  station_stack.station.influxdb1_user:
    name: admin
    password: "{{ influxdb_admin_password }}"
    admin: true
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"
  no_log: true

- name: A writer for the bridge
  station_stack.station.influxdb1_user:
    name: bridge
    password: "{{ influxdb_writer_password }}"
    grants:
      - {database: tick, privilege: WRITE}
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"
  no_log: true
"""

RETURN = r"""
queries:
  description: Statements executed (or that would be), passwords masked.
  returned: always
  type: list
  elements: str
bootstrapped:
  description: Whether this run created the first admin while auth was on.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import connection_spec, run
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_users import (
    plan,
    read,
)


def main():
    module = AnsibleModule(
        argument_spec=connection_spec(
            name=dict(type="str", required=True),
            password=dict(type="str", no_log=True),
            admin=dict(type="bool", default=False),
            grants=dict(type="list", elements="dict", default=[], options=dict(
                database=dict(type="str", required=True),
                privilege=dict(type="str", required=True, choices=["READ", "WRITE", "ALL"]),
            )),
            update_password=dict(type="str", default="always", choices=["always", "on_create"], no_log=False),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    run(module, lambda client: read(client, params), lambda have: plan(params, have))


if __name__ == "__main__":
    main()
