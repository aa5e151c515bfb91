"""Replay: journal segments (.lp), JSONL (dead letters or `export` output) and InfluxDB annotated
CSV written to a destination through the sink's own delivery path (sinks.Delivery: batching,
partial writes told apart from InfluxDB's message, bisection only where the message is silent),
so a replay counts and dead-letters exactly as the running bridge does.

Journal segments and intake logs (`.lp`, `.wal`) are read with the bridge's own reader
(journal/records.py): only verified records are sent, damaged ones are counted and reported with their
byte offset. Replay only reads: it never renames, truncates or deletes a file, and takes no
lock, so replaying the files of a running bridge cannot corrupt it (a record that bridge is
still appending reads as a torn tail: counted as damaged here, not sent).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from . import timestamps
from .backend import Adapter
from .config import DestinationSpec
from .journal import Chunk, DeadLetters, records
from .lineproto import JSON_INTEGER, LineError, escape_field_key, format_field_value, series_key, split_lines
from .sinks import Delivery, InfluxWriter

log = logging.getLogger("station_bridge.replay")


@dataclass
class Unreadable:
    """A row or record of a file that makes no line (counted rejected, dead-lettered with where)."""
    where: str
    reason: str
    detail: str


def annotated_csv(path: Path) -> tuple[list[bytes], list[Unreadable]]:
    """InfluxDB annotated CSV (#datatype measurement,tag,...,dateTime:number) -> lines. An empty
    cell is an absent tag or field (the CSV of points of several shapes: an export of sparse
    fields); `dateTime` and `dateTime:RFC3339` are RFC 3339 times, `dateTime:number` ns. A row
    that makes no line (a value of the wrong type, no field, a bad time) is returned apart."""
    lines: list[bytes] = []
    bad: list[Unreadable] = []
    kinds = {"long": "integer", "unsignedLong": "integer", "double": "float", "boolean": "boolean",
             "string": "string"}
    # Times read as the mapping reads them: RFC 3339 exactly, ns as JSON's integer grammar within
    # InfluxDB's range (`--5`, full-width digits, 20 digits were sent and refused by InfluxDB).
    rfc3339, ns = timestamps.parser("rfc3339"), timestamps.parser("epoch_ns")
    with open(path, newline="", encoding="utf-8") as handle:
        datatypes: list[str] = []
        header: list[str] | None = None
        for number, row in enumerate(csv.reader(handle), 1):
            if not row:
                continue
            if row[0].startswith("#datatype"):
                datatypes = [row[0].split(" ", 1)[1], *row[1:]]
                header = None
                continue
            if row[0].startswith("#"):
                continue
            if header is None:
                header = row
                continue
            measurement, tags, fields, stamp = "", [], [], ""
            try:
                if len(row) != len(header) or len(row) != len(datatypes):
                    # a row cut short (the torn end of an export still being written) would lose
                    # its time and land at the replay's: refused, as every row that is not whole
                    raise LineError("unreadable", f"{len(row)} cells where the header has {len(header)} "
                                                  f"and #datatype {len(datatypes)}")
                for kind, name, value in zip(datatypes, header, row, strict=False):
                    if kind == "measurement":
                        measurement = value
                    elif kind == "tag":
                        if value:  # empty: the point has no such tag
                            tags.append((name, value))
                    elif kind.startswith("dateTime"):
                        if value:
                            if kind == "dateTime:number" and not JSON_INTEGER.match(value):
                                raise LineError("bad_timestamp", f"time {value[:40]!r} is not integer nanoseconds")
                            stamp = str(ns(value) if kind == "dateTime:number" else rfc3339(value))
                    elif kind in kinds and value != "":  # empty: the point has no such field
                        fields.append(f"{escape_field_key(name)}={format_field_value(value, kinds[kind])}")
                if not fields:
                    raise LineError("missing_field", "the row has no field value")
                if not stamp:  # the server would stamp it with the replay's time: a silent distortion
                    raise LineError("bad_timestamp", "the row has no time (it would be stored at the replay's time)")
                lines.append(f"{series_key(measurement, tags)} {','.join(fields)} {stamp}".encode())
            except (LineError, timestamps.TimestampError) as exc:
                bad.append(Unreadable(f"{path}:{number}", getattr(exc, "reason", "unrepresentable"), str(exc)))
    return lines, bad


def jsonl(path: Path) -> tuple[list[bytes], list[Unreadable]]:
    """JSONL: either {"line": "..."} (dead letters) or {"measurement","tags","fields","time"} (export).
    A record that makes no line (not JSON, a value no field type takes, no field) is returned apart."""
    lines: list[bytes] = []
    bad: list[Unreadable] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if "line" in record:
                lines.append(str(record["line"]).encode())
                continue
            if "measurement" not in record:
                continue  # a dead letter without a line (input.jsonl, unidentified points)
            fields = []
            for k, v in record["fields"].items():
                if v is None:
                    continue  # absent
                kind = "boolean" if isinstance(v, bool) else "integer" if isinstance(v, int) else \
                    "float" if isinstance(v, float) else "string"
                fields.append(f"{escape_field_key(k)}={format_field_value(v, kind)}")
            if not fields:
                raise LineError("missing_field", "the record has no field value")
            tags = [(k, str(v)) for k, v in (record.get("tags") or {}).items() if v not in (None, "")]
            stamp = record.get("time")
            if stamp is None:  # the server would stamp it with the replay's time: a silent distortion
                raise LineError("bad_timestamp", "the record has no time (it would be stored at the replay's time)")
            if type(stamp) is not int or not timestamps.MIN_NS <= stamp <= timestamps.MAX_NS:
                raise LineError("bad_timestamp", f"time {stamp!r} is not integer nanoseconds in InfluxDB's range")
            lines.append(f"{series_key(record['measurement'], tags)} {','.join(fields)} {stamp}".encode())
        except LineError as exc:
            bad.append(Unreadable(where, exc.reason, str(exc)))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            bad.append(Unreadable(where, "unreadable", f"{type(exc).__name__}: {exc}"[:300]))
    return lines, bad


def journal_file(path: Path) -> tuple[list[bytes], records.Scan]:
    """A journal segment or intake log: the lines of its verified records, and the scan."""
    found = records.scan(path.read_bytes())
    for damage in found.damage:
        log.error("damaged journal record skipped: %s at byte offset %d (%s bytes, points %s)", path, damage.offset,
                  damage.length, damage.count if damage.count is not None else "unknown", extra={
            "file": str(path), "offset": damage.offset, "bytes": damage.length,
            "points": damage.count if damage.count is not None else "unknown"})
    return [line.rstrip(b"\n") for line in split_lines(found.data()) if line.strip()], found


def read(path: Path) -> tuple[list[bytes], list[Unreadable]]:
    if path.suffix == ".csv":
        return annotated_csv(path)
    if path.suffix == ".jsonl":
        return jsonl(path)
    return journal_file(path)[0], []


@dataclass
class Result:
    written: int = 0
    rejected: int = 0
    not_attempted: int = 0
    damaged_records: int = 0  # journal records that did not verify (skipped, never sent)
    damaged_points: int = 0  # their points where a record's header verified
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> points (backend.py: numeric_only, ms)
    dropped_fields: int = 0  # fields removed for the destination's backend (backend.py)
    error: str = ""
    dead_letter_errors: int = 0  # refused lines or rows the replay's dead-letter file could not take
    dead_letter_error: str = ""


def replay(destination: DestinationSpec, files: list[Path], dead_letter: Path) -> Result:
    writer = InfluxWriter(destination)
    delivery = Delivery(writer, destination.batch_size)
    dead = DeadLetters(dead_letter, max_bytes=1 << 62)
    adapter = Adapter.for_spec(destination)
    result = Result()

    def keep(**record: object) -> None:
        """A refused line or row into the replay's dead letters; one it cannot take is counted."""
        if not dead.write(**record):
            result.dead_letter_errors += 1
            result.dead_letter_error = dead.last_error

    try:
        for path in files:
            if path.suffix in (".csv", ".jsonl"):
                lines, bad = read(path)
                for row in bad:  # makes no line: refused here, kept with where it was
                    result.rejected += 1
                    keep(destination=destination.name, source=row.where, reason=row.reason, error=row.detail[:2000])
            else:
                lines, found = journal_file(path)
                result.damaged_records += len(found.damage)
                result.damaged_points += found.damaged_points
            if adapter is not None:
                lines = adapter.apply_into(lines, result)
            if not lines:
                continue
            out = delivery.deliver(Chunk.of_bytes(lines))
            result.written += out.written
            for line, status, message, reason in out.rejected:
                result.rejected += 1
                keep(destination=destination.name, line=line.decode("utf-8", "replace"), status=status,
                     error=message[:2000], reason=reason, source=str(path))
            if out.unidentified:
                result.rejected += out.unidentified
                keep(destination=destination.name, unidentified_points=out.unidentified,
                     error=out.unidentified_message[:2000], reason="rejected", source=str(path))
            if out.retry is not None:
                result.not_attempted = out.retry.count
                result.error = f"{path}: destination unreachable: {out.error}"
                return result
    finally:
        writer.close()
        dead.close()
    return result
