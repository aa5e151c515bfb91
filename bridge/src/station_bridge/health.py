"""Health: one model derived from the ledger, and systemd's notify protocol.

The components publish plain snapshots (`DestinationState`, `SubscriptionState`,
`BridgeState`: selfreport.py builds them); `evaluate` turns a snapshot into the one health document.
/healthz serves it, the `bridge_*_healthy` gauges and the self-metrics are read from it, and
`station-bridge validate` reads the same document: they cannot disagree. This module imports
nothing of the components.

A **destination** is degraded when (thresholds in the `health` section of the configuration):
- its oldest unacknowledged point (queued, in flight or journaled) is older than
  `destination_grace` + its `flush_interval`: whatever the cause (refused, unreachable, a
  server that accepts the connection and never answers, a stuck writer), points that are not
  acknowledged age, and the age is what counts;
- it has failed (no write or /ping succeeded) for longer than `destination_grace`;
- its writer thread is dead (restarted at once; one that keeps dying stays visible);
- InfluxDB refused at least `max_refused_share` of the points it answered for recently (the
  last `rejection_window`, or its last `rejection_min_messages` points when the window holds
  fewer but not none), at least `rejection_min_messages` of them: a database limit reached
  (max-series-per-database, max-values-per-tag), type conflicts, bad lines; the points are
  dropped with a reason naming the cause;
- its journal cannot be written: a segment write or an intake-log append failed within the
  last `destination_grace` (disk full, the reserve reached), or the free space is below
  `journal.min_free_bytes` now; or its dead-letter file cannot be written.
A destination with a `schedule` (a link that is up in windows only) is `pending_by_schedule`
while its window is closed: healthy, its points journaled, nothing sent; `next_window` says when
it opens. Inside a window the rules above apply, with the age of the oldest point and the time
failing both counted from the window's start (a backlog is not degraded because it is old). The
journal's rules apply at any time.
Each destination's `state`: `ok`, `pending_by_schedule` or `degraded`.
A **subscription** is degraded when:
- it requires a connection (`require_connection`, default: connecting ones) and has had no
  peer for longer than `subscription_grace` (a peer counts once its ZMTP handshake succeeded);
- its socket or one of its endpoints could not be set up (connect or bind refused: retried in
  the background, sources.py), one entry per endpoint naming it and the error;
- a connecting endpoint accepts TCP but no ZMTP handshake succeeded on it for longer than
  `handshake_grace` (a wrong port, e.g. an HTTP server), until one succeeds;
- of its recent messages (those of the last `rejection_window`, or its last
  `rejection_min_messages` when the window holds fewer but not none: a slow feed is judged
  too, an idle one is not), at least
  `max_rejected_share` were rejected (and at least `rejection_min_messages` arrived): a feed that
  arrives but does not land; the entry names the dominant reason and an example;
- no message was mapped in the last `rejection_window` while an `ignore` rule ignored messages
  the mapping maps (a few ignored messages per burst are mapped on the side to tell): a rule that
  matches data eats the feed, counted as ignored (a heartbeat the mapping refuses never trips it);
- it declares `expected_interval` and no message arrived for 3 x that interval (since start,
  when none ever did; without it, an idle feed is healthy: observatories publish in campaigns);
- every receive of it raised for a second (a defect, contained), or its receive thread
  (`receive_threads: auto`) has ended.
The **bridge** is degraded when the input dead-letter file or the ledger cannot be written, a
journal directory holds points of a destination no longer configured (renamed or removed: its
pending points are counted dropped `orphaned`), or the stop was requested.

`SystemdNotifier` speaks sd_notify over the `NOTIFY_SOCKET` datagram socket (no dependency):
READY=1 once the bridge runs, WATCHDOG=1 from the receive loop at half of `WATCHDOG_USEC`,
RELOADING=1 before a reload's re-exec, STOPPING=1 on stop. Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

OVERDUE_FACTOR = 3  # a subscription with expected_interval is overdue after this many intervals of silence


class SystemdNotifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_interval = (int(usec) / 1e6 / 2) if usec.isdigit() and (not pid or pid == str(os.getpid())) \
            else None
        self._last_ping = 0.0
        self.sent = 0

    def notify(self, text: str) -> bool:
        if not self.address:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(text.encode(), self.address)
            self.sent += 1
            return True
        except OSError:
            return False

    def ready(self) -> None:
        self.notify("READY=1\nSTATUS=running")

    def reloading(self) -> None:
        """SIGHUP with a changed configuration: draining before the re-exec (READY=1 follows)."""
        self.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}\n"
                    "STATUS=reloading: draining and flushing, then re-executing")

    def stopping(self) -> None:
        self.notify("STOPPING=1\nSTATUS=stopping: draining and flushing")

    def watchdog(self) -> None:
        """Called from the receive loop; pings at half of the watchdog interval."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.notify("WATCHDOG=1")


LOOKBACK_S = 86400.0  # how far back the recent outcomes reach for a slow feed's last messages


class RecentOutcomes:
    """A subscription's recent messages (or a destination's recent points): received, rejected
    by reason, and the latest example of each reason. Recent means those of the last `window`
    seconds or, when the window holds fewer than `min_messages` but at least one, the last
    `min_messages` (at most LOOKBACK_S old): a feed slower than `min_messages` per window whose
    every message is refused is judged on its last messages, never healthy by being slow; a
    feed with nothing in the window is idle (its rejections left the window). One-second
    buckets; `add` is called once per burst by the receive thread, `totals` by any thread."""

    def __init__(self, window: float, min_messages: int = 0) -> None:
        self.window = max(1.0, window)
        self.min_messages = max(0, min_messages)
        self._buckets: deque[list] = deque()  # [second, received, {reason: count}]
        self._held = 0  # messages received in the buckets held
        self._examples: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, received: int, rejected: dict[str, int] | None = None, example: dict[str, str] | None = None,
            now: float | None = None) -> None:
        if not received:
            return
        second = int(now if now is not None else time.monotonic())
        with self._lock:
            if self._buckets and self._buckets[-1][0] == second:
                bucket = self._buckets[-1]
            else:
                bucket = [second, 0, {}]
                self._buckets.append(bucket)
                self._trim(second)
            bucket[1] += received
            self._held += received
            if rejected:
                counts = bucket[2]
                for reason, n in rejected.items():
                    counts[reason] = counts.get(reason, 0) + n
            if example:
                self._examples.update(example)

    def _trim(self, second: int) -> None:
        # A bucket older than the window goes once the newer ones still hold `min_messages`
        # (a slow feed keeps its last messages), and past LOOKBACK_S whatever they hold.
        while self._buckets and self._buckets[0][0] <= second - self.window:
            oldest = self._buckets[0]
            if self._held - oldest[1] < self.min_messages and oldest[0] > second - LOOKBACK_S:
                break
            self._buckets.popleft()
            self._held -= oldest[1]

    def totals(self, now: float | None = None) -> tuple[int, dict[str, int], dict[str, str]]:
        """(received, rejected by reason, an example detail per reason) of the recent messages."""
        second = int(now if now is not None else time.monotonic())
        with self._lock:
            self._trim(second)
            received = 0
            rejected: dict[str, int] = {}
            if not self._buckets or self._buckets[-1][0] <= second - self.window:
                return received, rejected, {}  # nothing in the window: idle
            for _, n, counts in self._buckets:
                received += n
                for reason, k in counts.items():
                    rejected[reason] = rejected.get(reason, 0) + k
            return received, rejected, {r: self._examples.get(r, "") for r in rejected}


@dataclass(frozen=True)
class Thresholds:
    """The `health` section of the configuration, as `evaluate` needs it."""

    destination_grace: float = 60.0
    subscription_grace: float = 60.0
    max_rejected_share: float = 0.95
    rejection_min_messages: int = 20
    max_refused_share: float = 0.1


@dataclass
class DestinationState:
    name: str
    pending: int
    queue: int
    journal_points: int
    journal_bytes: int
    failing_s: float
    last_error: str
    alive: bool
    oldest_pending_s: float
    flush_interval: float
    journal_failed_s: float | None  # seconds since the last refused journal or intake write; None: never
    journal_error: str
    free_bytes: int
    reserve_bytes: int
    dead_letter_error: str = ""
    dead_letter_file: str = ""
    window_points: int = 0  # points InfluxDB answered for (written or refused) in the last rejection_window
    window_refused: dict[str, int] = field(default_factory=dict)  # ... of them refused, by reason
    window_examples: dict[str, str] = field(default_factory=dict)  # InfluxDB's message per reason
    scheduled: bool = False  # the destination has a schedule
    live_first: bool = False  # a schedule or a send budget: live points first, the backlog paced behind them
    oldest_live_s: float = 0.0  # age of the oldest point in memory (the journal's backlog left out)
    idle_s: float = 0.0  # since the destination last acknowledged a write (from the window's start)
    window_age_s: float | None = None  # seconds since its window opened; None: closed (or no schedule)
    next_window: str = ""  # when it opens next (UTC, ISO 8601), while closed

    @property
    def pending_by_schedule(self) -> bool:
        return self.scheduled and self.window_age_s is None


@dataclass
class SubscriptionState:
    name: str
    endpoints: list[str]
    require_connection: bool
    connected: int
    disconnected_s: float
    reconnects: int
    last_message_age_s: float  # -1: none yet
    running_s: float  # since the bridge started
    fast_path: str
    expected_interval: float | None
    window_received: int
    window_rejected: dict[str, int]
    window_examples: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)  # further facts a source reports (shown as they are)
    problems: list[str] = field(default_factory=list)  # problems a source reports itself (e.g. cannot start)
    last_events: str = ""  # what libzmq last reported for its endpoints (refused, unresolved, handshake failed)
    # `ignore` rules that ignored messages the mapping maps, within the window, while nothing was
    # mapped in it: rule -> an example of the point such a message makes (a rule that eats the feed)
    eaten_by_rules: dict[str, str] = field(default_factory=dict)


@dataclass
class BridgeState:
    destinations: list[DestinationState]
    subscriptions: list[SubscriptionState]
    stopping: bool = False
    dead_letter_file: str = ""
    dead_letter_error: str = ""
    ledger_file: str = ""
    ledger_error: str = ""
    cache: dict[str, Any] | None = None
    orphans: list[tuple[str, str]] = field(default_factory=list)  # journals of destinations no longer configured


def destination_problems(d: DestinationState, t: Thresholds) -> tuple[bool, list[tuple[str, str, str]]]:
    """(whether the journal is writable, the destination's problems as (part, name, reason))."""
    problems: list[tuple[str, str, str]] = []
    max_age = t.destination_grace + d.flush_interval
    age = d.oldest_pending_s
    if d.live_first:
        # A paced or scheduled link catches up behind the live stream by design: it is healthy
        # while live points go out on time and the backlog keeps draining (a write acknowledged
        # within the grace), however old the backlog is.
        age = 0.0 if d.pending_by_schedule else d.oldest_live_s
        if d.journal_points and not d.pending_by_schedule and d.idle_s > max_age:
            problems.append(("destination", d.name,
                             f"backlog of {d.journal_points} points not draining: no write acknowledged for "
                             f"{d.idle_s:.0f} s" + (" (counted from its window's start)" if d.scheduled else "")
                             + f" (threshold {max_age:g} s)" + (f": {d.last_error[:200]}" if d.last_error else "")))
    elif d.scheduled:
        age = 0.0 if d.window_age_s is None else min(age, d.window_age_s)
    if age > max_age:
        problems.append(("destination", d.name,
                         f"oldest unacknowledged point is {age:.0f} s old"
                         + (" (counted from its window's start)" if d.scheduled else "")
                         + f" (threshold {max_age:g} s), "
                         f"{d.pending} pending" + (f": {d.last_error[:200]}" if d.last_error else "")))
    if d.failing_s > t.destination_grace and not d.pending_by_schedule:
        problems.append(("destination", d.name, f"failing for {d.failing_s:.0f} s: {d.last_error[:200]}"))
    if not d.alive:
        problems.append(("sink", d.name, "writer thread is not running"))
    recent = d.journal_failed_s is not None and d.journal_failed_s < t.destination_grace
    writable = not recent and d.free_bytes >= d.reserve_bytes
    if not writable:
        problems.append(("journal", d.name,
                         (f"free space {d.free_bytes} bytes is below the reserve of {d.reserve_bytes} bytes"
                          if d.free_bytes < d.reserve_bytes else
                          f"write failed {d.journal_failed_s:.0f} s ago: {d.journal_error}")[:250]))
    if d.dead_letter_error:
        problems.append(("dead_letters", d.dead_letter_file, d.dead_letter_error[:200]))
    refused = sum(d.window_refused.values())
    if refused and d.window_points >= t.rejection_min_messages and refused / d.window_points >= t.max_refused_share:
        reason = max(d.window_refused, key=lambda r: d.window_refused[r])
        example = d.window_examples.get(reason, "")
        problems.append(("destination", d.name,
                         f"InfluxDB refused {refused} of its {d.window_points} recent points, mostly {reason}"
                         + (f" ({example[:200]})" if example else "") + ": they are dropped"))
    return writable, problems


def subscription_problems(s: SubscriptionState, t: Thresholds) -> tuple[float | None, list[str]]:
    """(the rejected share over the window, None below the minimum of messages; the problems)."""
    problems = [p[:300] for p in s.problems]
    if s.require_connection and s.disconnected_s > t.subscription_grace:
        problems.append((f"no connection for {s.disconnected_s:.0f} s to {', '.join(s.endpoints)}"
                         + (f" ({s.last_events})" if s.last_events else ""))[:300])
    share = None
    rejected = sum(s.window_rejected.values())
    if s.window_received >= t.rejection_min_messages:
        share = rejected / s.window_received
        if share >= t.max_rejected_share:
            reason = max(s.window_rejected, key=lambda r: s.window_rejected[r])
            example = s.window_examples.get(reason, "")
            problems.append(f"{rejected} of {s.window_received} recent messages rejected, mostly {reason}"
                            + (f" (e.g. {example[:200]})" if example else "")
                            + ": the feed arrives but does not land")
    if s.eaten_by_rules:
        rules = sorted(s.eaten_by_rules)
        example = s.eaten_by_rules[rules[0]]
        problems.append((f"nothing mapped recently: ignore rule(s) {', '.join(map(repr, rules))} ignore messages "
                         f"the mapping maps (e.g. {example[:150]}): a rule that matches data")[:300])
    if s.expected_interval:
        silent = s.last_message_age_s if s.last_message_age_s >= 0 else s.running_s
        limit = OVERDUE_FACTOR * s.expected_interval
        if silent > limit:
            problems.append(f"no message for {silent:.0f} s (expected every {s.expected_interval:g} s)")
    return share, problems


def evaluate(state: BridgeState, t: Thresholds) -> dict[str, Any]:
    """The health document: `ok`, `problems` (one entry per failing part: part, name, reason),
    and per destination and subscription their figures and `ok`."""
    problems: list[dict[str, str]] = []
    destinations = {}
    for d in state.destinations:
        writable, found = destination_problems(d, t)
        destinations[d.name] = {
            "ok": not found,
            "state": ("degraded" if found else "pending_by_schedule" if d.pending_by_schedule
                      else "catching_up" if d.live_first and d.journal_points else "ok"),
            "pending_by_schedule": d.pending_by_schedule, "next_window": d.next_window or None,
            "pending": d.pending, "queue": d.queue, "journal_points": d.journal_points,
            "journal_bytes": d.journal_bytes, "failing": d.failing_s > 0, "failing_s": round(d.failing_s, 3),
            "last_error": d.last_error, "alive": d.alive, "journal_writable": writable,
            "oldest_pending_s": round(d.oldest_pending_s, 3), "oldest_live_s": round(d.oldest_live_s, 3),
            "max_oldest_pending_s": t.destination_grace + d.flush_interval}
        problems += [{"part": part, "name": name, "reason": reason} for part, name, reason in found]
    subscriptions = {}
    for s in state.subscriptions:
        share, found = subscription_problems(s, t)
        subscriptions[s.name] = {
            "ok": not found, "connected": s.connected, "disconnected_s": round(s.disconnected_s, 3),
            "reconnects": s.reconnects, "last_message_age_s": round(s.last_message_age_s, 3),
            "recent_received": s.window_received, "recent_rejected": sum(s.window_rejected.values()),
            "rejected_share": None if share is None else round(share, 4),
            "fast_path": s.fast_path, **s.extra}
        problems += [{"part": "subscription", "name": s.name, "reason": reason} for reason in found]
    if state.dead_letter_error:
        problems.append({"part": "dead_letters", "name": state.dead_letter_file,
                         "reason": state.dead_letter_error[:200]})
    if state.ledger_error:
        problems.append({"part": "ledger", "name": state.ledger_file, "reason": state.ledger_error[:200]})
    for name, why in state.orphans:
        problems.append({"part": "journal", "name": name, "reason": why[:400]})
    if state.stopping:
        problems.append({"part": "bridge", "name": "bridge", "reason": "stopping"})
    doc: dict[str, Any] = {"ok": not problems, "problems": problems, "destinations": destinations,
                           "subscriptions": subscriptions}
    if state.cache is not None:
        doc["cache"] = state.cache
    return doc
