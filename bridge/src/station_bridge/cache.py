"""Redis latest-value cache: per series, a hash of the newest fields and their time.

Key: `<key_prefix>:<series>` where series is the point's escaped line-protocol series with
its tags sorted by key, as InfluxDB keys it (`ticks,instrument=EURUSD,venue=kraken`), so that a
reader can build the key from the tags without knowing the bridge's configuration.
Hash fields: the point's fields as text plus `time` (ns since the epoch). Each update also
sets the TTL, so a silent series expires.
A dashboard reads the newest tick with one `HGETALL latest:ticks,instrument=EURUSD,...`.
Values are plain strings: no pickle, readable from any language.
"""

from __future__ import annotations

import logging

import redis

from .config import CacheSpec
from .mapping import Point
from .metrics import Metrics

log = logging.getLogger("station_bridge.cache")


class LatestCache:
    def __init__(self, spec: CacheSpec, metrics: Metrics) -> None:
        self.spec = spec
        self.metrics = metrics
        self.client = redis.Redis.from_url(spec.url, username=spec.username, password=spec.password,
                                           socket_timeout=2, socket_connect_timeout=2)
        self._ttl_ms = spec.ttl * 1000

    def key(self, point: Point) -> str:
        return f"{self.spec.key_prefix}:{point.series}"  # the one series key (lineproto.series_key)

    def update(self, points: list[Point]) -> None:
        """One pipeline per batch; only the newest point per series is sent."""
        newest: dict[str, Point] = {}
        for point in points:
            current = newest.get(point.series)
            if current is None or point.time_ns >= current.time_ns:
                newest[point.series] = point
        if not newest:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for point in newest.values():
                key = self.key(point)
                mapping = {k: str(v) for k, v in point.fields.items()}
                mapping["time"] = str(point.time_ns)
                pipe.hset(key, mapping=mapping)
                pipe.pexpire(key, self._ttl_ms)
            pipe.execute()
            self.metrics.inc("bridge_cache_updates_total", len(newest))
        except redis.RedisError as exc:
            # The cache is a convenience: InfluxDB remains the record. Count and go on.
            self.metrics.inc("bridge_cache_errors_total", 1)
            log.warning("redis cache update failed", extra={"error": str(exc)})
