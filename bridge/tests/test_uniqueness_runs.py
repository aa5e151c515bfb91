"""The uniqueness window never gives a time twice without counting it (mapping.Uniqueness).

Found with several subscriptions (receive threads) feeding one series at different paces: a
repeated source time whose run of nudges ended below the window (the window moved on with a
faster feed) continues at its run's end + 1, the run's own time (runs never meet). What broke
was its insertion below the window's first time: the window then looked as if it remembered
every time above it, and the forgotten ones in between were given again without a count
(InfluxDB overwrote those points: 2,617 points lost of 15,429 for 2,475 counted unchecked, with the default
window of 128). The run's time now stays out of the window's times.
"""

from __future__ import annotations

import random

from station_bridge.mapping import Uniqueness


def _feeds(seed: int, feeds: int = 3, count: int = 6000) -> list[int]:
    """Source times of one series from `feeds` feeds of the same times (each a repeated time
    twice per ms), interleaved in random runs of 1 to 300 messages: their paces differ."""
    rng = random.Random(seed)
    positions = [0] * feeds
    times = []
    while any(p < count for p in positions):
        i = rng.choice([j for j in range(feeds) if positions[j] < count])
        for _ in range(rng.randint(1, 300)):
            if positions[i] >= count:
                break
            times.append(1_000_000 * (positions[i] // 2))
            positions[i] += 1
    return times


def test_no_time_is_given_twice_without_being_counted_unchecked():
    for seed in range(5):
        unique = Uniqueness(window=128, max_series=100)
        given: set[int] = set()
        silent = []
        for ts in _feeds(seed):
            before = unique.unchecked
            got = unique.claim("m,instrument=A", ts)
            if got in given and unique.unchecked == before:
                silent.append((ts, got))
            given.add(got)
        assert not silent, (seed, len(silent), silent[:5])
        assert unique.unchecked > 0  # the case arose


def test_a_run_below_the_window_continues_and_the_forgotten_times_stay_counted():
    """A repeated time whose run ended below the window takes the run's next nanosecond (runs
    never meet); the window's first time stays where it was, so a forgotten time above the run
    is counted unchecked (it was given again silently: the run's time, inserted first, made the
    window look as if it remembered everything above it)."""
    unique = Uniqueness(window=4, max_series=100)
    assert [unique.claim("s", 100) for _ in range(3)] == [100, 101, 102]
    for ts in range(1000, 2000, 10):  # the window moves far beyond (trimmed past window + 64)
        unique.claim("s", ts)
    assert [unique.claim("s", 100) for _ in range(3)] == [103, 104, 105]
    assert unique.unchecked == 0
    assert unique.claim("s", 1000) == 1000 and unique.unchecked == 1  # given before, forgotten: counted
