"""The bridge's configuration: one YAML file, validated at start.

Every error names the file and the key path (`subscriptions[0].mapping.fields.bid`).
Secrets can stay out of the file: `password_env: NAME` reads the environment, and
`STATION_BRIDGE_<DESTINATION>_PASSWORD` / `STATION_BRIDGE_CACHE_PASSWORD` override.
`station-bridge print-config` prints a commented example of every key.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .timestamps import FORMATS

FRAMINGS = ("msgpack", "json", "text_json", "text_delimited")
FIELD_TYPES = ("float", "integer", "boolean", "string")
_SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


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


@dataclass(frozen=True)
class SelfMetricsSpec:
    """The bridge's own counters, written as points so that dashboards can graph them."""

    interval_ns: int
    measurement: str
    instance: str


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
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


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
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text).strip())
    if not match:
        raise ConfigError(f"{where}: invalid size {text!r} (e.g. 512MiB, 2GiB)")
    unit = (match.group(2) or "B").upper().rstrip("B").rstrip("I")
    return int(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit]


def parse_interval_ns(text: str, where: str) -> int:
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ConfigError(f"{where}: invalid interval {text!r} (e.g. 500ms, 1s, 5m)")
    scale = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}[match.group(2)]
    return int(float(match.group(1)) * scale)


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


def _mapping(r: _Reader, framing_fields: list[str]) -> MappingSpec:
    measurement = r.get("measurement", str, None)
    measurement_from = r.get("measurement_from", str, "fixed", choices=("fixed", "topic", "field"))
    measurement_field = r.get("measurement_field", str, None)
    measurements = r.string_map("measurements")
    if measurement_from == "fixed" and not measurement:
        raise r.fail("measurement", "is required when measurement_from is fixed")
    if measurement_from == "field" and not measurement_field:
        raise r.fail("measurement_field", "is required when measurement_from is field")
    fields = r.string_map("fields")
    if not fields:
        raise r.fail("fields", "declare at least one field with its type")
    for name, kind in fields.items():
        if kind not in FIELD_TYPES:
            raise r.fail(f"fields.{name}", f"unknown type {kind!r} (choose {', '.join(FIELD_TYPES)})")
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
    overlap = set(tags) & set(fields)
    if overlap:
        raise r.fail("tags", f"{sorted(overlap)[0]!r} is declared both as a tag and as a field")
    spec = MappingSpec(measurement, measurement_from, measurement_field, measurements, tags,
                       r.string_map("static_tags"), fields, r.strings("drop", []), derived, time_spec)
    r.done()
    return spec


def _subscription(r: _Reader) -> SubscriptionSpec:
    name = r.get("name", str)
    framing = r.get("framing", str, "msgpack", choices=FRAMINGS)
    field_order = r.strings("field_order", [])
    if framing == "text_delimited" and not field_order:
        raise r.fail("field_order", "is required for framing text_delimited (the ordered field names)")
    endpoints = r.strings("endpoints")
    if not endpoints:
        raise r.fail("endpoints", "needs at least one ZMQ endpoint, e.g. tcp://127.0.0.1:5556")
    binning = None
    b = r.child("binning", None)
    if b is not None:
        binning = BinningSpec(parse_interval_ns(b.get("interval", str), b.key("interval")),
                              b.strings("fields"), b.get("measurement", str, None), b.get("keep_raw", bool, True))
        b.done()
    m = r.child("mapping")
    assert m is not None
    spec = SubscriptionSpec(
        name=name, endpoints=endpoints, bind=r.get("bind", bool, False), topics=r.strings("topics", [""]),
        rcvhwm=r.positive("rcvhwm", int, 1_000_000), framing=framing,
        delimiter=r.get("delimiter", str, "\x01"), field_order=field_order,
        max_frame_bytes=r.positive("max_frame_bytes", int, 1_048_576),
        mapping=_mapping(m, field_order), binning=binning, cache=r.get("cache", bool, True),
    )
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
        batch_size=r.positive("batch_size", int, 5000), flush_interval=r.positive("flush_interval", float, 1.0),
        gzip=r.get("gzip", bool, False), timeout=r.positive("timeout", float, 10.0),
        queue_max_points=r.positive("queue_max_points", int, 500_000),
        max_backoff=r.positive("max_backoff", float, 30.0),
    )
    r.done()
    return spec


def parse(data: Any, source: str = "<config>") -> Config:
    top = _Reader(data if data is not None else {}, "", source)
    subscriptions = [_subscription(s) for s in top.items("subscriptions")]
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
                          _secret(c, "STATION_BRIDGE_CACHE_PASSWORD"), c.positive("ttl", int, 3600),
                          c.get("key_prefix", str, "latest"))
        c.done()
    j = top.child("journal", {}) or _Reader({}, "journal", source)
    journal_dir = Path(j.get("dir", str, "/var/lib/station-bridge/journal"))
    journal_max = parse_size(j.get("max_bytes", (str, int), "1GiB"), f"{source}: journal.max_bytes")
    write_ahead = j.get("write_ahead", bool, True)
    j.done()
    dl = top.child("dead_letter", {}) or _Reader({}, "dead_letter", source)
    dead_dir = Path(dl.get("dir", str, "/var/lib/station-bridge/dead-letter"))
    dl.done()
    h = top.child("http", {}) or _Reader({}, "http", source)
    listen = h.get("listen", str, "127.0.0.1:9108")
    h.done()
    log = top.child("log", {}) or _Reader({}, "log", source)
    level = log.get("level", str, "info", choices=("debug", "info", "warning", "error"))
    rate = log.positive("rate_limit_per_s", float, 5.0)
    log.done()
    self_metrics = None
    sm = top.child("self_metrics", None)
    if sm is not None:
        self_metrics = SelfMetricsSpec(
            parse_interval_ns(sm.get("interval", str, "10s"), f"{source}: self_metrics.interval"),
            sm.get("measurement", str, "station_bridge"), sm.get("instance", str, "bridge"))
        sm.done()
    config = Config(
        source=source, station=top.get("station", str, None), subscriptions=subscriptions,
        destinations=destinations, cache=cache, journal_dir=journal_dir, journal_max_bytes=journal_max,
        journal_write_ahead=write_ahead,
        dead_letter_dir=dead_dir, http_listen=listen or None,
        shutdown_timeout=top.positive("shutdown_timeout", float, 20.0), log_level=level, log_rate_per_s=rate,
        self_metrics=self_metrics, raw=data or {},
    )
    top.done()
    return config


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
