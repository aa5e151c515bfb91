"""Answers of a destination that are not InfluxDB's own refusals (a redirect, a 200 with a garbage
or empty body, a 5xx for one poison line): real bridge process, real influxd behind a real HTTP
front that answers as told."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from front import Front
from harness import BridgeProcess, quiet_ledger, wait_for

from station_bridge.demo import publish
from station_bridge.metrics import total, value


@pytest.fixture()
def front(own_influxd) -> Iterator[Front]:
    f = Front(own_influxd.url)
    yield f
    f.server.shutdown()
    f.server.server_close()


@pytest.mark.parametrize("mode", ["redirect", "garbage200", "empty200", "proxy400"])
def test_an_answer_that_is_not_a_refusal_keeps_the_points_and_fails_visibly(tmp_path, own_influxd, front, endpoint,
                                                                             mode):
    """A 307 (not followed: a POST is not re-sent elsewhere), a 200 from something that is not
    InfluxDB's /write, a 400 without InfluxDB's JSON error (a proxy's): the points are kept
    (pending, retried), the destination is failing, and once the real server answers again
    every point lands. They were bisected line by line and dropped as `rejected` (InfluxDB
    never refused them)."""
    front.mode = mode
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint, destination={"url": front.url}).start()
    sent = publish(endpoint, "kraken_tick", 200, rate=0, duration=20)
    wait_for(lambda: bridge.health()[0] == 503, 15, "the destination failing")
    samples = bridge.samples()
    assert total(samples, "bridge_dropped_points_total", destination="local") == 0
    assert value(samples, "bridge_pending_points", destination="local") == sent
    assert value(samples, "bridge_write_errors_total", destination="local",
                 kind={"redirect": "http_307", "proxy400": "http_400"}.get(mode, "http_200")) > 0
    assert front.posts < 20  # retried with backoff, not bisected
    front.mode = "forward"
    samples = quiet_ledger(bridge)
    assert own_influxd.count("tick", "ticks") == sent
    assert value(samples, "bridge_written_points_total", destination="local") == sent
    assert bridge.stop() == 0


def test_a_journal_that_refuses_writes_does_not_drop_what_an_up_destination_can_take(tmp_path, own_influxd, front,
                                                                                      endpoint):
    """The journal directory turns unwritable mid-run (`chattr +i`: EPERM even for root, as a
    read-only remount or lost permissions) while older points wait in it and the destination is
    back (slow: it drains for seconds). New batches went to the journal behind the old ones,
    were refused and dropped `journal_error` although the destination could take them; now they
    are delivered at once (out of order) and nothing is dropped."""
    front.mode = "down"
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint,
                           destination={"url": front.url, "batch_size": 50, "max_backoff": "1s"}).start()
    first = publish(endpoint, "kraken_tick", 600, rate=0, duration=20)
    wait_for(lambda: bridge.value("bridge_journaled_points_total", destination="local") == first, 15,
             "everything journaled")
    directory = tmp_path / "journal" / "local"
    subprocess.run(["chattr", "+i", str(directory)], check=True)
    try:
        front.mode = "slow"  # back, 0.3 s per request: the journal takes seconds to drain
        later = publish(endpoint, "kraken_tick", 400, rate=200, duration=20, start_seq=first)
        samples = quiet_ledger(bridge, timeout=60)
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)
    assert total(samples, "bridge_dropped_points_total", destination="local") == 0
    assert value(samples, "bridge_written_points_total", destination="local") == first + later
    assert own_influxd.count("tick", "ticks") == first + later
    assert bridge.stop() == 0
