"""Mapping: a decoded record -> one line of line protocol, compiled once per subscription.

The hot path avoids per-point dictionaries: tag and field keys are escaped at start,
formatters are chosen at start, and a point is built as one string.
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
        # Fast path tables: prefixes pre-escaped, kinds as small ints, escaped tag values cached.
        self._fast_tags = [(key, f",{ekey}=") for key, ekey in self._tags] if not self._derived else None
        kinds = {"float": 0, "integer": 1}
        self._fast_fields = [(key, f"{ekey}=", kinds.get(kind, 2), fmt)
                             for (key, ekey, fmt), kind in zip(self._fields, m.fields.values(), strict=True)]
        self._epoch_scale = {"epoch_s": 1_000_000_000, "epoch_ms": 1_000_000, "epoch_us": 1_000,
                             "epoch_ns": 1}.get(m.time.format)
        self._tag_cache: dict[object, str] = {}
        self._clock = ReceiveClock()
        self._last: dict[str, tuple[int, int]] = {}
        self.timestamp_fallbacks = 0

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
        cached = self._tag_cache.get(value)
        if cached is None:
            cached = escape_key(_tag_text(value), "tag value")
            if len(self._tag_cache) < 100_000:  # bounded: tag cardinality is small in practice
                self._tag_cache[value] = cached
        return cached

    def line(self, topic: str, record: dict) -> str:
        """The point as one line; raises MapError/LineError with a counter reason.

        The common shape (fixed measurement, plain tags, float/integer fields, epoch time)
        runs inline here; anything else takes the general path in _line.
        """
        if self._fast_tags is None or self._fixed is None or self._from != "fixed":
            return self._line(topic, record)
        series = self._fixed
        try:
            for key, prefix in self._fast_tags:
                value = record.get(key)
                if value is not None and value != "":
                    series += prefix + self._escaped_tag(value)
        except TypeError:  # unhashable tag value: let the general path name the reason
            return self._line(topic, record)
        series += self._static
        parts = []
        for key, prefix, kind, fmt in self._fast_fields:
            value = record.get(key)
            if value is None:
                continue
            vtype = type(value)
            if kind == 0 and vtype is float and value - value == 0.0:
                parts.append(prefix + repr(value))
            elif kind == 1 and vtype is int and -9223372036854775808 <= value <= 9223372036854775807:
                parts.append(f"{prefix}{value}i")
            else:
                parts.append(prefix + fmt(value))
        if not parts:
            raise MapError("missing_field", f"none of the declared fields {[f[0] for f in self._fields]} is present")
        scale = self._epoch_scale
        stamp = record.get(self._time_field) if self._time_field else None
        if scale is not None and (type(stamp) is float or type(stamp) is int):
            ts = round(stamp * scale) if type(stamp) is float else stamp * scale
        else:
            ts = self._time(record)
        last = self._last.get(series)
        if last is not None and ts == last[0]:
            assigned = last[1] + 1
            self._last[series] = (ts, assigned)
            ts = assigned
        else:
            self._last[series] = (ts, ts)
        return f"{series} {','.join(parts)} {ts}"

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
