"""A poison batch: a server that answers 500 to some lines whatever happens (a real influxd behind
a real HTTP front, a real bridge process). Here rather than in the unit stage: it waits out the
backoff of POISON_AFTER failed attempts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import report
from front import Front
from harness import BridgeProcess, quiet_ledger, wait_for
from servers import Influxd

from station_bridge.demo import publish
from station_bridge.metrics import total, value


@pytest.fixture()
def front(own_influxd: Influxd) -> Iterator[Front]:
    f = Front(own_influxd.url)
    yield f
    f.server.shutdown()
    f.server.server_close()


def test_a_poison_line_that_gets_500_forever_is_isolated_and_stops_blocking_the_rest(tmp_path, own_influxd, front,
                                                                                       endpoint):
    """One instrument's points make the server answer 500 whatever happens (a poison line): the
    journal is delivered in order, so without isolation nothing after it would ever land. After
    POISON_AFTER failed attempts the batch is split: the poison lines (500 alone, again and again,
    while the rest is stored) are dropped `poison` and dead-lettered, everything else lands."""
    front.mode = "poison"
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint,
                           destination={"url": front.url, "batch_size": 20, "max_backoff": "1s"}).start()
    sent = publish(endpoint, "kraken_tick", 90, rate=0, duration=20, instruments=["A", "POISON", "B"])
    samples = quiet_ledger(bridge, timeout=60)
    poison = value(samples, "bridge_dropped_points_total", destination="local", reason="poison")
    written = value(samples, "bridge_written_points_total", destination="local")
    assert poison == sent // 3 and written == sent - poison
    assert total(samples, "bridge_dropped_points_total", destination="local") == poison
    assert own_influxd.count("tick", "ticks") == written
    dead = (tmp_path / "dead" / "local.jsonl").read_text()
    report("one instrument's lines get 500 forever (poison), batches of 20", published=sent, written=int(written),
           dropped_poison=int(poison), dead_lettered=dead.count('"reason": "poison"'), requests=front.posts)
    assert dead.count('"reason": "poison"') == poison and "POISON" in dead
    assert bridge.stop() == 0


def test_a_server_that_fails_everything_with_500_is_not_poison(tmp_path, own_influxd, front, endpoint):
    """Every line gets 500 (the server is broken, not a line): isolation gives up within its budget,
    nothing is dropped, the points wait and land once the server works again."""
    front.mode = "poison"
    bridge = BridgeProcess(tmp_path, None, "tick", endpoint,
                           destination={"url": front.url, "batch_size": 20, "max_backoff": "1s"}).start()
    sent = publish(endpoint, "kraken_tick", 60, rate=0, duration=20, instruments=["POISON"])
    wait_for(lambda: front.posts > 40, 30, "isolation attempts")
    samples = bridge.samples()
    report("every line gets 500 (a broken server, not poison)", published=sent, requests=front.posts,
           dropped=int(total(samples, "bridge_dropped_points_total", destination="local")),
           pending=int(value(samples, "bridge_pending_points", destination="local")))
    assert total(samples, "bridge_dropped_points_total", destination="local") == 0
    assert value(samples, "bridge_pending_points", destination="local") == sent
    front.mode = "forward"
    samples = quiet_ledger(bridge, timeout=30)
    assert value(samples, "bridge_written_points_total", destination="local") == sent
    assert own_influxd.count("tick", "ticks") == sent
    assert bridge.stop() == 0
