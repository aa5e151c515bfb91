# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations


class ModuleDocFragment:
    """Connection options shared by every station_stack.station.influxdb1_* module."""

    DOCUMENTATION = r"""
options:
  login_host:
    description: Host name or address of the InfluxDB 1.x HTTP API.
    type: str
    default: localhost
  login_port:
    description: Port of the HTTP API.
    type: int
    default: 8086
  login_username:
    description:
      - User to authenticate as (HTTP basic auth); omit when auth is off.
      - Usually the admin, so that the module can read and change every object.
    type: str
  login_password:
    description: Password of O(login_username).
    type: str
  ssl:
    description: Use HTTPS.
    type: bool
    default: false
  validate_certs:
    description: Verify the server's TLS certificate when O(ssl=true).
    type: bool
    default: true
  ca_path:
    description: CA bundle to verify the server's certificate with.
    type: path
  timeout:
    description: Seconds to wait for each HTTP request.
    type: int
    default: 10
notes:
  - Every influxdb1_* module is in the action group C(station_stack.station.influxdb1), so one
    C(module_defaults) entry (C(group/station_stack.station.influxdb1)) sets the connection
    options for all of them.
  - The modules speak InfluxQL over HTTP with C(ansible.module_utils.urls); the managed host
    needs no InfluxDB client library.
requirements:
  - InfluxDB 1.x (tested with 1.6.7 and 1.8)
"""
