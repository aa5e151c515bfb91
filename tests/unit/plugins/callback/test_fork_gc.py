# Copyright: station-stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fork_gc, run by a real ansible-playbook: the forked workers find the controller's objects
frozen (out of their garbage collections) when it is enabled, and none without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

# Runs in the forked worker (lookups are templated there): how many objects it inherited frozen.
LOOKUP = '''
from __future__ import annotations
import gc
from ansible.plugins.lookup import LookupBase


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [gc.get_freeze_count()]
'''


def _checkout():
    for parent in Path(__file__).resolve().parents:
        if (parent / "galaxy.yml").is_file() and (parent / "roles").is_dir():
            return parent
    raise RuntimeError("no checkout above %s" % __file__)


def _frozen_in_workers(tmp_path, callbacks, **extra_env):
    (tmp_path / "lookup_plugins").mkdir(exist_ok=True)
    (tmp_path / "lookup_plugins" / "freeze_count.py").write_text(LOOKUP)
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": f"task {n}", "ansible.builtin.debug": {"msg": "{{ lookup('freeze_count') }}"}}
                  for n in range(3)],
    }]))
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(_checkout() / "collections"),
               ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / "home"),
               ANSIBLE_LOOKUP_PLUGINS=str(tmp_path / "lookup_plugins"), ANSIBLE_LOAD_CALLBACK_PLUGINS="true",
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               **extra_env)
    env.pop("PYTHONPATH", None)  # ansible-test narrows it for unit tests
    env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
    if callbacks:
        env["ANSIBLE_CALLBACKS_ENABLED"] = callbacks
    playbook = Path(sys.executable).with_name("ansible-playbook")
    proc = subprocess.run([str(playbook), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = json.loads(proc.stdout)
    return [int(task["hosts"]["localhost"]["msg"]) for task in output["plays"][0]["tasks"]]


def test_workers_inherit_the_controllers_objects_frozen(tmp_path):
    assert all(count > 10_000 for count in _frozen_in_workers(tmp_path, "station_stack.station.fork_gc"))


def test_a_periodic_full_collection_refreezes_before_the_next_fork(tmp_path):
    counts = _frozen_in_workers(tmp_path, "station_stack.station.fork_gc", STATION_FORK_GC_REFREEZE_EVERY="2")
    assert all(count > 10_000 for count in counts), counts


def test_without_it_workers_inherit_nothing_frozen(tmp_path):
    assert _frozen_in_workers(tmp_path, None) == [0, 0, 0]
