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

import json
import subprocess
import time
from pathlib import Path

import msgpack
import pytest
import yaml
from harness import BRIDGE, BridgeProcess, RecordingDestination, publisher, subscribed, tmpfs, wait_for

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
    # a feed with no message in the window is idle: its rejections left the window
    assert recent.totals(now=t + 60)[0] == 0
    # and nothing older than a day counts
    stale = RecentOutcomes(60, 100)
    for k in range(30):
        stale.add(1, {"no_points": 1}, now=1_000.0 + k * 3_600)
    assert stale.totals(now=1_000.0 + 29 * 3_600 + 1)[0] == 24


def test_a_slow_feed_and_a_slow_destination_that_land_nothing_are_degraded(tmp_path, influxd, database, endpoint,
                                                                           zmq_context):
    """One message every 0.12 s with a 1 s window (8 in the window, the minimum 20): every
    message of `kraken` lacks its tag (missing_field), every point of `conflict` is refused by
    InfluxDB (a field type conflict). Before: /healthz 200 with 120 of 120 refused on both."""
    other = endpoint.rsplit(":", 1)[0] + f":{int(endpoint.rsplit(':', 1)[1]) + 1}"
    now = time.time_ns()
    influxd.write(f"conflict,k=a v=1i {now - 1_000_000_000}", database)  # v is an integer in this shard
    conflict = {"name": "conflict", "endpoints": [other], "topics": [""], "framing": "msgpack",
                "mapping": {"measurement": "conflict", "tags": ["k"], "fields": {"v": "float"}}}
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint, subscriptions_extra=[conflict],
                           health={"rejection_window": "1s"}).start()
    pub = publisher(zmq_context, endpoint)
    pub2 = publisher(zmq_context, other)
    subscribed(pub)
    subscribed(pub2)
    reasons: dict = {}
    for i in range(120):  # while the feeds are active (a message in the window): up to ~15 s
        pub.send_multipart([b"kraken_tick", msgpack.packb({"bid": 1.0, "ask": 2.0, "volume": 1, "seq": i,
                                                          "timestamp": time.time()})])
        pub2.send_multipart([b"t", msgpack.packb({"k": "a", "v": 1.5 + i})])
        time.sleep(0.12)
        if i >= 20:
            status, doc = bridge.health()
            reasons = {(p["part"], p["name"]): p["reason"] for p in doc["problems"]}
            if ("subscription", "kraken") in reasons and ("destination", "local") in reasons:
                break
    assert bridge.value("bridge_rejected_messages_total", subscription="kraken", reason="missing_field") >= 20
    assert bridge.value("bridge_dropped_points_total", destination="local", reason="rejected") >= 20
    assert status == 503, reasons
    assert "missing_field" in reasons[("subscription", "kraken")], reasons
    assert "type_conflict" in reasons[("destination", "local")] or "conflict" in reasons[("destination", "local")]
    assert ("subscription", "conflict") not in reasons  # its messages map: InfluxDB refuses the points
    bridge.stop()


# --- ignore rules: try and replay apply them as the bridge does; a rule that eats the feed ------

TICK = {"measurement": "px", "tags": ["instrument"], "fields": {"bid": "float"},
        "time": {"field": "ts", "format": "epoch_ns"}}
T0 = 1_765_000_000_000_000_000


def _config(tmp_path: Path, url: str, database: str, ignore: list[dict], topics: list[str] | None = None) -> Path:
    config = {"subscriptions": [{"name": "oanda", "endpoints": ["tcp://127.0.0.1:9"], "framing": "json",
                                 "topics": topics or [""], "ignore": ignore, "mapping": TICK}],
              "destinations": [{"name": "local", "url": url, "database": database}],
              "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path / "d")}}
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _sample(path: Path, n: int, **keys: object) -> Path:
    """n ticks and n heartbeats, interleaved, as capture (or, with keys, dead-letter) records."""
    from station_bridge.refused import make_record
    rows = []
    for i in range(n):
        tick = [b"EUR_USD", json.dumps({"instrument": "EUR_USD", "bid": 1.0 + i, "ts": T0 + i}).encode()]
        beat = [b"hb", json.dumps({"type": "HEARTBEAT", "ts": T0 + i}).encode()]
        rows += [make_record(tick, T0 + i, 1 << 20, **keys)[0], make_record(beat, T0 + i, 1 << 20, **keys)[0]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_try_applies_the_ignore_rules_and_says_when_a_rule_eats_the_data(tmp_path):
    """Before: try refused the heartbeats the bridge ignores (exit 1: a preflight that could never
    pass) and showed as mapped the ticks a wrong rule makes the bridge ignore, every one."""
    sample = _sample(tmp_path / "capture.jsonl", 10)
    beats = [{"name": "heartbeat", "path": "type", "in": ["HEARTBEAT"]}]
    right = cli("try", "--config", str(_config(tmp_path, "http://127.0.0.1:9", "x", beats)), "--json", str(sample))
    assert right.returncode == 0, right.stdout[-2000:] + right.stderr
    summary = json.loads(right.stdout)["summary"]
    assert summary["mapped"] == 10 and summary["refused"] == 0 and summary["by_rule"] == {"heartbeat": 10}
    assert summary["ignored_data"] == 0
    # a rule meant for control topics that matches the data's topic too: the bridge stores nothing
    wrong = [*beats, {"name": "control", "topic": "E"}]
    eaten = cli("try", "--config", str(_config(tmp_path, "http://127.0.0.1:9", "x", wrong)), str(sample))
    assert eaten.returncode == 1, eaten.stdout[-2000:]
    assert "0 mapped (0 points), 0 refused, 20 ignored (control: 10, heartbeat: 10)" in eaten.stdout
    assert "ignored by rule 'control' (yet the mapping makes 1 point(s) of it: data?)" in eaten.stdout
    assert "warning: ignore rule(s) 'control' (10) match messages the mapping maps" in eaten.stderr


def test_replay_of_dead_letters_counts_what_the_current_rules_ignore(tmp_path, influxd, database):
    """Heartbeats dead-lettered before the rule existed: replayed after it is added they are
    ignored (counted by rule), not refused again, and the ticks land. Before: 10 missing_field."""
    letters = _sample(tmp_path / "input.jsonl", 10, subscription="oanda", reason="missing_field")
    beats = [{"name": "heartbeat", "path": "type", "in": ["HEARTBEAT"]}]
    config = _config(tmp_path, influxd.url, database, beats)
    done = cli("replay", "--dead-letters", "--config", str(config), "--json", "--dead-letter",
               str(tmp_path / "again.jsonl"), str(letters))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["landed"] == 10 and report["rejected_again"] == {} and report["ignored"] == {"heartbeat": 10}
    assert influxd.count(database, "px") == 10


def test_check_config_warns_about_a_topic_rule_that_matches_every_topic_the_subscription_receives(tmp_path):
    """`topic: k` meant as `^control`: on topics [kraken_tick] every message was ignored, with
    /healthz 200 (ignored is not rejected), validate content and check-config silent."""
    path = _config(tmp_path, "http://127.0.0.1:9", "x", [{"name": "control", "topic": "k"}], topics=["kraken_tick"])
    done = cli("check-config", str(path))
    assert done.returncode == 0
    assert "ignore[0] 'control' (topic 'k') matches every topic the subscription receives" in done.stderr
    fine = _config(tmp_path, "http://127.0.0.1:9", "x", [{"name": "control", "topic": r"^control\."}])
    assert "ignore[0]" not in cli("check-config", str(fine)).stderr


# --- binning: a silence longer than max_gap is not filled -----------------------------------------

def test_a_sample_after_a_long_silence_completes_one_bin_and_starts_afresh():
    """Before: a sample 30 days after its series' previous one returned 2,592,000 bins."""
    from station_bridge.binning import TimeWeightedBinner
    second = 1_000_000_000
    base = 1_765_000_000 * second
    binner = TimeWeightedBinner(second, ["v"])  # max_gap: 10,000 intervals by default
    out = binner.add("s", base + second // 10, {"v": 100.0})
    out += binner.add("s", base + 30 * 86_400 * second + second // 2, {"v": 50.0})
    # the open bin completed with the new value holding to its end (as always), then the new
    # sample's own bin is open: nothing in between
    assert [(start - base, round(means["v"], 6)) for start, means in out] == [(0, 55.0)]
    assert binner.gaps == 1
    later = binner.add("s", base + 30 * 86_400 * second + 2 * second, {"v": 10.0})
    day30 = base + 30 * 86_400 * second
    assert [(start - day30, round(m["v"], 6)) for start, m in later] == [(0, 30.0), (second, 10.0)]
    # a gap within max_gap is filled as before
    near = TimeWeightedBinner(second, ["v"], max_gap_ns=5 * second)
    near.add("s", base, {"v": 1.0})
    assert len(near.add("s", base + 5 * second, {"v": 1.0})) == 5 and near.gaps == 0


def test_a_binned_feed_survives_a_message_with_an_old_time(tmp_path, influxd, database, endpoint, zmq_context):
    """Eight years behind is inside accept_behind: the old message lands, the next one starts
    its series afresh (counted in bridge_binning_gaps_total), a few points in all. Before:
    315 million bins for one message (15 days already took 587 MiB and 20 s)."""
    mapping = {"measurement": "ticks", "tags": ["instrument"], "fields": {"bid": "float"},
               "time": {"field": "t", "format": "epoch_ns"}}
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscription={"mapping": mapping, "binning": {"interval": "1s", "fields": ["bid"]}}).start()
    pub = publisher(zmq_context, endpoint)
    subscribed(pub)
    now = time.time_ns()
    for t, bid in ((now - 3_000 * 86_400 * 10**9, 1.0), (now, 2.0), (now + 2 * 10**9, 3.0)):
        pub.send_multipart([b"kraken_tick", msgpack.packb({"instrument": "EURUSD", "bid": bid, "t": t})])
    wait_for(lambda: bridge.value("bridge_binning_gaps_total", subscription="kraken") == 1, 20, "the gap counted")
    wait_for(lambda: bridge.value("bridge_written_points_total", destination="local")
             == bridge.value("bridge_mapped_points_total", subscription="kraken") > 0, 20, "the points written")
    assert bridge.value("bridge_mapped_points_total", subscription="kraken") <= 6
    assert influxd.count(database, "ticks") == 3 and bridge.alive
    bridge.stop()


# --- tag values and naive times: no silent distortion ----------------------------------------------

def test_non_finite_tag_values_are_refused_and_booleans_spelt_as_influxdb_does():
    """Before: {"k": NaN} became the tag k=nan (inf, -inf alike), {"k": true} k=True."""
    from station_bridge.config import parse
    from station_bridge.mapping import MapError, Mapper
    config = parse({"subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:9"], "framing": "msgpack",
                                           "mapping": {"measurement": "m", "tags": ["k"], "fields": {"v": "integer"}}}],
                        "destinations": [{"name": "d", "url": "http://127.0.0.1:9", "database": "x"}]}, "t.yml")
    mapper = Mapper(config.subscriptions[0])
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(MapError) as refused:
            mapper.line("t", {"k": bad, "v": 1})
        assert refused.value.reason == "non_finite"
    assert mapper.line("t", {"k": True, "v": 1}).startswith("m,k=true v=1i ")
    assert mapper.line("t", {"k": False, "v": 2}).startswith("m,k=false v=2i ")
    assert mapper.line("t", {"k": 1.5, "v": 3}).startswith("m,k=1.5 v=3i ")
    assert mapper.line("t", {"k": 7, "v": 4}).startswith("m,k=7 v=4i ")


@pytest.mark.parametrize(("zone", "gap", "before", "after"), [
    ("Europe/Berlin", "2026-03-29 02:30:00", "2026-03-29 01:59:59", "2026-03-29 03:00:00"),
    ("America/New_York", "2026-03-08 02:00:00", "2026-03-08 01:59:59.999999999", "2026-03-08 03:00:00"),
])
def test_a_naive_time_inside_a_daylight_saving_gap_is_refused(zone, gap, before, after):
    """Before: 02:30 on the spring-forward night was stored at the instant of 03:30 (an hour
    off, colliding with a real time); the fall-back hour keeps its first occurrence."""
    from station_bridge.timestamps import TimestampError, parser
    naive = parser("naive", zone)
    with pytest.raises(TimestampError, match="daylight-saving gap"):
        naive(gap)
    assert naive(after) - naive(before) < 10**9 + 1  # the gap's edges: a second apart at most
    auto = parser("auto", zone)
    with pytest.raises(TimestampError):
        auto(gap)
    assert naive("2026-10-25 02:30:00") == 1_792_888_200 * 10**9 if zone == "Europe/Berlin" else True


# --- replay: files of any shape, and its own dead letters ------------------------------------------

def test_replay_of_an_annotated_csv_with_empty_cells_and_a_bad_row(tmp_path, influxd, database):
    """Before: the first empty cell (a sparse field) stopped the replay with a traceback,
    nothing replayed. Now an empty cell is an absent tag or field, a bad row is refused and
    kept, and RFC 3339 times are read."""
    csv = tmp_path / "export.csv"
    csv.write_text("#datatype measurement,tag,double,long,dateTime:number\n"
                   "m,k,bid,n,time\n"
                   "ticks,A,1.5,,1700000000000000000\n"
                   "ticks,,,7,1700000001000000000\n"
                   "ticks,B,x,1,1700000002000000000\n"
                   "ticks,C,,,1700000003000000000\n"
                   "#datatype measurement,tag,double,dateTime:RFC3339\n"
                   "m,k,bid,time\n"
                   "ticks,D,2.5,2023-11-14T22:13:21.5Z\n")
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({
        "subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:9"], "mapping": TICK}],
        "destinations": [{"name": "local", "url": influxd.url, "database": database}],
        "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path / "d")}}))
    done = cli("replay", "--config", str(config), "--dead-letter", str(tmp_path / "again.jsonl"), str(csv))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "replayed 3 points into local; 2 rejected" in done.stdout
    rows = sorted((r.get("k"), r["time"], r.get("bid"), r.get("n")) for r in
                  influxd.query('SELECT * FROM "ticks" GROUP BY *', db=database))
    assert rows == [("", 1700000001000000000, None, 7), ("A", 1700000000000000000, 1.5, None),
                    ("D", 1700000001500000000, 2.5, None)], rows
    kept = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert sorted((k["reason"], k["source"].rsplit(":", 1)[1]) for k in kept) == [("missing_field", "6"),
                                                                                   ("wrong_type", "5")]


def test_a_replay_whose_dead_letter_file_fills_says_so(tmp_path, influxd, database):
    """Before: 40 records refused again, the file on a full disk held 10 of them (4 KiB), and
    replay said `rejected again: 40 (...; see replay-rejected.jsonl)`, exit 2 as if all were there."""
    letters = _sample(tmp_path / "input.jsonl", 40, subscription="oanda", reason="missing_field")
    config = _config(tmp_path, influxd.url, database, [])  # the heartbeats are refused again
    with tmpfs(tmp_path / "full", "64k") as full:
        (full / "filler").write_bytes(b"\0" * 60 * 1024)
        done = cli("replay", "--dead-letters", "--config", str(config), "--json", str(letters), cwd=full)
        report = json.loads(done.stdout)
        assert done.returncode == 1, done.stdout + done.stderr
        assert report["rejected_again"] == {"missing_field": 40} and report["dead_letter_errors"] > 0
        assert "could not be written to replay-rejected.jsonl" in done.stderr
        csv = tmp_path / "bad.csv"
        csv.write_text("#datatype measurement,tag,double,dateTime:number\nm,k,bid,time\n"
                       + "".join(f"ticks,A,x{i},{1700000000000000000 + i}\n" for i in range(200)))
        plain = cli("replay", "--config", str(config), str(csv), cwd=full)
        assert plain.returncode == 1 and "could not be written to replay-rejected.jsonl" in plain.stderr


def test_bins_are_handed_over_as_they_come_not_held_for_the_whole_burst(tmp_path, zmq_context):
    """300 series, each silent for 9,000 s (within max_gap) then sampled: 2.7 million bins from
    600 messages took the bridge to 527 MiB RSS, held in one list for one chunk; now they go to
    the destinations (queue, then journal, bounded in bytes) in pieces (79 MiB measured)."""
    from station_bridge.config import parse
    from station_bridge.journal import DeadLetters
    from station_bridge.mapping import Uniqueness
    from station_bridge.metrics import Metrics
    from station_bridge.pipeline import Pipeline, RateLimitedLog, Subscription

    config = parse({"subscriptions": [{"name": "s", "endpoints": ["tcp://127.0.0.1:9"], "framing": "msgpack",
                                       "mapping": {"measurement": "m", "tags": ["k"], "fields": {"v": "float"},
                                                   "time": {"field": "t", "format": "epoch_ns"}},
                                       "binning": {"interval": "1s", "fields": ["v"]}}],
                    "destinations": [{"name": "d", "url": "http://127.0.0.1:9", "database": "x"}]}, "t.yml")

    sink = RecordingDestination()
    metrics = Metrics()
    pipeline = Pipeline([sink], metrics, None, DeadLetters(tmp_path / "dead.jsonl"), 1 << 20,  # type: ignore[list-item]
                        RateLimitedLog(5))
    sub = Subscription(config.subscriptions[0], config, zmq_context, Uniqueness(128, 1000))
    t0 = 1_765_000_000 * 10**9
    pipeline.receive(sub, [[b"t", msgpack.packb({"k": f"s{i}", "v": 1.0, "t": t0})] for i in range(5)])
    pipeline.receive(sub, [[b"t", msgpack.packb({"k": f"s{i}", "v": 2.0, "t": t0 + 9_000 * 10**9})]
                           for i in range(5)])
    assert sum(sink.chunks) == 10 + 5 * 9_000
    assert max(sink.chunks) <= 20_000 + 10_000, sink.chunks  # BIN_FLUSH + one sample's bins at most
    assert metrics.get("bridge_mapped_points_total", subscription="s") == sum(sink.chunks)
    assert metrics.get("bridge_accepted_points_total", destination="d") == sum(sink.chunks)


def test_a_rule_that_eats_the_feed_degrades_it_while_heartbeats_alone_do_not(tmp_path, influxd, database, endpoint,
                                                                              zmq_context):
    """`{path: kind, in: [tick]}` meant for control messages matches the ticks too: every message
    was counted ignored, /healthz 200, validate content. A few ignored messages per burst are now
    mapped on the side: data the mapping maps, ignored, with nothing mapped in the window, is a
    problem; a heartbeat (no fields: the mapping refuses it) never is (a quiet weekend feed)."""
    rules = [{"name": "heartbeat", "path": "type", "in": ["HEARTBEAT"]},
             {"name": "control", "path": "kind", "in": ["tick"]}]
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint, health={"rejection_window": "2s"},
                           subscription={"framing": "json", "topics": [""], "ignore": rules, "mapping": TICK}).start()
    pub = publisher(zmq_context, endpoint)
    subscribed(pub)
    for _ in range(20):  # heartbeats only: idle, healthy
        pub.send_multipart([b"hb", json.dumps({"type": "HEARTBEAT", "ts": time.time_ns()}).encode()])
        time.sleep(0.05)
    wait_for(lambda: bridge.value("bridge_ignored_messages_total", subscription="kraken", rule="heartbeat") == 20,
             10, "the heartbeats")
    assert bridge.health()[0] == 200, bridge.health()
    for i in range(20):  # the ticks, eaten by `control`
        pub.send_multipart([b"EUR_USD", json.dumps({"kind": "tick", "instrument": "EUR_USD", "bid": 1.0 + i,
                                                    "ts": time.time_ns()}).encode()])
        time.sleep(0.05)
    _, doc = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(bridge.health()), 10, "503")
    (problem,) = [p for p in doc["problems"] if p["part"] == "subscription"]
    assert "ignore rule(s) 'control' ignore messages the mapping maps" in problem["reason"], problem
    assert "px,instrument=EUR_USD,station=test1 bid=" in problem["reason"]
    assert bridge.value("bridge_ignored_messages_total", subscription="kraken", rule="control") == 20
    assert bridge.value("bridge_mapped_messages_total", subscription="kraken") == 0
    bridge.stop()


def test_replay_counts_points_it_could_not_check_for_uniqueness(tmp_path, influxd, database):
    """200 points of one series on their recorded receive times (no time field), then one whose
    source time equals the 6th of them, below the series' window of 128 times: it keeps its
    time unchecked and overwrites that point (200 stored of 201, as in the bridge, where
    bridge_uniqueness_unchecked_total counts it). Before: replay said 201 points, nothing else."""
    from station_bridge.refused import make_record
    letters = tmp_path / "input.jsonl"
    rows = [make_record([b"t", json.dumps({"instrument": "X", "bid": float(i)}).encode()], T0 + i * 1000, 1 << 20,
                        subscription="oanda", reason="missing_field")[0] for i in range(200)]
    rows.append(make_record([b"t", json.dumps({"instrument": "X", "bid": -1.0, "ts": T0 + 5000}).encode()],
                            T0 + 300_000, 1 << 20, subscription="oanda", reason="missing_field")[0])
    letters.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = cli("replay", "--dead-letters", "--config", str(_config(tmp_path, influxd.url, database, [])), "--json",
               "--dead-letter", str(tmp_path / "again.jsonl"), str(letters))
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["points"] == 201 and report["uniqueness_unchecked"] == 1, report
    assert influxd.count(database, "px") == 200
