"""A feed's cadence (issue 24): `expected_interval`, or `idle_ok: true`, its explicit absence. Read by
the real `station-bridge check-config`; the health rule itself (overdue after 3 intervals, an idle
feed without a cadence healthy) is test_health_model.py's and test_validate.py's."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from harness import BRIDGE

from station_bridge import config as cfg


def feed(**cadence) -> dict:
    return {"subscriptions": [{"name": "campaign", "endpoints": ["tcp://127.0.0.1:5556"], "topics": ["t"],
                               "mapping": {"measurement": "m", "fields": {"v": "float"}}, **cadence}],
            "destinations": [{"name": "local", "url": "http://127.0.0.1:8086", "database": "tick"}]}


def check_config(tmp_path, config: dict) -> subprocess.CompletedProcess:
    path = tmp_path / "bridge.yml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([BRIDGE, "check-config", "--json", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("cadence", "expected_interval_s", "idle_ok"), [
    ({}, None, True),  # today's default: no cadence, idle is healthy
    ({"idle_ok": True}, None, True),  # ... said explicitly: the same configuration
    ({"idle_ok": None}, None, True),
    ({"expected_interval": "5s"}, 5.0, False),
    ({"expected_interval": "5s", "idle_ok": False}, 5.0, False),
])
def test_a_feed_declares_a_cadence_or_that_idle_is_ok(tmp_path, cadence, expected_interval_s, idle_ok):
    proc = check_config(tmp_path, feed(**cadence))
    assert proc.returncode == 0, proc.stderr
    sub = json.loads(proc.stdout)["subscriptions"][0]
    assert (sub["expected_interval_s"], sub["idle_ok"]) == (expected_interval_s, idle_ok)
    # idle_ok only states what the cadence says: the parsed configuration is the default one.
    plain = cfg.parse(feed(**({"expected_interval": cadence["expected_interval"]} if "expected_interval" in cadence
                              else {})))
    assert cfg.parse(feed(**cadence)) == plain


@pytest.mark.parametrize(("cadence", "message"), [
    ({"expected_interval": "5s", "idle_ok": True}, "subscriptions[0].idle_ok: true contradicts expected_interval (5 s"),
    ({"idle_ok": False}, "subscriptions[0].idle_ok: false needs expected_interval"),
    ({"idle_ok": "yes"}, "subscriptions[0].idle_ok"),
])
def test_contradicting_cadences_are_refused_at_load(tmp_path, cadence, message):
    proc = check_config(tmp_path, feed(**cadence))
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stdout + proc.stderr
