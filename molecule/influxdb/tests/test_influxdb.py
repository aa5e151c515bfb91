"""The station's InfluxDB: service, auth, permissions, data path and schema."""

from __future__ import annotations

import time

from conftest import READER, WRITER


def test_service_running_and_enabled(host):
    service = host.service("influxdb")
    assert service.is_running
    assert service.is_enabled


def test_offline_station_installed_from_the_controllers_deb(host):
    staged = host.file("/var/cache/station-stack/packages/influxdb.deb")
    if host.backend.get_hostname() == "station-stack-influxdb-offline":
        assert staged.exists
        assert host.package("influxdb").is_installed
    else:
        assert not staged.exists


def test_http_port_bound_as_declared(host):
    if host.backend.get_hostname() == "station-stack-influxdb":  # influxdb_http_bind_address: "" (central)
        assert host.socket("tcp://0.0.0.0:8086").is_listening or host.socket("tcp://:::8086").is_listening
    else:  # the stations' default: loopback only
        assert host.socket("tcp://127.0.0.1:8086").is_listening
        assert not host.socket("tcp://0.0.0.0:8086").is_listening
        assert not host.socket("tcp://:::8086").is_listening


def test_rpc_bound_to_loopback_only(host):
    assert host.socket("tcp://127.0.0.1:8088").is_listening
    assert not host.socket("tcp://0.0.0.0:8088").is_listening


def test_config_is_hardened(host):
    conf = host.file("/etc/influxdb/influxdb.conf")
    assert conf.mode == 0o640
    assert "auth-enabled = true" in conf.content_string
    assert "reporting-enabled = false" in conf.content_string  # Debian's spelling
    dropin = host.file("/etc/systemd/system/influxdb.service.d/station-stack.conf").content_string
    for setting in ("NoNewPrivileges=yes", "ProtectSystem=strict", "TimeoutStopSec=90",
                    "ReadWritePaths=/var/lib/influxdb/data"):
        assert setting in dropin
    props = host.check_output("systemctl show influxdb -p ProtectSystem -p NoNewPrivileges")
    assert "ProtectSystem=strict" in props and "NoNewPrivileges=yes" in props


def test_unauthenticated_query_refused(influx):
    response = influx.query("SHOW DATABASES", auth=None)
    assert response.status == 401


def test_unauthenticated_write_refused(influx):
    response = influx.write("ticks,instrument=EURUSD bid=1.1", auth=None)
    assert response.status == 401


def test_wrong_password_refused(influx):
    assert influx.query("SHOW DATABASES", auth=("admin", "not-the-password")).status == 401


def test_writer_can_write_and_cannot_read(influx):
    now = time.time_ns()
    assert influx.write(f"ticks,instrument=GBPUSD bid=1.25,ask=1.26,volume=100i {now}").status == 204
    response = influx.query("SELECT * FROM ticks", auth=WRITER, db="tick")
    assert "not authorized" in response.body


def test_reader_can_read_and_cannot_write(influx):
    response = influx.write("ticks,instrument=USDJPY bid=150.1", auth=READER)
    assert response.status == 403
    assert influx.query("SELECT count(bid) FROM ticks", auth=READER, db="tick").status == 200


def test_written_point_reads_back(influx):
    # Within the default RP's 30 days, with every nanosecond digit significant.
    stamp = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 123_456_789
    line = f'ticks,instrument=EURUSD,venue=kraken bid=1.08234,ask=1.08245,volume=1000000i,note="a b" {stamp}'
    assert influx.write(line).status == 204
    rows = influx.query(f"SELECT * FROM ticks WHERE time = {stamp}", auth=READER, db="tick").rows()
    assert rows == [{"time": stamp, "ask": 1.08245, "bid": 1.08234, "instrument": "EURUSD",
                     "note": "a b", "venue": "kraken", "volume": 1000000}]


def test_retention_policies_match_schema(influx):
    # prune is on: the undeclared `autogen` is gone.
    rows = influx.query("SHOW RETENTION POLICIES ON tick").rows()
    got = {r["name"]: (r["duration"], r["shardGroupDuration"], r["replicaN"], r["default"]) for r in rows}
    assert got == {
        "standard": ("720h0m0s", "24h0m0s", 1, True),
        "high_frequency": ("168h0m0s", "1h0m0s", 1, False),
        "long_term": ("8760h0m0s", "168h0m0s", 1, False),
    }


def test_continuous_queries_match_schema(influx):
    series = influx.query("SHOW CONTINUOUS QUERIES").series()
    cqs = {s["name"]: {v[0]: v[1] for v in s.get("values", [])} for s in series}
    tick = cqs["tick"]
    assert set(tick) == {"ticks_ohlc_1h", "ticks_mean_1s"}
    ohlc = tick["ticks_ohlc_1h"]
    assert "RESAMPLE EVERY 10m FOR 2h" in ohlc
    assert "INTO tick.long_term.ticks_ohlc_1h FROM tick.standard.ticks" in ohlc
    assert "first(bid) AS open" in ohlc and "last(bid) AS close" in ohlc
    assert cqs.get("telemetry", {}) == {}


def test_users_and_grants(influx):
    users = {r["user"]: r["admin"] for r in influx.query("SHOW USERS").rows()}
    assert users == {"admin": True, "bridge": False, "grafana": False, "analyst": False}
    grants = {r["database"]: r["privilege"] for r in influx.query("SHOW GRANTS FOR bridge").rows()}
    assert grants == {"tick": "WRITE", "telemetry": "WRITE"}
    grants = {r["database"]: r["privilege"] for r in influx.query("SHOW GRANTS FOR grafana").rows()}
    assert grants == {"tick": "READ", "telemetry": "READ"}


def test_continuous_query_output_lands_in_target_rp(influx):
    # Points in the current seconds: the 1 s CQ (RESAMPLE FOR 30s) must aggregate
    # them into high_frequency.ticks_mean_1s within a few runs.
    start = (time.time_ns() // 1_000_000_000) * 1_000_000_000
    lines = "\n".join(
        f"ticks,instrument=CQTEST bid={bid} {start + offset}"
        for offset, bid in ((100_000_000, 1.0), (400_000_000, 2.0), (900_000_000, 6.0))
    )
    assert influx.write(lines).status == 204
    deadline = time.monotonic() + 45
    rows = []
    while time.monotonic() < deadline and not rows:
        time.sleep(1)
        rows = influx.query(
            f"SELECT bid FROM high_frequency.ticks_mean_1s WHERE instrument = 'CQTEST' AND time = {start}",
            auth=READER, db="tick").rows()
    assert rows == [{"time": start, "bid": 3.0}]
