"""The stations' wheelhouse: bridge/constraints.txt pins exactly what the test suite runs with,
the bridge's version follows its code, and roles/bridge_wheelhouse builds a wheelhouse of exactly
those wheels for the stations' Python (run for real by ansible-playbook, from PyPI)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "bridge"


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and "==" in line:
            name, version = line.split("==", 1)
            out[canonicalize_name(name)] = version.strip()
    return out


CONSTRAINTS = pins(BRIDGE / "constraints.txt")
# The stations: Debian 12's CPython 3.11.2 on Linux.
STATION = dict(default_environment(), python_version="3.11", python_full_version="3.11.2",
               implementation_name="cpython", sys_platform="linux", platform_system="Linux")


def test_the_pins_are_the_versions_the_tests_run_with():
    """What `make test` runs the bridge with (this venv, from requirements.txt) is what stations get."""
    installed = {name: importlib.metadata.version(name) for name in CONSTRAINTS}
    assert installed == CONSTRAINTS
    required = pins(ROOT / "requirements.txt")
    assert {name: required.get(name) for name in CONSTRAINTS} == CONSTRAINTS


def test_the_pins_close_over_every_runtime_dependency_on_a_station():
    """Every dependency of the bridge, and of each pinned package, on the stations' Python is pinned
    (and within the bridge's declared ranges): the wheelhouse is installed with --no-index."""
    pyproject = (BRIDGE / "pyproject.toml").read_text()
    declared = [Requirement(r) for r in re.findall(r'^\s+"([^"]+)",', pyproject.split("dependencies = [", 1)[1]
                                                       .split("]", 1)[0], re.M)]
    todo = list(declared)
    seen = set()
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate(dict(STATION, extra="")):
            continue
        name = canonicalize_name(req.name)
        assert name in CONSTRAINTS, f"{req} is not pinned in bridge/constraints.txt"
        assert req.specifier.contains(CONSTRAINTS[name], prereleases=True), f"{name}=={CONSTRAINTS[name]} not in {req}"
        if name not in seen:
            seen.add(name)
            todo += [Requirement(r) for r in importlib.metadata.requires(name) or []]
    assert seen == set(CONSTRAINTS), f"pinned but not needed: {set(CONSTRAINTS) - seen}"


def version_of(tree: Path) -> str:
    return subprocess.run([sys.executable, str(tree / "version.py")], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_version_follows_the_code(tmp_path):
    tree = tmp_path / "bridge"
    shutil.copytree(BRIDGE, tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "tests",
                                                                "chaos", "bench"))
    first = version_of(tree)
    assert re.fullmatch(r"\d+\.\d+\.\d+\+src\.[0-9a-f]{12}", first), first
    assert version_of(tree) == first  # the same code, the same version
    (tree / "src" / "station_bridge" / "__pycache__").mkdir(exist_ok=True)
    (tree / "src" / "station_bridge" / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    assert version_of(tree) == first  # byte-code is not the code
    (tree / "src" / "station_bridge" / "_fastpath.abi3.so").write_bytes(b"\x7fELF built in place")
    (tree / "build" / "lib").mkdir(parents=True)
    (tree / "build" / "lib" / "x.so").write_bytes(b"built")
    assert version_of(tree) == first  # nor is a build output (setup.py build_ext --inplace)
    app = tree / "src" / "station_bridge" / "app.py"
    app.write_text(app.read_text() + "\n# a fix\n")
    assert version_of(tree) != first


SHOW = "{{ {'version': bridge_wheelhouse_version, 'files': bridge_wheelhouse_files} | to_json }}"


def build(tmp_path: Path, wheelhouse: Path) -> tuple[int, dict, list]:
    """roles/bridge_wheelhouse on the controller, as the bridge role and artifacts.yml run it."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Wheelhouse", "hosts": "localhost", "gather_facts": False,
        "vars": {"ansible_python_interpreter": sys.executable, "bridge_wheelhouse_source_dir": str(BRIDGE),
                 "bridge_wheelhouse_dir": str(wheelhouse)},
        "tasks": [{"name": "Build", "ansible.builtin.import_role": {"name": "bridge_wheelhouse"}},
                  {"name": "Show", "ansible.builtin.debug": {"msg": SHOW}}],
    }]))
    (tmp_path / "ansible.cfg").write_text(f"[defaults]\nroles_path = {ROOT / 'roles'}\n"
                                          "stdout_callback = ansible.posix.json\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / ".ansible"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(playbook), "--check"], capture_output=True, text=True, env=env, timeout=600, check=False)
    output = json.loads(proc.stdout)
    shown = [r["msg"] for p in output["plays"] for t in p["tasks"] if t["task"]["name"].endswith("Show")
             for r in t["hosts"].values()]
    changed = [t["task"]["name"] for p in output["plays"] for t in p["tasks"]
               if any(r.get("changed") for r in t["hosts"].values())]
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.returncode, json.loads(shown[0]), changed


def test_a_fresh_controller_builds_exactly_the_pinned_wheelhouse_for_the_stations_python(tmp_path):
    """Under --check too: the wheelhouse is the controller's artifact, and --check on a fresh
    controller must know what it would install."""
    wheelhouse = tmp_path / "wheels"
    _, facts, _ = build(tmp_path, wheelhouse)
    assert facts["version"] == version_of(BRIDGE)
    files = sorted(facts["files"])
    # Binary with the compiled hot path, against Python 3.11's stable ABI (setup.py fails without
    # a C compiler); pure only with STATION_BRIDGE_PURE=1 in the controller's environment.
    tag = "py3-none-any" if os.environ.get("STATION_BRIDGE_PURE") == "1" else "cp311-abi3-linux_x86_64"
    bridge_wheel = f"station_bridge-{facts['version']}-{tag}.whl"
    assert bridge_wheel in files
    if tag != "py3-none-any":
        with zipfile.ZipFile(wheelhouse / bridge_wheel) as wheel:
            assert "station_bridge/_fastpath.abi3.so" in wheel.namelist()
    found = {canonicalize_name(f.split("-")[0]): f.split("-")[1] for f in files if not f.startswith("station_bridge")}
    assert found == CONSTRAINTS
    # Binary wheels for CPython 3.11 on manylinux, whatever Python the controller runs.
    assert all(re.search(r"-(cp311-cp311-manylinux|cp311-abi3-linux_x86_64|py3-none-any)", f) for f in files), files
    assert sorted(p.name for p in wheelhouse.glob("*.whl")) == files
    assert (wheelhouse / "station-bridge-constraints.txt").read_text() == (BRIDGE / "constraints.txt").read_text()
    # A second run finds everything: nothing is built or downloaded again.
    _, again, changed = build(tmp_path, wheelhouse)
    assert again == facts and not [t for t in changed if "Build" in t or "Download" in t], changed
