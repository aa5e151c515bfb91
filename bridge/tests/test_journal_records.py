"""The journal's framed records (records.py) and what reads them (journal.Journal, replay), on
real files: every byte offset of a record cut, every bit of it flipped, 4 KiB pages zeroed. The
oracle is independent of the reader: the records the test framed itself, and which of their
bytes the damage changed."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from station_bridge.journal import Chunk, Intake, Journal, JournalLock, JournalLocked
from station_bridge.journal.records import HEADER_BYTES, frame, scan
from station_bridge.ledger import Ledger
from station_bridge.lineproto import LineError, format_field_value, format_line, split_lines
from station_bridge.metrics import Metrics

HOSTILE = [" ", ",", "=", '"', "\\", "\n", "\t", "é", "€", "😀", "\u0301", "a", "Z", "1", "#", "'"]
INT64 = [2**63 - 1, -(2**63), 0, -1, 1]


def hostile_text(rng: random.Random, size: int = 8, newlines: bool = True) -> str:
    chars = HOSTILE if newlines else [c for c in HOSTILE if c != "\n"]
    return "".join(rng.choice(chars) for _ in range(rng.randint(1, size)))


def hostile_lines(rng: random.Random, n: int, t0: int) -> list[str]:
    """`n` valid lines with escapes, unicode, newlines inside string fields, int64 edges; each
    its own series and time (t0 + i), so every line is one point InfluxDB keeps."""
    lines: list[str] = []
    while len(lines) < n:
        i = len(lines)
        tags = [("k", f"{i:05d}"), ("t", "x" + hostile_text(rng, newlines=False) + "z")]
        fields = [("s", format_field_value(hostile_text(rng, 12), "string")),
                  ("i", format_field_value(rng.choice(INT64), "integer")),
                  ("f", format_field_value(rng.uniform(-1e300, 1e300), "float")),
                  ("b", format_field_value(rng.random() < 0.5, "boolean"))]
        try:
            lines.append(format_line("m" + hostile_text(rng, 4, newlines=False) + "z", tags, fields, t0 + i))
        except LineError:
            continue  # one InfluxDB would not store unchanged: the bridge never formats it either
    return lines


def chunks(seed: int, records: int, per_record: int, t0: int = 1_700_000_000 * 10**9) -> list[Chunk]:
    rng = random.Random(seed)
    return [Chunk.of(hostile_lines(rng, per_record, t0 + r * per_record)) for r in range(records)]


def framed(cs: list[Chunk]) -> tuple[bytes, list[tuple[int, int]]]:
    """The bytes of a file of these records and each record's (start, end)."""
    data, spans = b"", []
    for c in cs:
        blob = frame(c.data, c.count)
        spans.append((len(data), len(data) + len(blob)))
        data += blob
    return data, spans


def expected(original: bytes, damaged: bytes, cs: list[Chunk], spans: list[tuple[int, int]]) -> list[int]:
    """Indexes of the records whose bytes the damage left exactly as they were."""
    return [i for i, (a, b) in enumerate(spans) if damaged[a:b] == original[a:b]]


def test_the_intake_log_writes_each_chunk_as_the_format_defines_its_record(tmp_path: Path):
    # The format pinned independently of records.py's own code: magic, length, count, zlib's
    # CRC-32 of those, zlib's CRC-32 of the 16 header bytes and the payload, the payload (the
    # checksum is computed by ISA-L where it is installed, written header and chunk in one writev).
    import struct
    import zlib
    cs = chunks(7, 5, 40)
    log = Intake(tmp_path / "wal")
    for c in cs:
        assert log.append(c)
    log.close()
    want = b""
    for c in cs:
        head = b"\xffSBJ" + struct.pack("<II", len(c.data), c.count)
        head += struct.pack("<I", zlib.crc32(head))
        want += head + struct.pack("<I", zlib.crc32(head + c.data)) + c.data
    files = sorted((tmp_path / "wal").glob("*.wal"))
    assert len(files) == 1
    assert files[0].read_bytes() == want
    assert [r.payload for r in scan(want).records] == [c.data for c in cs]


def test_a_record_cut_at_every_byte_offset_reads_back_every_whole_record_and_nothing_else():
    cs = chunks(1, 3, 4)
    data, spans = framed(cs)
    start, end = spans[1]
    for cut in range(start, end + 1):
        damaged = data[:cut]
        keep = [0, 1] if cut == end else [0]
        found = scan(damaged)
        assert [r.payload for r in found.records] == [cs[i].data for i in keep], cut
        if start < cut < end:
            assert len(found.damage) == 1 and found.damage[0].offset == start, cut
            # its points are known once its header is whole
            assert found.damage[0].count == (cs[1].count if cut >= start + HEADER_BYTES else None), cut
        else:
            assert not found.damage, cut


def test_every_bit_flipped_in_a_record_damages_that_record_alone():
    cs = chunks(2, 3, 3)
    data, spans = framed(cs)
    start, end = spans[1]
    for offset in range(start, end):
        damaged = bytearray(data)
        damaged[offset] ^= 1 << (offset % 8)
        found = scan(bytes(damaged))
        assert [r.payload for r in found.records] == [cs[0].data, cs[2].data], offset
        assert len(found.damage) == 1 and found.damage[0].offset == start, offset
        if offset >= start + 16:  # header checksum intact: the damaged record's points are known
            assert found.damage[0].count == cs[1].count


def test_zeroed_pages_anywhere_never_yield_a_chimera():
    cs = chunks(3, 30, 6)
    data, spans = framed(cs)
    assert len(data) > 3 * 4096
    for page in range(0, len(data), 512):
        damaged = bytearray(data)
        damaged[page:page + 4096] = bytes(len(damaged[page:page + 4096]))
        keep = expected(data, bytes(damaged), cs, spans)
        found = scan(bytes(damaged))
        assert [r.payload for r in found.records] == [cs[i].data for i in keep], page
        assert found.damage, page
        assert all(b"\0" not in r.payload for r in found.records)


def test_legacy_unframed_files_are_read_once_with_their_torn_tail_cut():
    lines = b'm v=1i 1\nm s="two\nlines" 2\nm v=3i 3\n'
    found = scan(lines + b'm s="tor')
    assert found.legacy and found.data() == lines and found.points == 3
    assert len(found.damage) == 1 and found.damage[0].count is None
    zeroed = scan(lines[:9] + bytes(8) + lines[17:])  # a zeroed page in an old file: nothing of it is trusted
    assert not zeroed.legacy and not zeroed.records


def test_journal_counts_from_verified_records_never_from_the_name(tmp_path: Path):
    """Tester's fault: a segment cut inside a record replayed the torn line and its name's count
    (`-n<count>`) was trusted."""
    journal = Journal(tmp_path, max_bytes=1 << 30)
    cs = chunks(4, 3, 5)
    for c in cs:
        assert journal.append(c) is None
    first = sorted(tmp_path.glob("*.lp"))[0]
    data = first.read_bytes()
    os.truncate(first, len(data) - 7)  # cut inside its payload
    again = Journal(tmp_path, max_bytes=1 << 30)
    assert again.points == 10 and again.damage.records == 1 and again.damage.points == 5
    assert again.damage.seen
    _, chunk = again.oldest()
    assert chunk.count == 5 and chunk.data == cs[1].data
    assert (tmp_path / (first.name + ".damaged")).exists(), "nothing verified in it: set aside at start"
    # A segment of several records, one damaged: delivered in part, its damage counted once (a
    # later start finds it counted already).
    data, spans = framed(cs)
    flipped = bytearray(data)
    flipped[spans[2][0] + HEADER_BYTES + 2] ^= 4
    (tmp_path / "00000000000000000001-00000001-n999.lp").write_bytes(bytes(flipped))
    third = Journal(tmp_path, max_bytes=1 << 30)
    assert third.points == 10 + 10 and third.damage.records == 1 and third.damage.points == 5
    fourth = Journal(tmp_path, max_bytes=1 << 30)
    assert fourth.points == 20 and fourth.damage.records == 0 and fourth.damage.points == 0 and fourth.damage.seen
    _, chunk = fourth.oldest()
    assert chunk.data == cs[0].data + cs[1].data


def test_intake_log_with_a_zeroed_page_is_adopted_by_rename_and_only_verified_records_delivered(tmp_path: Path):
    """Tester's fault: a zeroed 4 KiB page inside an adopted intake log replayed a chimera."""
    intake = Intake(tmp_path)
    cs = chunks(5, 10, 8)
    for c in cs:
        assert intake.append(c)
    intake.close()
    wal = next(tmp_path.glob("*.wal"))
    original = wal.read_bytes()
    with open(wal, "r+b") as handle:
        handle.seek(4096)
        handle.write(bytes(4096))
    inode = wal.stat().st_ino
    journal = Journal(tmp_path, max_bytes=1 << 30)
    segment, chunk = journal.oldest()
    assert segment.path.stat().st_ino == inode, "adopted by rename"
    _, spans = framed(cs)
    keep = expected(original, segment.path.read_bytes(), cs, spans)
    assert 0 < len(keep) < len(cs)
    assert chunk.data == b"".join(cs[i].data for i in keep) and journal.points == chunk.count
    assert b"\0" not in chunk.data


def test_ledger_reconciliation_counts_what_damage_took(tmp_path: Path):
    """accepted == written + dropped + pending after a start that found damage: known points and
    the rest of the shortfall counted dropped with reason `damaged`."""
    metrics = Metrics()
    metrics.inc("bridge_accepted_points_total", 100, destination="local")
    metrics.inc("bridge_written_points_total", 30, destination="local")
    ledger = Ledger(tmp_path / "ledger.json", metrics)
    journal_dir = tmp_path / "local"
    journal = Journal(journal_dir, max_bytes=1 << 30)
    for c in chunks(6, 7, 10):  # 70 pending
        journal.append(c)
    segments = sorted(journal_dir.glob("*.lp"))
    os.truncate(segments[0], 30)  # header whole: 10 known
    with open(segments[1], "r+b") as handle:
        handle.write(bytes(8))  # header gone: points unknown, the ledger knows them
    again = Journal(journal_dir, max_bytes=1 << 30)
    recovered, lost = ledger.reconcile("local", again.points, again.damage)
    assert (again.points, recovered, lost) == (50, 0, 20)
    assert metrics.get("bridge_dropped_points_total", destination="local", reason="damaged") == 20
    assert metrics.get("bridge_journal_damaged_records_total", destination="local") == 2
    assert ledger.pending("local") == 50


def test_a_segment_unreadable_while_running_is_set_aside_and_counted(tmp_path: Path):
    """Tester's fault: a writer that found its oldest segment gone looped on FileNotFoundError."""
    journal = Journal(tmp_path, max_bytes=1 << 30)
    lost: list[tuple[int, str, int]] = []
    journal.on_loss = lambda points, reason, records: lost.append((points, reason, records))
    cs = chunks(7, 4, 3)
    for c in cs:
        journal.append(c)
    paths = sorted(tmp_path.glob("*.lp"))
    paths[0].unlink()  # deleted by hand
    paths[1].unlink()
    paths[1].mkdir()  # EISDIR: unreadable, and root ignores chmod 000
    with open(paths[2], "r+b") as handle:  # damaged after it was loaded
        handle.seek(HEADER_BYTES + 3)
        handle.write(b"\0")
    _, chunk = journal.oldest()
    assert chunk.data == cs[3].data and journal.points == 3 and len(journal) == 1
    assert lost == [(3, "journal_error", 0), (3, "journal_error", 0), (3, "damaged", 1)]
    assert (tmp_path / (paths[1].name + ".damaged")).is_dir()
    assert (tmp_path / (paths[2].name + ".damaged")).exists() and not paths[2].exists()


def test_a_second_owner_of_the_journal_dir_is_refused_with_the_holders_pid(tmp_path: Path):
    lock = JournalLock(tmp_path)
    holder = (tmp_path / ".lock").read_text().splitlines()
    assert holder[0] == str(os.getpid())
    probe = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from station_bridge.journal import JournalLock; JournalLock(Path(sys.argv[1]))",
                            str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0 and f"pid {os.getpid()}" in probe.stderr and "pytest" in probe.stderr
    with pytest.raises(JournalLocked):
        JournalLock(tmp_path)  # another open file description in this process: refused as well
    (tmp_path / ".lock").unlink()  # the tester deleted the lock file by hand: the directory stays locked
    with pytest.raises(JournalLocked):
        JournalLock(tmp_path)
    lock.release()
    JournalLock(tmp_path).release()


def test_replay_sends_only_verified_records(tmp_path: Path):
    from station_bridge.replay import journal_file
    cs = chunks(8, 3, 4)
    data, spans = framed(cs)
    damaged = bytearray(data)
    damaged[spans[1][0] + HEADER_BYTES + 5] ^= 0x10
    path = tmp_path / "x.lp"
    path.write_bytes(bytes(damaged))
    lines, found = journal_file(path)
    assert lines == [x.rstrip(b"\n") for c in (cs[0], cs[2]) for x in split_lines(c.data)]
    assert len(found.damage) == 1 and found.damaged_points == 4
