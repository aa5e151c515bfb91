"""Fourth attack round: breaks found by running a real bridge against real influxd.

- a slow feed (fewer than `rejection_min_messages` per `rejection_window`) whose every message
  is refused, and a slow destination whose every point InfluxDB refuses, stayed healthy forever;
- `try` and `replay --dead-letters` ignored the subscription's `ignore` rules (try refused the
  heartbeats the bridge ignores, and showed as mapped the data a wrong rule eats), and a topic
  rule that matches every topic a subscription receives eats the feed without a word;
- binning: one message with an old (accepted) time filled every bin of the gap: 2 messages 15
  days apart made 1,296,002 points in one burst (587 MiB RSS; 10 years would be 315 million);
- a NaN or infinite tag value was stored as the tag `nan`/`inf`, a boolean as Python's `True`;
- a naive time inside a daylight-saving gap (02:30 on the spring-forward night) was stored at
  another instant (that of 03:30, colliding with it);
- `replay` of an annotated CSV with an empty cell stopped with a traceback; a replay whose own
  dead-letter file could not be written said "see <file>" for records the file did not hold.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import msgpack
import pytest
import yaml
from harness import BRIDGE, BridgeProcess, tmpfs, wait_for

from station_bridge.health import RecentOutcomes


def cli(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([BRIDGE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


# --- a slow feed whose every message is refused ---------------------------------------------------

def test_recent_outcomes_keep_a_slow_feeds_last_messages_beyond_the_window():
    """One refused message every 10 s: a 60 s window holds 6, below the minimum of 20, so the
    share was never computed. The last 20 messages are kept (at most a day back) instead."""
    recent = RecentOutcomes(60, 20)
    t = 1_000.0
    for _ in range(25):
        recent.add(1, {"missing_field": 1}, now=t)
        t += 10
    received, rejected, _ = recent.totals(now=t)
    assert 20 <= received <= 21 and rejected == {"missing_field": received}
    # a fast feed is judged on its window alone, as before
    fast = RecentOutcomes(60, 20)
    fast.add(500, {"wrong_type": 1}, now=1_000.0)
    fast.add(100, None, now=1_100.0)
    assert fast.totals(now=1_100.0)[0] == 100
    # and nothing older than a day counts
    stale = RecentOutcomes(60, 20)
    stale.add(5, {"no_points": 5}, now=1_000.0)
    assert stale.totals(now=1_000.0 + 86_401)[0] == 0


def test_a_slow_feed_and_a_slow_destination_that_land_nothing_are_degraded(tmp_path, influxd, database, endpoint,
                                                                           zmq_context):
    """One message every 0.12 s with a 1 s window (8 in the window, the minimum 20): every
    message of `kraken` lacks its tag (missing_field), every point of `conflict` is refused by
    InfluxDB (a field type conflict). Before: /healthz 200 with 25 of 25 refused on both."""
    import zmq
    other = endpoint.rsplit(":", 1)[0] + f":{int(endpoint.rsplit(':', 1)[1]) + 1}"
    now = time.time_ns()
    influxd.write(f"conflict,k=a v=1i {now - 1_000_000_000}", database)  # v is an integer in this shard
    conflict = {"name": "conflict", "endpoints": [other], "topics": [""], "framing": "msgpack",
                "mapping": {"measurement": "conflict", "tags": ["k"], "fields": {"v": "float"}}}
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint, subscriptions_extra=[conflict],
                           health={"rejection_window": "1s"}).start()
    pub = zmq_context.socket(zmq.PUB)
    pub.bind(endpoint)
    pub2 = zmq_context.socket(zmq.PUB)
    pub2.bind(other)
    wait_for(lambda: bridge.value("bridge_subscription_connected", subscription="kraken") >= 1
             and bridge.value("bridge_subscription_connected", subscription="conflict") >= 1, 15, "connections")
    time.sleep(0.3)
    for i in range(25):
        pub.send_multipart([b"kraken_tick", msgpack.packb({"bid": 1.0, "ask": 2.0, "volume": 1, "seq": i,
                                                          "timestamp": time.time()})])
        pub2.send_multipart([b"t", msgpack.packb({"k": "a", "v": 1.5 + i})])
        time.sleep(0.12)
    wait_for(lambda: bridge.value("bridge_dropped_points_total", destination="local", reason="rejected") >= 25,
             15, "the conflicting points refused")
    status, doc = bridge.health()
    reasons = {(p["part"], p["name"]): p["reason"] for p in doc["problems"]}
    assert status == 503, doc
    assert "missing_field" in reasons[("subscription", "kraken")], reasons
    assert "type_conflict" in reasons[("destination", "local")] or "conflict" in reasons[("destination", "local")]
    assert ("subscription", "conflict") not in reasons  # its messages map: InfluxDB refuses the points
    bridge.stop()
