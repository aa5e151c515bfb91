"""The receive path, one stage after another: each subscription's own stages (`Subscription`:
source, decoder, mapper, binning, the compiled accelerator) and what every burst goes through
(`Pipeline`): decode -> ignore -> map -> (bin) -> encode -> commit the burst's counters in one
update (the ledger: received == mapped + rejected + ignored, accepted per destination) -> hand
the chunk to every destination -> offer the newest point per series to the cache. The compiled
path (`receive_compiled`) does decode, map and format in C and commits through the same
bookkeeping (`_burst_counts`, `commit`) as the Python path; a message it hands back is mapped,
or rejected, by the same guarded call (`_map_guarded`) as every other message.

Bad input never raises out of here: a message that cannot be decoded or mapped is rejected with
a reason, counted, logged (rate limited) and dead-lettered whole to `input.jsonl`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from contextlib import AbstractContextManager, nullcontext

import zmq

from .binning import Binning
from .cache import LatestCache
from .config import Config, SubscriptionSpec
from .decoders import DecodeError, build
from .fastpath import Accelerator, Burst, python_reason
from .health import RecentOutcomes
from .journal import Chunk, DeadLetters
from .lineproto import LineError
from .logs import RateLimitedLog
from .mapping import MapError, Mapper, Uniqueness
from .metrics import Metrics
from .refused import make_record, topic_of
from .sinks import InfluxSink
from .sources import BURST, BURST_BYTES, Source

log = logging.getLogger("station_bridge")
RECEIVE_FAILING_S = 1.0  # a subscription whose every receive raised for this long is named in /healthz

__all__ = ["BIN_FLUSH", "Pipeline", "RateLimitedLog", "Subscription"]

BIN_FLUSH = 20_000  # binned lines of a burst handed over at this many (bounded memory)
PROBES_PER_BURST = 8  # ignored messages of a burst mapped on the side: does a rule eat data?


class Subscription:
    """One subscription's pipeline state: its source, decoder, mapper and binning."""

    def __init__(self, spec: SubscriptionSpec, config: Config, context: zmq.Context, unique: Uniqueness) -> None:
        self.spec = spec
        self.name = spec.name
        self.decode = build(spec)
        self.mapper = Mapper(spec, config.station, unique)
        self.binning = Binning(spec.binning) if spec.binning else None
        self.keep_raw = spec.binning is None or spec.binning.keep_raw
        # libzmq's queues are bounded in messages (rcvhwm: set once, at connect; changing it on a
        # live connection stalled libzmq's pipes, measured), memory in bytes: a derived rcvhwm is
        # sized for message_bytes (default max_frame_bytes, the worst case); the sizes really
        # received are watched, and /healthz says when they outgrow it (`memory_problems`).
        self.receive_share = config.budget().receive // max(1, len(config.subscriptions))
        self.rcvhwm = config.rcvhwm(spec)
        self.source = Source(context, spec, config.health.handshake_grace, self.rcvhwm)
        self.message_size = 0.0  # moving average of the received messages' bytes (0: none yet)
        self.largest = 0.0  # the largest message seen lately (decays slowly)
        # Messages per compiled burst (C counts messages, not bytes): BURST_BYTES over the largest
        # size that may come, message_bytes (else max_frame_bytes) until sizes are seen, then over
        # the largest seen lately: a burst never holds much more than BURST_BYTES.
        self.burst = max(1, min(BURST, BURST_BYTES // (spec.message_bytes or spec.max_frame_bytes)))
        self.last_message = 0.0  # monotonic; 0: none yet
        # A receive that raised (a defect, contained by its loop or thread): since when every one
        # did (monotonic) and the last error; None: the last one worked (`receive_failed`).
        self.failing: tuple[float, str] | None = None
        self.fallbacks_counted = 0
        self.gaps_counted = 0  # binning: silences beyond max_gap counted so far
        self.evictions_counted = 0  # binning: series forgotten beyond max_series counted so far
        # A rule that eats data: an ignored message the mapping maps (probed, a few per burst, by
        # a mapper of its own: the real uniqueness never sees it), per rule: (when, an example).
        self.last_mapped = 0.0  # monotonic; 0: nothing mapped yet
        self.ignored_data: dict[str, tuple[float, str]] = {}
        self._probe: Mapper | None = None
        self._station = config.station
        self.labels = {"subscription": spec.name}
        self.key = Metrics.key(subscription=spec.name)
        self.reason_keys: dict[str, tuple] = {}
        # the health model's rejected share
        self.recent = RecentOutcomes(config.health.rejection_window, config.health.rejection_min_messages)
        self.examples: dict[str, str] = {}  # the latest rejection's detail per reason
        self.accelerator: Accelerator | None = None
        self.fast_path = "python"  # "compiled", or why the Python path runs (`accelerate`)

    def accelerate(self, mode: str) -> None:
        """Chooses the compiled path when `mode` is auto and the subscription's shape allows it."""
        why = python_reason(mode, self.spec, self.mapper, here=False)  # the form; then this host
        if not why:
            self.accelerator, why = Accelerator.for_mapper(self.mapper, self.spec)
        self.fast_path = "compiled" if self.accelerator is not None else f"python: {why}"

    def observe_size(self, messages: int, size: int, largest: int = 0) -> None:
        """A burst's messages and bytes (and its largest message, when known): the moving
        average and the next compiled burst's size (about BURST_BYTES)."""
        if messages <= 0:
            return
        mean = size / messages
        self.message_size = mean if not self.message_size else 0.8 * self.message_size + 0.2 * mean
        self.largest = max(self.largest * 0.99, largest, mean)
        limit = max(self.message_size, self.largest, float(self.spec.message_bytes or 0))
        self.burst = max(1, min(BURST, int(BURST_BYTES // max(1.0, limit))))

    def receive_failed(self, error: BaseException | None) -> None:
        """Records a receive round's outcome (None: it worked) for /healthz (`receive_problems`)."""
        if error is None:
            self.failing = None
        else:
            self.failing = (self.failing[0] if self.failing else time.monotonic(), repr(error)[:200])

    def receive_problems(self, now: float) -> list[str]:
        """Its receives have all raised for RECEIVE_FAILING_S: contained, yet nothing arrives."""
        failing = self.failing
        if failing is None or now - failing[0] < RECEIVE_FAILING_S:
            return []
        return [f"receiving fails for {now - failing[0]:.0f} s: {failing[1]}"]

    def memory_problems(self) -> list[str]:
        """libzmq may hold rcvhwm messages per endpoint: with the sizes seen, beyond twice the
        subscription's receive share? (a message_bytes declared smaller than the feed's messages)"""
        from .memory import ZMQ_OVERHEAD
        worst = self.rcvhwm * max(1, len(self.spec.endpoints)) * (self.largest + ZMQ_OVERHEAD)
        if worst <= 2 * self.receive_share:
            return []
        return [f"messages of up to {self.largest:.0f} bytes (message_bytes: {self.spec.message_bytes}): libzmq "
                f"may queue rcvhwm {self.rcvhwm} of them per endpoint, {worst / 2**20:.0f} MiB, beyond this "
                f"subscription's receive budget of {self.receive_share / 2**20:.0f} MiB (a memory limit could "
                f"kill the bridge): raise message_bytes to their size, or leave it unset"]

    def ignore_key(self, rule: str) -> tuple:
        return Metrics.key(subscription=self.name, rule=rule)

    def probe_ignored(self, rule: str, topic: str, record: object) -> None:
        """Whether the mapping maps a message `rule` ignored (noted in `ignored_data`)."""
        if self._probe is None:
            self._probe = Mapper(self.spec, self._station, Uniqueness(1, 1))
        try:
            lines = self._probe.lines(topic, record)  # type: ignore[arg-type]
        except Exception:  # refused: not data this mapping stores (a heartbeat)
            return
        if lines:
            self.ignored_data[rule] = (time.monotonic(), lines[0][:200])

    def eaten_by_rules(self, now: float, window: float) -> dict[str, str]:
        """Rules that ignored messages the mapping maps within `window` while no message was
        mapped in it: the feed is eaten by a rule (rule -> an example of the point it makes)."""
        if self.last_mapped and now - self.last_mapped <= window:
            return {}
        return {rule: example for rule, (at, example) in self.ignored_data.items() if now - at <= window}

    def reason_key(self, reason: str) -> tuple:
        found = self.reason_keys.get(reason)
        if found is None:
            found = self.reason_keys[reason] = Metrics.key(subscription=self.name, reason=reason)
        return found


class Pipeline:
    """What every burst goes through, from a subscription's messages to every destination."""

    def __init__(self, sinks: list[InfluxSink], metrics: Metrics, cache: LatestCache | None,
                 dead_input: DeadLetters, dead_record_max: int, rate_log: RateLimitedLog) -> None:
        self.sinks = sinks
        self.metrics = metrics
        self.cache = cache
        self.dead_input = dead_input
        self.dead_record_max = dead_record_max
        self.rate_log = rate_log
        self._discarded: dict[str, int] = {}  # per dead-letter file: rotation's deletions already counted
        # The stop's deadline for the receive side (monotonic; stop.Stop sets it when a stop is
        # requested): every stage that could run on (the poll round, a binned hand-over) consults
        # `expired` and leaves the rest, counted, so a stop ends within shutdown_timeout.
        self.deadline = float("inf")

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def _reject(self, sub: Subscription, reason: str, detail: str, frames: list[bytes],
                counts: dict[str, int] | None = None) -> None:
        """Counts (in `counts`, committed with the burst's other counters, or at once), logs
        (rate limited) and dead-letters a rejected message."""
        if counts is None:
            self.metrics.inc("bridge_rejected_messages_total", 1, subscription=sub.name, reason=reason)
        else:
            counts[reason] = counts.get(reason, 0) + 1
        sub.examples[reason] = detail[:200]
        self.rate_log.warn(reason, "message rejected", subscription=sub.name, detail=detail[:300])
        # The whole message (refused.py: the record format), so `replay --dead-letters` can map it again.
        name = self.dead_input.path.name
        try:
            record, truncated = make_record(frames, time.time_ns(), self.dead_record_max, subscription=sub.name,
                                            reason=reason, detail=detail[:500],
                                            topic=topic_of(sub.spec.framing, frames))
        except Exception as exc:  # no memory for its copy, or a defect: counted, its record not written
            self.metrics.inc("bridge_dead_letter_errors_total", 1, file=name)
            self.rate_log.warn("dead_letter_record", "dead letter not written", subscription=sub.name,
                               error=repr(exc)[:300])
            return
        ok = self.dead_input.write(**record)
        self.metrics.inc("bridge_dead_letters_total" if ok else "bridge_dead_letter_errors_total", 1, file=name)
        if truncated and ok:
            self.metrics.inc("bridge_dead_letters_truncated_total", 1, file=name)
        self.count_discarded(self.dead_input)

    def count_discarded(self, dead: DeadLetters) -> None:
        """Records a dead-letter file's rotation deleted since the last call, counted per file."""
        new = dead.discarded - self._discarded.get(dead.path.name, 0)
        if new > 0:
            self._discarded[dead.path.name] = dead.discarded
            self.metrics.inc("bridge_dead_letters_discarded_total", new, file=dead.path.name)

    def _refused(self, sub: Subscription, exc: Exception, frames: list[bytes], rejected: dict[str, int]) -> None:
        """A message whose decode or map raised (called from the `except`): a refusal is rejected
        with its reason, a too deep value as too_deep, anything else as unexpected (logged with
        its traceback); counted in `rejected`. Both paths (Python, and the messages C hands
        back) end here: hostile input never stops the bridge."""
        if isinstance(exc, (DecodeError, MapError, LineError)):
            self._reject(sub, exc.reason, str(exc), frames, rejected)
        elif isinstance(exc, RecursionError):
            self._reject(sub, "too_deep", "value nested too deeply to process", frames, rejected)
        else:
            if self.rate_log.allow("unexpected"):
                log.exception("unexpected error mapping a message", extra={"subscription": sub.name})
            self._reject(sub, "unexpected", f"{type(exc).__name__}: {exc}", frames, rejected)

    @staticmethod
    def _burst_counts(sub: Subscription, received: int, mapped: int, rejected: dict[str, int],
                      ignored: dict[str, int] | None = None) -> list:
        """A burst's subscription counters (for Metrics.bump, with the rest of the burst's):
        every message received is mapped, rejected or ignored exactly once; the timestamp
        fallbacks its mapping used, with it."""
        counts = [("bridge_received_messages_total", sub.key, received),
                  ("bridge_mapped_messages_total", sub.key, mapped)]
        if ignored:
            counts += [("bridge_ignored_messages_total", sub.ignore_key(rule), n) for rule, n in ignored.items()]
        if rejected:
            counts += [("bridge_rejected_messages_total", sub.reason_key(reason), n) for reason, n in rejected.items()]
        fallbacks = sub.mapper.timestamp_fallbacks
        if fallbacks != sub.fallbacks_counted:  # with the burst that used them, not a tick later
            counts.append(("bridge_timestamp_fallbacks_total", sub.key, fallbacks - sub.fallbacks_counted))
            sub.fallbacks_counted = fallbacks
        if sub.binning is not None and sub.binning.binner.gaps != sub.gaps_counted:
            counts.append(("bridge_binning_gaps_total", sub.key, sub.binning.binner.gaps - sub.gaps_counted))
            sub.gaps_counted = sub.binning.binner.gaps
        if sub.binning is not None and sub.binning.binner.evicted != sub.evictions_counted:
            counts.append(("bridge_binning_evicted_total", sub.key, sub.binning.binner.evicted - sub.evictions_counted))
            sub.evictions_counted = sub.binning.binner.evicted
        if sub.binning is not None and sub.binning.skipped:
            counts += [("bridge_binning_skipped_total", sub.reason_key(reason), n)
                       for reason, n in sub.binning.skipped.items()]
            sub.binning.skipped.clear()
        return counts

    def process(self, sub: Subscription, messages: list[list[bytes]]
                ) -> tuple[list[str], int, dict, list, list[int] | None]:
        """Decodes and maps a burst. Returns (lines, how many of them are raw message lines,
        newest record per series for the cache, the subscription's counter updates for
        Metrics.bump, the message of each raw line: None when each message made one line).
        A message counts once as received and once as mapped or rejected, whatever number of
        points it makes. Never raises on bad input."""
        return self._process(sub, messages)[:5]  # type: ignore[return-value]

    def _process(self, sub: Subscription, messages: list[list[bytes]], max_bytes: int = 0
                 ) -> tuple[list[str], int, dict, list, list[int] | None, int]:
        """`process` of the burst's first messages: with `max_bytes` > 0 and `each`, it stops
        after the message whose lines bring them to `max_bytes` (one message's lines may pass it,
        never two: the compiled path's bound, BURST_BYTES); the last value is how many messages
        it took. A burst's input is bounded in bytes, its points were not: 300 messages of 10 KB
        (10,000 rows each) were 3 million lines at once, 2.7 GB RSS on the Python path."""
        lines: list[str] = []
        size = 0  # characters of the raw lines made so far (each: bounded by max_bytes)
        taken = 0
        decode, mapper = sub.decode, sub.mapper
        binning = sub.binning
        newest: dict[str, tuple[int, dict]] = {}
        cached = self.cache is not None and binning is None and sub.spec.cache
        points = []
        rejected: dict[str, int] = {}
        ignored: dict[str, int] = {}
        ignore = sub.spec.ignore
        # topic-only rules are decided before decoding: a control message need not be data-shaped
        by_topic = [i for i in ignore if i.path is None]
        framing = sub.spec.framing
        multi = mapper.multi
        owners: list[int] | None = [] if multi else None  # the message (its id) of each raw line
        probes = PROBES_PER_BURST if ignore else 0
        for frames in messages:
            if max_bytes and size >= max_bytes:
                break
            taken += 1
            if by_topic:
                text = topic_of(framing, frames, None)  # the whole topic, before decoding
                rule = next((i.name for i in by_topic if text is not None and i.topic.match(text)), None)
                if rule is not None:
                    ignored[rule] = ignored.get(rule, 0) + 1
                    if probes:
                        probes -= 1
                        with contextlib.suppress(Exception):  # not decodable: not data either
                            sub.probe_ignored(rule, *decode(frames))
                    continue
            try:
                topic, record = decode(frames)
                if ignore:
                    rule = next((i.name for i in ignore if i.matches(topic, record)), None)
                    if rule is not None:  # not data: counted, not rejected, not dead-lettered
                        ignored[rule] = ignored.get(rule, 0) + 1
                        if probes:
                            probes -= 1
                            sub.probe_ignored(rule, topic, record)
                        continue
                if multi:
                    if binning is not None:
                        made = mapper.points(topic, record)
                        points += made
                        size += sum(len(p.line) for p in made)
                    elif cached:
                        made = mapper.keyed_lines(topic, record)
                        for line, series, ts, values in made:
                            lines.append(line)
                            size += len(line)
                            current = newest.get(series)
                            if current is None or ts >= current[0]:
                                newest[series] = (ts, values)
                    else:
                        made = mapper.lines(topic, record)
                        lines += made
                        size += sum(map(len, made))
                    owners += [id(frames)] * len(made)  # type: ignore[operator]
                elif binning is not None:
                    points.append(mapper.point(topic, record))
                elif cached:
                    line, series, ts = mapper.keyed_line(topic, record)
                    lines.append(line)
                    current = newest.get(series)
                    if current is None or ts >= current[0]:
                        newest[series] = (ts, record)
                else:
                    lines.append(mapper.line(topic, record))
            except Exception as exc:  # hostile input must never stop the bridge
                self._refused(sub, exc, frames, rejected)
        raw = len(lines)
        if binning is not None:
            if sub.keep_raw:
                lines = [p.line for p in points]
            raw = len(lines)
            for done, point in enumerate(points):
                if self.expired():
                    # The stop's deadline: these samples' bins are not made (their messages are
                    # mapped, raw lines kept); counted per sample, with the burst's counters.
                    binning.skipped["stopping"] = binning.skipped.get("stopping", 0) + len(points) - done
                    self._stopping_log(sub, len(points) - done)
                    break
                try:
                    for line in binning.lines(point):
                        lines.append(line)
                        if len(lines) - raw >= BIN_FLUSH:
                            # Bins are not bounded by the burst's bytes (a sample after a silence
                            # fills up to binning.max_gap of them): handed over as they come, within
                            # a sample too, so the destinations' byte bounds (queue, then journal)
                            # hold them, not this list.
                            binned = lines[raw:]
                            del lines[raw:]
                            self.hand_over(sub, binned)
                            if self.expired():  # within a sample too: millions of bins may follow
                                binning.skipped["stopping"] = binning.skipped.get("stopping", 0) + 1
                                self._stopping_log(sub, 1)
                                break
                except Exception as exc:  # contained: the point is still written raw (keep_raw)
                    self.metrics.inc("bridge_stage_errors_total", 1, stage="binning")
                    if self.rate_log.allow("binning"):
                        log.exception("binning error (contained)", extra={"subscription": sub.name,
                                                                          "error": repr(exc)})
        # every message is mapped or rejected exactly once (_reject counted it in `rejected`)
        mapped = taken - sum(rejected.values()) - sum(ignored.values())
        return lines, raw, newest, self._burst_counts(sub, taken, mapped, rejected, ignored), owners, taken

    def _stopping_log(self, sub: Subscription, samples: int) -> None:
        if self.rate_log.allow("binning_stopping"):
            log.warning("stop deadline: binned samples left without their bins", extra={
                "subscription": sub.name, "samples": samples})

    def _encode(self, sub: Subscription | None, lines: list[str], raw: int, counts: list | None = None,
                owners: list[int] | None = None) -> bytes:
        """One encode for the burst; a line that cannot be encoded (never expected: mapping
        refuses lone surrogates) is rejected on its own (its counts join `counts`); with
        `owners` (the message of each raw line) its whole message is: messages are atomic."""
        try:
            return ("\n".join(lines) + "\n").encode("utf-8")
        except UnicodeEncodeError:
            encoded: list[bytes | None] = []
            bad: set[int] = set()
            for i, line in enumerate(lines):
                try:
                    encoded.append(line.encode("utf-8"))
                except UnicodeEncodeError:
                    encoded.append(None)
                    if sub is not None and i < raw and counts is not None:
                        message = owners[i] if owners is not None else i
                        if message in bad:
                            continue
                        bad.add(message)
                        counts += [("bridge_mapped_messages_total", sub.key, -1),
                                   ("bridge_rejected_messages_total", sub.reason_key("invalid_utf8"), 1)]
                        self._reject(sub, "invalid_utf8", "line holds a lone surrogate",
                                     [line.encode("utf-8", "surrogatepass")], {})
                    else:
                        self.metrics.inc("bridge_stage_errors_total", 1, stage="encode")
            kept = [(line, data) for i, (line, data) in enumerate(zip(lines, encoded, strict=True))
                    if data is not None and not (i < raw and owners is not None and owners[i] in bad)]
            lines[:] = [line for line, _ in kept]
            return b"".join(data + b"\n" for _, data in kept)  # type: ignore[operator]

    def hand_over(self, sub: Subscription | None, lines: list[str], raw: int | None = None,
                  counts: list | None = None, owners: list[int] | None = None) -> None:
        """Gives a burst's lines to every destination (each logs and queues its own copy).
        The burst's counters are committed in one update (a ledger snapshot sees all or none):
        the subscription's (`counts`), its points, and what every destination accepts."""
        data = self._encode(sub, lines, len(lines) if raw is None else raw, counts, owners) if lines else b""
        self.commit(sub, data, len(lines), counts)

    def commit(self, sub: Subscription | None, data: bytes, n: int, counts: list | None = None) -> None:
        """A burst's encoded lines (`n` of them in `data`) to every destination, its counters in
        one update first (hand_over, and the compiled path directly)."""
        updates = counts or []
        if sub is not None and updates:
            self._tally(sub, updates)
        if n:
            updates.append(("bridge_mapped_points_total", sub.key, n) if sub is not None
                           else ("bridge_self_points_total", (), n))
            updates += [("bridge_accepted_points_total", sink.key, n) for sink in self.sinks]
        chunks: list[Chunk] = []
        if n:
            chunk = Chunk(data, n, -1, time.time())
            for sink in self.sinks:
                chunks.append(chunk if sink.adapter is None else self._adapt(sink, chunk, updates))
        self.metrics.bump(updates)
        for sink, own in zip(self.sinks, chunks, strict=True) if chunks else ():  # no lines: nothing to hand on
            sink.submit(own, counted=True)

    @staticmethod
    def _adapt(sink: InfluxSink, chunk: Chunk, updates: list) -> Chunk:
        """The sink's copy without what its backend would change silently (backend.py), the
        points and fields removed counted in the burst's update."""
        if sink.adapter is None:
            return chunk
        data, kept, dropped, fields = sink.adapter.apply(chunk.data)
        updates += [("bridge_dropped_points_total", Metrics.key(destination=sink.name, reason=reason), k)
                    for reason, k in dropped.items()]
        updates += [("bridge_dropped_fields_total", Metrics.key(destination=sink.name, reason=reason), k)
                    for reason, k in fields.items()]
        return Chunk(data, kept, -1, chunk.born)

    @staticmethod
    def _tally(sub: Subscription, updates: list) -> None:
        """A burst's received (less ignored) and rejected messages into the subscription's recent
        outcomes (the health model's rejected share)."""
        received = 0
        rejected: dict[str, int] = {}
        for name, key, n in updates:
            if name == "bridge_received_messages_total":
                received += n
            elif name == "bridge_rejected_messages_total":
                reason = dict(key).get("reason", "unknown")
                rejected[reason] = rejected.get(reason, 0) + n
            elif name == "bridge_ignored_messages_total":
                received -= n  # not data: neither lands nor counts against the feed
        if received > sum(rejected.values()):
            sub.last_mapped = time.monotonic()
        sub.recent.add(received, rejected)

    def receive(self, sub: Subscription, messages: list[list[bytes]]) -> None:
        """A burst through the Python path, handed over every BURST_BYTES of lines (`each`: a
        small message may make many large points), each part's counters with its lines."""
        sub.last_message = time.monotonic()
        while messages:
            lines, raw, newest, counts, owners, taken = self._process(sub, messages, BURST_BYTES)
            messages = messages[taken:]
            self.hand_over(sub, lines, raw, counts, owners)
            del lines
            if newest and self.cache is not None:
                self.cache.offer(sub.mapper.field_names, newest)

    def receive_compiled(self, sub: Subscription, lock: AbstractContextManager | None = None) -> int:
        """Up to a burst from the subscription's socket through the compiled path (the
        accelerator); returns how many messages it took. What `receive` does, in the same
        order: every message handed back is decoded, mapped or rejected by the Python path at
        its place in the burst; the burst's counters are committed in one update, then the
        chunk goes to every destination and the newest point per series to the cache. `lock`
        (a subscription's receive thread, receivers.py): held for all of that but C's receiving
        and formatting of each batch, which runs without the GIL."""
        accelerator = sub.accelerator
        assert accelerator is not None
        decode, mapper = sub.decode, sub.mapper
        multi = mapper.multi
        newest: dict | None = {} if self.cache is not None and sub.spec.cache else None
        rejected: dict[str, int] = {}

        def slow(frames: list[bytes], error: BaseException | None) -> bytes | list[bytes] | None:
            """`python_path` contained: whatever raises past the refusal handler (a defect, no
            memory), the message is counted once (`unexpected`) and the batch goes on."""
            counted = sum(rejected.values())
            try:
                return python_path(frames, error)
            except Exception as exc:
                if sum(rejected.values()) == counted:
                    rejected["unexpected"] = rejected.get("unexpected", 0) + 1
                if self.rate_log.allow("unexpected"):
                    log.error("unexpected error on the Python path of a handed-back message (counted)",
                              extra={"subscription": sub.name, "error": repr(exc)[:300]})
                return None

        def python_path(frames: list[bytes], error: BaseException | None) -> bytes | list[bytes] | None:
            if error is not None:  # refused by the uniqueness C called (MapError: bad_timestamp)
                self._reject(sub, getattr(error, "reason", "unexpected"), str(error), frames, rejected)
                return None
            try:
                topic, record = decode(frames)
                if multi:  # each: every point of the message; its values keyed by field name
                    points = mapper.keyed_lines(topic, record)
                else:
                    line, series, ts = mapper.keyed_line(topic, record)
                    points = [(line, series, ts, record)]
            except Exception as exc:  # hostile input must never stop the bridge
                self._refused(sub, exc, frames, rejected)
                return None
            encoded = []
            for line, *_ in points:
                try:
                    encoded.append(line.encode("utf-8"))
                except UnicodeEncodeError:  # as _encode: the message is refused whole (atomic)
                    self._reject(sub, "invalid_utf8", "line holds a lone surrogate",
                                 [line.encode("utf-8", "surrogatepass")], rejected)
                    return None
            if newest is not None:
                for _, series, ts, values in points:
                    current = newest.get(series)
                    if current is None or ts >= current[0]:
                        newest[series] = (ts, values)
            return encoded if multi else encoded[0]  # each: one line per point (a string field may hold a newline)

        burst = accelerator.receive(sub.source.socket, sub.burst, slow, newest, BURST_BYTES, lock)
        with lock if lock is not None else nullcontext():
            return self._committed(sub, burst, rejected, newest)

    def _committed(self, sub: Subscription, burst: Burst, rejected: dict[str, int], newest: dict | None) -> int:
        """receive_compiled's burst counted and handed on; how many messages it took."""
        mapper = sub.mapper
        if burst.lost:  # a batch whose commit raised: its messages counted (no frames left to dead-letter)
            rejected["unexpected"] = rejected.get("unexpected", 0) + burst.lost
            self.metrics.inc("bridge_stage_errors_total", 1, stage="receive")
            if self.rate_log.allow("receive_lost"):
                log.error("a batch of the compiled path failed: its messages are counted rejected (unexpected)",
                          extra={"subscription": sub.name, "messages": burst.lost, "error": repr(burst.error)[:300]})
        if burst.errno:
            self.metrics.inc("bridge_stage_errors_total", 1, stage="receive")
            if self.rate_log.allow("receive_errno"):
                log.error("libzmq receive error (compiled path)", extra={
                    "subscription": sub.name, "errno": burst.errno, "error": os.strerror(burst.errno)})
        if not burst.received:
            return 0
        sub.observe_size(burst.received, burst.size, burst.largest)  # as received (each: not its lines)
        sub.last_message = time.monotonic()
        # mapped messages: every message taken that was not rejected (with each, a message's
        # points are several lines; lost batches are counted rejected above)
        mapped = burst.received - sum(rejected.values())
        self.commit(sub, burst.data, burst.lines, self._burst_counts(sub, burst.received, mapped, rejected))
        if newest and self.cache is not None:
            self.cache.offer(mapper.field_names, newest)
        return burst.received

    # --- self-metrics -------------------------------------------------------------------------
