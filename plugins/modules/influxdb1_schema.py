#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: influxdb1_schema
short_description: Manage an InfluxDB 1.x schema and its users in one call
description:
  - The list form of M(station_stack.station.influxdb1_database),
    M(station_stack.station.influxdb1_retention_policy),
    M(station_stack.station.influxdb1_continuous_query) and M(station_stack.station.influxdb1_user),
    one module call (one remote execution) for every declared object instead of one per object,
    which over a slow link costs about a second each.
  - Each object is read, compared and planned exactly as its single-object module does (the same
    code), all of them before anything changes, so a declaration InfluxDB would refuse anywhere
    in the schema fails before any statement runs. Then the plans that differ are applied in
    order - databases, retention policies, continuous queries, pruned continuous queries,
    pruned retention policies, users, pruned users - so a CQ's INTO target and a user's grants
    exist before they are used.
  - Objects planned to be created are taken into account by the objects planned after them (a
    new database's retention policies, CQs and grants; a database's new default retention policy
    for its CQs' unqualified measurements), so check mode is truthful also when the schema
    grows.
  - The result lists every object (RV(objects)) with its own C(changed), statements and
    backfill; the diff holds one entry per changed object, headed with its name.
  - User passwords are C(no_log) suboptions, so they are masked in the result and the
    invocation, and errors stay readable (no task-level C(no_log) is needed).
options:
  databases:
    description:
      - The databases to create, each with its retention policies and continuous queries.
      - Omitted, databases, retention policies and continuous queries are left as they are.
    type: list
    elements: dict
    suboptions:
      name:
        description: Database name.
        type: str
        required: true
      retention_policies:
        description:
          - Its retention policies (the options of M(station_stack.station.influxdb1_retention_policy)).
          - With O(prune), a non-empty list is authoritative; an empty one leaves the database's policies alone.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: Policy name.
            type: str
            required: true
          duration:
            description: How long data is kept (C(30d), C(INF)); at least C(1h) unless infinite.
            type: str
            required: true
          shard_duration:
            description: Shard group duration; omitted, the server chooses on creation and it is not compared.
            type: str
          replication:
            description: Replication factor.
            type: int
            default: 1
          default:
            description: Make this the database's default policy (never un-sets one, see O(allow_default_switch)).
            type: bool
            default: false
      continuous_queries:
        description:
          - Its continuous queries (the options of M(station_stack.station.influxdb1_continuous_query)).
          - With O(prune), authoritative for the database.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: CQ name.
            type: str
            required: true
          query:
            description: The C(SELECT ... INTO ... GROUP BY time(...)) statement.
            type: str
            required: true
          resample_every:
            description: C(RESAMPLE EVERY) interval.
            type: str
          resample_for:
            description: C(RESAMPLE FOR) interval.
            type: str
          backfill:
            description:
              - Recompute a past window when the CQ is created or changed.
              - See M(station_stack.station.influxdb1_continuous_query).
            type: dict
            suboptions:
              window:
                description: How far back from now (C(7d)); exactly one of this and C(since).
                type: str
              since:
                description: RFC 3339 time with a zone to recompute from.
                type: str
              chunk:
                description: Longest time range of one statement.
                type: str
              run:
                description:
                  - V(on_change) (a converge), V(always) (an operator's request) or V(repair) (a
                    converge that rewrites only the chunks whose target differs from what the CQ computes).
                type: str
                choices: [on_change, always, repair]
                default: on_change
  users:
    description:
      - The users to create or update, with their admin flag and grants (authoritative per user).
      - Omitted, users are left as they are.
    type: list
    elements: dict
    suboptions:
      name:
        description: User name.
        type: str
        required: true
      password:
        description: Password; required to create the user. Masked in every output.
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
  allow_default_switch:
    description: Let a declared default retention policy replace a current default that holds data.
    type: bool
    default: false
  prune:
    description:
      - Drop what exists but is not declared. Never a database (data loss is never implicit).
      - With O(databases), the continuous queries of every listed database and the retention
        policies of every listed database that declares some.
      - With O(users), every user not listed, except O(keep_users) and O(login_username).
    type: bool
    default: false
  keep_users:
    description: Users O(prune) never drops (the admin the role logs in as is always kept).
    type: list
    elements: str
    default: []
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
notes:
  - InfluxDB with auth on and no admin yet accepts only the admin's creation, so create it first
    with M(station_stack.station.influxdb1_user) (O(ignore:admin=true)).
author: station-stack contributors (@station-stack)
"""

EXAMPLES = r"""
- name: The station's schema and users in one call
  station_stack.station.influxdb1_schema:
    databases:
      - name: tick
        retention_policies:
          - {name: standard, duration: 30d, shard_duration: 1d, default: true}
          - {name: long_term, duration: 365d, shard_duration: 7d}
        continuous_queries:
          - name: ticks_ohlc_1h
            query: >-
              SELECT first(bid) AS open, max(bid) AS high, min(bid) AS low, last(bid) AS close
              INTO long_term.ticks_ohlc_1h FROM standard.ticks GROUP BY time(1h), *
            resample_every: 10m
            resample_for: 2h
    users:
      - name: bridge
        password: "{{ influxdb_writer_password }}"
        grants: [{database: tick, privilege: WRITE}]
    prune: true
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"
"""

RETURN = r"""
queries:
  description: Every statement executed (or that would be, in check mode), in order, passwords masked.
  returned: always
  type: list
  elements: str
objects:
  description:
    - One entry per object, in the order they are applied, changed or not (named C(objects), not
      C(results), which callbacks and tools read as a loop's items).
    - C(kind) is V(database), V(retention_policy), V(continuous_query) or V(user); C(state) is
      V(absent) for what O(prune) drops; C(backfill) as M(station_stack.station.influxdb1_continuous_query)
      returns it; C(server_query) the CQ as the server stores it.
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: retention_policy, database: tick, name: standard, state: present, changed: false, queries: []}
    - {kind: user, name: bridge, state: present, changed: true, queries: ["SET PASSWORD FOR \"bridge\" = '********'"]}
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    InfluxDBClient,
    InfluxDBError,
    PlanError,
    apply,
    connection_spec,
    database_plan,
    quote_ident,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_cq import (
    apply_plan as cq_apply_plan,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_cq import (
    plan as cq_plan,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_cq import (
    read as cq_read,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_cq import (
    stored_query,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_rp import (
    plan as rp_plan,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_rp import (
    read as rp_read,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_users import (
    plan as user_plan,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_users import (
    read as user_read,
)


class PlanningClient(InfluxDBClient):
    """While the schema is planned (nothing changes then), each SHOW statement is asked once.

    InfluxDB checks the credentials of every request (bcrypt: about 70 ms each on a station's
    core), and the single-object reads ask SHOW DATABASES, a database's policies and the CQs
    once per object. `planning` is turned off before anything is applied.
    """

    def __init__(self, params):
        super().__init__(params)
        self.planning = True
        self._answers = {}

    def query(self, statement, database=None, credentials=True):
        if not (self.planning and statement.startswith("SHOW ")):
            return super().query(statement, database, credentials)
        key = (statement, database, credentials)
        if key not in self._answers:
            try:
                self._answers[key] = (True, super().query(statement, database, credentials))
            except InfluxDBError as exc:
                self._answers[key] = (False, exc)
        ok, answer = self._answers[key]
        if not ok:
            raise answer
        return answer


KIND_LABELS = dict(database="database", retention_policy="retention policy",
                   continuous_query="continuous query", user="user")


class Step:
    """One object's plan, and how it is applied (the single-object modules' own apply)."""

    def __init__(self, kind, name, plan, database=None, state="present", apply_with=None):
        self.kind, self.name, self.plan, self.database, self.state = kind, name, plan, database, state
        self.apply_with = apply_with or apply

    @property
    def label(self):
        return "%s %s" % (KIND_LABELS[self.kind], "%s.%s" % (self.database, self.name) if self.database else self.name)

    def summary(self):
        out = dict(kind=self.kind, name=self.name, state=self.state, changed=self.plan.changed,
                   queries=self.plan.queries)
        if self.database:
            out["database"] = self.database
        out.update((key, value) for key, value in self.plan.result.items()
                   if key not in ("bootstrapped", "retention_policy"))
        return out

    def diff(self):
        return dict(before_header=self.label, after_header=self.label, before=self.plan.before, after=self.plan.after)


def _unique(names, what):
    seen, twice = set(), []
    for name in names:
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    if twice:
        raise PlanError("%s declared more than once: %s" % (what, ", ".join(repr(name) for name in twice)))


def _planned(label, make):
    """A plan, its PlanError prefixed with the object unless the message names it already."""
    try:
        return make()
    except PlanError as exc:
        message = str(exc)
        raise PlanError(message if label in message else "%s: %s" % (label, message)) from exc


def plan_schema(client, params):
    """Reads every declared object and plans it (nothing changes here); returns the steps in apply order.

    An object planned to be created counts for those planned after it: a new database's policies,
    CQs and grants are planned against that database as CREATE DATABASE leaves it (only `autogen`,
    the default), and a CQ's unqualified measurements follow a default policy planned to change.
    """
    auth = client.auth_state()
    if auth == "bootstrap":
        raise PlanError("InfluxDB has auth enabled and no admin user yet: create the admin first "
                        "(station_stack.station.influxdb1_user with admin: true), then the schema")
    server_databases = client.databases()
    databases, users = params["databases"], params["users"]
    steps, new_databases = [], set()
    if databases is not None:
        _unique([db["name"] for db in databases], "database")
        for db in databases:
            _unique([rp["name"] for rp in db["retention_policies"]], "database %r: retention policy" % db["name"])
            _unique([cq["name"] for cq in db["continuous_queries"]], "database %r: continuous query" % db["name"])
            plan = database_plan(db["name"], "present", server_databases)
            steps.append(Step("database", db["name"], plan))
            if plan.changed:
                new_databases.add(db["name"])
        planned_default = {}
        for db in databases:
            name = db["name"]
            for rp in db["retention_policies"]:
                want = dict(rp, database=name, state="present", allow_default_switch=params["allow_default_switch"])
                if name in new_databases:
                    have = dict(database_exists=True, policy=None, current_default="autogen",
                                current_default_points=None)
                else:
                    have = rp_read(client, name, rp["name"], rp["default"], params["allow_default_switch"])
                label = "retention policy %s.%s" % (name, rp["name"])
                plan = _planned(label, lambda want=want, have=have: rp_plan(want, have))
                if plan.after.get("default") and not plan.before.get("default"):
                    planned_default[name] = rp["name"]
                steps.append(Step("retention_policy", rp["name"], plan, database=name))
        for db in databases:
            name = db["name"]
            for cq in db["continuous_queries"]:
                want = dict(cq, database=name, state="present")
                if name in new_databases:
                    have = dict(database_exists=True, stored=None, default_rp=planned_default.get(name, "autogen"))
                    if cq.get("backfill"):
                        have.update(now=time.time_ns(), retention={})
                else:
                    have = cq_read(client, name, cq["name"], cq["query"], cq.get("backfill"))
                    have["default_rp"] = planned_default.get(name, have["default_rp"])
                label = "continuous query %s.%s" % (name, cq["name"])
                plan = _planned(label, lambda want=want, have=have: cq_plan(want, have))
                if have["stored"]:
                    plan.result["server_query"] = have["stored"]
                steps.append(Step("continuous_query", cq["name"], plan, database=name,
                                  apply_with=_cq_apply(want, have)))
        if params["prune"]:
            steps.extend(_prune_schema(client, databases, new_databases, planned_default))
    if users is not None:
        steps.extend(_plan_users(client, params, users, server_databases, new_databases))
    return steps


def _cq_apply(want, have):
    def apply_cq(client, plan):
        cq_apply_plan(client, plan, want, have)
        # The server's own text after the change (it rewrites what it was given).
        plan.result.pop("server_query", None)
        stored = stored_query(client, want["database"], want["name"])
        if stored:
            plan.result["server_query"] = stored
    return apply_cq


# What CREATE DATABASE leaves besides the declared objects: its default policy `autogen` (kept
# forever, shard groups of 7 days).
AUTOGEN = dict(name="autogen", duration=0, shard_duration=7 * 24 * 3600 * 10**9, replication=1)


def _prune_schema(client, databases, new_databases, planned_default):
    """Drop steps for the CQs, then the retention policies, that exist but are not declared (in a
    database this call creates: its `autogen`, unless declared)."""
    cq_steps, rp_steps = [], []
    server_cqs = {}
    for row in client.rows("SHOW CONTINUOUS QUERIES"):
        server_cqs.setdefault(row["_series"], []).append(row["name"])
    for db in databases:
        name = db["name"]
        if name in new_databases:
            declared = {rp["name"] for rp in db["retention_policies"]}
            if declared and AUTOGEN["name"] not in declared:
                policy = dict(AUTOGEN, default=name not in planned_default)
                want = dict(database=name, name=AUTOGEN["name"], state="absent")
                plan = rp_plan(want, dict(database_exists=True, policy=policy))
                rp_steps.append(Step("retention_policy", AUTOGEN["name"], plan, database=name, state="absent"))
            continue
        declared = {cq["name"] for cq in db["continuous_queries"]}
        for cq_name in server_cqs.get(name, []):
            if cq_name not in declared:
                want = dict(database=name, name=cq_name, state="absent")
                have = cq_read(client, name, cq_name)
                plan = _planned("continuous query %s.%s" % (name, cq_name),
                                lambda want=want, have=have: cq_plan(want, have))
                cq_steps.append(Step("continuous_query", cq_name, plan, database=name, state="absent"))
        declared = {rp["name"] for rp in db["retention_policies"]}
        if not declared:
            continue  # no policies declared: the database's own are left as they are
        for row in client.rows("SHOW RETENTION POLICIES ON %s" % quote_ident(name)):
            if row["name"] not in declared:
                want = dict(database=name, name=row["name"], state="absent")
                have = rp_read(client, name, row["name"])
                plan = _planned("retention policy %s.%s" % (name, row["name"]),
                                lambda want=want, have=have: rp_plan(want, have))
                rp_steps.append(Step("retention_policy", row["name"], plan, database=name, state="absent"))
    return cq_steps + rp_steps


def _plan_users(client, params, users, server_databases, new_databases):
    _unique([user["name"] for user in users], "user")
    steps = []
    for user in users:
        want = dict(params, name=user["name"], password=user["password"], admin=user["admin"],
                    grants=user["grants"], update_password=params["update_password"], state="present")
        have = user_read(client, want)
        # Grants on a database planned in this call are planned against it as created.
        have["databases"] = list(have["databases"]) + sorted(new_databases - set(have["databases"]))
        plan = _planned("user %s" % user["name"], lambda want=want, have=have: user_plan(want, have))
        steps.append(Step("user", user["name"], plan))
    if params["prune"]:
        keep = {user["name"] for user in users} | set(params["keep_users"]) | {params["login_username"]}
        for row in client.rows("SHOW USERS"):
            if row["user"] not in keep:
                want = dict(params, name=row["user"], password=None, admin=False, grants=[], state="absent")
                have = user_read(client, want)
                steps.append(Step("user", row["user"], user_plan(want, have), state="absent"))
    return steps


def apply_steps(client, steps):
    """Applies the steps that differ, in order; a refusal fails naming the object and what was applied."""
    done = []
    for step in steps:
        if not step.plan.changed:
            continue
        try:
            step.apply_with(client, step.plan)
        except InfluxDBError as exc:
            applied = ("; applied before it: %s" % ", ".join(done)) if done else "; nothing was changed before it"
            message = exc.message if step.label in exc.message else "%s: %s" % (step.label, exc.message)
            raise InfluxDBError(message + applied, exc.status) from exc
        done.append(step.label)


def main():
    cq_backfill = dict(
        window=dict(type="str"),
        since=dict(type="str"),
        chunk=dict(type="str"),
        run=dict(type="str", default="on_change", choices=["on_change", "always", "repair"]),
    )
    module = AnsibleModule(
        argument_spec=connection_spec(
            databases=dict(type="list", elements="dict", options=dict(
                name=dict(type="str", required=True),
                retention_policies=dict(type="list", elements="dict", default=[], options=dict(
                    name=dict(type="str", required=True),
                    duration=dict(type="str", required=True),
                    shard_duration=dict(type="str"),
                    replication=dict(type="int", default=1),
                    default=dict(type="bool", default=False),
                )),
                continuous_queries=dict(type="list", elements="dict", default=[], options=dict(
                    name=dict(type="str", required=True),
                    query=dict(type="str", required=True),
                    resample_every=dict(type="str"),
                    resample_for=dict(type="str"),
                    backfill=dict(type="dict", options=cq_backfill, mutually_exclusive=[("window", "since")],
                                  required_one_of=[("window", "since")]),
                )),
            )),
            users=dict(type="list", elements="dict", options=dict(
                name=dict(type="str", required=True),
                password=dict(type="str", no_log=True),
                admin=dict(type="bool", default=False),
                grants=dict(type="list", elements="dict", default=[], options=dict(
                    database=dict(type="str", required=True),
                    privilege=dict(type="str", required=True, choices=["READ", "WRITE", "ALL"]),
                )),
            )),
            update_password=dict(type="str", default="always", choices=["always", "on_create"], no_log=False),
            allow_default_switch=dict(type="bool", default=False),
            prune=dict(type="bool", default=False),
            keep_users=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    steps = []
    try:
        client = PlanningClient(module.params)
        steps = plan_schema(client, module.params)
        client.planning = False
        if not module.check_mode:
            apply_steps(client, steps)
    except PlanError as exc:
        module.fail_json(msg=str(exc))
    except InfluxDBError as exc:
        module.fail_json(msg=exc.message, status=exc.status, objects=[step.summary() for step in steps])
    changed = [step for step in steps if step.plan.changed]
    for step in steps:
        for warning in step.plan.warnings:
            module.warn(warning)
    out = dict(changed=bool(changed), queries=[query for step in steps for query in step.plan.queries],
               objects=[step.summary() for step in steps])
    if module._diff:
        out["diff"] = [step.diff() for step in changed]
    module.exit_json(**out)


if __name__ == "__main__":
    main()
