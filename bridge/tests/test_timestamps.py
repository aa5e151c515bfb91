"""Timestamps against exact rational arithmetic (fractions.Fraction), over generated values.

The oracle here is written independently of timestamps.py: Fraction(value) is a float's or a
decimal string's exact value, round() of a Fraction rounds half to even, and calendar
arithmetic comes from datetime subtraction.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from station_bridge.timestamps import (
    MAX_NS,
    MIN_NS,
    TimestampError,
    float_seconds_to_ns,
    float_to_ns,
    parser,
    round_div,
)

UNITS = {"epoch_s": 10**9, "epoch_ms": 10**6, "epoch_us": 10**3, "epoch_ns": 1}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REFUSED = "refused"


def exact_ns(value: Fraction, unit: int) -> int | str:
    ns = round(value * unit)  # Fraction.__round__: nearest, ties to even
    return ns if MIN_NS <= ns <= MAX_NS else REFUSED


def auto_unit(value: Fraction) -> int:
    magnitude = abs(value)
    if magnitude < 10**11:
        return 10**9
    if magnitude < 10**14:
        return 10**6
    if magnitude < 10**17:
        return 10**3
    return 1


def outcome(function, value) -> int | str:
    try:
        return function(value)
    except TimestampError:
        return REFUSED


finite_floats = st.floats(allow_nan=False, allow_infinity=False)
# Epoch seconds near now, where a float's ulp (238 ns) makes float arithmetic lose nanoseconds.
recent_seconds = st.floats(min_value=1e9, max_value=2e9)
# Exact ties at the nanosecond: k + odd/1024 seconds is k s + odd * 976562.5 ns.
ties = st.builds(lambda k, j: k + (2 * j + 1) / 1024, st.integers(-(2**31), 2**31), st.integers(0, 511))


@pytest.mark.parametrize("fmt", list(UNITS))
@given(value=st.one_of(finite_floats, recent_seconds, ties, st.floats(min_value=-1e12, max_value=1e12)))
@settings(max_examples=400, deadline=None)
@example(value=1700000000.123456)
@example(value=-0.5e-9)
@example(value=1.5e-9)
@example(value=9.2233720368547758e9)
def test_floats_land_on_their_exact_value(fmt, value):
    assert outcome(parser(fmt), value) == exact_ns(Fraction(value), UNITS[fmt])


@given(value=st.one_of(finite_floats, recent_seconds, ties))
@settings(max_examples=500, deadline=None)
def test_float_seconds_to_ns_is_exact(value):
    assert outcome(float_seconds_to_ns, value) == exact_ns(Fraction(value), 10**9)
    for unit in (10**9, 10**6, 10**3, 1):
        assert outcome(lambda v, u=unit: float_to_ns(v, u), value) == exact_ns(Fraction(value), unit)


def test_float_rounding_ties_go_to_even():
    base = 1700000000
    assert float_seconds_to_ns(base + 1 / 1024) == base * 10**9 + 976562  # 976562.5 -> even
    assert float_seconds_to_ns(base + 3 / 1024) == base * 10**9 + 2929688  # 2929687.5 -> even
    assert float_seconds_to_ns(-1 / 1024) == -976562
    assert parser("epoch_ms")(0.0000005) == 0  # 0.5 ns (not a tie: the float is below it)


def test_msgpack_float_seconds_no_longer_land_up_to_128_ns_off():
    # The case: round(x * 1e9) rounds the product to a double first.
    value = 1700000000.1234567
    exact = exact_ns(Fraction(value), 10**9)
    assert abs(round(value * 1e9) - exact) > 20  # what the old arithmetic did
    assert float_seconds_to_ns(value) == parser("epoch_s")(value) == parser("auto")(value) == exact


@pytest.mark.parametrize("fmt", list(UNITS))
@given(value=st.one_of(st.integers(-(2**70), 2**70), st.integers(-(10**12), 10**12)))
@settings(max_examples=300, deadline=None)
@example(value=MAX_NS)
@example(value=MIN_NS)
@example(value=MAX_NS + 1)
@example(value=MIN_NS - 1)
def test_integers_are_exact_and_bounded(fmt, value):
    assert outcome(parser(fmt), value) == exact_ns(Fraction(value), UNITS[fmt])


def decimal_text(sign: str, whole: str, frac: str | None) -> str:
    return sign + whole + ("." + frac if frac is not None else "")


decimals = st.builds(decimal_text, st.sampled_from(["", "-", "+"]), st.text("0123456789", max_size=20),
                     st.none() | st.text("0123456789", max_size=20)).filter(lambda t: any(c.isdigit() for c in t))


@pytest.mark.parametrize("fmt", [*UNITS, "auto"])
@given(text=decimals)
@settings(max_examples=300, deadline=None)
@example(text="1700000000123456789")
@example(text="1764439880.123456789")
@example(text="-1.5")
@example(text=".5")
@example(text="5.")
@example(text="+5")
@example(text="0000000000000000000001700000000")
@example(text="0.5")
@example(text="-0")
def test_decimal_strings_are_parsed_exactly(fmt, text):
    """Decimal text follows JSON's number grammar (no exponent), as every number given as text:
    `.5`, `5.`, `+5`, leading zeros are refused (they were taken)."""
    if re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?", text) is None:
        assert outcome(parser(fmt), text) == "refused"
        assert outcome(parser(fmt), text.encode("ascii")) == "refused"
        return
    value = Fraction(text)
    unit = UNITS[fmt] if fmt in UNITS else auto_unit(value)
    assert outcome(parser(fmt), text) == exact_ns(value, unit)
    assert outcome(parser(fmt), text.encode("ascii")) == exact_ns(value, unit)


def test_auto_digit_strings_no_longer_go_through_float():
    # The case: float("1700000000123456789") is 1700000000123456768 (21 ns early).
    assert parser("auto")("1700000000123456789") == 1700000000123456789
    assert parser("auto")("1764439880.123456789") == 1764439880123456789
    assert parser("epoch_s")("1764439880") == 1764439880 * 10**9


@pytest.mark.parametrize("fmt", [*UNITS, "auto", "rfc3339"])
@pytest.mark.parametrize("value", [
    "１７０００００００００",  # full-width digits: str.isdigit() says yes
    "١٧٠٠٠٠٠٠٠٠",  # Arabic-Indic digits
    "17000000²",  # superscript two, also isdigit()
    "２０２３-11-14T22:13:20Z",
    "2023-11-14T22:13:２０Z",
    "1_700_000_000", " 1700000000", "1700000000 ", "1e9", "0x10", "--1", "1.2.3", ".", "", "-", "nan", "inf",
    "1" * 65, b"\xff\xfe", b"17\xef\xbc\x90",
    True, False, None, [1], {"t": 1}, float("nan"), float("inf"), -float("inf"), 10**400,
    2**63, -(2**63) + 1,
])
def test_refusals_are_bad_timestamp(fmt, value):
    if fmt == "epoch_ns" and value == -(2**63) + 1:
        pass  # the sentinel itself: still refused, tested below
    with pytest.raises(TimestampError) as caught:
        parser(fmt)(value)
    assert caught.value.reason == "bad_timestamp"


def test_range_edges_are_influxdbs():
    ns = parser("epoch_ns")
    assert ns(MIN_NS) == -(2**63) + 2 and ns(MAX_NS) == 2**63 - 2
    for value in (MIN_NS - 1, MAX_NS + 1, 2**63 - 1, -(2**63)):
        with pytest.raises(TimestampError):
            ns(value)
    assert parser("rfc3339")("2262-04-11T23:47:16.854775806Z") == MAX_NS
    assert parser("rfc3339")("1677-09-21T00:12:43.145224194Z") == MIN_NS
    for text in ("2262-04-11T23:47:16.854775807Z", "1677-09-21T00:12:43.145224193Z", "9999-12-31T23:59:59Z",
                 "0001-01-01T00:00:00Z", "0000-01-01T00:00:00Z"):
        with pytest.raises(TimestampError):
            parser("rfc3339")(text)


def test_pre_1970_and_negative_times():
    assert parser("epoch_s")(-1) == -(10**9)
    assert parser("epoch_s")("-1.000000001") == -1000000001
    assert parser("epoch_s")(-0.25) == -250000000
    assert parser("rfc3339")("1969-12-31T23:59:59.999999999Z") == -1
    assert parser("rfc3339")("1900-01-01T00:00:00Z") == -2208988800 * 10**9
    assert parser("auto")(-1700000000123) == -1700000000123 * 10**6


def test_msgpack_timestamp_extension_is_exact():
    stamp = msgpack.unpackb(msgpack.packb(msgpack.Timestamp(1764439880, 123456789)), raw=False)
    for fmt in [*UNITS, "auto", "rfc3339"]:
        assert parser(fmt)(stamp) == 1764439880123456789


# RFC 3339 against datetime subtraction (a different calendar computation than the parser's).
offsets = st.one_of(st.just("Z"), st.just("z"), st.builds(
    lambda sign, h, m, colon: f"{sign}{h:02d}{':' if colon else ''}{m:02d}",
    st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59), st.booleans()))


def oracle_rfc3339(moment: datetime, frac: str, offset: str | None, zone: ZoneInfo | None) -> int | str:
    if offset is None:
        aware = moment.replace(tzinfo=zone)
        shift = aware.utcoffset()
    elif offset in ("Z", "z"):
        shift = timedelta(0)
    else:
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        shift = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    delta = moment.replace(tzinfo=UTC) - shift - EPOCH  # exact integer days/seconds/microseconds
    seconds = Fraction(delta.days * 86400 + delta.seconds) + Fraction(delta.microseconds, 10**6)
    if frac:
        seconds += Fraction(int(frac), 10 ** len(frac))
    return exact_ns(seconds, 10**9)


@given(moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       frac=st.text("0123456789", max_size=15), offset=offsets, sep=st.sampled_from("Tt "))
@settings(max_examples=400, deadline=None)
@example(moment=datetime(2023, 11, 14, 22, 13, 20), frac="123456789", offset="Z", sep="T")
@example(moment=datetime(2023, 11, 14, 22, 13, 20), frac="1234567895", offset="Z", sep="T")
@example(moment=datetime(2023, 11, 14, 22, 13, 20), frac="1234567885", offset="Z", sep="T")
@example(moment=datetime(1960, 2, 29, 0, 0, 0), frac="", offset="-23:59", sep="T")
def test_rfc3339_is_exact(moment, frac, offset, sep):
    moment = moment.replace(microsecond=0)
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + ("." + frac if frac else "") + offset
    if len(moment.strftime("%Y")) != 4:  # strftime drops leading zeros on some platforms
        text = f"{moment.year:04d}" + text[len(moment.strftime("%Y")):]
    assert outcome(parser("rfc3339"), text) == oracle_rfc3339(moment, frac, offset, None)
    assert outcome(parser("auto"), text) == oracle_rfc3339(moment, frac, offset, None)


@pytest.mark.parametrize("zone", ["Europe/Amsterdam", "America/St_Johns", "Asia/Kathmandu", "UTC"])
@given(moment=st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 1, 1)),
       frac=st.text("0123456789", max_size=9))
@settings(max_examples=150, deadline=None)
def test_naive_times_in_a_zone_are_exact(zone, moment, frac):
    moment = moment.replace(microsecond=0, fold=0)
    text = moment.strftime("%Y-%m-%d %H:%M:%S") + ("." + frac if frac else "")
    assert outcome(parser("naive", zone), text) == oracle_rfc3339(moment, frac, None, ZoneInfo(zone))


@pytest.mark.parametrize("text", [
    "2023-02-29T00:00:00Z", "2023-13-01T00:00:00Z", "2023-00-10T00:00:00Z", "2023-04-31T00:00:00Z",
    "2023-11-14T24:00:00Z", "2023-11-14T23:60:00Z", "2016-12-31T23:59:60Z", "2023-11-14T22:13:20+24:00",
    "2023-11-14T22:13:20+01:60", "2023-11-14T22:13:20.Z", "2023-11-14T22:13Z", "2023-11-14", "yesterday",
    "2023-11-14T22:13:20",  # no zone and none configured
])
def test_invalid_dates_are_refused(text):
    with pytest.raises(TimestampError):
        parser("rfc3339")(text)


def test_leap_day_and_whitespace():
    assert parser("rfc3339")("2024-02-29T00:00:00Z") == 1709164800 * 10**9
    assert parser("rfc3339")("2000-02-29T00:00:00Z") == 951782400 * 10**9
    for spaced in (" 2023-11-14T22:13:20Z\r\n", "2023-11-14T22:13:20Z ", "\t2023-11-14T22:13:20Z"):
        for fmt in ("rfc3339", "auto"):  # exactly, as numbers: surrounding space is refused
            with pytest.raises(TimestampError):
                parser(fmt, "UTC")(spaced)


@given(n=st.integers(-(10**30), 10**30), d=st.integers(1, 10**20))
def test_round_div_is_round_half_even(n, d):
    assert round_div(n, d) == round(Fraction(n, d))
