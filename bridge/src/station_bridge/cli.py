"""station-bridge: run, check-config, print-config, replay, capture, try, export, publish-demo, validate."""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, DestinationSpec, SubscriptionSpec, load


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
    from .journal import JournalLocked
    from .logs import setup
    from .signals import Signals
    signals = Signals().install()  # first: a signal during the start is acted on, never fatal
    config = load(args.config)
    setup(config.log_level)
    try:
        bridge = Bridge(config)
    except JournalLocked as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    code = bridge.run(signals=signals)
    if bridge.reexec:
        return reexec()
    return code


def reexec() -> int:
    """SIGHUP with a changed configuration, after the graceful stop: the same command line again,
    in this process (same PID: systemd keeps supervising it; the new one sends READY=1). Only
    returns when exec fails (1: systemd restarts the unit). The journal lock is an flock on a
    close-on-exec descriptor: the exec releases it for the new image."""
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
    """What check-config warns about: keys that can never match a record of their subscription
    (with the map form a path-looking literal key needs), a topic regex the subscription's topic
    prefixes can never satisfy, `each` points that share a time in one series (nudged), and an
    explicit rcvhwm that can exceed the memory budget (Config.memory_warnings), feeds whose points
    can collide in a destination that keeps milliseconds and only warns (backend.py)."""
    from .backend import resolution_warnings
    from .paths import shared_time_warnings, topic_warnings, unreachable
    out: list[str] = []
    for s in config.subscriptions:
        paths = s.mapping.compile(s.name)
        out += unreachable(s.name, s.framing, s.field_order, paths)
        out += topic_warnings(s.name, s.topics, s.mapping.topic_regex)
        out += shared_time_warnings(s.name, paths)
        out += ignore_warnings(s)
    return out + config.memory_warnings() + resolution_warnings(config)


def ignore_warnings(s: SubscriptionSpec) -> list[str]:
    """A topic-only `ignore` rule that matches every topic prefix the subscription subscribes to
    (its own data topic, e.g. `topic: k` meant as `^control`) ignores every message it receives:
    the feed would be counted as ignored and never mapped, with health and validate content."""
    out = []
    for i, rule in enumerate(s.ignore):
        if rule.path is None and rule.topic is not None and all(rule.topic.match(t) for t in s.topics):
            out.append(f"subscription {s.name!r}: ignore[{i}] {rule.name!r} (topic {rule.topic.pattern!r}) matches "
                       f"every topic the subscription receives ({', '.join(map(repr, s.topics))}): every message "
                       "would be ignored, none mapped")
    return out


def hot_paths(config: Config) -> dict[str, dict[str, str | None]]:
    """Per subscription, the path it runs (check-config --json `hot_path`; the configuration's
    `fast_path` is auto or off): `path` compiled or python and
    the `reason` for python, from the configuration alone (what a station whose wheel carries the
    extension runs); `here`: the same on this host (compiled, or python: why)."""
    from .fastpath import python_reason
    from .mapping import Mapper

    out: dict[str, dict[str, str | None]] = {}
    for s in config.subscriptions:
        mapper = Mapper(s, config.station)
        why = python_reason(config.fast_path, s, mapper, here=False)
        here = why or python_reason(config.fast_path, s, mapper, here=True)
        out[s.name] = {"path": "python" if why else "compiled", "reason": why or None,
                       "here": f"python: {here}" if here else "compiled"}
    return out


def cmd_check(args: argparse.Namespace) -> int:
    config = load(args.config)
    found = warnings(config)
    for warning in found:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**config.effective(), "warnings": found, "hot_path": hot_paths(config)}, indent=2,
                         sort_keys=False))
        return 0
    print(f"{args.config}: OK ({len(config.subscriptions)} subscriptions, "
          f"{len(config.destinations)} destinations{', cache' if config.cache else ''})")
    return 0


def cmd_print(_: argparse.Namespace) -> int:
    sys.stdout.write(resources.files("station_bridge").joinpath("default-config.yml").read_text())
    return 0


class DeadLetterBusy(RuntimeError):
    """Another replay writes the same --dead-letter file."""


@contextlib.contextmanager
def dead_letter_lock(path: Path) -> Iterator[None]:
    """Exclusive use of a replay's --dead-letter file for the whole run: a non-blocking flock on
    `<file>.lock` (removed at the end), so two replays started in one directory never write (nor
    delete) each other's records. The lock file is re-checked after locking: one deleted by the
    run that held it is locked anew."""
    lock = path.with_name(path.name + ".lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DeadLetterBusy(f"cannot create {lock} (the lock of the --dead-letter file): {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DeadLetterBusy(f"another replay (pid {owner or 'unknown'}) writes {path}: wait for it, or give "
                                 "this one its own --dead-letter file") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed it between our open and our lock: again
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, unnamed
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        with dead_letter_lock(Path(args.dead_letter)):
            return cmd_replay_dead_letters(args) if args.dead_letters else cmd_replay_files(args)
    except DeadLetterBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_replay_files(args: argparse.Namespace) -> int:
    if not args.files:
        print("error: name the files to replay (or --dead-letters)", file=sys.stderr)
        return 2
    if args.destination and len(args.destination) > 1:
        print("error: one --destination (several only with --dead-letters)", file=sys.stderr)
        return 2
    from .replay import replay
    destination = _destination(args.config, args.destination[0] if args.destination else None)
    result = replay(destination, [Path(f) for f in args.files], Path(args.dead_letter))
    if result.dead_letter_errors:
        print(f"error: {result.dead_letter_errors} refused points or rows could not be written to "
              f"{args.dead_letter} ({result.dead_letter_error}): they are only in the files replayed "
              "(free space and run the replay again)", file=sys.stderr)
    if result.error:
        print(f"{result.error}; {result.written} points written, {result.not_attempted} not attempted "
              "(run the replay again: InfluxDB keeps one point per series and time)", file=sys.stderr)
        return 1
    print(f"replayed {result.written} points into {destination.name}; {result.rejected} rejected "
          f"(see {args.dead_letter})")
    if result.dropped or result.dropped_fields:
        print(f"dropped as {destination.name}'s backend would change them (numeric_only, time_resolution): "
              f"{dict(sorted(result.dropped.items()))} points, {result.dropped_fields} fields")
    if result.damaged_records:
        print(f"{result.damaged_records} damaged journal records skipped ({result.damaged_points} points known "
              "to be in them; the log names each file and byte offset)", file=sys.stderr)
    if result.dead_letter_errors:
        return 1
    return 0 if not result.rejected else 2


def cmd_replay_dead_letters(args: argparse.Namespace) -> int:
    """Refused messages mapped again through the current configuration (refused.py)."""
    from .refused import Filters, parse_time, replay_dead_letters
    config = load(args.config)
    if args.files:
        files = [Path(f) for f in args.files]
    else:  # the bridge's input dead letters, oldest first
        base = config.dead_letter_dir / "input.jsonl"
        files = [f for f in (base.with_name(base.name + ".1"), base) if f.exists()]
        if not files:
            print(f"error: no dead letters at {base} (nor {base.name}.1)", file=sys.stderr)
            return 2
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    names = args.destination or [d.name for d in config.destinations]
    by_name = {d.name: d for d in config.destinations}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"{args.config}: no destination named {', '.join(map(repr, unknown))}")
    try:
        filters = Filters(parse_time(args.since) if args.since else None,
                          parse_time(args.until) if args.until else None, set(args.reason or ()),
                          set(args.subscription or ()))
    except ValueError as exc:
        print(f"error: --since/--until: {exc}", file=sys.stderr)
        return 2
    dead_letter = Path(args.dead_letter)
    try:
        report = replay_dead_letters(config, files, [by_name[n] for n in names], dead_letter, filters)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.text(files, dead_letter))
    if report.dead_letter_errors:
        print(f"error: {report.dead_letter_errors} records refused again could not be written to {dead_letter} "
              f"({report.dead_letter_error}): they are only in the files replayed (free space and run the replay "
              "again)", file=sys.stderr)
    if any(r.error for r in report.destinations.values()):
        print("a destination was unreachable: run the replay again (InfluxDB keeps one point per series and "
              "time; the replay is deterministic)", file=sys.stderr)
        return 1
    if report.dead_letter_errors:
        return 1
    refused = sum(report.rejected.values()) + sum(r.refused for r in report.destinations.values())
    return 2 if refused else 0


def cmd_try(args: argparse.Namespace) -> int:
    """What a configuration makes of recorded messages (refused.py), before it goes live."""
    from .refused import try_records
    config = load(args.config)
    try:
        report = try_records(config, [Path(f) for f in args.files], args.subscription)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = report.summary()
    if args.json:
        print(json.dumps({"messages": report.messages, "summary": summary}, indent=2, ensure_ascii=False))
    else:
        for i, item in enumerate(report.messages, 1):
            head = f"#{i} {item['at']}" + (f" topic={item['topic']!r}" if item.get("topic") is not None else "")
            if "reason" in item:
                print(f"{head}: refused: {item['reason']}: {item.get('detail', '')}")
            elif item.get("unsubscribed"):
                print(f"{head}: not subscribed: {item['detail']}")
            elif "ignored" in item:
                print(f"{head}: ignored by rule {item['ignored']!r}"
                      + (f" (yet the mapping makes {item['would_map']} point(s) of it: data?)"
                         if item.get("would_map") else ""))
            else:
                print(f"{head}: {len(item['lines'])} point(s)")
                for line in item["lines"]:
                    print(f"    {line}")
        by_reason = ", ".join(f"{r}: {n}" for r, n in summary["by_reason"].items())
        by_rule = ", ".join(f"{r}: {n}" for r, n in summary["by_rule"].items())
        print(f"{summary['messages']} messages: {summary['mapped']} mapped ({summary['points']} points), "
              f"{summary['refused']} refused" + (f" ({by_reason})" if by_reason else "")
              + (f", {summary['ignored']} ignored ({by_rule})" if summary["ignored"] else "")
              + (f", {summary['unsubscribed']} not subscribed" if summary["unsubscribed"] else ""))
    if not summary["messages"]:
        print("error: no messages in the sample", file=sys.stderr)
        return 1
    if summary["unsubscribed"]:
        print(f"warning: {summary['unsubscribed']} messages are on no prefix of the subscription's topics: the "
              "bridge never receives them" + ("; nothing of this sample would be stored" if not summary["mapped"]
                                              else ""), file=sys.stderr)
        if not summary["mapped"]:  # a sample of another feed, or topics that miss the feed
            return 1
    if summary["ignored_data"]:
        rules = ", ".join(f"{r!r} ({n})" for r, n in summary["ignored_data_by_rule"].items())
        print(f"warning: ignore rule(s) {rules} match messages the mapping maps: the bridge stores none of "
              "them" + ("; nothing of this sample would be stored" if not summary["mapped"] else ""),
              file=sys.stderr)
        if not summary["mapped"]:  # the rules eat every data message of the sample: a wrong rule
            return 1
    return 1 if summary["refused"] and summary["refused_share"] > args.max_rejected_share else 0


def cmd_capture(args: argparse.Namespace) -> int:
    from .refused import capture
    if args.count is None and args.timeout is None:
        print("error: give --count or --timeout (or both)", file=sys.stderr)
        return 2
    out = open(args.output, "w", encoding="utf-8") if args.output != "-" else sys.stdout  # noqa: SIM115
    try:
        got = capture(args.endpoint, args.topic or [], args.count, args.timeout, out, bind=args.bind)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"captured {got} messages from {args.endpoint}", file=sys.stderr)
    return 0 if got else 1


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
    replay = sub.add_parser("replay", help="write journal (.lp), JSONL or annotated CSV files to a destination; "
                            "with --dead-letters: map refused messages again and write their points")
    replay.add_argument("files", nargs="*")
    replay.add_argument("--config", "-c", required=True)
    replay.add_argument("--destination", "-d", action="append",
                        help="repeatable; default: the first destination, with --dead-letters every destination")
    replay.add_argument("--dead-letter", default="replay-rejected.jsonl",
                        help="what is refused again (with --dead-letters: written anew each run)")
    replay.add_argument("--dead-letters", action="store_true",
                        help="the files are input dead letters (default: dead_letter.dir/input.jsonl.1 and "
                             "input.jsonl): map each message again through the configuration")
    replay.add_argument("--since", help="with --dead-letters: records received at or after (RFC 3339 or ns)")
    replay.add_argument("--until", help="with --dead-letters: records received before (RFC 3339 or ns)")
    replay.add_argument("--reason", action="append", help="with --dead-letters: only this reason (repeatable)")
    replay.add_argument("--subscription", action="append",
                        help="with --dead-letters: only this subscription (repeatable)")
    replay.add_argument("--json", action="store_true", help="with --dead-letters: the counts as JSON")
    replay.set_defaults(func=cmd_replay)
    capture = sub.add_parser("capture", help="record messages from a publisher (JSONL, for try and replay)")
    capture.add_argument("--endpoint", required=True)
    capture.add_argument("--topic", action="append", help="subscription prefix (repeatable; default: all)")
    capture.add_argument("--count", type=int, help="stop after this many messages")
    capture.add_argument("--timeout", type=float, help="stop after this many seconds")
    capture.add_argument("--bind", action="store_true", help="bind instead of connect")
    capture.add_argument("--output", "-o", default="-")
    capture.set_defaults(func=cmd_capture)
    try_ = sub.add_parser("try", help="show what a configuration makes of recorded messages")
    try_.add_argument("files", nargs="+")
    try_.add_argument("--config", "-c", required=True)
    try_.add_argument("--subscription", "-s", help="map every message through this subscription")
    try_.add_argument("--json", action="store_true")
    try_.add_argument("--max-rejected-share", type=float, default=0.0,
                      help="exit 1 when more than this share of the messages is refused (default 0: any)")
    try_.set_defaults(func=cmd_try)
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
