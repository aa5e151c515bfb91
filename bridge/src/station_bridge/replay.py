"""Replay: journal segments (.lp), JSONL (dead letters or `export` output) and InfluxDB annotated
CSV written to a destination through the sink's own delivery path (sinks.Delivery: batching,
partial writes told apart from InfluxDB's message, bisection only where the message is silent),
so a replay counts and dead-letters exactly as the running bridge does.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .config import DestinationSpec
from .journal import Chunk, DeadLetters
from .lineproto import escape_field_key, format_field_value, series_key, split_lines
from .sinks import Delivery, InfluxWriter


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


def read(path: Path) -> list[bytes]:
    if path.suffix == ".csv":
        return annotated_csv(path)
    if path.suffix == ".jsonl":
        return jsonl(path)
    return [line.rstrip(b"\n") for line in split_lines(path.read_bytes()) if line.strip()]


@dataclass
class Result:
    written: int = 0
    rejected: int = 0
    not_attempted: int = 0
    error: str = ""


def replay(destination: DestinationSpec, files: list[Path], dead_letter: Path) -> Result:
    writer = InfluxWriter(destination)
    delivery = Delivery(writer, destination.batch_size)
    dead = DeadLetters(dead_letter, max_bytes=1 << 62)
    result = Result()
    try:
        for path in files:
            lines = read(path)
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
