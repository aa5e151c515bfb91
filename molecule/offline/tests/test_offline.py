"""An air-gapped station converged from the controller's artifact cache."""

from __future__ import annotations

from conftest import READER, wait_until

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
    for package in ("influxdb", "redis-server", "python3-venv"):
        assert host.package(package).is_installed, package
    for unit in ("influxdb", "redis-server", "station-bridge@feed"):
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
