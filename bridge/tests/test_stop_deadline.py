"""A stop's deadline and per-batch errors (the sixth attack round).

- A stop during a large binned drain overran `shutdown_timeout`: 20 series silent 40 days under
  binning.max_gap 2000h, InfluxDB down, the journal full: one sample's millions of bins were made
  and handed over to the end (SIGTERM with shutdown_timeout 10 took 13.8 s; here, minutes). Now
  the stop sets one deadline (half of shutdown_timeout from the signal) that every receive-side
  stage consults (`Pipeline.expired`): the poll round, the binned hand-over within a sample; the
  samples left without their bins are counted (bridge_binning_skipped_total{reason="stopping"}).
- The journal refusing every batch logged one error line per batch (about 50,000 lines in one
  run): now through the bridge's rate-limited log, a summary of what it suppressed periodically.
"""

from __future__ import annotations

import subprocess
import time

import msgpack
from harness import BridgeProcess, ledger_problems, publisher, quiet_ledger, subscribed, wait_for

MAPPING = {"measurement": "ticks", "tags": ["instrument"], "fields": {"bid": "float"},
           "time": {"field": "t", "format": "epoch_ns"}}
SECOND = 10**9
DAY = 86_400 * SECOND


def test_a_stop_during_a_huge_binned_drain_ends_within_shutdown_timeout(tmp_path, endpoint, zmq_context):
    timeout = 4
    bridge = BridgeProcess(tmp_path, None, "db", endpoint, shutdown_timeout=timeout,
                           subscription={"mapping": MAPPING,
                                         "binning": {"interval": "1s", "fields": ["bid"], "max_gap": "2000h"}},
                           destination={"queue_max_points": 5000},
                           journal={"max_bytes": "1MiB"}).start()
    pub = publisher(zmq_context, endpoint)
    subscribed(pub)
    t0 = time.time_ns() // SECOND * SECOND - 41 * DAY
    for t in (t0, t0 + 40 * DAY):  # 20 series, then each 3,456,000 bins later: 69 million bins
        for i in range(20):
            pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": f"S{i:02d}", "t": t, "bid": 1.0})])
    wait_for(lambda: bridge.value("bridge_mapped_points_total", subscription="kraken") >= 100_000, 20,
             "the binned drain under way")
    assert bridge.process is not None
    began = time.monotonic()
    bridge.process.terminate()
    try:
        bridge.process.wait(timeout + 10)
    except subprocess.TimeoutExpired:
        bridge.kill()
        raise AssertionError(f"SIGTERM with shutdown_timeout {timeout} s: still running after {timeout + 10} s") \
            from None
    took = time.monotonic() - began
    bridge.log.close()
    BridgeProcess.running.discard(bridge)
    assert took <= timeout + 2, f"the stop took {took:.1f} s, shutdown_timeout {timeout} s"
    # Nothing lost silently: the restarted bridge's ledger closes, the cut samples are counted.
    again = BridgeProcess(tmp_path, None, "db", endpoint, shutdown_timeout=timeout,
                          subscription=bridge.config["subscriptions"][0], destination=bridge.config["destinations"][0],
                          journal=bridge.config["journal"]).start()
    samples = quiet_ledger(again, delivered=False)
    assert not ledger_problems(samples, ["local"], ["kraken"])
    assert again.value("bridge_received_messages_total", subscription="kraken") == 40
    assert again.value("bridge_mapped_messages_total", subscription="kraken") == 40
    assert again.value("bridge_binning_skipped_total", subscription="kraken", reason="stopping") >= 1
    assert again.value("bridge_dropped_points_total", destination="local", reason="spool_full") > 0
    again.stop()


def test_a_full_journal_logs_its_dropped_batches_rate_limited(tmp_path, endpoint, zmq_context):
    bridge = BridgeProcess(tmp_path, None, "db", endpoint, log={"rate_limit_per_s": 1}, shutdown_timeout=2,
                           destination={"queue_max_points": 500}, journal={"max_bytes": "1MiB"}).start()
    pub = publisher(zmq_context, endpoint)
    subscribed(pub)
    began = time.monotonic()
    t0 = time.time_ns()
    sent = 0
    for _ in range(20):
        for i in range(1000):
            pub.send_multipart([b"kraken_tick", msgpack.packb(
                {"instrument": "XBT/USD", "timestamp": (t0 + sent) / 1e9, "bid": 1.0, "ask": 2.0, "volume": i,
                 "seq": sent})])
            sent += 1
        time.sleep(0.02)
    wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == sent, 20, "all received")
    dropped = wait_for(lambda: bridge.value("bridge_dropped_points_total", destination="local", reason="spool_full"),
                       20, "points dropped")
    stopping = time.monotonic()
    assert bridge.stop() == 0
    print(f"stop {time.monotonic() - stopping:.1f} s")
    ran = time.monotonic() - began
    records = bridge.log_records()
    refused = [r for r in records if r["msg"] == "journal write refused: points dropped"]
    summaries = [r for r in records if r["msg"] == "log lines suppressed by the rate limit"
                 and r["reason"] == "journal:local:spool_full"]
    # one line per second at most (per reason and destination), the rest summarized
    assert len(refused) <= ran + 2, f"{len(refused)} lines in {ran:.1f} s (dropped {dropped:.0f} points)"
    assert refused and refused[0]["dropped"] > 0  # the first occurrence is logged
    assert summaries, "no summary of the suppressed lines"
    assert sum(r["suppressed"] for r in summaries) > 0
