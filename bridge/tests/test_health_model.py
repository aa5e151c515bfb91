"""The one health model (health.py): /healthz, the gauges and `validate` derive from the ledger's
ages and shares, whatever the cause. Real bridge processes, real influxd, real ZMQ."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time

import msgpack
import pytest
from harness import BRIDGE, BridgeProcess, publisher, quiet_ledger, subscribed, wait_for

from station_bridge.demo import publish
from station_bridge.health import (
    BridgeState,
    DestinationState,
    RecentOutcomes,
    SubscriptionState,
    Thresholds,
    evaluate,
)
from station_bridge.metrics import value


def destination(**over) -> DestinationState:
    base = dict(name="local", pending=0, queue=0, journal_points=0, journal_bytes=0, failing_s=0.0, last_error="",
                alive=True, oldest_pending_s=0.0, flush_interval=1.0, journal_failed_s=None, journal_error="",
                free_bytes=10 << 30, reserve_bytes=64 << 20)
    return DestinationState(**{**base, **over})


def subscription(**over) -> SubscriptionState:
    base = dict(name="feed", endpoints=["tcp://127.0.0.1:1"], require_connection=True, connected=1,
                disconnected_s=0.0, reconnects=0, last_message_age_s=0.5, running_s=100.0, fast_path="compiled",
                expected_interval=None, window_received=0, window_rejected={}, window_examples={})
    return SubscriptionState(**{**base, **over})


T = Thresholds(destination_grace=60, subscription_grace=60, max_rejected_share=0.95, rejection_min_messages=20)


def test_a_destination_whose_oldest_point_ages_past_its_threshold_is_degraded_even_when_nothing_fails():
    ok = evaluate(BridgeState([destination(oldest_pending_s=60.9, pending=5)], []), T)
    assert ok["ok"] and ok["destinations"]["local"]["ok"]
    late = evaluate(BridgeState([destination(oldest_pending_s=61.1, pending=5)], []), T)
    assert not late["ok"] and late["destinations"]["local"]["ok"] is False
    (problem,) = late["problems"]
    assert problem["part"] == "destination" and "oldest unacknowledged point is 61 s old" in problem["reason"]


def test_a_feed_that_arrives_but_does_not_land_is_degraded_with_its_dominant_reason_and_an_example():
    sub = subscription(window_received=100, window_rejected={"no_points": 96, "wrong_type": 0},
                       window_examples={"no_points": "nothing matched 'b'", "wrong_type": ""})
    doc = evaluate(BridgeState([], [sub]), T)
    assert not doc["ok"] and doc["subscriptions"]["feed"]["rejected_share"] == 0.96
    (problem,) = doc["problems"]
    assert "96 of 100 recent messages rejected, mostly no_points" in problem["reason"]
    assert "nothing matched 'b'" in problem["reason"]
    # Below the share, or too few messages to judge: healthy.
    assert evaluate(BridgeState([], [subscription(window_received=100, window_rejected={"x": 94})]), T)["ok"]
    assert evaluate(BridgeState([], [subscription(window_received=19, window_rejected={"x": 19})]), T)["ok"]


def test_a_declared_cadence_makes_silence_unhealthy_and_an_undeclared_one_never_does():
    assert evaluate(BridgeState([], [subscription(last_message_age_s=3600)]), T)["ok"]
    doc = evaluate(BridgeState([], [subscription(expected_interval=5, last_message_age_s=16)]), T)
    assert not doc["ok"] and "no message for 16 s (expected every 5 s)" in doc["problems"][0]["reason"]
    assert evaluate(BridgeState([], [subscription(expected_interval=5, last_message_age_s=14)]), T)["ok"]
    never = evaluate(BridgeState([], [subscription(expected_interval=5, last_message_age_s=-1, running_s=20)]), T)
    assert not never["ok"]


def test_recent_outcomes_forget_what_left_the_window():
    recent = RecentOutcomes(10)
    recent.add(50, {"no_points": 50}, now=100.0)
    recent.add(10, {}, now=105.0)
    assert recent.totals(now=105.5)[:2] == (60, {"no_points": 50})
    assert recent.totals(now=110.5)[:2] == (10, {})
    assert recent.totals(now=116.0)[:2] == (0, {})


MISKEYED = {"measurement": "ticks", "tags": ["instrument"], "fields": {"price": "float"},
            "time": {"field": "timestamp", "format": "epoch_s"}}


def test_a_miskeyed_feed_is_unhealthy_within_the_window_and_validate_fails(tmp_path, influxd, database, endpoint):
    """Issue 21: a wrong key rejected a whole feed (every message `no_points`/`missing_field`)
    while /healthz said 200 and validate passed."""
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint, subscription={"mapping": MISKEYED},
                           health={"rejection_window": "10s"}).start()
    assert bridge.healthy()
    sent = publish(endpoint, "kraken_tick", 200, rate=100, duration=30)
    _, body = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(bridge.health()), 10, "503")
    (problem,) = [p for p in body["problems"] if p["part"] == "subscription"]
    assert problem["name"] == "kraken" and "recent messages rejected, mostly" in problem["reason"], problem
    assert body["subscriptions"]["kraken"]["rejected_share"] == 1.0
    samples = quiet_ledger(bridge)
    assert value(samples, "bridge_received_messages_total", subscription="kraken") == sent
    assert value(samples, "bridge_subscription_healthy", subscription="kraken") == 0
    assert value(samples, "bridge_subscription_rejected_share", subscription="kraken") == 1.0
    proc = subprocess.run([BRIDGE, "validate", "--json", "--window", "1", str(bridge.path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "feed kraken: unhealthy:" in proc.stdout and "recent messages rejected" in proc.stdout
    # The window forgets: once the bad messages are older than it, the feed is healthy again.
    wait_for(bridge.healthy, 20, "/healthz 200 once the rejections left the window")
    assert bridge.stop() == 0


class SlowProxy:
    """A TCP proxy in front of influxd that holds every answer for `delay` seconds: writes succeed
    (204), just slower than the feed arrives. Nothing fails; only the ledger's ages tell."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.delay = delay
        self.target = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, delay: float | None) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(self.delay if delay is None else delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.stopped.set()
        self.server.close()


def test_a_destination_slower_than_its_feed_is_degraded_by_age_though_no_write_fails(
        tmp_path, influxd, database, endpoint):
    """A destination that acknowledges every write, slower than the feed: failing_s stays 0 (the
    old /healthz said 200 throughout) while the backlog ages; the oldest unacknowledged point
    passes destination_grace + flush_interval and /healthz says so; once it keeps up, ok again."""
    proxy = SlowProxy(influxd.port, delay=1.0)
    try:
        bridge = BridgeProcess(tmp_path, None, database, endpoint,
                               destination={"url": f"http://127.0.0.1:{proxy.port}", "batch_size": 50,
                                            "flush_interval": "100ms"},
                               health={"destination_grace": "2s"}).start()
        sent = publish(endpoint, "kraken_tick", 3000, rate=1000, duration=30)
        _, body = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(bridge.health()), 15, "503")
        (problem,) = [p for p in body["problems"] if p["part"] == "destination"]
        assert "oldest unacknowledged point" in problem["reason"], body
        assert body["destinations"]["local"]["failing_s"] == 0  # nothing failed: only the age tells
        proxy.delay = 0.0
        samples = quiet_ledger(bridge, timeout=60)
        assert value(samples, "bridge_received_messages_total", subscription="kraken") == sent
        wait_for(bridge.healthy, 15, "/healthz 200 once the backlog is delivered")
        stored = influxd.query('SELECT count(bid) FROM "ticks"', db=database)[0]["count"]
        assert stored == sent == value(samples, "bridge_written_points_total", destination="local")
        assert bridge.stop() == 0
    finally:
        proxy.close()


@pytest.mark.parametrize("share", [0, 1.5])
def test_max_rejected_share_must_be_a_share(tmp_path, share):
    path = tmp_path / "b.yml"
    path.write_text("subscriptions: [{name: a, endpoints: ['tcp://127.0.0.1:1'], mapping: {measurement: m, "
                    "fields: {x: float}}}]\ndestinations: [{name: d, url: 'http://127.0.0.1:1', database: x}]\n"
                    f"health: {{max_rejected_share: {share}}}\n")
    proc = subprocess.run([BRIDGE, "check-config", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "health.max_rejected_share" in proc.stderr + proc.stdout



def test_control_messages_are_ignored_by_rule_not_rejected_nor_dead_lettered(tmp_path, influxd, database, endpoint,
                                                                              zmq_context):
    """Issue 21: OANDA heartbeats counted as rejections (17,280 a day per stream) drowned the one
    signal of a wrong mapping. An ignore rule counts them as ignored{rule}; data still lands."""

    bridge = BridgeProcess(tmp_path, influxd, database, endpoint, subscription={
        "ignore": [{"name": "heartbeat", "path": "type", "in": ["HEARTBEAT"]},
                   {"name": "control", "topic": "^kraken_tick\\.control"}]},
        health={"rejection_window": "30s"}).start()
    pub = publisher(zmq_context, endpoint)
    subscribed(pub)
    now = time.time()
    for i in range(100):
        pub.send_multipart([b"kraken_tick", msgpack.packb({"type": "HEARTBEAT", "time": now})])
        pub.send_multipart([b"kraken_tick.control", msgpack.packb({"status": "subscribed"})])
        pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": "EURUSD", "bid": 1.0 + i, "ask": 2.0,
                                                           "timestamp": now + i})])
    # A topic rule is decided before decoding: a control message need not decode (the attacker's
    # PING and [1] on a control topic were refused undecodable / not_a_map).
    pub.send_multipart([b"kraken_tick.control", b"PING"])
    pub.send_multipart([b"kraken_tick.control", msgpack.packb([1])])
    # "HEARTBEAT" in another type (bytes) or case is data like any other: refused, not ignored.
    pub.send_multipart([b"kraken_tick", msgpack.packb({"type": "heartbeat"})])
    samples = wait_for(lambda: (lambda s: s if value(s, "bridge_received_messages_total", subscription="kraken")
                                == 303 else None)(bridge.samples()), 15, "every message received")
    samples = quiet_ledger(bridge)
    assert value(samples, "bridge_ignored_messages_total", subscription="kraken", rule="heartbeat") == 100
    assert value(samples, "bridge_ignored_messages_total", subscription="kraken", rule="control") == 102
    assert value(samples, "bridge_mapped_messages_total", subscription="kraken") == 100
    assert value(samples, "bridge_rejected_messages_total", subscription="kraken", reason="missing_field") == 1
    dead = (tmp_path / "dead" / "input.jsonl").read_text().splitlines()
    assert len(dead) == 1  # only the refused one
    assert bridge.healthy()  # 1 rejected of 101 data messages: healthy
    assert influxd.query('SELECT count(bid) FROM "ticks"', db=database)[0]["count"] == 100
    assert bridge.stop() == 0


@pytest.mark.parametrize(("rule", "message"), [
    ({"name": "x", "path": "type"}, "`path` and `in` go together"),
    ({"name": "x"}, "needs `path` with `in`, or `topic`"),
    ({"name": "x", "topic": "("}, "not a regular expression"),
    ({"name": "x y", "topic": "a"}, "use letters"),
    ({"name": "x", "path": "a", "in": [{"b": 1}]}, "list scalars"),
])
def test_ignore_rules_are_checked_at_load(tmp_path, rule, message):
    import yaml
    path = tmp_path / "b.yml"
    path.write_text(yaml.safe_dump({
        "subscriptions": [{"name": "a", "endpoints": ["tcp://127.0.0.1:1"], "ignore": [rule],
                           "mapping": {"measurement": "m", "fields": {"x": "float"}}}],
        "destinations": [{"name": "d", "url": "http://127.0.0.1:1", "database": "x"}]}))
    proc = subprocess.run([BRIDGE, "check-config", str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "subscriptions[0].ignore[0]" in proc.stderr + proc.stdout, proc.stderr
    assert message in proc.stderr + proc.stdout


def test_a_stop_stays_within_shutdown_timeout_against_a_destination_that_never_answers(
        tmp_path, influxd, database, endpoint):
    """The attacker's case: shutdown_timeout 4 s, a destination that accepts and never answers
    (its request timeout 10 s): the stop took 9.5 s. The request in flight at the deadline is cut;
    the batch is journaled, and a restart with the destination back delivers every point."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    try:
        bridge = BridgeProcess(tmp_path, None, database, endpoint, shutdown_timeout="4s",
                               destination={"url": f"http://127.0.0.1:{silent.getsockname()[1]}", "timeout": "10s"})
        bridge.start()
        sent = publish(endpoint, "kraken_tick", 500, rate=0, duration=20)
        wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == sent, 20, "received")
        wait_for(lambda: held, 10, "the destination's connection")
        time.sleep(0.5)  # the write request is in flight, unanswered
        started = time.monotonic()
        assert bridge.stop() == 0
        took = time.monotonic() - started
        assert took < 4 + 2.5, f"the stop took {took:.1f} s with shutdown_timeout 4 s"
    finally:
        silent.close()
        for s in held:
            s.close()
    restarted = BridgeProcess(tmp_path, influxd, database, endpoint)
    restarted.start()
    samples = quiet_ledger(restarted, timeout=60)
    written = value(samples, "bridge_written_points_total", destination="local")
    assert influxd.count(database, "ticks") == sent == written
    assert restarted.stop() == 0
