"""What the bridge writes reads back identical from a real InfluxDB; what it cannot carry is refused."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station_bridge.lineproto import LineError, escape_key, escape_measurement, format_field_value, format_line

HOSTILE = st.text(alphabet=st.sampled_from([*list('ab ,="\\\n\r=#\t\'é€'), "x"]), min_size=1, max_size=12)
_seq = [0]


def _stamp() -> int:
    _seq[0] += 1
    return (time.time_ns() // 1_000_000_000 - 60) * 1_000_000_000 + _seq[0]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tag=HOSTILE, text=HOSTILE, name=HOSTILE)
def test_hostile_tags_and_strings_round_trip_or_are_refused(influxd, tag, text, name):
    db = "roundtrip"
    influxd.query(f'CREATE DATABASE "{db}"')
    try:
        line = format_line("m_" + name, [(escape_key("tag"), escape_key(tag, "tag value"))],
                           [("s", format_field_value(text, "string")), ("v", "1.0")], ts := _stamp())
    except LineError as exc:
        assert exc.reason == "invalid_tag"
        assert "\n" in tag or "\r" in tag or tag.endswith("\\") or "\n" in name or "\r" in name \
            or "\\" in name or "=" in name
        return
    status, body = influxd.write(line, db)
    assert status == 204, (line, body)
    assert line.count("\n") == text.count("\n")  # only string fields may hold raw newlines
    # Every example has its own timestamp: find the point without quoting its name in InfluxQL.
    rows = influxd.query(f"SELECT * FROM /.*/ WHERE time = {ts}", db=db)
    assert len(rows) == 1, (line, rows)
    assert rows[0]["tag"] == tag
    assert rows[0]["s"] == text
    assert rows[0]["_measurement"] == "m_" + name


@pytest.mark.parametrize(("kind", "value", "text"), [
    ("float", 1.08234, "1.08234"), ("float", 3, "3.0"), ("integer", 1000000, "1000000i"),
    ("integer", 12.0, "12i"), ("integer", "42", "42i"), ("boolean", True, "true"), ("boolean", "false", "false"),
    ("string", 'say "hi"\\', '"say \\"hi\\"\\\\"'),
])
def test_field_formats(kind, value, text):
    assert format_field_value(value, kind) == text


@pytest.mark.parametrize(("kind", "value", "reason"), [
    ("float", float("nan"), "non_finite"), ("float", float("inf"), "non_finite"), ("float", "abc", "wrong_type"),
    ("integer", 1.5, "wrong_type"), ("integer", 2**63, "wrong_type"), ("integer", True, "wrong_type"),
    ("boolean", "maybe", "wrong_type"), ("string", b"\xff", "invalid_utf8"),
])
def test_field_values_that_cannot_be_written(kind, value, reason):
    with pytest.raises(LineError) as err:
        format_field_value(value, kind)
    assert err.value.reason == reason


def test_names_that_cannot_be_written():
    for bad in ("", "a\nb", "ends\\", "#comment"):
        with pytest.raises(LineError):
            escape_measurement(bad)
    with pytest.raises(LineError):
        escape_key("time", "field")
