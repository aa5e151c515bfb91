"""roles/victoriametrics' preflight, run for real by ansible-playbook on this machine with the role's
own defaults and vars (nothing is installed): each bad input fails with its message, a good one
passes. One ansible-playbook run for every case (a block per case), about 5 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "victoriametrics"

CASES = {
    "good": {"victoriametrics_retention": "260w", "victoriametrics_vmauth_listen": "0.0.0.0:8086",
             "victoriametrics_vmauth_stations": {"ams": "ams-pw"}, "victoriametrics_vmauth_readers": {"grafana": "r"}},
    "months": {"victoriametrics_retention": "60"},
    "retention": {"victoriametrics_retention": "5 years"},
    "retention_unit": {"victoriametrics_retention": "52m"},
    "ports": {"victoriametrics_listen": "127.0.0.1:8428", "victoriametrics_vmauth_listen": "0.0.0.0:8428"},
    "listen": {"victoriametrics_vmauth_listen": "central:8427"},
    "password": {"victoriametrics_vmauth_stations": {"ams": "ams-pw", "bcn": ""}},
    "code": {"victoriametrics_vmauth_stations": {"ams,station=bcn": "pw"}},
    "reader": {"victoriametrics_vmauth_readers": {"grafana": ""}},
    "dedup": {"victoriametrics_dedup_interval": "0"},
    "deb": {"victoriametrics_install_source": "deb"},
}


def run_cases(tmp_path: Path) -> dict[str, str]:
    """Case -> '' when the preflight passed, else its failure message."""
    role = tmp_path / "roles" / "vm_preflight"
    (role / "tasks").mkdir(parents=True)
    for part in ("defaults", "vars"):
        (role / part).symlink_to(ROLE / part)
    tasks = []
    for name, variables in CASES.items():
        tasks.append({"name": f"Case {name}", "vars": variables, "block": [
            {"name": "Preflight", "ansible.builtin.include_tasks": str(ROLE / "tasks" / "preflight.yml")},
            {"name": "Passed",
             "ansible.builtin.set_fact": {"outcome": "{{ outcome | combine({'" + name + "': ''}) }}"}},
        ], "rescue": [
            {"name": "Failed", "ansible.builtin.set_fact": {
                "outcome": "{{ outcome | combine({'" + name + "': (ansible_failed_result.results | default([])"
                           " | selectattr('failed', 'defined') | selectattr('failed') | map(attribute='msg')"
                           " | join(' ')) or ansible_failed_result.msg | string}) }}"}},
        ]})
    tasks.append({"name": "Write", "ansible.builtin.copy": {"content": "{{ outcome | to_json }}",
                                                            "dest": str(tmp_path / "outcome.json"), "mode": "0600"}})
    (role / "tasks" / "main.yml").write_text(yaml.safe_dump(tasks, sort_keys=False))
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"name": "VictoriaMetrics preflight", "hosts": "localhost",
                                         "gather_facts": False, "vars": {"outcome": {}},
                                         "roles": ["vm_preflight"]}]))
    (tmp_path / "ansible.cfg").write_text(f"[defaults]\nroles_path = {tmp_path / 'roles'}\n"
                                          "interpreter_python = auto_silent\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / ".ansible"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads((tmp_path / "outcome.json").read_text())


def test_each_bad_input_fails_with_its_message(tmp_path):
    got = {name: " ".join(message.split()) for name, message in run_cases(tmp_path).items()}
    assert set(got) == set(CASES)
    assert got["good"] == "" and got["months"] == "", got
    for case in ("retention", "retention_unit"):
        assert "must be a number of months or a number with h, d, w or y" in got[case], got[case]
    for case in ("ports", "listen"):
        assert "must be address:port (e.g. 127.0.0.1:8428) on different ports" in got[case], got[case]
    assert "station 'bcn' needs a code of letters, digits, _ . - " in got["password"], got["password"]
    assert "and a password (from the vault)" in got["password"]
    assert "station 'ams,station=bcn' needs a code of letters" in got["code"], got["code"]
    assert "'grafana' has no password" in got["reader"], got["reader"]
    assert "without deduplication a batch a station sends again after a crash is stored twice" in got["dedup"]
    assert "victoriametrics_deb_files is empty" in got["deb"], got["deb"]
    # No password in any message.
    assert not any("ams-pw" in message for message in got.values())
