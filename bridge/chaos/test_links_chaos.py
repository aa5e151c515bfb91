"""A periodic link ({every: 8s, for: 3s}) with gzip and both budgets, a backlog and a live stream
through the measuring proxy of tests/test_links.py: the link carries nothing between windows,
never more than the byte budget (compressed) in a second beyond one request, live ticks land
within 2 s of a window's start, and every point lands once."""

from __future__ import annotations

import math
import threading
import time

import test_links as links
from conftest import report
from harness import BridgeProcess, ledger_problems, publisher, quiet_ledger, subscribed, wait_for

EVERY, UP = 8, 3
BYTES_PER_S, POINTS_PER_S = 6000, 500


def up(t: float) -> bool:
    return t % EVERY < UP


def test_a_periodic_gzip_link_paces_a_backlog_behind_the_live_stream(tmp_path, influxd, database, endpoint,
                                                                      zmq_context):
    proxy = links.LinkProxy(influxd.port)
    pub = publisher(zmq_context, endpoint)
    bridge = BridgeProcess(tmp_path, None, database, endpoint, destination={
        "name": "central", "url": proxy.url, "batch_size": 200, "gzip": True,
        "schedule": {"every": f"{EVERY}s", "for": f"{UP}s"},
        "max_bytes_per_second": BYTES_PER_S, "max_points_per_second": POINTS_PER_S},
        health={"destination_grace": "30s"})
    bridge.start()
    backlog = 2000
    published: dict[int, float] = {}
    stop = threading.Event()
    try:
        subscribed(pub)
        # The backlog: a closed phase, so that it is journaled before a window opens.
        wait_for(lambda: not up(time.time()) and (time.time() % EVERY) < EVERY - 2, EVERY + 1, "a closed phase")
        ts = time.time() - 600
        for i in range(backlog):
            pub.send_multipart(links.tick("BACKLOG", i, ts + i / 1000))
        status, doc = bridge.health()
        assert status == 200 and doc["destinations"]["central"]["pending_by_schedule"], doc

        def live() -> None:
            seq = 0
            while not stop.is_set():
                published[seq] = time.time()
                pub.send_multipart(links.tick("LIVE", seq, time.time()))
                seq += 1
                stop.wait(0.1)

        feeder = threading.Thread(target=live, daemon=True)
        feeder.start()
        seen: dict[int, float] = {}

        def drained() -> bool:
            for row in influxd.query("""SELECT "seq" FROM "ticks" WHERE "instrument" = 'LIVE'""", db=database):
                seen.setdefault(row["seq"], time.time())
            rows = influxd.query("""SELECT count("seq") FROM "ticks" WHERE "instrument" = 'BACKLOG'""", db=database)
            return bool(rows) and rows[0]["count"] == backlog

        try:
            # About 42 kB compressed at 6 kB/s in 3 s windows: 3 windows.
            wait_for(drained, 5 * EVERY, "the backlog to drain", interval=0.1)
        except AssertionError as exc:  # what the bridge and the link did meanwhile, to tell a stall from a slow run
            rows = influxd.query("""SELECT count("seq") FROM "ticks" WHERE "instrument" = 'BACKLOG'""", db=database)
            state = {"received": bridge.value("bridge_received_messages_total", subscription="kraken")}
            state |= {name: bridge.value(name, destination="central") for name in (
                "bridge_written_points_total", "bridge_pending_points", "bridge_journal_points",
                "bridge_destination_failing_seconds")}
            raise AssertionError(f"{exc}: backlog landed {rows[0]['count'] if rows else 0} of {backlog}, {state}, "
                                 f"link bytes per second {dict(proxy.per_second)}, health {bridge.health()}") from exc
        ended = time.time()  # the last poll: ticks published in its last 2 s are not judged
        stop.set()
        feeder.join()
        windows = sorted({math.floor(at / EVERY) * EVERY for at in published.values() if up(at)})
        early = {seq: at for seq, at in published.items() if up(at) and at % EVERY <= 1 and at < ended - 2.1}
        late = {seq: round(seen.get(seq, math.inf) - at, 2) for seq, at in early.items()
                if seen.get(seq, math.inf) - at > 2.0}
        assert len(early) >= 10 and not late, (len(early), late)
        busiest = max(proxy.per_second.values())
        assert busiest <= BYTES_PER_S + 2000, dict(proxy.per_second)  # the budget + one request
        outside = {s: n for s, n in proxy.per_second.items() if s % EVERY > UP}  # (a request under way may end)
        assert not outside, outside
    finally:
        stop.set()
        pub.close(linger=0)
    samples = quiet_ledger(bridge, destinations=("central",), timeout=3 * EVERY)
    assert not ledger_problems(samples, ["central"], ["kraken"])
    total = backlog + len(published)
    rows = influxd.query('SELECT count("seq") FROM "ticks"', db=database)
    assert rows[0]["count"] == total == bridge.value("bridge_written_points_total", destination="central")
    assert bridge.stop() == 0
    proxy.close()
    report("scheduled link (periodic, gzip, budgets)", points=total, windows=len(windows),
           busiest_second_bytes=max(proxy.per_second.values()), live_checked=len(early))
