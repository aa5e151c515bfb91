"""Security properties of a converged station: authentication everywhere, least privilege per
user, no secret in play output, no secret-bearing file readable by everyone."""

from __future__ import annotations

import json
import time

from conftest import ADMIN, READER, WRITER, run_converge

# Every secret the scenario's inventory hands to the roles (molecule.yml).
SECRETS = ["molecule-admin-pw", "molecule-writer-pw", "molecule-reader-pw", "molecule-redis-admin-pw",
           "molecule-redis-bridge-pw", "molecule-feed-token", "molecule-grafana-pw"]


def redis(host, auth: tuple[str, str] | None, *command: str) -> str:
    env = f"REDISCLI_AUTH={auth[1]} " if auth else ""
    user = f"--user {auth[0]} " if auth else ""
    result = host.run(f"{env}redis-cli --no-auth-warning {user}" + " ".join(f"'{c}'" for c in command))
    return (result.stdout + result.stderr).strip()


def test_influxdb_refuses_unauthenticated_query_and_write(influx):
    assert influx.query("SHOW DATABASES", auth=None).status == 401
    assert influx.write(f"ticks,instrument=X bid=1 {time.time_ns()}", auth=None).status == 401


def test_influxdb_bridge_user_cannot_read_and_grafana_user_cannot_write(influx):
    now = time.time_ns()
    assert influx.write(f"security_probe,instrument=X bid=1 {now}", auth=WRITER).status == 204
    denied = influx.query("SELECT * FROM security_probe", auth=WRITER, db="tick")
    assert denied.status == 403 or "not authorized" in denied.body, denied
    assert influx.write(f"security_probe,instrument=X bid=2 {now + 1}", auth=READER).status == 403
    assert influx.query("SELECT count(bid) FROM security_probe", auth=READER, db="tick").rows()[0]["count"] == 1
    influx.query("DROP MEASUREMENT security_probe", auth=ADMIN, db="tick")


def test_redis_requires_auth_is_loopback_only_and_confines_the_bridge(host):
    assert "NOAUTH" in redis(host, None, "ping")
    listening = host.check_output("ss -Hltn 'sport = :6379'").splitlines()
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening}
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}, listening
    bridge = ("bridge", "molecule-redis-bridge-pw")
    for command in (["config", "set", "dir", "/tmp"], ["acl", "setuser", "evil", "on"], ["shutdown"],
                    ["flushall"], ["script", "flush"], ["get", "latest:x"]):
        out = redis(host, bridge, *command)
        assert "NOPERM" in out or "unknown command" in out, (command, out)


def test_no_secret_in_check_diff_output_and_check_mode_reports_nothing(host):
    result = run_converge("station.yml", "--check", "--diff")
    assert result.rc == 0, result.output
    text = json.dumps(result.output)
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"secrets in play output: {leaked}"
    assert not result.changed, f"--check on a converged station predicts changes: {result.changed}"
    # The converge names the path each subscription maps on (the bridge's check-config): the lab's
    # feed, derived tags and all, on the compiled path.
    summary = [r["msg"] for p in result.output["plays"] for t in p["tasks"]
               if t["task"]["name"].endswith("Summarise what was deployed") for r in t["hosts"].values()]
    paths = [line for line in summary[0] if line.startswith("Bridge mapping paths:")]
    assert paths and "kraken/kraken: compiled" in paths[0], summary


def test_no_secret_in_the_log_of_a_converge_that_rewrites_every_secret(host, influx):
    """The log of a converge that changes every secret-bearing file, with --diff."""
    secret_files = ["/etc/station-bridge/*.env", "/etc/station-services/*.env", "/etc/grafana/grafana.ini",
                    "/etc/grafana/provisioning/datasources/station-stack.yaml", "/etc/redis/redis.conf"]
    host.check_output("rm -f " + " ".join(secret_files))
    # And a password that no longer matches the inventory, so the users task must set it.
    assert influx.query("SET PASSWORD FOR \"bridge\" = 'rotated-elsewhere'", auth=ADMIN).status == 200
    result = run_converge("station.yml", "--diff")
    assert result.rc == 0, result.output
    changed = {task for task, _ in result.changed}
    assert {"bridge : Write the directories, each instance's configuration and secrets, and the unit",
            "influxdb : Manage databases, retention policies, continuous queries, users and grants",
            "grafana : Create the directories and render grafana.ini",
            "station_services : Write each service's directories, environment and unit",
            "redis : Write redis.conf"} <= changed, changed
    text = json.dumps(result.output)
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"secrets in the converge log: {leaked}"
    assert influx.write(f"security_probe,instrument=X bid=1 {time.time_ns()}", auth=WRITER).status == 204
    influx.query("DROP MEASUREMENT security_probe", auth=ADMIN, db="tick")


def test_no_secret_bearing_file_is_world_readable(host):
    pattern = " ".join(f"-e '{s}'" for s in SECRETS)
    files = host.run(f"grep -rlF {pattern} /etc /opt /var/lib /srv /root /home /tmp 2>/dev/null").stdout.split()
    print("files holding a secret:", files)
    assert files, "expected the env files and Grafana's datasource file to hold secrets"
    readable = [f for f in files if host.file(f).mode & 0o004]
    assert not readable, f"world-readable files holding secrets: {readable}"
