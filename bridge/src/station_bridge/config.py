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

import ipaddress
import math
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .lineproto import LineError, check_field_key, check_measurement, escape_tag
from .memory import BURST_BYTES, MAX_RCVHWM, TRANSPORT_LIMIT_FACTOR, Budget, derived_rcvhwm
from .memory import budget as memory_budget
from .paths import Path as ValuePath
from .paths import PathError, PathSet, PathSyntaxError, compile_paths
from .paths import parse as parse_path
from .paths import resolve as resolve_path
from .schedule import Schedule, ScheduleError
from .timestamps import FORMATS

FRAMINGS = ("msgpack", "json", "text_json", "text_delimited")
FIELD_TYPES = ("float", "integer", "boolean", "string")
_SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
MIN_DURATION_S = 0.001  # a positive duration below a millisecond is a mistake here
MAX_COUNT = MAX_RCVHWM  # every count (messages, points, series, connections): a C int, as libzmq's rcvhwm
MAX_BYTES = 2**50  # every size in bytes: 1024TiB (beyond it a typo; 2^60 overflowed at run start)
# What a stop may take past shutdown_timeout: a destination's flush gets at least 1 s and a request
# in flight at the deadline is cut (2.1 s measured with two paced destinations and a live feed).
STOP_OVERRUN_S = 5.0
MAX_DURATION_S = 3650 * 86400.0  # ten years: any longer duration is a mistake (and overflows dates)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
          "w": 604800.0}
DEFAULT_LISTEN = "127.0.0.1:9108"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DerivedTag:
    source: str | None  # the literal key (`source:`), or None with `path:`
    regex: re.Pattern[str]
    path: ValuePath | None = None

    @property
    def value_path(self) -> ValuePath:
        return self.path if self.path is not None else ValuePath.key(self.source or "")


@dataclass(frozen=True)
class TimeSpec:
    field: str | None  # the literal key (`field:`); None with `path:` or for the receive time
    format: str
    timezone: str | None
    path: ValuePath | None = None
    # A source time more than this ahead of / behind the receive time is refused bad_timestamp
    # (a station clock or publisher bug stamping 2033); None: no bound on that side.
    accept_ahead: float | None = 86_400.0
    accept_behind: float | None = 87_600 * 3600.0

    @property
    def value_path(self) -> ValuePath | None:
        if self.path is not None:
            return self.path
        return ValuePath.key(self.field) if self.field is not None else None


MAX_EACH_BYTES = BURST_BYTES  # mapping.max_bytes' default: one receive burst's bytes


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
    # Paths (docs/mapping-paths.md): every tag and field has one; the literal forms are
    # ValuePath.key(name), one top-level key, a dot in it part of the key.
    tag_paths: dict[str, ValuePath] = field(default_factory=dict)  # tag name -> path
    field_paths: dict[str, ValuePath] = field(default_factory=dict)  # field name -> path
    each: ValuePath | None = None
    max_points: int = 10_000
    topic_tag: str | None = None
    topic_regex: re.Pattern[str] | None = None
    measurement_path: ValuePath | None = None  # with measurement_from: field, instead of measurement_field
    # A configured tag whose source is absent refuses the message (missing_field: it would merge
    # into another series) unless it is optional (left out) or has a default (written instead).
    optional_tags: tuple[str, ...] = ()
    tag_defaults: dict[str, str] = field(default_factory=dict)
    # With `each`: the bytes one message's points may hold (their lines); more refuse it whole
    # (too_many_points), so a small message cannot make gigabytes of points.
    max_bytes: int = MAX_EACH_BYTES

    @property
    def captures(self) -> tuple[str, ...]:
        """Tag names captured by the `each` path (`<pair>`, `[<level>]`)."""
        return self.each.captures if self.each is not None else ()

    @property
    def topic_tags(self) -> tuple[str, ...]:
        names = [self.topic_tag] if self.topic_tag else []
        return (*names, *(self.topic_regex.groupindex if self.topic_regex is not None else ()))

    def sources(self) -> dict[str, ValuePath]:
        """Every value the mapping reads, by a name that says where it is configured, in the
        order the mapping declares them (measurement, tags, derived tags, fields, time)."""
        out: dict[str, ValuePath] = {}
        if self.measurement_from == "field":
            out["mapping.measurement_path" if self.measurement_path is not None else "mapping.measurement_field"] = (
                self.measurement_path or ValuePath.key(self.measurement_field or ""))
        for name in self.tags:
            out[f"mapping.tags.{name}"] = self.tag_paths.get(name) or ValuePath.key(name)
        for i, d in enumerate(self.derived_tags):
            out[f"mapping.derived_tags[{i}]"] = d.value_path
        for name in self.fields:
            out[f"mapping.fields.{name}"] = self.field_paths.get(name) or ValuePath.key(name)
        if self.time.value_path is not None:
            out["mapping.time"] = self.time.value_path
        return out

    def compile(self, name: str = "paths") -> PathSet:
        """The mapping's paths compiled into one function (paths.compile_paths)."""
        return compile_paths(self.sources(), self.each, max_points=self.max_points, name=name)

    @property
    def is_flat(self) -> bool:
        """Today's shape: no `each`, no topic tags, every tag and field the top-level key of its
        own name, every other source one top-level key: the generated fast path maps it."""
        if self.each is not None or self.topic_tag or self.topic_regex is not None:
            return False
        if any(p.flat_key != n for n, p in self.tag_paths.items()):
            return False
        if any(p.flat_key != n for n, p in self.field_paths.items()):
            return False
        return all(p.flat_key is not None for p in self.sources().values())


MAX_GAP_BINS = 10_000  # binning.max_gap when null: this many intervals


@dataclass(frozen=True)
class BinningSpec:
    interval_ns: int
    fields: list[str]
    measurement: str | None
    keep_raw: bool
    max_gap_ns: int | None = None  # a longer silence of a series is not filled; None: MAX_GAP_BINS intervals
    max_series: int = 20_000  # series whose open bin is kept; beyond it the least recently sampled is forgotten

    @property
    def gap_ns(self) -> int:
        return self.max_gap_ns if self.max_gap_ns is not None else MAX_GAP_BINS * self.interval_ns


@dataclass(frozen=True)
class IgnoreRule:
    """Messages that are not data (heartbeats, subscription acknowledgements, snapshots a feed
    announces): counted as ignored{rule}, never rejected nor dead-lettered. A message matches
    when every condition given matches: the value at `path` is one of `values` (equal in type
    and value), and the topic matches `topic` (a regular expression, searched from the start)."""

    name: str
    path: ValuePath | None
    values: tuple
    topic: re.Pattern[str] | None

    def matches(self, topic: str, record: object) -> bool:
        if self.topic is not None and self.topic.match(topic) is None:
            return False
        if self.path is None:
            return True
        try:
            found = resolve_path(self.path, record)
        except PathError:
            return False
        return any(type(found) is type(v) and found == v for v in self.values)


@dataclass(frozen=True)
class SubscriptionSpec:
    name: str
    endpoints: list[str]
    bind: bool
    topics: list[str]
    rcvhwm: int | None  # None: derived from the memory budget (Config.rcvhwm)
    framing: str
    delimiter: str
    field_order: list[str]
    max_frame_bytes: int
    mapping: MappingSpec
    binning: BinningSpec | None
    require_connection: bool = True
    cache: bool = True  # false: the subscription's points never reach the Redis cache
    expected_interval: float | None = None  # a feed's cadence: unhealthy after 3 intervals of silence; None: idle is ok
    ignore: tuple[IgnoreRule, ...] = ()  # messages that are not data: counted ignored{rule}
    message_bytes: int | None = None  # the size rcvhwm is derived for (None: largest_message, the worst case)

    @property
    def largest_message(self) -> int:
        """The largest message libzmq accepts (MAXMSGSIZE): larger ones drop the connection; up to
        it they are received and counted `oversized` (beyond max_frame_bytes)."""
        return self.max_frame_bytes * TRANSPORT_LIMIT_FACTOR


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
    queue_max_bytes: int | None = None  # None: the destination's share of the memory budget
    schedule: Schedule | None = None  # None: the link is always up (schedule.py)
    max_points_per_second: int | None = None  # None: unlimited
    max_bytes_per_second: int | None = None  # on the wire (after gzip); None: unlimited
    ca_file: str | None = None  # CA bundle for an https url; None: the system's
    numeric_only: bool = False  # string fields removed and counted (backend.py: VictoriaMetrics stores them as 0)
    time_resolution: str = "ns"  # what the backend keeps of a time: ns (InfluxDB) or ms (VictoriaMetrics)
    on_collision: str = "refuse"  # time_resolution ms: points in a used millisecond refused (counted) or warn
    retention_period: float | None = None  # seconds: older points dropped (counted outside_retention); None: no bound
    flush_points: int = 500  # a partial batch this large is sent as soon as no request is in flight (sinks._collect)


@dataclass(frozen=True)
class CacheSpec:
    url: str
    username: str | None
    password: str | None
    ttl: int
    key_prefix: str
    queue_max: int = 1000
    timeout: float = 2.0
    min_interval: float = 0.05  # seconds between two pipelines at least (0: one per batch of bursts)


@dataclass(frozen=True)
class SelfMetricsSpec:
    """The bridge's own counters, written as points so that dashboards can graph them."""

    interval_ns: int
    measurement: str
    instance: str
    feed_measurement: str = "station_bridge_feed"


# The validation subscription, defined here alone (issue 23): `validation: {endpoint: ...}` makes
# the bridge bind it for `station-bridge validate --mode publish`; `check-config --json` publishes
# it (`validation` and the subscription itself) and validate's report tells the playbooks what
# central must hold. Demo ticks land in this measurement only, tagged `validation=demo` (and the
# instance), never cached in Redis; no configuration may name a subscription `validation` besides.
VALIDATION_SUBSCRIPTION = "validation"
VALIDATION_TOPIC = "validation"
VALIDATION_MEASUREMENT = "station_validation"
VALIDATION_FIELD = "bid"  # the field central counts
VALIDATION_TAGS = {"validation": "demo"}
VALIDATION_FIELDS = {"bid": "float", "ask": "float", "volume": "integer", "seq": "integer"}


@dataclass(frozen=True)
class ValidationSpec:
    """`validation`: where the bridge binds its validation subscription, and what it writes."""

    endpoint: str
    subscription: str = VALIDATION_SUBSCRIPTION
    topic: str = VALIDATION_TOPIC
    measurement: str = VALIDATION_MEASUREMENT
    field: str = VALIDATION_FIELD
    tags: tuple[tuple[str, str], ...] = tuple(VALIDATION_TAGS.items())

    def subscription_config(self, instance: str | None) -> dict[str, Any]:
        """The subscription as configuration data (parsed like any other)."""
        static = dict(self.tags) | ({"instance": instance} if instance else {})
        return {"name": self.subscription, "endpoints": [self.endpoint], "bind": True, "topics": [self.topic],
                "framing": "msgpack", "cache": False,
                "mapping": {"measurement": self.measurement, "tags": ["instrument"], "static_tags": static,
                            "fields": dict(VALIDATION_FIELDS), "time": {"field": "timestamp", "format": "epoch_s"}}}

    def contract(self) -> dict[str, Any]:
        """What the validation ticks are, for other tools (check-config --json, validate's report)."""
        return {"endpoint": self.endpoint, "subscription": self.subscription, "topic": self.topic,
                "measurement": self.measurement, "field": self.field, "tags": dict(self.tags)}


@dataclass(frozen=True)
class HealthSpec:
    """When /healthz says not ok (see health.py)."""

    destination_grace: float = 60.0  # a destination failing longer than this (its oldest point: + flush_interval)
    subscription_grace: float = 60.0  # a subscription without a connection longer than this
    probe_interval: float = 10.0  # an idle destination is asked /ping this often
    rejection_window: float = 60.0  # a subscription's recent messages: this many seconds
    max_rejected_share: float = 0.95  # ... unhealthy when at least this share of them was rejected
    rejection_min_messages: int = 20  # ... and at least this many arrived
    handshake_grace: float = 10.0  # an endpoint whose peer accepts TCP but completes no ZMTP handshake
    max_refused_share: float = 0.1  # a destination whose recent points InfluxDB refused at least this share of


@dataclass(frozen=True)
class MemorySpec:
    """The memory budget (memory.py): explicit, or a fraction of the cgroup's memory limit."""

    budget_bytes: int | None = None
    limit_fraction: float = 0.5


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
    validation: ValidationSpec | None = None
    journal_min_free_bytes: int = 64 << 20
    ledger_interval: float = 1.0
    dead_letter_max_bytes: int = 64 << 20
    dead_letter_max_record_bytes: int = 24 << 20  # one input record (a whole message, base64); see refused.py
    http_max_connections: int = 16
    http_timeout: float = 5.0
    health: HealthSpec = field(default_factory=HealthSpec)
    uniqueness: UniquenessSpec = field(default_factory=UniquenessSpec)
    fast_path: str = "auto"
    # auto: a receive thread per compiled subscription when two or more run compiled on a host with
    # more than two CPUs; on: whatever the CPUs; off: one receive loop (receivers.threads_wanted)
    receive_threads: str = "auto"
    memory: MemorySpec = field(default_factory=MemorySpec)
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    def budget(self) -> Budget:
        """The memory budget, from `memory` and (by default) this process's cgroup limit."""
        return memory_budget(self.memory.budget_bytes, self.memory.limit_fraction)

    def rcvhwm(self, spec: SubscriptionSpec, budget: Budget | None = None) -> int:
        """A subscription's receive queue in messages per connection: its `rcvhwm`, or its share
        of the budget's receive part divided by its `message_bytes` (memory.derived_rcvhwm)."""
        if spec.rcvhwm is not None:
            return spec.rcvhwm
        share = (budget or self.budget()).receive // max(1, len(self.subscriptions))
        return derived_rcvhwm(share, len(spec.endpoints), spec.message_bytes or spec.largest_message)

    def queue_max_bytes(self, spec: DestinationSpec, budget: Budget | None = None) -> int:
        """A destination's in-memory queue bound in bytes: its own, or its share of the budget."""
        if spec.queue_max_bytes is not None:
            return spec.queue_max_bytes
        return (budget or self.budget()).queues // max(1, len(self.destinations))

    def memory_warnings(self) -> list[str]:
        """An explicit rcvhwm whose queues can exceed the whole budget with max_frame_bytes messages."""
        out = []
        budget = self.budget()
        for s in self.subscriptions:
            if s.rcvhwm is None:
                continue
            worst = s.rcvhwm * s.largest_message * max(1, len(s.endpoints))
            if worst > budget.total:
                out.append(f"subscriptions.{s.name}.rcvhwm: {s.rcvhwm} messages of up to the transport limit "
                           f"({s.largest_message} bytes: {TRANSPORT_LIMIT_FACTOR} x max_frame_bytes) per endpoint "
                           f"can hold {worst} bytes, more than the memory budget "
                           f"of {budget.total} bytes ({budget.source}); leave rcvhwm unset to derive it "
                           "from the budget and message_bytes, or lower max_frame_bytes")
        return out

    def effective(self) -> dict[str, Any]:
        """The configuration with every default filled in, as JSON-ready data, without secrets:
        what `check-config --json` prints for other tools (the Ansible roles) to read."""
        subs = []
        budget = self.budget()
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
                          "measurement": b.measurement, "max_gap_s": b.gap_ns / 1e9, "max_series": b.max_series}
                if measurements is not None:
                    extra = [b.measurement] if b.measurement else [f"{n}_binned" for n in measurements]
                    measurements = (measurements if b.keep_raw else []) + extra
            static = dict(m.static_tags)
            if self.station:
                static.setdefault("station", self.station)
            derived = [g for d in m.derived_tags for g in d.regex.groupindex]
            derived += [*m.captures, *m.topic_tags]
            subs.append({
                "name": s.name, "endpoints": s.endpoints, "bind": s.bind, "topics": s.topics, "framing": s.framing,
                "rcvhwm": self.rcvhwm(s, budget), "rcvhwm_derived": s.rcvhwm is None,
                "message_bytes": s.message_bytes or s.largest_message, "max_frame_bytes": s.max_frame_bytes,
                "require_connection": s.require_connection,
                "expected_interval_s": s.expected_interval, "idle_ok": s.expected_interval is None,
                "ignore": [{"name": i.name, "path": str(i.path) if i.path is not None else None, "in": list(i.values),
                            "topic": i.topic.pattern if i.topic is not None else None} for i in s.ignore],
                "measurement_from": m.measurement_from, "measurements": measurements,
                "fields": dict(m.fields), "tags": sorted({*m.tags, *derived, *static}),
                "optional_tags": list(m.optional_tags), "tag_defaults": dict(m.tag_defaults),
                "static_tags": static, "time": {"field": m.time.field, "format": m.time.format,
                                                "timezone": m.time.timezone,
                                                "path": str(m.time.path) if m.time.path is not None else None,
                                                "accept_ahead_s": m.time.accept_ahead,
                                                "accept_behind_s": m.time.accept_behind},
                "each": str(m.each) if m.each is not None else None, "max_points": m.max_points,
                "max_bytes": m.max_bytes,
                "topic": None if not m.topic_tags else {
                    "tag": m.topic_tag or None, "regex": m.topic_regex.pattern if m.topic_regex else None},
                "binning": binned, "cache": self.cache is not None and s.binning is None and s.cache,
            })
        return {
            "source": self.source,
            "station": self.station,
            "subscriptions": subs,
            "destinations": [{
                "name": d.name, "url": d.url, "database": d.database, "retention_policy": d.retention_policy,
                "username": d.username, "password_set": d.password is not None, "batch_size": d.batch_size,
                "flush_interval_s": d.flush_interval, "flush_points": d.flush_points, "gzip": d.gzip,
                "timeout_s": d.timeout,
                "queue_max_points": d.queue_max_points,
                "queue_max_bytes": self.queue_max_bytes(d, budget), "max_backoff_s": d.max_backoff,
                "schedule": d.schedule.as_config() if d.schedule is not None else None,
                "max_points_per_second": d.max_points_per_second, "max_bytes_per_second": d.max_bytes_per_second,
                "ca_file": d.ca_file,
                "numeric_only": d.numeric_only, "time_resolution": d.time_resolution,
                "on_collision": d.on_collision, "retention_period_s": d.retention_period,
                "journal_dir": str(self.journal_dir / d.name),
                "dead_letter_file": str(self.dead_letter_dir / f"{d.name}.jsonl"),
            } for d in self.destinations],
            "cache": None if self.cache is None else {
                "url": _without_password(self.cache.url), "username": self.cache.username,
                "password_set": self.cache.password is not None, "ttl_s": self.cache.ttl,
                "key_prefix": self.cache.key_prefix, "queue_max": self.cache.queue_max,
                "timeout_s": self.cache.timeout, "min_interval_s": self.cache.min_interval},
            "journal": {"dir": str(self.journal_dir), "max_bytes": self.journal_max_bytes,
                        "write_ahead": self.journal_write_ahead, "min_free_bytes": self.journal_min_free_bytes,
                        "ledger_interval_s": self.ledger_interval},
            "dead_letter": {"dir": str(self.dead_letter_dir), "max_bytes": self.dead_letter_max_bytes,
                            "max_record_bytes": self.dead_letter_max_record_bytes},
            "http": {"listen": self.http_listen, "max_connections": self.http_max_connections,
                     "timeout_s": self.http_timeout},
            "health": {"destination_grace_s": self.health.destination_grace,
                       "subscription_grace_s": self.health.subscription_grace,
                       "handshake_grace_s": self.health.handshake_grace,
                       "probe_interval_s": self.health.probe_interval,
                       "rejection_window_s": self.health.rejection_window,
                       "max_rejected_share": self.health.max_rejected_share,
                       "rejection_min_messages": self.health.rejection_min_messages,
                       "max_refused_share": self.health.max_refused_share},
            "uniqueness": {"window": self.uniqueness.window, "max_series": self.uniqueness.max_series},
            "self_metrics": None if self.self_metrics is None else {
                "interval_s": self.self_metrics.interval_ns / 1e9, "measurement": self.self_metrics.measurement,
                "feed_measurement": self.self_metrics.feed_measurement, "instance": self.self_metrics.instance},
            "validation": None if self.validation is None else self.validation.contract(),
            "shutdown_timeout_s": self.shutdown_timeout,
            # what systemd's TimeoutStopSec must allow: the timeout and the stop's overrun past it
            "stop_needs_s": self.shutdown_timeout + STOP_OVERRUN_S,
            "log": {"level": self.log_level, "rate_limit_per_s": self.log_rate_per_s},
            "fast_path": self.fast_path,
            "receive_threads": self.receive_threads,
            "memory": {"budget_bytes": budget.total, "source": budget.source, "cgroup_limit_bytes": budget.limit,
                       "limit_fraction": self.memory.limit_fraction, "receive_bytes": budget.receive,
                       "queues_bytes": budget.queues},
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
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(name, f"must be a finite number, got {value!r}")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(name, f"expected {names}, got {value!r}")
        if choices and value not in choices:
            raise self.fail(name, f"{value!r} is not one of {', '.join(map(str, choices))}")
        if kind is int and abs(value) > MAX_COUNT:
            # rcvhwm 2^32 passed check-config, then libzmq's setsockopt overflowed at run start
            raise self.fail(name, f"must be at most {MAX_COUNT:,}, got {value!r}")
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
        if positive and seconds < MIN_DURATION_S:
            # 1e-300 s passed as positive: a binning interval of 0 ns, an HTTP timeout nothing answers
            # within, a window that never opens (attack round 10)
            raise self.fail(name, f"must be at least 1ms, got {value!r}")
        return seconds

    def size(self, name: str, default: Any = ...) -> int:
        """Bytes from `512MiB`, `2GiB` or a plain number: never negative (journal.max_bytes -1
        passed check-config), at most MAX_BYTES (1024TiB)."""
        value = self.get(name, (str, int), default)
        size = parse_size(value, f"{self.source}: {self.key(name)}")
        if size < 0:
            raise self.fail(name, f"must not be negative, got {value!r}")
        if size > MAX_BYTES:
            raise self.fail(name, f"must be at most 1024TiB, got {value!r}")
        return size

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
        return _bounded(float(value), value, where)
    text = value.strip()
    try:
        return _bounded(float(text), value, where)
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
    return _bounded(total, value, where)


def _bounded(seconds: float, value: object, where: str) -> float:
    """Every duration is a finite number of seconds within MAX_DURATION_S either way: they go into
    clocks, sleeps and dates (an `every: .inf` schedule made /healthz answer 500 and the writer
    thread fail in a loop)."""
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION_S:
        raise ConfigError(f"{where}: invalid duration {value!r} (finite, at most {MAX_DURATION_S // 86400:.0f} days)")
    return seconds


def parse_interval_ns(text: str | int | float, where: str) -> int:
    return round(parse_duration(text, where) * 1e9)


def _secret(reader: _Reader, env_override: str, environ: Mapping[str, str]) -> str | None:
    if env_override in environ:
        reader.get("password", str, None)
        reader.get("password_env", str, None)
        return environ[env_override]
    env_name = reader.get("password_env", str, None)
    if env_name:
        if env_name not in environ:
            raise reader.fail("password_env", f"environment variable {env_name} is not set")
        reader.get("password", str, None)
        return environ[env_name]
    return reader.get("password", str, None)


def _env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def _writable(r: _Reader, key: str, check: Any, value: str) -> None:
    try:
        check(value)
    except LineError as exc:
        raise r.fail(key, f"InfluxDB cannot store it: {exc}") from exc


def _path(r: _Reader, key: str, text: object, *, wildcards: bool = False) -> ValuePath:
    try:
        return parse_path(text, wildcards=wildcards)
    except PathSyntaxError as exc:
        raise r.fail(key, str(exc)) from None


def _fields(r: _Reader) -> tuple[dict[str, str], dict[str, ValuePath]]:
    """`fields`: `name: type` (the literal key `name`) or `name: {path, type}`."""
    values = r.get("fields", dict, {})
    if not values:
        raise r.fail("fields", "declare at least one field with its type")
    kinds: dict[str, str] = {}
    paths: dict[str, ValuePath] = {}
    for key, spec in values.items():
        name = str(key)
        if isinstance(spec, dict):
            f = _Reader(spec, r.key(f"fields.{name}"), r.source)
            kind = f.get("type", str)
            paths[name] = _path(f, "path", f.get("path", (str, list)))
            f.done()
        elif isinstance(spec, str):
            kind, paths[name] = spec, ValuePath.key(name)
        else:
            raise r.fail(f"fields.{name}",
                         f"expected a type ({', '.join(FIELD_TYPES)}) or {{path, type}}, got {spec!r}")
        if kind not in FIELD_TYPES:
            raise r.fail(f"fields.{name}", f"unknown type {kind!r} (choose {', '.join(FIELD_TYPES)})")
        _writable(r, f"fields.{name}", check_field_key, name)
        kinds[name] = kind
    return kinds, paths


def _tags(r: _Reader) -> tuple[list[str], dict[str, ValuePath]]:
    """`tags`: a list of literal keys (tag name = key) or a map tag name -> path."""
    value = r.get("tags", (list, dict), [])
    if isinstance(value, list):
        names = r.strings("tags", [])
        return names, {n: ValuePath.key(n) for n in names}
    paths = {str(name): _path(r, f"tags.{name}", text) for name, text in value.items()}
    return list(paths), paths


def _mapping(r: _Reader, station: str | None) -> MappingSpec:
    measurement = r.get("measurement", str, None)
    measurement_from = r.get("measurement_from", str, "fixed", choices=("fixed", "topic", "field"))
    measurement_field = r.get("measurement_field", str, None)
    measurement_path_text = r.get("measurement_path", (str, list), None)
    measurement_path = None if measurement_path_text is None else _path(r, "measurement_path", measurement_path_text)
    measurements = r.string_map("measurements")
    if measurement_from == "fixed" and not measurement:
        raise r.fail("measurement", "is required when measurement_from is fixed")
    if measurement_field and measurement_path is not None:
        raise r.fail("measurement_path", "give measurement_field (a literal key) or measurement_path, not both")
    if measurement_from == "field" and not (measurement_field or measurement_path):
        raise r.fail("measurement_field", "is required when measurement_from is field (or measurement_path)")
    if measurement_path is not None and measurement_from != "field":
        raise r.fail("measurement_path", "applies only with measurement_from: field")
    if measurement:
        _writable(r, "measurement", check_measurement, measurement)
    for topic, name in measurements.items():
        _writable(r, f"measurements.{topic}", check_measurement, name)
    each_text = r.get("each", (str, list), None)
    each = None if each_text is None else _path(r, "each", each_text, wildcards=True)
    if each is not None and not each.wild:
        raise r.fail("each", f"path {each} has no wildcard (*, <name>): it would make one point; "
                             "use a plain path in the tag or field instead")
    max_points = r.positive("max_points", int, 10_000)
    max_bytes = r.size("max_bytes", MAX_EACH_BYTES)
    if max_bytes < 1:
        raise r.fail("max_bytes", "must be at least 1 byte")
    fields, field_paths = _fields(r)
    derived = []
    for d in r.items("derived_tags", []):
        pattern = d.get("regex", str)
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise d.fail("regex", f"invalid regular expression: {exc}") from exc
        if not compiled.groupindex:
            raise d.fail("regex", "needs named groups, e.g. (?P<base>[A-Z]{3})(?P<term>[A-Z]{3})")
        source = d.get("source", str, None)
        path_text = d.get("path", (str, list), None)
        if (source is None) == (path_text is None):
            raise d.fail("source", "give source (a literal key) or path, exactly one")
        derived.append(DerivedTag(source, compiled, None if path_text is None else _path(d, "path", path_text)))
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
    time_field = t.get("field", str, None)
    time_path_text = t.get("path", (str, list), None)
    if time_field is not None and time_path_text is not None:
        raise t.fail("path", "give field (a literal key) or path, not both")
    time_spec = TimeSpec(time_field, fmt, tz, None if time_path_text is None else _path(t, "path", time_path_text),
                         _unbounded_or(t, "accept_ahead", "24h"), _unbounded_or(t, "accept_behind", "87600h"))
    t.done()
    topic_tag = topic_regex = None
    tp = r.child("topic", None)
    if tp is not None:
        topic_tag = tp.get("tag", str, None)
        regex_text = tp.get("regex", str, None)
        if regex_text is not None:
            try:
                topic_regex = re.compile(regex_text)
            except re.error as exc:
                raise tp.fail("regex", f"invalid regular expression: {exc}") from exc
            if not topic_regex.groupindex:
                raise tp.fail("regex", "needs named groups, e.g. ^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$")
        tp.done()
    tags, tag_paths = _tags(r)
    static = r.string_map("static_tags")
    overlap = set(tags) & set(fields)
    if overlap:
        raise r.fail("tags", f"{sorted(overlap)[0]!r} is declared both as a tag and as a field")
    captures = each.captures if each is not None else ()
    for name in captures:
        if name in fields:
            raise r.fail("each", f"capture <{name}> is also declared as a field (fields.{name})")
    # Every tag key comes from exactly one place: a record key, a capture, the topic, a derived
    # group, a static tag or the station; two sources for one key would write it twice.
    sources: dict[str, str] = {}
    named = [(k, "tags") for k in tags] + [(c, "each") for c in captures]
    named += [(k, "topic.tag") for k in ([topic_tag] if topic_tag else [])]
    named += [(g, "topic.regex") for g in (topic_regex.groupindex if topic_regex is not None else ())]
    named += [(g, "derived_tags") for d in derived for g in d.regex.groupindex]
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
    optional = r.strings("optional_tags", [])
    defaults = r.string_map("tag_defaults")
    derived_names = [g for d in derived for g in d.regex.groupindex]
    for key in [*optional, *defaults]:
        if key not in tags and key not in derived_names:
            raise r.fail("optional_tags" if key in optional else "tag_defaults",
                         f"{key!r} is not one of the mapping's tags or derived_tags groups "
                         f"{sorted({*tags, *derived_names})}")
    for key in set(optional) & set(defaults):
        raise r.fail("tag_defaults", f"{key!r} is optional and has a default: give one or the other")
    for key, value in defaults.items():
        if value == "":
            raise r.fail(f"tag_defaults.{key}", "an empty default is an optional tag: list it in optional_tags")
        _writable(r, f"tag_defaults.{key}", escape_tag, value)
    spec = MappingSpec(measurement, measurement_from, measurement_field, measurements, tags,
                       static, fields, r.strings("drop", []), derived, time_spec, tag_paths, field_paths,
                       each, max_points, topic_tag, topic_regex, measurement_path, tuple(optional), defaults,
                       max_bytes)
    try:
        spec.compile()
    except (PathSyntaxError, ValueError) as exc:
        raise r.fail("each" if each is not None else "fields", str(exc)) from None
    r.done()
    return spec


def _unbounded_or(r: _Reader, key: str, default: str) -> float | None:
    """A duration bound where an explicit null means "no bound" (absent: the default)."""
    if key in r.data and r.data[key] is None:
        r.seen.add(key)
        return None
    return r.duration(key, default)


def _ignore(r: _Reader) -> IgnoreRule:
    name = r.get("name", str)
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise r.fail("name", f"{name!r}: use letters, digits, _ . - (it labels bridge_ignored_messages_total)")
    text = r.get("path", str, None)
    path = _path(r, "path", text) if text is not None else None
    values = r.get("in", list, None)
    if (path is None) != (values is None):
        raise r.fail("in" if path is not None else "path", "`path` and `in` go together: the value at `path` "
                     "is one of `in`, e.g. {name: heartbeat, path: type, in: [HEARTBEAT]}")
    for value in values or []:
        if value is None or isinstance(value, dict | list):
            raise r.fail("in", f"{value!r}: list scalars (strings, numbers, booleans)")
    pattern = r.get("topic", str, None)
    topic = None
    if pattern is not None:
        try:
            topic = re.compile(pattern)
        except re.error as exc:
            raise r.fail("topic", f"{pattern!r} is not a regular expression: {exc}") from None
    if path is None and topic is None:
        raise r.fail("name", "a rule needs `path` with `in`, or `topic`, or both")
    r.done()
    return IgnoreRule(name, path, tuple(values or ()), topic)


def _subscription(r: _Reader, station: str | None) -> SubscriptionSpec:
    name = r.get("name", str)
    framing = r.get("framing", str, "msgpack", choices=FRAMINGS)
    field_order = r.strings("field_order", [])
    if framing == "text_delimited" and not field_order:
        raise r.fail("field_order", "is required for framing text_delimited (the ordered field names)")
    endpoints = r.strings("endpoints")
    if not endpoints:
        raise r.fail("endpoints", "needs at least one ZMQ endpoint, e.g. tcp://127.0.0.1:5556")
    bind = r.get("bind", bool, False)
    for i, endpoint in enumerate(endpoints):
        why = endpoint_error(endpoint, bind)
        if not why and endpoint in endpoints[:i]:
            why = "listed twice (a second connect would receive every message twice)"
        if why:
            raise r.fail(f"endpoints[{i}]", f"subscription {name!r}: endpoint {endpoint!r}: {why}")
    m = r.child("mapping")
    assert m is not None
    mapping = _mapping(m, station)
    binning = None
    b = r.child("binning", None)
    if b is not None:
        gap = b.duration("max_gap", None)
        binning = BinningSpec(round(b.duration("interval") * 1e9), b.strings("fields"), b.get("measurement", str, None),
                              b.get("keep_raw", bool, True), None if gap is None else round(gap * 1e9),
                              b.positive("max_series", int, 20_000))
        if binning.gap_ns < binning.interval_ns:
            raise b.fail("max_gap", "must be at least the interval")
        if binning.measurement:
            _writable(b, "measurement", check_measurement, binning.measurement)
        for name_ in binning.fields:
            if mapping.fields.get(name_) not in ("float", "integer"):
                raise b.fail("fields", f"{name_!r} is not a declared float or integer field")
        b.done()
    spec = SubscriptionSpec(
        name=name, endpoints=endpoints, bind=bind, topics=r.strings("topics", [""]),
        rcvhwm=r.positive("rcvhwm", int, None), framing=framing,
        delimiter=r.get("delimiter", str, "\x01"), field_order=field_order,
        max_frame_bytes=r.size("max_frame_bytes", 1_048_576),
        mapping=mapping, binning=binning, require_connection=r.get("require_connection", bool, not bind),
        cache=r.get("cache", bool, True),
        message_bytes=r.size("message_bytes") if r.get("message_bytes", (str, int), None) is not None else None,
        expected_interval=r.duration("expected_interval", None),
        ignore=tuple(_ignore(i) for i in r.items("ignore", [])),
    )
    # A feed's cadence, declared either way: `expected_interval`, or `idle_ok: true` (the explicit
    # form of leaving it unset: a campaign feed, idle for days, is healthy). Both at once contradict.
    idle_ok = r.get("idle_ok", bool, None)
    if idle_ok is True and spec.expected_interval is not None:
        raise r.fail("idle_ok", f"true contradicts expected_interval ({spec.expected_interval:g} s: idle for 3 "
                     "intervals is unhealthy): keep one")
    if idle_ok is False and spec.expected_interval is None:
        raise r.fail("idle_ok", "false needs expected_interval, the cadence an idle feed is judged by")
    rules = [i.name for i in spec.ignore]
    if len(set(rules)) != len(rules):
        raise r.fail("ignore", f"rule names must be unique, got {rules}")
    if spec.max_frame_bytes <= 0:
        raise r.fail("max_frame_bytes", "must be positive")
    if spec.message_bytes is not None and spec.message_bytes <= 0:
        raise r.fail("message_bytes", "must be positive")
    r.done()
    return spec


# Endpoints (bridge/README.md, "Endpoints"). A SUB socket here connects or binds tcp, ipc and
# inproc. Refused: pgm/epgm (the bundled libzmq has no OpenPGM, zmq.has("pgm") is False, and a
# multicast group has no connection for /healthz to watch), ws/wss (draft API, not built),
# tipc/vmci/udp (not for SUB sockets on a station, or RADIO/DISH only).
ENDPOINT_SCHEMES = ("tcp", "ipc", "inproc")
_REFUSED_SCHEMES = {
    "pgm": "multicast needs a libzmq built with OpenPGM (the bundled one is not) and has no connection to watch",
    "epgm": "multicast needs a libzmq built with OpenPGM (the bundled one is not) and has no connection to watch",
    "ws": "WebSocket transports are libzmq draft API, not built into pyzmq's libzmq",
    "wss": "WebSocket transports are libzmq draft API, not built into pyzmq's libzmq",
    "udp": "udp:// is for RADIO/DISH sockets only, never SUB",
}
_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
IPC_PATH_MAX = 107  # bytes: sockaddr_un.sun_path holds 108 with the terminating NUL


def endpoint_error(endpoint: str, bind: bool) -> str:
    """Why a SUB socket cannot `bind` (or connect) this endpoint, "" when it can: the syntax
    libzmq accepts, checked before start so that check-config catches it."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in endpoint):
        return "contains a space or a control character"
    scheme, sep, address = endpoint.partition("://")
    if not sep:
        return "expected transport://address, e.g. tcp://127.0.0.1:5556"
    if scheme not in ENDPOINT_SCHEMES:
        reason = _REFUSED_SCHEMES.get(scheme, "unknown transport")
        return f"{scheme}:// is not supported ({reason}); use one of {', '.join(s + '://' for s in ENDPOINT_SCHEMES)}"
    if not address:
        return f"no address after {scheme}://"
    if scheme == "inproc":
        return "" if address != "*" else "inproc:// has no wildcard"
    if scheme == "ipc":
        if address == "*":
            return "" if bind else "the wildcard ipc://* needs bind: true"
        if address == "@":
            return "an abstract ipc address needs a name after @ (ipc://@name)"
        if len(address.encode("utf-8")) > IPC_PATH_MAX:
            return f"the ipc path is longer than {IPC_PATH_MAX} bytes (the limit of a Unix socket address)"
        return ""
    if bind:
        return _tcp_address(address, bind=True)
    source, semicolon, target = address.rpartition(";")
    if semicolon:  # a source address: tcp://<interface or address>[:port];<host>:<port>
        if not source:
            return "an empty source address before ; (tcp://<source>;<host>:<port>)"
        why = _tcp_address(source, bind=True, source=True)
        if why:
            return f"source address {source!r}: {why}"
    return _tcp_address(target, bind=False)


def _tcp_address(address: str, bind: bool, source: bool = False) -> str:
    """host:port of tcp://; with `bind` (or a connect's source address) the host may be `*` or
    an interface name and the port `*` (an ephemeral port); a source's port is optional."""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            return "unclosed [ in an IPv6 address"
        host, rest = address[1:end], address[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"[{host}] is not an IPv6 address"
        if rest and not rest.startswith(":"):
            return "expected :port after the ]"
        port = rest[1:] if rest else None
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            host, port = address, None
        else:
            port = port_text
        if ":" in host:
            return "an IPv6 address goes in brackets: tcp://[::1]:5556"
    if port is None:
        return "" if source else "no port (tcp://host:port)"
    if port == "*":
        if not bind:
            return "the wildcard port * needs bind: true (a connect needs the publisher's port)"
    elif port == "!":
        return "port ! is czmq's form; libzmq takes * for an ephemeral port (with bind: true)"
    elif not port.isascii() or not port.isdigit():
        return f"port {port!r} is not a number"
    elif not 1 <= int(port) <= 65535:
        return f"port {port} is outside 1-65535" + (" (use * for an ephemeral port)" if int(port) == 0 and bind else "")
    if address.startswith("["):
        return ""
    if host == "*":
        return "" if bind else "the wildcard host * needs bind: true (a connect needs the publisher's host)"
    if not host:
        return "no host (tcp://host:port)"
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host} is not an IPv4 address"
        return ""
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        return f"{host!r} is not a host name (letters, digits, - and _ in dot-separated labels), " \
               "an IPv4 address or a bracketed IPv6 address"
    return ""


def _destination(r: _Reader, environ: Mapping[str, str]) -> DestinationSpec:
    name = r.get("name", str)
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise r.fail("name", f"{name!r}: use letters, digits, _ . - (it names the journal directory)")
    url = r.get("url", str).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise r.fail("url", f"{url!r} must start with http:// or https://")
    spec = DestinationSpec(
        name=name, url=url, database=r.get("database", str), retention_policy=r.get("retention_policy", str, None),
        username=r.get("username", str, None),
        password=_secret(r, f"STATION_BRIDGE_{_env_name(name)}_PASSWORD", environ),
        batch_size=r.positive("batch_size", int, 5000), flush_interval=r.duration("flush_interval", 1.0),
        gzip=r.get("gzip", bool, False), timeout=r.duration("timeout", 10.0),
        queue_max_points=r.positive("queue_max_points", int, 500_000),
        max_backoff=r.duration("max_backoff", 30.0),
        queue_max_bytes=None if r.get("queue_max_bytes", (str, int), None) is None else r.size("queue_max_bytes", 0),
        schedule=_schedule(r), max_points_per_second=r.positive("max_points_per_second", int, None),
        max_bytes_per_second=None if r.get("max_bytes_per_second", (str, int), None) is None
        else r.size("max_bytes_per_second", 0),
        ca_file=_ca_file(r, url),
        numeric_only=r.get("numeric_only", bool, False),
        time_resolution=r.get("time_resolution", str, "ns", choices=("ns", "ms")),
        on_collision=r.get("on_collision", str, "refuse", choices=("refuse", "warn")),
        retention_period=r.duration("retention_period", None),
        flush_points=r.positive("flush_points", int, 500),
    )
    if spec.queue_max_bytes is not None and spec.queue_max_bytes <= 0:
        raise r.fail("queue_max_bytes", "must be positive")
    if spec.max_bytes_per_second is not None and spec.max_bytes_per_second <= 0:
        raise r.fail("max_bytes_per_second", "must be positive (null: unlimited)")
    r.done()
    return spec


def _schedule(r: _Reader) -> Schedule | None:
    """`schedule`: daily UTC windows (`["02:00-04:30", ...]`) or `{every: 30m, for: 10m}`; null: always up."""
    value = r.get("schedule", (list, dict), None)
    try:
        if value is None:
            return None
        if isinstance(value, list):
            return Schedule.daily(value)
        p = _Reader(value, r.key("schedule"), r.source)
        every, duration = p.duration("every"), p.duration("for")
        p.done()
        return Schedule.periodic(every, duration)
    except ScheduleError as exc:
        raise r.fail("schedule", f"{exc} (e.g. [\"02:00-04:30\", \"14:00-15:00\"] in UTC, or "
                     "{every: 30m, for: 10m})") from None


# A configuration checked on another host than the one it is for (the Ansible controller's
# preflight): the files it names are not there, so they are checked for form only.
FILES_ELSEWHERE_ENV = "STATION_BRIDGE_FILES_ELSEWHERE"


def _ca_file(r: _Reader, url: str) -> str | None:
    """`ca_file`: a readable PEM bundle of CA certificates, for an https url."""
    path = r.get("ca_file", str, None)
    if path is None:
        return None
    if not url.startswith("https://"):
        raise r.fail("ca_file", f"is only used with an https:// url (url is {url!r})")
    if os.environ.get(FILES_ELSEWHERE_ENV) == "1":
        if not os.path.isabs(path):
            raise r.fail("ca_file", f"{path!r} must be an absolute path")
        return path
    if not os.path.isfile(path):
        raise r.fail("ca_file", f"{path!r} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise r.fail("ca_file", f"{path!r} is not readable by this user")
    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise r.fail("ca_file", f"{path!r} holds no usable CA certificate (PEM): {exc}") from None
    return path


def parse(data: Any, source: str = "<config>", environ: Mapping[str, str] | None = None) -> Config:
    """The configuration from parsed YAML/TOML; secrets named by the environment come from `environ`
    (default: the process's own)."""
    environ = os.environ if environ is None else environ
    top = _Reader(data if data is not None else {}, "", source)
    station = top.get("station", str, None)
    if station is not None:
        _writable(top, "station", escape_tag, station)
    subscriptions = [_subscription(s, station) for s in top.items("subscriptions")]
    names = [s.name for s in subscriptions]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: subscriptions: names must be unique, got {names}")
    bound: dict[str, str] = {}
    for i, s in enumerate(subscriptions):
        for j, endpoint in enumerate(s.endpoints):
            if s.bind and not endpoint.endswith("*") and bound.setdefault(endpoint, s.name) != s.name:
                raise ConfigError(f"{source}: subscriptions[{i}].endpoints[{j}]: subscription {s.name!r}: endpoint "
                                  f"{endpoint!r} is bound by subscription {bound[endpoint]!r} too (one can bind it)")
    destinations = [_destination(d, environ) for d in top.items("destinations")]
    if not destinations:
        raise ConfigError(f"{source}: destinations: declare at least one InfluxDB destination")
    dnames = [d.name for d in destinations]
    if len(set(dnames)) != len(dnames):
        raise ConfigError(f"{source}: destinations: names must be unique, got {dnames}")
    cache = None
    c = top.child("cache", None)
    if c is not None:
        cache = CacheSpec(c.get("url", str), c.get("username", str, None),
                          _secret(c, "STATION_BRIDGE_CACHE_PASSWORD", environ), max(1, round(c.duration("ttl", 3600))),
                          c.get("key_prefix", str, "latest"), c.positive("queue_max", int, 1000),
                          c.duration("timeout", 2.0), c.duration("min_interval", 0.05, positive=False))
        if cache.min_interval < 0:
            raise c.fail("min_interval", f"must not be negative, got {cache.min_interval!r}")
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
    dead_record_max = dl.size("max_record_bytes", "24MiB")
    if dead_record_max < 4096:
        raise dl.fail("max_record_bytes", f"{dead_record_max} is below the minimum of 4096 bytes")
    dl.done()
    h = top.child("http", {}) or _Reader({}, "http", source)
    # Absent or null: the default address; "" turns the endpoint off.
    listen = h.get("listen", str, DEFAULT_LISTEN)
    max_connections = h.positive("max_connections", int, 16)
    http_timeout = h.duration("timeout", 5.0)
    h.done()
    hh = top.child("health", {}) or _Reader({}, "health", source)
    health = HealthSpec(hh.duration("destination_grace", 60.0), hh.duration("subscription_grace", 60.0),
                        hh.duration("probe_interval", 10.0), hh.duration("rejection_window", 60.0),
                        hh.get("max_rejected_share", (int, float), 0.95),
                        hh.positive("rejection_min_messages", int, 20), hh.duration("handshake_grace", 10.0),
                        max_refused_share=hh.get("max_refused_share", (int, float), 0.1))
    if not 0 < health.max_refused_share <= 1:
        raise hh.fail("max_refused_share", f"{health.max_refused_share!r} must be a share in (0, 1]")
    if not 0 < health.max_rejected_share <= 1:
        raise hh.fail("max_rejected_share", f"{health.max_rejected_share!r} must be a share in (0, 1]")
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
    validation = None
    v = top.child("validation", None)
    if v is not None:
        validation = ValidationSpec(v.get("endpoint", str))
        why = endpoint_error(validation.endpoint, True)
        if not why and validation.endpoint.endswith("*"):
            why = "needs a fixed address (the validation publisher connects to it)"
        if why:
            raise v.fail("endpoint", f"{validation.endpoint!r}: {why}")
        v.done()
        if validation.subscription in names:
            raise ConfigError(f"{source}: subscriptions: the name {validation.subscription!r} belongs to the bridge's "
                              f"validation subscription (`validation`): rename yours, or drop `validation`")
        taken = [s.name for s in subscriptions if validation.endpoint in s.endpoints]
        if taken:
            raise v.fail("endpoint", f"{validation.endpoint!r} is an endpoint of subscription {taken[0]!r} too: "
                         "validation never shares a feed's endpoint")
        subscriptions.append(_subscription(
            _Reader(validation.subscription_config(self_metrics.instance if self_metrics else None),
                    "validation", source), station))
    mem = top.child("memory", {}) or _Reader({}, "memory", source)
    budget_given = mem.get("budget_bytes", (str, int), None)
    memory = MemorySpec(None if budget_given is None else mem.size("budget_bytes", 0),
                        mem.get("limit_fraction", float, 0.5))
    if not 0 < memory.limit_fraction <= 1:
        raise mem.fail("limit_fraction", f"{memory.limit_fraction} must be in (0, 1]")
    if memory.budget_bytes is not None and memory.budget_bytes <= 0:
        raise mem.fail("budget_bytes", "must be positive")
    mem.done()
    config = Config(
        source=source, station=station, subscriptions=subscriptions,
        destinations=destinations, cache=cache, journal_dir=journal_dir, journal_max_bytes=journal_max,
        journal_write_ahead=write_ahead,
        dead_letter_dir=dead_dir, http_listen=listen or None,
        shutdown_timeout=top.duration("shutdown_timeout", 20.0), log_level=level, log_rate_per_s=rate,
        self_metrics=self_metrics, validation=validation, journal_min_free_bytes=min_free,
        ledger_interval=ledger_interval,
        dead_letter_max_bytes=dead_max, dead_letter_max_record_bytes=dead_record_max,
        http_max_connections=max_connections, http_timeout=http_timeout,
        health=health, uniqueness=uniqueness, raw=data or {},
        fast_path=_auto_off(top, "fast_path"),
        receive_threads=_auto_off(top, "receive_threads", ("auto", "on", "off")), memory=memory,
    )
    top.done()
    return config


def _auto_off(top: _Reader, key: str, choices: tuple[str, ...] = ("auto", "off")) -> str:
    """`fast_path` (`auto | off`) or `receive_threads` (`auto | on | off`); YAML 1.1 reads a bare
    off/false as False and on/true as True (`on` where it is a choice, else `auto`)."""
    value = top.get(key, (str, bool), "auto")
    if isinstance(value, bool):
        return ("on" if "on" in choices else "auto") if value else "off"
    if value not in choices:
        raise top.fail(key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Reads a YAML file, or TOML when the name ends in .toml (the same keys either way); secrets
    from `environ` (default: the process's environment)."""
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
    return parse(data, str(path), environ)
