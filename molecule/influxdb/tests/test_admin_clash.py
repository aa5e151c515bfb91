"""Issue 13: an existing admin under another password stops the role before auth is switched on,
with the variable to set and no secret printed; the server is left as it was.

Runs on the loopback-bound container (never reachable from the network, even with auth off) and
puts everything back, so it runs in any order.
"""

from __future__ import annotations

import json

import pytest
from conftest import ADMIN, Influx, run_converge

testinfra_hosts = ["ansible://station-stack-influxdb-offline"]

OTHER = ("admin", "operators-own-pw")
CONF = "/etc/influxdb/influxdb.conf"
LIMIT = ("--limit", "station-stack-influxdb-offline")


def _wait_ready(host) -> None:
    host.check_output("for i in $(seq 120); do python3 -c 'import urllib.request as u; "
                      "u.urlopen(\"http://127.0.0.1:8086/ping\", timeout=1)' 2>/dev/null && exit 0; "
                      "sleep 0.5; done; exit 1")


def _converge(*tags: str):
    return run_converge("schema_v1.yml", *LIMIT, "--tags", ",".join(tags))


def _failure(result) -> str:
    messages = [res.get("msg", "") for play in result.output["plays"] for task in play["tasks"]
                for res in task["hosts"].values() if res.get("failed")]
    assert messages, "nothing failed"
    return " ".join(" ".join(messages).split())


def _assert_clear_refusal(result) -> None:
    assert result.rc != 0
    message = _failure(result)
    assert "cannot log in with influxdb_admin_password" in message, message
    assert "set influxdb_admin_password" in message and "configuration was not changed" in message, message
    text = json.dumps(result.output)
    assert OTHER[1] not in text and ADMIN[1] not in text


@pytest.fixture()
def clean(host, influx: Influx):
    """Puts the admin's password and the role's configuration back, whatever the test did."""
    yield
    if influx.query("SHOW DATABASES", auth=OTHER).status == 200:
        influx.query(f"SET PASSWORD FOR admin = '{ADMIN[1]}'", auth=OTHER)
    restored = _converge("configure", "service")
    assert restored.rc == 0, _failure(restored)
    assert influx.query("SHOW DATABASES", auth=None).status == 401
    assert influx.query("SHOW DATABASES").status == 200


def test_admin_under_another_password_stops_the_role_before_auth_changes(host, influx, clean):
    assert influx.query(f"SET PASSWORD FOR admin = '{OTHER[1]}'").status == 200

    # Auth on: the admin's login is checked on the running server before the configuration changes.
    conf = host.file(CONF).sha256sum
    result = _converge("configure", "service")
    _assert_clear_refusal(result)
    assert host.file(CONF).sha256sum == conf
    assert influx.query("SHOW DATABASES", auth=OTHER).status == 200  # untouched

    # Auth still off, what InfluxDB's own setup procedure leaves before its last step: the role
    # checks the admin on loopback with auth on, refuses, and puts influxd back as it was.
    host.check_output(f"sed -i 's/^  auth-enabled = true$/  auth-enabled = false/' {CONF}")
    host.check_output("systemctl restart influxdb")
    conf = host.file(CONF).sha256sum
    _wait_ready(host)
    assert influx.query("SHOW DATABASES", auth=None).status == 200  # auth off
    result = _converge("configure", "service")
    _assert_clear_refusal(result)
    assert "put back as it was" in _failure(result)
    assert host.file(CONF).sha256sum == conf
    assert host.service("influxdb").is_running
    _wait_ready(host)
    assert influx.query("SHOW DATABASES", auth=None).status == 200  # still auth off
    assert not host.file("/run/systemd/system/influxdb.service.d/station-stack-admin.conf").exists

    # With the admin's password declared, the same transition goes through: checked on loopback,
    # then auth switched on (the fixture's converge).
    assert influx.query(f"SET PASSWORD FOR admin = '{ADMIN[1]}'", auth=None).status == 200
