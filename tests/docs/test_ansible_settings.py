"""Every `[defaults]` setting the project gives Ansible (ansible.cfg, and molecule's
`config_options` in .config/molecule/config.yml) is one ansible-core knows: `ansible-config
validate` on them. A setting it does not know is silently ignored (`gather_subset` in
`[defaults]` did nothing on ansible-core 2.19 while a comment and docs/slow-links.md relied on it)."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Options of a plugin, read from [defaults] by it (validate checks ansible-core's own settings).
PLUGIN_OPTIONS = {"callback_result_format"}  # ansible.builtin.default (stdout callback)


def test_every_defaults_setting_is_one_ansible_core_knows(tmp_path):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "ansible.cfg")
    settings = dict(parser["defaults"])
    molecule = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text(encoding="utf-8"))
    settings |= {k: str(v) for k, v in molecule["provisioner"]["config_options"].get("defaults", {}).items()}
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()
                                             if k not in PLUGIN_OPTIONS))
    beside = Path(sys.executable).parent / "ansible-config"
    binary = str(beside) if beside.exists() else shutil.which("ansible-config") or "ansible-config"
    run = subprocess.run([binary, "validate"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "ANSIBLE_CONFIG": str(cfg)})
    unknown = re.findall(r"unknown key '([^']+)'", run.stdout + run.stderr)
    assert not unknown, f"settings ansible-core does not know (ignored silently): {unknown}"
    assert run.returncode == 0, run.stdout + run.stderr
