# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""A user's read and pure plan (password check, grants, first-admin bootstrap): shared by
influxdb1_user (one user per call) and influxdb1_schema (a whole schema per call)."""

from __future__ import annotations

from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    InfluxDBClient,
    InfluxDBError,
    Plan,
    PlanError,
    quote_ident,
    quote_string,
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
