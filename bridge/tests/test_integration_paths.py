"""Mapping paths end to end: Kraken Depth JSON and OANDA v20 per-instrument feeds published on real
ZMQ PUB sockets, a real bridge process, a real influxd (and Redis): exactly the documented points
land, hostile messages are refused whole under their reason, the ledger closes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import zmq
from harness import BridgeProcess, ledger_problems, publisher, quiet_ledger, wait_for

from station_bridge.metrics import total, value

DEPTH_MAPPING = {"measurement": "kraken_depth", "each": "result.<pair>.<side:asks|bids>[<level>]",
                 "fields": {"price": {"path": "[0]", "type": "float"}, "volume": {"path": "[1]", "type": "float"}},
                 "time": {"path": "[2]", "format": "epoch_s"}}
V20_MAPPING = {"measurement": "v20_prices",
               "topic": {"tag": "instrument", "regex": "^(?P<base>[A-Z]{3})_(?P<quote>[A-Z]{3})$"},
               "fields": {"bid": "float", "ask": "float"}, "time": {"field": "time", "format": "rfc3339"}}
T = 1764439880


def depth(result: object) -> bytes:
    return b"kr_depth " + json.dumps({"error": [], "result": result}).encode()


def v20(topic: str, stamp: str, bid: str, ask: str) -> bytes:
    return f"{topic} {stamp}\x01{bid}\x01{ask}".encode()


class Feed:
    """A publisher bound to `endpoint`, publishing single-frame text messages."""

    def __init__(self, context: zmq.Context, endpoint: str) -> None:
        self.socket = publisher(context, endpoint)
        self.socket.setsockopt(zmq.LINGER, 2000)

    def send(self, *frames: bytes) -> None:
        for frame in frames:
            self.socket.send(frame)

    def joined(self, probe: bytes, landed: Callable[[], bool], what: str) -> None:
        """ZMQ's slow joiner: publish `probe` until it has landed, so that what follows is received."""
        def attempt() -> bool:
            self.send(probe)
            return landed()
        wait_for(attempt, 20, what, interval=0.2)


def settled(bridge: BridgeProcess, subscriptions: tuple[str, ...] = ("kraken",)) -> dict:
    """The ledger closed and no message arrived for half a second (the last probes are in)."""
    def received() -> list[float]:
        samples = bridge.samples()
        return [value(samples, "bridge_received_messages_total", subscription=s) for s in subscriptions]
    last: list[list[float]] = [received()]

    def still() -> bool:
        time.sleep(0.5)
        now = received()
        same, last[0] = now == last[0], now
        return same
    wait_for(still, 20, "the probes to settle", interval=0)
    return quiet_ledger(bridge, subscriptions=subscriptions)


def test_kraken_depth_and_v20_feeds_land_exactly_and_hostile_messages_are_refused_whole(
        tmp_path, influxd, database, endpoint, redis_server, zmq_context):
    import redis
    from servers import free_port
    v20_endpoint = f"tcp://127.0.0.1:{free_port()}"
    context = zmq_context
    depth_feed, v20_feed = Feed(context, endpoint), Feed(context, v20_endpoint)
    bridge = BridgeProcess(
        tmp_path, influxd, database, endpoint,
        subscription={"name": "kraken", "topics": ["kr_depth"], "framing": "text_json", "mapping": DEPTH_MAPPING},
        subscriptions_extra=[{"name": "v20", "endpoints": [v20_endpoint], "topics": [""],
                              "framing": "text_delimited", "field_order": ["time", "bid", "ask"],
                              "mapping": V20_MAPPING}],
        cache={"url": f"redis://127.0.0.1:{redis_server.port}/0", "ttl": "10m", "password_env": "TEST_REDIS_PW"})
    bridge.env["TEST_REDIS_PW"] = redis_server.password
    bridge.start()
    try:
        def probes(measurement: str, tag: str, probe: str) -> Callable[[], bool]:
            return lambda: bool(influxd.query(f"SELECT * FROM {measurement} WHERE \"{tag}\" = '{probe}'", db=database))

        depth_feed.joined(depth({"PROBE": {"asks": [["1", "1", T - 100]]}}),
                          probes("kraken_depth", "pair", "PROBE"), "the depth subscription joined")
        v20_feed.joined(v20("PRB_USD", "2025-11-29T00:00:00Z", "1", "1"),
                        probes("v20_prices", "base", "PRB"), "the v20 subscription joined")
        before = settled(bridge, ("kraken", "v20"))

        hostile_levels = [["563.45000", "0.750", T]] * 20_000
        depth_feed.send(
            depth({"XXBTZCAD": {"asks": [["563.45000", "0.750", T], ["563.50000", "1.2", T + 1]],
                                "bids": [["540.00000", "0.002", T - 10]]}}),
            depth({"XXBTZCAD": {"asks": hostile_levels}}),              # too_many_points (max_points 10,000)
            depth({"XETHZEUR": {"asks": {}, "bids": []}}),             # wrong_type: asks must be a list
            b'kr_depth {"error":["EQuery:Unknown asset pair"]}',       # missing_field: no result
            depth({"XETHZEUR": {"asks": [], "bids": []}}),             # no_points
            depth({"XETHZEUR": {"bids": [["1.5", "3", T + 5], ["1.4", "2", T + 6]]}}),
            depth({"XXBTZCAD": {"asks": [["563.45000", "0.750", T], ["x", "1", T + 2]]}}),  # wrong_type, atomic
        )
        v20_feed.send(
            v20("EUR_USD", "2025-11-29T18:11:20.123456789Z", "1.08234", "1.08245"),
            v20("EURUSD", "2025-11-29T18:11:21Z", "1.1", "1.2"),         # unknown_topic: the regex refuses it
            v20("USD_JPY", "2025-11-29T18:11:22.5+01:00", "121.1", "121.2"),
        )

        def landed() -> bool:
            return (len(influxd.query("SELECT * FROM kraken_depth WHERE pair != 'PROBE'", db=database)) == 5
                    and len(influxd.query("SELECT * FROM v20_prices WHERE base != 'PRB'", db=database)) == 2)
        wait_for(landed, 30, "the valid points in InfluxDB")
        after = quiet_ledger(bridge, subscriptions=("kraken", "v20"))

        rows = influxd.query("SELECT * FROM kraken_depth WHERE pair != 'PROBE'", db=database)
        got = sorted((r["time"], r["pair"], r["side"], r["level"], r["price"], r["volume"], r["station"]) for r in rows)
        assert got == sorted([
            (T * 10**9, "XXBTZCAD", "asks", "0", 563.45, 0.75, "test1"),
            ((T + 1) * 10**9, "XXBTZCAD", "asks", "1", 563.5, 1.2, "test1"),
            ((T - 10) * 10**9, "XXBTZCAD", "bids", "0", 540.0, 0.002, "test1"),
            ((T + 5) * 10**9, "XETHZEUR", "bids", "0", 1.5, 3.0, "test1"),
            ((T + 6) * 10**9, "XETHZEUR", "bids", "1", 1.4, 2.0, "test1")])
        rows = influxd.query("SELECT * FROM v20_prices WHERE base != 'PRB'", db=database)
        got = sorted((r["time"], r["instrument"], r["base"], r["quote"], r["bid"], r["ask"]) for r in rows)
        assert got == [(1764436282500000000, "USD_JPY", "USD", "JPY", 121.1, 121.2),
                       (1764439880123456789, "EUR_USD", "EUR", "USD", 1.08234, 1.08245)]

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        kraken, v20_sub = {"subscription": "kraken"}, {"subscription": "v20"}
        assert delta("bridge_received_messages_total", **kraken) == 7  # messages, not points
        assert delta("bridge_mapped_messages_total", **kraken) == 2
        assert delta("bridge_mapped_points_total", **kraken) == 5
        assert {r: delta("bridge_rejected_messages_total", reason=r, **kraken)
                for r in ("too_many_points", "wrong_type", "missing_field", "no_points")} == {
            "too_many_points": 1, "wrong_type": 2, "missing_field": 1, "no_points": 1}
        assert total(after, "bridge_rejected_messages_total", **kraken) == 5
        assert delta("bridge_received_messages_total", **v20_sub) == 3
        assert delta("bridge_mapped_messages_total", **v20_sub) == 2 == delta("bridge_mapped_points_total", **v20_sub)
        assert total(after, "bridge_rejected_messages_total", **v20_sub) == 1
        assert value(after, "bridge_rejected_messages_total", reason="unknown_topic", **v20_sub) == 1
        assert ledger_problems(after, ["local"], ["kraken", "v20"]) == []
        # every mapped point landed, probes included: points, not messages
        wait_for(lambda: value(bridge.samples(), "bridge_written_points_total", destination="local")
                 == value(bridge.samples(), "bridge_accepted_points_total", destination="local"), 20, "all written")
        assert len(influxd.query("SELECT * FROM kraken_depth", db=database)) == value(
            after, "bridge_mapped_points_total", **kraken)
        assert len(influxd.query("SELECT * FROM v20_prices", db=database)) == value(
            after, "bridge_mapped_points_total", **v20_sub)
        # the refused messages are dead-lettered under their reasons, one line each
        dead = [json.loads(x) for x in (tmp_path / "dead" / "input.jsonl").read_text().splitlines()]
        assert sorted(d["reason"] for d in dead) == ["missing_field", "no_points", "too_many_points", "unknown_topic",
                                                      "wrong_type", "wrong_type"]
        # the cache holds the newest value of each point's series
        client = redis.Redis(port=redis_server.port, password=redis_server.password, decode_responses=True)
        key = "latest:kraken_depth,level=1,pair=XETHZEUR,side=bids,station=test1"
        wait_for(lambda: client.hgetall(key), 10, "the depth level cached")
        assert client.hgetall(key) == {"price": "1.4", "volume": "2", "time": str((T + 6) * 10**9)}
        assert bridge.alive and bridge.health()[0] == 200
    finally:
        code = bridge.stop()
        depth_feed.socket.close()
        v20_feed.socket.close()
        context.term()
    assert code == 0


def test_repeated_depth_snapshots_keep_every_level(tmp_path, influxd, database, endpoint, zmq_context):
    """The same snapshot published again (same exchange times): every level of every copy lands,
    nudged by a nanosecond per copy, never overwriting one another."""
    context = zmq_context
    feed = Feed(context, endpoint)
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscription={"topics": ["kr_depth"], "framing": "text_json",
                                         "mapping": {**DEPTH_MAPPING, "max_points": 50}}).start()
    try:
        feed.joined(depth({"PROBE": {"asks": [["1", "1", T - 100]]}}),
                    lambda: bridge.value("bridge_mapped_points_total", subscription="kraken") > 0, "joined")
        before = settled(bridge)
        snapshot = depth({"XXBTZCAD": {"asks": [["1", "1", T + i] for i in range(20)],
                                       "bids": [["2", "1", T + i] for i in range(20)]}})
        for _ in range(25):
            feed.send(snapshot)
            time.sleep(0.01)
        wait_for(lambda: len(influxd.query("SELECT * FROM kraken_depth WHERE pair = 'XXBTZCAD'", db=database))
                 == 25 * 40, 30, "1000 points")
        after = quiet_ledger(bridge)
        assert value(after, "bridge_mapped_messages_total", subscription="kraken") - value(
            before, "bridge_mapped_messages_total", subscription="kraken") == 25
        assert value(after, "bridge_mapped_points_total", subscription="kraken") - value(
            before, "bridge_mapped_points_total", subscription="kraken") == 1000
        times = {r["time"] for r in influxd.query(
            "SELECT * FROM kraken_depth WHERE pair = 'XXBTZCAD' AND side = 'asks' AND level = '3'", db=database)}
        assert times == {(T + 3) * 10**9 + k for k in range(25)}
    finally:
        code = bridge.stop()
        feed.socket.close()
        context.term()
    assert code == 0
