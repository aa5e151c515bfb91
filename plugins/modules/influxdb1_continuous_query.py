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
    quotes removed), and both sides are tokenised into one canonical form and compared.
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
        C(CREATE CONTINUOUS QUERY) or C(BEGIN)/C(END). Required when I(state=present).
    type: str
  resample_every:
    description: C(RESAMPLE EVERY) interval.
    type: str
  resample_for:
    description: C(RESAMPLE FOR) interval.
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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    canonical_select,
    connection_spec,
    default_retention_policy,
    parse_duration,
    parse_stored_cq,
    quote_ident,
    run_module,
)


def stored_query(client, database, name):
    for row in client.rows("SHOW CONTINUOUS QUERIES"):
        if row["_series"] == database and row["name"] == name:
            return row["query"]
    return None


def create_statement(p):
    resample = ""
    if p["resample_every"] or p["resample_for"]:
        resample = "RESAMPLE"
        if p["resample_every"]:
            resample += " EVERY " + p["resample_every"]
        if p["resample_for"]:
            resample += " FOR " + p["resample_for"]
        resample += " "
    return "CREATE CONTINUOUS QUERY %s ON %s %sBEGIN %s END" % (
        quote_ident(p["name"]), quote_ident(p["database"]), resample, p["query"].strip())


def ensure(module, client):
    p = module.params
    database, name = p["database"], p["name"]
    if database not in client.databases():
        module.fail_json(msg="database %r does not exist: create it before its continuous query %r"
                         % (database, name))
    before = stored_query(client, database, name)
    drop = "DROP CONTINUOUS QUERY %s ON %s" % (quote_ident(name), quote_ident(database))
    queries = []
    if p["state"] == "absent":
        if before:
            queries.append(drop)
    else:
        query = (p["query"] or "").strip()
        if not query.upper().startswith("SELECT") or " INTO " not in " %s " % query.upper().replace("\n", " "):
            module.fail_json(msg="continuous query %s.%s: query must be a SELECT ... INTO ... statement "
                                 "(without CREATE CONTINUOUS QUERY/BEGIN/END), got: %s" % (database, name, query))
        try:
            every = parse_duration(p["resample_every"]) if p["resample_every"] else None
            for_ = parse_duration(p["resample_for"]) if p["resample_for"] else None
        except ValueError as exc:
            module.fail_json(msg="continuous query %s.%s: %s" % (database, name, exc))
        same = False
        if before:
            stored_every, stored_for, stored_select = parse_stored_cq(before)
            default_rp = default_retention_policy(client, database)
            same = ((stored_every, stored_for) == (every, for_)
                    and canonical_select(stored_select, database, default_rp)
                    == canonical_select(query, database, default_rp))
        if not same:
            queries = ([drop] if before else []) + [create_statement(p)]

    after = before
    if not module.check_mode and queries:
        if before and p["state"] == "present":
            # Validate on a scratch name first, so a bad query never leaves the CQ dropped.
            probe = dict(p, name="%s__station_stack_probe" % name)
            client.query(create_statement(probe))
            client.query("DROP CONTINUOUS QUERY %s ON %s" % (quote_ident(probe["name"]), quote_ident(database)))
        for statement in queries:
            client.query(statement)
        after = stored_query(client, database, name)
    elif queries:
        after = None if p["state"] == "absent" else create_statement(p)

    result = dict(changed=bool(queries), queries=queries)
    if after:
        result["server_query"] = after
    if module._diff:
        result["diff"] = dict(before=(before + "\n") if before else "",
                              after=(after + "\n") if after and p["state"] == "present" else "")
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
    run_module(module, lambda client: ensure(module, client))


if __name__ == "__main__":
    main()
