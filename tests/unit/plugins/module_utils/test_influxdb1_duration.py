"""The collection's one duration parser: what it accepts, what it refuses, and real influxd as the oracle."""

from __future__ import annotations

import itertools
import re

import pytest
from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import (
    DAY,
    HOUR,
    MAX_NS,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    SECOND,
    UNITS,
    WEEK,
    DurationError,
    duration_error,
    effective_shard_duration,
    format_duration,
    format_retention,
    parse_duration,
    retention_policy_error,
)
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(("text", "ns"), [
    ("INF", 0), ("inf", 0), ("Inf", 0), ("0", 0), ("0s", 0), ("0h0m", 0),
    ("30d", 30 * DAY), ("720h0m0s", 30 * DAY), ("4w2d", 30 * DAY), (" 30d ", 30 * DAY),
    ("1w", WEEK), ("1h30m", 90 * MINUTE), ("1m60m", 61 * MINUTE), ("1d1d", 2 * DAY),
    ("500ms", 500 * MILLISECOND), ("10u", 10 * MICROSECOND), ("10µ", 10 * MICROSECOND), ("100ns", 100),
    # Go's spelling, as the server prints durations and reads them in influxdb.conf.
    ("1h0m0.5s", HOUR + SECOND // 2), ("1.5h", 90 * MINUTE), ("10us", 10 * MICROSECOND),
    ("10µs", 10 * MICROSECOND), ("10μs", 10 * MICROSECOND), ("2562047h47m16.854775807s", MAX_NS),
    ("9223372036854775807ns", MAX_NS), ("106751d", 106751 * DAY),
    (0, 0), (3600, 3600),
])
def test_accepted(text, ns):
    assert parse_duration(text) == ns
    assert duration_error(text) == ""


@pytest.mark.parametrize(("text", "reason"), [
    ("-1d", "negative"), ("-0s", "negative"), (-5, "negative"),
    ("1H", "not an InfluxDB duration"), ("30 days", "not an InfluxDB duration"), ("1y", "not an InfluxDB duration"),
    ("", "not an InfluxDB duration"), ("d", "not an InfluxDB duration"), ("1", "not an InfluxDB duration"),
    ("00", "not an InfluxDB duration"), ("1.5", "not an InfluxDB duration"), ("1h-5m", "not an InfluxDB duration"),
    ("1h 30m", "not an InfluxDB duration"), ("INFINITY", "not an InfluxDB duration"),
    ("1μ", "not an InfluxDB duration"),
    ("106752d", "overflows"), ("9223372036854775808ns", "overflows"),
    (None, "is not a duration"), (True, "is not a duration"), (1.5, "is not a duration"),
])
def test_refused_with_the_reason(text, reason):
    with pytest.raises(DurationError, match=reason):
        parse_duration(text)
    assert reason in duration_error(text)


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (WEEK, "1w"), (2 * WEEK, "2w"), (8 * DAY, "8d"), (30 * DAY, "30d"), (90 * MINUTE, "90m"),
    (1500 * MILLISECOND, "1500ms"), (MAX_NS, "9223372036854775807ns"),
])
def test_format_is_the_largest_exact_influxql_unit(ns, text):
    assert format_duration(ns) == text
    assert format_retention(ns) == ("INF" if ns == 0 else text)


parts = st.lists(st.tuples(st.integers(0, 10**12), st.sampled_from(sorted(UNITS))), min_size=1, max_size=5)


@settings(max_examples=300)
@given(parts)
def test_any_concatenation_of_parts_is_their_sum(pieces):
    text = "".join("%d%s" % piece for piece in pieces)
    total = sum(n * UNITS[unit] for n, unit in pieces)
    if total > MAX_NS:
        with pytest.raises(DurationError, match="overflows"):
            parse_duration(text)
    else:
        assert parse_duration(text) == total


@settings(max_examples=300)
@given(st.integers(0, MAX_NS))
def test_format_parses_back(ns):
    assert parse_duration(format_duration(ns)) == ns


def go_string(ns):
    """Go's time.Duration.String(), as `SHOW RETENTION POLICIES` prints durations."""
    if ns == 0:
        return "0s"
    if ns < SECOND:
        for unit, scale in (("ms", MILLISECOND), ("µs", MICROSECOND), ("ns", 1)):
            if ns >= scale:
                whole, rest = divmod(ns, scale)
                frac = ("%0*d" % (len(str(scale)) - 1, rest)).rstrip("0") if scale > 1 else ""
                return "%d%s%s" % (whole, "." + frac if frac else "", unit)
    hours, rest = divmod(ns, HOUR)
    minutes, rest = divmod(rest, MINUTE)
    seconds, nanos = divmod(rest, SECOND)
    frac = ("%09d" % nanos).rstrip("0")
    text = "%d.%ss" % (seconds, frac) if frac else "%ds" % seconds
    if hours:
        return "%dh%dm%s" % (hours, minutes, text)
    if minutes:
        return "%dm%s" % (minutes, text)
    return text


@settings(max_examples=300)
@given(st.integers(0, MAX_NS))
def test_gos_spelling_parses_back(ns):
    assert parse_duration(go_string(ns)) == ns


@pytest.mark.parametrize(("shard", "duration", "stored"), [
    (30 * MINUTE, DAY, HOUR), (0, DAY, HOUR), (0, 3 * DAY, DAY), (0, 200 * DAY, WEEK), (0, 0, WEEK),
    (2 * HOUR, DAY, 2 * HOUR), (1000 * WEEK, 0, 1000 * WEEK),
])
def test_shard_duration_as_the_server_stores_it(shard, duration, stored):
    assert effective_shard_duration(shard, duration) == stored


@pytest.mark.parametrize(("duration", "shard", "problem"), [
    ("30d", "1d", ""), ("INF", "1000w", ""), ("2h", "2h", ""), ("1d", "30m", ""), ("1h", None, ""),
    ("59m", None, "shorter than InfluxDB's minimum retention of 1h"),
    ("1d", "1w", "shard_duration '1w' is longer than duration '1d'"),
    ("1h", "0", ""), ("1h", "2h", "is longer than duration"),
    ("x", None, "duration 'x' is not an InfluxDB duration"), ("1d", "x", "shard_duration 'x' is not"),
])
def test_retention_policy_rules(duration, shard, problem):
    found = retention_policy_error(duration, shard)
    assert (found == "") == (problem == "") and problem in found


# --- real influxd as the oracle -------------------------------------------------------------------

_QL_UNITS = ["ns", "u", "µ", "ms", "s", "m", "h", "d", "w"]
_numbers = st.one_of(st.sampled_from([0, 1, 7, 30, 59, 60, 90, 168, 720, 2562047, 106751, 106752]),
                     st.integers(0, 10**6))
# InfluxQL literals (influxd must accept them, with the parser's value)...
_literals = st.lists(st.tuples(_numbers, st.sampled_from(_QL_UNITS)), min_size=1, max_size=4).map(
    lambda parts: "".join("%d%s" % part for part in parts))
# ...and the same with one character changed: signs, decimals, spaces, case, Go's units, garbage.
_corrupted = st.tuples(_literals, st.integers(0, 30), st.sampled_from(["-", ".5", " ", "H", "D", "y", "us", "µs", "x",
                                                                       "", "0", "INF"])).map(
    lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:])
_candidates = st.one_of(_literals, _corrupted, st.sampled_from(["INF", "inf", "Inf", "0", "0s", "iNf", "INFs", "1.5h"]))
_counter = itertools.count()


def _rows(server, statement):
    return server.query(statement)


def _server_reading(server, literal):
    """influxd's reading of a duration literal: ns, or None when its parser refuses it.

    As a retention policy's duration first (printed back by SHOW RETENTION POLICIES); values under
    the 1h minimum are read back from a continuous query's GROUP BY time(...) instead.
    """
    name = "oracle_%d" % next(_counter)
    _status, payload = server.http("/query", {"q": 'CREATE RETENTION POLICY "%s" ON "oracle" DURATION %s '
                                              "REPLICATION 1 SHARD DURATION 1h" % (name, literal)})
    if "error" in payload:
        assert "error parsing query" in payload["error"], payload
        return None
    error = payload["results"][0].get("error")
    if not error:
        rows = [r for r in _rows(server, 'SHOW RETENTION POLICIES ON "oracle"') if r["name"] == name]
        server.query('DROP RETENTION POLICY "%s" ON "oracle"' % name)
        return parse_duration(rows[0]["duration"])
    assert "must be at least" in error or "greater than the shard duration" in error, error
    _status, payload = server.http("/query", {"q": 'CREATE CONTINUOUS QUERY "%s" ON "oracle" BEGIN SELECT count(v) '
                                              "INTO oracle.autogen.o FROM oracle.autogen.i GROUP BY time(%s) END"
                                              % (name, literal)})
    if "error" in payload or payload["results"][0].get("error"):
        return "parsed"  # e.g. time(0s): refused for its value, not its spelling
    stored = [r["query"] for r in _rows(server, "SHOW CONTINUOUS QUERIES") if r["name"] == name][0]
    server.query('DROP CONTINUOUS QUERY "%s" ON "oracle"' % name)
    return parse_duration(stored.split("GROUP BY time(")[1].split(")")[0])


@pytest.fixture(scope="module")
def oracle(server):
    server.query('CREATE DATABASE "oracle"')
    return server


@settings(max_examples=200, deadline=None)
@given(_candidates)
def test_influxd_and_the_parser_agree(oracle, literal):
    if not literal.strip() or literal != literal.strip():
        return  # InfluxQL tokens end at whitespace; the parser strips it (a YAML value)
    reading = _server_reading(oracle, literal)
    ours = duration_error(literal) == ""
    if reading is None:
        # influxd refuses it: so does the parser, unless it is one of the documented extras
        # (Go's spelling with decimals or us/µs, and a bare 0), which the modules send normalised.
        assert not ours or any(extra in literal for extra in (".", "us", "µs")) or literal == "0", literal
    elif not ours:
        # The one refusal of a literal influxd parses: past int64, where influxd's own overflow
        # check misses a sum that wraps around to a positive value and keeps the wrong duration.
        assert "overflows" in duration_error(literal), literal
        total = sum(int(n) * UNITS[unit] for n, unit in re.findall(r"([0-9]+)(ns|ms|u|µ|s|m|h|d|w)", literal))
        assert total > MAX_NS and reading != total, literal
    elif reading != "parsed":
        assert parse_duration(literal) == reading, literal
