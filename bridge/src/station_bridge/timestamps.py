"""Timestamps in the formats real streams send, to integer nanoseconds since the epoch, exactly.

Formats (configured per subscription; `auto` picks the unit from the value):
- epoch_s, epoch_ms, epoch_us, epoch_ns: an integer, a float, or a decimal string
  (`1764439880`, `-1.5`, `1764439880.123456789`): JSON's number grammar without an exponent,
  ASCII, exactly (`+1`, `01`, `.5`, `5.`, ` 1 ` are refused, as for every number given as text);
- rfc3339 with any fraction (`2023-11-14T22:13:20.123456789Z`, offsets `+01:00`/`+0100` too),
  exactly: no surrounding space;
- naive `YYYY-MM-DD HH:MM:SS[.fff...]` in a configured IANA zone (an ambiguous local time takes
  its first occurrence, as zoneinfo's fold=0 does; a local time inside a daylight-saving gap,
  which never existed, is refused: zoneinfo placed it an hour off, on another real time's instant);
- in every format, msgpack's timestamp extension (msgpack.Timestamp), which is absolute.

Exactness, the rule every conversion follows: the result is the value's exact rational value
times the unit, rounded to the nearest nanosecond, ties to even.
- integers: multiplied, exact;
- floats: from the float's exact binary value: `1700000000.123456` is the double
  1700000000.1234560012817383..., which lands at ...123456001 ns (`round(x * 1e9)` rounds the
  product to a double first: up to 128 ns off today). A float product is used only where it
  provably gives the same answer (see float_to_ns); otherwise `float.as_integer_ratio()`.
  (The shortest decimal a float prints as is not its value; guessing the sender's decimal
  would be a different answer, and not an exact one.)
- decimal strings and RFC 3339 fractions: integer arithmetic on the digits, never float;
- `auto` compares the exact value with 10^11 / 10^14 / 10^17 (seconds, ms, us, else ns).
Results outside InfluxDB's time range (1677-09-21T00:12:43.145224194Z ..
2262-04-11T23:47:16.854775806Z, int64 minus its two sentinels) are refused as bad_timestamp,
and so are NaN, infinities, booleans, non-ASCII digits (str.isdigit accepts full-width ones),
leap seconds (`:60`) and strings longer than 64 characters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from msgpack import Timestamp

FORMATS = ("auto", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "rfc3339", "naive")

# InfluxDB 1.x models.MinNanoTime / MaxNanoTime: the two lowest int64 values are sentinels.
MIN_NS = -(2**63) + 2
MAX_NS = 2**63 - 2

_UNITS = {"epoch_s": 1_000_000_000, "epoch_ms": 1_000_000, "epoch_us": 1_000, "epoch_ns": 1}
_MAX_TEXT = 64
# JSON's number grammar without an exponent, ASCII (as every number given as text, lineproto.number_text):
# no `+`, no leading zero, no bare `.5` or `5.`.
_DECIMAL = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?", re.ASCII)
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(Z|z|[+-][0-9]{2}:?[0-9]{2})?", re.ASCII)
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class TimestampError(ValueError):
    reason = "bad_timestamp"


def _in_range(ns: int, value: object) -> int:
    if MIN_NS <= ns <= MAX_NS:
        return ns
    raise TimestampError(f"{value!r} is outside InfluxDB's time range (1677-09-21 .. 2262-04-11)")


def round_div(n: int, d: int) -> int:
    """n / d (d > 0) rounded to the nearest integer, ties to even; exact for any integers."""
    q, r = divmod(n, d)  # floor division: 0 <= r < d, also for negative n
    r += r
    if r > d or (r == d and q & 1):
        q += 1
    return q


def _float_exact(value: float, unit: int) -> int:
    try:
        n, d = value.as_integer_ratio()
    except (OverflowError, ValueError):  # infinities, NaN
        raise TimestampError(f"{value!r} is not a finite timestamp") from None
    return _in_range(round_div(n * unit, d), value)


def float_to_ns(value: float, unit: int) -> int:
    """A float count of `unit` ns (10**9 for seconds) as ns, from the float's exact value.

    Fast and exact: the integer part i = int(value) and the fraction f = value - i are exact
    floats; f * unit (|f * unit| < 10**9 < 2**30) is one rounding, off by at most 2**-24 from
    the exact product, so round() of it is the exact answer unless the product lies within
    0.0001 of a half: those (and values far from "now") take the rational path.
    """
    if -9.2e18 < value * unit < 9.2e18:  # in InfluxDB's range with room; False for NaN
        i = int(value)
        p = (value - i) * float(unit)
        q = round(p)
        if -0.4999 < p - q < 0.4999:
            return i * unit + q
    return _float_exact(value, unit)


def float_seconds_to_ns(value: float) -> int:
    """float_to_ns(value, 10**9), for the mapping's compiled fast path (epoch_s floats).

    Pass floats only; NaN, infinities and out-of-range values raise TimestampError.
    """
    if -9.2e9 < value < 9.2e9:
        i = int(value)
        p = (value - i) * 1e9
        q = round(p)
        if -0.4999 < p - q < 0.4999:
            return i * 1_000_000_000 + q
    return _float_exact(value, 1_000_000_000)


def int_to_ns(value: int, unit: int) -> int:
    """An integer count of `unit` ns as ns; refuses what InfluxDB cannot store."""
    ns = value * unit
    if MIN_NS <= ns <= MAX_NS:
        return ns
    raise TimestampError(f"{value!r} is outside InfluxDB's time range (1677-09-21 .. 2262-04-11)")


def _ascii(value: str | bytes) -> str:
    if type(value) is not str:
        try:
            value = value.decode("ascii")  # type: ignore[union-attr]
        except UnicodeDecodeError:
            raise TimestampError(f"{value!r} is not an ASCII timestamp") from None
    if len(value) > _MAX_TEXT:  # type: ignore[arg-type]
        raise TimestampError(f"timestamp text of {len(value)} characters (at most {_MAX_TEXT})")
    return value  # type: ignore[return-value]


def _auto_unit(whole: int) -> int:
    # Magnitudes of "now" in each unit differ by 10^3: the unit by the size of |value|'s
    # integer part (|value| < 10^11 exactly when |int part| < 10^11).
    whole = abs(whole)
    if whole < 10**11:
        return 1_000_000_000
    if whole < 10**14:
        return 1_000_000
    if whole < 10**17:
        return 1_000
    return 1


def _text_number(text: str, unit: int | None) -> int | None:
    """A decimal string `[+-]digits[.digits]` (ASCII) as ns; None when it is not one."""
    if text.isdigit() and text.isascii() and (text[0] != "0" or text == "0"):  # isdigit alone: full-width too
        n = int(text)
        return int_to_ns(n, unit or _auto_unit(n))
    match = _DECIMAL.fullmatch(text)
    if match is None:
        return None
    sign, whole, frac = match.groups()
    if not whole and not frac:
        return None
    n = int((whole or "0") + (frac or ""))
    d = 10 ** len(frac or "")
    if unit is None:
        unit = _auto_unit(n // d)
    return _in_range(round_div(-n * unit if sign == "-" else n * unit, d), text)


def _number(value: object, unit: int | None) -> int:
    """A number (int, float, decimal string) counting `unit` ns; unit None: pick it (`auto`)."""
    if isinstance(value, bool):
        raise TimestampError(f"{value!r} is not a timestamp")
    if isinstance(value, int):
        return int_to_ns(value, unit or _auto_unit(value))
    if isinstance(value, float):
        if unit is None:  # int() of a finite float is its exact integer part
            unit = _auto_unit(int(value)) if value - value == 0.0 else 1
        return float_to_ns(value, unit)
    if isinstance(value, Timestamp):  # msgpack's timestamp extension: absolute, exact
        return _in_range(value.to_unix_nano(), value)
    if isinstance(value, str | bytes):
        text = _ascii(value)
        ns = _text_number(text, unit)
        if ns is None:
            raise TimestampError(f"{text!r} is not a number")
        return ns
    raise TimestampError(f"{value!r} is not a number")


def _days(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (integer arithmetic, validated)."""
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= month <= 12 or not 1 <= day <= (29 if month == 2 and leap else _MONTH_DAYS[month]):
        raise TimestampError(f"invalid date {year:04d}-{month:02d}-{day:02d}")
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _parse_text(value: str | bytes, zone: ZoneInfo | None) -> int:
    text = _ascii(value)  # exactly: surrounding space is refused, as for numbers
    match = _RFC3339.fullmatch(text)
    if not match:
        raise TimestampError(f"unrecognised timestamp {text!r}")
    year, month, day, hour, minute, second, frac, offset = match.groups()
    y, mo, d, h, m, s = int(year), int(month), int(day), int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 59:
        raise TimestampError(f"invalid time of day in {text!r} (leap seconds are refused)")
    seconds = _days(y, mo, d) * 86400 + h * 3600 + m * 60 + s
    ns = round_div(int(frac) * 1_000_000_000, 10 ** len(frac)) if frac else 0
    if offset is None:
        if zone is None:
            raise TimestampError(f"timestamp {text!r} has no zone and no `timezone` is configured")
        try:
            local = datetime(y, mo, d, h, m, s, tzinfo=zone)
            delta = local.utcoffset()
            assert delta is not None
            # A wall time in a gap (the spring-forward hour) never existed there: zoneinfo would
            # place it an hour off, on the instant of another, real time. Refused instead.
            back = (local - delta).replace(tzinfo=UTC).astimezone(zone)
        except (ValueError, OverflowError) as exc:
            raise TimestampError(f"cannot place {text!r} in {zone}: {exc}") from None
        if (back.year, back.month, back.day, back.hour, back.minute, back.second) != (y, mo, d, h, m, s):
            raise TimestampError(f"{text!r} does not exist in {zone}: a daylight-saving gap (it would be "
                                 f"stored as {back:%Y-%m-%d %H:%M:%S}, another time)")
        seconds -= delta.days * 86400 + delta.seconds
        ns -= delta.microseconds * 1000
    elif offset != "Z" and offset != "z":
        oh, om = int(offset[1:3]), int(offset[-2:])
        if oh > 23 or om > 59:
            raise TimestampError(f"invalid UTC offset in {text!r}")
        seconds += (oh * 3600 + om * 60) * (-1 if offset[0] == "+" else 1)
    return _in_range(seconds * 1_000_000_000 + ns, text)


def _epoch(unit: int) -> Callable[[object], int]:
    limit, scale = 9.2e18 / unit, float(unit)

    def convert(value: object) -> int:
        kind = type(value)
        if kind is float:  # float_to_ns, inlined
            if -limit < value < limit:  # type: ignore[operator]
                i = int(value)  # type: ignore[call-overload]
                p = (value - i) * scale  # type: ignore[operator]
                q = round(p)
                if -0.4999 < p - q < 0.4999:
                    return i * unit + q
            return _float_exact(value, unit)  # type: ignore[arg-type]
        if kind is int:
            ns = value * unit  # type: ignore[operator]
            if MIN_NS <= ns <= MAX_NS:
                return ns
        return _number(value, unit)
    return convert


_TO_S, _TO_MS, _TO_US = _epoch(1_000_000_000), _epoch(1_000_000), _epoch(1_000)


def _auto(value: object, zone: ZoneInfo | None) -> int:
    kind = type(value)
    if kind is float or kind is int:
        # 1e11, 1e14 and 1e17 are exact doubles: comparing with them is exact.
        magnitude = abs(value)  # type: ignore[arg-type]
        if magnitude < 1e11:
            return _TO_S(value)
        if magnitude < 1e14:
            return _TO_MS(value)
        if magnitude < 1e17:
            return _TO_US(value)
        return _number(value, 1)
    if kind is str or kind is bytes:
        text = _ascii(value)  # type: ignore[arg-type]
        ns = _text_number(text, None)
        return _parse_text(text, zone) if ns is None else ns
    return _number(value, None)


def parser(fmt: str, timezone: str | None = None) -> Callable[[object], int]:
    """Returns value -> ns for a configured format; every refusal raises TimestampError."""
    zone = ZoneInfo(timezone) if timezone else None
    if fmt in _UNITS:
        return _epoch(_UNITS[fmt])
    if fmt in ("rfc3339", "naive"):
        def text(value: object) -> int:
            if isinstance(value, Timestamp):
                return _in_range(value.to_unix_nano(), value)
            if not isinstance(value, str | bytes):
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
