# -*- coding: utf-8 -*-
# Copyright: station-stack contributors
# Apache License 2.0 (see LICENSE)
"""Continuous query text in one canonical form, for comparing and for showing.

InfluxDB stores a CQ as `stmt.String()` of its parsed form: keywords upper case, functions
lower case, identifiers unquoted unless needed, floats with 3 decimals, durations canonical,
and every measurement qualified with database and retention policy. The declared statement is
written however the operator likes. Both are reduced to tokens in one canonical form, compared
as lists, and rendered back to text by one renderer, so a diff shows only what really differs.
Pure Python: nothing here talks to a server.
"""

from __future__ import annotations

import re

from ansible_collections.station_stack.station.plugins.module_utils.influxdb1_duration import (
    DurationError,
    format_duration,
    parse_duration,
)

KEYWORDS = frozenset("""
ALL ALTER ANALYZE AND ANY AS ASC BEGIN BY CARDINALITY CONTINUOUS CREATE DATABASE
DATABASES DEFAULT DELETE DESC DESTINATIONS DIAGNOSTICS DISTINCT DROP DURATION END EVERY
EXACT EXPLAIN FIELD FOR FROM GRANT GRANTS GROUP GROUPS IN INF INSERT INTO KEY KEYS KILL
LIMIT MEASUREMENT MEASUREMENTS NAME OFFSET ON OR ORDER PASSWORD POLICIES POLICY PRIVILEGES
QUERIES QUERY READ REPLICATION RESAMPLE RETENTION REVOKE SELECT SERIES SET SHARD SHARDS
SLIMIT SOFFSET STATS SUBSCRIPTION SUBSCRIPTIONS TAG TO USER USERS VALUES WHERE WITH WRITE
""".split())

_BARE_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# A duration token as InfluxQL's scanner reads one: digits, then letters and digits.
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<qident>"(?:[^"\\]|\\.)*")
  | (?P<duration>\d+(?:ns|u|µ|ms|s|m|h|d|w)(?:\d+(?:ns|u|µ|ms|s|m|h|d|w))*(?![A-Za-z0-9_]))
  | (?P<number>\d+\.\d*|\.\d+|\d+)
  | (?P<backref>:MEASUREMENT\b)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>=~|!~|!=|<>|<=|>=|::|[=<>+\-*/%(),.;])
  | (?P<other>.)
""", re.VERBOSE)

# Clauses after which FROM's source list ends.
_FROM_ENDS = frozenset(["WHERE", "GROUP", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET", "ORDER", "INTO"])


def _unescape(text):
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def tokenize(text):
    """Tokens as (kind, value) tuples in canonical form (kinds: kw, func, ident, string, regex,
    duration (nanoseconds as text), number, op)."""
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
            if upper in KEYWORDS:
                tokens.append(("kw", upper))
                if upper == "FROM":
                    in_from = True
                elif upper in _FROM_ENDS:
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
            clause = tok[1] if tok[1] in ("INTO", "FROM") else (None if tok[1] != "AS" else clause)
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
    """Canonical token list of a CQ's SELECT statement; unqualified measurements get default_rp."""
    return _qualify(tokenize(query), database, default_rp)


def render_ident(name):
    """An identifier as InfluxDB prints it: bare when it can be, double-quoted otherwise."""
    if name == ":MEASUREMENT" or (_BARE_IDENT.match(name) and name.upper() not in KEYWORDS):
        return name
    return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')


def _render_token(kind, value):
    if kind == "ident":
        return render_ident(value)
    if kind == "string":
        return "'%s'" % value.replace("\\", "\\\\").replace("'", "\\'")
    if kind == "duration":
        return format_duration(int(value))
    return value


def render(tokens):
    """Canonical tokens -> text, spaced the way InfluxDB prints statements."""
    out = []
    prev = None
    for kind, value in tokens:
        tight = prev is not None and (
            prev in (("op", "("), ("op", "."), ("op", "::"))
            or (kind == "op" and value in (")", ",", ".", "::"))
            or (kind == "op" and value == "(" and prev[0] == "func")
        )
        if prev is not None and not tight:
            out.append(" ")
        out.append(_render_token(kind, value))
        prev = (kind, value)
    return "".join(out)


def cq_statement(name, database, select_tokens, every=None, for_=None):
    """The canonical `CREATE CONTINUOUS QUERY` text (what the module runs and what its diff shows)."""
    return cq_create_text(render_ident(name), render_ident(database), render(select_tokens), every, for_)


def cq_create_text(name, database, select, every=None, for_=None):
    """`CREATE CONTINUOUS QUERY` from a name and database already quoted and a SELECT's text, the
    resample durations normalised: the one place the statement's shape is written."""
    resample = ""
    if every or for_:
        resample = "RESAMPLE "
        if every:
            resample += "EVERY %s " % format_duration(every)
        if for_:
            resample += "FOR %s " % format_duration(for_)
    return "CREATE CONTINUOUS QUERY %s ON %s %sBEGIN %s END" % (name, database, resample, select)


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
    try:
        every = parse_duration(match.group("every")) if match.group("every") else None
        for_ = parse_duration(match.group("for")) if match.group("for") else None
    except DurationError as exc:
        raise ValueError("unexpected continuous query text from the server: %s (%s)" % (text, exc)) from exc
    return every, for_, match.group("select")
