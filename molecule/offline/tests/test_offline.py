"""An air-gapped station converged from the controller's artifact cache."""

from __future__ import annotations

from conftest import READER, http, run_converge, wait_until

BRIDGE = "/opt/station-bridge/venv/bin/station-bridge"
REPO = "/var/cache/station-stack/repo"


def test_the_station_has_no_network_but_loopback(host):
    routes = host.check_output("ip -o route show table all")
    assert "default" not in routes, routes
    interfaces = host.check_output("ip -o link show up").splitlines()
    assert all(": lo:" in line for line in interfaces), interfaces


def test_the_only_apt_source_is_the_local_repository(host):
    sources = host.check_output("find /etc/apt/sources.list.d -maxdepth 1 -type f -name '*.sources' -o "
                                "-maxdepth 1 -type f -name '*.list'").split()
    assert sources == ["/etc/apt/sources.list.d/station-stack-local.sources"], sources
    assert not host.file("/etc/apt/sources.list").exists
    content = host.file(sources[0]).content_string
    assert f"URIs: file:{REPO}" in content and "Suites: ./" in content
    # What apt would install comes from the repository, not from a cached mirror index.
    policy = host.check_output("apt-cache policy influxdb redis-server python3-venv")
    assert f"file:{REPO} ./ Packages" in policy and "deb.debian.org" not in policy, policy
    assert host.file(f"{REPO}/Packages").exists


def test_services_installed_from_the_repository_run(host):
    for package in ("influxdb", "redis-server", "python3-venv", "grafana"):
        assert host.package(package).is_installed, package
    for unit in ("influxdb", "redis-server", "station-bridge@feed", "grafana-server"):
        assert host.service(unit).is_running, unit
    # The bridge came from the wheelhouse, not from an index.
    assert host.run(f"{BRIDGE} --help").rc == 0


def test_published_ticks_land_in_influxdb_and_redis(host, influx):
    host.check_output(f"{BRIDGE} publish-demo --endpoint tcp://127.0.0.1:5556 --count 300 --rate 0 "
                      "--duration 30 --instruments EURUSD")
    wait_until(lambda: (influx.query("SELECT count(bid) FROM ticks", auth=READER, db="tick").rows() or [{}])[0]
               .get("count", 0) >= 300, 30, "300 ticks in tick.standard.ticks")
    cached = host.check_output("REDISCLI_AUTH=molecule-redis-admin-pw redis-cli --no-auth-warning --user admin "
                               "hget latest:ticks,instrument=EURUSD,station=offline1 seq")
    assert cached.strip() == "299", cached


# Grafana here is the lab's stand-in package (prepare.yml): the role's service paths, not Grafana.
GRAFANA = "http://127.0.0.1:3000"


def grafana_status(host, path: str, password: str | None = None) -> int:
    return http(host, "GET", GRAFANA + path, auth=("admin", password) if password else None).status


def test_grafana_pinned_held_started_and_answering_with_the_inventory_password(host):
    assert host.package("grafana").version == "11.3.1+stationstack1"
    assert host.check_output("dpkg --get-selections grafana").split() == ["grafana", "hold"]
    assert host.service("grafana-server").is_enabled
    assert grafana_status(host, "/api/health") == 200
    assert grafana_status(host, "/api/user", "molecule-grafana-pw") == 200
    assert grafana_status(host, "/api/user", "admin") == 401
    # The first converge changed the provisioning: its handler reloaded both kinds, with the password.
    reloads = host.file("/var/lib/grafana/stub-reloads.log").content_string.split()
    assert {"datasources", "dashboards"} <= set(reloads), reloads


def test_a_rotated_admin_password_is_enforced_on_the_running_grafana(host):
    rotated = run_converge("rotated.yml")
    try:
        assert rotated.rc == 0, rotated.output
        changed = {task for task, _ in rotated.changed}
        assert {"grafana : Create the directories and render grafana.ini",
                "grafana : Reset the admin password"} <= changed, changed
        assert grafana_status(host, "/api/user", "molecule-grafana-rotated") == 200
        assert grafana_status(host, "/api/user", "molecule-grafana-pw") == 401
        again = run_converge("rotated.yml")
        assert again.rc == 0 and again.changed == set(), again.changed
    finally:
        restored = run_converge("original.yml")
    assert restored.rc == 0 and grafana_status(host, "/api/user", "molecule-grafana-pw") == 200
