"""Switching a central to VictoriaMetrics is one variable: inventories/fleet-example as it is, with only
`central_backend: victoriametrics` added to central2's entry of fleet_centrals. Rendered on this machine
by ansible-playbook (nothing is installed): the fleet role's checks, then what playbooks/central.yml
would give each of its roles on each central (each role's `when` and `vars:` read from central.yml
itself), and what every station's bridge gets as the destination. About 10 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "inventories" / "fleet-example"
sys.path.insert(0, str(ROOT / "bridge" / "src"))

from station_bridge.config import parse  # noqa: E402


def central_roles() -> dict[str, dict]:
    """playbooks/central.yml's roles: name -> {when, vars} as written there."""
    (play,) = yaml.safe_load((ROOT / "playbooks" / "central.yml").read_text())
    return {role["role"]: {"when": role.get("when", "true"), "vars": role.get("vars", {})} for role in play["roles"]}


def grafana_provision_files() -> str:
    """roles/grafana's list of the files it provisions (the expression of its provision task)."""
    for task in yaml.safe_load((ROOT / "roles" / "grafana" / "tasks" / "provision.yml").read_text()):
        if "grafana_provision_files" in task.get("vars", {}):
            return task["vars"]["grafana_provision_files"]
    raise AssertionError("roles/grafana/tasks/provision.yml has no grafana_provision_files")


def render(tmp_path: Path, fleet_centrals: list[dict], host_vars: dict | None = None,
           limit: str = "all") -> tuple[int, dict, str]:
    """Each host's view (of those in `limit`), with the fleet-example inventory and these fleet_centrals
    (and host_vars)."""
    inventory = tmp_path / "inventory"
    inventory.mkdir(parents=True)
    for part in ("hosts.yml", "group_vars"):
        (inventory / part).symlink_to(INVENTORY / part)
    (inventory / "host_vars").mkdir()
    for path in (INVENTORY / "host_vars").iterdir():
        (inventory / "host_vars" / path.name).symlink_to(path)
    for host, values in (host_vars or {}).items():
        (inventory / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(values))
    roles = central_roles()
    role_vars = {name: roles[name]["vars"] for name in ("victoriametrics", "grafana")}
    runs = {name: "{{ (" + role["when"] + ") | bool }}" for name, role in roles.items() if name != "fleet"}
    # Extra vars: only fleet_centrals, above the inventory's.
    (tmp_path / "fleet.json").write_text(json.dumps({"fleet_centrals": fleet_centrals,
                                                     "ansible_python_interpreter": sys.executable}))
    # A role of this test's whose defaults and vars are roles/grafana's (below the inventory's, as there).
    view = tmp_path / "grafana_view"
    (view / "tasks").mkdir(parents=True)
    for part in ("defaults", "vars"):
        (view / part).symlink_to(ROOT / "roles" / "grafana" / part)
    (view / "tasks" / "main.yml").write_text(yaml.safe_dump([
        {"name": "Grafana role", "ansible.builtin.set_fact": {
            "grafana_files": "{{ files | map(attribute='dest') | map('basename') | list }}"},
         "vars": {**role_vars["grafana"], "grafana_datasource_names_known": [], "grafana_measurements": [],
                  "grafana_health_sources": [], "files": grafana_provision_files()},
         "when": "fleet_central_self is not none and central_grafana | default(false) | bool"},
        {"name": "Write them down", "ansible.builtin.copy": {
            "content": "{{ {'destinations': bridge_central_destinations if station_code is defined else [],"
                       " 'self': fleet_central_self, 'vm_role': vm_role | default(none),"
                       " 'grafana_files': grafana_files | default(none), 'runs': runs,"
                       " 'datasources': grafana_central_datasources_provisioned if fleet_central_self is not none"
                       " else []} | to_json }}",
            "dest": f"{tmp_path}/{{{{ inventory_hostname }}}}.json", "mode": "0600"},
         "vars": {"runs": runs}}]))
    playbook = [{
        "name": "Render what each host gets", "hosts": "all", "gather_facts": False, "connection": "local",
        "vars_files": [str(ROOT / "roles" / "bridge" / "vars" / "main.yml")],
        "vars": {"bridge_centrals": "{{ fleet_centrals_list }}", "bridge_central_user": "{{ fleet_station_user }}"},
        "tasks": [
            {"name": "The fleet role (its checks)", "ansible.builtin.import_role": {"name": "fleet"}},
            # The victoriametrics role's variables as central.yml gives them (task vars: not in hostvars).
            {"name": "VictoriaMetrics role", "ansible.builtin.set_fact": {"vm_role": {
                "listen": "{{ victoriametrics_vmauth_listen }}", "retention": "{{ victoriametrics_retention }}"}},
             "vars": role_vars["victoriametrics"], "when": "fleet_central_self is not none"},
            {"name": "Grafana", "ansible.builtin.import_role": {"name": str(view)}},
        ]}]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    run = subprocess.run(["ansible-playbook", "-i", str(inventory), "-e", f"@{tmp_path / 'fleet.json'}",
                          "--vault-password-file", str(INVENTORY / "lab-vault-password"), "--limit", limit,
                          str(tmp_path / "render.yml")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    got = {path.stem: json.loads(path.read_text()) for path in tmp_path.glob("*.json") if path.stem != "fleet"}
    # The messages as one line (the output wraps them).
    return run.returncode, got, " ".join((run.stdout[-4000:] + run.stderr[-3000:]).replace("''", "'").split())


def example_centrals(**central2: str) -> list[dict]:
    main = yaml.safe_load((INVENTORY / "group_vars" / "all" / "main.yml").read_text())
    return [dict(c, **central2) if c["name"] == "central2" else c for c in main["fleet_centrals"]]


def test_one_variable_switches_central2_of_the_example_fleet(tmp_path):
    rc, got, out = render(tmp_path, example_centrals(central_backend="victoriametrics"))
    assert rc == 0, out
    central2 = got["station-stack-fleet-central2"]
    # central.yml converges it with the victoriametrics role (not influxdb), and its Grafana.
    assert central2["runs"] == {"station_repo": False, "influxdb": False, "victoriametrics": True, "grafana": True}
    assert got["station-stack-fleet-central"]["runs"]["influxdb"] and not got["station-stack-fleet-central"]["runs"][
        "victoriametrics"]
    # vmauth on every address, on the port of the url the stations already have; the fleet RP's duration.
    assert central2["vm_role"] == {"listen": "0.0.0.0:8086", "retention": "260w"}
    assert central2["self"]["retention"] == "260w"
    # Its Grafana: only the MetricsQL overview (no InfluxDB on that host), a Prometheus datasource for it.
    assert "fleet-overview-vm.json" in central2["grafana_files"], central2["grafana_files"]
    assert "fleet-overview.json" not in central2["grafana_files"]
    types = {d["name"]: d["type"] for d in central2["datasources"]}
    assert types == {"Central central": "influxdb", "Central central2": "prometheus"}
    assert "fleet-overview.json" in got["station-stack-fleet-central"]["grafana_files"]

    for station, code in (("station-stack-fleet-ams", "ams"), ("station-stack-fleet-bcn", "bcn")):
        destinations = {d["name"]: d for d in got[station]["destinations"]}
        vm = destinations["central2"]
        assert vm["url"] == "http://station-stack-fleet-central2:8086/influx"
        assert (vm["numeric_only"], vm["time_resolution"], vm["on_collision"]) == (True, "ms", "refuse")
        assert vm["retention_policy"] is None and vm["retention_period"] == "260w"
        assert vm["username"] == f"station-{code}"
        assert "numeric_only" not in destinations["central"]
        config = parse({"subscriptions": [{"name": "kraken", "endpoints": ["tcp://127.0.0.1:5555"], "topics": ["t"],
                                           "mapping": {"measurement": "m", "fields": {"v": "float"}}}],
                        "destinations": got[station]["destinations"]})
        parsed = {d.name: d for d in config.destinations}
        # The stations drop (and count) only what the central drops: older than the RP's 260 weeks.
        assert parsed["central2"].retention_period == 260 * 7 * 86400


def test_the_inventory_still_decides_when_it_says(tmp_path):
    """An explicit retention at least the RP's wins; the host's victoriametrics_vmauth_listen wins; an https
    url (a TLS proxy in front) leaves vmauth on loopback."""
    rc, got, out = render(tmp_path / "a", example_centrals(central_backend="victoriametrics", retention="6y"),
                          {"station-stack-fleet-central2": {"victoriametrics_vmauth_listen": "10.0.0.2:8427"}},
                          limit="station-stack-fleet-central2,station-stack-fleet-cpt")
    assert rc == 0, out
    assert got["station-stack-fleet-central2"]["vm_role"] == {"listen": "10.0.0.2:8427", "retention": "6y"}
    assert {d["name"]: d for d in got["station-stack-fleet-cpt"]["destinations"]}["central2"][
        "retention_period"] == "2190d"
    rc, got, out = render(tmp_path / "b", example_centrals(central_backend="victoriametrics",
                                                           url="https://station-stack-fleet-central2"),
                        limit="station-stack-fleet-central2")
    assert rc == 0, out
    assert got["station-stack-fleet-central2"]["vm_role"]["listen"] == "127.0.0.1:8427"


def test_a_retention_shorter_than_the_rp_or_set_on_the_host_fails(tmp_path):
    rc, _, out = render(tmp_path / "a", example_centrals(central_backend="victoriametrics", retention="1y"),
                        limit="station-stack-fleet-ams")
    assert rc != 0
    assert "retention '1y' is shorter than the fleet's retention policy long_term" in out, out
    rc, _, out = render(tmp_path / "b", example_centrals(central_backend="victoriametrics"),
                        {"station-stack-fleet-central2": {"victoriametrics_retention": "2y"}},
                        limit="station-stack-fleet-central2")
    assert rc != 0
    assert "victoriametrics_retention in the inventory is not read on a fleet central" in out, out
