"""Mapping: a decoded record -> one line of line protocol, compiled once per subscription.

Tag and field keys are escaped and formatters chosen at start. The common shape (fixed
measurement, plain tags, epoch times) runs as one generated straight-line function per
subscription (_compile); everything else, and every refusal's reason, takes the general path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import SubscriptionSpec
from .lineproto import LineError, escape_key, escape_measurement, format_field_value
from .timestamps import ReceiveClock, TimestampError, parser


class MapError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(slots=True)
class Point:
    """A mapped point, for consumers that need more than the line (cache, binning)."""

    measurement: str
    series: str  # escaped `measurement,tag=value,...`
    tags: dict[str, str]
    fields: dict[str, object]
    time_ns: int
    line: str


def _tag_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MapError("invalid_utf8", "tag value is not UTF-8") from exc
    if isinstance(value, bool | int | float):
        return str(value)
    raise MapError("wrong_type", f"tag value {value!r} is not a scalar")


def _fast_float(value: object) -> str:
    # float - float is 0.0 only for finite numbers: one check for NaN and both infinities.
    if type(value) is float:
        if value - value != 0.0:
            raise LineError("non_finite", f"{value!r} cannot be stored in InfluxDB")
        return repr(value)
    return format_field_value(value, "float")


def _formatter(kind: str) -> Callable[[object], str]:
    if kind == "float":
        return _fast_float
    if kind == "integer":
        def integer(value: object) -> str:
            if type(value) is int and -(2**63) <= value < 2**63:
                return f"{value}i"
            return format_field_value(value, "integer")
        return integer
    return lambda value: format_field_value(value, kind)


class Mapper:
    def __init__(self, spec: SubscriptionSpec, station: str | None = None) -> None:
        m = spec.mapping
        self.name = spec.name
        self._from = m.measurement_from
        self._fixed = escape_measurement(m.measurement) if m.measurement else None
        self._measurement_field = m.measurement_field
        self._table = {topic: escape_measurement(name) for topic, name in m.measurements.items()}
        self._tags = [(key, escape_key(key)) for key in sorted(m.tags)]
        static = dict(m.static_tags)
        if station:
            static.setdefault("station", station)
        self._static = "".join(f",{escape_key(k)}={escape_key(v, 'tag value')}" for k, v in sorted(static.items()))
        self._static_tags = static
        self._derived = [(d.source, d.regex, {g: escape_key(g) for g in d.regex.groupindex}) for d in m.derived_tags]
        self._fields = [(key, escape_key(key, "field"), _formatter(kind)) for key, kind in m.fields.items()]
        self._time_field = m.time.field
        self._parse_time = parser(m.time.format, m.time.timezone)
        self._tag_cache: dict[str, str] = {}
        self._clock = ReceiveClock()
        self._last: dict[str, tuple[int, int]] = {}
        self.timestamp_fallbacks = 0
        scale = {"epoch_s": 1_000_000_000, "epoch_ms": 1_000_000, "epoch_us": 1_000}.get(m.time.format)
        simple = self._fixed is not None and self._from == "fixed" and not self._derived
        self._compiled = _compile(self, m.fields, scale) if simple else None
        self.line = self._compiled[0] if self._compiled else self._line  # type: ignore[method-assign]
        self.keyed_line = self._compiled[1] if self._compiled else self._keyed_line  # type: ignore[method-assign]

    def _measurement(self, topic: str, record: dict) -> str:
        if self._fixed is not None and self._from == "fixed":
            return self._fixed
        if self._from == "topic":
            if self._table:
                name = self._table.get(topic)
                if name is None:
                    raise MapError("unknown_topic", f"topic {topic!r} has no measurement in `measurements`")
                return name
            return escape_measurement(topic)
        value = record.get(self._measurement_field)  # type: ignore[arg-type]
        if value is None:
            raise MapError("missing_field", f"measurement field {self._measurement_field!r} is missing")
        return escape_measurement(_tag_text(value))

    def _time(self, record: dict) -> int:
        if self._time_field is None:
            return self._clock()
        value = record.get(self._time_field)
        if value is None:
            self.timestamp_fallbacks += 1
            return self._clock()
        try:
            return self._parse_time(value)
        except (TimestampError, ValueError, OverflowError) as exc:
            raise MapError("bad_timestamp", str(exc)) from exc

    def _series(self, topic: str, record: dict, tags_out: dict[str, str] | None) -> str:
        series = self._measurement(topic, record)
        for key, ekey in self._tags:
            value = record.get(key)
            if value is None or value == "":
                continue
            text = _tag_text(value)
            series += f",{ekey}={escape_key(text, 'tag value')}"
            if tags_out is not None:
                tags_out[key] = text
        for source, regex, groups in self._derived:
            value = record.get(source)
            if value is None:
                continue
            match = regex.match(_tag_text(value))
            if match is None:
                continue
            for group, egroup in groups.items():
                text = match.group(group)
                if text:
                    series += f",{egroup}={escape_key(text, 'tag value')}"
                    if tags_out is not None:
                        tags_out[group] = text
        if tags_out is not None:
            tags_out.update(self._static_tags)
        return series + self._static

    def _unique(self, series: str, ts: int) -> int:
        # Same series, same timestamp would overwrite in InfluxDB: nudge by 1 ns, in order.
        last = self._last.get(series)
        if last is not None and ts == last[0]:
            assigned = last[1] + 1
            self._last[series] = (ts, assigned)
            return assigned
        self._last[series] = (ts, ts)
        return ts

    def _escaped_tag(self, value: object) -> str:
        # Only strings are cached: 0 == False == 0.0 share a dict key but not a rendering
        # (found by the differential test).
        if type(value) is not str:
            return escape_key(_tag_text(value), "tag value")
        cached = self._tag_cache.get(value)
        if cached is None:
            cached = escape_key(_tag_text(value), "tag value")
            if len(self._tag_cache) < 100_000:  # bounded: tag cardinality is small in practice
                self._tag_cache[value] = cached
        return cached

    def _line(self, topic: str, record: dict) -> str:
        series = self._series(topic, record, None)
        parts = []
        for key, ekey, fmt in self._fields:
            value = record.get(key)
            if value is not None:
                parts.append(f"{ekey}={fmt(value)}")
        if not parts:
            raise MapError("missing_field", f"none of the declared fields {[f[0] for f in self._fields]} is present")
        return f"{series} {','.join(parts)} {self._unique(series, self._time(record))}"

    def line(self, topic: str, record: dict) -> str:  # replaced per instance in __init__
        """The point as one line; raises MapError/LineError with a counter reason."""
        return self._line(topic, record)

    def keyed_line(self, topic: str, record: dict) -> tuple[str, str, int]:  # replaced in __init__
        """(line, series, time): the line and what the cache keys the newest value by."""
        return self._keyed_line(topic, record)

    def _keyed_line(self, topic: str, record: dict) -> tuple[str, str, int]:
        line = self._line(topic, record)
        series = self._series(topic, record, None)
        return line, series, int(line.rsplit(" ", 1)[1])

    def cached_point(self, topic: str, record: dict, series: str, time_ns: int) -> Point:
        """The Point of a line already made (same series and time), for the cache."""
        tags: dict[str, str] = {}
        self._series(topic, record, tags)
        values = {key: record[key] for key, _, _ in self._fields if record.get(key) is not None}
        return Point(series.split(",", 1)[0], series, tags, values, time_ns, "")

    def point(self, topic: str, record: dict) -> Point:
        tags: dict[str, str] = {}
        series = self._series(topic, record, tags)
        parts, values = [], {}
        for key, ekey, fmt in self._fields:
            value = record.get(key)
            if value is not None:
                parts.append(f"{ekey}={fmt(value)}")
                values[key] = value
        if not parts:
            raise MapError("missing_field", f"none of the declared fields {[f[0] for f in self._fields]} is present")
        ts = self._unique(series, self._time(record))
        measurement = series.split(",", 1)[0]
        return Point(measurement, series, tags, values, ts, f"{series} {','.join(parts)} {ts}")


_INT64 = (-(2**63), 2**63 - 1)


def _compile(mapper: Mapper, fields: dict[str, str], scale: int | None) -> tuple[Callable, Callable]:
    """The common shape (fixed measurement, plain tags, declared fields, epoch time) as one
    straight-line function per subscription, generated at start: no loops, no per-point
    dictionaries. Anything unusual in a record takes the general path (Mapper._line), which
    names the reason; tests/test_stages.py checks both paths agree on every input.
    Only generated names appear in the source: keys and prefixes are bound as constants.
    """
    env: dict[str, object] = {
        "FIXED": mapper._fixed, "STATIC": mapper._static, "SCALE": scale, "LAST": mapper._last,
        "esc": mapper._escaped_tag, "slow": mapper._line, "slow_keyed": mapper._keyed_line,
        "slow_time": mapper._time, "MapError": MapError, "LO": _INT64[0], "HI": _INT64[1],
        "MISSING": f"none of the declared fields {list(fields)} is present", "TIME": mapper._time_field,
    }
    body = ["series = FIXED"]
    for i, (key, ekey) in enumerate(mapper._tags):
        env[f"T{i}"], env[f"TP{i}"] = key, f",{ekey}="
        body += [f"v = get(T{i})", "if v is not None and v != '':", f"    series += TP{i} + esc(v)"]
    body += ["series += STATIC", "f = ''"]
    for i, ((key, ekey, fmt), kind) in enumerate(zip(mapper._fields, fields.values(), strict=True)):
        env[f"F{i}"], env[f"FP{i}"], env[f"FMT{i}"] = key, f",{ekey}=", fmt
        body += [f"v = get(F{i})", "if v is not None:"]
        if kind == "float":
            body += ["    if type(v) is float and v - v == 0.0:", f"        f += FP{i} + repr(v)",
                     "    else:", f"        f += FP{i} + FMT{i}(v)"]
        elif kind == "integer":
            body += ["    if type(v) is int and LO <= v <= HI:", f"        f += f'{{FP{i}}}{{v}}i'",
                     "    else:", f"        f += FP{i} + FMT{i}(v)"]
        else:
            body += [f"    f += FP{i} + FMT{i}(v)"]
    body += ["if not f:", "    raise MapError('missing_field', MISSING)"]
    if mapper._time_field is None:
        body += ["ts = slow_time(record)"]
    elif scale is not None:
        # A float product that is not finite (NaN, inf, or too large) takes the general path,
        # which refuses it as bad_timestamp.
        body += ["s = get(TIME)", "if type(s) is float:", "    x = s * SCALE",
                 "    ts = round(x) if x - x == 0.0 else slow_time(record)",
                 "elif type(s) is int:", "    ts = s * SCALE", "else:", "    ts = slow_time(record)"]
    else:
        body += ["ts = slow_time(record)"]
    # Same series, same timestamp would overwrite in InfluxDB: nudge by 1 ns, in order.
    body += ["last = LAST.get(series)", "if last is not None and ts == last[0]:", "    ts = last[1] + 1",
             "    LAST[series] = (last[0], ts)", "else:", "    LAST[series] = (ts, ts)"]

    def function(name: str, fallback: str, result: str) -> list[str]:
        # Tag values that are not strings are formatted, not cached; a TypeError here (a value
        # that neither path expects) takes the general path, which names the reason.
        return [f"def {name}(topic, record):", "    get = record.get", "    try:",
                *[f"        {line}" for line in body[:body.index("series += STATIC") + 1]],
                "    except TypeError:", f"        return {fallback}(topic, record)",
                *[f"    {line}" for line in body[body.index("series += STATIC") + 1:]],
                f"    return {result}"]

    source = "\n".join([*function("line", "slow", "f'{series} {f[1:]} {ts}'"), "",
                        *function("keyed", "slow_keyed", "(f'{series} {f[1:]} {ts}', series, ts)")])
    exec(compile(source, f"<mapping {mapper.name}>", "exec"), env)
    return env["line"], env["keyed"]  # type: ignore[return-value]
