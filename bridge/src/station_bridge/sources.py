"""Sources: one ZMQ SUB socket per subscription, connected (or bound) to its endpoints, watched
by a socket monitor.

- `receive` takes up to a burst of messages without blocking.
- Isolation: each subscription has its own `zmq.Context` (one I/O thread; a subscription with an
  inproc endpoint uses the bridge's shared context, which inproc needs). libzmq resolves a
  connect's host name in the I/O thread of the socket's context, blocking it (~10 s per attempt
  with a DNS server that never answers): with one context for all, every subscription stalled.
  The cost, measured with 20 subscriptions: +38 threads, +0.8 MiB RSS, +96 file descriptors,
  6.7 ms more set-up. Resolving names ourselves and connecting by address was the alternative;
  it loses libzmq's re-resolution on every reconnect (a publisher moving address) unless
  rebuilt around it, and the endpoints of one socket would still share one I/O thread.
- Set-up never stops the bridge: a socket that cannot be created or an endpoint that cannot be
  connected or bound (address in use, an interface that does not exist, anything libzmq refuses)
  is retried from `repair` (the receive loop's housekeeping) with exponential backoff
  (SETUP_FIRST_S doubling to SETUP_MAX_S), counted in `bridge_subscription_start_errors_total`,
  logged when the error changes or at most once a minute, and named in /healthz until it works.
  `socket` and `monitor` are None until the socket exists (the receive loop registers them when
  they appear; the compiled path reads `socket`).
- Connected means handshaken: a peer counts (`connected`, the gauge, /healthz) once its ZMTP
  handshake succeeded, not when TCP connected. Failed handshakes are counted
  (`bridge_subscription_handshake_failures_total`); libzmq's handshake interval is set to
  `health.handshake_grace`, so a peer that accepts TCP and never speaks ZMTP (an HTTP port) is
  dropped and retried at that interval, and a connecting endpoint without a handshake for longer
  than that grace is named in /healthz (`problems`) until one succeeds.
- Repair of what libzmq does not retry: a connection dropped for a protocol error (a message
  above the transport limit, MAXMSGSIZE = 16 x max_frame_bytes, or a peer speaking garbage) is
  never retried by libzmq. An endpoint that stays disconnected without a reconnect attempt for
  `REOPEN_AFTER_S` is disconnected and connected again on the same socket (messages already
  queued are kept), counted in `bridge_subscription_reconnects_total`; an endpoint that drops
  again without a handshake waits twice as long each time (up to SETUP_MAX_S).
- A graceful stop drains with `receive` until no socket delivered anything for 200 ms (stop.py); it does not
  unsubscribe first: a SUB socket filters at receive time and would discard its queue.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable

import zmq
from zmq.utils.monitor import recv_monitor_message

from .config import SubscriptionSpec
from .memory import BURST_BYTES, MIN_RCVHWM

log = logging.getLogger("station_bridge.source")

# Hard transport limit well above max_frame_bytes: frames between the two are refused
# and counted by the decoder; larger ones are cut off by ZMQ before they use memory.
BURST = 2000  # messages taken from one socket before the others get a turn
# ... or BURST_BYTES (memory.py): large messages never make a burst of gigabytes
REOPEN_AFTER_S = 0.5  # libzmq retries a normal disconnect within its reconnect interval (100 ms)
SETUP_FIRST_S = 0.5  # the first retry of a failed set-up; doubles up to SETUP_MAX_S
SETUP_MAX_S = 30.0
LOG_EVERY_S = 60.0  # the same set-up or handshake error is logged at most this often per endpoint
TERM_WAIT_S = 2.0  # at stop, contexts still terminating after this are left to the process exit

_NOBLOCK = int(zmq.NOBLOCK)
_FAILED = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail", zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",
           zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth"}
_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
           | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CLOSED | zmq.EVENT_MONITOR_STOPPED
           | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def receive(socket: zmq.Socket, limit: int = BURST, max_bytes: int = BURST_BYTES) -> list[list[bytes]]:
    """Up to `limit` multipart messages without blocking, ending after the message that brings
    the burst to `max_bytes` (a burst is held in memory whole).

    Frames with their `more` flag instead of recv_multipart: pyzmq's RCVMORE lookup converts
    the option to an enum on every frame, which halved the receive rate in profiles. The
    common two-frame message [topic, payload] takes the shortest path.
    """
    messages = []
    recv = socket.recv
    size = 0
    try:
        for _ in range(limit):
            first = recv(_NOBLOCK, copy=False)
            if not first.more:
                data = first.bytes
                messages.append([data])
                size += len(data)
            else:
                frame = recv(_NOBLOCK, copy=False)
                frames = [first.bytes, frame.bytes]
                while frame.more:
                    frame = recv(_NOBLOCK, copy=False)
                    frames.append(frame.bytes)
                messages.append(frames)
                size += sum(map(len, frames))
            if size >= max_bytes:
                break
    except zmq.Again:
        pass
    return messages


class _Retry:
    """A set-up step that failed: its error, backoff and log rate."""

    def __init__(self) -> None:
        self.error = ""
        self.failures = 0  # consecutive
        self.next_try = 0.0
        self.next_log = 0.0

    def failed(self, error: str, now: float) -> tuple[bool, float]:
        """Records a failure; (whether to log it, the delay until the next attempt)."""
        self.failures += 1
        delay = min(SETUP_MAX_S, SETUP_FIRST_S * 2 ** min(self.failures - 1, 16))
        self.next_try = now + delay
        loud = error != self.error or now >= self.next_log
        if loud:
            self.next_log = now + LOG_EVERY_S
        self.error = error
        return loud, delay

    def succeeded(self) -> int:
        failures, self.failures, self.error, self.next_log = self.failures, 0, "", 0.0
        return failures


class Endpoint:
    """One endpoint of a subscription: set up or not, and its connections as the monitor reports them."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.open = False  # connect()/bind() succeeded
        self.setup = _Retry()
        self.tcp = 0  # connections waiting for their handshake
        self.peers = 0  # connections whose handshake succeeded
        self.failed = 0  # failed handshakes whose DISCONNECTED is still to come
        self.handshake_failures = 0
        self.unready_since: float | None = None  # TCP connected, no handshake since (connecting only)
        self.attempted = False  # a TCP connect was tried since the last retry (else: the name did not resolve)
        self.last_event = ""  # what libzmq last said about it, for /healthz
        self.dropped_at: float | None = None  # libzmq dropped it and may not retry (connecting only)
        self.repair_delay = REOPEN_AFTER_S
        self.next_log = 0.0  # handshake failures and repairs, rate-limited

    def describe(self) -> dict[str, object]:
        return {"open": self.open, "peers": self.peers, "handshake_failures": self.handshake_failures,
                "error": self.setup.error, "last_event": self.last_event}


def _handshake_detail(kind: int, value: int, grace: float) -> str:
    if kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        if value == errno.EAGAIN:
            return f"no ZMTP greeting within {grace:g} s (not a ZMQ publisher?)"
        return f"connection failed during the handshake: {os.strerror(value)}" if value else "no detail"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return f"ZMTP protocol error 0x{value:x} (not a ZMQ publisher, or an incompatible one)"
    return f"authentication failed (status {value})"


class Source:
    def __init__(self, context: zmq.Context, spec: SubscriptionSpec, handshake_grace: float = 10.0,
                 rcvhwm: int | None = None) -> None:
        """`rcvhwm`: the receive queue per connection, in messages (Config.rcvhwm: the spec's, or
        derived from the memory budget); None: the spec's, else memory.MIN_RCVHWM."""
        self.spec = spec
        self.name = spec.name
        self.handshake_grace = handshake_grace
        self.rcvhwm = rcvhwm if rcvhwm is not None else spec.rcvhwm or MIN_RCVHWM
        # inproc reaches only sockets of the same context: such a subscription keeps the shared one
        self._own = not any(e.startswith("inproc://") for e in spec.endpoints)
        self.context: zmq.Context | None = None if self._own else context
        self.socket: zmq.Socket | None = None  # None until created (see the module docstring)
        self.monitor: zmq.Socket | None = None
        self.endpoints = {e: Endpoint(e) for e in spec.endpoints}
        self._aliases: dict[str, Endpoint] = {}  # the address libzmq reports for a bound wildcard or interface
        self._setup = _Retry()  # creating the socket
        self._counts: list[str] = []  # counters to hand to the metrics (repair)
        self._always = all(e.startswith("inproc://") for e in spec.endpoints)  # no monitor events
        self.start_errors = 0
        self.handshake_failures = 0
        self.reconnects = 0
        self.closed = False
        self.last_connected = time.monotonic()  # the grace period starts at start
        self.setup(time.monotonic())

    # --- set-up ---------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """The socket exists and every endpoint is connected or bound."""
        return self.socket is not None and all(e.open for e in self.endpoints.values())

    def setup(self, now: float) -> None:
        """Creates the socket (once) and opens every endpoint that is not open and due for a try."""
        if self.closed:
            return
        if self.socket is None:
            if now < self._setup.next_try:
                return
            try:
                self._create()
            except zmq.ZMQError as exc:
                self._failed(self._setup, None, f"cannot create the socket: {exc}", now)
                return
            if self._setup.succeeded():
                log.warning("subscription socket created", extra={"subscription": self.name})
        socket = self.socket
        assert socket is not None
        for endpoint in self.endpoints.values():
            if endpoint.open or now < endpoint.setup.next_try:
                continue
            try:
                if self.spec.bind:
                    socket.bind(endpoint.address)
                    self._aliases[socket.last_endpoint.decode("utf-8", "replace")] = endpoint
                else:
                    socket.connect(endpoint.address)
            except zmq.ZMQError as exc:
                verb = "bind" if self.spec.bind else "connect"
                self._failed(endpoint.setup, endpoint, f"cannot {verb}: {exc}", now)
                continue
            endpoint.open = True
            failures = endpoint.setup.succeeded()
            if failures:
                log.warning("subscription endpoint set up", extra={
                    "subscription": self.name, "endpoint": endpoint.address, "failures": failures})

    def _create(self) -> None:
        if self.context is None:
            self.context = zmq.Context(io_threads=1)
        socket = monitor = None
        try:
            socket = self.context.socket(zmq.SUB)
            socket.setsockopt(zmq.RCVHWM, self.rcvhwm)
            socket.setsockopt(zmq.MAXMSGSIZE, self.spec.largest_message)
            socket.setsockopt(zmq.LINGER, 0)  # a SUB socket sends nothing that could be lost
            socket.setsockopt(zmq.HANDSHAKE_IVL, max(1, round(self.handshake_grace * 1000)))
            if any(e.startswith("tcp://") and "[" in e for e in self.endpoints):
                socket.setsockopt(zmq.IPV6, 1)
            monitor = socket.get_monitor_socket(_EVENTS)
            for topic in self.spec.topics:
                socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        except zmq.ZMQError:
            for s in (monitor, socket):
                if s is not None:
                    s.close(linger=0)
            raise
        self.socket, self.monitor = socket, monitor

    def _failed(self, retry: _Retry, endpoint: Endpoint | None, error: str, now: float) -> None:
        loud, delay = retry.failed(error, now)
        self.start_errors += 1
        self._counts.append("bridge_subscription_start_errors_total")
        if loud:
            log.error("subscription cannot be set up: retried in the background, the others run", extra={
                "subscription": self.name, "endpoint": endpoint.address if endpoint else None, "error": error,
                "failures": retry.failures, "retry_in_s": delay})

    # --- connections ----------------------------------------------------------------------------

    @property
    def connected(self) -> int:
        """Peers whose ZMTP handshake succeeded (1 for inproc-only subscriptions: no events)."""
        return sum(e.peers for e in self.endpoints.values()) if not self._always else 1

    def disconnected_for(self) -> float:
        if self.connected:
            self.last_connected = time.monotonic()
            return 0.0
        return time.monotonic() - self.last_connected

    def _endpoint(self, address: str) -> Endpoint | None:
        found = self.endpoints.get(address) or self._aliases.get(address)
        if found is None and self.spec.bind:  # a connection's local address on a wildcard bind: by port
            port = address.rpartition(":")[2]
            matches = {id(e): e for a, e in self._aliases.items() if a.rpartition(":")[2] == port}
            found = next(iter(matches.values())) if len(matches) == 1 else None
        if found is None and len(self.endpoints) == 1:
            found = next(iter(self.endpoints.values()))
        return found

    def on_monitor(self) -> None:
        """Reads every pending monitor event."""
        if self.monitor is None:
            return
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.ZMQError:  # Again: nothing more; anything else: the monitor is gone
                return
            kind, value = event["event"], event["value"]
            address = event["endpoint"].decode("utf-8", "replace") if isinstance(event["endpoint"], bytes) \
                else str(event["endpoint"])
            endpoint = self._endpoint(address)
            if endpoint is not None:
                self._event(endpoint, kind, value, time.monotonic())

    def _event(self, e: Endpoint, kind: int, value: int, now: float) -> None:
        connecting = not self.spec.bind
        if kind in (zmq.EVENT_CONNECTED, zmq.EVENT_ACCEPTED):
            e.tcp += 1
            e.attempted = True
            e.dropped_at = None
            if connecting and e.peers == 0:
                e.last_event = "TCP connected, no ZMTP handshake yet"
                if e.unready_since is None:
                    e.unready_since = now
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            e.tcp = max(0, e.tcp - 1)
            e.peers += 1
            e.unready_since = None
            e.repair_delay = REOPEN_AFTER_S
            e.last_event = "handshake succeeded"
            self.last_connected = now
        elif kind in _FAILED:
            e.tcp = max(0, e.tcp - 1)
            e.failed += 1
            e.handshake_failures += 1
            self.handshake_failures += 1
            self._counts.append("bridge_subscription_handshake_failures_total")
            detail = _handshake_detail(kind, value, self.handshake_grace)
            e.last_event = f"handshake failed: {detail}"
            if now >= e.next_log:
                e.next_log = now + LOG_EVERY_S
                log.warning("ZMTP handshake failed" + ("" if connecting else " (a peer connected to a bound endpoint)"),
                            extra={"subscription": self.name, "endpoint": e.address, "kind": _FAILED[kind],
                                   "detail": detail, "handshake_failures": e.handshake_failures})
        elif kind == zmq.EVENT_DISCONNECTED:
            if e.failed:
                e.failed -= 1  # the connection whose handshake failed (libzmq reports it right after)
            elif e.peers:
                e.peers -= 1
                self.last_connected = now
            else:
                e.tcp = max(0, e.tcp - 1)
            if connecting:
                e.dropped_at = now
        elif kind == zmq.EVENT_CONNECT_DELAYED:
            e.attempted = True
            e.dropped_at = None
        elif kind == zmq.EVENT_CONNECT_RETRIED:
            e.dropped_at = None  # libzmq is retrying by itself
            if not e.attempted:
                e.last_event = "the host name does not resolve"
            e.attempted = False
        elif kind == zmq.EVENT_CLOSED and connecting and not e.peers and not e.tcp:
            e.last_event = "connection refused or unreachable"

    def repair(self, metrics_inc: Callable[..., None]) -> None:
        """Retries what could not be set up, re-opens endpoints libzmq dropped and does not
        retry, and hands the counts since the last call to the metrics."""
        now = time.monotonic()
        if not self.closed:
            self.setup(now)
            if self.socket is not None and not self.spec.bind:
                for endpoint in self.endpoints.values():
                    if endpoint.dropped_at is not None and now - endpoint.dropped_at >= endpoint.repair_delay:
                        self._reopen(endpoint, now, metrics_inc)
        counts, self._counts = self._counts, []
        for name in counts:
            metrics_inc(name, 1, subscription=self.name)

    def _reopen(self, endpoint: Endpoint, now: float, metrics_inc: Callable[..., None]) -> None:
        assert self.socket is not None
        endpoint.dropped_at = None
        with contextlib.suppress(zmq.ZMQError):  # the session may be gone already
            self.socket.disconnect(endpoint.address)
        try:
            self.socket.connect(endpoint.address)
        except zmq.ZMQError as exc:
            endpoint.open = False
            self._failed(endpoint.setup, endpoint, f"cannot re-open a dropped connection: {exc}", now)
            return
        self.reconnects += 1
        metrics_inc("bridge_subscription_reconnects_total", 1, subscription=self.name)
        if endpoint.repair_delay == REOPEN_AFTER_S or now >= endpoint.next_log:  # first of a series, or a minute on
            endpoint.next_log = now + LOG_EVERY_S
            log.warning("connection dropped by libzmq and not retried (a message above the transport limit of "
                        f"{self.spec.largest_message} bytes, or a protocol error): "
                        "re-opened", extra={"subscription": self.name, "endpoint": endpoint.address,
                                            "next_reopen_after_s": endpoint.repair_delay})
        endpoint.repair_delay = min(SETUP_MAX_S, endpoint.repair_delay * 2)  # reset by a handshake

    # --- health ---------------------------------------------------------------------------------

    def problems(self, now: float | None = None) -> list[str]:
        """What /healthz names for this subscription beyond `health.subscription_grace`: what
        cannot be set up, and connecting endpoints whose peer completes no handshake."""
        now = time.monotonic() if now is None else now
        out = []
        if self.socket is None and not self.closed:
            out.append(f"{self._setup.error} ({self._setup.failures} attempts, next in "
                       f"{max(0.0, self._setup.next_try - now):.0f} s)")
            return out
        for e in list(self.endpoints.values()):
            if not e.open:
                out.append(f"{e.address}: {e.setup.error} ({e.setup.failures} attempts, next in "
                           f"{max(0.0, e.setup.next_try - now):.0f} s)")
            elif not self.spec.bind and e.peers == 0 and e.unready_since is not None \
                    and now - e.unready_since > self.handshake_grace:
                out.append(f"{e.address}: TCP connects but no ZMTP handshake for {now - e.unready_since:.0f} s "
                           f"({e.handshake_failures} failed; {e.last_event or 'none finished'})")
        return out

    def describe(self) -> dict[str, dict[str, object]]:
        return {e.address: e.describe() for e in list(self.endpoints.values())}

    def last_events(self) -> str:
        return "; ".join(f"{e.address}: {e.last_event}" for e in list(self.endpoints.values()) if e.last_event)

    # --- stop -----------------------------------------------------------------------------------

    def close(self) -> threading.Thread | None:
        """Closes the sockets; returns the thread terminating the subscription's own context
        (it waits for an I/O thread busy resolving a host name)."""
        self.closed = True
        if self.socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.socket.disable_monitor()
            if self.monitor is not None:
                self.monitor.close(linger=0)
            self.socket.close(linger=0)
        if not self._own or self.context is None:
            return None
        thread = threading.Thread(target=self.context.term, name=f"zmq-term-{self.name}", daemon=True)
        thread.start()
        return thread


def close_all(sources: Iterable[Source], timeout: float = TERM_WAIT_S) -> None:
    """Closes every source and waits up to `timeout` in all for their contexts to terminate; a
    context whose I/O thread is blocked (in a DNS lookup) is left to the process exit."""
    threads = [(source, source.close()) for source in sources]
    deadline = time.monotonic() + timeout
    for source, thread in threads:
        if thread is None:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("a subscription's ZMQ context did not terminate in time (its I/O thread is busy, e.g. "
                        "resolving a host name); left to the process exit",
                        extra={"subscription": source.name, "waited_s": timeout})
