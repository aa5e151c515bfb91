"""An `each` feed under a real cgroup memory limit: one small message makes many points.

A receive burst is bounded in bytes on its way in (8 MiB), the points it makes were not: on the
Python path 300 messages of 10 KB (10,000 rows each, a 250-byte tag read from `$`) were 3 million
lines held at once, 2.7 GB RSS; under a 256 MiB limit the bridge was OOM-killed (rc -9). Both
paths now hand a burst's points over every 8 MiB of lines (round 8, tests/test_attack_round8.py).
"""

from __future__ import annotations

import os

import msgpack
import pytest
from conftest import report
from harness import BridgeProcess, publisher, quiet_ledger, subscribed, wait_for
from test_memory_budget import memory_cgroup

from station_bridge.metrics import total, value

LIMIT = 256 << 20
MESSAGES = 100  # of 10 KB: 1 million points, about 330 MB of lines


@pytest.mark.parametrize("fast_path", ["off", "auto"])
def test_an_each_feed_under_a_memory_limit_is_not_oom_killed(tmp_path, endpoint, zmq_context, fast_path):
    mapping = {"measurement": "m", "each": "v[*]", "tags": {"s": "$.s"},
               "fields": {"x": {"path": ".", "type": "integer"}}, "time": {"path": "$.t", "format": "epoch_ms"}}
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint, fast_path=fast_path,  # InfluxDB down: all journaled
                           subscription={"topics": ["a"], "mapping": mapping}, journal={"max_bytes": "2GiB"},
                           destination={"batch_size": 5000})
    with memory_cgroup(f"bridge-each-{os.getpid()}-{fast_path}", LIMIT) as (procs, kills):
        bridge.start(prefix=("sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"))
        pub = publisher(zmq_context, endpoint)
        subscribed(pub)
        payload = msgpack.packb({"s": "x" * 250, "t": 1_764_000_000_000, "v": [0] * 10_000})
        for _ in range(MESSAGES):
            pub.send_multipart([b"a", payload])

        def received() -> bool:
            assert bridge.alive, f"the bridge died (rc {bridge.process.returncode}, OOM kills {kills()})"
            try:
                return total(bridge.samples(), "bridge_received_messages_total") >= MESSAGES
            except OSError:  # busy mapping: asked again
                return False

        wait_for(received, 120, f"{MESSAGES} messages received")
        samples = quiet_ledger(bridge, delivered=False, subscriptions=("kraken",), timeout=120)
        report(f"each feed, 10 KB messages of 10,000 points under a 256 MiB limit (fast_path {fast_path})",
               messages=MESSAGES, points=int(value(samples, "bridge_mapped_points_total", subscription="kraken")),
               pending=int(value(samples, "bridge_pending_points", destination="local")), oom_kills=kills())
        assert kills() == 0
        assert value(samples, "bridge_mapped_points_total", subscription="kraken") == MESSAGES * 10_000
        assert bridge.stop(timeout=120) == 0
        pub.close(linger=0)
