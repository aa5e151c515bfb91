"""InfluxDB 1.x line protocol: what it can carry, how to escape it, and the reference series key.

The rules below were measured against influxd 1.6.7 by writing every combination of up to three
hostile characters and reading it back (tests/test_lineproto_roundtrip.py keeps checking them
with hypothesis against a real influxd, and tests/test_fuzz.py through the running bridge):

- measurement: escape `,` and space with a backslash; `=`, `"`, carriage returns, tabs inside
  the name, NUL and other control characters are stored as they are. InfluxDB cannot carry (the
  point is refused or stored under another name): an empty name, a name starting with `#` (a
  comment line) or with a tab or NUL (skipped as white space), a trailing backslash, a backslash
  followed by `,`, space, `=` or `"`, or a newline that does not follow an unpaired backslash
  (influxd skips backslash pairs when it looks for the end of a line: a backslash then a newline is data).
- tag keys and tag values: escape `,`, `=` and space; every other character, backslashes
  included, is stored as it is, except a trailing backslash and a newline that does not follow an
  unpaired backslash (not representable).
- field keys come from the configuration; besides the tag-key rules they may hold no backslash
  and no control character (check-config refuses them).
- string field values: double-quoted, `"` and `\\` escaped; newlines and every other
  character are stored as they are.
- the series key (escaped measurement and tags) plus the longest field key plus 4 must fit in
  65,535 bytes (`max key length exceeded`); timestamps must lie within +-9223372036854775806.

`series_key` builds the escaped series `measurement,tag=value,...` with the tags sorted by key,
the way InfluxDB keys a series: the reference the mapping's paths (general, generated, C) build
the same string by (tests/test_mapping.py, the fastpath tests); uniqueness, binning, the Redis
cache and the sinks all use that string.

Lines are joined with newlines, but a string field may itself hold a newline: `line_ends` finds
the real line boundaries (`split_lines`, `count_lines`) and is the only place that knows how.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})

MIN_TIME = -9223372036854775806
MAX_TIME = 9223372036854775806
MAX_KEY_BYTES = 65535
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# A backslash followed by one of these cannot be written in a measurement name.
_BAD_MEASUREMENT_ESCAPE = re.compile(r'\\[, ="]')
# A tag key or value with an odd run of backslashes right before a space: the escape adds one
# more, and the run becomes pairs followed by a bare space. influxd's tag reader (a space after a
# backslash is data) stores the value, but its line scanner (and `_line_end`, which finds line
# ends as it does: backslash pairs skipped left to right) takes that space for the end of the tag
# set and counts the series' later `=` and `,` as the fields' (an odd run before `,` or `=` is a
# bare one then): a string field's quotes then toggle at the wrong place, so a newline inside the
# string ends the line, or the line's own newline does not. One point became two unparseable
# lines (a 400, the ledger off by one), or swallowed the next line. Without that bare space, the
# scanner ignores `,`, `=` and quotes in the tag set: every other backslash is harmless.
_BAD_TAG_ESCAPE = re.compile(r'(?<!\\)(?:\\\\)*\\ ')
# Numbers given as text (a string in JSON or msgpack, every value of text_delimited) follow JSON's
# number grammar in ASCII: no sign but a leading minus, no leading zeros, no padding, no
# underscores, no other scripts' digits, no `nan`/`inf` (float() accepts all of these).
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z", re.ASCII)
JSON_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)\Z", re.ASCII)


def number_text(value: str | bytes, integer: bool) -> str:
    """`value` as number text when it follows JSON's grammar (an integer's when `integer`), else
    LineError wrong_type."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise LineError("wrong_type", f"{_short(value)} is not a number") from None
    if (JSON_INTEGER if integer else JSON_NUMBER).match(value) is None:
        raise LineError("wrong_type", f"{_short(value)} is not {'an integer' if integer else 'a number'} "
                                      "(JSON's number grammar, ASCII)")
    return value



class LineError(ValueError):
    """A value that cannot be written as line protocol; `reason` names the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _utf8(text: str, what: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LineError("invalid_utf8", f"{what} holds a lone surrogate (not encodable as UTF-8)") from exc


def _newlines_escaped(text: str) -> bool:
    """True when every newline of `text` (as written) follows a backslash that pairs with it.

    influxd finds line ends by skipping backslash pairs (`\\x`) left to right: a newline right
    after an unpaired backslash is data, any other newline ends the line. Names never end in a
    backslash, so pairing restarts at every name.
    """
    i = 0
    while True:
        j = text.find("\n", i)
        if j < 0:
            return True
        run = 0
        k = j - 1
        while k >= i and text[k] == "\\":
            run += 1
            k -= 1
        if run % 2 == 0:
            return False
        i = j + 1


def check_measurement(name: str) -> None:
    """Raises LineError unless InfluxDB 1.x stores `name` as a measurement unchanged."""
    if not name:
        raise LineError("unrepresentable", "empty measurement")
    _utf8(name, "measurement")
    if "\n" in name and not _newlines_escaped(name):
        raise LineError("unrepresentable", f"measurement {name[:80]!r} holds a newline that is not after a backslash")
    if name[0] in "#\t\x00":
        raise LineError("unrepresentable", f"measurement {name[:80]!r} starts with {name[0]!r}, "
                                           "which line protocol reads as a comment or white space")
    if name[-1] == "\\" or ("\\" in name and _BAD_MEASUREMENT_ESCAPE.search(name)):
        raise LineError("unrepresentable", f"measurement {name[:80]!r} ends in a backslash or has one "
                                           "before `,`, space, `=` or `\"`")


def escape_measurement(name: str) -> str:
    check_measurement(name)
    return name.translate(_MEASUREMENT)


def escape_tag(text: str, what: str = "tag value") -> str:
    """Tag keys and tag values."""
    if not text:
        raise LineError("unrepresentable", f"empty {what}")
    _utf8(text, what)
    if text[-1] == "\\":
        raise LineError("unrepresentable", f"{what} {text[:80]!r} ends in a backslash")
    if "\\" in text and _BAD_TAG_ESCAPE.search(text):
        raise LineError("unrepresentable", f"{what} {text[:80]!r} has a backslash before a space (influxd's "
                                           "line scanner would end the tag set there)")
    escaped = text.translate(_KEY)
    if "\n" in text and not _newlines_escaped(escaped):
        raise LineError("unrepresentable", f"{what} {text[:80]!r} holds a newline that is not after a backslash")
    return escaped


def check_field_key(key: str) -> None:
    """Field keys (configured, never from data)."""
    if not key or key == "time":
        raise LineError("unrepresentable", f"field key {key!r} is empty or `time`")
    if "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise LineError("unrepresentable", f"field key {key!r} holds a backslash or a control character")
    _utf8(key, "field key")


def escape_field_key(key: str) -> str:
    check_field_key(key)
    return key.translate(_KEY)


def escape_key(key: str, what: str = "tag") -> str:
    """Compatibility name: tag keys and values (what="tag value"), field keys (what="field")."""
    if what == "field":
        return escape_field_key(key)
    if key == "time" and what == "tag":
        raise LineError("unrepresentable", "`time` cannot be a tag key")
    return escape_tag(key, what)


def series_key(measurement: str, tags: Iterable[tuple[str, str]]) -> str:
    """The series key (the reference the mapping's paths agree with): escaped measurement, then
    `,key=value` per tag sorted by raw key.

    `tags` are raw (unescaped) key/value pairs; empty values are left out (InfluxDB has no
    empty tag values).
    """
    key = escape_measurement(measurement)
    for k, v in sorted(tags):
        if v != "":
            key += f",{escape_tag(k, 'tag key')}={escape_tag(v)}"
    return key


def unescape_measurement(escaped: str) -> str:
    return escaped.replace("\\,", ",").replace("\\ ", " ")


def format_string_field(value: str) -> str:
    _utf8(value, "string field")
    return '"' + value.translate(_STRING) + '"'


def format_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise LineError("non_finite", f"{value!r} cannot be stored in InfluxDB")
    return repr(float(value))


def _nested(value: object) -> bool:
    return isinstance(value, dict | list | tuple | set)


def format_field_value(value: object, kind: str) -> str:
    """Formats a field value of a declared kind: float, integer, boolean or string."""
    if _nested(value):
        raise LineError("nested_value", f"a {type(value).__name__} where a {kind} is declared")
    if kind == "float":
        if isinstance(value, bool):
            raise LineError("wrong_type", f"boolean {value!r} where a float is declared")
        if isinstance(value, int):
            try:
                return format_float(float(value))
            except OverflowError as exc:
                raise LineError("integer_overflow", f"integer of {value.bit_length()} bits is beyond a float") from exc
        if isinstance(value, str | bytes):
            value = number_text(value, integer=False)
        elif not isinstance(value, float):
            raise LineError("wrong_type", f"{_short(value)} is not a float")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise LineError("wrong_type", f"{_short(value)} is not a float") from exc
        return format_float(number)
    if kind == "integer":
        if isinstance(value, bool):
            raise LineError("wrong_type", f"boolean {value!r} where an integer is declared")
        if isinstance(value, float):
            if not value.is_integer():
                raise LineError("wrong_type" if math.isfinite(value) else "non_finite",
                                f"{value!r} is not an integer")
            value = int(value)
        elif isinstance(value, str | bytes):
            try:
                value = int(number_text(value, integer=True))
            except ValueError as exc:
                reason = "integer_overflow" if "limit" in str(exc) else "wrong_type"
                raise LineError(reason, f"{_short(value)} is not an integer") from exc
        if not isinstance(value, int):
            raise LineError("wrong_type", f"{_short(value)} is not an integer")
        if not INT64_MIN <= value <= INT64_MAX:
            raise LineError("integer_overflow", f"integer of {value.bit_length()} bits does not fit 64 bits")
        return f"{value}i"
    if kind == "boolean":
        if isinstance(value, bool):
            return "true" if value else "false"
        # One grammar for text: JSON's literals `true`, `false` or the integers 0 and 1 (as
        # number text follows JSON's number grammar), ASCII, exactly: no case folding, no
        # surrounding space, no `yes`/`t` (they were taken, and a typo became a value).
        if type(value) is int and value in (0, 1):
            return "true" if value else "false"
        if isinstance(value, str | bytes):
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if text in ("true", "1"):
                return "true"
            if text in ("false", "0"):
                return "false"
        raise LineError("wrong_type", f"{_short(value)} is not a boolean (true, false, 1 or 0, exactly)")
    if kind == "string":
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise LineError("invalid_utf8", "string field is not UTF-8") from exc
        elif not isinstance(value, str):
            # A number or boolean would be stored in Python's spelling ("True", "1.5" for 1.50,
            # "100.0" for 1e2): not what was sent, so refused (declare the field's own type).
            raise LineError("wrong_type", f"a {type(value).__name__} where a string is declared")
        return format_string_field(str(value))
    raise LineError("wrong_type", f"unknown field kind {kind!r}")


def _short(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<integer of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_key_length(series: str, longest_field_key: int) -> None:
    size = len(series.encode("utf-8")) + longest_field_key + 4
    if size > MAX_KEY_BYTES:
        raise LineError("key_too_long", f"series key of {size} bytes exceeds InfluxDB's {MAX_KEY_BYTES}")


def format_line(measurement: str, tags: list[tuple[str, str]], fields: list[tuple[str, str]],
                timestamp_ns: int) -> str:
    """One line from a raw measurement, raw tags and formatted fields (escaped key, value text)."""
    if not fields:
        raise LineError("missing_field", "a point needs at least one field")
    return f"{series_key(measurement, tags)} {','.join(f'{k}={v}' for k, v in fields)} {timestamp_ns}"


# --- line boundaries -----------------------------------------------------------------------------
# influxd (models.scanLine) finds the end of a line by skipping backslash pairs, noting the first
# space (the fields start), counting `=` and `,` outside quotes and toggling "quoted" on a `"` that
# stands where a value starts (more `=` than `,` seen): a newline that is neither paired with a
# backslash nor quoted ends the line. This is the same walk, one special character at a time.
_SPECIAL = re.compile(rb'[\\ =,"\n]')


def _line_end(data: bytes, i: int) -> int:
    """Index of the newline that ends the line starting at i (len(data) when there is none)."""
    quoted = fields = False
    equals = commas = 0
    size = len(data)
    search = _SPECIAL.search
    while True:
        found = search(data, i)
        if found is None:
            return size
        i = found.start()
        c = data[i]
        if c == 0x5C:  # backslash: skip the pair
            i += 2
            continue
        if c == 0x20:
            fields = True
        elif fields and not quoted and c == 0x3D:
            equals += 1
        elif fields and not quoted and c == 0x2C:
            commas += 1
        elif fields and c == 0x22 and equals > commas:
            quoted = not quoted
        elif c == 0x0A and not quoted:
            return i
        i += 1


def _simple(data: bytes) -> bool:
    """No quote and no backslash-newline: every newline ends a line. (A byte is found by memchr,
    two by a search several times slower: the backslash-newline is looked for only where there
    is a backslash.)"""
    return b'"' not in data and (b"\\" not in data or b"\\\n" not in data)


def nth_line_end(data: bytes, n: int, lines: int, start: int = 0) -> int:
    """The offset just past the `n`-th line of `data` from `start` on (1 <= n <= lines), whose
    `lines` lines there are simple (`_simple`: each newline ends one) (`start`: 0 or just past a
    newline, where a line starts): without an object per line (or a copy). Each step counts the
    newlines below a guess (interpolated, every other one halving) until few are left between
    the bounds, then walks them; ValueError when `data` holds fewer newlines than that. A guess
    a few lines from the n-th (the interpolation on lines of about one length) walks to it at
    once: halving from there counted up to twice more bytes than the guess did."""
    lo, lo_n, hi, hi_n = start, 0, len(data), lines  # data[start:lo] holds lo_n < n newlines, data[start:hi] hi_n >= n
    step = 0
    while hi_n - lo_n > 16 and hi - lo > 2:
        interpolated = min(max(lo + (hi - lo) * (n - lo_n) // (hi_n - lo_n), lo + 1), hi - 1)
        guess = (lo + hi) // 2 if step & 1 else interpolated
        step += 1
        below = lo_n + data.count(b"\n", lo, guess)
        if below >= n:
            if below - n < 16:  # the n-th is the (below - n + 1)-th newline back from the guess
                pos = guess
                for _ in range(below - n + 1):
                    pos = data.rfind(b"\n", lo, pos)
                return pos + 1
            hi, hi_n = guess, below
        elif n - below <= 16:  # a few lines short: the n-th is the (n - below)-th from the guess on
            pos = guess - 1
            for _ in range(n - below):
                pos = data.index(b"\n", pos + 1)
            return pos + 1
        else:
            lo, lo_n = guess, below
    pos = lo - 1
    for _ in range(n - lo_n):
        pos = data.index(b"\n", pos + 1)
    return pos + 1


def line_ends(data: bytes, limit: int | None = None) -> list[int]:
    """Offsets just past each line's terminating newline (at most `limit` lines); a last line
    without its newline (a torn write) is not included."""
    ends: list[int] = []
    if _simple(data):
        pos = data.find(b"\n")
        while pos >= 0 and (limit is None or len(ends) < limit):
            ends.append(pos + 1)
            pos = data.find(b"\n", pos + 1)
        return ends
    pos, size = 0, len(data)
    while pos < size and (limit is None or len(ends) < limit):
        end = _line_end(data, pos)
        if end >= size:
            break
        pos = end + 1
        ends.append(pos)
    return ends


def count_lines(data: bytes) -> int:
    if _simple(data):
        return data.count(b"\n")
    return len(line_ends(data))


def split_lines(data: bytes) -> list[bytes]:
    """The lines (each with its newline)."""
    out, start = [], 0
    for end in line_ends(data):
        out.append(data[start:end])
        start = end
    return out


def complete_prefix(data: bytes) -> int:
    """Length of the longest prefix made of whole lines (what a torn write leaves intact)."""
    if _simple(data):
        return data.rfind(b"\n") + 1
    ends = line_ends(data)
    return ends[-1] if ends else 0


# --- reading lines back (partial-write analysis, rare path) ----------------------------------------
_FIELD_PARTS = re.compile(rb'((?:\\[^\n]|[^\\=\n ,])+)=("(?:[^"\\]|\\.)*"|[^ ,\n"]+)', re.S)
_SERIES_END = re.compile(rb"(?<!\\) ")


def parse_line(line: bytes) -> tuple[str, str, dict[str, str], int | None]:
    """(measurement, series key, {field key: InfluxDB type}, timestamp) of one of our lines."""
    text = line.rstrip(b"\n")
    cut = _SERIES_END.search(text)
    if cut is None:
        raise ValueError("no fields")
    series = text[:cut.start()]
    rest = text[cut.end():]
    fields: dict[str, str] = {}
    pos = 0
    while True:
        found = _FIELD_PARTS.match(rest, pos)
        if found is None:
            break
        key = found.group(1).decode("utf-8", "replace").replace("\\,", ",").replace("\\=", "=").replace("\\ ", " ")
        value = found.group(2)
        if value.startswith(b'"'):
            kind = "string"
        elif value.endswith(b"i"):
            kind = "integer"
        elif value.endswith(b"u"):
            kind = "unsigned"
        elif value in (b"t", b"T", b"true", b"True", b"TRUE", b"f", b"F", b"false", b"False", b"FALSE"):
            kind = "boolean"
        else:
            kind = "float"
        fields[key] = kind
        pos = found.end()
        if rest[pos:pos + 1] != b",":
            break
        pos += 1
    stamp = rest[pos + 1:] if rest[pos:pos + 1] == b" " else b""
    timestamp = int(stamp) if stamp.lstrip(b"-").isdigit() else None
    series_text = series.decode("utf-8", "replace")
    cut_m = re.search(r"(?<!\\),", series_text)
    measurement = series_text[:cut_m.start()] if cut_m else series_text
    return unescape_measurement(measurement), series_text, fields, timestamp
