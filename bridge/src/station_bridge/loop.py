"""The one receive loop (the main thread): poll, receive, housekeeping.

Every subscription's socket and monitor are polled here (a subscription with a receive thread of
its own, receivers.py: its monitor only); each socket that has messages hands over up to a burst
to the pipeline (a compiled subscription: `Pipeline.receive_compiled`). A defect in a receive is
contained: counted (`bridge_stage_errors_total{stage="receive"}`), logged at a limited rate and
named in /healthz through its subscription; the loop goes on. Every TICK_S the housekeeping: the
systemd watchdog, dropped connections re-opened, writer threads supervised, sockets that appeared
since registered, and the caller's tick (the self-metrics points). The stop's drain polls through
the same `poll` (stop.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import zmq

from .pipeline import Subscription
from .signals import Signals
from .sources import BURST, BURST_BYTES, receive
from .wiring import Parts

log = logging.getLogger("station_bridge")

TICK_S = 0.2  # housekeeping period


class ReceiveLoop:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.poller = zmq.Poller()
        self.by_socket: dict = {}

    def run(self, stop: threading.Event, signals: Signals, on_signals: Callable[[], None],
            on_tick: Callable[[float], None]) -> None:
        """Until `stop` is set: the signals received acted on (`on_signals`, under the lock), a poll
        round, and every TICK_S the housekeeping and `on_tick`."""
        lock = self.parts.lock
        next_tick = time.monotonic() + TICK_S
        while not stop.is_set():
            if signals.pending:
                with lock:
                    on_signals()
                if stop.is_set():
                    break
            self.poll(int(TICK_S * 1000))
            now = time.monotonic()
            if now >= next_tick:
                lock.acquire()
                next_tick = now + TICK_S
                try:
                    self.housekeeping(now)
                    self.register()
                    on_tick(now)
                except Exception as exc:  # contained
                    self.parts.metrics.inc("bridge_stage_errors_total", 1, stage="housekeeping")
                    log.exception("housekeeping error (contained)", extra={"error": repr(exc)})
                finally:
                    lock.release()

    def housekeeping(self, now: float) -> None:
        p = self.parts
        p.notifier.watchdog()
        for sub in p.subscriptions:
            if p.receivers is None or not p.receivers.owns(sub):  # else its thread repairs it
                sub.source.repair(p.metrics.inc)
        for sink in p.sinks:
            sink.ensure_alive()
            p.pipeline.count_discarded(sink.dead)
        p.rate_log.summarize()

    def poll(self, timeout_ms: int) -> int:
        """One poll round: every socket that has messages hands over up to a burst; the count."""
        ready = self.poller.poll(timeout_ms)
        with self.parts.lock:
            return self._received(ready)

    def _received(self, ready: list) -> int:
        pipeline = self.parts.pipeline
        got = 0
        for socket, _ in ready:
            if pipeline.expired():  # the stop's deadline: what is still queued stays unread
                break
            sub = self.by_socket[socket]
            if socket is sub.source.monitor:
                sub.source.on_monitor()
                continue
            if sub.accelerator is not None:
                try:
                    n = pipeline.receive_compiled(sub)
                except Exception as exc:  # a defect, contained: the loop goes on
                    self._receive_error(sub, exc)
                    continue
                sub.receive_failed(None)
                got += n
                continue
            messages = receive(socket, BURST, BURST_BYTES)
            if messages:
                got += len(messages)
                sizes = [sum(map(len, m)) for m in messages]
                sub.observe_size(len(messages), sum(sizes), max(sizes))
                try:
                    pipeline.receive(sub, messages)
                except Exception as exc:  # a defect, contained: the loop goes on
                    self._receive_error(sub, exc)
                    continue
                sub.receive_failed(None)
        return got

    def _receive_error(self, sub: Subscription, exc: Exception) -> None:
        """A defect in a receive, contained: counted, logged (a repeating one at poll rate) and
        named in /healthz through its subscription."""
        self.parts.metrics.inc("bridge_stage_errors_total", 1, stage="receive")
        if self.parts.rate_log.allow("receive_error"):
            log.exception("receive error (contained)", extra={"subscription": sub.name, "error": repr(exc)})
        sub.receive_failed(exc)

    def register(self) -> None:
        """Polls each subscription's socket and monitor once they exist: a subscription whose
        set-up failed gets them later (sources.Source.repair, from housekeeping)."""
        receivers = self.parts.receivers
        for sub in self.parts.subscriptions:
            owned = receivers is not None and receivers.owns(sub)  # its data socket: its thread's
            for socket in (sub.source.monitor,) if owned else (sub.source.socket, sub.source.monitor):
                if socket is not None and socket not in self.by_socket:
                    self.poller.register(socket, zmq.POLLIN)
                    self.by_socket[socket] = sub
