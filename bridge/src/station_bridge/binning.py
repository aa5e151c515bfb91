"""Time binning: exact-interval, time-weighted means (from the EHT station client).

Each sample's value holds since the previous sample (the first one since its bin's
start); a bin is labelled by its start and emitted once a later sample shows that the
bin is complete. Golden check (1 s bins): samples (T+0.1,100), (T+0.6,200), (T+1.1,100),
(T+3.5,50) give (T,150), (T+1,55), (T+2,50).

A silence longer than `max_gap` (binning.max_gap, default 10,000 intervals) is not filled: the
sample after it completes the bin that was open (its value holding to that bin's end, as
always) and starts its series afresh at its own bin, as a first sample does; the bins in
between are not written, and the gap is counted (`gaps`, bridge_binning_gaps_total). A bin is
accumulated as value x (share of the interval), so finite values never overflow (1e300 made an
infinite sum, a bin dropped without a count); what is not binned is counted (`skipped`). Without
the bound one message whose time was 15 days after the series' previous one (accepted: times
may lie up to 10 years behind) made 1,296,002 bins in one burst (587 MiB); 10 years, 315 million.

`Binning` turns mapped points into binned lines: the series of a binned line is the binned
measurement followed by the point's own escaped tags (the one series key of lineproto), and
its state is keyed by the point's series key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .config import BinningSpec
from .lineproto import LineError, escape_field_key, escape_measurement, format_float
from .mapping import LONG_SERIES, Point, series_handle
from .textcache import TextCache


@dataclass
class _State:
    bin_start: int
    last_ns: int
    acc: dict[str, float] = field(default_factory=dict)


class TimeWeightedBinner:
    def __init__(self, interval_ns: int, fields: list[str], max_gap_ns: int | None = None,
                 max_series: int = 20_000) -> None:
        self.interval = interval_ns
        self.fields = fields
        self.max_gap = max_gap_ns if max_gap_ns is not None else 10_000 * interval_ns
        self.gaps = 0  # silences longer than max_gap, not filled
        # At most `max_series` series (binning.max_series), the least recently sampled forgotten
        # (its open bin is never written, counted in `evicted`): a tag with a new value in every
        # message (an order id) grew this by ~540 bytes per message, without bound.
        self.max_series = max_series
        self.evicted = 0
        self._series: dict[str, _State] = {}

    def add(self, series: str, time_ns: int, values: dict[str, float]) -> list[tuple[int, dict[str, float]]]:
        """Adds a sample; returns the bins it completed as (bin_start_ns, means)."""
        return list(self.bins(series, time_ns, values))

    def bins(self, series: str, time_ns: int, values: dict[str, float]) -> Iterator[tuple[int, dict[str, float]]]:
        """Adds a sample; yields the bins it completes as they are made (up to max_gap of them:
        a list of them all was 172,800 bins a sample, 1.6 GiB for a burst of 20 such samples).
        A series key longer than LONG_SERIES is held as its digest (20,000 series of 60 KB tags
        held 1.2 GiB of keys)."""
        if len(series) > LONG_SERIES:
            series = series_handle(series)
        state = self._series.pop(series, None)  # re-inserted last: the dict's order is recency
        if state is None:
            start = time_ns - time_ns % self.interval
            state = _State(start, start, dict.fromkeys(self.fields, 0.0))
            if len(self._series) >= self.max_series:
                del self._series[next(iter(self._series))]
                self.evicted += 1
        self._series[series] = state
        if time_ns < state.last_ns:
            return  # late sample: its interval was already accounted for
        if time_ns - state.last_ns > self.max_gap:
            # A silence beyond max_gap: complete the open bin, then start afresh at this sample.
            self.gaps += 1
            yield from self._advance(state, state.bin_start + self.interval, values)
            start = time_ns - time_ns % self.interval
            state.bin_start = state.last_ns = start
            state.acc = dict.fromkeys(self.fields, 0.0)
        yield from self._advance(state, time_ns, values)

    def _advance(self, state: _State, time_ns: int, values: dict[str, float]) -> Iterator[tuple[int, dict[str, float]]]:
        """The sample's value from the series' last time to `time_ns`: the bins it completes."""
        cursor = state.last_ns
        while cursor < time_ns:
            bin_end = state.bin_start + self.interval
            segment_end = min(time_ns, bin_end)
            width = segment_end - cursor
            share = width / self.interval  # at most 1: a finite value never overflows the sum
            for name in self.fields:
                state.acc[name] += values[name] * share
            cursor = segment_end
            if segment_end == bin_end:
                done = (state.bin_start, state.acc)
                state.bin_start = bin_end
                state.acc = dict.fromkeys(self.fields, 0.0)
                state.last_ns = cursor  # consistent after every bin (the consumer may stop between)
                yield done
        state.last_ns = time_ns


class Binning:
    """Mapped points -> binned lines (measurement `spec.measurement` or `<measurement>_binned`)."""

    def __init__(self, spec: BinningSpec) -> None:
        self.spec = spec
        self.binner = TimeWeightedBinner(spec.interval_ns, spec.fields, spec.gap_ns, spec.max_series)
        self._keys = {name: escape_field_key(name) for name in spec.fields}
        self._measurements: TextCache[tuple[int, str]] = TextCache(10_000)  # raw -> (escaped length, binned escaped)
        # reason -> count (bridge_binning_skipped_total): points without every binned field as a
        # number (`missing_field`), bins whose mean is not finite (`non_finite`: a NaN or an
        # infinity sent); they were dropped without a count (with keep_raw: false, silently lost).
        self.skipped: dict[str, int] = {}

    def _measurement(self, raw: str) -> tuple[int, str]:
        found = self._measurements.get(raw)
        if found is None:
            binned = escape_measurement(self.spec.measurement or raw + "_binned")
            found = (len(escape_measurement(raw)), binned)
            self._measurements.put(raw, found)
        return found

    def lines(self, point: Point) -> Iterator[str]:
        """The binned lines the point completes, as they are made (a generator: one sample
        after a silence makes up to max_gap / interval of them)."""
        try:
            values = {name: float(point.fields[name]) for name in self.spec.fields}  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError, OverflowError):
            self.skipped["missing_field"] = self.skipped.get("missing_field", 0) + 1
            return
        cut, measurement = self._measurement(point.measurement)
        series = measurement + point.series[cut:]
        for start, means in self.binner.bins(point.series, point.time_ns, values):
            try:
                fields = ",".join(f"{self._keys[k]}={format_float(v)}" for k, v in means.items())
            except LineError:
                self.skipped["non_finite"] = self.skipped.get("non_finite", 0) + 1
                continue
            yield f"{series} {fields} {start}"
