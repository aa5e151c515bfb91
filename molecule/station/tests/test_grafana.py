"""Grafana's configuration and provisioning as rendered on the station (grafana_install: false
in the lab), and every dashboard panel's InfluxQL executed against the station's InfluxDB."""

from __future__ import annotations

import configparser
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import READER, run_converge

BRIDGE = "/opt/station-bridge/venv/bin/station-bridge"
PROVISIONING = "/etc/grafana/provisioning"
DASHBOARDS = "/var/lib/grafana/dashboards/station-stack"
HEALTH = "station_bridge"  # the bridge's own metrics, read by the station health dashboard
CENTRAL = "Central InfluxDB"  # the datasource grafana_central_datasource provisions
# What Grafana substitutes before it sends a raw InfluxQL query.
MACROS = {"$timeFilter": "time > now() - 1h", "$__interval": "10s", "$interval": "10s"}

# Grafana's provisioning format, apiVersion 1 (pkg/services/provisioning/{datasources,dashboards}):
# key -> accepted types; required keys are listed separately.
DATASOURCE_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "type": (str,), "uid": (str,), "access": (str,), "url": (str,), "orgId": (int,),
    "user": (str,), "database": (str,), "basicAuth": (bool,), "basicAuthUser": (str,),
    "withCredentials": (bool,), "isDefault": (bool,), "jsonData": (dict,), "secureJsonData": (dict,),
    "version": (int,), "editable": (bool,),
}
DATASOURCE_REQUIRED = ("name", "type", "uid", "access", "url")
PROVIDER_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "orgId": (int,), "folder": (str,), "folderUid": (str,), "type": (str,),
    "disableDeletion": (bool,), "updateIntervalSeconds": (int,), "allowUiUpdates": (bool,), "options": (dict,),
}


def check_keys(entry: dict, known: dict[str, tuple[type, ...]], required: tuple[str, ...], what: str) -> None:
    assert isinstance(entry, dict), (what, entry)
    assert set(entry) <= set(known), f"{what}: keys Grafana does not know: {set(entry) - set(known)}"
    for key in required:
        assert entry.get(key) not in (None, ""), f"{what}: {key} is required"
    for key, value in entry.items():
        # bool is an int in Python: an int key must not hold a bool.
        ok = isinstance(value, known[key]) and not (bool not in known[key] and isinstance(value, bool))
        assert ok, f"{what}: {key} must be {known[key]}, is {value!r}"


def check_datasources_file(doc: dict) -> list[dict]:
    """Grafana's datasource provisioning file: apiVersion 1, datasources, deleteDatasources."""
    assert doc["apiVersion"] == 1
    assert set(doc) <= {"apiVersion", "datasources", "deleteDatasources"}, set(doc)
    for entry in doc.get("deleteDatasources") or []:
        check_keys(entry, {"name": (str,), "orgId": (int,)}, ("name",), "deleteDatasources")
    sources = doc["datasources"]
    assert isinstance(sources, list) and sources
    for ds in sources:
        check_keys(ds, DATASOURCE_KEYS, DATASOURCE_REQUIRED, f"datasource {ds.get('name')}")
        assert ds["access"] in ("proxy", "direct") and len(ds["uid"]) <= 40
        assert all(isinstance(v, str) for v in ds.get("secureJsonData", {}).values())
        assert "password" not in ds, "a password belongs in secureJsonData"
        assert "password" not in ds.get("jsonData", {}), "a password belongs in secureJsonData"
    assert sum(bool(ds.get("isDefault")) for ds in sources) == 1, "exactly one default datasource"
    assert len({ds["uid"] for ds in sources}) == len(sources), "datasource uids must be unique"
    assert len({ds["name"] for ds in sources}) == len(sources), "datasource names must be unique"
    return sources


def check_dashboard_providers_file(doc: dict) -> list[dict]:
    """Grafana's dashboard provider file: apiVersion 1, providers of type file with a path."""
    assert doc["apiVersion"] == 1
    assert set(doc) == {"apiVersion", "providers"}, set(doc)
    for provider in doc["providers"]:
        check_keys(provider, PROVIDER_KEYS, ("name", "type", "options"), f"provider {provider.get('name')}")
        assert provider["type"] == "file"
        assert set(provider["options"]) <= {"path", "foldersFromFilesStructure"}
        assert isinstance(provider["options"]["path"], str) and provider["options"]["path"].startswith("/")
        assert isinstance(provider["options"].get("foldersFromFilesStructure", False), bool)
    return doc["providers"]


def load_yaml(host, path: str) -> Any:
    return yaml.safe_load(host.file(path).content_string)


@pytest.fixture(scope="module")
def provisioned(host):
    sources = check_datasources_file(load_yaml(host, f"{PROVISIONING}/datasources/station-stack.yaml"))
    providers = check_dashboard_providers_file(load_yaml(host, f"{PROVISIONING}/dashboards/station-stack.yaml"))
    dashboards = {}
    for provider in providers:
        for path in host.check_output(f"find {provider['options']['path']} -name '*.json'").split():
            dashboards[path] = json.loads(host.file(path).content_string)
    return {ds["uid"]: ds for ds in sources}, dashboards


def count(influx, query: str) -> int:
    rows = influx.query(query, auth=READER, db="tick").rows()
    return max((v for row in rows for k, v in row.items() if k != "time" and isinstance(v, int)), default=0)


@pytest.fixture(scope="module")
def demo_data(host, influx):
    """Demo ticks published through the deployed bridge have landed in InfluxDB."""
    host.check_output(f"{BRIDGE} publish-demo --endpoint tcp://127.0.0.1:5556 --topic kraken_tick "
                      "--count 600 --rate 2000 --duration 30")
    deadline = time.monotonic() + 40
    while count(influx, 'SELECT count(*) FROM "tick"."standard"."ticks" WHERE time > now() - 1h') == 0:
        assert time.monotonic() < deadline, "the published demo ticks did not land in tick.standard.ticks"
        time.sleep(1)


@pytest.fixture(scope="module")
def bridge_metrics(influx, demo_data):
    """The bridge's own metrics (station_bridge), read by the health dashboard, have landed."""
    deadline = time.monotonic() + 40
    # Rates are derivatives: they need several reports in the last hour.
    while count(influx, f'SELECT count("written") FROM "{HEALTH}" WHERE time > now() - 1h') < 3:
        assert time.monotonic() < deadline, f"fewer than 3 {HEALTH} points in the last hour"
        time.sleep(1)


def test_grafana_ini_is_safe(host):
    ini = host.file("/etc/grafana/grafana.ini")
    assert ini.user == "root" and ini.group == "grafana" and ini.mode == 0o640
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(ini.content_string)
    assert parser.getboolean("auth.anonymous", "enabled") is False
    assert parser.getboolean("users", "allow_sign_up") is False
    assert parser.getboolean("analytics", "reporting_enabled") is False
    assert parser.getboolean("analytics", "check_for_updates") is False
    assert parser.get("security", "admin_user") != ""
    assert parser.get("security", "admin_password") not in ("", "admin")
    assert parser.get("server", "http_port") == "3000" and parser.get("server", "protocol") == "http"
    assert parser.get("paths", "provisioning") == "/etc/grafana/provisioning"


def test_files_are_not_world_readable_where_they_hold_secrets(host):
    for path in ("/etc/grafana/grafana.ini", f"{PROVISIONING}/datasources/station-stack.yaml"):
        f = host.file(path)
        assert f.mode & 0o007 == 0 and f.user == "root" and f.group == "grafana", path
    assert "molecule-reader-pw" in host.file(f"{PROVISIONING}/datasources/station-stack.yaml").content_string
    for path in ("/etc/grafana", PROVISIONING, f"{PROVISIONING}/datasources", f"{PROVISIONING}/dashboards",
                 f"{PROVISIONING}/plugins", "/var/lib/grafana", DASHBOARDS):
        assert host.file(path).is_directory, path
    assert host.file("/var/lib/grafana").mode & 0o007 == 0


def test_grafana_account_is_a_system_account(host):
    user = host.user("grafana")
    assert user.exists and user.group == "grafana" and user.uid < 1000 and user.shell.endswith("nologin")


def test_datasource_is_the_local_influxdb_with_the_read_only_user(provisioned):
    sources, _ = provisioned
    local = sources["station-influxdb"]
    assert local["type"] == "influxdb" and local["access"] == "proxy" and local["url"] == "http://127.0.0.1:8086"
    assert local["user"] == "grafana" and local["jsonData"] == {"dbName": "tick", "httpMode": "GET"}
    assert local["secureJsonData"] == {"password": "molecule-reader-pw"}


def test_dashboard_provider_lets_grafana_delete_removed_files(provisioned, host):
    provider = check_dashboard_providers_file(load_yaml(host, f"{PROVISIONING}/dashboards/station-stack.yaml"))[0]
    assert provider["options"] == {"path": DASHBOARDS, "foldersFromFilesStructure": False}
    assert provider["disableDeletion"] is False and provider["allowUiUpdates"] is False


def test_a_dashboard_per_measurement_and_the_health_dashboard(provisioned):
    _, dashboards = provisioned
    titles = sorted(d["title"] for d in dashboards.values())
    assert titles == ["Measurement heartbeats (tick.standard)", "Measurement ticks (tick.standard)",
                      "Station health (bridge)"], titles
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"[A-Za-z0-9_-]{1,40}", u) for u in uids), uids


def test_every_panel_references_a_provisioned_datasource(provisioned):
    sources, dashboards = provisioned
    for path, dashboard in dashboards.items():
        assert dashboard["panels"], path
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(set(ids)) == len(ids), path
        for panel in dashboard["panels"]:
            assert panel["targets"], (path, panel["title"])
            refs = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
            for ref in refs:
                assert ref["uid"] in sources and ref["type"] == sources[ref["uid"]]["type"], (path, panel)
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), (path, panel)


def expand(query: str) -> str:
    for macro, value in MACROS.items():
        query = query.replace(macro, value)
    assert "$" not in query, f"a macro the verifier does not expand: {query}"
    return query


def test_every_panel_query_returns_data(provisioned, demo_data, bridge_metrics, influx):
    sources, dashboards = provisioned
    report, empty = [], []
    for dashboard in dashboards.values():
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                assert target["rawQuery"] is True
                query = expand(target["query"])
                what = f"{dashboard['title']} / {panel['title']} [{target['refId']}]"
                db = sources[target["datasource"]["uid"]]["jsonData"]["dbName"]
                rows = influx.query(query, auth=READER, db=db).rows()
                values = [v for row in rows for k, v in row.items() if k != "time" and v is not None]
                report.append(f"{len(rows):6d} rows  {what}")
                if not values:
                    empty.append(f"{what}: {query}")
    print("\n".join(report))
    assert not empty, "panels without data:\n" + "\n".join(empty)
    assert len(report) >= 10, report
    assert any(f'"{HEALTH}"' in t["query"] for d in dashboards.values() for p in d["panels"] for t in p["targets"])


def test_unsafe_admin_password_is_refused():
    result = run_converge("bad_grafana.yml", "--tags", "preflight")
    assert result.rc != 0
    assert re.search(r"grafana_admin_password must be set", json.dumps(result.output))


def datasource_names(doc: dict) -> tuple[set[str], set[str]]:
    """Names provisioned, and names Grafana is told to delete, in a datasource file."""
    return {ds["name"] for ds in doc["datasources"]}, {d["name"] for d in doc.get("deleteDatasources") or []}


def plugin_zip(path: Path, version: str) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("station-test-panel/plugin.json",
                   json.dumps({"id": "station-test-panel", "type": "panel", "info": {"version": version}}))
        if version == "1.0.0":
            z.writestr("station-test-panel/old-only.js", "// dropped in 2.0.0")
    return path


def test_what_the_inventory_adds_to_grafana_it_removes_again(host, tmp_path):
    """One life cycle of what an inventory adds to Grafana, converged with --tags grafana (check mode
    on the converged station is test_security's, for every role):
    - a central datasource: provisioned with its password in secureJsonData, recorded, and when the
      inventory drops it, handed to deleteDatasources (Grafana deletes only what it is told to);
    - a plugin zip and an extra dashboard from the controller: unpacked, replaced by a new zip, and
      pruned when no longer listed, but not a plugin the role did not unpack;
    - a dashboard file the inventory never declared: pruned.
    Each step's changes are named, and a rerun of each settled state changes nothing."""
    path = f"{PROVISIONING}/datasources/station-stack.yaml"
    record = f"{PROVISIONING}/datasources/.station-stack-names.json"
    saved = "/root/station-stack-names.json.pre-test"
    plugins = "/var/lib/grafana/plugins"
    stale = f"{DASHBOARDS}/measurement-retired.json"
    central = {"url": "http://127.0.0.1:8086", "database": "tick", "user": "grafana", "password": "x-central-pw"}
    old = plugin_zip(tmp_path / "station-test-panel-1.0.0.any.zip", "1.0.0")
    new = plugin_zip(tmp_path / "station-test-panel-2.0.0.any.zip", "2.0.0")
    extra = tmp_path / "operator.json"
    extra.write_text(json.dumps({"uid": "operator-extra", "title": "Operator", "panels": []}))

    def wanted(plugin: Path) -> str:
        return json.dumps({"grafana_central_datasource": central, "grafana_plugins_local": [str(plugin)],
                           "grafana_dashboards_extra": [str(extra)]})

    def version() -> str:
        return json.loads(host.file(f"{plugins}/station-test-panel/plugin.json").content_string)["info"]["version"]

    before = host.file(record).content_string
    host.check_output(f"cp -p {record} {saved}")
    host.check_output(f"mkdir -p {plugins}/operator-cli-panel")  # e.g. from grafana-cli
    try:
        first = run_converge("station.yml", "--tags", "grafana", "-e", wanted(old))
        assert first.rc == 0, first.output
        assert "x-central-pw" not in json.dumps(first.output), "the central password reached the log"
        doc = load_yaml(host, path)
        sources = {ds["name"]: ds for ds in check_datasources_file(doc)}
        provisioned, deleted = datasource_names(doc)
        assert CENTRAL in provisioned and CENTRAL not in deleted, doc.get("deleteDatasources")
        assert sources[CENTRAL]["uid"] == "central-influxdb"
        assert sources[CENTRAL]["secureJsonData"] == {"password": "x-central-pw"}
        rec = host.file(record)
        assert rec.user == "root" and rec.group == "grafana" and rec.mode == 0o640
        assert CENTRAL in json.loads(rec.content_string)
        assert host.file(f"{plugins}/station-test-panel/plugin.json").user == "grafana" and version() == "1.0.0"
        assert json.loads(host.file(f"{DASHBOARDS}/extra-operator.json").content_string)["uid"] == "operator-extra"

        again = run_converge("station.yml", "--tags", "grafana", "-e", wanted(old))
        assert again.rc == 0 and again.changed == set(), again.changed

        upgraded = run_converge("station.yml", "--tags", "grafana", "-e", wanted(new))
        assert upgraded.rc == 0, upgraded.output
        assert version() == "2.0.0" and not host.file(f"{plugins}/station-test-panel/old-only.js").exists
        replaced = ("grafana : Remove plugins replaced by a new zip or no longer listed", "station-test-panel")
        assert replaced in upgraded.changed, upgraded.changed

        host.check_output(f"echo '{{}}' > {stale}")
        dropped = run_converge("station.yml", "--tags", "grafana")
        assert dropped.rc == 0, dropped.output
        doc = load_yaml(host, path)
        check_datasources_file(doc)
        provisioned, deleted = datasource_names(doc)
        assert CENTRAL not in provisioned and CENTRAL in deleted, (provisioned, deleted)
        assert "x-central-pw" not in host.file(path).content_string
        assert not host.file(stale).exists and not host.file(f"{DASHBOARDS}/extra-operator.json").exists
        assert not host.file(f"{plugins}/station-test-panel").exists
        assert not host.file("/var/lib/grafana/plugin-archives/station-test-panel.zip").exists
        assert host.file(f"{plugins}/operator-cli-panel").is_directory
        changed = {task for task, _ in dropped.changed}
        assert changed == {"grafana : Provision the datasources and dashboards",
                           "grafana : Remove dashboards the inventory no longer declares",
                           "grafana : Remove plugins replaced by a new zip or no longer listed",
                           "grafana : Remove the zip files of plugins no longer listed"}, dropped.changed

        settled = run_converge("station.yml", "--tags", "grafana")
        assert settled.rc == 0 and settled.changed == set(), settled.changed
    finally:
        # The record as before the test, and the datasource file rendered from the inventory.
        host.run(f"mv -f {saved} {record}")
        host.run(f"rm -rf {plugins}/station-test-panel {plugins}/operator-cli-panel {stale} "
                 f"/var/lib/grafana/plugin-archives/station-test-panel.zip {DASHBOARDS}/extra-operator.json")
        restored = run_converge("station.yml", "--tags", "grafana")
    assert restored.rc == 0, restored.output
    assert host.file(record).content_string == before
    assert CENTRAL not in datasource_names(load_yaml(host, path))[0]


def test_apt_repository_and_package_choice_as_far_as_the_lab_allows(host):
    """Grafana's repository is unreachable here: check the files the role writes, then remove them."""
    try:
        result = run_converge("grafana_repo.yml", "--tags", "grafana_repo")
        assert result.rc == 0, result.output
        facts = [r.get("ansible_facts", {}) for p in result.output["plays"] for t in p["tasks"]
                 for r in t["hosts"].values()]
        assert {"grafana_package_spec": "grafana-enterprise=11.3.1"} in facts
        source = host.file("/etc/apt/sources.list.d/grafana.sources")
        fields = dict(line.split(": ", 1) for line in source.content_string.splitlines() if ": " in line)
        assert fields["URIs"] == "https://apt.grafana.com" and fields["Suites"] == "stable"
        assert fields["Components"] == "main" and fields["Signed-By"] == "/etc/apt/keyrings/grafana.asc"
        key = host.file("/etc/apt/keyrings/grafana.asc")
        assert key.mode == 0o644 and "station-stack lab placeholder" in key.content_string
    finally:
        host.run("rm -f /etc/apt/sources.list.d/grafana.sources /etc/apt/keyrings/grafana.asc")
