"""InfluxDB line protocol: escaping and formatting, as InfluxDB 1.x parses it.

Measured against influxd 1.6.7 (tests/test_lineproto_roundtrip.py writes and reads back):
- measurement: escape commas and spaces; `=` and backslashes are refused (see escape_measurement);
- tag keys, tag values, field keys: escape commas, equals signs and spaces. A backslash is
  kept literally (the parser does not unescape `\\`), so a name ending in a backslash, or
  holding a newline, cannot be represented: such points are rejected and counted;
- string field values: double-quoted; escape double quotes and backslashes. A raw newline
  inside the quotes is valid and reads back unchanged.
"""

from __future__ import annotations

import math

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})


class LineError(ValueError):
    """A value that cannot be written as line protocol; `reason` names the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _check_name(text: str, what: str) -> None:
    if not text:
        raise LineError("invalid_tag", f"empty {what}")
    if "\n" in text or "\r" in text or text.endswith("\\"):
        raise LineError("invalid_tag", f"{what} {text!r} holds a newline or ends in a backslash, "
                                       "which line protocol cannot carry")


def escape_measurement(name: str) -> str:
    _check_name(name, "measurement")
    if name.startswith("#"):
        raise LineError("invalid_tag", f"measurement {name!r} would read as a comment line")
    if "=" in name or "\\" in name:
        # influxd 1.6 unescapes `\=` in measurements and then fails to find such series by
        # query (found by the round-trip property test): refuse rather than write unreadable data.
        raise LineError("invalid_tag", f"measurement {name!r} holds `=` or a backslash")
    return name.translate(_MEASUREMENT)


def escape_key(key: str, what: str = "tag") -> str:
    """Tag keys, tag values and field keys."""
    _check_name(key, what)
    if key == "time" and what != "tag value":
        raise LineError("invalid_tag", "`time` cannot be a tag or field key")
    return key.translate(_KEY)


def format_string_field(value: str) -> str:
    return '"' + value.translate(_STRING) + '"'


def format_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise LineError("non_finite", f"{value!r} cannot be stored in InfluxDB")
    return repr(float(value))


def format_field_value(value: object, kind: str) -> str:
    """Formats a field value of a declared kind: float, integer, boolean or string."""
    if kind == "float":
        if isinstance(value, bool):
            raise LineError("wrong_type", f"boolean {value!r} where a float is declared")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise LineError("wrong_type", f"{value!r} is not a float") from exc
        return format_float(number)
    if kind == "integer":
        if isinstance(value, bool):
            raise LineError("wrong_type", f"boolean {value!r} where an integer is declared")
        if isinstance(value, float):
            if not value.is_integer():
                raise LineError("wrong_type", f"{value!r} is not an integer")
            value = int(value)
        try:
            number = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError) as exc:
            raise LineError("wrong_type", f"{value!r} is not an integer") from exc
        if not -(2**63) <= number < 2**63:
            raise LineError("wrong_type", f"{number} does not fit a 64-bit integer")
        return f"{number}i"
    if kind == "boolean":
        if isinstance(value, bool):
            return "true" if value else "false"
        text = str(value).strip().lower()
        if text in ("true", "t", "1", "yes"):
            return "true"
        if text in ("false", "f", "0", "no"):
            return "false"
        raise LineError("wrong_type", f"{value!r} is not a boolean")
    if kind == "string":
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LineError("invalid_utf8", "string field is not UTF-8") from exc
        return format_string_field(str(value))
    raise LineError("wrong_type", f"unknown field kind {kind!r}")


def format_line(measurement: str, tags: list[tuple[str, str]], fields: list[tuple[str, str]],
                timestamp_ns: int) -> str:
    """One line; tags must already be escaped key/value pairs sorted by key, fields formatted."""
    if not fields:
        raise LineError("no_fields", "a point needs at least one field")
    head = escape_measurement(measurement)
    if tags:
        head += "," + ",".join(f"{k}={v}" for k, v in tags)
    return f"{head} {','.join(f'{k}={v}' for k, v in fields)} {timestamp_ns}"
