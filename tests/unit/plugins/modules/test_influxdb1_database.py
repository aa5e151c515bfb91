

def databases(server):
    return {row["name"] for row in server.query("SHOW DATABASES")}


def test_create_is_idempotent(run, server):
    first = run("influxdb1_database", server.login(name="db_create"))
    assert first["changed"] and first["queries"] == ['CREATE DATABASE "db_create"']
    assert first["diff"] == {"before": {}, "after": {"name": "db_create"}}
    assert "db_create" in databases(server)
    assert run("influxdb1_database", server.login(name="db_create"))["changed"] is False


def test_check_mode_reports_and_creates_nothing(run, server):
    result = run("influxdb1_database", server.login(name="db_check"), check=True)
    assert result["changed"]
    assert "db_check" not in databases(server)


def test_absent_drops(run, server):
    run("influxdb1_database", server.login(name="db_drop"))
    result = run("influxdb1_database", server.login(name="db_drop", state="absent"))
    assert result["changed"] and "db_drop" not in databases(server)
    assert run("influxdb1_database", server.login(name="db_drop", state="absent"))["changed"] is False


def test_name_needing_quotes(run, server):
    assert run("influxdb1_database", server.login(name='we"ird db'))["changed"]
    assert 'we"ird db' in databases(server)
    assert run("influxdb1_database", server.login(name='we"ird db'))["changed"] is False


def test_wrong_credentials_fail_with_server_message(run, server):
    result = run("influxdb1_database", server.login(name="x", login_password="wrong"))
    assert result["failed"] and result["status"] == 401
    assert result["msg"] == (f"InfluxDB at http://127.0.0.1:{server.port} refused the credentials of "
                             "login_username 'admin' (authorization failed)")


def test_unreachable_server_fails_clearly(run, server):
    result = run("influxdb1_database", server.login(name="x", login_port=1, timeout=2))
    assert result["failed"] and result["msg"].startswith("cannot reach InfluxDB at http://127.0.0.1:1")
