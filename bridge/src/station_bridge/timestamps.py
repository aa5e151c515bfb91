"""Timestamps in the formats real streams send, to integer nanoseconds since the epoch.

Formats (configured per subscription; `auto` guesses from the value):
- epoch_s (int or float), epoch_ms, epoch_us, epoch_ns;
- rfc3339 with any fraction up to nanoseconds (`2023-11-14T22:13:20.123456789Z`, offsets too);
- naive `YYYY-MM-DD HH:MM:SS[.fff...]` in a configured IANA zone.
Python's datetime stops at microseconds, so fractions are parsed by hand to keep nanoseconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

FORMATS = ("auto", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "rfc3339", "naive")

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?$")


class TimestampError(ValueError):
    reason = "bad_timestamp"


def _fraction_ns(frac: str | None) -> int:
    return int((frac or "0").ljust(9, "0")) if frac else 0


def _parse_text(text: str, zone: ZoneInfo | None) -> int:
    match = _RFC3339.match(text.strip())
    if not match:
        raise TimestampError(f"unrecognised timestamp {text!r}")
    year, month, day, hour, minute, second, frac, offset = match.groups()
    if offset is None:
        if zone is None:
            raise TimestampError(f"timestamp {text!r} has no zone and no `timezone` is configured")
        tz = zone
    elif offset in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        tz = None
        seconds_offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    try:
        if offset is not None and offset not in ("Z", "z"):
            base = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
            epoch = int(base.timestamp()) - seconds_offset
        else:
            base = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz)
            epoch = int(base.timestamp())
    except ValueError as exc:
        raise TimestampError(f"invalid date in {text!r}: {exc}") from exc
    return epoch * 1_000_000_000 + _fraction_ns(frac)


def _number(value: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TimestampError(f"{value!r} is not a number")
    if isinstance(value, float) and value != value:
        raise TimestampError("NaN timestamp")
    return value


def _scale(factor: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        number = _number(value)
        if isinstance(number, int):
            return number * factor
        # Decimal-safe enough: floats carry ~16 digits, which is microseconds at epoch seconds.
        return round(number * factor)
    return convert


def _auto(value: object, zone: ZoneInfo | None) -> int:
    if isinstance(value, str):
        try:
            return _auto(float(value), zone) if value.replace(".", "", 1).isdigit() else _parse_text(value, zone)
        except ValueError as exc:
            raise TimestampError(str(exc)) from exc
    number = _number(value)
    magnitude = abs(number)
    # Magnitudes of "now" in each unit differ by 10^3: pick the unit by size.
    if magnitude < 1e11:
        return _scale(1_000_000_000)(number)
    if magnitude < 1e14:
        return _scale(1_000_000)(number)
    if magnitude < 1e17:
        return _scale(1_000)(number)
    return int(number)


def parser(fmt: str, timezone: str | None = None) -> Callable[[object], int]:
    """Returns value -> ns for a configured format."""
    zone = ZoneInfo(timezone) if timezone else None
    if fmt == "epoch_s":
        return _scale(1_000_000_000)
    if fmt == "epoch_ms":
        return _scale(1_000_000)
    if fmt == "epoch_us":
        return _scale(1_000)
    if fmt == "epoch_ns":
        return lambda value: int(_number(value))
    if fmt in ("rfc3339", "naive"):
        def text(value: object) -> int:
            if isinstance(value, bytes):
                value = value.decode("ascii", "replace")
            if not isinstance(value, str):
                raise TimestampError(f"{value!r} is not a date string")
            return _parse_text(value, zone)
        return text
    if fmt == "auto":
        return lambda value: _auto(value, zone)
    raise ValueError(f"unknown timestamp format {fmt!r}; use one of {', '.join(FORMATS)}")


class ReceiveClock:
    """Receive time in ns, strictly increasing, so no two points of a series collide."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def __call__(self) -> int:
        now = time.time_ns()
        if now <= self._last:
            now = self._last + 1
        self._last = now
        return now
