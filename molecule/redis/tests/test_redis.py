"""roles/redis: bound where configured, authentication required, the bridge user confined."""

from __future__ import annotations

import time

from conftest import REDIS_ADMIN, REDIS_BRIDGE, redis_cli


def test_service_active_enabled_and_supervised(host):
    unit = host.service("redis-server")
    assert unit.is_running and unit.is_enabled
    assert host.check_output("systemctl show redis-server -p Type --value") == "notify"
    assert host.file("/etc/redis/redis.conf").mode == 0o640


def test_listens_on_loopback_only(host):
    listening = host.check_output("ss -Hltn 'sport = :6379'")
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines()}
    assert addresses and addresses <= {"127.0.0.1", "[::1]"}, listening


def test_unauthenticated_commands_are_refused(host):
    out = redis_cli(host, None, "ping")
    assert "NOAUTH" in out or "Authentication required" in out, out
    out = redis_cli(host, ("admin", "wrong-password"), "ping")
    assert "WRONGPASS" in out and "PONG" not in out, out


def test_bridge_user_writes_its_keys_only(host):
    assert redis_cli(host, REDIS_BRIDGE, "hset", "latest:ticks,instrument=EURUSD", "bid", "1.08") in ("1", "0")
    assert redis_cli(host, REDIS_BRIDGE, "pexpire", "latest:ticks,instrument=EURUSD", "600000") == "1"
    assert "NOPERM" in redis_cli(host, REDIS_BRIDGE, "hset", "orders:1", "qty", "5")
    # Reading is the dashboards' business, not the bridge's.
    assert "NOPERM" in redis_cli(host, REDIS_BRIDGE, "hgetall", "latest:ticks,instrument=EURUSD")


def test_bridge_user_cannot_run_administrative_commands(host):
    for command in (["config", "get", "*"], ["flushall"], ["shutdown"], ["acl", "list"], ["keys", "*"]):
        out = redis_cli(host, REDIS_BRIDGE, *command)
        # FLUSHALL is also disabled for everyone (rename-command): unknown even to the admin.
        assert "NOPERM" in out or "unknown command" in out, (command, out)
    assert "unknown command" in redis_cli(host, REDIS_ADMIN, "flushall")


def test_passwords_are_not_stored_in_clear(host):
    conf = host.file("/etc/redis/redis.conf").content_string
    assert REDIS_ADMIN[1] not in conf and REDIS_BRIDGE[1] not in conf
    assert "user bridge on #" in conf


def test_configuration_and_data_survive_a_restart(host):
    redis_cli(host, REDIS_ADMIN, "set", "survives", "yes")
    host.check_output("systemctl restart redis-server")
    deadline = time.monotonic() + 20
    while redis_cli(host, REDIS_ADMIN, "ping") != "PONG" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert redis_cli(host, REDIS_ADMIN, "get", "survives") == "yes"  # AOF is on in this scenario
    users = redis_cli(host, REDIS_ADMIN, "acl", "users").split()
    assert users == sorted(["admin", "bridge", "default"]) or set(users) == {"admin", "bridge", "default"}
    assert "NOPERM" in redis_cli(host, REDIS_BRIDGE, "config", "get", "maxmemory")
    assert redis_cli(host, REDIS_ADMIN, "config", "get", "maxmemory-policy").split()[-1] == "allkeys-lru"
