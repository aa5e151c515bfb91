"""The bridge's configuration: one YAML file (or TOML: a name ending in .toml, the same keys),
validated at start.

Every error names the file and the key path (`subscriptions[0].mapping.fields.bid`).
Durations accept unit strings (`500ms`, `10s`, `1m`, `1h30m`) everywhere; a plain number means
seconds. Sizes accept `64MiB` style strings or plain bytes. Names the bridge will write
(measurements, tag keys and values, field keys) are checked against what InfluxDB 1.x can carry
(lineproto). Secrets can stay out of the file: `password_env: NAME` reads the environment, and
`STATION_BRIDGE_<DESTINATION>_PASSWORD` / `STATION_BRIDGE_CACHE_PASSWORD` override.
`station-bridge print-config` prints a commented reference of every key (a test proves its values
are the code's defaults); `station-bridge check-config --json FILE` prints the effective
configuration (`Config.effective`), which other tools read instead of re-deriving defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .lineproto import LineError, check_field_key, check_measurement, escape_tag
from .timestamps import FORMATS

FRAMINGS = ("msgpack", "json", "text_json", "text_delimited")
FIELD_TYPES = ("float", "integer", "boolean", "string")
_SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
          "w": 604800.0}
DEFAULT_LISTEN = "127.0.0.1:9108"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DerivedTag:
    source: str
    regex: re.Pattern[str]


@dataclass(frozen=True)
class TimeSpec:
    field: str | None
    format: str
    timezone: str | None


@dataclass(frozen=True)
class MappingSpec:
    measurement: str | None
    measurement_from: str  # "fixed", "topic" or "field"
    measurement_field: str | None
    measurements: dict[str, str]  # topic -> measurement; unknown topics are rejected
    tags: list[str]
    static_tags: dict[str, str]
    fields: dict[str, str]
    drop: list[str]
    derived_tags: list[DerivedTag]
    time: TimeSpec


@dataclass(frozen=True)
class BinningSpec:
    interval_ns: int
    fields: list[str]
    measurement: str | None
    keep_raw: bool


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str
    endpoints: list[str]
    bind: bool
    topics: list[str]
    rcvhwm: int
    framing: str
    delimiter: str
    field_order: list[str]
    max_frame_bytes: int
    mapping: MappingSpec
    binning: BinningSpec | None
    require_connection: bool = True
    cache: bool = True  # false: the subscription's points never reach the Redis cache


@dataclass(frozen=True)
class DestinationSpec:
    name: str
    url: str
    database: str
    retention_policy: str | None
    username: str | None
    password: str | None
    batch_size: int
    flush_interval: float
    gzip: bool
    timeout: float
    queue_max_points: int
    max_backoff: float


@dataclass(frozen=True)
class CacheSpec:
    url: str
    username: str | None
    password: str | None
    ttl: int
    key_prefix: str
    queue_max: int = 1000
    timeout: float = 2.0


@dataclass(frozen=True)
class SelfMetricsSpec:
    """The bridge's own counters, written as points so that dashboards can graph them."""

    interval_ns: int
    measurement: str
    instance: str
    feed_measurement: str = "station_bridge_feed"


@dataclass(frozen=True)
class HealthSpec:
    """When /healthz says not ok (see health.py)."""

    destination_grace: float = 60.0  # a destination failing longer than this
    subscription_grace: float = 60.0  # a subscription without a connection longer than this
    probe_interval: float = 10.0  # an idle destination is asked /ping this often


@dataclass(frozen=True)
class UniquenessSpec:
    window: int = 128
    max_series: int = 20_000


@dataclass(frozen=True)
class Config:
    source: str
    station: str | None
    subscriptions: list[SubscriptionSpec]
    destinations: list[DestinationSpec]
    cache: CacheSpec | None
    journal_dir: Path
    journal_max_bytes: int
    journal_write_ahead: bool
    dead_letter_dir: Path
    http_listen: str | None
    shutdown_timeout: float
    log_level: str
    log_rate_per_s: float
    self_metrics: SelfMetricsSpec | None = None
    journal_min_free_bytes: int = 64 << 20
    ledger_interval: float = 1.0
    dead_letter_max_bytes: int = 64 << 20
    http_max_connections: int = 16
    http_timeout: float = 5.0
    health: HealthSpec = field(default_factory=HealthSpec)
    uniqueness: UniquenessSpec = field(default_factory=UniquenessSpec)
    fast_path: str = "auto"
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def effective(self) -> dict[str, Any]:
        """The configuration with every default filled in, as JSON-ready data, without secrets:
        what `check-config --json` prints for other tools (the Ansible roles) to read."""
        subs = []
        for s in self.subscriptions:
            m = s.mapping
            if m.measurement_from == "fixed":
                measurements: list[str] | None = [m.measurement]  # type: ignore[list-item]
            elif m.measurement_from == "topic" and m.measurements:
                measurements = sorted(set(m.measurements.values()))
            else:
                measurements = None
            binned = None
            if s.binning is not None:
                b = s.binning
                binned = {"interval_s": b.interval_ns / 1e9, "fields": b.fields, "keep_raw": b.keep_raw,
                          "measurement": b.measurement}
                if measurements is not None:
                    extra = [b.measurement] if b.measurement else [f"{n}_binned" for n in measurements]
                    measurements = (measurements if b.keep_raw else []) + extra
            static = dict(m.static_tags)
            if self.station:
                static.setdefault("station", self.station)
            derived = [g for d in m.derived_tags for g in d.regex.groupindex]
            subs.append({
                "name": s.name, "endpoints": s.endpoints, "bind": s.bind, "topics": s.topics, "framing": s.framing,
                "rcvhwm": s.rcvhwm, "max_frame_bytes": s.max_frame_bytes, "require_connection": s.require_connection,
                "measurement_from": m.measurement_from, "measurements": measurements,
                "fields": dict(m.fields), "tags": sorted({*m.tags, *derived, *static}),
                "static_tags": static, "time": {"field": m.time.field, "format": m.time.format,
                                                "timezone": m.time.timezone},
                "binning": binned, "cache": self.cache is not None and s.binning is None and s.cache,
            })
        return {
            "source": self.source,
            "station": self.station,
            "subscriptions": subs,
            "destinations": [{
                "name": d.name, "url": d.url, "database": d.database, "retention_policy": d.retention_policy,
                "username": d.username, "password_set": d.password is not None, "batch_size": d.batch_size,
                "flush_interval_s": d.flush_interval, "gzip": d.gzip, "timeout_s": d.timeout,
                "queue_max_points": d.queue_max_points, "max_backoff_s": d.max_backoff,
                "journal_dir": str(self.journal_dir / d.name),
                "dead_letter_file": str(self.dead_letter_dir / f"{d.name}.jsonl"),
            } for d in self.destinations],
            "cache": None if self.cache is None else {
                "url": _without_password(self.cache.url), "username": self.cache.username,
                "password_set": self.cache.password is not None, "ttl_s": self.cache.ttl,
                "key_prefix": self.cache.key_prefix, "queue_max": self.cache.queue_max,
                "timeout_s": self.cache.timeout},
            "journal": {"dir": str(self.journal_dir), "max_bytes": self.journal_max_bytes,
                        "write_ahead": self.journal_write_ahead, "min_free_bytes": self.journal_min_free_bytes,
                        "ledger_interval_s": self.ledger_interval},
            "dead_letter": {"dir": str(self.dead_letter_dir), "max_bytes": self.dead_letter_max_bytes},
            "http": {"listen": self.http_listen, "max_connections": self.http_max_connections,
                     "timeout_s": self.http_timeout},
            "health": {"destination_grace_s": self.health.destination_grace,
                       "subscription_grace_s": self.health.subscription_grace,
                       "probe_interval_s": self.health.probe_interval},
            "uniqueness": {"window": self.uniqueness.window, "max_series": self.uniqueness.max_series},
            "self_metrics": None if self.self_metrics is None else {
                "interval_s": self.self_metrics.interval_ns / 1e9, "measurement": self.self_metrics.measurement,
                "feed_measurement": self.self_metrics.feed_measurement, "instance": self.self_metrics.instance},
            "shutdown_timeout_s": self.shutdown_timeout,
            "log": {"level": self.log_level, "rate_limit_per_s": self.log_rate_per_s},
            "fast_path": self.fast_path,
        }


def _without_password(url: str) -> str:
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


class _Reader:
    """Typed access to a mapping with error messages that carry the key path."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {path or 'top level'}: expected a mapping, got {type(data).__name__}")
        self.data, self.path, self.source = data, path, source
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(name)}: {message}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ..., *, choices: tuple = ()) -> Any:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            if default is ...:
                raise self.fail(name, "is required")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(name, f"expected {names}, got {value!r}")
        if choices and value not in choices:
            raise self.fail(name, f"{value!r} is not one of {', '.join(map(str, choices))}")
        return value

    def positive(self, name: str, kind: type, default: Any = ...) -> Any:
        value = self.get(name, kind, default)
        if value is not None and value <= 0:
            raise self.fail(name, f"must be positive, got {value!r}")
        return value

    def duration(self, name: str, default: Any = ..., positive: bool = True) -> Any:
        """Seconds (float) from `10s`, `500ms`, `1m30s` or a plain number of seconds."""
        value = self.get(name, (str, int, float), default)
        if value is None:
            return None
        seconds = parse_duration(value, f"{self.source}: {self.key(name)}")
        if positive and seconds <= 0:
            raise self.fail(name, f"must be positive, got {value!r}")
        return seconds

    def size(self, name: str, default: Any = ...) -> int:
        value = self.get(name, (str, int), default)
        return parse_size(value, f"{self.source}: {self.key(name)}")

    def child(self, name: str, default: Any = ...) -> _Reader | None:
        value = self.get(name, dict, default)
        return None if value is None else _Reader(value, self.key(name), self.source)

    def items(self, name: str, default: Any = ...) -> list[_Reader]:
        values = self.get(name, list, default)
        return [_Reader(v, f"{self.key(name)}[{i}]", self.source) for i, v in enumerate(values or [])]

    def strings(self, name: str, default: Any = ...) -> list[str]:
        values = self.get(name, list, default)
        for i, v in enumerate(values or []):
            if not isinstance(v, str):
                raise self.fail(f"{name}[{i}]", f"expected a string, got {v!r}")
        return list(values or [])

    def string_map(self, name: str) -> dict[str, str]:
        values = self.get(name, dict, {})
        for k, v in values.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                raise self.fail(f"{name}.{k}", f"expected a string, got {v!r}")
        return {str(k): str(v) for k, v in values.items()}

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.fail(unknown[0], "unknown key (see `station-bridge print-config`)")


def parse_size(text: str | int, where: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.match(str(text).strip())
    if not match:
        raise ConfigError(f"{where}: invalid size {text!r} (e.g. 512MiB, 2GiB)")
    unit = (match.group(2) or "B").upper().rstrip("B").rstrip("I")
    return int(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]


def parse_duration(value: str | int | float, where: str) -> float:
    """Seconds. Numbers (and numeric strings) are seconds; strings are Go-style durations made of
    one or more `<number><unit>` parts (ns, us, ms, s, m, h, d, w): `500ms`, `10s`, `1h30m`."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ConfigError(f"{where}: invalid duration {value!r} (e.g. 500ms, 10s, 1m, 1h30m; a number is seconds)")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text:
        raise ConfigError(f"{where}: empty duration")
    return total


def parse_interval_ns(text: str | int | float, where: str) -> int:
    return round(parse_duration(text, where) * 1e9)


def _secret(reader: _Reader, env_override: str) -> str | None:
    if env_override in os.environ:
        reader.get("password", str, None)
        reader.get("password_env", str, None)
        return os.environ[env_override]
    env_name = reader.get("password_env", str, None)
    if env_name:
        if env_name not in os.environ:
            raise reader.fail("password_env", f"environment variable {env_name} is not set")
        reader.get("password", str, None)
        return os.environ[env_name]
    return reader.get("password", str, None)


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _writable(r: _Reader, key: str, check: Any, value: str) -> None:
    try:
        check(value)
    except LineError as exc:
        raise r.fail(key, f"InfluxDB cannot store it: {exc}") from exc


def _mapping(r: _Reader, station: str | None) -> MappingSpec:
    measurement = r.get("measurement", str, None)
    measurement_from = r.get("measurement_from", str, "fixed", choices=("fixed", "topic", "field"))
    measurement_field = r.get("measurement_field", str, None)
    measurements = r.string_map("measurements")
    if measurement_from == "fixed" and not measurement:
        raise r.fail("measurement", "is required when measurement_from is fixed")
    if measurement_from == "field" and not measurement_field:
        raise r.fail("measurement_field", "is required when measurement_from is field")
    if measurement:
        _writable(r, "measurement", check_measurement, measurement)
    for topic, name in measurements.items():
        _writable(r, f"measurements.{topic}", check_measurement, name)
    fields = r.string_map("fields")
    if not fields:
        raise r.fail("fields", "declare at least one field with its type")
    for name, kind in fields.items():
        if kind not in FIELD_TYPES:
            raise r.fail(f"fields.{name}", f"unknown type {kind!r} (choose {', '.join(FIELD_TYPES)})")
        _writable(r, f"fields.{name}", check_field_key, name)
    derived = []
    for d in r.items("derived_tags", []):
        pattern = d.get("regex", str)
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise d.fail("regex", f"invalid regular expression: {exc}") from exc
        if not compiled.groupindex:
            raise d.fail("regex", "needs named groups, e.g. (?P<base>[A-Z]{3})(?P<term>[A-Z]{3})")
        derived.append(DerivedTag(d.get("source", str), compiled))
        d.done()
    t = r.child("time", {}) or _Reader({}, r.key("time"), r.source)
    fmt = t.get("format", str, "auto", choices=FORMATS)
    tz = t.get("timezone", str, None)
    if tz:
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(tz)
        except Exception as exc:
            raise t.fail("timezone", f"unknown time zone {tz!r}") from exc
    time_spec = TimeSpec(t.get("field", str, None), fmt, tz)
    t.done()
    tags = r.strings("tags", [])
    static = r.string_map("static_tags")
    overlap = set(tags) & set(fields)
    if overlap:
        raise r.fail("tags", f"{sorted(overlap)[0]!r} is declared both as a tag and as a field")
    # Every tag key comes from exactly one place: a record key, a derived group, a static tag or
    # the station; two sources for one key would write it twice.
    sources: dict[str, str] = {}
    named = [(k, "tags") for k in tags] + [(g, "derived_tags") for d in derived for g in d.regex.groupindex]
    named += [(k, "static_tags") for k in static] + ([("station", "station")] if station else [])
    for key, where in named:
        if key in sources and not (where == "station" and sources[key] == "static_tags"):
            raise r.fail(where, f"tag key {key!r} also comes from {sources[key]}")
        sources.setdefault(key, where)
        _writable(r, where, lambda k: escape_tag(k, "tag key"), key)
        if key == "time":
            raise r.fail(where, "`time` cannot be a tag key")
    for key, value in static.items():
        _writable(r, f"static_tags.{key}", escape_tag, value)
    spec = MappingSpec(measurement, measurement_from, measurement_field, measurements, tags,
                       static, fields, r.strings("drop", []), derived, time_spec)
    r.done()
    return spec


def _subscription(r: _Reader, station: str | None) -> SubscriptionSpec:
    name = r.get("name", str)
    framing = r.get("framing", str, "msgpack", choices=FRAMINGS)
    field_order = r.strings("field_order", [])
    if framing == "text_delimited" and not field_order:
        raise r.fail("field_order", "is required for framing text_delimited (the ordered field names)")
    endpoints = r.strings("endpoints")
    if not endpoints:
        raise r.fail("endpoints", "needs at least one ZMQ endpoint, e.g. tcp://127.0.0.1:5556")
    m = r.child("mapping")
    assert m is not None
    mapping = _mapping(m, station)
    binning = None
    b = r.child("binning", None)
    if b is not None:
        binning = BinningSpec(round(b.duration("interval") * 1e9), b.strings("fields"), b.get("measurement", str, None),
                              b.get("keep_raw", bool, True))
        if binning.measurement:
            _writable(b, "measurement", check_measurement, binning.measurement)
        for name_ in binning.fields:
            if mapping.fields.get(name_) not in ("float", "integer"):
                raise b.fail("fields", f"{name_!r} is not a declared float or integer field")
        b.done()
    bind = r.get("bind", bool, False)
    spec = SubscriptionSpec(
        name=name, endpoints=endpoints, bind=bind, topics=r.strings("topics", [""]),
        rcvhwm=r.positive("rcvhwm", int, 1_000_000), framing=framing,
        delimiter=r.get("delimiter", str, "\x01"), field_order=field_order,
        max_frame_bytes=r.size("max_frame_bytes", 1_048_576),
        mapping=mapping, binning=binning, require_connection=r.get("require_connection", bool, not bind),
        cache=r.get("cache", bool, True),
    )
    if spec.max_frame_bytes <= 0:
        raise r.fail("max_frame_bytes", "must be positive")
    r.done()
    return spec


def _destination(r: _Reader) -> DestinationSpec:
    name = r.get("name", str)
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise r.fail("name", f"{name!r}: use letters, digits, _ . - (it names the journal directory)")
    url = r.get("url", str).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise r.fail("url", f"{url!r} must start with http:// or https://")
    spec = DestinationSpec(
        name=name, url=url, database=r.get("database", str), retention_policy=r.get("retention_policy", str, None),
        username=r.get("username", str, None),
        password=_secret(r, f"STATION_BRIDGE_{_env_name(name)}_PASSWORD"),
        batch_size=r.positive("batch_size", int, 5000), flush_interval=r.duration("flush_interval", 1.0),
        gzip=r.get("gzip", bool, False), timeout=r.duration("timeout", 10.0),
        queue_max_points=r.positive("queue_max_points", int, 500_000),
        max_backoff=r.duration("max_backoff", 30.0),
    )
    r.done()
    return spec


def parse(data: Any, source: str = "<config>") -> Config:
    top = _Reader(data if data is not None else {}, "", source)
    station = top.get("station", str, None)
    if station is not None:
        _writable(top, "station", escape_tag, station)
    subscriptions = [_subscription(s, station) for s in top.items("subscriptions")]
    names = [s.name for s in subscriptions]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: subscriptions: names must be unique, got {names}")
    destinations = [_destination(d) for d in top.items("destinations")]
    if not destinations:
        raise ConfigError(f"{source}: destinations: declare at least one InfluxDB destination")
    dnames = [d.name for d in destinations]
    if len(set(dnames)) != len(dnames):
        raise ConfigError(f"{source}: destinations: names must be unique, got {dnames}")
    cache = None
    c = top.child("cache", None)
    if c is not None:
        cache = CacheSpec(c.get("url", str), c.get("username", str, None),
                          _secret(c, "STATION_BRIDGE_CACHE_PASSWORD"), max(1, round(c.duration("ttl", 3600))),
                          c.get("key_prefix", str, "latest"), c.positive("queue_max", int, 1000),
                          c.duration("timeout", 2.0))
        c.done()
    j = top.child("journal", {}) or _Reader({}, "journal", source)
    journal_dir = Path(j.get("dir", str, "/var/lib/station-bridge/journal"))
    journal_max = j.size("max_bytes", "1GiB")
    write_ahead = j.get("write_ahead", bool, True)
    min_free = j.size("min_free_bytes", "64MiB")
    ledger_interval = j.duration("ledger_interval", 1.0)
    j.done()
    dl = top.child("dead_letter", {}) or _Reader({}, "dead_letter", source)
    dead_dir = Path(dl.get("dir", str, "/var/lib/station-bridge/dead-letter"))
    dead_max = dl.size("max_bytes", "64MiB")
    dl.done()
    h = top.child("http", {}) or _Reader({}, "http", source)
    # Absent or null: the default address; "" turns the endpoint off.
    listen = h.get("listen", str, DEFAULT_LISTEN)
    max_connections = h.positive("max_connections", int, 16)
    http_timeout = h.duration("timeout", 5.0)
    h.done()
    hh = top.child("health", {}) or _Reader({}, "health", source)
    health = HealthSpec(hh.duration("destination_grace", 60.0), hh.duration("subscription_grace", 60.0),
                        hh.duration("probe_interval", 10.0))
    hh.done()
    u = top.child("uniqueness", {}) or _Reader({}, "uniqueness", source)
    uniqueness = UniquenessSpec(u.positive("window", int, 128), u.positive("max_series", int, 20_000))
    u.done()
    log = top.child("log", {}) or _Reader({}, "log", source)
    level = log.get("level", str, "info", choices=("debug", "info", "warning", "error"))
    rate = log.positive("rate_limit_per_s", float, 5.0)
    log.done()
    self_metrics = None
    sm = top.child("self_metrics", None)
    if sm is not None:
        self_metrics = SelfMetricsSpec(
            round(sm.duration("interval", "10s") * 1e9), sm.get("measurement", str, "station_bridge"),
            sm.get("instance", str, "bridge"), sm.get("feed_measurement", str, "station_bridge_feed"))
        for key in ("measurement", "feed_measurement"):
            _writable(sm, key, check_measurement, getattr(self_metrics, key))
        _writable(sm, "instance", escape_tag, self_metrics.instance)
        sm.done()
    config = Config(
        source=source, station=station, subscriptions=subscriptions,
        destinations=destinations, cache=cache, journal_dir=journal_dir, journal_max_bytes=journal_max,
        journal_write_ahead=write_ahead,
        dead_letter_dir=dead_dir, http_listen=listen or None,
        shutdown_timeout=top.duration("shutdown_timeout", 20.0), log_level=level, log_rate_per_s=rate,
        self_metrics=self_metrics, journal_min_free_bytes=min_free, ledger_interval=ledger_interval,
        dead_letter_max_bytes=dead_max, http_max_connections=max_connections, http_timeout=http_timeout,
        health=health, uniqueness=uniqueness, raw=data or {},
        fast_path=_fast_path(top),
    )
    top.done()
    return config


def _fast_path(top: _Reader) -> str:
    """`fast_path: auto | off`; YAML 1.1 reads a bare off/false as False (and on/true as True)."""
    value = top.get("fast_path", (str, bool), "auto")
    if isinstance(value, bool):
        return "auto" if value else "off"
    if value not in ("auto", "off"):
        raise top.fail("fast_path", f"{value!r} is not one of auto, off")
    return value


def load(path: str | Path) -> Config:
    """Reads a YAML file, or TOML when the name ends in .toml (the same keys either way)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse(data, str(path))
