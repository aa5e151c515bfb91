"""A receive thread per compiled subscription (issue 22, `receive_threads: auto | on | off`).

With one receive loop, several busy subscriptions of one bridge share one core. The compiled path
receives and formats each batch without the GIL (`_fastpath.c`, "Two phases"), so a thread per
compiled subscription lets their C parts run in parallel. Everything else stays as serial as in
the one loop: the bridge's receive state (the uniqueness window every subscription shares, the
mappers' clocks, the Python path of messages handed back, rejections and dead letters, the
burst's counters, the sinks' and the cache's queues, the sources' repair) is touched only under
`lock`, an RLock the main loop holds for everything it does but wait in its poll. What runs
outside it: the wait for messages and C's receive and format of a batch, which touch only the
subscription's own plan and socket.

Ownership: a subscription's data socket and its plan belong to its thread while the thread runs
(the main loop polls only the monitor socket of such a subscription, and its housekeeping leaves
the repair of the socket to the thread); `stop` joins every thread before the bridge's final
drain (which polls every socket again from the main loop) and before any socket is closed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import zmq

from .pipeline import Pipeline, Subscription

log = logging.getLogger("station_bridge.receivers")
POLL_MS = 200  # how soon a thread sees the stop and repairs its socket (as the loop's TICK_S)
AUTO_MIN_CPUS = 3  # `auto`: threads only where the bridge may run on more than two CPUs


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity set: what taskset or a cpuset allows)."""
    return len(os.sched_getaffinity(0))


def threads_wanted(mode: str, compiled: int, cpus: int) -> bool:
    """Whether a bridge with `compiled` compiled subscriptions receives them by a thread each.

    `on`: whenever two or more run compiled. `auto`: the same, on a host with more than two CPUs.
    On two cores, where influxd and Redis share them with the bridge, the bench measured threads
    costing more than they give (one instance, two busy subscriptions: a thread each against one
    loop, throughput 0.78-0.93, CPU per point 1.11-1.27; docs/performance.md), and every station
    has two compiled subscriptions (its feed and the validation feed). `off`: one receive loop."""
    if compiled < 2 or mode == "off":
        return False
    return mode == "on" or cpus >= AUTO_MIN_CPUS


class Receivers:
    """One thread per subscription in `subs` (each compiled), started by `start`, joined by `stop`."""

    def __init__(self, subs: list[Subscription], pipeline: Pipeline, lock: threading.RLock,
                 count: Callable[..., None]) -> None:
        self.subs = subs
        self.pipeline = pipeline
        self.lock = lock
        self.count = count  # Metrics.inc
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._by_name: dict[str, threading.Thread] = {}  # subscription -> its thread (once started)

    def owns(self, sub: Subscription) -> bool:
        """Whether `sub`'s data socket belongs to a running receive thread: its own thread, alive.
        A thread that ended (a defect) or did not stop in time leaves the others' sockets to the
        main loop all the same (the drain at a stop read none while one thread was still running)."""
        thread = self._by_name.get(sub.name)
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, args=(sub,), name=f"receive-{sub.name}", daemon=True)
                         for sub in self.subs]
        self._by_name = {sub.name: thread for sub, thread in zip(self.subs, self._threads, strict=True)}
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ends every thread (each within a poll, POLL_MS, plus the batch it is receiving)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():  # a defect (a receive that hangs): its socket is not drained
                log.error("receive thread did not stop", extra={"receive_thread": thread.name})
        self._threads = [t for t in self._threads if t.is_alive()]
        log.info("receive threads ended", extra={"subscriptions": [s.name for s in self.subs],
                                                 "still_running": len(self._threads)})

    def problems(self, sub: Subscription) -> list[str]:
        """What /healthz says of `sub`'s receive thread: ended while the bridge runs (the main
        loop's `_register` then polls its socket, `owns`). A thread whose rounds all fail says so
        through its subscription (Subscription.receive_problems). Empty when it runs, or `sub`
        has no thread."""
        thread = self._by_name.get(sub.name)
        if thread is None or thread.is_alive() or self._stop.is_set():
            return []
        return ["receive thread ended (a defect): the main loop reads its socket"]

    def _run(self, sub: Subscription) -> None:
        state: dict = {"poller": None, "polled": None, "next_repair": 0.0}
        try:
            while not self._stop.is_set():
                try:
                    self._round(sub, state)
                    sub.receive_failed(None)
                except Exception as exc:  # a defect, contained: counted, logged, named in /healthz; the thread goes on
                    sub.receive_failed(exc)
                    self.count("bridge_stage_errors_total", 1, stage="receive")
                    log.exception("receive error (contained)", extra={"subscription": sub.name, "error": repr(exc)})
                    self._stop.wait(POLL_MS / 1000)  # never a hot loop of the same error
        except BaseException as exc:  # not contained (it cannot be): the thread ends, /healthz says so
            log.critical("receive thread ended", extra={"subscription": sub.name, "error": repr(exc)})
            raise

    def _round(self, sub: Subscription, state: dict) -> None:
        """One round of a subscription's thread: its socket repaired (each POLL_MS, as the main
        loop's housekeeping does it for the others), a poll, a burst through the compiled path."""
        now = time.monotonic()
        if now >= state["next_repair"]:
            state["next_repair"] = now + POLL_MS / 1000
            with self.lock:
                sub.source.repair(self.count)
        socket = sub.source.socket
        if socket is None:  # not set up yet (sources.Source retries it in repair)
            self._stop.wait(POLL_MS / 1000)
            return
        if socket is not state["polled"]:
            state["poller"], state["polled"] = zmq.Poller(), socket
            state["poller"].register(socket, zmq.POLLIN)
        if state["poller"].poll(POLL_MS) and not self.pipeline.expired():
            self.pipeline.receive_compiled(sub, self.lock)
