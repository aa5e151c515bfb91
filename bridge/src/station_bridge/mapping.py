"""Mapping: a decoded record -> one line of line protocol, compiled once per subscription.

Two paths that must agree (tests/test_mapping.py checks them against each other on generated
records):
- the general path (`Mapper._map`) handles every configuration and names the reason of every
  refusal (MapError/LineError with a counter reason);
- the compiled fast path (`_compile`) covers the common shape (fixed measurement, configured
  and static tags, declared fields, epoch or receive time) as one generated straight-line
  function per subscription; anything unusual in a record falls back to the general path.

Both build the series key themselves by `lineproto`'s rules (escaped, tags sorted by key), as does
the C path (_fastpath.c): tests/test_mapping.py holds both to `lineproto.series_key`, the
fastpath tests the C path's lines to theirs. Both take the point's time through `Uniqueness`,
which is shared by every subscription of a bridge.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import struct
import time
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from .config import SubscriptionSpec
from .lineproto import (
    INT64_MAX,
    INT64_MIN,
    MAX_KEY_BYTES,
    MAX_TIME,
    MIN_TIME,
    LineError,
    check_key_length,
    escape_field_key,
    escape_measurement,
    escape_tag,
    format_field_value,
)
from .paths import PathError, TopicCapture
from .textcache import TextCache
from .timestamps import MAX_NS, MIN_NS, ReceiveClock, TimestampError, parser

# Keys of a row (see Mapper._rows) for values that are not tags or fields: tuples, so that they
# never meet a tag or field name.
_TIME: tuple = ("time",)
_MEASUREMENT: tuple = ("measurement",)


class MapError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(slots=True)
class Point:
    """A mapped point, for consumers that need more than the line (binning)."""

    measurement: str  # raw
    series: str  # the series key: escaped measurement + sorted escaped tags
    tags: dict[str, str]  # raw
    fields: dict[str, object]
    time_ns: int
    line: str

    @property
    def tag_part(self) -> str:
        """The escaped `,key=value...` part of the series (empty without tags)."""
        return self.series[len(escape_measurement(self.measurement)):]


LONG_SERIES = 256  # characters: the uniqueness window remembers a longer series key by its digest


def series_handle(series: str) -> str:
    """The key the uniqueness window remembers a series by: the series key itself, or for a long
    one (a feed's tags make keys of up to 64 KiB, and the window holds 20,000 series) `#` and a
    128-bit digest of it: no series key starts with `#` (InfluxDB reads such a line as a comment)."""
    if len(series) <= LONG_SERIES:
        return series
    return "#" + hashlib.blake2b(series.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class Uniqueness:
    """Points of one series never share a timestamp, so InfluxDB never overwrites one silently.

    Rule: a point keeps its time unless another point of the same series already used it; then
    it takes the next nanosecond no point of the series used (t+1, t+2, ...). A source time seen
    again continues where its own run of nudges ended (`runs`), so a burst of equal times costs
    O(1) per point and interleaved runs of several repeated times never meet.
    Memory is bounded: per series, the `window` highest times used (a sorted array) and the last
    `window` source times that needed a nudge with the end of their run; at most `max_series`
    series (two generations: a series not seen for `max_series / 2` new series is forgotten,
    counted in `evicted`). A point older than its series' whole window whose time was never
    nudged cannot be checked: it keeps its time and is counted (`unchecked`). The window
    survives restarts: `dump` is saved with every ledger write (window.py), `restore` reads it back
    at start and `remember` adds the times of every point still on disk (see the README). A
    series key longer than LONG_SERIES is kept as its digest (`series_handle`): what the window
    holds per series does not grow with the feed's tags (the inline paths, which look the full
    key up, then miss and call `claim`).
    """

    __slots__ = ("current", "evicted", "max_series", "nudged", "previous", "runs", "trim", "unchecked", "window")

    def __init__(self, window: int = 128, max_series: int = 20_000) -> None:
        self.window = window
        self.trim = window + 64
        self.max_series = max_series
        self.current: dict[str, array] = {}
        self.previous: dict[str, array] = {}
        self.runs: dict[str, dict[int, int]] = {}  # series -> {source time: last time its run took}
        self.nudged = self.unchecked = self.evicted = 0

    def claim(self, series: str, ts: int) -> int:
        """The time this point gets (the general path; the compiled one inlines the common case)."""
        if not MIN_TIME <= ts <= MAX_TIME:
            raise MapError("bad_timestamp", f"time {ts} is outside InfluxDB's range")
        if len(series) > LONG_SERIES:
            series = series_handle(series)
        times = self.current.get(series)
        if times is None:
            times = self._adopt(series, ts)
            if times is None:
                return ts
        runs = self.runs.get(series)
        run_end = runs.get(ts) if runs is not None else None
        candidate = ts if run_end is None else run_end + 1
        # A nudge beyond InfluxDB's last nanosecond is refused before the window takes it (the
        # window is int64: a time past it once made the next repeat raise OverflowError).
        if candidate > times[-1]:
            if candidate > MAX_TIME:
                raise MapError("bad_timestamp", f"time {ts} nudged to {candidate}, beyond InfluxDB's range")
            times.append(candidate)
        elif len(times) >= self.window and candidate < times[0]:
            if run_end is None:
                self.unchecked += 1  # older than everything the window remembers
                return candidate
            # The next of a repeated time's run that ended below the window: the run's own (runs
            # never meet), kept out of `times`, whose first time marks what is forgotten below
            # it (inserted there, the times forgotten between it and the window were given again).
        else:
            i = bisect.bisect_left(times, candidate)
            while i < len(times) and times[i] == candidate:
                candidate += 1
                i += 1
            if candidate > MAX_TIME:
                raise MapError("bad_timestamp", f"time {ts} nudged to {candidate}, beyond InfluxDB's range")
            times.insert(i, candidate)
        if len(times) > self.trim:
            del times[:len(times) - self.window]
        if candidate != ts:
            self.nudged += 1
            if runs is None:
                runs = self.runs[series] = {}
            elif run_end is not None:
                del runs[ts]  # re-inserted last: the most recently used run
            runs[ts] = candidate
            if len(runs) > self.window:
                del runs[next(iter(runs))]
        return candidate

    MAGIC = b"SBUQ2\n"  # with each series' runs of repeated source times
    MAGIC_V1 = b"SBUQ1\n"  # times only (read: files of older bridges)

    def dump(self) -> bytes:
        """The window (times per series, both generations) as bytes: magic, then per series
        (key length, count, runs, key, int64 times, then per run its source time and the last
        time the run took, int64), then a CRC32 of everything before it. Called from another
        thread than the mappers': each copy below is one C call under the GIL.

        The runs are saved because the times alone cannot say which source time a nudged time
        belongs to: a source time repeated more than `window` times (an each feed whose rows
        share one time, a level re-sent unchanged with its old time) kept only the run's newest
        `window` times, so after a restart the same source time fell below them and was given
        back unchecked, overwriting the run's first points in InfluxDB."""
        parts = [self.MAGIC]
        seen: set[str] = set()
        runs_by_series = self.runs
        for generation in (list(self.current.items()), list(self.previous.items())):
            for series, times in generation:
                if series in seen:
                    continue
                seen.add(series)
                key = series.encode("utf-8", "surrogatepass")
                raw = times.tobytes()
                runs = runs_by_series.get(series)
                pairs = array("q", [t for pair in list(runs.items()) for t in pair] if runs else ())
                parts.append(struct.pack("<III", len(key), len(raw) // 8, len(pairs) // 2))
                parts.append(key)
                parts.append(raw)
                parts.append(pairs.tobytes())
        body = b"".join(parts)
        return body + struct.pack("<I", zlib.crc32(body))

    def restore(self, blob: bytes) -> int:
        """Adds a `dump`'s window; the number of series. ValueError when it does not verify."""
        v1 = blob.startswith(self.MAGIC_V1)
        if len(blob) < len(self.MAGIC) + 4 or not (v1 or blob.startswith(self.MAGIC)):
            raise ValueError("not a uniqueness window file")
        body, (crc,) = blob[:-4], struct.unpack("<I", blob[-4:])
        if zlib.crc32(body) != crc:
            raise ValueError("checksum mismatch")
        header = 8 if v1 else 12
        pos, series = len(self.MAGIC), 0
        while pos < len(body):
            if pos + header > len(body):  # a header cut short (a file that verifies but save() never wrote)
                raise ValueError(f"a series header cut short at byte {pos}")
            size, count = struct.unpack_from("<II", body, pos)
            nruns = 0 if v1 else struct.unpack_from("<I", body, pos + 8)[0]
            pos += header
            if pos + size + 8 * count + 16 * nruns > len(body):
                raise ValueError(f"a series at byte {pos - header} runs past the end of the file")
            key = body[pos:pos + size].decode("utf-8", "surrogatepass")
            pos += size
            times = array("q")
            times.frombytes(body[pos:pos + 8 * count])
            pos += 8 * count
            for ts in times:
                self.remember(key, ts)
            if nruns:
                pairs = array("q")
                pairs.frombytes(body[pos:pos + 16 * nruns])
                runs = self.runs.setdefault(key, {})
                for source, last in zip(pairs[::2], pairs[1::2], strict=True):
                    if last > runs.get(source, last - 1):
                        runs.pop(source, None)
                        runs[source] = last  # the most recently used run last, as claim keeps them
                while len(runs) > self.window:
                    del runs[next(iter(runs))]
            pos += 16 * nruns
            series += 1
        return series

    def remember(self, series: str, ts: int) -> None:
        """A time a point of the series already holds (stored, or pending on disk): used, never
        given again. No nudge, nothing counted."""
        if len(series) > LONG_SERIES:
            series = series_handle(series)
        times = self.current.get(series)
        if times is None:
            times = self._adopt(series, ts)
            if times is None:
                return
        i = bisect.bisect_left(times, ts)
        if i < len(times) and times[i] == ts:
            return
        times.insert(i, ts)
        if len(times) > self.trim:
            del times[:len(times) - self.window]

    def _adopt(self, series: str, ts: int) -> array | None:
        """A series not in the current half: its times from the previous half (moved back), or,
        new, a window holding only `ts` (then None: nothing more to do)."""
        times = self.previous.pop(series, None)
        if times is None:
            if len(self.current) >= self.max_series // 2:
                self._rotate()
            self.current[series] = array("q", (ts,))
            return None
        self.current[series] = times
        return times

    def _rotate(self) -> None:
        # In place: the compiled mappers hold a reference to `current`.
        self.evicted += len(self.previous)
        self.previous = self.current.copy()
        self.current.clear()
        self.runs = {k: v for k, v in self.runs.items() if k in self.previous}


def _tag_text(value: object) -> str:
    """A tag value (or a measurement from data) as text: strings as they are, integers in
    decimal, booleans as InfluxDB and JSON spell them (`true`, `false`: Python's `True` was
    stored before), finite floats as their shortest repr; NaN and infinities are refused
    (`non_finite`, as for fields and times: they were stored as the tag `nan`, `inf`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MapError("invalid_utf8", "tag value is not UTF-8") from exc
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value - value != 0.0:  # NaN and both infinities
            raise MapError("non_finite", f"{value!r} cannot be a tag value")
        return repr(value)
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError as exc:  # beyond Python's 4300-digit conversion limit
            raise MapError("integer_overflow", "integer tag value too long to write as text") from exc
    if isinstance(value, dict | list | tuple):
        raise MapError("nested_value", f"a {type(value).__name__} where a tag value is expected")
    raise MapError("wrong_type", f"tag value of type {type(value).__name__} is not a scalar")


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
            if type(value) is int and INT64_MIN <= value <= INT64_MAX:
                return f"{value}i"
            return format_field_value(value, "integer")
        return integer
    return lambda value: format_field_value(value, kind)


class Mapper:
    # Float epoch times are converted exactly (timestamps.float_to_ns, inlined in _compile): the
    # compiled hot path (fastpath.py) must do the same.
    exact_times = True

    def __init__(self, spec: SubscriptionSpec, station: str | None = None,
                 uniqueness: Uniqueness | None = None, *, general: bool = False,
                 clock: Callable[[], int] | None = None, now: Callable[[], int] | None = None) -> None:
        """`general`: map through the path set (`lines`) even when the mapping is flat (tests
        compare both paths on flat mappings). `clock`: the receive time (default: now,
        strictly increasing); replay and `try` give the time a message was received. `now`: what
        the time window (mapping.time.accept_ahead/behind) is measured from (default: the wall
        clock; replay and `try`: the message's recorded receive time)."""
        m = spec.mapping
        self.name = spec.name
        self.unique = uniqueness or Uniqueness()
        self.paths = m.compile(spec.name)
        # Flat mappings (today's shape) keep the generated fast path; every other mapping (each,
        # topic tags, paths) maps rows of the compiled path set through the same series builder.
        self.multi = general or not m.is_flat
        self._topic = TopicCapture(m.topic_tag, m.topic_regex) if (m.topic_tag or m.topic_regex) else None
        self._from = m.measurement_from
        self._fixed = escape_measurement(m.measurement) if m.measurement and self._from == "fixed" else None
        self._measurement_raw = m.measurement
        self._table = {topic: (name, escape_measurement(name)) for topic, name in m.measurements.items()}
        self._names: TextCache[str] = TextCache(10_000)  # measurement taken from data -> escaped
        static = dict(m.static_tags)
        if station:
            static.setdefault("station", station)
        self._static_tags = dict(sorted(static.items()))
        self._static = [(k, f",{escape_tag(k, 'tag key')}={escape_tag(v)}") for k, v in self._static_tags.items()]
        self._fields = [(key, escape_field_key(key), _formatter(kind)) for key, kind in m.fields.items()]
        self.field_names = [key for key, _, _ in self._fields]
        self._longest_field = max(len(k.encode("utf-8")) for k in self.field_names)
        # A series this long (in characters) may exceed InfluxDB's key limit in bytes: check it.
        self._key_check_chars = (MAX_KEY_BYTES - 4 - self._longest_field) // 4
        self._parse_time = parser(m.time.format, m.time.timezone)
        # The window around the receive time a source time must fall in (ns; None: unbounded).
        self.ahead_ns = None if m.time.accept_ahead is None else round(m.time.accept_ahead * 1e9)
        self.behind_ns = None if m.time.accept_behind is None else round(m.time.accept_behind * 1e9)
        self._windowed = self.ahead_ns is not None or self.behind_ns is not None
        # What the window is measured from: now (the receive time), or a re-map's recorded one.
        self.window_now = now or time.time_ns
        self._tag_cache: TextCache[str] = TextCache(100_000)  # tag text -> escaped (bounded by bytes)
        self._clock = clock or ReceiveClock()
        self.timestamp_fallbacks = 0
        time_path = m.time.value_path
        groups = [(d.regex, [(g, escape_tag(g, "tag key")) for g in d.regex.groupindex]) for d in m.derived_tags]
        if not self.multi:
            # The record itself is the row: every source is one top-level key.
            self._measurement_field: object = (m.measurement_path.flat_key if m.measurement_path is not None
                                               else m.measurement_field)
            tag_names = list(m.tags)
            self._derived = [(d.value_path.flat_key, regex, g) for d, (regex, g) in zip(m.derived_tags, groups,
                                                                                        strict=True)]
            self._time_field: object = time_path.flat_key if time_path is not None else None
            self._plan: list[tuple[object, int]] = []
            self._row_keys: tuple = ()
        else:
            # A row: {tag or field name: value, capture name: text, _TIME: .., _MEASUREMENT: ..,
            # ("derived", i): ..}, built from PathSet.rows by `_plan` (row key, column).
            self._measurement_field = _MEASUREMENT if m.measurement_from == "field" else None
            tag_names = [*m.tags, *m.captures, *m.topic_tags]
            self._derived = [(("derived", i), regex, g) for i, (regex, g) in enumerate(groups)]
            self._time_field = _TIME if time_path is not None else None
            keys: list[object] = []
            for source in m.sources():
                if source.startswith("mapping.tags."):
                    keys.append(source[len("mapping.tags."):])
                elif source.startswith("mapping.fields."):
                    keys.append(source[len("mapping.fields."):])
                elif source.startswith("mapping.derived_tags["):
                    keys.append(("derived", int(source[len("mapping.derived_tags["):-1])))
                elif source == "mapping.time":
                    keys.append(_TIME)
                else:
                    keys.append(_MEASUREMENT)
            keys += list(m.captures)
            self._plan = list(zip(keys, range(len(keys)), strict=True))
            self._row_keys = tuple(keys)
        self._tags = [(key, escape_tag(key, "tag key")) for key in sorted(tag_names)]
        # With `each`, the fields read from the element: an element with none of them (an empty
        # level `[]`) would make a point of the message-level fields alone, a ghost: refused.
        self._max_bytes = m.max_bytes  # with each: the bytes one message's points may hold
        self._element_fields = [name for name, path in ((n, m.field_paths.get(n)) for n in m.fields)
                                if path is None or not path.root] if m.each is not None else []
        # Configured tags must be present unless optional or defaulted; captured and topic tags
        # are structural (a capture always has its text; a topic group that did not take part is
        # left out).
        derived_names = [g for d in m.derived_tags for g in d.regex.groupindex]
        self._required = {key for key in [*m.tags, *derived_names]
                          if key not in m.optional_tags and key not in m.tag_defaults}
        self._defaults = dict(m.tag_defaults)
        self.optional_tags = frozenset(k for k in tag_names if k not in self._required and k not in self._defaults)
        self._measurement_label = str(m.measurement_path) if m.measurement_path is not None else m.measurement_field
        scale = {"epoch_s": 1_000_000_000, "epoch_ms": 1_000_000, "epoch_us": 1_000}.get(m.time.format)
        simple = self._fixed is not None and not self._derived and not self.multi
        self._compiled = _compile(self, m.fields, scale) if simple else None
        # Flat: the record's keys are the tags and fields themselves, and the mapping has the
        # compiled path's shape; only then may the compiled hot path (fastpath.py) stand in for it.
        self.flat = self._compiled is not None
        self.line = self._compiled[0] if self._compiled else self._line  # type: ignore[method-assign]
        self.keyed_line = self._compiled[1] if self._compiled else self._keyed_line  # type: ignore[method-assign]
        if self.multi:  # one point per message expected: `lines` is the general interface
            self.line = lambda topic, record: self._one(topic, record)[0]  # type: ignore[method-assign]
            self.keyed_line = lambda topic, record: self._one(topic, record)[:3]  # type: ignore[method-assign]

    # --- general path ---------------------------------------------------------------------------

    def _measurement(self, topic: str, record: dict) -> tuple[str, str]:
        """(raw, escaped)."""
        if self._fixed is not None:
            return self._measurement_raw, self._fixed  # type: ignore[return-value]
        if self._from == "topic":
            if self._table:
                found = self._table.get(topic)
                if found is None:
                    raise MapError("unknown_topic", f"topic {topic[:80]!r} has no measurement in `measurements`")
                return found
            raw = topic
        else:
            value = record.get(self._measurement_field)  # type: ignore[arg-type]
            if value is None:
                raise MapError("missing_field", f"measurement field {self._measurement_label!r} is missing")
            raw = _tag_text(value)
        escaped = self._names.get(raw)
        if escaped is None:
            escaped = escape_measurement(raw)
            self._names.put(raw, escaped)
        return raw, escaped

    def _time(self, record: dict) -> int:
        if self._time_field is None:
            return self._clock()
        value = record.get(self._time_field)
        if value is None:
            self.timestamp_fallbacks += 1
            return self._clock()
        try:
            ts = self._parse_time(value)
        except (TimestampError, ValueError, OverflowError, TypeError) as exc:
            raise MapError("bad_timestamp", str(exc)[:300]) from exc
        if self._windowed:
            self.check_window(ts)
        return ts

    def check_window(self, ts: int) -> None:
        """Refuses (bad_timestamp) a source time outside the accepted window around now."""
        now = self.window_now()
        if self.ahead_ns is not None and ts - now > self.ahead_ns:
            raise MapError("bad_timestamp", f"time {ts} is {(ts - now) / 3.6e12:.1f} h ahead of the receive time "
                                            f"(mapping.time.accept_ahead: {self.ahead_ns / 3.6e12:g} h)")
        if self.behind_ns is not None and now - ts > self.behind_ns:
            raise MapError("bad_timestamp", f"time {ts} is {(now - ts) / 3.6e12:.1f} h behind the receive time "
                                            f"(mapping.time.accept_behind: {self.behind_ns / 3.6e12:g} h)")

    def _tag_pairs(self, record: dict) -> list[tuple[str, str, str]]:
        """(raw key, raw value, `,ekey=evalue`) for every tag of the record, sorted by key."""
        pairs = []
        for key, ekey in self._tags:
            pair = self._tag_pair(key, ekey, record.get(key))
            if pair is not None:
                pairs.append(pair)
        for source, regex, groups in self._derived:
            pairs += self._derived_pairs(regex, groups, record.get(source))
        pairs += [(k, self._static_tags[k], part) for k, part in self._static]
        pairs.sort(key=lambda p: p[0])
        return pairs

    def _tag_pair(self, key: str, ekey: str, value: object) -> tuple[str, str, str] | None:
        """One configured (or captured, or topic) tag: (key, text, `,ekey=evalue`), None when it
        is left out; raises MapError/LineError. The compiled hot path (fastpath.py) calls this
        same rule for topic tags."""
        text = _tag_text(value) if value is not None else ""
        if text == "":  # absent or empty (InfluxDB stores no empty tag value)
            text = self._defaults.get(key, "")
            if text == "":
                if key in self._required:
                    raise MapError("missing_field", f"tag {key!r} is {'empty' if value is not None else 'absent'} "
                                                    "(a message without it would merge into another series; "
                                                    "optional_tags or tag_defaults allow it)")
                return None
        return key, text, f",{ekey}={self._escaped_tag(text)}"

    def _derived_pairs(self, regex: re.Pattern[str], groups: list[tuple[str, str]],
                       value: object) -> list[tuple[str, str, str]]:
        """The tags one derived_tags entry makes of its source's value (None: absent), in group
        order; raises MapError/LineError. The compiled hot path (fastpath.py) calls this same
        rule, once per distinct source text."""
        # A derived tag follows the configured tags' rule: a group with no text (its source
        # absent, a value the regex does not match, a group that did not take part) takes its
        # tag_defaults value, is left out when optional_tags lists it, else refuses the message
        # (missing_field): left out silently, it would merge into another series.
        pairs = []
        match = regex.match(_tag_text(value)) if value is not None else None
        for group, egroup in groups:
            text = match.group(group) if match is not None else None
            if not text:
                text = self._defaults.get(group, "")
                if text == "":
                    if group in self._required:
                        why = ("its source is absent" if value is None else
                               f"{_tag_text(value)[:80]!r} does not match {regex.pattern[:80]!r}"
                               if match is None else f"group {group!r} matched nothing")
                        raise MapError("missing_field", f"derived tag {group!r}: {why} (a message without "
                                                        "it would merge into another series; optional_tags "
                                                        "or tag_defaults allow it)")
                    continue
            pairs.append((group, text, f",{egroup}={self._escaped_tag(text)}"))
        return pairs

    def _escaped_tag(self, value: object) -> str:
        """The escaped tag value; "" for an empty one (the tag is left out)."""
        # Only strings are cached: 0 == False == 0.0 share a dict key but not a rendering.
        if type(value) is not str:
            text = _tag_text(value)
            return escape_tag(text) if text else ""
        cached = self._tag_cache.get(value)
        if cached is None:
            cached = escape_tag(value) if value else ""
            self._tag_cache.put(value, cached)
        return cached

    def _prepare(self, topic: str, record: dict, values: dict | None = None) -> tuple[str, str, str, list, int]:
        """The series builder: (raw measurement, series, escaped fields part, tag pairs, source
        time) of one record or row; every refusal raises MapError/LineError with a reason."""
        raw, emeasurement = self._measurement(topic, record)
        pairs = self._tag_pairs(record)
        series = emeasurement + "".join(p[2] for p in pairs)
        if len(series) > self._key_check_chars:
            check_key_length(series, self._longest_field)
        parts = []
        for key, ekey, fmt in self._fields:
            value = record.get(key)
            if value is not None:
                parts.append(f"{ekey}={fmt(value)}")
                if values is not None:
                    values[key] = value
        if not parts:
            raise MapError("missing_field", f"none of the declared fields {self.field_names} is present")
        return raw, series, ",".join(parts), pairs, self._time(record)

    def _map(self, topic: str, record: dict, values: dict | None = None) -> tuple[str, str, list, int]:
        """(line, series, tag pairs, time): every refusal raises MapError/LineError with a reason."""
        _, series, fields, pairs, ts = self._prepare(topic, record, values)
        ts = self.unique.claim(series, ts)
        return f"{series} {fields} {ts}", series, pairs, ts

    # --- rows: paths, explosions, topic tags --------------------------------------------------

    def _rows(self, topic: str, record: dict) -> list[dict]:
        """The record as rows (one per point): the compiled paths' values keyed as the series
        builder reads them, plus the topic's tags. Raises MapError."""
        try:
            topic_tags = self._topic(topic) if self._topic is not None else ()
            rows = self.paths.rows(record)
        except PathError as exc:
            raise MapError(exc.reason, str(exc)) from None
        keys = self._row_keys
        out = []
        for row in rows:
            values = dict(zip(keys, row, strict=True))
            if topic_tags:
                values.update(topic_tags)
            out.append(values)
        return out

    def _map_rows(self, topic: str, record: dict) -> list[tuple[str, str, int, dict, str, list]]:
        """Every point of a message: (line, series, time, row, raw measurement, tag pairs).
        Atomic: every row is built before any time is claimed, so a refused message leaves
        nothing behind in Uniqueness."""
        rows = self._rows(topic, record)
        element = self._element_fields
        if element:
            for i, row in enumerate(rows):
                if all(row.get(name) is None for name in element):
                    raise MapError("missing_field", f"element {i} of each has none of the fields read from it "
                                                    f"({', '.join(element)}): an empty element makes no point")
        built = []
        size, limit = 0, self._max_bytes
        for row in rows:
            made = (row, *self._prepare(topic, row))
            # mapping.max_bytes, counted as the rows are built (before any claim): a row's line
            # is its series, fields, two separators and a time (at most 20 characters). The
            # compiled path hands back a message whose rows hold more than this in its buffers.
            size += len(made[2]) + len(made[3]) + 22
            if size > limit:
                raise MapError("too_many_points", f"the points of this message hold more than {limit} bytes "
                                                  f"(after {len(built) + 1} of {len(rows)}; mapping.max_bytes)")
            built.append(made)
        claim = self.unique.claim
        out = []
        for row, raw, series, fields, pairs, ts in built:
            ts = claim(series, ts)
            out.append((f"{series} {fields} {ts}", series, ts, row, raw, pairs))
        return out

    def _one(self, topic: str, record: dict) -> tuple[str, str, int, dict, str, list]:
        points = self._map_rows(topic, record)
        if len(points) != 1:
            raise MapError("too_many_points", f"{len(points)} points where one was expected (use Mapper.lines)")
        return points[0]

    def lines(self, topic: str, record: dict) -> list[str]:
        """The message's points as lines (one for a flat mapping); raises MapError/LineError."""
        if not self.multi:
            return [self.line(topic, record)]
        return [p[0] for p in self._map_rows(topic, record)]

    def keyed_lines(self, topic: str, record: dict) -> list[tuple[str, str, int, dict]]:
        """(line, series, time, values by field name) per point: what the cache keys the
        newest value by."""
        if not self.multi:
            line, series, ts = self.keyed_line(topic, record)
            return [(line, series, ts, record)]
        return [p[:4] for p in self._map_rows(topic, record)]

    def points(self, topic: str, record: dict) -> list[Point]:
        if not self.multi:
            return [self.point(topic, record)]
        out = []
        for line, series, ts, row, raw, pairs in self._map_rows(topic, record):
            values = {k: row[k] for k in self.field_names if row.get(k) is not None}
            out.append(Point(raw, series, {k: v for k, v, _ in pairs}, values, ts, line))
        return out

    def _line(self, topic: str, record: dict) -> str:
        return self._map(topic, record)[0]

    def _keyed_line(self, topic: str, record: dict) -> tuple[str, str, int]:
        line, series, _, ts = self._map(topic, record)
        return line, series, ts

    def line(self, topic: str, record: dict) -> str:  # replaced per instance in __init__
        """The point as one line; raises MapError/LineError with a counter reason."""
        return self._line(topic, record)

    def keyed_line(self, topic: str, record: dict) -> tuple[str, str, int]:  # replaced in __init__
        """(line, series, time): the line and what the cache keys the newest value by."""
        return self._keyed_line(topic, record)

    def point(self, topic: str, record: dict) -> Point:
        if self.multi:
            line, series, ts, row, raw, pairs = self._one(topic, record)
            values = {k: row[k] for k in self.field_names if row.get(k) is not None}
            return Point(raw, series, {k: v for k, v, _ in pairs}, values, ts, line)
        values: dict[str, object] = {}
        raw, _ = self._measurement(topic, record)
        line, series, pairs, ts = self._map(topic, record, values)
        return Point(raw, series, {k: v for k, v, _ in pairs}, values, ts, line)


class _Absent(Exception):
    """A required or defaulted tag is absent: the generated path hands the record to the general one."""


def _compile(mapper: Mapper, fields: dict[str, str], scale: int | None) -> tuple[Callable, Callable]:
    """The common shape (fixed measurement, configured and static tags, declared fields, epoch
    or receive time) as one straight-line function per subscription, generated at start: no
    loops, no per-point dictionaries. Anything unusual in a record takes the general path
    (Mapper._line), which names the reason; tests/test_stages.py checks both paths agree.
    Tags are emitted in key order (configured and static interleaved), as the series key wants.
    Only generated names appear in the source: keys and prefixes are bound as constants.
    """
    unique = mapper.unique
    env: dict[str, object] = {
        "FIXED": mapper._fixed, "SCALE": scale, "CUR": unique.current, "UNIQUE": unique,
        "esc": mapper._escaped_tag, "slow": mapper._line, "slow_keyed": mapper._keyed_line,
        "slow_time": mapper._time, "MapError": MapError, "LO": INT64_MIN, "HI": INT64_MAX, "Absent": _Absent,
        "TMAX": MAX_TIME, "TRIM": unique.trim, "WINDOW": unique.window,
        "KEYCHK": mapper._key_check_chars, "check_key": check_key_length,
        "LONGEST": mapper._longest_field,
        "MISSING": f"none of the declared fields {list(fields)} is present", "TIME": mapper._time_field,
    }
    tags = [("record", i, key, ekey) for i, (key, ekey) in enumerate(mapper._tags)]
    tags += [("static", i, key, part) for i, (key, part) in enumerate(mapper._static)]
    tags.sort(key=lambda t: t[2])
    head = ["series = FIXED"]
    for source, i, key, ekey_or_part in tags:
        if source == "record":
            env[f"T{i}"], env[f"TP{i}"] = key, f",{ekey_or_part}="
            head += [f"v = get(T{i})", "if v is not None:", "    e = esc(v)", "    if e:",
                     f"        series += TP{i} + e"]
            if key not in mapper.optional_tags:  # absent or empty: the general path defaults or refuses it
                head += ["    else:", "        raise Absent", "else:", "    raise Absent"]
        else:
            env[f"S{i}"] = ekey_or_part
            head += [f"series += S{i}"]
    body = ["if len(series) > KEYCHK:", "    check_key(series, LONGEST)", "f = ''"]
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
    if mapper._time_field is None or scale is None:
        body += ["ts = slow_time(record)"]
    else:
        # timestamps.float_to_ns inlined (exact: the float's own value, not a float product);
        # NaN, infinities, values outside InfluxDB's range and products within 0.0001 of a
        # half take the general path, which converts exactly or refuses as bad_timestamp.
        env.update(FSCALE=float(scale), LIMIT=9.2e18 / scale, MIN_NS=MIN_NS, MAX_NS=MAX_NS)
        body += ["s = get(TIME)", "if type(s) is float and -LIMIT < s < LIMIT:", "    i = int(s)",
                 "    p = (s - i) * FSCALE", "    q = round(p)",
                 "    ts = i * SCALE + q if -0.4999 < p - q < 0.4999 else slow_time(record)",
                 "elif type(s) is int:", "    ts = s * SCALE",
                 "    if not MIN_NS <= ts <= MAX_NS:", "        ts = slow_time(record)",
                 "else:", "    ts = slow_time(record)"]
    # Uniqueness (see Uniqueness): the common case, a time above everything the series used,
    # inline; everything else (new series, repeats, out of order, out of range) in claim().
    if mapper._windowed and mapper._time_field is not None and scale is not None:
        # the window around the receive time (slow_time checks it on the other branches)
        env.update(now_ns=mapper.window_now, AHEAD=mapper.ahead_ns if mapper.ahead_ns is not None else 2**64,
                   BEHIND=mapper.behind_ns if mapper.behind_ns is not None else 2**64, check_window=mapper.check_window)
        body += ["n = now_ns()", "if ts - n > AHEAD or n - ts > BEHIND:", "    check_window(ts)"]
    body += ["times = CUR.get(series)", "if times is not None and times[-1] < ts <= TMAX:",
             "    times.append(ts)", "    if len(times) > TRIM:", "        del times[:len(times) - WINDOW]",
             "else:", "    ts = UNIQUE.claim(series, ts)"]

    def function(name: str, fallback: str, result: str) -> list[str]:
        # Tag values that are not strings are formatted, not cached; a TypeError here (a value
        # that neither path expects, e.g. an unhashable one) takes the general path.
        return [f"def {name}(topic, record):", "    get = record.get", "    try:",
                *[f"        {line}" for line in head],
                "    except (TypeError, Absent):", f"        return {fallback}(topic, record)",
                *[f"    {line}" for line in body],
                f"    return {result}"]

    source = "\n".join([*function("line", "slow", "f'{series} {f[1:]} {ts}'"), "",
                        *function("keyed", "slow_keyed", "(f'{series} {f[1:]} {ts}', series, ts)")])
    exec(compile(source, f"<mapping {mapper.name}>", "exec"), env)
    return env["line"], env["keyed"]  # type: ignore[return-value]
