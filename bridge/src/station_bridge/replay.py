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

from .backend import Adapter
from .config import DestinationSpec
from .journal import Chunk, DeadLetters, records
from .lineproto import escape_field_key, format_field_value, series_key, split_lines
from .sinks import Delivery, InfluxWriter

log = logging.getLogger("station_bridge.replay")


def annotated_csv(path: Path) -> list[bytes]:
    """InfluxDB annotated CSV (#datatype measurement,tag,...,dateTime:number) -> lines."""
    lines: list[bytes] = []
    with open(path, newline="", encoding="utf-8") as handle:
        datatypes: list[str] = []
        header: list[str] | None = None
        for row in csv.reader(handle):
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
            kinds = {"long": "integer", "unsignedLong": "integer", "double": "float", "boolean": "boolean",
                     "string": "string"}
            for kind, name, value in zip(datatypes, header, row, strict=False):
                if kind == "measurement":
                    measurement = value
                elif kind == "tag":
                    tags.append((name, value))
                elif kind.startswith("dateTime"):
                    stamp = value
                elif kind in kinds:
                    fields.append(f"{escape_field_key(name)}={format_field_value(value, kinds[kind])}")
            lines.append(f"{series_key(measurement, tags)} {','.join(fields)} {stamp}".rstrip().encode())
    return lines


def jsonl(path: Path) -> list[bytes]:
    """JSONL: either {"line": "..."} (dead letters) or {"measurement","tags","fields","time"} (export)."""
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        if not text.strip():
            continue
        record = json.loads(text)
        if "line" in record:
            lines.append(record["line"].encode())
            continue
        if "measurement" not in record:
            continue  # a dead letter without a line (input.jsonl, unidentified points)
        fields = []
        for k, v in record["fields"].items():
            kind = "boolean" if isinstance(v, bool) else "integer" if isinstance(v, int) else \
                "float" if isinstance(v, float) else "string"
            fields.append(f"{escape_field_key(k)}={format_field_value(v, kind)}")
        tags = [(k, str(v)) for k, v in record.get("tags", {}).items()]
        lines.append(f"{series_key(record['measurement'], tags)} {','.join(fields)} {record['time']}".encode())
    return lines


def journal_file(path: Path) -> tuple[list[bytes], records.Scan]:
    """A journal segment or intake log: the lines of its verified records, and the scan."""
    found = records.scan(path.read_bytes())
    for damage in found.damage:
        log.error("damaged journal record skipped: %s at byte offset %d (%s bytes, points %s)", path, damage.offset,
                  damage.length, damage.count if damage.count is not None else "unknown", extra={
            "file": str(path), "offset": damage.offset, "bytes": damage.length,
            "points": damage.count if damage.count is not None else "unknown"})
    return [line.rstrip(b"\n") for line in split_lines(found.data()) if line.strip()], found


def read(path: Path) -> list[bytes]:
    if path.suffix == ".csv":
        return annotated_csv(path)
    if path.suffix == ".jsonl":
        return jsonl(path)
    return journal_file(path)[0]


@dataclass
class Result:
    written: int = 0
    rejected: int = 0
    not_attempted: int = 0
    damaged_records: int = 0  # journal records that did not verify (skipped, never sent)
    damaged_points: int = 0  # their points where a record's header verified
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> points (backend.py: numeric_only, ms)
    dropped_fields: int = 0  # string fields removed for a numeric_only destination
    error: str = ""


def replay(destination: DestinationSpec, files: list[Path], dead_letter: Path) -> Result:
    writer = InfluxWriter(destination)
    delivery = Delivery(writer, destination.batch_size)
    dead = DeadLetters(dead_letter, max_bytes=1 << 62)
    adapter = Adapter.for_spec(destination)
    result = Result()
    try:
        for path in files:
            if path.suffix in (".csv", ".jsonl"):
                lines = read(path)
            else:
                lines, found = journal_file(path)
                result.damaged_records += len(found.damage)
                result.damaged_points += found.damaged_points
            if adapter is not None:
                lines, dropped, fields = adapter.apply_lines(lines)
                for reason, n in dropped.items():
                    result.dropped[reason] = result.dropped.get(reason, 0) + n
                result.dropped_fields += fields
            if not lines:
                continue
            out = delivery.deliver(Chunk.of_bytes(lines))
            result.written += out.written
            for line, status, message, reason in out.rejected:
                result.rejected += 1
                dead.write(destination=destination.name, line=line.decode("utf-8", "replace"), status=status,
                           error=message[:2000], reason=reason, source=str(path))
            if out.unidentified:
                result.rejected += out.unidentified
                dead.write(destination=destination.name, unidentified_points=out.unidentified,
                           error=out.unidentified_message[:2000], reason="rejected", source=str(path))
            if out.retry is not None:
                result.not_attempted = out.retry.count
                result.error = f"{path}: destination unreachable: {out.error}"
                return result
    finally:
        writer.close()
        dead.close()
    return result
