"""The stop: its request, its deadline, the drain, the flush and the final ledger save.

A stop is requested by a stop signal (signals.py calls `request` from the handler) or by a reload
that applies a changed configuration (reload.py). Its deadline starts with the first request:
the receive side (every stage consults `Pipeline.deadline`, a drain already under way too) has
half of `shutdown_timeout`, the destinations the rest.
Graceful stop: receive until no socket delivered anything for DRAIN_QUIET_S (what libzmq and the
publisher held when the stop began; at most half of `shutdown_timeout` for a feed that never
pauses), flush every destination within the rest, journal what is left, save the ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .loop import ReceiveLoop
from .sources import close_all
from .wiring import Parts

log = logging.getLogger("station_bridge")

DRAIN_QUIET_S = 0.2  # a drain ends when no socket delivered anything for this long (or at half the stop budget)


class Stop:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.event = threading.Event()  # set: the receive loop ends
        self.requested_at = 0.0  # monotonic; 0: no stop requested
        self.stopping = False  # the stop under way (health: `stopping`)

    def request(self, *_: object) -> None:
        """A stop (from the signal handler too): its deadline starts now, and every receive-side
        stage consults it (`Pipeline.deadline`), including a drain already under way."""
        self.begin()
        self.event.set()

    def begin(self) -> float:
        """When the stop began (the first request); sets the receive side's deadline, half of
        shutdown_timeout from then (the rest is the destinations')."""
        if not self.requested_at:
            self.requested_at = time.monotonic()
        pipeline = self.parts.pipeline
        pipeline.deadline = min(pipeline.deadline, self.requested_at + self.parts.config.shutdown_timeout / 2)
        return self.requested_at

    def shutdown(self, loop: ReceiveLoop, http: Any = None) -> int:
        """The drain, the flush, the final ledger save, and everything closed; the exit code."""
        p = self.parts
        started = self.begin()  # a reload's stop begins here; a signal's when it came
        budget = p.config.shutdown_timeout
        log.info("stopping: draining subscriptions, then flushing destinations", extra={"timeout_s": budget})
        if p.receivers is not None:  # their sockets are the main loop's again: the drain polls them
            p.receivers.stop()
        drained = self.drain(loop)
        close_all([sub.source for sub in p.subscriptions])
        loop.housekeeping(time.monotonic())
        remaining = max(1.0, budget - (time.monotonic() - started))
        threads = [threading.Thread(target=s.stop, args=(remaining,)) for s in p.sinks]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            p.notifier.watchdog()
            for t in threads:
                t.join(0.5)
        if p.cache is not None:
            p.cache.stop(min(2.0, remaining))
        for sink in p.sinks:  # rotations during the final flush
            p.pipeline.count_discarded(sink.dead)
        p.save_ledger_finally()
        if http is not None:
            http.shutdown()
        p.dead_input.close()
        for sink in p.sinks:
            sink.dead.close()
        p.context.term()
        p.rate_log.summarize(force=True)
        log.info("stopped", extra={"drained_messages": drained,
                                   **{s.name: {"journal_points": s.journal.points} for s in p.sinks}})
        return 0

    def drain(self, loop: ReceiveLoop) -> int:
        """Receive until quiet: a poll of DRAIN_QUIET_S in which no socket delivered anything.
        Not "a round took less than a burst": a consumer faster than the link empties its
        socket every round while the publisher still holds a backlog (the chaos test lost
        115,000 of 150,000 that way on a loaded machine). A feed that never pauses is
        drained for at most half of the budget; the rest is for the destinations."""
        loop.register()
        drained = 0
        last = time.monotonic()
        while not self.parts.pipeline.expired() and time.monotonic() - last < DRAIN_QUIET_S:
            got = loop.poll(int(DRAIN_QUIET_S * 1000))
            self.parts.notifier.watchdog()
            drained += got
            if got:
                last = time.monotonic()
        return drained
