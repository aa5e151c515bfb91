"""Journal faults end to end: damaged journal files, a second bridge on the same journal dir, a
segment that becomes unreadable while the bridge runs. Real bridge processes, a real influxd;
what InfluxDB stores is compared per series, time and field values with an oracle database that
received exactly the records the damage left intact (the test's own bookkeeping, not the reader)."""

from __future__ import annotations

import json
import os

from harness import BridgeProcess, quiet_ledger, wait_for
from test_journal_records import chunks, expected, framed

from station_bridge.demo import publish
from station_bridge.journal import Chunk, Intake
from station_bridge.journal.records import HEADER_BYTES, scan
from station_bridge.ledger import Ledger
from station_bridge.lineproto import split_lines
from station_bridge.metrics import Metrics, total, value

T0 = 1_700_000_000 * 10**9


def _rows(influxd, db: str) -> list[str]:
    rows = influxd.query('SELECT * FROM /(?s).*/ WHERE "k" =~ /^[0-9]{5}$/', db=db)
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def test_damaged_journal_files_deliver_every_intact_point_once_and_count_every_damaged_one(tmp_path, influxd,
                                                                                           database, endpoint):
    journal = tmp_path / "journal" / "local"
    journal.mkdir(parents=True)
    total_points, intact = 0, []

    def segment(name: str, cs: list[Chunk], damage) -> None:
        nonlocal total_points
        data, spans = framed(cs)
        damaged = damage(bytearray(data), spans)
        (journal / name).write_bytes(bytes(damaged))
        total_points += sum(c.count for c in cs)
        intact.extend(cs[i] for i in expected(data, bytes(damaged), cs, spans))

    def cut(at):
        return lambda data, spans: data[:at(spans)]

    def flip(record, offset):
        def damage(data, spans):
            data[spans[record][0] + offset] ^= 0x20
            return data
        return damage

    n = 0
    # A record cut at representative offsets: inside the magic, length, count, header checksum,
    # record checksum, at the payload's first byte, in its middle, one byte short.
    for offset in (1, 6, 9, 14, 18, HEADER_BYTES, HEADER_BYTES + 40, -1):
        n += 1
        cs = chunks(100 + n, 3, 4, T0 + n * 10**6)
        segment(f"{T0 + n:020d}-{n:08d}-n999.lp", cs,
                cut(lambda spans, o=offset: spans[1][0] + o if o >= 0 else spans[1][1] - 1))
    # A bit flipped in a header (the count field) and in a payload.
    for record, offset in ((1, 9), (2, HEADER_BYTES + 7)):
        n += 1
        segment(f"{T0 + n:020d}-{n:08d}-n3.lp", chunks(100 + n, 3, 5, T0 + n * 10**6), flip(record, offset))
    # A 4 KiB page zeroed inside an intake log a stopped bridge left (adopted at start, by rename).
    n += 1
    cs = chunks(100 + n, 30, 6, T0 + n * 10**6)
    intake = Intake(journal)
    for c in cs:
        assert intake.append(c)
    intake.close()
    wal = next(journal.glob("*.wal"))
    original = wal.read_bytes()
    page = bytearray(original)
    page[4096:8192] = bytes(len(page[4096:8192]))
    wal.write_bytes(bytes(page))
    _, spans = framed(cs)
    total_points += sum(c.count for c in cs)
    intact.extend(cs[i] for i in expected(original, bytes(page), cs, spans))
    # The power-cut pattern: an intake log cut inside a record (its header whole, its payload not).
    n += 1
    cs = chunks(100 + n, 6, 5, T0 + n * 10**6)
    intake = Intake(journal)
    for c in cs:
        assert intake.append(c)
    intake.close()
    wal = max(journal.glob("*.wal"))
    _, spans = framed(cs)
    os.truncate(wal, spans[3][0] + HEADER_BYTES + 11)
    total_points += sum(c.count for c in cs)
    intact.extend(cs[:3])
    # A segment of the unframed format (a station upgraded with points on disk), its tail torn.
    n += 1
    old = chunks(100 + n, 1, 5, T0 + n * 10**6)[0]
    (journal / f"{T0 + n:020d}-{n:08d}-n6.lp").write_bytes(old.data + b'mtorn s="never ended')
    total_points += 6
    intact.append(old)
    # The ledger of the bridge that accepted them all.
    metrics = Metrics()
    metrics.inc("bridge_accepted_points_total", total_points, destination="local")
    Ledger(tmp_path / "journal" / "ledger.json", metrics).save(sync=True)

    lines = b"".join(c.data for c in intact)
    oracle = f"{database}_oracle"
    influxd.query(f'CREATE DATABASE "{oracle}"')
    assert influxd.write(lines.decode(), oracle)[0] == 204
    want = sum(c.count for c in intact)
    assert 0 < want < total_points

    bridge = BridgeProcess(tmp_path, influxd, database, endpoint).start()
    samples = quiet_ledger(bridge)
    stored = _rows(influxd, database)
    assert stored == _rows(influxd, oracle), "exactly the intact points, unaltered"
    assert len(stored) == want == value(samples, "bridge_written_points_total", destination="local")
    assert value(samples, "bridge_dropped_points_total", destination="local", reason="damaged") == total_points - want
    assert total(samples, "bridge_dropped_points_total", destination="local") == total_points - want
    assert value(samples, "bridge_recovered_points_total", destination="local") == 0
    assert value(samples, "bridge_journal_damaged_records_total", destination="local") >= n
    errors = [r for r in bridge.log_records() if r.get("msg") == "damaged journal record skipped"]
    assert errors and all("offset" in r and "file" in r for r in errors)
    assert bridge.stop() == 0
    # A restart counts nothing twice.
    again = BridgeProcess(tmp_path, influxd, database, endpoint).start()
    samples = quiet_ledger(again)
    assert value(samples, "bridge_dropped_points_total", destination="local", reason="damaged") == total_points - want
    assert value(samples, "bridge_written_points_total", destination="local") == want
    assert again.stop() == 0


def test_a_second_bridge_on_the_same_journal_dir_is_refused_before_it_touches_a_file(tmp_path, own_influxd,
                                                                                       endpoint):
    """Tester's fault: a second bridge renamed the first one's live intake log (and, given its own
    metrics port, ran on the same journal dir)."""
    # every point in memory and the intake log
    held = {"flush_interval": "10m", "batch_size": 100000, "flush_points": 100000}
    first = BridgeProcess(tmp_path, own_influxd, "tick", endpoint, destination=held).start()
    sent = publish(endpoint, "kraken_tick", 2000, rate=0, duration=30)
    wait_for(lambda: first.value("bridge_accepted_points_total", destination="local") == sent, 20, "all accepted")
    journal = tmp_path / "journal"

    def listing() -> set[tuple]:  # the lock and the intake log (the first bridge's ledger timer rewrites its
        # ledger and the uniqueness window saved with it)
        return {(str(p.relative_to(journal)), p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
                for p in journal.rglob("*")
                if p.is_file() and not p.name.startswith(("ledger.json", "uniqueness.bin"))}

    before = listing()
    assert any(name.endswith(".wal") for name, *_ in before)
    (tmp_path / "second").mkdir()
    second = BridgeProcess(tmp_path / "second", own_influxd, "tick", endpoint, journal={"dir": str(journal)})
    second.start(wait=False)
    code = second.process.wait(30)
    second.log.close()
    BridgeProcess.running.discard(second)
    message = (tmp_path / "second" / "bridge.log").read_text()
    assert code != 0 and f"pid {first.process.pid}" in message and "station-bridge" in message, message
    assert listing() == before, "the refused bridge touched no file"
    assert first.stop() == 0  # SIGTERM flushes what it holds
    assert own_influxd.count("tick", "ticks") == sent == 2000


def test_a_segment_unreadable_while_running_is_counted_and_delivery_goes_on(tmp_path, own_influxd, endpoint):
    """Tester's fault: a writer that found its oldest segment gone looped on FileNotFoundError
    forever (0 delivered, /healthz 200)."""
    own_influxd.stop()
    bridge = BridgeProcess(tmp_path, own_influxd, "tick", endpoint).start()
    sent = publish(endpoint, "kraken_tick", 3000, rate=0, duration=30)
    wait_for(lambda: len(bridge.journal_lines()) == sent, 30, "everything journaled")
    segments = sorted((tmp_path / "journal" / "local").glob("*.lp"))
    assert len(segments) >= 3
    gone = len(split_lines(scan(segments[0].read_bytes()).data()))
    damaged = len(split_lines(scan(segments[1].read_bytes()).data()))
    segments[0].unlink()  # deleted by hand ...
    segments[0].mkdir()  # ... and unreadable in its place (root ignores chmod 000)
    with open(segments[1], "r+b") as handle:  # damaged after it was loaded
        handle.seek(HEADER_BYTES + 100)
        handle.write(b"\0" * 8)
    own_influxd.start()
    wait_for(lambda: own_influxd.count("tick", "ticks") == sent - gone - damaged, 60, "the rest delivered")
    more = publish(endpoint, "kraken_tick", 500, rate=0, duration=30, start_seq=sent)  # no loop: it goes on
    wait_for(lambda: own_influxd.count("tick", "ticks") == sent - gone - damaged + more, 30, "new points delivered")
    samples = quiet_ledger(bridge)
    assert value(samples, "bridge_dropped_points_total", destination="local", reason="journal_error") == gone
    assert value(samples, "bridge_dropped_points_total", destination="local", reason="damaged") == damaged
    stored = own_influxd.count("tick", "ticks")
    assert value(samples, "bridge_written_points_total", destination="local") == stored
    assert stored == sent - gone - damaged + more
    assert bridge.healthy()
    assert (segments[0].parent / (segments[0].name + ".damaged")).is_dir()
    assert bridge.stop() == 0


def test_a_renamed_destinations_journal_is_counted_and_named_until_replayed(tmp_path, influxd, database, endpoint):
    """The attacker's case: a destination renamed (or removed) left its journal undelivered,
    the ledger open by 1000 and /healthz ok. Now its pending points are counted (dropped
    `orphaned`), /healthz names the directory until it is replayed or removed, and a SIGHUP that
    would strand pending points is refused."""
    import shutil
    import signal
    import subprocess

    import yaml
    from harness import BRIDGE, BridgeProcess, ledger_problems, quiet_ledger, wait_for
    from servers import free_port

    from station_bridge.demo import publish
    from station_bridge.metrics import value
    dead = {"name": "a", "url": f"http://127.0.0.1:{free_port()}"}
    bridge = BridgeProcess(tmp_path, influxd, database, endpoint, destination=dead).start()
    sent = publish(endpoint, "kraken_tick", 300, rate=0, duration=20)
    wait_for(lambda: bridge.value("bridge_received_messages_total", subscription="kraken") == sent, 20, "received")
    quiet_ledger(bridge, destinations=("a",), delivered=False)
    # A reload that renames the destination while its points are pending is refused.
    config = yaml.safe_load(bridge.path.read_text())
    config["destinations"][0] = {**config["destinations"][0], "name": "b", "url": influxd.url}
    bridge.path.write_text(yaml.safe_dump(config))
    bridge.process.send_signal(signal.SIGHUP)
    wait_for(lambda: bridge.value("bridge_reloads_total", result="refused") == 1, 10, "the reload refused")
    assert bridge.alive and bridge.value("bridge_pending_points", destination="a") == sent
    assert bridge.stop() == 0
    # A restart is the operator's explicit choice: the journal of `a` is counted and named.
    restarted = BridgeProcess(tmp_path, influxd, database, endpoint, destination={"name": "b"})
    restarted.path.write_text(yaml.safe_dump({**config, "http": restarted.config["http"]}))
    restarted.start()
    samples = restarted.samples()
    assert ledger_problems(samples, ["a", "b"], ["kraken"]) == []
    assert value(samples, "bridge_dropped_points_total", destination="a", reason="orphaned") == sent
    status, body = restarted.health()
    assert status == 503 and any(p["part"] == "journal" and p["name"] == "a" for p in body["problems"]), body
    # Replayed into b, the directory removed: every point stored, /healthz ok again.
    done = subprocess.run([BRIDGE, "replay", "--config", str(restarted.path), "--destination", "b",
                           *map(str, sorted((tmp_path / "journal" / "a").glob("*.lp")))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert influxd.count(database, "ticks") == sent
    shutil.rmtree(tmp_path / "journal" / "a")
    wait_for(restarted.healthy, 10, "/healthz ok once the orphaned journal is gone")
    assert restarted.stop() == 0
