import json

import pytest


def users(server):
    return {r["user"]: r["admin"] for r in server.query("SHOW USERS")}


def grants(server, name):
    return {r["database"]: r["privilege"] for r in server.query(f'SHOW GRANTS FOR "{name}"')}


def can_login(server, name, password):
    status, _payload = server.http("/query", {"q": "SHOW DATABASES"}, auth=(name, password))
    return status != 401


@pytest.fixture(scope="module")
def dbs(run, server):
    for name in ("udb1", "udb2"):
        run("influxdb1_database", server.login(name=name))
    return ("udb1", "udb2")


def test_first_admin_bootstrap_is_check_safe_and_idempotent(run, fresh_server):
    admin = fresh_server.login(name=fresh_server.admin[0], password=fresh_server.admin[1], admin=True)
    checked = run("influxdb1_user", admin, check=True)
    assert checked["changed"] and checked["bootstrapped"]
    _status, payload = fresh_server.http("/query", {"q": "SHOW USERS"}, auth=None)
    assert "create admin user first" in payload["error"]  # still no admin
    created = run("influxdb1_user", admin)
    assert created["changed"] and created["bootstrapped"]
    assert users(fresh_server) == {"admin": True}
    again = run("influxdb1_user", admin)
    assert again["changed"] is False and again["bootstrapped"] is False


def test_bootstrap_refuses_a_non_admin_first_user(run, fresh_server):
    result = run("influxdb1_user", fresh_server.login(name="bridge", password="x"))
    assert result["failed"] and "no admin user yet" in result["msg"]


def test_password_drift_is_detected_and_fixed(run, server, dbs):
    run("influxdb1_user", server.login(name="pw_user", password="first"))
    changed = run("influxdb1_user", server.login(name="pw_user", password="second"))
    assert changed["changed"] and changed["queries"] == ["SET PASSWORD FOR \"pw_user\" = '********'"]
    assert can_login(server, "pw_user", "second") and not can_login(server, "pw_user", "first")
    assert run("influxdb1_user", server.login(name="pw_user", password="second"))["changed"] is False
    on_create = run("influxdb1_user", server.login(name="pw_user", password="third", update_password="on_create"))
    assert on_create["changed"] is False and can_login(server, "pw_user", "second")


def test_check_mode_changes_no_password(run, server, dbs):
    run("influxdb1_user", server.login(name="chk_user", password="keep"))
    assert run("influxdb1_user", server.login(name="chk_user", password="other"), check=True)["changed"]
    assert can_login(server, "chk_user", "keep")


def test_grants_are_authoritative(run, server, dbs):
    args = server.login(name="granted", password="pw",
                        grants=[{"database": "udb1", "privilege": "READ"}, {"database": "udb2", "privilege": "WRITE"}])
    assert run("influxdb1_user", args)["changed"]
    assert grants(server, "granted") == {"udb1": "READ", "udb2": "WRITE"}
    assert run("influxdb1_user", args)["changed"] is False
    args["grants"] = [{"database": "udb1", "privilege": "WRITE"}]
    result = run("influxdb1_user", args)
    assert result["changed"]
    assert grants(server, "granted") == {"udb1": "WRITE", "udb2": "NO PRIVILEGES"} or \
        {k: v for k, v in grants(server, "granted").items() if v != "NO PRIVILEGES"} == {"udb1": "WRITE"}
    assert run("influxdb1_user", args)["changed"] is False


def test_admin_flag_toggles(run, server, dbs):
    run("influxdb1_user", server.login(name="boss", password="pw", admin=True))
    assert users(server)["boss"] is True
    assert run("influxdb1_user", server.login(name="boss", password="pw", admin=False))["changed"]
    assert users(server)["boss"] is False


def test_grant_on_missing_database_fails(run, server, dbs):
    result = run("influxdb1_user", server.login(name="lost", password="pw",
                                                grants=[{"database": "nope", "privilege": "READ"}]))
    assert result["failed"] and "database 'nope', which does not exist" in result["msg"]


def test_no_password_in_results_or_diff(run, server, dbs):
    secret = "s3cr3t-Value-xyz"
    results = [
        run("influxdb1_user", server.login(name="secretive", password=secret)),
        run("influxdb1_user", server.login(name="secretive", password=secret + "2")),
    ]
    for result in results:
        assert secret not in json.dumps({k: v for k, v in result.items() if k != "invocation"})


def test_auth_off_warns_that_passwords_cannot_be_verified(run, open_server):
    run("influxdb1_user", open_server.login(name="nocheck", password="a"))
    result = run("influxdb1_user", open_server.login(name="nocheck", password="b"))
    assert result["changed"] is False
    assert "cannot be verified" in json.dumps(result.get("warnings", []))


def test_absent(run, server, dbs):
    run("influxdb1_user", server.login(name="leaver", password="pw"))
    assert run("influxdb1_user", server.login(name="leaver", state="absent"))["changed"]
    assert "leaver" not in users(server)
    assert run("influxdb1_user", server.login(name="leaver", state="absent"))["changed"] is False
