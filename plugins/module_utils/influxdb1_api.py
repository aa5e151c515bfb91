# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""Shared by the influxdb1_* modules: connection options, InfluxQL over HTTP, quoting, and the
read -> plan -> apply cycle every module follows.

A module reads the server's current state (I/O), hands it with the declared state to a pure
`plan()` that returns a Plan (the statements that close the gap, the state before and the state
after), and applies the Plan unless in check mode. Check mode, diff and `changed` all come from
the Plan, so `--check --diff` shows exactly what a real run does.

Only the standard library and ansible.module_utils: stations need no client library.
"""

from __future__ import annotations

import json

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import urlencode
from ansible.module_utils.urls import open_url

# Documented once, in the doc fragment station_stack.station.influxdb1.
CONNECTION_ARGS = dict(
    login_host=dict(type="str", default="localhost"),
    login_port=dict(type="int", default=8086),
    login_username=dict(type="str"),
    login_password=dict(type="str", no_log=True),
    ssl=dict(type="bool", default=False),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    timeout=dict(type="int", default=10),
)

# InfluxDB's reply while auth is on and no admin exists yet: only
# `CREATE USER ... WITH ALL PRIVILEGES` is accepted then.
NO_ADMIN_MESSAGE = "create admin user first"


def connection_spec(**options):
    """The modules' argument spec: their own options plus the connection options."""
    spec = dict(CONNECTION_ARGS)
    spec.update(options)
    return spec


class InfluxDBError(Exception):
    """An HTTP or InfluxQL error, with the server's own message."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


class PlanError(Exception):
    """The declared state cannot be reached (refused before any change); the message says why."""


class InfluxDBClient:
    """InfluxQL over the 1.x HTTP API (`POST /query`)."""

    def __init__(self, params, username=None, password=None):
        self.base_url = "%s://%s:%d" % (
            "https" if params["ssl"] else "http", params["login_host"], params["login_port"])
        self.username = params["login_username"] if username is None else username
        self.password = params["login_password"] if password is None else password
        self.validate_certs = params["validate_certs"]
        self.ca_path = params.get("ca_path")
        self.timeout = params["timeout"]

    def query(self, statement, database=None, credentials=True):
        """Runs one statement; returns its result dict. Raises InfluxDBError."""
        payload, status = self._request(statement, database, credentials)
        result = (payload.get("results") or [{}])[0]
        if "error" in result:
            raise InfluxDBError(result["error"], status)
        return result

    def query_many(self, statements, database=None):
        """Runs several statements in one request (one round trip); returns their result dicts in
        order. Raises InfluxDBError naming the first statement refused."""
        if not statements:
            return []
        payload, status = self._request(";\n".join(statements), database, True)
        results = sorted(payload.get("results") or [], key=lambda r: r.get("statement_id", 0))
        for result in results:
            if "error" in result:
                index = result.get("statement_id", 0)
                shown = statements[index] if 0 <= index < len(statements) else "?"
                raise InfluxDBError("%s (in `%s`)" % (result["error"], shown), status)
        if len(results) != len(statements):
            raise InfluxDBError("InfluxDB at %s answered %d results for %d statements"
                                % (self.base_url, len(results), len(statements)), status)
        return results

    def _request(self, statement, database, credentials):
        """POST /query; returns (payload, HTTP status) after the request-level errors."""
        fields = {"q": statement}
        if database:
            fields["db"] = database
        kwargs = dict(
            method="POST", data=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            validate_certs=self.validate_certs, timeout=self.timeout,
        )
        if self.ca_path:
            kwargs["ca_path"] = self.ca_path
        authenticated = credentials and bool(self.username)
        if authenticated:
            kwargs.update(url_username=self.username, url_password=self.password or "",
                          force_basic_auth=True)
        try:
            response = open_url(self.base_url + "/query", **kwargs)
            status, body = response.getcode(), response.read()
        except HTTPError as exc:
            status, body = exc.code, exc.read()
        except (URLError, OSError) as exc:
            raise InfluxDBError("cannot reach InfluxDB at %s: %s" % (self.base_url, exc)) from exc
        try:
            payload = json.loads(body.decode("utf-8") or "{}")
        except ValueError as exc:
            raise InfluxDBError("InfluxDB at %s answered HTTP %d with a body that is not JSON"
                                % (self.base_url, status), status) from exc
        if status == 401 and authenticated:
            raise InfluxDBError("InfluxDB at %s refused the credentials of login_username %r (%s)"
                                % (self.base_url, self.username, payload.get("error", "HTTP 401")), status)
        if "error" in payload:
            raise InfluxDBError(payload["error"], status)
        if status >= 300:
            raise InfluxDBError("InfluxDB at %s answered HTTP %d" % (self.base_url, status), status)
        return payload, status

    def rows(self, statement, database=None):
        """Runs a SHOW statement; returns rows as dicts, with the series name as `_series`."""
        out = []
        for series in self.query(statement, database).get("series", []):
            for values in series.get("values") or []:
                row = dict(zip(series["columns"], values, strict=True))
                row["_series"] = series.get("name")
                out.append(row)
        return out

    def auth_state(self):
        """'off' (auth disabled), 'bootstrap' (auth on, no admin yet) or 'on'."""
        try:
            self.query("SHOW DATABASES", credentials=False)
        except InfluxDBError as exc:
            if NO_ADMIN_MESSAGE in exc.message:
                return "bootstrap"
            if exc.status in (401, 403):
                return "on"
            raise
        return "off"

    def databases(self):
        return [row["name"] for row in self.rows("SHOW DATABASES")]

    def default_retention_policy(self, database):
        for row in self.rows("SHOW RETENTION POLICIES ON %s" % quote_ident(database)):
            if row.get("default"):
                return row["name"]
        return "autogen"


# --- the plan ------------------------------------------------------------------------


class Change:
    """One statement of a plan; `shown` is what results and logs display (passwords masked)."""

    __slots__ = ("statement", "shown", "credentials")

    def __init__(self, statement, shown=None, credentials=True):
        self.statement = statement
        self.shown = shown or statement
        self.credentials = credentials

    def __repr__(self):
        return "Change(%r)" % self.shown

    def __eq__(self, other):
        return isinstance(other, Change) and (self.statement, self.credentials) == (other.statement, other.credentials)

    def __hash__(self):
        return hash((self.statement, self.credentials))


class Plan:
    """What differs between the declared and the current state, and the statements that close the gap.

    before/after are the object as it is and as it will be (the diff); `result` holds the
    module's own return values; `warnings` are shown by the module.
    """

    def __init__(self, before=None, after=None):
        self.changes = []
        self.checks = []  # statements run (and undone) before the changes, to validate them
        self.before = before if before is not None else {}
        self.after = after if after is not None else {}
        self.result = {}
        self.warnings = []

    def add(self, statement, shown=None, credentials=True):
        self.changes.append(Change(statement, shown, credentials))
        return self

    def check(self, statement):
        """A statement run before the changes to prove the server accepts them (not a change itself)."""
        self.checks.append(Change(statement))
        return self

    @property
    def changed(self):
        return bool(self.changes)

    @property
    def queries(self):
        return [change.shown for change in self.changes]

    def output(self, diff):
        out = dict(changed=self.changed, queries=self.queries)
        out.update(self.result)
        if diff:
            out["diff"] = dict(before=self.before, after=self.after)
        return out


def apply(client, plan):
    """Runs the plan's checks, then its statements, in order; a refused one fails naming the statement."""
    for change in plan.checks + plan.changes:
        try:
            client.query(change.statement, credentials=change.credentials)
        except InfluxDBError as exc:
            raise InfluxDBError("InfluxDB refused `%s`: %s" % (change.shown, exc.message), exc.status) from exc


def run(module, read, make_plan, apply_plan=apply):
    """The modules' cycle: have = read(client) (I/O); plan = make_plan(have) (pure); apply unless check mode.

    A PlanError or an InfluxDB error ends in fail_json with the reason, before any change for the former.
    """
    try:
        client = InfluxDBClient(module.params)
        plan = make_plan(read(client))
        if plan.changed and not module.check_mode:
            apply_plan(client, plan)
    except PlanError as exc:
        module.fail_json(msg=str(exc))
    except InfluxDBError as exc:
        module.fail_json(msg=exc.message, status=exc.status)
    for warning in plan.warnings:
        module.warn(warning)
    module.exit_json(**plan.output(module._diff))


def database_plan(name, state, databases):
    """Pure: the statement that makes `name` exist (or not), given the server's database names."""
    exists = name in databases
    result = Plan(before={"name": name} if exists else {}, after={"name": name} if state == "present" else {})
    if state == "present" and not exists:
        result.add("CREATE DATABASE %s" % quote_ident(name))
    elif state == "absent" and exists:
        result.add("DROP DATABASE %s" % quote_ident(name))
    return result


# --- quoting ---------------------------------------------------------------------


def quote_ident(name):
    """Double-quoted InfluxQL identifier (always safe, keywords included)."""
    return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')


def quote_string(value):
    """Single-quoted InfluxQL string literal (passwords)."""
    return "'%s'" % value.replace("\\", "\\\\").replace("'", "\\'")
