# -*- coding: utf-8 -*-
# Shared by the influxdb1_* modules: connection options, InfluxQL over HTTP,
# quoting, durations, and the server's normalised continuous query text.
# Only the standard library and ansible.module_utils: stations need no client library.

from __future__ import annotations

import json
import re

from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import urlencode
from ansible.module_utils.urls import open_url

CONNECTION_ARGS = dict(
    login_host=dict(type="str", default="localhost"),
    login_port=dict(type="int", default=8086),
    login_username=dict(type="str"),
    login_password=dict(type="str", no_log=True),
    ssl=dict(type="bool", default=False),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
    timeout=dict(type="int", default=10),
)

# InfluxDB's reply while auth is on and no admin exists yet: only
# `CREATE USER ... WITH ALL PRIVILEGES` is accepted then.
NO_ADMIN_MESSAGE = "create admin user first"


def connection_spec(**options):
    """The modules' argument spec: their own options plus the connection options."""
    spec = dict(CONNECTION_ARGS)
    spec.update(options)
    return spec


class InfluxDBError(Exception):
    """An HTTP or InfluxQL error, with the server's own message."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        self.status = status


class InfluxDBClient:
    """InfluxQL over the 1.x HTTP API (`POST /query`)."""

    def __init__(self, module, username=None, password=None):
        params = module.params
        self.base_url = "%s://%s:%d" % (
            "https" if params["ssl"] else "http", params["login_host"], params["login_port"])
        self.username = params["login_username"] if username is None else username
        self.password = params["login_password"] if password is None else password
        self.validate_certs = params["validate_certs"]
        self.ca_path = params.get("ca_path")
        self.timeout = params["timeout"]

    def query(self, statement, database=None, credentials=True):
        """Runs one statement; returns its result dict. Raises InfluxDBError."""
        fields = {"q": statement}
        if database:
            fields["db"] = database
        kwargs = dict(
            method="POST", data=urlencode(fields),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            validate_certs=self.validate_certs, timeout=self.timeout,
        )
        if self.ca_path:
            kwargs["ca_path"] = self.ca_path
        if credentials and self.username:
            kwargs.update(url_username=self.username, url_password=self.password or "",
                          force_basic_auth=True)
        try:
            response = open_url(self.base_url + "/query", **kwargs)
            status, body = response.getcode(), response.read()
        except HTTPError as exc:
            status, body = exc.code, exc.read()
        except (URLError, OSError) as exc:
            raise InfluxDBError("cannot reach InfluxDB at %s: %s" % (self.base_url, exc)) from exc
        try:
            payload = json.loads(body.decode("utf-8") or "{}")
        except ValueError as exc:
            raise InfluxDBError("InfluxDB answered HTTP %d with a body that is not JSON" % status, status) from exc
        if "error" in payload:
            raise InfluxDBError(payload["error"], status)
        if status >= 300:
            raise InfluxDBError("InfluxDB answered HTTP %d" % status, status)
        result = (payload.get("results") or [{}])[0]
        if "error" in result:
            raise InfluxDBError(result["error"], status)
        return result

    def rows(self, statement, database=None):
        """Runs a SHOW statement; returns rows as dicts, with the series name as `_series`."""
        out = []
        for series in self.query(statement, database).get("series", []):
            for values in series.get("values") or []:
                row = dict(zip(series["columns"], values, strict=True))
                row["_series"] = series.get("name")
                out.append(row)
        return out

    def admin_exists(self):
        """False while auth is on and no admin exists (the bootstrap window)."""
        try:
            self.query("SHOW DATABASES", credentials=False)
        except InfluxDBError as exc:
            if NO_ADMIN_MESSAGE in exc.message:
                return False
            if exc.status == 401:
                return True
            raise
        return True  # auth off: nothing to bootstrap

    def auth_enabled(self):
        try:
            self.query("SHOW DATABASES", credentials=False)
        except InfluxDBError as exc:
            if exc.status in (401, 403):
                return True
            raise
        return False

    def databases(self):
        return [row["name"] for row in self.rows("SHOW DATABASES")]


def run_module(module, action):
    """Calls action(client); turns InfluxDB errors into fail_json with the server's message."""
    try:
        module.exit_json(**action(InfluxDBClient(module)))
    except InfluxDBError as exc:
        module.fail_json(msg=exc.message, status=exc.status)


# --- quoting ---------------------------------------------------------------------

_BARE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote_ident(name):
    """Double-quoted InfluxQL identifier (always safe, keywords included)."""
    return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')


def quote_string(value):
    """Single-quoted InfluxQL string literal (passwords)."""
    return "'%s'" % value.replace("\\", "\\\\").replace("'", "\\'")


# --- durations ----------------------------------------------------------------------

_UNIT_NS = {
    "ns": 1, "u": 10**3, "µ": 10**3, "us": 10**3, "ms": 10**6, "s": 10**9,
    "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|u|µ|ms|s|m|h|d|w)")


def parse_duration(text):
    """InfluxQL (`30d`, `1h30m`, `INF`) or Go (`720h0m0s`) duration -> ns; INF/0 -> 0.

    Raises ValueError for anything else, negative values included.
    """
    value = str(text).strip()
    if value.upper() == "INF" or value == "0":
        return 0
    pos, total = 0, 0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        unit = match.group(2).replace("µs", "u").replace("us", "u")
        total += int(float(match.group(1)) * _UNIT_NS[unit])
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError("invalid duration %r: use InfluxQL units (ns, u, ms, s, m, h, d, w) or INF" % text)
    return total


def format_duration(ns):
    """ns -> the compact InfluxQL form the server prints in queries (1h, 90m, 7d -> 168h)."""
    if ns == 0:
        return "0s"
    for unit in ("w", "d", "h", "m", "s", "ms", "u", "ns"):
        if ns % _UNIT_NS[unit] == 0:
            # The server prints weeks and days as hours except exact weeks.
            return "%d%s" % (ns // _UNIT_NS[unit], unit)
    return "%dns" % ns


# --- continuous query normalisation ------------------------------------------------------
#
# InfluxDB stores a CQ as `stmt.String()` of its parsed form: keywords upper case,
# functions lower case, identifiers unquoted unless needed, floats with 3 decimals,
# durations canonical, and every measurement qualified with database and RP. Both
# sides are reduced to tokens in one canonical form and compared as lists.

_KEYWORDS = frozenset("""
ALL ALTER ANALYZE AND ANY AS ASC BEGIN BY CARDINALITY CONTINUOUS CREATE DATABASE
DATABASES DEFAULT DELETE DESC DESTINATIONS DIAGNOSTICS DISTINCT DROP DURATION END EVERY
EXACT EXPLAIN FIELD FOR FROM GRANT GRANTS GROUP GROUPS IN INF INSERT INTO KEY KEYS KILL
LIMIT MEASUREMENT MEASUREMENTS NAME OFFSET ON OR ORDER PASSWORD POLICIES POLICY PRIVILEGES
QUERIES QUERY READ REPLICATION RESAMPLE RETENTION REVOKE SELECT SERIES SET SHARD SHARDS
SLIMIT SOFFSET STATS SUBSCRIPTION SUBSCRIPTIONS TAG TO USER USERS VALUES WHERE WITH WRITE
""".split())

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<qident>"(?:[^"\\]|\\.)*")
  | (?P<duration>\d+(?:ns|us|µs|u|µ|ms|s|m|h|d|w)(?:\d+(?:ns|us|µs|u|µ|ms|s|m|h|d|w))*(?![A-Za-z0-9_]))
  | (?P<number>\d+\.\d*|\.\d+|\d+)
  | (?P<backref>:MEASUREMENT\b)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>=~|!~|!=|<>|<=|>=|::|[=<>+\-*/%(),.;])
  | (?P<other>.)
""", re.VERBOSE)

# After these tokens a `/` opens a regex, not a division.
_REGEX_CONTEXT = frozenset(["=~", "!~", "FROM", ".", ","])


def _unescape(text):
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def tokenize_influxql(text):
    """Tokens as (kind, value) tuples in canonical form."""
    tokens = []
    pos = 0
    in_from = False
    while pos < len(text):
        prev = tokens[-1][1] if tokens else None
        if text[pos] == "/" and (prev in ("=~", "!~", "FROM", ".") or (prev == "," and in_from)):
            end = pos + 1
            while end < len(text) and text[end] != "/":
                end += 2 if text[end] == "\\" else 1
            tokens.append(("regex", text[pos:end + 1]))
            pos = end + 1
            continue
        match = _TOKEN.match(text, pos)
        kind, value = match.lastgroup, match.group()
        pos = match.end()
        if kind == "ws":
            continue
        if kind == "string":
            tokens.append(("string", _unescape(value)))
        elif kind == "qident":
            tokens.append(("ident", _unescape(value)))
        elif kind == "duration":
            tokens.append(("duration", str(parse_duration(value))))
        elif kind == "number":
            tokens.append(("number", ("%.3f" % float(value)) if "." in value else str(int(value))))
        elif kind == "backref":
            tokens.append(("ident", ":MEASUREMENT"))
        elif kind == "ident":
            upper = value.upper()
            if upper in _KEYWORDS:
                tokens.append(("kw", upper))
                if upper == "FROM":
                    in_from = True
                elif upper in ("WHERE", "GROUP", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET", "ORDER", "INTO"):
                    in_from = False
            elif text[pos:pos + 1] == "(":
                tokens.append(("func", value.lower()))  # the server lower-cases functions
            else:
                tokens.append(("ident", value))
        else:
            tokens.append(("op", value))
    # fill(none|null|previous|linear) arguments are printed lower case.
    for i in range(2, len(tokens)):
        if tokens[i - 2] == ("func", "fill") and tokens[i][0] == "ident":
            tokens[i] = ("ident", tokens[i][1].lower())
    return tokens


def _qualify(tokens, database, default_rp):
    """Qualifies measurements after INTO and FROM as database.rp.measurement."""
    out = []
    i = 0
    clause = None
    while i < len(tokens):
        tok = tokens[i]
        if tok[0] == "kw":
            clause = tok[1] if tok[1] in ("INTO", "FROM") else (None if tok[1] not in ("AS",) else clause)
            out.append(tok)
            i += 1
            continue
        if clause in ("INTO", "FROM") and tok[0] in ("ident", "regex"):
            # Collect a dotted name: a.b.c, a..c, a./re/
            parts = [tok]
            j = i + 1
            while j < len(tokens) and tokens[j] == ("op", "."):
                if j + 1 < len(tokens) and tokens[j + 1][0] in ("ident", "regex"):
                    parts.append(tokens[j + 1])
                    j += 2
                elif j + 1 < len(tokens) and tokens[j + 1] == ("op", "."):
                    parts.append(("ident", ""))  # db..measurement
                    j += 1
                else:
                    break
            names = [p[1] for p in parts]
            if len(names) == 1:
                names = [database, default_rp] + names
            elif len(names) == 2:
                names = [database] + names
            if names[1] == "":
                names[1] = default_rp
            for part in names[:-1]:
                out.extend([("ident", part), ("op", ".")])
            out.append(parts[-1] if parts[-1][0] == "regex" else ("ident", names[-1]))
            i = j
            if clause == "INTO":
                clause = None
            continue
        out.append(tok)
        i += 1
    return out


def canonical_select(query, database, default_rp):
    """Canonical token list of a CQ's SELECT statement."""
    return _qualify(tokenize_influxql(query), database, default_rp)


def parse_stored_cq(text):
    """Splits `CREATE CONTINUOUS QUERY n ON db [RESAMPLE ...] BEGIN select END` stored by the server.

    Returns (resample_every_ns, resample_for_ns, select_text).
    """
    match = re.match(
        r'^CREATE CONTINUOUS QUERY (?:"(?:[^"\\]|\\.)*"|\S+) ON (?:"(?:[^"\\]|\\.)*"|\S+) '
        r"(?:RESAMPLE(?: EVERY (?P<every>\S+))?(?: FOR (?P<for>\S+))? )?BEGIN (?P<select>.*) END$",
        text, re.DOTALL)
    if not match:
        raise ValueError("unexpected continuous query text from the server: %s" % text)
    every = parse_duration(match.group("every")) if match.group("every") else None
    for_ = parse_duration(match.group("for")) if match.group("for") else None
    return every, for_, match.group("select")


def default_retention_policy(client, database):
    for row in client.rows("SHOW RETENTION POLICIES ON %s" % quote_ident(database)):
        if row.get("default"):
            return row["name"]
    return "autogen"
