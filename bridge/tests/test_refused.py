"""Refused messages come back: input dead letters keep whole messages, `replay --dead-letters`
maps them again through a fixed configuration (exactly once, deterministic), `capture` records a
live feed and `try` shows what a configuration makes of it, point for point what the running
bridge stores. Real ZMQ, a real influxd, real bridge and CLI processes."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import msgpack
import yaml
from harness import BRIDGE, TICKS_MAPPING, BridgeProcess, publisher, quiet_ledger, subscribed, wait_for

from station_bridge.metrics import total, value

BASE_MS = 1_765_000_000_000


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([BRIDGE, *args], capture_output=True, text=True, timeout=timeout)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stored(influxd, db: str, measurement: str) -> list[tuple]:
    """Every stored point as (tags, time, fields), sorted: what InfluxDB holds, per series and time."""
    rows = influxd.query(f'SELECT * FROM "{measurement}" GROUP BY *', db=db)
    out = []
    for row in rows:
        row = dict(row)
        row.pop("_measurement")
        t = row.pop("time")
        tags = tuple(sorted((k, row.pop(k)) for k in ("instrument", "station") if k in row))
        out.append((tags, t, tuple(sorted((k, v) for k, v in row.items() if v is not None))))
    return sorted(out)


QUOTES = {"measurement": "quotes", "tags": ["instrument"], "fields": {"price": "float"},
          "time": {"field": "ts", "format": "epoch_ms"}}


def quote_messages(n: int) -> list[list[bytes]]:
    """Three series; two messages of a series share each source time (uniqueness nudges the
    second); every 7th message has no time (the receive time stands in); a 2 kB payload each."""
    out = []
    for i in range(n):
        record = {"instrument": f"X{i % 3}", "bid": 100.0 + i / 8, "pad": "p" * 2000}
        if i % 7:
            record["ts"] = BASE_MS + i // 6
        out.append([b"quotes", msgpack.packb(record)])
    return out


def test_mis_keyed_feed_is_dead_lettered_whole_and_replay_lands_it_exactly_once(
        tmp_path, influxd, database, endpoint, zmq_context):
    n = 60
    pub = publisher(zmq_context, endpoint)
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint,
                           subscription={"name": "quotes", "topics": ["quotes"], "mapping": QUOTES}).start()
    try:
        subscribed(pub, subscribers=1)
        sent = quote_messages(n)
        for frames in sent:
            pub.send_multipart(frames)
        samples = wait_for(lambda: (s := bridge.samples()) and value(
            s, "bridge_received_messages_total", subscription="quotes") == n and s, 30, "every message received")
        assert value(samples, "bridge_rejected_messages_total", subscription="quotes", reason="missing_field") == n
    finally:
        assert bridge.stop() == 0
    dead = tmp_path / "dead" / "input.jsonl"
    kept = records(dead)
    assert len(kept) == n
    for record, frames in zip(kept, sent, strict=True):  # every frame whole, in order
        assert record["encoding"] == "base64" and not record.get("truncated")
        assert [base64.b64decode(f) for f in record["frames"]] == frames
        assert record["subscription"] == "quotes" and record["reason"] == "missing_field"
        assert record["topic"] == "quotes" and isinstance(record["time"], int)
    assert influxd.count(database, "quotes") == 0

    fixed = yaml.safe_load(bridge.path.read_text())
    fixed["subscriptions"][0]["mapping"]["fields"] = {"bid": "float"}
    config = tmp_path / "fixed.yml"
    config.write_text(yaml.safe_dump(fixed))
    again = tmp_path / "again.jsonl"
    first = cli("replay", "--dead-letters", "--config", str(config), "--dead-letter", str(again), "--json")
    assert first.returncode == 0, first.stderr + first.stdout
    report = json.loads(first.stdout)
    assert report["records"] == n and report["landed"] == n and report["points"] == n
    assert report["rejected_again"] == {} and report["destinations"]["local"]["written"] == n
    points = stored(influxd, database, "quotes")
    assert len(points) == n  # every refused point, once: n distinct (series, time)
    by_series: dict = {}
    for tags, t, fields in points:
        by_series.setdefault(dict(tags)["instrument"], []).append((t, dict(fields)["bid"]))
    for k in range(3):
        assert sorted(b for _, b in by_series[f"X{k}"]) == [100.0 + i / 8 for i in range(k, n, 3)]
    # The receive time stands in for a missing time: the one the dead letter kept.
    received = {r["time"] for r, frames in zip(kept, sent, strict=True) if b"ts" not in frames[1]}
    assert received <= {t for _, t, _ in points}

    second = cli("replay", "--dead-letters", "--config", str(config), "--dead-letter", str(again), "--json")
    assert second.returncode == 0 and second.stdout == first.stdout
    assert stored(influxd, database, "quotes") == points  # nothing doubled, nothing moved

    # Filters: only what is asked is sent; the rest counted as skipped.
    cut = kept[n // 2]["time"]
    third = cli("replay", "--dead-letters", "--config", str(config), "--dead-letter", str(again), "--json",
                "--until", str(cut), "--reason", "missing_field", "--subscription", "quotes")
    assert third.returncode == 0
    counts = json.loads(third.stdout)
    assert counts["landed"] == n // 2 and counts["skipped_by_filter"] == n - n // 2


def test_replay_writes_what_is_refused_again_to_its_own_file(tmp_path, influxd, database):
    """A record the fixed configuration still refuses goes, whole and replayable, to the
    replay's dead-letter file, never to the file being read."""
    from station_bridge.refused import make_record
    sample = tmp_path / "input.jsonl"
    good = {"instrument": "A", "bid": 1.5, "ts": BASE_MS}
    bad = {"instrument": "A", "ask": 2.5, "ts": BASE_MS + 1}
    sample.write_text("".join(json.dumps(make_record([b"quotes", msgpack.packb(r)], BASE_MS * 1_000_000, 1 << 20,
                                                     subscription="quotes", reason="missing_field")[0]) + "\n"
                              for r in (good, bad)) + '{"torn')
    config = {"subscriptions": [{"name": "quotes", "endpoints": ["tcp://127.0.0.1:9"], "framing": "msgpack",
                                 "mapping": {**QUOTES, "fields": {"bid": "float"}}}],
              "destinations": [{"name": "local", "url": influxd.url, "database": database}],
              "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path)}}
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config))
    again = tmp_path / "again.jsonl"
    done = cli("replay", "--dead-letters", "--config", str(path), "--dead-letter", str(again), str(sample))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "landed: 1 messages, 1 points" in done.stdout and "rejected again: 1 (missing_field: 1" in done.stdout
    assert "unreadable lines: 1" in done.stdout
    refused = records(again)
    assert len(refused) == 1 and msgpack.unpackb(base64.b64decode(refused[0]["frames"][1])) == bad
    assert influxd.count(database, "quotes") == 1
    same = cli("replay", "--dead-letters", "--config", str(path), "--dead-letter", str(sample), str(sample))
    assert same.returncode == 2 and "is one of the files being replayed" in same.stderr


def test_rotation_and_truncation_are_counted(tmp_path, endpoint, zmq_context):
    n = 40
    pub = publisher(zmq_context, endpoint)
    bridge = BridgeProcess(tmp_path, None, "none", endpoint,
                           subscription={"name": "quotes", "topics": ["quotes"], "mapping": QUOTES},
                           dead_letter={"max_bytes": "16KiB", "max_record_bytes": 4096}).start()
    big = [b"quotes", msgpack.packb({"instrument": "B", "bid": 1.0, "pad": "x" * 20_000})]
    try:
        subscribed(pub, subscribers=1)
        for frames in [*quote_messages(n), big]:
            pub.send_multipart(frames)
        samples = wait_for(lambda: (s := bridge.samples()) and value(
            s, "bridge_received_messages_total", subscription="quotes") == n + 1 and s, 30, "every message")
        dead = tmp_path / "dead"
        left = sum(len(records(p)) for p in (dead / "input.jsonl", dead / "input.jsonl.1"))
        discarded = value(samples, "bridge_dead_letters_discarded_total", file="input.jsonl")
        assert discarded > 0 and discarded + left == n + 1
        assert value(samples, "bridge_dead_letters_total", file="input.jsonl") == n + 1
        assert value(samples, "bridge_dead_letters_truncated_total", file="input.jsonl") == 1
    finally:
        assert bridge.stop() == 0
    last = (tmp_path / "dead" / "input.jsonl").read_text().splitlines()[-1]
    record = json.loads(last)
    assert len(last.encode()) + 1 <= 4096
    assert record["truncated"] is True and record["sizes"] == [len(f) for f in big]
    assert base64.b64decode(record["frames"][1]) == big[1][:len(base64.b64decode(record["frames"][1]))]
    # `try` names it (never maps a cut message); exit status 1 for a preflight.
    sample = tmp_path / "last.jsonl"
    sample.write_text(last + "\n")
    tried = cli("try", "--config", str(bridge.path), "--json", str(sample))
    assert tried.returncode == 1
    assert json.loads(tried.stdout)["summary"]["by_reason"] == {"truncated": 1}


def ticks(n: int) -> list[list[bytes]]:
    """Ticks with repeated timestamps (nudged), some refused (no declared field, a string
    volume), as a live feed would send them."""
    out = []
    for i in range(n):
        tick: dict = {"instrument": ["XBT/USD", "ETH/USD"][i % 2], "bid": 100 + i * 0.25, "ask": 101.5,
                      "volume": i, "seq": i, "timestamp": 1_765_000_000 + (i // 4) * 0.001}
        if i % 11 == 5:
            tick = {"instrument": "XBT/USD", "timestamp": 1_765_000_000.5}
        elif i % 13 == 7:
            tick["volume"] = "lots"
        out.append([b"kraken_tick", msgpack.packb(tick)])
    return out


def test_capture_and_try_give_the_points_the_running_bridge_stores(tmp_path, influxd, database, endpoint,
                                                                   zmq_context):
    n = 300
    pub = publisher(zmq_context, endpoint)
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint).start()
    sample = tmp_path / "sample.jsonl"
    capture = subprocess.Popen([BRIDGE, "capture", "--endpoint", endpoint, "--topic", "kraken_tick",
                                "--count", str(n), "--timeout", "30", "-o", str(sample)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        subscribed(pub, subscribers=2)  # the bridge and capture listen
        sent = ticks(n)
        for frames in sent:
            pub.send_multipart(frames)
        _, err = capture.communicate(timeout=40)
        assert capture.returncode == 0 and f"captured {n} messages" in err
        samples = quiet_ledger(bridge)
    finally:
        if capture.poll() is None:
            capture.kill()
        assert bridge.stop() == 0
    captured = records(sample)
    assert [[base64.b64decode(f) for f in r["frames"]] for r in captured] == sent
    tried = cli("try", "--config", str(bridge.path), "--json", str(sample))
    assert tried.returncode == 1  # some are refused
    result = json.loads(tried.stdout)
    refused = dict(result["summary"]["by_reason"])
    bridge_refused = {dict(labels)["reason"]: v for (name, labels), v in samples.items()
                      if name == "bridge_rejected_messages_total" and v}
    assert refused == bridge_refused and sum(refused.values()) == total(
        samples, "bridge_rejected_messages_total")
    lines = [line for m in result["messages"] for line in m.get("lines", [])]
    assert len(lines) == result["summary"]["points"] == value(samples, "bridge_written_points_total",
                                                              destination="local")
    # What try printed, written to a database of its own, equals what the bridge stored.
    other = database + "_try"
    influxd.query(f'CREATE DATABASE "{other}"')
    status, text = influxd.write("\n".join(lines) + "\n", other)
    assert status == 204, text
    live = stored(influxd, database, "ticks")
    assert len(live) == len(lines) and stored(influxd, other, "ticks") == live
    # The preflight threshold: the share refused is below 0.5.
    lenient = cli("try", "--config", str(bridge.path), "--max-rejected-share", "0.5", str(sample))
    assert lenient.returncode == 0 and f"{n} messages: " in lenient.stdout


def test_try_shows_each_message_and_the_summary(tmp_path):
    from station_bridge.refused import make_record
    sample = tmp_path / "s.jsonl"
    sample.write_text("".join(json.dumps(make_record(f, BASE_MS * 1_000_000, 1 << 20)[0]) + "\n"
                              for f in ticks(12)))
    config = {"subscriptions": [{"name": "k", "endpoints": ["tcp://127.0.0.1:9"], "framing": "msgpack",
                                 "mapping": {**TICKS_MAPPING, "fields": {"price": "float"}}}],
              "destinations": [{"name": "d", "url": "http://127.0.0.1:9", "database": "x"}],
              "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path / "d")}}
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config))
    wrong = cli("try", "--config", str(path), str(sample))
    assert wrong.returncode == 1
    assert "12 messages: 0 mapped (0 points), 12 refused (missing_field: 12)" in wrong.stdout
    config["subscriptions"][0]["mapping"]["fields"] = {"bid": "float"}
    path.write_text(yaml.safe_dump(config))
    right = cli("try", "--config", str(path), "--subscription", "k", str(sample))
    assert right.returncode == 1 and "11 mapped (11 points), 1 refused (missing_field: 1)" in right.stdout
    assert "ticks,instrument=ETH/USD bid=100.25 1765000000000000000" in right.stdout


def test_replay_to_an_unreachable_destination_says_so_and_can_be_run_again(tmp_path):
    from station_bridge.refused import make_record
    sample = tmp_path / "input.jsonl"
    sample.write_text("".join(json.dumps(make_record(f, BASE_MS * 1_000_000, 1 << 20, subscription="k",
                                                     reason="missing_field")[0]) + "\n" for f in ticks(12)))
    config = {"subscriptions": [{"name": "k", "endpoints": ["tcp://127.0.0.1:9"], "framing": "msgpack",
                                 "mapping": TICKS_MAPPING}],
              "destinations": [{"name": "down", "url": "http://127.0.0.1:9", "database": "x", "timeout": "2s"}],
              "journal": {"dir": str(tmp_path / "j")}, "dead_letter": {"dir": str(tmp_path)}}
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config))
    done = cli("replay", "--dead-letters", "--config", str(path), "--dead-letter", str(tmp_path / "again.jsonl"),
               "--json")
    assert done.returncode == 1 and "run the replay again" in done.stderr
    down = json.loads(done.stdout)["destinations"]["down"]
    assert down["written"] == 0 and down["not_attempted"] == 10 and "unreachable" in down["error"]
