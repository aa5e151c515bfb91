"""Refused messages kept whole and mapped again: the input dead-letter record, `capture`, `try`
and `replay --dead-letters`.

One record format (JSONL, one object per message) for the bridge's input dead letters
(`dead_letter.dir/input.jsonl`, written by `Pipeline._reject`) and for `station-bridge capture`:

    {"time": <receive time, ns since the epoch>, "subscription": ..., "reason": ..., "detail": ...,
     "topic": ..., "encoding": "base64", "frames": [<each frame, whole, base64>], "bytes": <sum of
     the frames' sizes>}

(`capture` writes `endpoint` instead of subscription/reason/detail.) A message whose record would
exceed `dead_letter.max_record_bytes` is stored cut: each frame keeps a prefix, `truncated: true`
and `sizes` (every frame's real size) say so; such a record is never mapped again. Records of
bridges before this format (`frames` hex, at most 256 bytes of at most 8 frames) are read too and
count as truncated when they may be.

`Remapper` maps frames through the configuration's own decoder (`decoders.build`) and mapper
(`mapping.Mapper`) of a subscription, with the message's recorded receive time as the mapper's
clock, and one fresh `Uniqueness` per run shared by every subscription (as in the bridge): the
same records in the same order give the same points, the same nudges, every run.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .backend import Adapter
from .config import Config, DestinationSpec, SubscriptionSpec
from .decoders import DecodeError, Decoder, build
from .lineproto import LineError
from .mapping import MapError, Mapper, Uniqueness

ENCODING = "base64"
RECORD_OVERHEAD = 1024  # below this much room beyond the frames, a record is measured before it is written
LEGACY_FRAME_BYTES = 256  # what the old input dead letters kept of a frame
FLUSH_POINTS = 50_000  # replay delivers the points mapped so far at this many


def topic_of(framing: str, frames: list[bytes], limit: int | None = 256) -> str | None:
    """The message's topic as its framing places it (its first `limit` bytes; None: whole),
    when it is UTF-8 (else None)."""
    if not frames:
        return None
    first = frames[0] if framing in ("msgpack", "json") else frames[0].partition(b" ")[0]
    try:
        return (first if limit is None else first[:limit]).decode("utf-8")
    except UnicodeDecodeError:
        return None


def make_record(frames: list[bytes], time_ns: int, max_bytes: int, **keys: object) -> tuple[dict, bool]:
    """The record of one message (`keys` first: subscription, reason, ...) and whether its frames
    had to be cut to keep it within `max_bytes` (base64 takes 4 bytes per 3)."""
    sizes = [len(f) for f in frames]
    total = sum(sizes)
    truncated = False
    if total * 4 // 3 + RECORD_OVERHEAD > max_bytes:  # may not fit: measure the rest of the record
        rest = len(json.dumps({"time": time_ns, **keys, "encoding": ENCODING, "frames": [], "bytes": total,
                               "truncated": True, "sizes": sizes}, ensure_ascii=False, default=str).encode())
        budget = max(0, (max_bytes - rest - 8 * len(frames) - 8) * 3 // 4)  # per frame: quotes, ", ", padding
        truncated = total > budget
    if truncated:
        kept = []
        for frame in frames:
            kept.append(frame[:budget])
            budget -= len(kept[-1])
        frames = kept
    record: dict = {"time": time_ns, **keys, "encoding": ENCODING,
                    "frames": [base64.b64encode(f).decode("ascii") for f in frames], "bytes": total}
    if truncated:
        record["truncated"] = True
        record["sizes"] = sizes
    return record, truncated


def frames_of(record: dict) -> list[bytes]:
    """The record's frames (base64, or hex in records of older bridges); ValueError when unreadable."""
    frames = record.get("frames")
    if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
        raise ValueError("no frames")
    try:
        if record.get("encoding") == ENCODING:
            return [base64.b64decode(f, validate=True) for f in frames]
        return [bytes.fromhex(f) for f in frames]
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"frames: {exc}") from None


def is_truncated(record: dict, frames: list[bytes]) -> bool:
    if record.get("truncated"):
        return True
    if record.get("encoding") is None:  # an older bridge's record: 256 bytes of at most 8 frames
        return int(record.get("frame_count", len(frames))) > len(frames) or any(
            len(f) >= LEGACY_FRAME_BYTES for f in frames)
    return False


def parse_time(text: str) -> int:
    """RFC 3339 (2026-12-06T23:00:00Z) or integer ns since the epoch -> ns."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1e6) * 1000


@dataclass
class Entry:
    """One line of a record file: the record (None: unreadable) and where it came from."""

    path: Path
    line: int
    record: dict | None
    error: str = ""


def read_records(paths: Iterable[Path]) -> Iterator[Entry]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except ValueError as exc:  # e.g. a torn last line of a file still being written
                    yield Entry(path, number, None, f"not JSON: {exc}")
                    continue
                if not isinstance(record, dict) or "frames" not in record:
                    yield Entry(path, number, None, "not a message record (no frames)")
                    continue
                yield Entry(path, number, record)


class RecordClock:
    """The mapper's receive clock during a re-map: the message's recorded receive time, strictly
    increasing within the run as the bridge's own clock is (timestamps.ReceiveClock)."""

    __slots__ = ("_last", "now")

    def __init__(self) -> None:
        self.now = 0
        self._last = 0

    def __call__(self) -> int:
        now = self.now if self.now > self._last else self._last + 1
        self._last = now
        return now


@dataclass
class Mapped:
    lines: list[bytes] = field(default_factory=list)
    reason: str = ""  # empty: mapped (or ignored)
    detail: str = ""
    topic: str | None = None
    ignored: str = ""  # the `ignore` rule that matched: not data, neither mapped nor refused
    would_map: int = 0  # ignored, yet the mapping makes this many points of it (probe=True)


class Remapper:
    """A configuration's decoders and mappers, for messages mapped again (see the module)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.clock = RecordClock()
        self.unique = Uniqueness(config.uniqueness.window, config.uniqueness.max_series)
        self.specs = {s.name: s for s in config.subscriptions}
        self._built: dict[str, tuple[Decoder, Mapper]] = {}
        self._probes: dict[str, Mapper] = {}  # mappers with their own uniqueness (never the run's)

    def _pipeline(self, spec: SubscriptionSpec) -> tuple[Decoder, Mapper]:
        found = self._built.get(spec.name)
        if found is None:
            # the time window (mapping.time.accept_*) around the message's recorded receive time
            found = self._built[spec.name] = (build(spec), Mapper(spec, self.config.station, self.unique,
                                                                  clock=self.clock, now=lambda: self.clock.now))
        return found

    def _would_map(self, spec: SubscriptionSpec, topic: str, record: object) -> int:
        """Points the mapping makes of an ignored message (0 when it refuses it), mapped by a
        mapper of its own: the run's uniqueness (the nudges of the points that do land) is
        untouched, as the bridge never maps an ignored message."""
        probe = self._probes.get(spec.name)
        if probe is None:
            probe = self._probes[spec.name] = Mapper(spec, self.config.station, Uniqueness(1, 1),
                                                     clock=self.clock, now=lambda: self.clock.now)
        try:
            return len(probe.lines(topic, record))
        except Exception:
            return 0

    def map(self, subscription: str, frames: list[bytes], time_ns: int, probe: bool = False) -> Mapped:
        """The message's lines, the `ignore` rule it matches, or the reason it is refused (the
        bridge's order and reasons: pipeline.Pipeline.process). `probe`: for an ignored message,
        also how many points the mapping would make of it (`would_map`: a rule that eats data)."""
        spec = self.specs.get(subscription)
        if spec is None:
            return Mapped(reason="unknown_subscription",
                          detail=f"the configuration has no subscription {subscription!r}")
        decode, mapper = self._pipeline(spec)
        self.clock.now = time_ns
        out = Mapped(topic=topic_of(spec.framing, frames))
        # The bridge's SUB socket receives only messages whose first frame starts with one of the
        # subscription's `topics` (libzmq's prefix match): any other never reaches it.
        first = frames[0] if frames else b""
        if not any(first.startswith(prefix.encode("utf-8")) for prefix in spec.topics):
            out.reason = "not_subscribed"
            out.detail = (f"the message starts {first[:40]!r}, no prefix of the subscription's topics "
                          f"{spec.topics[:8]!r}: the bridge never receives it")
            return out
        # topic-only rules are decided before decoding, on the whole topic (as the bridge does)
        whole = topic_of(spec.framing, frames, None) if spec.ignore else None
        early = next((i.name for i in spec.ignore if i.path is None and whole is not None
                      and i.topic is not None and i.topic.match(whole)), None)
        try:
            topic, record = decode(frames)
            out.topic = topic
            rule = early or next((i.name for i in spec.ignore if i.matches(topic, record)), None)
            if rule is not None:
                out.ignored = rule
                if probe:
                    out.would_map = self._would_map(spec, topic, record)
                return out
            lines = mapper.lines(topic, record)
        except (DecodeError, MapError, LineError) as exc:
            if early is not None:  # not data: ignored before decoding, as in the bridge
                out.ignored = early
                return out
            out.reason, out.detail = exc.reason, str(exc)
            return out
        except RecursionError:
            if early is not None:
                out.ignored = early
                return out
            out.reason, out.detail = "too_deep", "value nested too deeply to process"
            return out
        except Exception as exc:  # hostile input: refused as the bridge refuses it
            if early is not None:
                out.ignored = early
                return out
            out.reason, out.detail = "unexpected", f"{type(exc).__name__}: {exc}"
            return out
        try:
            out.lines = [line.encode("utf-8") for line in lines]
        except UnicodeEncodeError:
            out.reason, out.detail = "invalid_utf8", "line holds a lone surrogate"
        return out


# --- replay --dead-letters --------------------------------------------------------------------

@dataclass
class Filters:
    since: int | None = None
    until: int | None = None
    reasons: set[str] = field(default_factory=set)
    subscriptions: set[str] = field(default_factory=set)

    def keep(self, record: dict) -> bool:
        t = record.get("time")
        if (self.since is not None or self.until is not None) and not isinstance(t, int):
            return False
        if self.since is not None and t < self.since:  # type: ignore[operator]
            return False
        if self.until is not None and t >= self.until:  # type: ignore[operator]
            return False
        if self.reasons and record.get("reason") not in self.reasons:
            return False
        return not (self.subscriptions and record.get("subscription") not in self.subscriptions)


@dataclass
class DestinationResult:
    written: int = 0
    refused: int = 0  # by InfluxDB (dead-lettered with its message)
    not_attempted: int = 0
    error: str = ""
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> points (backend.py: numeric_only, ms)
    dropped_fields: int = 0  # fields removed for the destination's backend (backend.py)


@dataclass
class ReplayReport:
    records: int = 0
    landed: int = 0  # messages mapped again (their points handed to every destination)
    points: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> messages refused again
    ignored: Counter = field(default_factory=Counter)  # rule -> messages the `ignore` rules say are not data
    skipped: int = 0  # by a filter
    truncated: int = 0  # stored cut: cannot be mapped again
    unreadable: int = 0
    destinations: dict[str, DestinationResult] = field(default_factory=dict)
    dead_letter_errors: int = 0  # records refused again that the replay's dead-letter file could not take
    dead_letter_error: str = ""
    unchecked: int = 0  # points older than their series' uniqueness window (not checked: may overwrite one)

    def as_dict(self) -> dict:
        return {"records": self.records, "landed": self.landed, "points": self.points,
                "rejected_again": dict(sorted(self.rejected.items())), "ignored": dict(sorted(self.ignored.items())),
                "skipped_by_filter": self.skipped,
                "truncated": self.truncated, "unreadable": self.unreadable,
                "dead_letter_errors": self.dead_letter_errors, "uniqueness_unchecked": self.unchecked,
                "destinations": {n: vars(r) for n, r in self.destinations.items()}}

    def text(self, files: list[Path], dead_letter: Path) -> str:
        rejected = sum(self.rejected.values())
        by_reason = ", ".join(f"{r}: {n}" for r, n in sorted(self.rejected.items()))
        out = [f"replay: {self.records} records from {len(files)} file(s)",
               f"  landed: {self.landed} messages, {self.points} points",
               f"  rejected again: {rejected}" + (f" ({by_reason}; see {dead_letter})" if rejected else ""),
               f"  ignored (not data, by rule): {sum(self.ignored.values())}"
               + (f" ({', '.join(f'{r}: {n}' for r, n in sorted(self.ignored.items()))})" if self.ignored else ""),
               f"  skipped by filter: {self.skipped}",
               f"  truncated (stored cut, not mapped again): {self.truncated}",
               f"  unreadable lines: {self.unreadable}"]
        if self.unchecked:
            out.append(f"  unchecked times: {self.unchecked} points older than their series' uniqueness window "
                       "(uniqueness.window): each may overwrite a point of the same series and time")
        if self.dead_letter_errors:
            out.append(f"  NOT kept in {dead_letter}: {self.dead_letter_errors} records refused again "
                       f"({self.dead_letter_error})")
        for name, r in self.destinations.items():
            line = f"  destination {name}: {r.written} points written, {r.refused} refused by InfluxDB"
            if r.dropped or r.dropped_fields:
                line += (f", dropped as its backend would change them: {dict(sorted(r.dropped.items()))} points, "
                         f"{r.dropped_fields} fields")
            if r.error:
                line += f"; {r.not_attempted} not attempted: {r.error}"
            out.append(line)
        return "\n".join(out)


def replay_dead_letters(config: Config, files: list[Path], destinations: list[DestinationSpec],
                        dead_letter: Path, filters: Filters) -> ReplayReport:
    """Maps every record of `files` again (in file order) and delivers the points through
    sinks.Delivery to each destination. `dead_letter` is written anew: what is refused again
    (a message: the input record format, replayable; a point refused by InfluxDB: its line)."""
    from .journal import Chunk, DeadLetters
    from .sinks import Delivery, InfluxWriter

    if dead_letter.resolve() in {f.resolve() for f in files}:
        raise ValueError(f"{dead_letter} is one of the files being replayed")
    report = ReplayReport()
    remap = Remapper(config)
    dead_letter.unlink(missing_ok=True)
    dead = DeadLetters(dead_letter, max_bytes=1 << 62)

    def keep(**record: object) -> None:
        """A record refused again into the replay's dead letters; one it cannot take is counted."""
        if not dead.write(**record):
            report.dead_letter_errors += 1
            report.dead_letter_error = dead.last_error

    results = {d.name: DestinationResult() for d in destinations}
    adapters = {d.name: Adapter.for_spec(d) for d in destinations}
    report.destinations = results
    lines: list[bytes] = []

    def flush() -> None:
        """The points so far to every destination (bounded memory: a message may make thousands)."""
        if not lines:
            return
        for destination in destinations:
            result = results[destination.name]
            if result.error:  # unreachable earlier in this run: the rest is not attempted either
                result.not_attempted += len(lines)
                continue
            own = lines
            adapter = adapters[destination.name]
            if adapter is not None:
                own = adapter.apply_into(lines, result)
                if not own:
                    continue
            writer = InfluxWriter(destination)
            try:
                out = Delivery(writer, destination.batch_size).deliver(Chunk.of_bytes(own))
            finally:
                writer.close()
            result.written += out.written
            for line, status, message, reason in out.rejected:
                result.refused += 1
                keep(destination=destination.name, line=line.decode("utf-8", "replace"), status=status,
                     error=message[:2000], reason=reason)
            if out.unidentified:
                result.refused += out.unidentified
                keep(destination=destination.name, unidentified_points=out.unidentified,
                     error=out.unidentified_message[:2000], reason="rejected")
            if out.retry is not None:
                result.not_attempted += out.retry.count
                result.error = f"destination unreachable: {out.error}"
        lines.clear()

    try:
        for entry in read_records(files):
            report.records += 1
            record = entry.record
            if record is None:
                report.unreadable += 1
                continue
            if not filters.keep(record):
                report.skipped += 1
                continue
            try:
                frames = frames_of(record)
            except ValueError:
                report.unreadable += 1
                continue
            if is_truncated(record, frames):
                report.truncated += 1
                continue
            t = record.get("time")
            when = t if isinstance(t, int) else time.time_ns()  # an older record: no receive time kept
            mapped = remap.map(str(record.get("subscription")), frames, when)
            if mapped.ignored:  # the current rules say it is not data: neither landed nor refused
                report.ignored[mapped.ignored] += 1
                continue
            if mapped.reason:
                report.rejected[mapped.reason] += 1
                again, _ = make_record(frames, when, 1 << 62, subscription=record.get("subscription"),
                                       reason=mapped.reason, detail=mapped.detail[:500], topic=mapped.topic,
                                       replayed_from=f"{entry.path}:{entry.line}")
                keep(**again)
                continue
            report.landed += 1
            report.points += len(mapped.lines)
            lines += mapped.lines
            if len(lines) >= FLUSH_POINTS:
                flush()
        flush()
    finally:
        dead.close()
    report.unchecked = remap.unique.unchecked
    return report


# --- try -----------------------------------------------------------------------------------------

@dataclass
class TryReport:
    messages: list[dict] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)  # rule -> messages
    ignored_data: Counter = field(default_factory=Counter)  # rule -> ignored messages the mapping maps
    points: int = 0
    unsubscribed: int = 0  # on no prefix of the subscription's `topics`: the bridge never receives them

    @property
    def mapped(self) -> int:
        return len(self.messages) - sum(self.refused.values()) - sum(self.ignored.values()) - self.unsubscribed

    def summary(self) -> dict:
        """The refused share is of the data messages (ignored ones and those the bridge never
        receives aside), as the health model's."""
        n = len(self.messages)
        data = n - sum(self.ignored.values()) - self.unsubscribed
        return {"messages": n, "mapped": self.mapped, "points": self.points, "unsubscribed": self.unsubscribed,
                "refused": sum(self.refused.values()),
                "refused_share": (sum(self.refused.values()) / data) if data else 0.0,
                "by_reason": dict(sorted(self.refused.items())),
                "ignored": sum(self.ignored.values()), "by_rule": dict(sorted(self.ignored.items())),
                "ignored_data": sum(self.ignored_data.values()),
                "ignored_data_by_rule": dict(sorted(self.ignored_data.items()))}


def try_records(config: Config, files: list[Path], subscription: str | None) -> TryReport:
    """Every record of `files` through the mapping, as the bridge would map it."""
    if subscription is not None and subscription not in {s.name for s in config.subscriptions}:
        raise ValueError(f"the configuration has no subscription {subscription!r}")
    only = config.subscriptions[0].name if len(config.subscriptions) == 1 else None
    remap = Remapper(config)
    report = TryReport()
    for entry in read_records(files):
        where = f"{entry.path}:{entry.line}"
        record = entry.record
        if record is None:
            report.messages.append({"at": where, "reason": "unreadable", "detail": entry.error})
            report.refused["unreadable"] += 1
            continue
        t = record.get("time")
        when = t if isinstance(t, int) else time.time_ns()
        name = subscription or (record.get("subscription") if record.get("subscription") in remap.specs else only)
        item: dict = {"at": where, "time": when, "subscription": name}
        try:
            frames = frames_of(record)
        except ValueError as exc:
            item.update(reason="unreadable", detail=str(exc))
        else:
            if is_truncated(record, frames):
                item.update(reason="truncated", detail="the record holds only the start of the message")
            elif name is None:
                item.update(reason="unknown_subscription",
                            detail="name one with --subscription (the configuration has several)")
            else:
                mapped = remap.map(name, frames, when, probe=True)
                item["topic"] = mapped.topic
                if mapped.ignored:
                    item["ignored"] = mapped.ignored
                    report.ignored[mapped.ignored] += 1
                    if mapped.would_map:  # a rule that matches data: the bridge would store none of it
                        item["would_map"] = mapped.would_map
                        report.ignored_data[mapped.ignored] += 1
                elif mapped.reason == "not_subscribed":  # neither mapped nor refused: never received
                    item.update(unsubscribed=True, detail=mapped.detail[:500])
                    report.unsubscribed += 1
                elif mapped.reason:
                    item.update(reason=mapped.reason, detail=mapped.detail[:500])
                else:
                    item["lines"] = [line.decode("utf-8") for line in mapped.lines]
                    report.points += len(mapped.lines)
        if "reason" in item:
            report.refused[item["reason"]] += 1
        report.messages.append(item)
    return report


# --- capture -------------------------------------------------------------------------------------

def capture(endpoint: str, topics: list[str], count: int | None, timeout: float | None, out: object,
            bind: bool = False) -> int:
    """Records messages from a SUB socket (frames exactly as received) as JSONL records to `out`
    (a text file); stops after `count` messages or `timeout` seconds; returns how many."""
    import zmq

    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    try:
        socket.setsockopt(zmq.LINGER, 0)
        for topic in topics or [""]:
            socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        (socket.bind if bind else socket.connect)(endpoint)
        deadline = time.monotonic() + timeout if timeout else None
        got = 0
        try:
            while count is None or got < count:
                wait = 1000 if deadline is None else int(max(0.0, deadline - time.monotonic()) * 1000)
                if deadline is not None and wait <= 0:
                    break
                if not socket.poll(min(wait, 1000)):
                    continue
                frames = socket.recv_multipart()
                record, _ = make_record(frames, time.time_ns(), 1 << 62, endpoint=endpoint)
                out.write(json.dumps(record) + "\n")  # type: ignore[attr-defined]
                out.flush()  # type: ignore[attr-defined]
                got += 1
        except KeyboardInterrupt:  # Ctrl-C ends a capture: what was recorded stays
            pass
        return got
    finally:
        socket.close(0)
        context.term()
