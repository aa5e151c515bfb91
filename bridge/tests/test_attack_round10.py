"""Round 10 of attacks on the bridge's promise (several destinations, schedules, send budgets):
a partial write that does not say how many lines it dropped, and poison in the backlog of a
live-first link (the schedule's load-time bounds are in test_links.py)."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq
from front import Front
from harness import BridgeProcess, publisher, quiet_ledger, subscribed, wait_for
from servers import Influxd

from station_bridge.config import parse
from station_bridge.journal import Chunk
from station_bridge.metrics import total, value
from station_bridge.sinks import Delivery, InfluxWriter


def _delivery(url: str, db: str) -> Delivery:
    spec = parse({"subscriptions": [], "destinations": [{"name": "d", "url": url, "database": db}]})
    return Delivery(InfluxWriter(spec.destinations[0]), 5000)


@pytest.mark.parametrize("mode", ["silent_partial", "zero_partial"])
def test_a_partial_write_without_its_count_is_resolved_by_resending(influxd: Influxd, database: str, mode: str):
    """Before: a 400 `partial write: ...` with no `dropped=N` was counted as written whole (the
    attack lost 1,520 of 6,000 points that way, counted written; the second attack, `dropped=0`
    where 31 were dropped). Now the refused lines are found
    by re-sending (what InfluxDB holds is rewritten, the same points), each point counted once."""
    t = (time.time_ns() // 1_000_000_000 - 600) * 1_000_000_000
    lines = [f"ticks,instrument=A bid={i}.5 {t + i}" for i in range(40)]
    bad = {7: f"ticks,instrument=POISON bid=1.0 {t + 7}", 31: f"ticks,instrument=POISON bid=2.0 {t + 31}"}
    for i, line in bad.items():
        lines[i] = line
    front = Front(influxd.url)
    front.mode = mode
    try:
        out = _delivery(front.url, database).deliver(Chunk.of(lines))
    finally:
        front.server.shutdown()
        front.server.server_close()
    assert sorted(r[0].decode() for r in out.rejected) == sorted(bad.values())
    assert out.retry is None and out.unidentified == 0
    assert out.written == 38 == influxd.count(database, "ticks")


def test_poison_in_the_backlog_of_a_live_first_link_is_isolated_while_live_points_flow(
        tmp_path, influxd: Influxd, database: str, endpoint: str, zmq_context: zmq.Context):
    """A send budget makes the link live first: fresh batches go before the journal. A batch
    holding a line the server answers 500 for went to the journal; live batches succeeded between
    its attempts, so the destination's run of failures never reached the isolation's threshold:
    the attack saw 112 attempts in 120 s, the backlog stuck behind it, /healthz ok. Now the
    backlog's head keeps its own count: the line is isolated (dropped `poison`, counted) while the
    feed goes on, and every other point lands."""
    front = Front(influxd.url)
    front.mode = "poison"
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           destination={"url": front.url, "max_points_per_second": 20_000}).start()
    pub = publisher(zmq_context, endpoint)
    sent = 0

    def send(instrument: str) -> None:
        nonlocal sent
        pub.send_multipart([b"kraken_tick", msgpack.packb({
            "timestamp": time.time(), "instrument": instrument, "bid": 1.0 + sent, "ask": 2.0, "volume": 10,
            "seq": sent})])
        sent += 1
        time.sleep(0.001)

    try:
        subscribed(pub, "kraken_tick")
        send("POISON")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for _ in range(20):
                send("A")  # live points, stored between the backlog's attempts
            if value(bridge.samples(), "bridge_dropped_points_total", destination="local", reason="poison"):
                break
            time.sleep(0.1)
        samples = bridge.samples()
        assert value(samples, "bridge_dropped_points_total", destination="local", reason="poison") == 1, (
            f"not isolated while the feed ran ({sent} sent): " + bridge.tail())
        wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == sent, 20,
                 "every message received")
        samples = quiet_ledger(bridge)
        assert value(samples, "bridge_written_points_total", destination="local") == sent - 1
        assert total(samples, "bridge_dropped_points_total", destination="local") == 1
        assert influxd.count(database, "ticks") == sent - 1
    finally:
        pub.close()
        bridge.stop()
        front.server.shutdown()
        front.server.server_close()


def test_an_isolation_cut_short_in_the_backlog_loses_no_line(tmp_path, influxd: Influxd):
    """Attack round 10b: a window closed while poison in the backlog was being isolated; what the
    isolation left (the suspect, parts not yet sent) is not the chunk's tail, but the journal took
    it for one (`progress` by count): the suspect line was counted written and never landed. Cut
    after every number of requests in turn: every other line lands once, the poison is dropped
    once, and the ledger closes."""
    from station_bridge.journal import DeadLetters, Intake, Journal
    from station_bridge.metrics import Metrics
    from station_bridge.sinks import InfluxSink

    front = Front(influxd.url)
    front.mode = "poison"
    base = (time.time_ns() // 10**9 - 60) * 10**9
    try:
        for cut in range(1, 16):
            db = f"cut{cut}"
            influxd.query(f'CREATE DATABASE "{db}"')
            lines = [f"ticks,instrument=A bid={i}.5 {base + i}" for i in range(40)]
            lines[3] = f"ticks,instrument=POISON bid=1.0 {base + 3}"
            spec = parse({"subscriptions": [], "destinations": [{"name": "d", "url": front.url, "database": db}]})
            metrics = Metrics()
            sink = InfluxSink(spec.destinations[0], Journal(tmp_path / db, 10**8),
                              DeadLetters(tmp_path / f"{db}.jsonl"), metrics, Intake(tmp_path / db))
            assert sink.journal.append(Chunk.of(lines)) is None
            start = front.posts
            sink.writer.cancel = lambda start=start, cut=cut: front.posts - start >= cut
            for _ in range(3):  # the backlog's head failing: isolation at the next attempt
                sink._head, sink._head_5xx = (lines[0] + "\n").encode(), 5
                sink.backoff.reset()
                sink._drain_journal()
            sink.writer.cancel = None
            for _ in range(20):
                if not len(sink.journal):
                    break
                sink._head_5xx = max(sink._head_5xx, 5)  # the head (once failed) isolates at once
                sink.backoff.reset()
                sink._drain_journal()
            written = metrics.get("bridge_written_points_total", destination="d")
            poison = metrics.get("bridge_dropped_points_total", destination="d", reason="poison")
            assert (len(sink.journal), influxd.count(db, "ticks"), poison) == (0, 39, 1), cut
            assert written == 39, (cut, written)
    finally:
        front.server.shutdown()
        front.server.server_close()


def test_the_backlog_heads_run_of_failures_survives_pauses_and_ends_with_progress(tmp_path, influxd: Influxd):
    """Attack round 10b: a 2 s window every 10 s gave the backlog's head two 500s per window and
    the isolation never started. A pause (the window closed, live points due) neither fails nor
    delivers the head: its run of failures goes on into the next window; a delivery ends it."""
    from station_bridge.journal import DeadLetters, Intake, Journal
    from station_bridge.metrics import Metrics
    from station_bridge.sinks import POISON_AFTER, InfluxSink, Outcome

    spec = parse({"subscriptions": [], "destinations": [{"name": "d", "url": influxd.url, "database": "x"}]})
    sink = InfluxSink(spec.destinations[0], Journal(tmp_path / "j", 10**8), DeadLetters(tmp_path / "d.jsonl"),
                      Metrics(), Intake(tmp_path / "j"))
    head, rest = b"m a=1 1\n", Chunk.of(["m a=1 1", "m a=2 2"])
    for window in range(POISON_AFTER):
        sink._head_outcome(head, Outcome(retry=rest, kind="http_500"))
        sink._head_outcome(head, Outcome(retry=rest, kind="paused"))  # the window closed
        assert sink._head_5xx == window + 1
    assert sink.failing_seconds() > 0
    sink._head_outcome(head, Outcome(written=2))
    assert sink._head_5xx == 0 and sink._head is None and sink.failing_seconds() == 0
