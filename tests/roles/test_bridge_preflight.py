"""The bridge role's controller side, run for real by ansible-playbook on this machine: the feed
shorthand (ports follow a feed's name), and the effective configuration read with the bridge's
own parser (`check-config --json`) from the source or from a wheel, with no station and no
wheelhouse built before (a fresh controller)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "bridge"

DESTINATION = {"name": "local", "url": "http://127.0.0.1:8086", "database": "tick"}


def feed(name: str, port: int | None = None) -> dict:
    out = {"name": name, "endpoint": "tcp://127.0.0.1:5556", "topic": name, "measurement": name,
           "tags": ["instrument"], "fields": {"bid": "float"}}
    if port:
        out["http_port"] = port
    return out


def preflight(tmp_path: Path, variables: dict) -> tuple[int, dict, str]:
    """Runs roles/bridge/tasks/preflight.yml with the role's own defaults, vars and files on localhost;
    returns the exit code, the facts it set and the output."""
    role = tmp_path / "roles" / "bridge_preflight"
    (role / "tasks").mkdir(parents=True)
    for part in ("defaults", "vars", "files"):
        (role / part).symlink_to(ROLE / part)
    (role / "tasks" / "main.yml").write_text(yaml.safe_dump([
        {"name": "Preflight", "ansible.builtin.include_tasks": str(ROLE / "tasks" / "preflight.yml")},
        {"name": "Show", "ansible.builtin.debug": {"msg": "{{ {'effective': bridge_effective_config, "
                                                           "'listen': bridge_http_listen} | to_json }}"}},
    ]))
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Bridge preflight", "hosts": "localhost", "gather_facts": False,
                                         "roles": ["bridge_preflight"]}]))
    # The controller's Python for modules too: interpreter discovery may find another one.
    (tmp_path / "vars.json").write_text(json.dumps({"ansible_python_interpreter": sys.executable, **variables}))
    # A configuration of its own: the project's times every task, which would print into the JSON.
    (tmp_path / "ansible.cfg").write_text(f"[defaults]\nroles_path = {tmp_path / 'roles'}\n"
                                          "stdout_callback = ansible.posix.json\ninterpreter_python = auto_silent\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"), ANSIBLE_HOME=str(tmp_path / ".ansible"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(playbook), "-e", f"@{tmp_path / 'vars.json'}", "--check"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    output = json.loads(proc.stdout)
    shown = [r.get("msg") for p in output["plays"] for t in p["tasks"] if t["task"]["name"].endswith("Show")
             for r in t["hosts"].values()]
    return proc.returncode, json.loads(shown[0]) if shown else {}, proc.stdout


def source(tmp_path: Path) -> dict:
    """Build mode, on a controller that has never built a wheel (its wheelhouse does not exist)."""
    return {"bridge_source_dir": str(ROOT / "bridge"), "bridge_wheelhouse_dir": str(tmp_path / "no-wheels-yet")}


def test_feed_ports_follow_the_feed_name_not_its_position(tmp_path):
    names = ["kraken", "weather", "seismic", "gnss"]
    base = {**source(tmp_path), "bridge_feed_defaults": {"station": "ams", "destinations": [DESTINATION]}}
    rc, first, out = preflight(tmp_path / "a", {**base, "bridge_feeds": [feed(n) for n in names[:2]]})
    assert rc == 0, out
    # The lab's inventory chooses publish-mode validation (inventories/local): the role adds the
    # validation subscription only then.
    rc, second, out = preflight(tmp_path / "b", {**base, "bridge_feeds": [feed(n) for n in reversed(names)],
                                                 "validate_mode": "publish"})
    assert rc == 0, out
    assert first["listen"]["kraken"] == second["listen"]["kraken"]
    assert first["listen"]["weather"] == second["listen"]["weather"]
    ports = {int(address.rsplit(":", 1)[1]) for address in second["listen"].values()}
    assert len(ports) == 4 and all(9200 <= p < 10000 for p in ports)
    # Each feed is an instance of its own, on top of the shared defaults, as the bridge reads it.
    kraken = second["effective"]["kraken"]
    assert kraken["station"] == "ams" and kraken["destinations"][0]["batch_size"] == 5000
    # The feed's subscription, then the bridge's validation subscription at the endpoint the role
    # gives (bridge_validation: where, never what).
    assert kraken["validation"]["endpoint"] == "ipc:///var/lib/station-bridge/kraken/validation.sock"
    assert [s["measurements"] for s in kraken["subscriptions"]] == [["kraken"], ["station_validation"]]
    assert kraken["subscriptions"][1]["static_tags"]["validation"] == "demo" and not kraken["subscriptions"][1]["cache"]
    assert kraken["subscriptions"][0]["tags"] == ["instrument", "station"]
    # By default (observe, production) no instance binds a validation socket.
    assert [s["measurements"] for s in first["effective"]["kraken"]["subscriptions"]] == [["kraken"]]
    assert first["effective"]["kraken"]["validation"] is None


def test_two_feeds_on_one_port_fail_naming_both(tmp_path):
    def port(name: str) -> int:
        return 9200 + int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 800

    seen: dict[int, str] = {}
    for i in range(10_000):
        name = f"feed{i}"
        if port(name) in seen:
            pair = (seen[port(name)], name)
            break
        seen[port(name)] = name
    rc, _, out = preflight(tmp_path, {**source(tmp_path), "bridge_feed_defaults": {"destinations": [DESTINATION]},
                                      "bridge_feeds": [feed(pair[0]), feed(pair[1])]})
    assert rc != 0
    assert f"http.listen 127.0.0.1:{port(pair[0])} is also the address of" in out and pair[0] in out and pair[1] in out
    # An explicit port resolves it.
    rc, facts, out = preflight(tmp_path / "fixed", {**source(tmp_path),
                                                    "bridge_feed_defaults": {"destinations": [DESTINATION]},
                                                    "bridge_feeds": [feed(pair[0]), feed(pair[1], port=9199)]})
    assert rc == 0 and facts["listen"][pair[1]] == "127.0.0.1:9199", out


def test_the_bridges_own_defaults_are_what_the_role_checks(tmp_path):
    """No http section: the bridge's own default address; no shutdown_timeout: its own 20 s."""
    instance = {"subscriptions": [{"name": "a", "endpoints": ["tcp://127.0.0.1:5556"],
                                   "mapping": {"measurement": "a", "fields": {"v": "float"}}}],
                "destinations": [DESTINATION]}
    rc, facts, out = preflight(tmp_path, {**source(tmp_path), "bridge_instances": {"one": instance}})
    assert rc == 0, out
    assert facts["listen"] == {"one": facts["effective"]["one"]["http"]["listen"]} and facts["listen"]["one"]
    assert facts["effective"]["one"]["shutdown_timeout_s"] > 0
    # Two instances without http collide on that default, and the message says so.
    rc, _, out = preflight(tmp_path / "two", {**source(tmp_path),
                                              "bridge_instances": {"one": instance, "two": instance}})
    assert rc != 0 and "is also the address of" in out
    # A stop timeout below the bridge's own flush timeout is refused with the bridge's value.
    rc, _, out = preflight(tmp_path / "stop", {**source(tmp_path), "bridge_instances": {"one": instance},
                                               "bridge_timeout_stop_sec": 5})
    assert rc != 0 and "must fit in bridge_timeout_stop_sec (5)" in out
    # Below it by less than the stop's overrun (2.1 s measured): refused too (it was accepted).
    tight = {**instance, "shutdown_timeout": "28s"}
    rc, _, out = preflight(tmp_path / "tight", {**source(tmp_path), "bridge_instances": {"one": tight},
                                                "bridge_timeout_stop_sec": 30})
    assert rc != 0 and "shutdown_timeout 28.0 s and the stop's overrun past it (5.0 s) must fit in" in out, out
    rc, _, out = preflight(tmp_path / "fits", {**source(tmp_path), "bridge_instances": {"one": {**instance,
                                               "shutdown_timeout": "25s"}}, "bridge_timeout_stop_sec": 30})
    assert rc == 0, out


def test_a_bad_configuration_fails_with_the_bridges_message(tmp_path):
    bad = {"subscriptions": [{"name": "a", "endpoints": ["tcp://127.0.0.1:5556"],
                              "mapping": {"measurement": "a", "fields": {"v": "flaot"}}}],
           "destinations": [DESTINATION]}
    rc, _, out = preflight(tmp_path, {**source(tmp_path), "bridge_instances": {"kraken": bad}})
    assert rc != 0
    assert "bridge instance kraken: subscriptions[0].mapping.fields.v: unknown type 'flaot'" in out


def test_password_env_needs_only_the_environments_names_not_the_secrets(tmp_path):
    dest = {**DESTINATION, "password_env": "LOCAL_SECRET"}
    instance = {"subscriptions": [{"name": "a", "endpoints": ["tcp://127.0.0.1:5556"],
                                   "mapping": {"measurement": "a", "fields": {"v": "float"}}}],
                "destinations": [dest]}
    rc, _, out = preflight(tmp_path, {**source(tmp_path), "bridge_instances": {"one": instance},
                                      "bridge_environment": {"one": {"LOCAL_SECRET": "s3cret-value"}}})
    assert rc == 0, out
    assert "s3cret-value" not in out
    rc, _, out = preflight(tmp_path / "unset", {**source(tmp_path), "bridge_instances": {"one": instance}})
    assert rc != 0 and "environment variable LOCAL_SECRET is not set" in out


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                    str(ROOT / "bridge")], check=True, capture_output=True)
    return out


def test_wheelhouse_mode_reads_the_configuration_with_the_wheels_code(tmp_path, wheelhouse):
    """An air-gapped controller: wheels, no source."""
    rc, facts, out = preflight(tmp_path, {
        "bridge_install_source": "wheelhouse", "bridge_wheelhouse_dir": str(wheelhouse),
        "bridge_source_dir": str(tmp_path / "no-source"),
        "bridge_feed_defaults": {"destinations": [DESTINATION]}, "bridge_feeds": [feed("kraken")]})
    assert rc == 0, out
    assert facts["effective"]["kraken"]["subscriptions"][0]["fields"] == {"bid": "float"}


def test_a_mapping_that_refuses_its_sample_stops_the_preflight(tmp_path):
    """Issue 21: a wrong key is caught before any station changes: the feed's `sample:` (captured
    messages, relative to the inventory directory) is tried with the bridge's own `try`."""
    import base64
    import time

    import msgpack
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    now = time.time()
    records = []
    for i in range(5):
        frames = [b"kraken", msgpack.packb({"instrument": "EURUSD", "bid": 1.5 + i, "timestamp": now + i})]
        records.append({"time": time.time_ns(), "endpoint": "tcp://127.0.0.1:5556", "encoding": "base64",
                        "frames": [base64.b64encode(f).decode() for f in frames], "bytes": sum(map(len, frames))})
    (inventory / "kraken.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    base = {**source(tmp_path), "bridge_feed_defaults": {"station": "ams", "destinations": [DESTINATION]},
            "inventory_dir": str(inventory)}
    good = {**feed("kraken"), "sample": "kraken.jsonl"}
    rc, _, out = preflight(tmp_path / "a", {**base, "bridge_feeds": [good]})
    assert rc == 0, out
    wrong = {**good, "fields": {"price": "float"}}  # the feed sends bid: every message refused
    rc, _, out = preflight(tmp_path / "b", {**base, "bridge_feeds": [wrong]})
    assert rc != 0
    assert "bridge instance kraken: its mapping refuses its sample" in out and "missing_field" in out, out
    # A share of refusals the operator allows: passes.
    rc, _, out = preflight(tmp_path / "c", {**base, "bridge_feeds": [wrong], "bridge_sample_max_rejected_share": 1.0})
    assert rc == 0, out


def test_a_controller_python_without_the_parsers_packages_is_named_not_a_traceback(tmp_path):
    """Issue 23: the preflight runs the bridge's parser on the controller; a Python without PyYAML
    and msgpack fails with what is missing, before any instance is read."""
    bare = tmp_path / "bare"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(bare)], check=True)
    rc, _, out = preflight(tmp_path, {**source(tmp_path), "bridge_controller_python": str(bare / "bin" / "python"),
                                      "bridge_feed_defaults": {"destinations": [DESTINATION]},
                                      "bridge_feeds": [feed("kraken")]})
    assert rc != 0
    assert "missing: PyYAML, msgpack" in out and "Traceback" not in out, out
    rc, _, out = preflight(tmp_path / "gone", {**source(tmp_path), "bridge_controller_python": str(tmp_path / "nope"),
                                               "bridge_feeds": [feed("kraken")],
                                               "bridge_feed_defaults": {"destinations": [DESTINATION]}})
    assert rc != 0 and "it did not run" in out, out


def test_each_central_is_a_destination_of_its_own_with_its_own_password(tmp_path):
    """bridge_centrals (the fleet role's fleet_centrals_list): one destination per central, named after
    it (its own journal), gzip on by default, the station's writer user; its password reaches the
    bridge under STATION_BRIDGE_<NAME>_PASSWORD (password_set), never in the configuration."""
    centrals = [{"name": "central", "url": "http://central-a:8086", "database": "fleet",
                 "retention_policy": "long_term"},
                {"name": "central.b", "url": "https://central-b:8086", "database": "fleet2",
                 "retention_policy": "rp2", "gzip": False, "batch_size": 200}]
    passwords = {"central": "pw-a", "central.b": "pw-b"}
    base = {**source(tmp_path), "bridge_feeds": [feed("kraken")],
            "bridge_feed_defaults": {"station": "ams", "destinations": [DESTINATION]},
            "bridge_centrals": centrals, "bridge_central_user": "station-ams"}
    rc, facts, out = preflight(tmp_path / "a", {**base, "bridge_central_passwords": passwords})
    assert rc == 0, out
    destinations = {d["name"]: d for d in facts["effective"]["kraken"]["destinations"]}
    assert list(destinations) == ["local", "central", "central.b"]
    a, b = destinations["central"], destinations["central.b"]
    assert (a["url"], a["database"], a["retention_policy"], a["gzip"], a["batch_size"]) == (
        "http://central-a:8086", "fleet", "long_term", True, 1000)
    assert (b["url"], b["database"], b["retention_policy"], b["gzip"], b["batch_size"]) == (
        "https://central-b:8086", "fleet2", "rp2", False, 200)
    assert a["username"] == b["username"] == "station-ams" and a["password_set"] and b["password_set"]
    assert "pw-a" not in json.dumps(facts) and "pw-b" not in out
    # A central without this station's password stops the preflight, naming the central.
    rc, _, out = preflight(tmp_path / "b", {**base, "bridge_central_passwords": {"central": "pw-a"}})
    assert rc != 0 and "bridge_centrals [central.b]" in out, out
    # A hand-written destination of the same name (the old single-central form) is refused.
    rc, _, out = preflight(tmp_path / "c", {**base, "bridge_central_passwords": passwords,
                                            "bridge_feed_defaults": {"station": "ams", "destinations": [
                                                DESTINATION, {**DESTINATION, "name": "central"}]}})
    assert rc != 0 and "bridge_centrals [central]" in out, out


def test_one_check_names_every_failure(tmp_path):
    """The preflight's checks are one task each side of the parser (a task costs the controller
    about as much as the check: docs/slow-links.md): every failure is named at once, not the first."""
    instance = {"subscriptions": [{"name": "a", "endpoints": ["tcp://127.0.0.1:5556"],
                                   "mapping": {"measurement": "a", "fields": {"v": "float"}}}],
                "destinations": [DESTINATION]}
    rc, _, out = preflight(tmp_path, {**source(tmp_path), "bridge_feed_defaults": {"destinations": [DESTINATION]},
                                      "bridge_feeds": [feed("kraken")],
                                      "bridge_instances": {"kraken": instance, "bad name": instance}})
    assert rc != 0
    assert "instance name 'bad name' must use letters, digits, _ or -." in out, out
    assert "bridge_feeds and bridge_instances both name kraken" in out, out
    # After the parser: two bad configurations, both named.
    bad = {**instance, "subscriptions": [{**instance["subscriptions"][0],
                                          "mapping": {"measurement": "a", "fields": {"v": "flaot"}}}]}
    rc, _, out = preflight(tmp_path / "two", {**source(tmp_path), "bridge_instances": {"one": bad, "two": bad}})
    assert rc != 0
    assert "bridge instance one: subscriptions[0].mapping.fields.v: unknown type 'flaot'" in out, out
    assert "bridge instance two: subscriptions[0].mapping.fields.v: unknown type 'flaot'" in out, out
