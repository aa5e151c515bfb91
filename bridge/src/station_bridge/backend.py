"""What a destination's backend keeps of a point, made explicit before anything is sent.

InfluxDB 1.x keeps every field type and nanosecond times. VictoriaMetrics' `/influx/write`
(measured against Debian's victoria-metrics 1.79, tests/test_backend.py) turns every field into a
float64 sample `<measurement>_<field>`: a string field is stored as 0 (a numeric-looking string
such as "3.5" as that number), booleans as 1 and 0, integers as floats (exact up to 2**53), and
times are cut to milliseconds (two points of one series in one millisecond become one sample).

Per destination, so that nothing is changed silently on the way:
- `numeric_only: true` removes string fields from each point before it is queued and counts them
  (`bridge_dropped_fields_total{reason="non_numeric"}`); a point left without a field is dropped
  whole (`bridge_dropped_points_total{reason="non_numeric"}`). Booleans and numbers are kept.
- `time_resolution: ms` with `on_collision: refuse` drops a point whose series already had a
  point sent in the same millisecond (`bridge_dropped_points_total{reason="time_resolution"}`);
  with `on_collision: warn` points are sent as they are and `check-config` warns about the feeds.
  Which milliseconds a series used is remembered in memory (the newest WINDOW per series, at most
  MAX_SERIES series): a point in the same millisecond as one sent before a restart is not caught,
  nor one older than its series' window.

Filtering happens once, when a burst is handed to the destinations (pipeline.commit), so the
journal holds what is sent and a replay after a crash sends the same points again (identical
times: the backend's deduplication keeps one). `station-bridge replay` (files, dead letters)
filters what it sends to such a destination the same way and reports the counts; its
millisecond memory is its own (a collision with a point the running bridge sent is not caught).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from .config import Config, DestinationSpec
from .lineproto import split_lines

WINDOW = 128  # milliseconds remembered per series
MAX_SERIES = 20_000  # series remembered (least recently used forgotten)

_SERIES_END = re.compile(rb"(?<!\\) ")
_FIELD = re.compile(rb'((?:\\[^\n]|[^\\=\n ,])+)=("(?:[^"\\]|\\.)*"|[^ ,\n"]+)', re.S)


class Tally(Protocol):
    """A report's counts of what a backend adapter removed (replay's and try's results)."""

    dropped: dict[str, int]
    dropped_fields: int


class Adapter:
    """One destination's filter: `apply(data)` -> (kept lines, kept points, {reason: points}, dropped fields)."""

    def __init__(self, numeric_only: bool, refuse_sub_ms: bool) -> None:
        self.numeric_only = numeric_only
        self.refuse_sub_ms = refuse_sub_ms
        self._used: OrderedDict[bytes, dict[int, None]] = OrderedDict()

    @classmethod
    def for_spec(cls, spec: DestinationSpec) -> Adapter | None:
        refuse = spec.time_resolution == "ms" and spec.on_collision == "refuse"
        return cls(spec.numeric_only, refuse) if spec.numeric_only or refuse else None

    def apply(self, data: bytes) -> tuple[bytes, int, dict[str, int], int]:
        kept, dropped, fields_dropped = self.apply_lines(line[:-1] if line.endswith(b"\n") else line
                                                         for line in split_lines(data))
        body = b"".join(line + b"\n" for line in kept)
        return body, len(kept), dropped, fields_dropped

    def apply_lines(self, lines: Iterable[bytes]) -> tuple[list[bytes], dict[str, int], int]:
        """Lines without their newlines -> (the lines kept, {reason: points dropped}, fields removed)."""
        kept: list[bytes] = []
        dropped: dict[str, int] = {}
        fields_dropped = 0
        for line in lines:
            if not line:
                continue
            if self.numeric_only and b'="' in line:
                line, removed = _numeric(line)
                fields_dropped += removed
                if line is None:
                    dropped["non_numeric"] = dropped.get("non_numeric", 0) + 1
                    continue
            if self.refuse_sub_ms and not self._claim(line):
                dropped["time_resolution"] = dropped.get("time_resolution", 0) + 1
                continue
            kept.append(line)
        return kept, dropped, fields_dropped

    def apply_into(self, lines: Iterable[bytes], tally: Tally) -> list[bytes]:
        """apply_lines for a replay's report: the lines kept; what was removed added to `tally`."""
        kept, dropped, fields = self.apply_lines(lines)
        for reason, n in dropped.items():
            tally.dropped[reason] = tally.dropped.get(reason, 0) + n
        tally.dropped_fields += fields
        return kept

    def _claim(self, line: bytes) -> bool:
        """False when the line's series already used the line's millisecond."""
        cut = _SERIES_END.search(line)
        stamp = line.rpartition(b" ")[2]
        if cut is None or not stamp.lstrip(b"-").isdigit():
            return True  # not one of our lines (never expected): sent as it is
        series = line[:cut.start()]
        ms = int(stamp) // 1_000_000
        used = self._used.get(series)
        if used is None:
            used = self._used[series] = {}
            if len(self._used) > MAX_SERIES:
                self._used.popitem(last=False)
        else:
            self._used.move_to_end(series)
            if ms in used:
                return False
        used[ms] = None
        if len(used) > WINDOW:
            del used[next(iter(used))]
        return True


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
