"""station-bridge: run, check-config, print-config, replay, export, publish-demo, validate."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import urllib.parse
import urllib.request
from importlib import resources
from pathlib import Path

from . import __version__
from .config import ConfigError, DestinationSpec, load


def _destination(config_path: str, name: str | None) -> DestinationSpec:
    config = load(config_path)
    if name is None:
        return config.destinations[0]
    for destination in config.destinations:
        if destination.name == name:
            return destination
    raise ConfigError(f"{config_path}: no destination named {name!r}")


def cmd_run(args: argparse.Namespace) -> int:
    from .app import Bridge
    from .logs import setup
    config = load(args.config)
    setup(config.log_level)
    return Bridge(config).run()


def cmd_check(args: argparse.Namespace) -> int:
    config = load(args.config)
    print(f"{args.config}: OK ({len(config.subscriptions)} subscriptions, "
          f"{len(config.destinations)} destinations{', cache' if config.cache else ''})")
    return 0


def cmd_print(_: argparse.Namespace) -> int:
    sys.stdout.write(resources.files("station_bridge").joinpath("default-config.yml").read_text())
    return 0


def _annotated_csv(path: Path) -> list[str]:
    """InfluxDB annotated CSV (#datatype measurement,tag,...,dateTime:number) -> lines."""
    from .lineproto import escape_key, escape_measurement, format_field_value
    lines: list[str] = []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle)
        datatypes: list[str] = []
        header: list[str] | None = None
        for row in rows:
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
            for kind, name, value in zip(datatypes, header, row, strict=False):
                if kind == "measurement":
                    measurement = value
                elif kind == "tag":
                    tags.append(f"{escape_key(name)}={escape_key(value, 'tag value')}")
                elif kind.startswith("dateTime"):
                    stamp = value
                elif kind in ("long", "unsignedLong"):
                    fields.append(f"{escape_key(name, 'field')}={format_field_value(value, 'integer')}")
                elif kind == "double":
                    fields.append(f"{escape_key(name, 'field')}={format_field_value(value, 'float')}")
                elif kind == "boolean":
                    fields.append(f"{escape_key(name, 'field')}={format_field_value(value, 'boolean')}")
                elif kind == "string":
                    fields.append(f"{escape_key(name, 'field')}={format_field_value(value, 'string')}")
            head = ",".join([escape_measurement(measurement), *tags])
            lines.append(f"{head} {','.join(fields)} {stamp}".rstrip())
    return lines


def _jsonl(path: Path) -> list[str]:
    """JSONL: either {"line": "..."} (dead letters) or {"measurement","tags","fields","time"}."""
    from .lineproto import escape_key, escape_measurement, format_field_value
    lines = []
    for text in path.read_text(encoding="utf-8").splitlines():
        if not text.strip():
            continue
        record = json.loads(text)
        if "line" in record:
            lines.append(record["line"])
            continue
        tags = "".join(f",{escape_key(k)}={escape_key(str(v), 'tag value')}"
                       for k, v in sorted(record.get("tags", {}).items()))
        fields = []
        for k, v in record["fields"].items():
            kind = "boolean" if isinstance(v, bool) else "integer" if isinstance(v, int) else \
                "float" if isinstance(v, float) else "string"
            fields.append(f"{escape_key(k, 'field')}={format_field_value(v, kind)}")
        lines.append(f"{escape_measurement(record['measurement'])}{tags} {','.join(fields)} {record['time']}")
    return lines


def cmd_replay(args: argparse.Namespace) -> int:
    from .journal import DeadLetters
    from .sinks import InfluxWriter, Retryable
    destination = _destination(args.config, args.destination)
    writer = InfluxWriter(destination)
    dead = DeadLetters(Path(args.dead_letter))
    total = rejected = 0
    for name in args.files:
        path = Path(name)
        if path.suffix == ".csv":
            lines = _annotated_csv(path)
        elif path.suffix == ".jsonl":
            lines = _jsonl(path)
        else:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for start in range(0, len(lines), destination.batch_size):
            batch = lines[start:start + destination.batch_size]
            pending = [batch]
            while pending:
                chunk = pending.pop()
                try:
                    status, message = writer.post(("\n".join(chunk) + "\n").encode())
                except Retryable as exc:
                    print(f"{path}: destination unreachable: {exc}", file=sys.stderr)
                    return 1
                if status == 204:
                    total += len(chunk)
                elif status in (400, 413) and len(chunk) > 1:
                    pending += [chunk[len(chunk) // 2:], chunk[:len(chunk) // 2]]
                elif status in (400, 413):
                    rejected += 1
                    dead.write(destination=destination.name, line=chunk[0], status=status, error=message)
                else:
                    print(f"{path}: HTTP {status}: {message}", file=sys.stderr)
                    return 1
    print(f"replayed {total} points into {destination.name}; {rejected} rejected (see {args.dead_letter})")
    return 0 if not rejected else 2


def cmd_export(args: argparse.Namespace) -> int:
    destination = _destination(args.config, args.destination)
    where = f"time >= '{args.start}'" + (f" AND time < '{args.end}'" if args.end else "")
    rp = f'"{destination.retention_policy}".' if destination.retention_policy else ""
    query = f'SELECT * FROM {rp}"{args.measurement}" WHERE {where} GROUP BY *'
    params = urllib.parse.urlencode({"db": destination.database, "q": query, "epoch": "ns",
                                     "chunked": "true", "chunk_size": "10000"})
    request = urllib.request.Request(f"{destination.url}/query?{params}")
    if destination.username:
        import base64
        token = base64.b64encode(f"{destination.username}:{destination.password or ''}".encode()).decode()
        request.add_header("Authorization", "Basic " + token)
    out = open(args.output, "w", encoding="utf-8") if args.output != "-" else sys.stdout  # noqa: SIM115
    count = 0
    with urllib.request.urlopen(request, timeout=destination.timeout) as response:
        for raw in response:
            for result in json.loads(raw).get("results", []):
                if "error" in result:
                    print(result["error"], file=sys.stderr)
                    return 1
                for series in result.get("series", []):
                    for values in series["values"]:
                        row = dict(zip(series["columns"], values, strict=True))
                        stamp = row.pop("time")
                        fields = {k: v for k, v in row.items() if v is not None}
                        out.write(json.dumps({"measurement": series["name"], "tags": series.get("tags", {}),
                                              "fields": fields, "time": stamp}) + "\n")
                        count += 1
    if out is not sys.stdout:
        out.close()
    print(f"exported {count} points", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import publish
    started = time.monotonic()
    sent = publish(args.endpoint, args.topic, args.count, args.rate, args.duration, bind=not args.connect,
                   instruments=args.instruments.split(",") if args.instruments else None)
    print(f"published {sent} ticks on {args.endpoint} topic {args.topic} in {time.monotonic() - started:.1f} s")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="station-bridge", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bridge")
    run.add_argument("--config", "-c", required=True)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config")
    check.set_defaults(func=cmd_check)
    sub.add_parser("print-config", help="print a commented configuration with every key").set_defaults(
        func=cmd_print)
    replay = sub.add_parser("replay", help="write journal (.lp), JSONL or annotated CSV files to a destination")
    replay.add_argument("files", nargs="+")
    replay.add_argument("--config", "-c", required=True)
    replay.add_argument("--destination", "-d")
    replay.add_argument("--dead-letter", default="replay-rejected.jsonl")
    replay.set_defaults(func=cmd_replay)
    export = sub.add_parser("export", help="export a time range of a measurement to JSONL")
    export.add_argument("measurement")
    export.add_argument("--config", "-c", required=True)
    export.add_argument("--destination", "-d")
    export.add_argument("--start", required=True, help="RFC3339, e.g. 2026-11-24T00:00:00Z")
    export.add_argument("--end")
    export.add_argument("--output", "-o", default="-")
    export.set_defaults(func=cmd_export)
    demo = sub.add_parser("publish-demo", help="publish synthetic ticks (msgpack) for validation and benchmarks")
    demo.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    demo.add_argument("--connect", action="store_true", help="connect instead of bind")
    demo.add_argument("--topic", default="kraken_tick")
    demo.add_argument("--count", type=int, default=10_000)
    demo.add_argument("--rate", type=float, default=1000.0, help="messages per second, 0 = unthrottled")
    demo.add_argument("--duration", type=float, default=60.0, help="upper bound in seconds")
    demo.add_argument("--instruments", default="")
    demo.set_defaults(func=cmd_demo)
    from .validate import add_parser as add_validate
    add_validate(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
