"""The one delivery path (sinks.Delivery) against a real influxd: partial writes told apart from
InfluxDB's message, bisection only where it is silent, nothing accepted sent twice or counted
twice; `replay` and `export` on the same client."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from harness import BRIDGE
from servers import Influxd

from station_bridge.config import parse
from station_bridge.journal import Chunk
from station_bridge.sinks import Delivery, InfluxWriter


def delivery(influxd: Influxd, db: str, batch_size: int = 50_000, rp: str | None = None) -> Delivery:
    spec = parse({"subscriptions": [], "destinations": [{"name": "d", "url": influxd.url, "database": db,
                                                         "batch_size": batch_size, "retention_policy": rp}]})
    return Delivery(InfluxWriter(spec.destinations[0]), batch_size)


def base_ns() -> int:
    return (time.time_ns() // 1_000_000_000 - 600) * 1_000_000_000


def test_one_type_conflict_in_20000_points_costs_one_request(influxd, database):
    """Issue 11: 39,996 requests and 38 s before; the message names the field, measurement and type."""
    t = base_ns()
    influxd.write(f"ticks,instrument=A bid=1.0 {t}", database)
    lines = [f"ticks,instrument=A bid={1 + i / 1e5} {t + 1 + i}" for i in range(20_000)]
    lines[12_345] = f'ticks,instrument=A bid="oops" {t + 1 + 12_345}'
    d = delivery(influxd, database)
    out = d.deliver(Chunk.of(lines))
    assert d.writer.requests == 1
    assert out.written == 19_999 and [r[0].decode() for r in out.rejected] == [lines[12_345]]
    assert out.retry is None and out.unidentified == 0
    assert influxd.count(database, "ticks") == 20_000  # the first point and 19,999


def test_conflicts_the_message_does_not_name_are_found_without_counting_anything_twice(influxd, database):
    """InfluxDB names one conflict; the others are found by bisecting what is left, and what it
    stored at the first request is counted once."""
    t = base_ns()
    influxd.write(f"m a=1.0,b=1i,c=true {t}", database)
    lines = [f"m a={i}.5,b={i}i,c=false {t + 1 + i}" for i in range(1000)]
    bad = {100: f'm a="x" {t + 101}', 400: f'm b=1.5 {t + 401}', 700: f'm c="s" {t + 701}', 701: f'm c=1i {t + 702}'}
    for i, line in bad.items():
        lines[i] = line
    d = delivery(influxd, database)
    out = d.deliver(Chunk.of(lines))
    assert sorted(r[0].decode() for r in out.rejected) == sorted(bad.values())
    assert out.written == 996 == influxd.count(database, "m", "a") - 1
    assert d.writer.requests < 60  # bisection only where the message was silent


def test_a_batch_influxdb_refused_whole_is_split_until_the_culprit_is_isolated(influxd, database):
    """A new field with two types inside one batch: InfluxDB stores nothing ("field type conflict"
    without "partial write"), so re-sending is safe; the split stops at the culprit."""
    t = base_ns()
    lines = [f"fresh v={i}i {t + i}" for i in range(512)]
    lines[300] = f"fresh v=1.5 {t + 300}"
    d = delivery(influxd, database)
    out = d.deliver(Chunk.of(lines))
    assert [r[0].decode() for r in out.rejected] == [lines[300]]
    assert out.written == 511 == influxd.count(database, "fresh", "v")
    assert d.writer.requests <= 20


def test_points_beyond_the_retention_policy_are_the_oldest(influxd, database):
    influxd.query(f'CREATE RETENTION POLICY "short" ON "{database}" DURATION 1h REPLICATION 1')
    now = time.time_ns()
    old = [f"r v={i} {now - 3 * 3600 * 10**9 + i}" for i in range(30)]
    fresh = [f"r v={i} {now - 60 * 10**9 + i}" for i in range(70)]
    d = delivery(influxd, database, rp="short")
    out = d.deliver(Chunk.of(fresh[:35] + old + fresh[35:]))
    assert d.writer.requests == 1 and out.written == 70
    assert sorted(r[0].decode() for r in out.rejected) == sorted(old)


def test_lines_that_do_not_parse_are_named_and_the_rest_written_once(influxd, database):
    t = base_ns()
    lines = [f"p v={i} {t + i}" for i in range(100)]
    lines[5] = "garbage line"
    lines[50] = f"p v= {t + 50}"
    d = delivery(influxd, database)
    out = d.deliver(Chunk.of(lines))
    assert d.writer.requests == 1 and out.written == 98
    assert sorted(r[0].decode() for r in out.rejected) == sorted([lines[5], lines[50]])


def test_a_request_too_large_is_split_and_a_line_too_large_dead_lettered(tmp_path):
    server = Influxd(tmp_path / "small")
    conf = server.workdir / "influxdb.conf"
    conf.write_text(conf.read_text().replace("max-body-size = 0", "max-body-size = 20000"))
    server.start()
    try:
        server.query('CREATE DATABASE "big"')
        t = base_ns()
        lines = [f"b v={i} {t + i}" for i in range(2000)]  # about 50 kB
        lines[1000] = f'b s="{"x" * 30_000}" {t + 1000}'
        d = delivery(server, "big")
        out = d.deliver(Chunk.of(lines))
        assert [(r[0].decode(), r[3]) for r in out.rejected] == [(lines[1000], "too_large")]
        assert out.written == 1999 == server.count("big", "b", "v")
    finally:
        server.stop()


def test_an_unreachable_destination_leaves_the_rest_for_later_without_resending(tmp_path):
    server = Influxd(tmp_path / "down")
    spec = parse({"subscriptions": [], "destinations": [{"name": "d", "url": server.url, "database": "x",
                                                         "timeout": "2s"}]})
    d = Delivery(InfluxWriter(spec.destinations[0]), 10)
    out = d.deliver(Chunk.of([f"m v={i} {i}" for i in range(35)]))
    assert out.written == 0 and out.retry is not None and out.retry.count == 35 and d.writer.requests == 1


@pytest.fixture()
def replay_config(tmp_path, influxd, database) -> Path:
    path = tmp_path / "bridge.yml"
    path.write_text(yaml.safe_dump({"subscriptions": [], "destinations": [
        {"name": "local", "url": influxd.url, "database": database, "batch_size": 100}]}))
    return path


def test_replay_and_export_use_the_sinks_path_and_client(tmp_path, influxd, database, replay_config):
    t = base_ns()
    influxd.write(f"rp v=1.0 {t}", database)
    journal = tmp_path / "segment.lp"
    lines = [f'rp,k=a\\ b v={i}.5,s="line\nbreak" {t + 1 + i}' for i in range(250)]
    lines[120] = f'rp v="conflict" {t + 121}'
    journal.write_text("\n".join(lines) + "\n")
    dead = tmp_path / "rejected.jsonl"
    proc = subprocess.run([BRIDGE, "replay", "--config", str(replay_config), "--dead-letter", str(dead), str(journal)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "replayed 249 points" in proc.stdout and "1 rejected" in proc.stdout
    assert [json.loads(x)["line"] for x in dead.read_text().splitlines()] == [lines[120]]
    assert influxd.count(database, "rp", "v") == 250
    # export (the sink's client) then replay into another database: the same points.
    out = tmp_path / "export.jsonl"
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t / 1e9 - 1))
    subprocess.run([BRIDGE, "export", "rp", "--config", str(replay_config), "--start", start, "-o", str(out)],
                   check=True, capture_output=True)
    exported = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(exported) == 250 and {e["fields"].get("s") for e in exported[1:]} == {"line\nbreak"}
    influxd.query('CREATE DATABASE "copy"')
    copy_config = tmp_path / "copy.yml"
    copy_config.write_text(replay_config.read_text().replace(f"database: {database}", "database: copy"))
    proc = subprocess.run([BRIDGE, "replay", "--config", str(copy_config), "--dead-letter",
                           str(tmp_path / "copy-rejected.jsonl"), str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert influxd.query("SELECT * FROM rp", db="copy") == influxd.query("SELECT * FROM rp", db=database)
