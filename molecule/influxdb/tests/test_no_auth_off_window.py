"""Issue 13: a first install never answers without auth on the network.

prepare.yml started a prober on the controller before the check-mode run and the first install:
it queried and wrote to each container's network address without credentials, in a tight loop,
through check, converge and idempotence. Here it is stopped and what it saw is judged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

testinfra_hosts = ["ansible://station-stack-influxdb"]  # one judgement for both containers

NETWORK_BOUND = "station-stack-influxdb"      # influxdb_http_bind_address: "" (as central)
LOOPBACK_BOUND = "station-stack-influxdb-offline"  # the stations' default


def test_first_install_never_answered_without_auth_on_the_network():
    out = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "prober"
    report = out / "prober.json"
    (out / "prober.stop").touch()
    deadline = time.monotonic() + 10
    state = json.loads(report.read_text())
    while not state["stopped"] and time.monotonic() < deadline:
        time.sleep(0.2)
        state = json.loads(report.read_text())
    assert state["stopped"], "the prober did not stop"
    print(f"prober: {state['probes']} rounds, outcomes per container: {state['outcomes']}")
    assert state["unauthenticated"] == []
    seen = state["outcomes"]
    # It watched the whole install (closed before influxd was up) and reached the server once it
    # listened on the network: every answer there was 401.
    assert seen[NETWORK_BOUND].get("closed", 0) > 0 and seen[NETWORK_BOUND].get("401", 0) > 0, seen
    assert set(seen[NETWORK_BOUND]) == {"closed", "401"}, seen
    # A station's InfluxDB is never on the network at all.
    assert set(seen[LOOPBACK_BOUND]) == {"closed"}, seen
    assert state["probes"] > 200


def test_nothing_of_the_install_guards_is_left(host):
    assert not host.file("/usr/sbin/policy-rc.d").exists
    assert not host.file("/run/systemd/system/influxdb.service.d/station-stack-admin.conf").exists
