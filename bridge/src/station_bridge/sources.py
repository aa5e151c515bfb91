"""Sources: one ZMQ SUB socket per subscription, connected (or bound) to its endpoints, watched
by a socket monitor.

- `receive` takes up to a burst of messages without blocking.
- The monitor counts the socket's connections (`connected`, a gauge and /healthz) and repairs
  what libzmq does not: a connection dropped for a protocol error (a message above the transport
  limit, MAXMSGSIZE = 16 x max_frame_bytes) is never retried by libzmq. An endpoint that stays
  disconnected without a reconnect attempt for `REOPEN_AFTER_S` is disconnected and connected
  again on the same socket (messages already queued are kept), counted in
  `bridge_subscription_reconnects_total` and logged.
- A graceful stop drains with `receive` until no socket delivered anything for 200 ms (app.py); it does not
  unsubscribe first: a SUB socket filters at receive time and would discard its queue.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from .config import SubscriptionSpec
from .memory import MIN_RCVHWM

log = logging.getLogger("station_bridge.source")

# Hard transport limit well above max_frame_bytes: frames between the two are refused
# and counted by the decoder; larger ones are cut off by ZMQ before they use memory.
TRANSPORT_LIMIT_FACTOR = 16
BURST = 2000  # messages taken from one socket before the others get a turn
REOPEN_AFTER_S = 0.5  # libzmq retries a normal disconnect within its reconnect interval (100 ms)

_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
           | zmq.EVENT_CONNECT_DELAYED | zmq.EVENT_CLOSED | zmq.EVENT_MONITOR_STOPPED)


def receive(socket: zmq.Socket, limit: int = BURST) -> list[list[bytes]]:
    """Up to `limit` multipart messages without blocking.

    Frames with their `more` flag instead of recv_multipart: pyzmq's RCVMORE lookup converts
    the option to an enum on every frame, which halved the receive rate in profiles. The
    common two-frame message [topic, payload] takes the shortest path.
    """
    messages = []
    recv = socket.recv
    try:
        for _ in range(limit):
            first = recv(_NOBLOCK, copy=False)
            if not first.more:
                messages.append([first.bytes])
                continue
            frame = recv(_NOBLOCK, copy=False)
            frames = [first.bytes, frame.bytes]
            while frame.more:
                frame = recv(_NOBLOCK, copy=False)
                frames.append(frame.bytes)
            messages.append(frames)
    except zmq.Again:
        pass
    return messages


class Source:
    def __init__(self, context: zmq.Context, spec: SubscriptionSpec, rcvhwm: int | None = None) -> None:
        """`rcvhwm`: the receive queue per connection, in messages (Config.rcvhwm: the spec's, or
        derived from the memory budget); None: the spec's, else memory.MIN_RCVHWM."""
        self.spec = spec
        self.name = spec.name
        self.socket = context.socket(zmq.SUB)
        self.rcvhwm = rcvhwm if rcvhwm is not None else spec.rcvhwm or MIN_RCVHWM
        self.socket.setsockopt(zmq.RCVHWM, self.rcvhwm)
        self.socket.setsockopt(zmq.MAXMSGSIZE, spec.max_frame_bytes * TRANSPORT_LIMIT_FACTOR)
        self.socket.setsockopt(zmq.LINGER, 0)  # a SUB socket sends nothing that could be lost
        self.monitor = self.socket.get_monitor_socket(_EVENTS)
        for topic in spec.topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        for endpoint in spec.endpoints:
            (self.socket.bind if spec.bind else self.socket.connect)(endpoint)
        self._peers: dict[int, str] = {}  # fd -> endpoint
        self._dropped: dict[str, float] = {}  # endpoint -> when libzmq dropped it (connect mode)
        self._always = all(e.startswith("inproc://") for e in spec.endpoints)  # no monitor events
        self.reconnects = 0
        self.last_connected = time.monotonic()  # the grace period starts at start

    @property
    def connected(self) -> int:
        return len(self._peers) if not self._always else 1

    def disconnected_for(self) -> float:
        if self.connected:
            self.last_connected = time.monotonic()
            return 0.0
        return time.monotonic() - self.last_connected

    def on_monitor(self) -> None:
        """Reads every pending monitor event."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            kind, value = event["event"], event["value"]
            endpoint = event["endpoint"].decode("utf-8", "replace") if isinstance(event["endpoint"], bytes) \
                else str(event["endpoint"])
            if kind in (zmq.EVENT_CONNECTED, zmq.EVENT_ACCEPTED):
                self._peers[value] = endpoint
                self._dropped.pop(endpoint, None)
                self.last_connected = time.monotonic()
            elif kind == zmq.EVENT_DISCONNECTED:
                self._peers.pop(value, None)
                self.last_connected = time.monotonic() if self._peers else self.last_connected
                if not self.spec.bind:
                    self._dropped[endpoint] = time.monotonic()
            elif kind in (zmq.EVENT_CONNECT_RETRIED, zmq.EVENT_CONNECT_DELAYED):
                self._dropped.pop(endpoint, None)  # libzmq is retrying by itself

    def repair(self, metrics_inc: Callable[..., None]) -> None:
        """Re-opens endpoints libzmq dropped and does not retry."""
        now = time.monotonic()
        for endpoint, since in list(self._dropped.items()):
            if now - since < REOPEN_AFTER_S:
                continue
            del self._dropped[endpoint]
            with contextlib.suppress(zmq.ZMQError):  # the session may be gone already
                self.socket.disconnect(endpoint)
            try:
                self.socket.connect(endpoint)
            except zmq.ZMQError as exc:
                log.error("cannot re-open a dropped connection", extra={"subscription": self.name,
                                                                        "endpoint": endpoint, "error": str(exc)})
                continue
            self.reconnects += 1
            metrics_inc("bridge_subscription_reconnects_total", 1, subscription=self.name)
            log.warning("connection dropped by libzmq and not retried (a message above the transport limit of "
                        f"{self.spec.max_frame_bytes * TRANSPORT_LIMIT_FACTOR} bytes, or a protocol error): "
                        "re-opened", extra={"subscription": self.name, "endpoint": endpoint})

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)
