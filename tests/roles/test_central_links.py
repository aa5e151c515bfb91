"""Issue 24: a scheduled, paced link to a central, set through Ansible. A fleet inventory (a central
host, three stations) run by ansible-playbook on this machine through the fleet role's checks and the
bridge role's preflight (its vars and files: the station's configurations read with the bridge's own
parser, `check-config --json`; nothing is installed): the central's `schedule`,
`max_points_per_second` and `max_bytes_per_second` (fleet_centrals) reach every station's destination
for it, a station's bridge_central_links overrides them (its own satellite window, or `schedule: null`
for a permanent link), and a bad schedule stops the preflight with the bridge's message, naming the
central; a feed's idle_ok reaches the bridge. About 40 seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "bridge"

FEED = {"name": "kraken", "endpoint": "tcp://127.0.0.1:5556", "topic": "kraken", "measurement": "kraken",
        "tags": ["instrument"], "fields": {"bid": "float"}}


# The bridge's inputs from the fleet role, as roles/station composes them (the bridge reads no fleet_* itself).
STATION_DEPENDENCIES = yaml.safe_load((ROOT / "roles" / "station" / "meta" / "main.yml").read_text())["dependencies"]
BRIDGE_INPUTS = next(d["vars"] for d in STATION_DEPENDENCIES if isinstance(d, dict) and d.get("role") == "bridge")

def run(tmp_path: Path, centrals: list[dict], hostvars: dict[str, dict] | None = None) -> tuple[int, dict, str]:
    """The fleet's checks and the bridge's preflight on each station; returns the exit code, each station's
    effective configuration of its feed instance (kraken) as the bridge read it, and the output."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    role = tmp_path / "roles" / "bridge_preflight"
    (role / "tasks").mkdir(parents=True)
    for part in ("defaults", "vars", "files"):
        (role / part).symlink_to(ROLE / part)
    (role / "tasks" / "main.yml").write_text(yaml.safe_dump([
        *({"name": f"Validate the {name} role's arguments", "ansible.builtin.validate_argument_spec": {
            "argument_spec": yaml.safe_load((ROOT / "roles" / name / "meta" / "argument_specs.yml").read_text())[
                "argument_specs"]["main"]["options"]}} for name in ("fleet", "bridge")),
        {"name": "Check the centrals as the fleet role does",
         "ansible.builtin.include_tasks": str(ROOT / "roles" / "fleet" / "tasks" / "main.yml")},
        {"name": "Preflight", "ansible.builtin.include_tasks": str(ROLE / "tasks" / "preflight.yml")},
        {"name": "Write the effective configuration down", "delegate_to": "localhost", "ansible.builtin.copy": {
            "content": "{{ bridge_effective_config | to_json }}",
            "dest": f"{tmp_path}/{{{{ inventory_hostname }}}}.json", "mode": "0600"}},
    ]))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "name": "Stations", "hosts": "stations", "gather_facts": False, "connection": "local",
        "vars_files": [str(ROOT / "roles" / "fleet" / "defaults" / "main.yml"),
                       str(ROOT / "roles" / "fleet" / "vars" / "main.yml")],
        # the bridge's inputs from the fleet role, composed as roles/station composes them
        "vars": BRIDGE_INPUTS,
        "roles": ["bridge_preflight"]}]))
    stations = {code: {"station_code": code} for code in ("ams", "bcn", "lis")}
    for host, extra in (hostvars or {}).items():
        stations[host].update(extra)
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_python_interpreter": sys.executable}, "children": {
            "central": {"hosts": {"ix1": {}}}, "stations": {"hosts": stations}}}}))
    (tmp_path / "vars.json").write_text(json.dumps({  # extra vars: above the roles' defaults
        "fleet_centrals": centrals, "fleet_station_passwords": {"ams": "ams-pw", "bcn": "bcn-pw", "lis": "lis-pw"},
        "bridge_source_dir": str(ROOT / "bridge"), "bridge_wheelhouse_dir": str(tmp_path / "no-wheels-yet"),
        "bridge_feeds": [FEED]}))
    (tmp_path / "ansible.cfg").write_text(f"[defaults]\nroles_path = {tmp_path / 'roles'}\n"
                                          "interpreter_python = auto_silent\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / ".ansible"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
                           str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    effective = {host: json.loads((tmp_path / f"{host}.json").read_text())["kraken"]
                 for host in stations if (tmp_path / f"{host}.json").exists()}
    return proc.returncode, effective, proc.stdout + proc.stderr


def destination(effective: dict, name: str) -> dict:
    return next(d for d in effective["destinations"] if d["name"] == name)


def test_a_centrals_schedule_and_budget_reach_every_station_and_a_station_overrides_them(tmp_path):
    centrals = [{"name": "central", "url": "http://ix1:8086", "host": "ix1",
                 "schedule": {"every": "30m", "for": "10m"}, "max_points_per_second": 2000,
                 "max_bytes_per_second": "32KiB"},
                {"name": "backup", "url": "http://backup.example.net:8086"}]
    rc, got, out = run(tmp_path, centrals, {
        "bcn": {"bridge_central_links": {
            "central": {"schedule": ["02:00-04:30", "22:00-01:00"], "max_bytes_per_second": 8192},
            "backup": {"max_points_per_second": 500}}},
        # A station with a permanent link to a scheduled central: schedule null there.
        "lis": {"bridge_central_links": {"central": {"schedule": None}}}})
    assert rc == 0, out[-4000:]
    ams, bcn, lis = (destination(got[host], "central") for host in ("ams", "bcn", "lis"))
    # As the bridge read it (check-config --json): the central's own link at ams...
    assert ams["schedule"] == {"every_s": 1800.0, "for_s": 600.0}, ams
    assert (ams["max_points_per_second"], ams["max_bytes_per_second"]) == (2000, 32768)
    # ... bcn's windows and byte budget over the central's, its point budget kept...
    assert bcn["schedule"] == ["02:00-04:30", "22:00-01:00"], bcn
    assert (bcn["max_points_per_second"], bcn["max_bytes_per_second"]) == (2000, 8192)
    # ... and lis always up, with the central's budget.
    assert lis["schedule"] is None and lis["max_bytes_per_second"] == 32768, lis
    # A central without a link of its own: always up, unlimited, unless the station paces it.
    assert destination(got["ams"], "backup")["schedule"] is None
    assert destination(got["ams"], "backup")["max_points_per_second"] is None
    assert destination(got["bcn"], "backup")["max_points_per_second"] == 500
    assert destination(got["bcn"], "backup")["schedule"] is None


def test_a_bad_schedule_or_link_stops_the_preflight_naming_it(tmp_path):
    """One run, a failure per station: ams (the central's window ends at 25:00), bcn (its own window
    as long as its period), lis (a link for a central the fleet does not have: a typo would leave the
    link always up; a key a link does not have)."""
    rc, got, out = run(tmp_path, [{"name": "central", "url": "http://ix1:8086", "host": "ix1",
                                   "schedule": ["02:00-25:00"]}], {
        "bcn": {"bridge_central_links": {"central": {"schedule": {"every": "30m", "for": "30m"}}}},
        "lis": {"bridge_central_links": {"centrl": {"schedule": ["02:00-03:00"]},
                                         "central": {"window": ["02:00-03:00"]}}}})
    assert rc != 0 and got == {}, out[-4000:]
    # The bridge's own message, the destination named.
    assert "bridge instance kraken: destinations[0].schedule: '25:00' is not a time of day" in out, out[-4000:]
    assert "(destinations[0] is central: fleet_centrals, bridge_central_links)" in out, out[-4000:]
    assert "destinations[0].schedule: for (1800 s) must be shorter than every (1800 s)" in out, out[-4000:]
    assert "bridge_central_links [centrl]: names a central (central)" in out, out[-4000:]
    assert "bridge_central_links [central]: names a central (central) and sets any of schedule" in out
    assert "(it has: window)" in out, out[-4000:]


def test_a_feeds_idle_ok_reaches_the_bridge(tmp_path):
    """The feed shorthand carries `idle_ok` (issue 24: a feed declares its cadence or that idle is ok):
    with expected_interval too, the bridge's parser refuses the station's configuration."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_bridge_preflight import preflight, source

    destination = {"name": "local", "url": "http://127.0.0.1:8086", "database": "tick"}
    both = {**FEED, "name": "seismic", "idle_ok": True, "expected_interval": "5s"}
    rc, _, out = preflight(tmp_path, {**source(tmp_path), "bridge_feed_defaults": {"destinations": [destination]},
                                      "bridge_feeds": [{**FEED, "idle_ok": True}, both]})
    assert rc != 0
    assert "bridge instance seismic: subscriptions[0].idle_ok: true contradicts expected_interval" in out, out[-3000:]
    assert "bridge instance kraken" not in out, out[-3000:]
