"""The station converged from the collection as users install it (issue 23): built with
`ansible-galaxy collection build`, installed outside the checkout, made read-only (a user may not
own it), and run by its full names from a playbook outside the checkout with HOME elsewhere and
none of the checkout's Ansible settings. The playbook imports the collection's `site` (as an
operator runs it: central.yml finds no `central` group in this single-station inventory, as the
README's single station without a central has none, then the station). On the station the
checkout converged, it changes nothing (changed=0); on the controller, not one file of the
installed collection is added, removed or changed, and what the roles make there (the bridge's
wheels) lands in the user's cache."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SCENARIO = Path(__file__).resolve().parents[1]
# The controller's own artifact (the wheelhouse, built into the fresh HOME's cache): not a change of the station.
WHEELHOUSE_TASKS = ROOT / "roles" / "bridge_wheelhouse" / "tasks" / "main.yml"
CONTROLLER_TASKS = {task["name"] for task in yaml.safe_load(WHEELHOUSE_TASKS.read_text())}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if not p.is_symlink()}


def test_the_installed_read_only_collection_converges_the_station_and_writes_nothing_into_itself(tmp_path):
    dist, collections, home = tmp_path / "dist", tmp_path / "collections", tmp_path / "home"
    home.mkdir()
    (tmp_path / "ansible.cfg").write_text(
        f"[defaults]\ncollections_path = {collections}\ninterpreter_python = auto_silent\n"
        "retry_files_enabled = false\nstdout_callback = ansible.posix.json\n"
        "[connection]\npipelining = true\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "XDG_", "MOLECULE_"))}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), HOME=str(home),
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")))
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(ROOT)],
                   check=True, capture_output=True, cwd=tmp_path, env=env)
    (tarball,) = dist.glob("station_stack-station-*.tar.gz")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p", str(collections),
                    str(tarball)], check=True, capture_output=True, cwd=tmp_path, env=env)
    tree = collections / "ansible_collections" / "station_stack" / "station"
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    before = snapshot(tree)
    # The operator's own playbook, outside the checkout: this scenario's station, then the
    # collection's site playbook (central, then the stations) by its full name.
    (tmp_path / "station.yml").write_text(
        "- name: Load the station\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        f"    - name: Read the station's instances\n      ansible.builtin.include_vars: {SCENARIO / 'station.yml'}\n"
        "- name: Converge it\n  ansible.builtin.import_playbook: station_stack.station.site\n")
    try:
        proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", os.environ["MOLECULE_INVENTORY_FILE"],
                               str(tmp_path / "station.yml")], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        output = json.loads(proc.stdout)
        changed = [(task["task"]["name"], host) for play in output["plays"] for task in play["tasks"]
                   for host, result in task["hosts"].items()
                   if result.get("changed") and task["task"]["name"].split(" : ", 1)[-1] not in CONTROLLER_TASKS]
        print(f"installed collection: {sum(len(p['tasks']) for p in output['plays'])} tasks, changed {changed}")
        assert changed == [], changed
        assert snapshot(tree) == before, "the converge wrote into the installed collection"
        wheels = list((home / ".cache" / "station-stack").rglob("station_bridge-*.whl"))
        assert wheels, "the bridge's wheel was not built into the user's cache"
    finally:
        for path in [tree, *tree.rglob("*")]:
            if not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
