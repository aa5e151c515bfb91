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
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    InfluxDBClient,
    InfluxDBError,
    connection_spec,
    quote_ident,
    quote_string,
    run_module,
)

PRIVILEGE_NAMES = {"READ": "READ", "WRITE": "WRITE", "ALL PRIVILEGES": "ALL", "ALL": "ALL"}


def current_user(client, name):
    for row in client.rows("SHOW USERS"):
        if row["user"] == name:
            grants = {}
            for grant in client.rows("SHOW GRANTS FOR %s" % quote_ident(name)):
                privilege = PRIVILEGE_NAMES.get(grant["privilege"].upper())
                if privilege:
                    grants[grant["database"]] = privilege
            return dict(name=name, admin=row["admin"], grants=grants)
    return None


def password_works(module, name, password):
    try:
        InfluxDBClient(module, username=name, password=password).query("SHOW DATABASES")
    except InfluxDBError as exc:
        if exc.status == 401:
            return False
        if exc.status == 403:
            return True  # authenticated, just not allowed to list databases
        raise
    return True


class Plan:
    """Statements to run; the masked copy is what the module returns."""

    def __init__(self):
        self.statements, self.shown = [], []

    def add(self, statement, shown=None):
        self.statements.append(statement)
        self.shown.append(shown or statement)


def ensure(module, client):
    p = module.params
    name = p["name"]
    qname = quote_ident(name)
    plan = Plan()
    masked = "'********'"

    if not client.admin_exists():
        # Bootstrap window: only the first admin may be created, unauthenticated.
        if p["state"] == "absent":
            return dict(changed=False, queries=[], bootstrapped=False)
        if not p["admin"]:
            module.fail_json(msg="InfluxDB has auth enabled and no admin user yet: create the admin "
                                 "(admin: true) before %r" % name)
        if not p["password"]:
            module.fail_json(msg="user %r: password is required to create it" % name)
        statement = "CREATE USER %s WITH PASSWORD %%s WITH ALL PRIVILEGES" % qname
        if not module.check_mode:
            client.query(statement % quote_string(p["password"]), credentials=False)
        result = dict(changed=True, queries=[statement % masked], bootstrapped=True)
        if module._diff:
            result["diff"] = dict(before={}, after=dict(name=name, admin=True, grants={}))
        return result

    before = current_user(client, name)
    after = None
    warnings = []
    if p["state"] == "absent":
        if before:
            plan.add("DROP USER %s" % qname)
    else:
        wanted = {}
        for grant in p["grants"]:
            wanted[grant["database"]] = grant["privilege"].upper()
        after = dict(name=name, admin=p["admin"], grants=wanted if not p["admin"] else {})
        if not before:
            if not p["password"]:
                module.fail_json(msg="user %r: password is required to create it" % name)
            statement = "CREATE USER %s WITH PASSWORD %%s%s" % (qname, " WITH ALL PRIVILEGES" if p["admin"] else "")
            plan.add(statement % quote_string(p["password"]), statement % masked)
            current_grants = {}
        else:
            current_grants = before["grants"]
            if p["password"] and p["update_password"] == "always":
                if client.auth_enabled():
                    if not password_works(module, name, p["password"]):
                        plan.add("SET PASSWORD FOR %s = %s" % (qname, quote_string(p["password"])),
                                 "SET PASSWORD FOR %s = %s" % (qname, masked))
                        after["password"] = "changed"
                else:
                    warnings.append("auth is disabled on the server, so the password of %r cannot be "
                                    "verified: it is only set when the user is created" % name)
            if before["admin"] and not p["admin"]:
                plan.add("REVOKE ALL PRIVILEGES FROM %s" % qname)
            elif p["admin"] and not before["admin"]:
                plan.add("GRANT ALL PRIVILEGES TO %s" % qname)
        if not p["admin"]:
            databases = set(client.databases())
            for database, privilege in sorted(wanted.items()):
                if database not in databases:
                    module.fail_json(msg="user %r: grant on database %r, which does not exist" % (name, database))
                if current_grants.get(database) != privilege:
                    if current_grants.get(database):
                        plan.add("REVOKE ALL ON %s FROM %s" % (quote_ident(database), qname))
                    plan.add("GRANT %s ON %s TO %s" % (privilege, quote_ident(database), qname))
            for database in sorted(set(current_grants) - set(wanted)):
                plan.add("REVOKE ALL ON %s FROM %s" % (quote_ident(database), qname))

    if not module.check_mode:
        for statement in plan.statements:
            client.query(statement)
    result = dict(changed=bool(plan.statements), queries=plan.shown, bootstrapped=False)
    for warning in warnings:
        module.warn(warning)
    if module._diff:
        result["diff"] = dict(before=before or {}, after=after or {})
    return result


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
            update_password=dict(type="str", default="always", choices=["always", "on_create"]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
    )
    run_module(module, lambda client: ensure(module, client))


if __name__ == "__main__":
    main()
