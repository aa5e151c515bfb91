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
  - With O(backfill), the CQ's own C(SELECT ... INTO) also runs over past intervals, because a CQ
    computes only from the moment it exists and only the intervals whose raw points had arrived
    when it ran (raw points written before it, or delivered late after an outage, leave gaps;
    a changed CQ leaves older intervals computed the old way; InfluxDB 1.x has no manual CQ
    trigger). See O(backfill) for when it runs and how it is chunked.
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
  backfill:
    description:
      - Recompute past intervals with the CQ's own C(SELECT ... INTO), the statement the server
        stores (read back from a scratch copy created just before, or from the CQ itself), never
        re-typed, with C(WHERE time >= a AND time < b) added (the CQ's own condition kept in
        parentheses), once per chunk.
      - "Chunks are whole buckets of the CQ's C(GROUP BY time) interval and offset (in the local time of its C(TZ)
        clause when it has one, as InfluxDB's query engine aligns them), from the bucket
        holding the window's start up to, not including, the bucket in progress, which the CQ
        computes itself. So each bucket is computed from all its raw points in one statement and
        lands at the series and time the live CQ writes: a rerun writes the same values again."
      - C(RESAMPLE EVERY) does not change what a bucket's final value is, so it plays no part.
        C(RESAMPLE FOR) sets the default chunk length (what one run of the CQ covers), and so the
        size of each statement. C(fill) applies per chunk, as it applies per run of the CQ.
      - On creation or change the backfill runs before the CQ is (re)created (a changed CQ's old
        definition is dropped first, after the new one was validated under a scratch name), then
        the buckets that completed meanwhile are computed too. A failed chunk therefore leaves the
        CQ absent, and the next run creates it and backfills again instead of reporting C(ok) over
        a gap. With O(backfill.run=always) the CQ stays as it is while its window is recomputed.
      - Raw points older than the retention of a source retention policy may have expired, and
        recomputing a partly expired bucket would overwrite its downsampled value with a partial
        one, so the window then starts at the first bucket that is still whole, with a warning.
      - Fields or series that an older definition wrote and the current one does not are left as
        they are (InfluxDB merges fields into existing points).
      - Ignored with O(state=absent).
    type: dict
    suboptions:
      window:
        description:
          - How far back to recompute from now, as an InfluxDB duration (C(7d), C(36h)).
          - Exactly one of O(backfill.window) and O(backfill.since).
        type: str
      since:
        description:
          - The time to recompute from, RFC 3339 with a zone (C(2026-11-01T00:00:00Z)).
          - Exactly one of O(backfill.window) and O(backfill.since).
        type: str
      chunk:
        description:
          - Longest time range of one statement, rounded down to whole buckets (at least one).
          - Default what one run of the CQ covers, O(resample_for), else the C(GROUP BY time)
            interval. Raise the connection O(timeout) when a chunk's statement takes longer.
        type: str
      run:
        description:
          - V(on_change) backfills when the CQ is created or changed, so a converge that changes
            nothing runs nothing and reports C(changed=false).
          - V(always) backfills on every run and reports C(changed=true) whenever a chunk ran,
            for an operator's request after an outage (C(playbooks/backfill.yml)), not for a
            converge.
          - V(repair) backfills like V(on_change) when the CQ is created or changed. When it is
            unchanged, each chunk of the window is compared first, the CQ's SELECT without its
            C(INTO) (read-only) against what the target measurement holds for that chunk (same
            measurement, tags, times and field values; null fields and C(fill(null)) rows are not
            written by C(INTO), so not expected), and only the chunks that differ are rewritten with
            the C(SELECT ... INTO). C(changed) only when a chunk was rewritten, so a rerun right after
            reports C(changed=false); check mode and diff list the chunks that differ. Two reads per
            chunk of the window on every run (the cost of a converge that repairs).
          - A repair leaves out the buckets the live CQ still recomputes on its next runs (the last
            O(resample_for), else the last C(GROUP BY time) interval), whose raw points may still be
            arriving and which the CQ writes itself.
          - What the target holds beyond what the CQ computes (fields or series an older definition
            wrote, intervals whose raw points expired) is not a difference, as C(SELECT ... INTO) cannot
            remove it.
        type: str
        choices: [on_change, always, repair]
        default: on_change
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

- name: The same, recomputing the past week when the CQ is created or changed
  station_stack.station.influxdb1_continuous_query:
    database: tick
    name: ticks_ohlc_1h
    query: >-
      SELECT first(bid) AS open, max(bid) AS high, min(bid) AS low, last(bid) AS close
      INTO long_term.ticks_ohlc_1h FROM standard.ticks GROUP BY time(1h), *
    resample_every: 10m
    resample_for: 2h
    backfill:
      window: 7d
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"

- name: After an outage, recompute every interval since it began (raw points arrived late)
  station_stack.station.influxdb1_continuous_query:
    database: tick
    name: ticks_ohlc_1h
    query: >-
      SELECT first(bid) AS open, max(bid) AS high, min(bid) AS low, last(bid) AS close
      INTO long_term.ticks_ohlc_1h FROM standard.ticks GROUP BY time(1h), *
    resample_every: 10m
    resample_for: 2h
    backfill:
      since: "2026-11-01T00:00:00Z"
      run: always
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"

- name: On every converge, rewrite the intervals of the past week whose raw points arrived late
  station_stack.station.influxdb1_continuous_query:
    database: tick
    name: ticks_ohlc_1h
    query: >-
      SELECT first(bid) AS open, max(bid) AS high, min(bid) AS low, last(bid) AS close
      INTO long_term.ticks_ohlc_1h FROM standard.ticks GROUP BY time(1h), *
    resample_every: 10m
    resample_for: 2h
    backfill:
      window: 7d
      run: repair
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
backfill:
  description:
    - The backfill run (that would run, in check mode); C(chunks) is 0 when none was needed.
    - C(reason) is V(created), V(changed), V(requested) (O(backfill.run=always)), V(repair)
      (O(backfill.run=repair), the CQ unchanged) or V(none).
    - With V(repair), C(compared) is the number of chunks compared, C(chunks) and C(differing)
      those that differed (rewritten, or that would be in check mode), C(differing_points) the
      points the target lacked or held otherwise.
    - C(first_query) and C(last_query) are the statements of the first and last chunk;
      C(written) the points InfluxDB reported written, C(catch_up_chunks) the buckets that
      completed while the backfill ran (both after a real run only).
  returned: when O(backfill) is set and O(state=present)
  type: dict
  sample:
    reason: created
    chunks: 84
    chunk: 2h
    start: "2026-11-29T10:00:00Z"
    end: "2026-12-06T10:00:00Z"
    first: {start: "2026-11-29T10:00:00Z", end: "2026-11-29T12:00:00Z"}
    last: {start: "2026-12-06T08:00:00Z", end: "2026-12-06T10:00:00Z"}
    first_query: >-
      SELECT first(bid) AS open INTO tick.long_term.ticks_ohlc_1h FROM tick.standard.ticks
      WHERE time >= '2026-11-29T10:00:00Z' AND time < '2026-11-29T12:00:00Z' GROUP BY time(1h), *
    last_query: SELECT ...
    written: 3360
    catch_up_chunks: 0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import connection_spec, run
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_cq import (
    apply_plan,
    plan,
    read,
    stored_query,
)


def main():
    module = AnsibleModule(
        argument_spec=connection_spec(
            database=dict(type="str", required=True),
            name=dict(type="str", required=True),
            query=dict(type="str"),
            resample_every=dict(type="str"),
            resample_for=dict(type="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            backfill=dict(type="dict", options=dict(
                window=dict(type="str"),
                since=dict(type="str"),
                chunk=dict(type="str"),
                run=dict(type="str", default="on_change", choices=["on_change", "always", "repair"]),
            ), mutually_exclusive=[("window", "since")], required_one_of=[("window", "since")]),
        ),
        required_if=[("state", "present", ["query"])],
        supports_check_mode=True,
    )
    params = module.params
    backfill = params["backfill"] if params["state"] == "present" else None
    state = {}

    def read_state(client):
        state["have"] = read(client, params["database"], params["name"], params["query"], backfill)
        return state["have"]

    def make_plan(have):
        result = plan(dict(params, backfill=backfill), have)
        if have["stored"]:
            result.result["server_query"] = have["stored"]
        return result

    def apply_and_read(client, result):
        apply_plan(client, result, params, state["have"])
        # The server's own text after the change (it rewrites what it was given).
        result.result.pop("server_query", None)
        stored = stored_query(client, params["database"], params["name"])
        if stored:
            result.result["server_query"] = stored

    run(module, read_state, make_plan, apply_and_read)


if __name__ == "__main__":
    main()
