"""Distinct long tag texts in every message (round 6): the mapping's caches kept every one.

A feed whose tag (here a venue of 500 KB, refused `key_too_long`, and the derived tag made of it)
differs in every message grew the bridge without bound: the tag-text cache was bounded by count
only (100,000 texts), on the Python and the compiled path (which calls the mapper's rule for
texts beyond its own 256-byte cache). Measured before the fix: 400 messages grew a bridge from
41 to 480 MiB RSS; the default unit's 1 GiB would have been passed after about 900.
"""

from __future__ import annotations

import time

import msgpack
import pytest
from conftest import report
from harness import BridgeProcess, ledger_problems, publisher, wait_for

from station_bridge.demo import wait_for_subscriber

MESSAGES = 600
TEXT = 500_000
MAPPING = {"measurement": "ticks", "tags": ["instrument", "venue"], "optional_tags": ["venue", "sym"],
           "fields": {"bid": "float"}, "time": {"field": "timestamp", "format": "epoch_s"},
           "derived_tags": [{"source": "venue", "regex": r"(?s)^(?P<sym>.*)$"}]}


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) >> 10


@pytest.mark.parametrize("fast_path", ["auto", "off"])
def test_distinct_long_tag_texts_do_not_grow_the_bridge(tmp_path, endpoint, zmq_context, fast_path):
    pub = publisher(zmq_context, endpoint)
    bridge = BridgeProcess(tmp_path, None, "db", endpoint, subscription={"mapping": MAPPING}, fast_path=fast_path,
                           dead_letter={"dir": str(tmp_path / "dead"), "max_bytes": "8MiB",
                                        "max_record_bytes": "1MiB"}).start()
    assert wait_for_subscriber(pub, b"kraken_tick", 15)
    assert bridge.value("bridge_fast_path_compiled", subscription="kraken") == (fast_path == "auto")
    received = lambda: bridge.value("bridge_received_messages_total", subscription="kraken")  # noqa: E731
    start = rss_mib(bridge.process.pid)
    started = time.monotonic()
    for k in range(MESSAGES):  # paced: every message reaches the bridge (none dropped by libzmq)
        venue = f"venue{k:06d}" + "v" * TEXT
        pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": "EURUSD", "venue": venue, "bid": 1.0,
                                                                 "timestamp": time.time()})])
        if k % 25 == 24:
            wait_for(lambda k=k: received() > k, 30, f"message {k} received")
    wait_for(lambda: received() == MESSAGES, 30, "every message received")
    grown = rss_mib(bridge.process.pid) - start
    samples = bridge.samples()
    rejected = samples.get(("bridge_rejected_messages_total", (("reason", "key_too_long"), ("subscription", "kraken"))))
    report(f"distinct 500 KB tag texts ({fast_path})", messages=MESSAGES, refused_key_too_long=rejected,
           rss_start_mib=start, rss_growth_mib=grown, seconds=round(time.monotonic() - started, 1))
    assert rejected == MESSAGES
    assert ledger_problems(samples, [], ["kraken"]) == []
    assert grown < 150, f"RSS grew {grown} MiB over {MESSAGES} messages of distinct {TEXT}-byte tags"
    assert bridge.stop() == 0


def test_distinct_long_series_accepted_do_not_grow_the_bridge(tmp_path, endpoint, zmq_context):
    """The same with 60 KB tags that are accepted (journaled: InfluxDB down, the queue at 8 MiB):
    the tag cache kept every text and the uniqueness window every series key whole. Before: 3,000
    messages grew the bridge by 581 MiB RSS (20,000 series would have been 3.6 GiB); now 15."""
    messages = 3000
    pub = publisher(zmq_context, endpoint)
    mapping = {"measurement": "ticks", "tags": ["instrument", "venue"], "fields": {"bid": "float"},
               "time": {"field": "timestamp", "format": "epoch_s"}}
    bridge = BridgeProcess(tmp_path, None, "db", endpoint, subscription={"mapping": mapping},
                           destination={"queue_max_bytes": "8MiB"}).start()
    assert wait_for_subscriber(pub, b"kraken_tick", 15)
    received = lambda: bridge.value("bridge_received_messages_total", subscription="kraken")  # noqa: E731
    start = rss_mib(bridge.process.pid)
    started = time.monotonic()
    for k in range(messages):
        venue = f"venue{k:06d}" + "v" * 60_000
        pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": "EURUSD", "venue": venue, "bid": 1.0,
                                                                 "timestamp": time.time()})])
        if k % 100 == 99:
            wait_for(lambda k=k: received() > k, 30, f"message {k} received")
    wait_for(lambda: received() == messages, 30, "every message received")
    grown = rss_mib(bridge.process.pid) - start
    samples = bridge.samples()
    mapped = samples.get(("bridge_mapped_messages_total", (("subscription", "kraken"),)))
    report("distinct 60 KB series, accepted (InfluxDB down)", messages=messages, mapped=mapped,
           rss_start_mib=start, rss_growth_mib=grown, seconds=round(time.monotonic() - started, 1))
    assert mapped == messages
    assert ledger_problems(samples, ["local"], ["kraken"]) == []
    assert grown < 80, f"RSS grew {grown} MiB over {messages} series of 60 KB"
    assert bridge.stop() == 0
