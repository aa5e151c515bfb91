"""Sources: one ZMQ SUB socket per subscription, connected (or bound) to its endpoints."""

from __future__ import annotations

import zmq

from .config import SubscriptionSpec

# Hard transport limit well above max_frame_bytes: frames between the two are refused
# and counted by the decoder; larger ones are cut off by ZMQ before they use memory.
_TRANSPORT_LIMIT_FACTOR = 16


def open_subscription(context: zmq.Context, spec: SubscriptionSpec) -> zmq.Socket:
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, spec.rcvhwm)
    socket.setsockopt(zmq.MAXMSGSIZE, spec.max_frame_bytes * _TRANSPORT_LIMIT_FACTOR)
    socket.setsockopt(zmq.LINGER, 0)
    for topic in spec.topics:
        socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
    for endpoint in spec.endpoints:
        if spec.bind:
            socket.bind(endpoint)
        else:
            socket.connect(endpoint)
    return socket
