"""Grafana listens on loopback unless the operator says otherwise: grafana.ini rendered by
ansible-playbook on this machine from the role's own defaults, vars and template (nothing is
installed), with no inventory setting grafana_http_addr (the lab's sets 0.0.0.0, so the lab cannot
tell). A default changed to every address ("", 0.0.0.0, ::) fails here. About 3 seconds."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "grafana"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def render_ini(tmp_path: Path, extra: dict | None = None) -> configparser.ConfigParser:
    playbook = [{"name": "Render grafana.ini from the role's defaults", "hosts": "localhost", "gather_facts": False,
                 "connection": "local",
                 "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
                 "tasks": [{"name": "Render", "ansible.builtin.template": {
                     "src": str(ROLE / "templates" / "grafana.ini.j2"), "dest": str(tmp_path / "grafana.ini"),
                     "mode": "0600"}}]}]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(playbook))
    (tmp_path / "vars.json").write_text(json.dumps({"ansible_python_interpreter": sys.executable, **(extra or {})}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / ".ansible"))
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                          str(tmp_path / "render.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string((tmp_path / "grafana.ini").read_text())
    return ini


def test_grafana_listens_on_loopback_by_default(tmp_path):
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    assert defaults["grafana_http_addr"] in LOOPBACK, defaults["grafana_http_addr"]
    assert spec["argument_specs"]["main"]["options"]["grafana_http_addr"]["default"] == defaults["grafana_http_addr"]
    # What Grafana reads: an http_addr line (absent, Grafana listens on every address) on loopback.
    (tmp_path / "default").mkdir()
    ini = render_ini(tmp_path / "default")
    assert ini.get("server", "http_addr", fallback="(absent: every address)") in LOOPBACK, dict(ini["server"])
    # The operator's setting is what Grafana gets (the lab's 0.0.0.0).
    (tmp_path / "lab").mkdir()
    assert render_ini(tmp_path / "lab", {"grafana_http_addr": "0.0.0.0"}).get("server", "http_addr") == "0.0.0.0"
