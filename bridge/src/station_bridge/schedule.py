"""Scheduled links and paced sending, per destination.

`Schedule`: when a destination's link is up, in UTC. Either daily windows
(`["02:00-04:30", "22:00-01:00"]`: a window may cross midnight; `00:00-24:00` is the whole day) or a
periodic form (`{every: 30m, for: 10m}`: up for `for` from every multiple of `every` counted from
1970-01-01 00:00 UTC, so every divisor of a day starts at midnight). Outside a window the
destination sends nothing: its points are journaled, and its health is `pending_by_schedule`.

`Pacer`: `max_points_per_second` / `max_bytes_per_second` as a virtual clock: a request of `p`
points and `b` bytes (on the wire: after gzip) may start at `ready`, which then moves on by
max(p / points_per_s, b / bytes_per_s). Over any interval of length L the link carries at most
L x the rate plus one request (requests are cut to at most one second's budget, sinks.Delivery),
and idle time is not saved up into a burst.
"""

from __future__ import annotations

import datetime
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DAY = 86400.0
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


class ScheduleError(ValueError):
    pass


def _clock(text: str, end: bool) -> float:
    match = _CLOCK.match(text.strip())
    if not match:
        raise ScheduleError(f"{text!r} is not a time of day (HH:MM or HH:MM:SS, UTC)")
    h, m, s = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if m > 59 or s > 59 or h > 24 or (h == 24 and (m or s or not end)):
        raise ScheduleError(f"{text!r} is not a time of day (00:00 to 23:59:59; 24:00 only as an end)")
    return h * 3600.0 + m * 60.0 + s


@dataclass(frozen=True)
class Schedule:
    """Daily `windows` ((start, end) seconds after midnight UTC; end may exceed a day: crosses
    midnight), or `every`/`duration` seconds (periodic)."""

    windows: tuple[tuple[float, float], ...] = ()
    every: float = 0.0
    duration: float = 0.0
    text: tuple[str, ...] = ()

    @classmethod
    def daily(cls, items: list[str]) -> Schedule:
        if not items:
            raise ScheduleError("an empty list of windows would never send: leave schedule null (always up)")
        windows = []
        for item in items:
            if not isinstance(item, str) or item.count("-") != 1:
                raise ScheduleError(f"{item!r}: a window is \"HH:MM-HH:MM\" (UTC)")
            first, second = item.split("-")
            start, end = _clock(first, False), _clock(second, True)
            if start == end:
                raise ScheduleError(f"{item!r}: a window of zero length")
            windows.append((start, end if end > start else end + DAY))
        windows.sort()
        spans = windows + [(s + DAY, e + DAY) for s, e in windows]
        for (s1, e1), (s2, _) in itertools.pairwise(spans):
            if s2 < e1:
                raise ScheduleError(f"windows overlap ({_hhmm(s1)}-{_hhmm(e1)} and one starting {_hhmm(s2)}): "
                                    "merge them into one")
        return cls(windows=tuple(windows), text=tuple(items))

    @classmethod
    def periodic(cls, every: float, duration: float) -> Schedule:
        if every <= 0 or duration <= 0:
            raise ScheduleError("every and for must be positive")
        if duration >= every:
            raise ScheduleError(f"for ({duration:g} s) must be shorter than every ({every:g} s); "
                                "for a link that is always up leave schedule null")
        return cls(every=every, duration=duration)

    def _spans(self, t: float) -> list[tuple[float, float]]:
        """The windows around `t` (yesterday's to tomorrow's), as absolute (start, end)."""
        if self.every:
            base = (t // self.every) * self.every
            return [(base + k * self.every, base + k * self.every + self.duration) for k in (-1, 0, 1, 2)]
        day = (t // DAY) * DAY
        return [(day + k * DAY + s, day + k * DAY + e) for k in (-1, 0, 1, 2) for s, e in self.windows]

    def window_start(self, t: float) -> float | None:
        """Start (epoch seconds) of the window `t` is in; None when the link is down."""
        for start, end in self._spans(t):
            if start <= t < end:
                return start
        return None

    def is_open(self, t: float) -> bool:
        return self.window_start(t) is not None

    def next_open(self, t: float) -> float:
        """Start of the next window after `t` (epoch seconds)."""
        return min(start for start, _ in self._spans(t) if start > t)

    def describe(self) -> str | list[str]:
        return list(self.text) if not self.every else f"every {self.every:g}s for {self.duration:g}s"

    def as_config(self) -> list[str] | dict[str, float]:
        return list(self.text) if not self.every else {"every_s": self.every, "for_s": self.duration}


def _hhmm(seconds: float) -> str:
    seconds %= DAY
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


def utc(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Pacer:
    """The send budget of one destination (see the module's docstring); thread-safe."""

    def __init__(self, points_per_s: int | None, bytes_per_s: int | None) -> None:
        self.points_per_s = points_per_s
        self.bytes_per_s = bytes_per_s
        self._ready = 0.0
        self._lock = threading.Lock()

    @property
    def limited(self) -> bool:
        return self.points_per_s is not None or self.bytes_per_s is not None

    def take(self, points: int, nbytes: int) -> float:
        """Reserves the budget of one request; returns how long to wait before sending it."""
        if not self.limited:
            return 0.0
        cost = max(points / self.points_per_s if self.points_per_s else 0.0,
                   nbytes / self.bytes_per_s if self.bytes_per_s else 0.0)
        with self._lock:
            now = time.monotonic()
            start = max(now, self._ready)
            self._ready = start + cost
        return start - now

    def wait(self, points: int, nbytes: int, cancel: Callable[[], bool] | None = None) -> bool:
        """Waits for the budget of one request. `cancel` (the window closed, the stop's deadline
        passed) is asked while waiting and once the wait is over: True gives the reservation back
        and returns False (the request must not be sent: a wait of minutes, at a byte budget
        below a request's headers, would otherwise send it outside the window or past the stop)."""
        delay = self.take(points, nbytes)
        if delay <= 0:
            return True
        end = time.monotonic() + delay
        while True:
            if cancel is not None and cancel():
                cost = max(points / self.points_per_s if self.points_per_s else 0.0,
                           nbytes / self.bytes_per_s if self.bytes_per_s else 0.0)
                with self._lock:
                    self._ready = max(time.monotonic(), self._ready - cost)
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.05) if cancel is not None else left)
