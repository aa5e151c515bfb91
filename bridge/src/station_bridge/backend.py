"""What a destination's backend keeps of a point, made explicit before anything is sent.

InfluxDB 1.x keeps every field type and nanosecond times. VictoriaMetrics' `/influx/write`
(measured against Debian's victoria-metrics 1.79, tests/test_backend.py) turns every field into a
float64 sample `<measurement>_<field>`: a string field is stored as 0 (a numeric-looking string
such as "3.5" as that number), booleans as 1 and 0, integers as floats (exact up to 2**53),
floats rounded to about 12 significant decimal digits (it stores decimals; not counted), and
times are cut to milliseconds (two points of one series in one millisecond become one sample).

Per destination, so that nothing is changed silently on the way:
- `numeric_only: true` removes string fields from each point before it is queued and counts them
  (`bridge_dropped_fields_total{reason="non_numeric"}`); a point left without a field is dropped
  whole (`bridge_dropped_points_total{reason="non_numeric"}`). Booleans and numbers are kept.
- `time_resolution: ms` with `on_collision: refuse` removes a field its series already sent in
  the same millisecond (`bridge_dropped_fields_total{reason="time_resolution"}`; a point left
  without a field is dropped, `bridge_dropped_points_total{reason="time_resolution"}`); other
  fields are other samples and kept. With `on_collision: warn` points are sent as they are and
  `check-config` warns about the feeds. Which milliseconds (and fields) a series used is
  remembered in memory (the newest WINDOW per series, at most MAX_SERIES series): a point in the
  same millisecond as one sent before a restart is not caught, nor one older than its series' window.
- `time_resolution: ms` also means VictoriaMetrics' parser: a line holding a newline is dropped
  (`unrepresentable`), a field whose sample name another measurement and field took is removed
  (`name_collision`), and backslashes are doubled on the wire where it reads them otherwise (`wire`).

Filtering happens once, when a burst is handed to the destinations (pipeline.commit), so the
journal holds what is sent and a replay after a crash sends the same points again (identical
times: the backend's deduplication keeps one). `station-bridge replay` (files, dead letters)
filters what it sends to such a destination the same way and reports the counts; its
millisecond memory is its own (a collision with a point the running bridge sent is not caught).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from .config import Config, DestinationSpec
from .lineproto import split_lines

WINDOW = 128  # milliseconds remembered per series
MAX_SERIES = 20_000  # series remembered (least recently used forgotten)
MAX_NAMES = 100_000  # VictoriaMetrics sample names remembered (the oldest forgotten)
MAX_LABELS = 30  # VictoriaMetrics' -maxLabelsPerTimeseries (tags and db; it drops the others)
MAX_LABEL_VALUE = 16_384  # its -maxLabelValueLen (longer tag values are cut)
AHEAD_NS = 2 * 86_400 * 10**9  # VictoriaMetrics skips points further ahead of its clock (with a 204)
LONG_KEY = 256  # bytes: a longer name or series is remembered by its digest (the feed chooses them)
MAX_FIELDSETS = 10_000  # distinct field-key sets shared between the milliseconds remembered

_SERIES_END = re.compile(rb"(?<!\\) ")
_MEASUREMENT_END = re.compile(rb"(?<!\\),")
_ESCAPED = re.compile(rb"\\([, =])")
_LONE_BACKSLASH = re.compile(rb"\\(?![, =])")
_FIELD = re.compile(rb'((?:\\[^\n]|[^\\=\n ,])+)=("(?:[^"\\]|\\.)*"|[^ ,\n"]+)', re.S)


class Tally(Protocol):
    """A report's counts of what a backend adapter removed (replay's and try's results)."""

    dropped: dict[str, int]
    dropped_fields: int


def _handle(key: bytes) -> bytes:
    """What the memories below keep of a name or series: itself, or for a long one `#` and a
    128-bit digest (no measurement starts with `#`): 1,000 measurements of 60 KB kept 172 MiB."""
    return key if len(key) <= LONG_KEY else b"#" + hashlib.blake2b(key, digest_size=16).digest()


class Adapter:
    """One destination's filter: `apply(data)` -> (kept lines, kept points, {reason: points},
    {reason: fields}).

    `victoria` (a destination with `time_resolution: ms`, i.e. VictoriaMetrics' /influx/write):
    a line holding a newline (in a tag, a measurement or a string kept) is dropped
    (`unrepresentable`: VictoriaMetrics ends a line at every newline and would read the rest as
    another line), so is one with a tag `__name__` (VictoriaMetrics drops that tag: two series
    would become one) or `db` (it labels every sample db=<database>: `m,db=fleet` and `m` written
    to database fleet would be one series, `m,db=x` one written to database x), more than
    MAX_LABELS labels (tags and db; it drops the others) or a tag
    value longer than MAX_LABEL_VALUE bytes (it cuts it), and a field whose sample name
    `<measurement>_<field>` another measurement and field already took is removed
    (`name_collision`: `m_a`.`b` and `m`.`a_b` would be one series)."""

    def __init__(self, numeric_only: bool, refuse_sub_ms: bool, victoria: bool = False,
                 retention: float | None = None) -> None:
        self.numeric_only = numeric_only
        self.refuse_sub_ms = refuse_sub_ms
        self.victoria = victoria
        self.retention_ns = None if retention is None else round(retention * 1e9)
        # series -> {millisecond: the field keys sent in it}; field-key tuples are interned
        self._used: OrderedDict[bytes, dict[int, tuple[bytes, ...]]] = OrderedDict()
        self._fieldsets: dict[tuple[bytes, ...], tuple[bytes, ...]] = {}
        self._names: dict[bytes, bytes] = {}  # VictoriaMetrics sample name -> `measurement field` owning it

    @classmethod
    def for_spec(cls, spec: DestinationSpec) -> Adapter | None:
        refuse = spec.time_resolution == "ms" and spec.on_collision == "refuse"
        victoria = spec.time_resolution == "ms"
        if not (spec.numeric_only or victoria or spec.retention_period is not None):
            return None
        return cls(spec.numeric_only, refuse, victoria, spec.retention_period)

    def apply(self, data: bytes) -> tuple[bytes, int, dict[str, int], dict[str, int]]:
        kept, dropped, fields_dropped = self.apply_lines(line[:-1] if line.endswith(b"\n") else line
                                                         for line in split_lines(data))
        body = b"".join(line + b"\n" for line in kept)
        return body, len(kept), dropped, fields_dropped

    def apply_lines(self, lines: Iterable[bytes]) -> tuple[list[bytes], dict[str, int], dict[str, int]]:
        """Lines without their newlines -> (the lines kept, {reason: points dropped}, {reason: fields removed})."""
        kept: list[bytes] = []
        dropped: dict[str, int] = {}
        fields: dict[str, int] = {}
        now = time.time_ns()
        oldest = None if self.retention_ns is None else now - self.retention_ns
        newest = now + AHEAD_NS if self.victoria else None
        for line in lines:
            if not line:
                continue
            if oldest is not None or newest is not None:
                stamp = line.rpartition(b" ")[2]
                if stamp.lstrip(b"-").isdigit() and (
                        (oldest is not None and int(stamp) < oldest) or (newest is not None and int(stamp) > newest)):
                    dropped["outside_retention"] = dropped.get("outside_retention", 0) + 1
                    continue
            if self.numeric_only and b'="' in line:
                line, removed = _numeric(line)
                if removed:
                    fields["non_numeric"] = fields.get("non_numeric", 0) + removed
                if line is None:
                    dropped["non_numeric"] = dropped.get("non_numeric", 0) + 1
                    continue
            if self.victoria and _unrepresentable(line):
                dropped["unrepresentable"] = dropped.get("unrepresentable", 0) + 1  # see the class
                continue
            if self.victoria or self.refuse_sub_ms:
                line, reason = self._claim(line, fields)
                if line is None:
                    dropped[reason] = dropped.get(reason, 0) + 1
                    continue
            kept.append(line)
        return kept, dropped, fields

    def apply_into(self, lines: Iterable[bytes], tally: Tally) -> list[bytes]:
        """apply_lines for a replay's report: the lines kept; what was removed added to `tally`."""
        kept, dropped, fields = self.apply_lines(lines)
        for reason, n in dropped.items():
            tally.dropped[reason] = tally.dropped.get(reason, 0) + n
        tally.dropped_fields += sum(fields.values())
        return kept

    def _claim(self, line: bytes, counts: dict[str, int]) -> tuple[bytes | None, str]:
        """The line without the fields VictoriaMetrics would merge with another sample: a sample
        name another measurement and field took (`name_collision`), a field its series already sent
        in the line's millisecond (`time_resolution`, when refusing); None (and the reason) when
        no field is left. Fields removed are added to `counts`."""
        parts = _parts(line)
        if parts is None:
            return line, ""  # not one of our lines (never expected): sent as it is
        series, found, keys, rest, stamp = parts
        keep = [True] * len(found)
        reason = ""
        if self.victoria:
            measurement = _MEASUREMENT_END.split(series, 1)[0]
            name_of = _unescape(measurement) + b"_"
            owner = measurement + b" "
            for i, key in enumerate(keys):
                name = _handle(name_of + _unescape(key))
                mine = _handle(owner + key)
                had = self._names.get(name)
                if had is None:
                    if len(self._names) >= MAX_NAMES:
                        del self._names[next(iter(self._names))]
                    self._names[name] = mine
                elif had != mine:
                    keep[i] = False
                    counts["name_collision"] = counts.get("name_collision", 0) + 1
                    reason = "name_collision"
        if self.refuse_sub_ms and stamp is not None:
            ms = stamp // 1_000_000 if stamp >= 0 else -(-stamp // 1_000_000)  # as Go's division: toward 0
            remembered = _handle(series)
            used = self._used.get(remembered)
            if used is None:
                used = self._used[remembered] = {}
                if len(self._used) > MAX_SERIES:
                    self._used.popitem(last=False)
            else:
                self._used.move_to_end(remembered)
            taken = used.get(ms, ())
            for i, key in enumerate(keys):
                if keep[i] and key in taken:
                    keep[i] = False
                    counts["time_resolution"] = counts.get("time_resolution", 0) + 1
                    reason = "time_resolution"
            sent = tuple(sorted({*taken, *(k for k, ok in zip(keys, keep, strict=True) if ok)}))
            if sent != taken:
                used[ms] = self._fieldsets.setdefault(sent, sent) if len(self._fieldsets) < MAX_FIELDSETS else sent
                if len(used) > WINDOW:
                    del used[next(iter(used))]
        if all(keep):
            return line, ""
        if not any(keep):
            return None, reason
        return series + b" " + b",".join(f for f, ok in zip(found, keep, strict=True) if ok) + rest, ""


def _parts(line: bytes) -> tuple[bytes, list[bytes], list[bytes], bytes, int | None] | None:
    """(series, the fields as written, their keys, what follows them, the time in ns or None)."""
    cut = _SERIES_END.search(line)
    if cut is None:
        return None
    body = line[cut.end():]
    found: list[bytes] = []
    keys: list[bytes] = []
    pos = 0
    while True:
        field = _FIELD.match(body, pos)
        if field is None:
            return None
        found.append(field.group(0))
        keys.append(field.group(1))
        pos = field.end()
        if body[pos:pos + 1] != b",":
            break
        pos += 1
    rest = body[pos:]
    text = rest.strip()
    stamp = int(text) if text.lstrip(b"-").isdigit() else None
    return line[:cut.start()], found, keys, rest, stamp


def _unrepresentable(line: bytes) -> bool:
    """True when VictoriaMetrics (at its default limits) cannot store the line's point as it is."""
    if b"\n" in line:
        return True
    cut = _SERIES_END.search(line)
    series = line if cut is None else line[:cut.start()]
    if b",__name__=" in series or b",db=" in series:
        return True
    if series.count(b",") >= MAX_LABELS:  # a tag per unescaped comma, plus the label db
        tags = _MEASUREMENT_END.split(series)[1:]
        if len(tags) + 1 > MAX_LABELS:
            return True
    if len(series) > MAX_LABEL_VALUE:
        return any(len(_unescape(tag.partition(b"=")[2])) > MAX_LABEL_VALUE
                   for tag in _MEASUREMENT_END.split(series)[1:])
    return False


def _unescape(name: bytes) -> bytes:
    """A measurement or key as InfluxDB and VictoriaMetrics read it (a backslash before `,`,
    space or `=` escapes it; any other backslash is itself)."""
    return _ESCAPED.sub(rb"\1", name) if b"\\" in name else name


def wire(body: bytes) -> bytes:
    r"""Lines as VictoriaMetrics' /influx/write reads them: in the measurement and tags, a backslash
    that escapes nothing doubled (VictoriaMetrics reads `\\` as one backslash, InfluxDB as two, and
    skips a line whose tag value holds `\` before `,`, space or `=`). Applied to a body as it is
    sent, so the journal holds the same lines for every backend."""
    if b"\\" not in body:
        return body
    out = []
    for line in split_lines(body):
        cut = _SERIES_END.search(line)
        if cut is None or b"\\" not in line[:cut.start()]:
            out.append(line)
        else:
            out.append(_LONE_BACKSLASH.sub(rb"\\\\", line[:cut.start()]) + line[cut.start():])
    return b"".join(out)


def _numeric(line: bytes) -> tuple[bytes | None, int]:
    """The line without its string fields (None when none is left) and how many were removed."""
    cut = _SERIES_END.search(line)
    if cut is None:
        return line, 0
    rest = line[cut.end():]
    keep: list[bytes] = []
    removed = 0
    pos = 0
    while True:
        found = _FIELD.match(rest, pos)
        if found is None:
            return line, 0  # not one of our lines (never expected): sent as it is
        if found.group(2).startswith(b'"'):
            removed += 1
        else:
            keep.append(found.group(0))
        pos = found.end()
        if rest[pos:pos + 1] != b",":
            break
        pos += 1
    if not removed:
        return line, 0
    if not keep:
        return None, removed
    return line[:cut.start()] + b" " + b",".join(keep) + rest[pos:], removed


def resolution_warnings(config: Config) -> list[str]:
    """check-config: per destination that keeps milliseconds and only warns (`on_collision:
    warn`), the feeds whose points can fall in one millisecond of their series."""
    out: list[str] = []
    for d in config.destinations:
        if d.time_resolution == "ms" and not d.numeric_only:
            strings = [s.name for s in config.subscriptions if "string" in s.mapping.fields.values()]
            if strings:
                out.append(f"destination {d.name!r} keeps milliseconds (time_resolution: ms, VictoriaMetrics) without "
                           f"numeric_only: the string fields of subscription(s) {', '.join(map(repr, strings))} "
                           "would be stored as 0 (numeric_only: true removes and counts them)")
        if d.time_resolution != "ms" or d.on_collision != "warn":
            continue
        for s in config.subscriptions:
            t = s.mapping.time
            if t.value_path is None:
                why = "its times are the receive time, in nanoseconds"
            elif t.format in ("epoch_s", "epoch_ms"):
                why = (f"its times ({t.format}) may carry fractions, and a time repeated in one series is moved "
                       "by a nanosecond (bridge_uniqueness_nudged_total)")
            else:
                why = f"its times ({t.format}) can be finer than a millisecond"
            if s.binning is not None and not s.binning.keep_raw and s.binning.interval_ns >= 1_000_000:
                continue  # binned points: one per interval (at least a millisecond) and series
            out.append(f"destination {d.name!r} keeps milliseconds (time_resolution: ms, on_collision: warn): "
                       f"subscription {s.name!r} can send two points of one series within one millisecond "
                       f"({why}); the backend keeps one of them (on_collision: refuse counts them dropped "
                       "time_resolution instead)")
    return out
