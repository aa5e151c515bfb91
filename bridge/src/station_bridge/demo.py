"""A synthetic publisher of realistic tick streams, bounded in count and time.

Publishes multipart [topic, msgpack map] ticks like the seeds' feeds:
{"timestamp": 1700000000.123456, "instrument": "EURUSD", "bid": 1.08234, "ask": 1.08245,
 "volume": 1000000, "seq": 42}. A random walk per instrument; `seq` numbers every message
so a test can count exactly what arrived.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import msgpack
import zmq

INSTRUMENTS = {"EURUSD": 1.0823, "GBPUSD": 1.2641, "USDJPY": 149.71, "AUDUSD": 0.6543, "USDCHF": 0.8812,
               "EURGBP": 0.8561, "USDCAD": 1.3622, "NZDUSD": 0.6012}


def ticks(count: int, instruments: list[str], seed: int = 7, start_seq: int = 0):
    rng = random.Random(seed)
    prices = {i: INSTRUMENTS.get(i, 1.0) for i in instruments}
    for seq in range(start_seq, start_seq + count):
        instrument = instruments[seq % len(instruments)]
        mid = prices[instrument] = round(prices[instrument] * (1 + rng.gauss(0, 2e-5)), 6)
        spread = round(mid * 1e-4, 6)
        yield {"timestamp": time.time(), "instrument": instrument, "bid": round(mid - spread / 2, 6),
               "ask": round(mid + spread / 2, 6), "volume": rng.randrange(1, 100) * 10_000, "seq": seq}


def wait_for_subscriber(socket: zmq.Socket, topic: bytes, timeout: float) -> bool:
    """On an XPUB socket: True once a subscriber's subscription covers `topic`.

    A PUB socket drops what no subscriber has asked for yet; XPUB hands the subscriptions to
    the application, so a publisher can start the moment its first subscriber is listening
    instead of sleeping and hoping.
    """
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not socket.poll(int(left * 1000) + 1, zmq.POLLIN):
            break
        message = socket.recv()
        if message[:1] == b"\x01" and topic.startswith(message[1:]):
            return True
    return False


def publish(endpoint: str, topic: str, count: int, rate: float, duration: float, bind: bool = True,
            instruments: list[str] | None = None, warmup: float = 5.0, start_seq: int = 0,
            on_start: Callable[[], None] | None = None) -> int:
    """Publishes up to `count` ticks at `rate`/s (0 = as fast as possible) for at most `duration` s.

    Waits up to `warmup` seconds for a subscriber of the topic (none: publishes anyway).
    """
    # An own context: terminating it below waits until everything queued has been sent.
    context = zmq.Context()
    socket = context.socket(zmq.XPUB)
    socket.setsockopt(zmq.SNDHWM, 0)  # never drop on the publisher side
    (socket.bind if bind else socket.connect)(endpoint)
    topic_bytes = topic.encode()
    wait_for_subscriber(socket, topic_bytes, warmup)
    packb = msgpack.packb
    started = time.monotonic()
    sent = 0
    stream = (packb(t) for t in ticks(count, instruments or list(INSTRUMENTS), start_seq=start_seq))
    if on_start is not None:
        on_start()
    for payload in stream:
        if rate:
            due = started + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if time.monotonic() - started > duration:
            break
        socket.send_multipart([topic_bytes, payload])
        sent += 1
    # Returning (or a process exiting) while libzmq still holds queued messages would drop them:
    # close with a linger and terminate the context, which waits until they are sent.
    socket.close(linger=30_000)
    context.term()
    return sent
