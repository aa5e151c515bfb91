"""The collection where users install it (issue 23): built with `ansible-galaxy collection build`,
installed outside the checkout, made read-only (a user may not own it), and run from a playbook
outside the checkout by full names, with HOME elsewhere, on this machine and under --check (the
converge of a real station from the installed collection, importing `site`, is the station
scenario's molecule/station/tests/test_installed_collection.py). What the roles and playbooks
make on the controller (the bridge's wheels, rollout reports) lands in the user's cache directory,
and not one file of the installed collection is added, removed or changed (a user may not own
it, and the next install replaces it)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DESTINATION = {"name": "local", "url": "http://127.0.0.1:8086", "database": "tick"}
FEED = {"name": "kraken", "endpoint": "tcp://127.0.0.1:5556", "topic": "kraken", "measurement": "kraken",
        "tags": ["instrument"], "fields": {"bid": "float"}}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if not p.is_symlink()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("installed")
    dist, collections, home = tmp / "dist", tmp / "collections", tmp / "home"
    home.mkdir()
    # A user's controller: none of the checkout's Ansible settings (make exports ANSIBLE_CONFIG, whose
    # collections_path finds this checkout as the collection: the install would then do nothing).
    (tmp / "ansible.cfg").write_text(f"[defaults]\ncollections_path = {collections}\ninterpreter_python = auto_silent\n"
                                     "retry_files_enabled = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "XDG_"))}
    env.update(ANSIBLE_CONFIG=str(tmp / "ansible.cfg"), HOME=str(home),
               PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")))
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(ROOT)],
                   check=True, capture_output=True, cwd=ROOT, env=env)
    (tarball,) = dist.glob("station_stack-station-*.tar.gz")
    installing = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "-p",
                                 str(collections), str(tarball)], capture_output=True, text=True, cwd=tmp, env=env)
    tree = collections / "ansible_collections" / "station_stack" / "station"
    assert installing.returncode == 0 and (tree / "MANIFEST.json").is_file(), installing.stdout + installing.stderr
    assert not list(tree.rglob("*.so")), "the checkout's in-place build output was packed into the collection"
    writable(tree, False)
    return {"tmp": tmp, "tree": tree, "home": home, "env": env}


def writable(tree: Path, on: bool) -> None:
    for path in [tree, *tree.rglob("*")]:
        if not path.is_symlink():
            mode = stat.S_IMODE(path.stat().st_mode)
            path.chmod(mode | 0o200 if on else mode & ~0o222)


def play(installed: dict, name: str, playbook: str | list, inventory: dict, *flags: str) -> subprocess.CompletedProcess:
    tmp = installed["tmp"]
    (tmp / f"{name}.hosts.yml").write_text(yaml.safe_dump(inventory))
    if isinstance(playbook, list):
        (tmp / f"{name}.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
        playbook = str(tmp / f"{name}.yml")
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp / f"{name}.hosts.yml"), playbook, *flags],
                          capture_output=True, text=True, env=installed["env"], cwd=tmp, timeout=600, check=False)


def test_the_bridge_role_builds_its_wheels_without_writing_into_the_installed_collection(installed):
    before = snapshot(installed["tree"])
    local = {"all": {"hosts": {"localhost": {"ansible_connection": "local",
                                             "ansible_python_interpreter": sys.executable}}}}
    playbook = [{"name": "The bridge role's controller side, from the installed collection", "hosts": "localhost",
                 "gather_facts": False,
                 "vars": {"bridge_feed_defaults": {"destinations": [DESTINATION]}, "bridge_feeds": [FEED]},
                 "tasks": [
                     {"name": "Preflight", "ansible.builtin.include_role": {
                         "name": "station_stack.station.bridge", "tasks_from": "preflight", "public": True}},
                     {"name": "Wheelhouse", "ansible.builtin.include_role": {
                         "name": "station_stack.station.bridge_wheelhouse"},
                      "vars": {"bridge_wheelhouse_build": True,
                               "bridge_wheelhouse_source_dir": "{{ bridge_source_dir }}"}}]}]
    # --check: the role's meta dependency (systemd_unit) must not touch this machine; the wheelhouse is
    # the controller's artifact and is built under --check too.
    proc = play(installed, "bridge", playbook, local, "--check")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    wheels = installed["home"] / ".cache" / "station-stack" / "artifacts" / "wheels"
    assert list(wheels.glob("station_bridge-*.whl")) and list(wheels.glob("msgpack-*.whl")), sorted(wheels.iterdir())
    after = snapshot(installed["tree"])
    assert after == before, {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)),
                             "changed": sorted(k for k in set(after) & set(before) if after[k] != before[k])}


def test_a_rollout_reports_into_the_users_cache(installed):
    before = snapshot(installed["tree"])
    station = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "station_code": "01"}
    inventory = {"all": {"vars": {"fleet_central_url": "http://127.0.0.1:9", "rollout_require_clock_sync": False,
                                  "rollout_min_free_mib": 1, "rollout_reach_timeout": 10},
                         "children": {"central": {"hosts": {}}, "stations": {"hosts": {"station-01": station}}}}}
    proc = play(installed, "rollout", "station_stack.station.rollout", inventory, "--check", "--skip-tags", "station")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    (report,) = (installed["home"] / ".cache" / "station-stack" / "rollouts").glob("rollout-*.json")
    assert [row["station"] for row in json.loads(report.read_text())["stations"]] == ["station-01"]
    assert snapshot(installed["tree"]) == before


@pytest.fixture(autouse=True, scope="module")
def _cleanup(installed):
    yield
    writable(installed["tree"], True)
    shutil.rmtree(installed["tmp"], ignore_errors=True)
