"""InfluxDB refusing points for its limits (a real influxd with max-series-per-database = 10)."""

from __future__ import annotations

from pathlib import Path

from harness import BridgeProcess, quiet_ledger, wait_for
from servers import Influxd

from station_bridge.demo import publish
from station_bridge.metrics import total, value


def limited_influxd(workdir: Path, settings: str) -> Influxd:
    server = Influxd(workdir)
    conf = workdir / "influxdb.conf"
    conf.write_text(conf.read_text().replace('  cache-max-memory-size = "1g"\n',
                                             f'  cache-max-memory-size = "1g"\n{settings}\n'))
    return server.start()


def test_points_refused_for_the_series_limit_are_counted_by_name_and_degrade_health(tmp_path, endpoint):
    """30 instruments against a database that holds 10 series: influxd answers `partial write:
    max-series-per-database limit exceeded`; the refused points are dropped with reason
    `max_series` (not a generic one), the equations close, what InfluxDB holds is what was
    counted written, and /healthz says the destination is degraded while it goes on."""
    influx = limited_influxd(tmp_path / "influxd", "  max-series-per-database = 10")
    try:
        influx.query('CREATE DATABASE "tick"')
        bridge = BridgeProcess(tmp_path, influx, "tick", endpoint,
                               destination={"batch_size": 5}).start()  # influxd counts new series per point
        instruments = [f"I{k:02d}" for k in range(30)]
        sent = publish(endpoint, "kraken_tick", 100, rate=2000, duration=30, instruments=instruments[:8])
        quiet_ledger(bridge)
        sent += publish(endpoint, "kraken_tick", 600, rate=2000, duration=30, instruments=instruments,
                        start_seq=100)
        samples = quiet_ledger(bridge)
        refused = value(samples, "bridge_dropped_points_total", destination="local", reason="max_series")
        written = value(samples, "bridge_written_points_total", destination="local")
        assert refused > 0 and written > 0
        assert total(samples, "bridge_dropped_points_total", destination="local") == refused
        assert written + refused == sent
        assert influx.count("tick", "ticks") == written
        _, doc = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(bridge.health()), 10,
                               "the destination degraded")
        reasons = [p["reason"] for p in doc["problems"] if p["part"] == "destination"]
        assert any("max_series" in r and "refused" in r for r in reasons), doc["problems"]
        assert doc["destinations"]["local"]["ok"] is False
        assert bridge.stop() == 0
    finally:
        influx.stop()
