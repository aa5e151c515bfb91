"""Grafana's configuration and provisioning as rendered on the station (grafana_install: false
in the lab), and every dashboard panel's InfluxQL executed against the station's InfluxDB."""

from __future__ import annotations

import configparser
import json
import re
import time

import pytest
import yaml
from conftest import READER, run_converge

BRIDGE = "/opt/station-bridge/venv/bin/station-bridge"
PROVISIONING = "/etc/grafana/provisioning"
# What Grafana substitutes before it sends a raw InfluxQL query.
MACROS = {"$timeFilter": "time > now() - 1h", "$__interval": "10s", "$interval": "10s"}


def load_yaml(host, path: str) -> dict:
    return yaml.safe_load(host.file(path).content_string)


def check_datasources_file(doc: dict) -> list[dict]:
    """Grafana's datasource provisioning format (apiVersion 1), the keys Grafana requires."""
    assert doc["apiVersion"] == 1
    assert set(doc) <= {"apiVersion", "datasources", "deleteDatasources"}, set(doc)
    for entry in doc.get("deleteDatasources", []):
        assert isinstance(entry["name"], str) and isinstance(entry["orgId"], int)
    sources = doc["datasources"]
    for ds in sources:
        for key in ("name", "type", "access", "url", "uid"):
            assert isinstance(ds[key], str) and ds[key], (key, ds)
        assert ds["access"] in ("proxy", "direct") and len(ds["uid"]) <= 40
        assert isinstance(ds.get("jsonData", {}), dict) and isinstance(ds.get("secureJsonData", {}), dict)
        assert all(isinstance(v, str) for v in ds.get("secureJsonData", {}).values())
        assert "password" not in ds, "a password belongs in secureJsonData"
    assert sum(bool(ds.get("isDefault")) for ds in sources) == 1
    assert len({ds["uid"] for ds in sources}) == len(sources)
    return sources


def check_dashboard_providers_file(doc: dict) -> list[dict]:
    assert doc["apiVersion"] == 1
    for provider in doc["providers"]:
        assert isinstance(provider["name"], str) and provider["type"] == "file"
        assert isinstance(provider["options"]["path"], str)
        assert isinstance(provider.get("disableDeletion", False), bool)
        assert isinstance(provider.get("allowUiUpdates", False), bool)
        assert isinstance(provider.get("updateIntervalSeconds", 10), int)
    return doc["providers"]


@pytest.fixture(scope="module")
def provisioned(host):
    sources = check_datasources_file(load_yaml(host, f"{PROVISIONING}/datasources/station-stack.yaml"))
    providers = check_dashboard_providers_file(load_yaml(host, f"{PROVISIONING}/dashboards/station-stack.yaml"))
    dashboards = {}
    for provider in providers:
        for path in host.check_output(f"find {provider['options']['path']} -name '*.json'").split():
            dashboards[path] = json.loads(host.file(path).content_string)
    return {ds["uid"]: ds for ds in sources}, dashboards


@pytest.fixture(scope="module")
def demo_data(host, influx):
    """Demo ticks through the deployed bridge, and the bridge's own metrics, are in InfluxDB."""
    host.check_output(f"{BRIDGE} publish-demo --endpoint tcp://127.0.0.1:5556 --count 600 --rate 2000 --duration 30")
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        ticks = influx.query("SELECT count(bid) FROM ticks WHERE time > now() - 1h", auth=READER, db="tick").rows()
        health = influx.query("SELECT count(written) FROM station_bridge WHERE time > now() - 1h",
                              auth=READER, db="tick").rows()
        if ticks and ticks[0]["count"] >= 600 and health and health[0]["count"] >= 3:
            return
        time.sleep(1)
    pytest.fail("demo ticks or the bridge's self-metrics did not land")


def test_grafana_ini_is_safe(host):
    ini = host.file("/etc/grafana/grafana.ini")
    assert ini.user == "root" and ini.group == "grafana" and ini.mode == 0o640
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(ini.content_string)
    assert parser.getboolean("auth.anonymous", "enabled") is False
    assert parser.getboolean("users", "allow_sign_up") is False
    assert parser.getboolean("analytics", "reporting_enabled") is False
    assert parser.getboolean("analytics", "check_for_updates") is False
    assert parser.get("security", "admin_password") not in ("", "admin")
    assert parser.get("server", "http_port") == "3000" and parser.get("server", "protocol") == "http"


def test_secret_bearing_files_are_not_world_readable(host):
    datasources = host.file(f"{PROVISIONING}/datasources/station-stack.yaml")
    assert datasources.mode & 0o007 == 0 and datasources.group == "grafana"
    assert "molecule-reader-pw" in datasources.content_string  # Grafana needs it, root:grafana 0640


def test_datasource_is_the_local_influxdb_with_the_read_only_user(provisioned):
    sources, _ = provisioned
    local = sources["station-influxdb"]
    assert local["type"] == "influxdb" and local["url"] == "http://127.0.0.1:8086"
    assert local["user"] == "grafana" and local["jsonData"]["dbName"] == "tick"


def test_a_dashboard_per_measurement_and_the_health_dashboard(provisioned):
    _, dashboards = provisioned
    titles = sorted(d["title"] for d in dashboards.values())
    assert titles == ["Measurement heartbeats (tick.standard)", "Measurement ticks (tick.standard)",
                      "Station health (bridge)"], titles
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids) and all(len(u) <= 40 for u in uids)


def test_every_panel_references_a_provisioned_datasource(provisioned):
    sources, dashboards = provisioned
    for path, dashboard in dashboards.items():
        for panel in dashboard["panels"]:
            refs = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
            for ref in refs:
                assert ref["uid"] in sources and ref["type"] == sources[ref["uid"]]["type"], (path, panel)


def test_every_panel_query_returns_data(provisioned, demo_data, influx):
    sources, dashboards = provisioned
    report = []
    for dashboard in dashboards.values():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert target["rawQuery"] is True
                query = target["query"]
                for macro, value in MACROS.items():
                    query = query.replace(macro, value)
                assert "$" not in query, query
                db = sources[target["datasource"]["uid"]]["jsonData"]["dbName"]
                rows = influx.query(query, auth=READER, db=db).rows()
                values = [v for row in rows for k, v in row.items() if k != "time" and v is not None]
                report.append(f"{len(rows):6d} rows  {dashboard['title']} / {panel['title']}")
                assert values, f"panel '{panel['title']}' of '{dashboard['title']}' returned no data: {query}"
    print("\n".join(report))
    assert len(report) >= 12


def test_unsafe_admin_password_is_refused():
    result = run_converge("bad_grafana.yml", "--tags", "preflight")
    assert result.rc != 0
    assert re.search(r"grafana_admin_password must be set", json.dumps(result.output))


def test_undeclared_dashboards_are_pruned(host):
    stale = "/var/lib/grafana/dashboards/station-stack/measurement-retired.json"
    host.check_output(f"echo '{{}}' > {stale}")
    result = run_converge("station.yml", "--tags", "grafana")
    assert result.rc == 0
    assert not host.file(stale).exists
    changed = {task for task, _ in result.changed}
    assert changed == {"grafana : Remove dashboards the inventory no longer declares"}, result.changed
