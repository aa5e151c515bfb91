#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: influxdb1_schema_info
short_description: Read an InfluxDB 1.x server's databases, retention policies, continuous queries and users
description:
  - Read-only; used to prune objects that are not declared. Never changes anything.
options: {}
extends_documentation_fragment:
  - station_stack.station.influxdb1
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
author: station-stack contributors (@station-stack)
"""

EXAMPLES = r"""
- name: Read the schema
  station_stack.station.influxdb1_schema_info:
    login_username: admin
    login_password: "{{ influxdb_admin_password }}"
  register: schema
"""

RETURN = r"""
auth:
  description: C(on), C(off), or C(bootstrap) (auth on and no user yet; the lists are then empty).
  returned: always
  type: str
  sample: "on"
databases:
  description: Database names.
  returned: always
  type: list
  elements: str
retention_policies:
  description: Per database, its policies (name, duration, shard_duration, replication, default).
  returned: always
  type: dict
continuous_queries:
  description: Per database, its CQs (name, query as stored).
  returned: always
  type: dict
users:
  description: Users with their admin flag and grants.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_api import (
    InfluxDBClient,
    InfluxDBError,
    connection_spec,
    quote_ident,
)


def read(client):
    auth = client.auth_state()
    if auth == "bootstrap":
        # Auth on and no user yet: there is nothing else to read, and nothing else may be read.
        return dict(auth=auth, databases=[], retention_policies={}, continuous_queries={}, users=[])
    databases = client.databases()
    rps = {}
    for database in databases:
        rps[database] = [
            dict(name=r["name"], duration=r["duration"], shard_duration=r["shardGroupDuration"],
                 replication=r["replicaN"], default=r["default"])
            for r in client.rows("SHOW RETENTION POLICIES ON %s" % quote_ident(database))
        ]
    cqs = {database: [] for database in databases}
    for row in client.rows("SHOW CONTINUOUS QUERIES"):
        cqs.setdefault(row["_series"], []).append(dict(name=row["name"], query=row["query"]))
    users = []
    for row in client.rows("SHOW USERS"):
        grants = {g["database"]: g["privilege"] for g in client.rows("SHOW GRANTS FOR %s" % quote_ident(row["user"]))}
        users.append(dict(name=row["user"], admin=row["admin"], grants=grants))
    return dict(auth=auth, databases=databases, retention_policies=rps, continuous_queries=cqs, users=users)


def main():
    module = AnsibleModule(argument_spec=connection_spec(), supports_check_mode=True)
    try:
        info = read(InfluxDBClient(module.params))
    except InfluxDBError as exc:
        module.fail_json(msg=exc.message, status=exc.status)
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
