"""station-bridge: run, check-config, print-config, replay, export, publish-demo, validate."""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, DestinationSpec, load


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
    from .signals import Signals
    signals = Signals().install()  # first: a signal during the start is acted on, never fatal
    config = load(args.config)
    setup(config.log_level)
    bridge = Bridge(config)
    code = bridge.run(signals=signals)
    if bridge.reexec:
        return reexec()
    return code


def reexec() -> int:
    """SIGHUP with a changed configuration, after the graceful stop: the same command line again,
    in this process (same PID: systemd keeps supervising it; the new one sends READY=1). Only
    returns when exec fails (1: systemd restarts the unit)."""
    import logging
    import os
    log = logging.getLogger("station_bridge")
    argv = [sys.executable, *sys.orig_argv[1:]]
    log.info("re-executing", extra={"argv": argv, "pid": os.getpid()})
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, argv)
    except OSError as exc:
        log.error("re-exec failed: exiting (systemd restarts the unit)", extra={"error": str(exc)})
    return 1


def warnings(config: Config) -> list[str]:
    """Keys that can never match a record of their subscription (paths.unreachable), and an
    explicit rcvhwm that can exceed the memory budget (Config.memory_warnings)."""
    from .paths import unreachable
    out: list[str] = []
    for s in config.subscriptions:
        out += unreachable(s.name, s.framing, s.field_order, s.mapping.compile(s.name))
    return out + config.memory_warnings()


def cmd_check(args: argparse.Namespace) -> int:
    config = load(args.config)
    found = warnings(config)
    for warning in found:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**config.effective(), "warnings": found}, indent=2, sort_keys=False))
        return 0
    print(f"{args.config}: OK ({len(config.subscriptions)} subscriptions, "
          f"{len(config.destinations)} destinations{', cache' if config.cache else ''})")
    return 0


def cmd_print(_: argparse.Namespace) -> int:
    sys.stdout.write(resources.files("station_bridge").joinpath("default-config.yml").read_text())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .replay import replay
    destination = _destination(args.config, args.destination)
    result = replay(destination, [Path(f) for f in args.files], Path(args.dead_letter))
    if result.error:
        print(f"{result.error}; {result.written} points written, {result.not_attempted} not attempted "
              "(run the replay again: InfluxDB keeps one point per series and time)", file=sys.stderr)
        return 1
    print(f"replayed {result.written} points into {destination.name}; {result.rejected} rejected "
          f"(see {args.dead_letter})")
    return 0 if not result.rejected else 2


def cmd_export(args: argparse.Namespace) -> int:
    from .sinks import InfluxWriter
    destination = _destination(args.config, args.destination)
    where = f"time >= '{args.start}'" + (f" AND time < '{args.end}'" if args.end else "")
    rp = f'"{destination.retention_policy}".' if destination.retention_policy else ""
    measurement = args.measurement.replace("\\", "\\\\").replace('"', '\\"')
    query = f'SELECT * FROM {rp}"{measurement}" WHERE {where} GROUP BY *'
    writer = InfluxWriter(destination)
    out = open(args.output, "w", encoding="utf-8") if args.output != "-" else sys.stdout  # noqa: SIM115
    count = 0
    try:
        # InfluxDB's JSON writes the float 1.0 as 1: the field types keep replay's types right.
        floats = {row[0] for document in writer.query(f'SHOW FIELD KEYS FROM {rp}"{measurement}"')
                  for result in document.get("results", []) for series in result.get("series", [])
                  for row in series.get("values", []) if row[1] == "float"}
        for document in writer.query(query):
            for result in document.get("results", []):
                if "error" in result:
                    print(result["error"], file=sys.stderr)
                    return 1
                for series in result.get("series", []):
                    for values in series["values"]:
                        row = dict(zip(series["columns"], values, strict=True))
                        stamp = row.pop("time")
                        fields = {k: float(v) if k in floats and isinstance(v, int) else v
                                  for k, v in row.items() if v is not None}
                        out.write(json.dumps({"measurement": series["name"], "tags": series.get("tags", {}),
                                              "fields": fields, "time": stamp}) + "\n")
                        count += 1
    except (OSError, RuntimeError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    finally:
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
    check.add_argument("--json", action="store_true",
                       help="print the effective configuration (every default filled in, no secrets) as JSON")
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
