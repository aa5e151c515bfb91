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
    Plan,
    PlanError,
    connection_spec,
    quote_ident,
    quote_string,
    run,
)

PRIVILEGE_NAMES = {"READ": "READ", "WRITE": "WRITE", "ALL PRIVILEGES": "ALL", "ALL": "ALL"}
MASKED = "'********'"


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


def password_works(params, name, password):
    """Logs in as the user: True when InfluxDB accepts the password."""
    try:
        InfluxDBClient(params, username=name, password=password).query("SHOW DATABASES")
    except InfluxDBError as exc:
        if exc.status == 401:
            return False
        if exc.status == 403:
            return True  # authenticated, just not allowed to list databases
        raise
    return True


def read(client, params):
    """The server's side: its auth state, the user, the databases and whether the password works.

    `password_ok` is None when it is not asked (no password, on_create) or cannot be known (auth off).
    """
    auth = client.auth_state()
    if auth == "bootstrap":
        return dict(auth=auth, user=None, databases=[], password_ok=None)
    user = current_user(client, params["name"])
    password_ok = None
    if user and params["password"] and params["update_password"] == "always" and auth == "on":
        password_ok = password_works(params, params["name"], params["password"])
    return dict(auth=auth, user=user, databases=client.databases(), password_ok=password_ok)


def plan(want, have):
    """Pure: the statements that give the user the declared password, admin flag and grants.

    Grants are authoritative. Passwords appear in the statements but never in what is shown.
    Raises PlanError for a declaration that cannot be applied, before anything runs.
    """
    name = want["name"]
    qname = quote_ident(name)

    if have["auth"] == "bootstrap":
        # Auth on and no admin yet: InfluxDB accepts exactly one statement, unauthenticated.
        result = Plan(before={}, after={} if want["state"] == "absent" else dict(name=name, admin=True, grants={}))
        result.result["bootstrapped"] = False
        if want["state"] == "absent":
            return result
        if not want["admin"]:
            raise PlanError("InfluxDB has auth enabled and no admin user yet: create the admin (admin: true) "
                            "before %r" % name)
        if not want["password"]:
            raise PlanError("user %r: password is required to create it" % name)
        statement = "CREATE USER %s WITH PASSWORD %%s WITH ALL PRIVILEGES" % qname
        result.add(statement % quote_string(want["password"]), statement % MASKED, credentials=False)
        result.result["bootstrapped"] = True
        return result

    before = have["user"]
    result = Plan(before=dict(before) if before else {})
    result.result["bootstrapped"] = False
    if want["state"] == "absent":
        if before:
            result.add("DROP USER %s" % qname)
        return result

    wanted = {} if want["admin"] else {g["database"]: g["privilege"].upper() for g in want["grants"] or []}
    missing = sorted(set(wanted) - set(have["databases"]))
    if missing:
        raise PlanError("user %r: grant on database %s, which does not exist"
                        % (name, ", ".join(repr(database) for database in missing)))
    after = dict(name=name, admin=want["admin"], grants=wanted)
    if not before:
        if not want["password"]:
            raise PlanError("user %r: password is required to create it" % name)
        statement = "CREATE USER %s WITH PASSWORD %%s%s" % (qname, " WITH ALL PRIVILEGES" if want["admin"] else "")
        result.add(statement % quote_string(want["password"]), statement % MASKED)
        current_grants = {}
    else:
        current_grants = before["grants"]
        if want["password"] and want["update_password"] == "always":
            if have["auth"] == "off":
                result.warnings.append("auth is disabled on the server, so the password of %r cannot be verified: "
                                       "it is only set when the user is created" % name)
            elif have["password_ok"] is False:
                statement = "SET PASSWORD FOR %s = %%s" % qname
                result.add(statement % quote_string(want["password"]), statement % MASKED)
                after["password"] = "changed"
        if before["admin"] and not want["admin"]:
            result.add("REVOKE ALL PRIVILEGES FROM %s" % qname)
        elif want["admin"] and not before["admin"]:
            result.add("GRANT ALL PRIVILEGES TO %s" % qname)
    if not want["admin"]:
        for database, privilege in sorted(wanted.items()):
            if current_grants.get(database) != privilege:
                if current_grants.get(database):
                    result.add("REVOKE ALL ON %s FROM %s" % (quote_ident(database), qname))
                result.add("GRANT %s ON %s TO %s" % (privilege, quote_ident(database), qname))
        for database in sorted(set(current_grants) - set(wanted)):
            result.add("REVOKE ALL ON %s FROM %s" % (quote_ident(database), qname))
    result.after = after
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
            update_password=dict(type="str", default="always", choices=["always", "on_create"], no_log=False),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    run(module, lambda client: read(client, params), lambda have: plan(params, have))


if __name__ == "__main__":
    main()
