#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: influxdb1_continuous_query
short_description: Manage an InfluxDB 1.x continuous query
description:
  - Creates or drops a continuous query (CQ). A CQ cannot be altered, so a changed CQ is dropped
    and created again.
  - Drift is detected against the server's stored text, which InfluxDB rewrites (measurements
    qualified with database and retention policy, canonical durations and numbers, unneeded
    quotes removed). Both sides are tokenised into one canonical form, compared, and shown in
    the diff in that same form, so only real differences appear.
  - Before a changed CQ is dropped, the new one is created and dropped under a scratch name, so
    a query the server refuses leaves the old CQ in place.
  - Measurements without a retention policy are qualified with the database's current default
    policy, as the server does when it creates the CQ.
options:
  database:
    description: Database the CQ runs on.
    type: str
    required: true
  name:
    description: CQ name.
    type: str
    required: true
  query:
    description:
      - The C(SELECT ... INTO ... FROM ... GROUP BY time(...)) statement, without
        C(CREATE CONTINUOUS QUERY) or C(BEGIN)/C(END). Required when O(state=present).
    type: str
  resample_every:
    description: C(RESAMPLE EVERY) interval, any InfluxDB duration longer than 0 (C(10m), C(600s)).
    type: str
  resample_for:
    description: C(RESAMPLE FOR) interval, any InfluxDB duration longer than 0 (C(2h), C(120m)).
    type: str
  state:
    description: Whether the CQ exists.
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
- name: Hourly OHLC bars from raw ticks, kept in the long-term RP
  station_stack.station.influxdb1_continuous_query:
    database: tick
    name: ticks_ohlc_1h
    query: >-
      SELECT first(bid) AS open, max(bid) AS high, min(bid) AS low, last(bid) AS close
      INTO long_term.ticks_ohlc_1h FROM standard.ticks GROUP BY time(1h), *
    resample_every: 10m
    resample_for: 2h
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"
"""

RETURN = r"""
queries:
  description: Statements executed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
server_query:
  description: The CQ as the server stores it (after the change; before it in check mode).
  returned: when the CQ exists
  type: str
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    Plan,
    PlanError,
    apply,
    connection_spec,
    quote_ident,
    run,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import (
    DurationError,
    format_duration,
    parse_duration,
)
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_influxql import (
    canonical_select,
    cq_statement,
    parse_stored_cq,
)

# The scratch name a changed CQ is validated under before the old one is dropped.
PROBE_SUFFIX = "__station_stack_probe"


def stored_query(client, database, name):
    for row in client.rows("SHOW CONTINUOUS QUERIES"):
        if row["_series"] == database and row["name"] == name:
            return row["query"]
    return None


def read(client, database, name):
    """The server's side: whether the database exists, the CQ's stored text and the default RP."""
    if database not in client.databases():
        return dict(database_exists=False, stored=None, default_rp=None)
    return dict(database_exists=True, stored=stored_query(client, database, name),
                default_rp=client.default_retention_policy(database))


def create_statement(name, database, query, every=None, for_=None):
    """The CREATE statement the module runs: the declared SELECT as written, resample durations normalised."""
    resample = ""
    if every or for_:
        resample = "RESAMPLE "
        if every:
            resample += "EVERY %s " % format_duration(every)
        if for_:
            resample += "FOR %s " % format_duration(for_)
    return "CREATE CONTINUOUS QUERY %s ON %s %sBEGIN %s END" % (
        quote_ident(name), quote_ident(database), resample, query)


def _resample(value, option, label):
    if value is None or value == "":
        return None
    try:
        ns = parse_duration(value)
    except DurationError as exc:
        raise PlanError("%s: %s %s" % (label, option, exc)) from exc
    if ns == 0:
        raise PlanError("%s: %s must be longer than 0 (omit it for the server's default)" % (label, option))
    return ns


def plan(want, have):
    """Pure: DROP and/or CREATE that make the server's CQ equal to the declared one.

    Both sides are compared and shown (diff) in the same canonical form, so quoting, keyword
    case, qualification with database and default RP, and duration spellings never count as a
    difference. Raises PlanError for a declaration that cannot be a CQ, before anything runs.
    """
    database, name = want["database"], want["name"]
    label = "continuous query %s.%s" % (database, name)
    if not have["database_exists"]:
        raise PlanError("database %r does not exist: create it before its continuous query %r" % (database, name))
    stored, default_rp = have["stored"], have["default_rp"]
    before_text = ""
    if stored:
        try:
            s_every, s_for, s_select = parse_stored_cq(stored)
        except ValueError as exc:
            raise PlanError("%s: %s" % (label, exc)) from exc
        before_text = cq_statement(name, database, canonical_select(s_select, database, default_rp), s_every, s_for)
    drop = "DROP CONTINUOUS QUERY %s ON %s" % (quote_ident(name), quote_ident(database))

    if want["state"] == "absent":
        result = Plan(before=before_text + "\n" if stored else "", after="")
        if stored:
            result.add(drop)
        return result

    query = (want.get("query") or "").strip()
    if not re.match(r"(?i)^SELECT\b", query) or not re.search(r"(?i)\bINTO\b", query):
        raise PlanError("%s: query must be a SELECT ... INTO ... statement (without CREATE CONTINUOUS QUERY/"
                        "BEGIN/END), got: %s" % (label, query))
    every = _resample(want.get("resample_every"), "resample_every", label)
    for_ = _resample(want.get("resample_for"), "resample_for", label)
    after_text = cq_statement(name, database, canonical_select(query, database, default_rp), every, for_)
    result = Plan(before=before_text + "\n" if stored else "", after=after_text + "\n")
    if after_text != before_text:
        if stored:
            # A CQ cannot be altered. Validate the new one under a scratch name first, so a
            # query the server refuses never leaves the old CQ dropped.
            probe = name + PROBE_SUFFIX
            result.check(create_statement(probe, database, query, every, for_))
            result.check("DROP CONTINUOUS QUERY %s ON %s" % (quote_ident(probe), quote_ident(database)))
            result.add(drop)
        result.add(create_statement(name, database, query, every, for_))
    return result


def main():
    module = AnsibleModule(
        argument_spec=connection_spec(
            database=dict(type="str", required=True),
            name=dict(type="str", required=True),
            query=dict(type="str"),
            resample_every=dict(type="str"),
            resample_for=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        ),
        required_if=[("state", "present", ["query"])],
        supports_check_mode=True,
    )
    params = module.params

    def make_plan(have):
        result = plan(params, have)
        if have["stored"]:
            result.result["server_query"] = have["stored"]
        return result

    def apply_plan(client, result):
        apply(client, result)
        # The server's own text after the change (it rewrites what it was given).
        result.result.pop("server_query", None)
        stored = stored_query(client, params["database"], params["name"])
        if stored:
            result.result["server_query"] = stored

    run(module, lambda client: read(client, params["database"], params["name"]), make_plan, apply_plan)


if __name__ == "__main__":
    main()
