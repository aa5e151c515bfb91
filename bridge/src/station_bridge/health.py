"""Health: what /healthz says, the gauges behind it, and systemd's notify protocol.

/healthz answers 200 with `"ok": true`, or 503 with `"ok": false` and `problems`, one entry per
failing part, when:
- a destination has failed (no write or /ping succeeded) for longer than `health.destination_grace`;
- a destination's writer thread is dead (it is restarted at once; a thread that keeps dying stays
  visible here);
- a journal cannot be written: a segment write or an intake-log append failed within the last
  `health.destination_grace` (disk full, the reserve reached), or the free space is below
  `journal.min_free_bytes` now;
- a dead-letter file or the ledger cannot be written;
- a subscription that requires a connection (`require_connection`, default: connecting ones) has
  had none for longer than `health.subscription_grace`;
- the stop was requested.

`SystemdNotifier` speaks sd_notify over the `NOTIFY_SOCKET` datagram socket (no dependency):
READY=1 once the bridge runs, WATCHDOG=1 from the receive loop at half of `WATCHDOG_USEC`,
RELOADING=1 before a reload's re-exec, STOPPING=1 on stop. Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import Bridge


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


def evaluate(bridge: Bridge) -> dict[str, Any]:
    """The /healthz document."""
    spec = bridge.config.health
    problems: list[dict[str, str]] = []
    destinations = {}
    now = time.monotonic()
    for sink in bridge.sinks:
        failing = sink.failing_seconds()
        journal = sink.journal
        free = bridge.guard.free()
        recent = [f for f in (journal.failed_at, sink.intake.failed_at if sink.intake is not None else 0.0)
                  if f and now - f < spec.destination_grace]
        writable = not recent and free >= bridge.guard.reserve
        destinations[sink.name] = {
            "pending": sink.pending, "queue": sink.queued, "journal_points": journal.points,
            "journal_bytes": journal.bytes, "failing": failing > 0, "failing_s": round(failing, 3),
            "last_error": sink.last_error,
            "alive": sink.alive, "journal_writable": writable,
            "oldest_pending_s": round(sink.oldest_pending_seconds(), 3)}
        if failing > spec.destination_grace:
            problems.append({"part": "destination", "name": sink.name,
                             "reason": f"failing for {failing:.0f} s: {sink.last_error[:200]}"})
        if not sink.alive:
            problems.append({"part": "sink", "name": sink.name, "reason": "writer thread is not running"})
        if not writable:
            reason = (f"free space {free} bytes is below the reserve of {bridge.guard.reserve} bytes"
                      if free < bridge.guard.reserve else
                      f"write failed {now - max(recent):.0f} s ago: " +
                      (journal.last_error or (sink.intake.last_error if sink.intake is not None else "")))
            problems.append({"part": "journal", "name": sink.name, "reason": reason[:200]})
        if sink.dead.last_error:
            problems.append({"part": "dead_letters", "name": sink.dead.path.name, "reason": sink.dead.last_error[:200]})
    if bridge.dead_input.last_error:
        problems.append({"part": "dead_letters", "name": bridge.dead_input.path.name,
                         "reason": bridge.dead_input.last_error[:200]})
    if bridge.ledger.last_error:
        problems.append({"part": "ledger", "name": str(bridge.ledger.path), "reason": bridge.ledger.last_error[:200]})
    subscriptions = {}
    for sub in bridge.subscriptions:
        source = sub.source
        away = source.disconnected_for()
        subscriptions[sub.name] = {
            "connected": source.connected, "disconnected_s": round(away, 3), "reconnects": source.reconnects,
            "last_message_age_s": round(now - sub.last_message, 3) if sub.last_message else -1,
            "fast_path": sub.fast_path}
        if sub.spec.require_connection and away > spec.subscription_grace:
            problems.append({"part": "subscription", "name": sub.name,
                             "reason": f"no connection for {away:.0f} s to {', '.join(sub.spec.endpoints)}"})
    if bridge.stopping:
        problems.append({"part": "bridge", "name": "bridge", "reason": "stopping"})
    state: dict[str, Any] = {"ok": not problems, "problems": problems, "destinations": destinations,
                             "subscriptions": subscriptions}
    if bridge.cache is not None:
        state["cache"] = {"queue": bridge.cache.queued, "last_error": bridge.cache.last_error}
    return state
