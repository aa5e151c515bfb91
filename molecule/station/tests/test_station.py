"""A station end to end: a ZMQ publisher's ticks land in InfluxDB through the bridge unit."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from conftest import READER, run_converge, run_playbook

BRIDGE = "/opt/station-bridge/venv/bin/station-bridge"


def test_bridge_unit_active_enabled_and_dedicated_user(host):
    unit = host.service("station-bridge@kraken")
    assert unit.is_running and unit.is_enabled
    user = host.check_output("systemctl show station-bridge@kraken -p User --value")
    assert user == "station-bridge"
    assert host.service("station.target").is_enabled
    assert host.file("/etc/station-bridge/kraken.env").mode == 0o600


def test_bridge_unit_exposure_at_most_3(host):
    out = host.check_output("systemd-analyze security station-bridge@kraken.service --no-pager")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"systemd-analyze security station-bridge@kraken.service: {score}")
    assert score <= 3.0, out


def test_published_ticks_land_in_influxdb(host, influx):
    before = influx.query("SELECT count(bid) FROM ticks", auth=READER, db="tick").rows()
    start = before[0]["count"] if before else 0
    host.check_output(f"{BRIDGE} publish-demo --endpoint tcp://127.0.0.1:5556 --count 2000 --rate 2000 "
                      "--duration 30 --instruments EURUSD,GBPUSD")
    deadline = time.monotonic() + 30
    count = start
    while time.monotonic() < deadline and count < start + 2000:
        time.sleep(0.5)
        rows = influx.query("SELECT count(bid) FROM ticks", auth=READER, db="tick").rows()
        count = rows[0]["count"] if rows else 0
    assert count == start + 2000
    rows = influx.query("SELECT * FROM ticks WHERE instrument = 'EURUSD' LIMIT 1", auth=READER, db="tick").rows()
    assert rows[0]["base"] == "EUR" and rows[0]["term"] == "USD" and rows[0]["station"] == "lab1"
    metrics = host.check_output("python3 -c \"import urllib.request;"
                                "print(urllib.request.urlopen('http://127.0.0.1:9108/metrics').read().decode())\"")
    assert 'bridge_written_points_total{destination="local"}' in metrics


def test_bad_configuration_fails_the_play_and_leaves_the_bridge_running(host):
    pid = host.check_output("systemctl show station-bridge@kraken -p MainPID --value")
    config = host.file("/etc/station-bridge/kraken.yml").content_string
    result = run_converge("bad_config.yml")
    assert result.rc != 0
    assert "unknown type 'flaot'" in str(result.output)
    assert host.file("/etc/station-bridge/kraken.yml").content_string == config
    assert host.check_output("systemctl show station-bridge@kraken -p MainPID --value") == pid


def test_validate_playbook_reports_the_feed_and_fails_on_a_silent_one():
    playbook = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "validate.yml"
    good = run_playbook(playbook, "validate_feeds.yml")
    assert good.rc == 0
    assert "kraken | tick.ticks | 300 | 300 |" in json.dumps(good.output)
    silent = run_playbook(playbook, "validate_silent.yml")
    assert silent.rc != 0
    assert "Feeds whose data did not land: ['silent']" in json.dumps(silent.output)
