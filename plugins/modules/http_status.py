#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: http_status
short_description: Ask an HTTP endpoint on the managed host for its status, in one remote call
description:
  - Sends one HTTP request from the managed host and returns the status and, when the body is JSON,
    the parsed body. For health probes and readiness waits (C(until)/C(retries)).
  - Unlike M(ansible.builtin.uri), whose action plugin makes and removes a remote temporary
    directory around every call (three more executions; over a 300 ms link about 2 s), this
    module has no action plugin; see C(docs/slow-links.md).
  - Reads only; it never reports a change.
options:
  url:
    description: The URL, C(http) or C(https).
    type: str
    required: true
  method:
    description: The request method.
    type: str
    choices: [GET, POST, HEAD]
    default: GET
  body:
    description: Form fields, sent C(application/x-www-form-urlencoded) (with C(method=POST)).
    type: dict
  status_code:
    description: The statuses that count as success; any other fails the task.
    type: list
    elements: int
    default: [200]
  timeout:
    description: Seconds to wait for the connection and the answer.
    type: int
    default: 10
  validate_certs:
    description: Whether to verify an HTTPS server's certificate.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads only; runs in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
author: station-stack contributors (@station-stack)
"""

EXAMPLES = r"""
- name: Wait until InfluxDB answers /ping
  station_stack.station.http_status:
    url: http://127.0.0.1:8086/ping
    status_code: [204]
  register: ping
  until: ping.status == 204
  retries: 30
  delay: 1
"""

RETURN = r"""
status:
  description: The HTTP status, or -1 when no answer came (refused, timed out).
  returned: always
  type: int
json:
  description: The body parsed as JSON, when it is JSON.
  returned: when the body is JSON
  type: raw
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.six.moves.urllib.parse import urlencode
from ansible.module_utils.urls import fetch_url


def outcome(status, body, wanted):
    """Pure: the module's result from the answer's status and body."""
    result = {"changed": False, "status": status}
    try:
        result["json"] = json.loads(to_text(body or b"", errors="surrogate_or_strict"))
    except ValueError:
        pass
    if status not in wanted:
        result["failed"] = True
        result["msg"] = "Status code was %s and not %s" % (status, wanted)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            method=dict(type="str", default="GET", choices=["GET", "POST", "HEAD"]),
            body=dict(type="dict"),
            status_code=dict(type="list", elements="int", default=[200]),
            timeout=dict(type="int", default=10),
            validate_certs=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    data = urlencode(params["body"]) if params["body"] is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
    response, info = fetch_url(module, params["url"], data=data, headers=headers, method=params["method"],
                               timeout=params["timeout"])
    status = info.get("status", -1)
    # An HTTP error's body is already read into info; a success's is still in the response.
    if "body" in info:
        body = info["body"]
    elif response is not None:
        body = response.read()
    else:
        body = b""
    result = outcome(status, body, params["status_code"])
    if result.get("failed"):
        if status == -1:
            result["msg"] = "No answer from %s: %s" % (params["url"], info.get("msg", ""))
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
