"""A central's private CA (`ca_cert` in fleet_centrals), rendered by the roles' own variables with
ansible-playbook on this machine (nothing is installed): a station's destination for that central
names the CA file the bridge role writes (the bridge's own parser takes it), the file's content is
the PEM text; a central without one has no ca_file and its file is the one removed; Grafana's
datasource for it trusts the CA; the fleet role refuses a ca_cert on an http:// url or one that is
no PEM certificate, naming the central. The TLS itself (a real influxd serving https with a
certificate of a private CA, refused without the CA and delivered with it) is
bridge/tests/test_ca_file.py. About 10 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bridge" / "src"))

from station_bridge.config import FILES_ELSEWHERE_ENV, parse  # noqa: E402

PEM = ("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VudHJhbC1hLXRlc3QtY2EwCgYIKoZIzj0EAwIwHTEb\n"
       "-----END CERTIFICATE-----\n")

RENDER = """
- name: Render what each host gets
  hosts: all
  gather_facts: false
  connection: local
  vars_files:
    - {root}/roles/fleet/defaults/main.yml
    - {root}/roles/fleet/vars/main.yml
    - {root}/roles/bridge/vars/main.yml
    - {root}/roles/grafana/vars/main.yml
  vars:
    bridge_config_dir: /etc/station-bridge
    bridge_centrals: "{{{{ fleet_centrals_list }}}}"
    bridge_central_user: "{{{{ fleet_station_user }}}}"
    grafana_central_datasources: >-
      {{%- set out = [] -%}}
      {{%- for central in fleet_centrals_list -%}}
      {{%- set _ = out.append({{'name': central.name, 'url': central.url, 'database': central.database,
            'backend': central.backend, 'ca_cert': central.ca_cert, 'user': 'grafana', 'password': 'reader-pw'}}) -%}}
      {{%- endfor -%}}
      {{{{ out }}}}
  tasks:
    - name: Check the centrals as the fleet role does
      ansible.builtin.include_tasks: {root}/roles/fleet/tasks/main.yml
    - name: Write them down
      ansible.builtin.copy:
        content: >-
          {{{{ {{'destinations': bridge_central_destinations, 'ca_files': bridge_central_ca_files,
                'ca_paths': bridge_central_ca_path,
                'datasources': grafana_central_datasources_provisioned}} | to_json }}}}
        dest: "{out}/{{{{ inventory_hostname }}}}.json"
        mode: "0600"
"""


def render(tmp_path: Path, centrals: list[dict]) -> subprocess.CompletedProcess:
    fleet = {"fleet_station_passwords": {"ams": "ams-pw"}, "fleet_centrals": centrals}
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))  # extra vars: above the roles' defaults
    inventory = {"all": {"vars": {"ansible_python_interpreter": sys.executable}, "children": {
        "central": {"hosts": {"ix1": {}, "ix2": {}}}, "stations": {"hosts": {"ams": {"station_code": "ams"}}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "render.yml").write_text(RENDER.format(root=ROOT, out=tmp_path))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    argv = ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'fleet.json'}",
            str(tmp_path / "render.yml")]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_a_private_ca_becomes_the_destinations_ca_file_and_grafanas_trust(tmp_path, monkeypatch):
    run = render(tmp_path, [{"name": "central", "url": "https://ix1.example.net:8086", "host": "ix1",
                             "ca_cert": PEM.rstrip("\n") + "\n\n"},
                            {"name": "central2", "url": "https://ix2.example.net:8086", "host": "ix2"}])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ams = json.loads((tmp_path / "ams.json").read_text())
    private, public = ams["destinations"]
    assert private["ca_file"] == "/etc/station-bridge/central-ca.pem"
    assert "ca_file" not in public  # the system's CAs
    assert ams["ca_files"] == {"central": PEM}  # one trailing newline, whatever the inventory gave
    # The bridge role writes every central's file that has a CA and removes the others'.
    assert ams["ca_paths"] == {"central": "/etc/station-bridge/central-ca.pem",
                               "central2": "/etc/station-bridge/central2-ca.pem"}
    monkeypatch.setenv(FILES_ELSEWHERE_ENV, "1")  # as the role's preflight reads it on the controller
    config = parse({"subscriptions": [{"name": "kraken", "endpoints": ["tcp://127.0.0.1:5555"], "topics": ["t"],
                                       "mapping": {"measurement": "m", "fields": {"v": "float"}}}],
                    "destinations": ams["destinations"]})
    assert {d.name: d.ca_file for d in config.destinations} == {
        "central": "/etc/station-bridge/central-ca.pem", "central2": None}
    sources = {d["name"]: d for d in json.loads((tmp_path / "ix1.json").read_text())["datasources"]}
    assert sources["Central central"]["jsonData"]["tlsAuthWithCACert"] is True
    assert sources["Central central"]["secureJsonData"]["tlsCACert"] == PEM
    assert "tlsAuthWithCACert" not in sources["Central central2"]["jsonData"]


def test_a_ca_cert_needs_https_and_pem(tmp_path):
    for name, central, why in [
            ("plain", {"url": "http://ix1:8086", "ca_cert": PEM}, "http"),
            ("notpem", {"url": "https://ix1:8086", "ca_cert": "/etc/ssl/central-ca.pem"}, "a path, not its content")]:
        directory = tmp_path / name
        directory.mkdir()
        run = render(directory, [{"name": "central", "host": "ix1", **central}])
        assert run.returncode != 0, why
        assert "fleet_centrals [central]" in run.stdout and "ca_cert set" in run.stdout, run.stdout[-3000:]
        assert "-----BEGIN CERTIFICATE-----) for an https://" in run.stdout, run.stdout[-3000:]
