"""Framed, checksummed records: the one on-disk format of the intake log (`*.wal`) and of journal
segments (`*.lp`), so adopting an intake log stays a rename.

A record is one appended chunk (one write(2)):

    magic  4 bytes   b"\\xffSBJ" (0xff never occurs in UTF-8 line protocol)
    length u32 LE    payload bytes (1 .. MAX_PAYLOAD)
    count  u32 LE    lines in the payload (1 .. length)
    hcrc   u32 LE    zlib.crc32 of magic+length+count: a verified header makes the count knowable
    crc    u32 LE    zlib.crc32 of the 16 header bytes before it and of the payload
    payload          the chunk's line protocol, each line ending in a newline

`scan` verifies every record. Whatever does not verify (bad magic, impossible length or count,
either checksum wrong, cut anywhere in the header or payload, zeroed pages, bit flips: one case)
is a `Damage`: skipped, the reader resynchronises on the next offset where the magic starts a
record that verifies, and its points are known when its header verified (else `count` is None).
Only verified payload bytes are ever returned.

Files written before this format (plain line protocol, no magic) are read once as `legacy`: a
file is legacy when it holds neither the magic nor a NUL byte (every framed header holds NULs:
the count's top byte). A legacy file's torn last line is damage of unknown count; a legacy file
with a NUL (a zeroed page) is read as framed, that is as damage: nothing of it is sent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

try:  # ISA-L's CRC-32: zlib's checksum (the same values), about a ninth of its CPU per byte
    from isal.isal_zlib import crc32
except ImportError:  # `isal` is a dependency; zlib where it cannot be imported
    from zlib import crc32

from ..lineproto import complete_prefix, count_lines

MAGIC = b"\xffSBJ"
_HEAD = struct.Struct("<4sIII")  # magic, length, count, hcrc
HEADER = struct.Struct("<4sIIII")  # ... crc
HEADER_BYTES = HEADER.size  # 20
MAX_PAYLOAD = 1 << 30


def header(payload: bytes, count: int) -> bytes:
    """The HEADER_BYTES before `payload` (`count` lines) in its record: the record is
    `header(payload, count) + payload` (written as one writev(2) of both by the intake log)."""
    if not 0 < count <= len(payload) <= MAX_PAYLOAD:
        raise ValueError(f"a record holds 1 .. {MAX_PAYLOAD} bytes and at least one line each way "
                         f"(got {len(payload)} bytes, {count} lines)")
    head = struct.pack("<4sII", MAGIC, len(payload), count)
    head += struct.pack("<I", crc32(head))
    return head + struct.pack("<I", crc32(payload, crc32(head)))


def frame(payload: bytes, count: int) -> bytes:
    """One record holding `payload` (`count` lines)."""
    return header(payload, count) + payload


@dataclass(slots=True)
class Record:
    offset: int  # of its header in the file
    count: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + HEADER_BYTES + len(self.payload)


@dataclass(slots=True)
class Damage:
    offset: int
    length: int  # bytes skipped
    count: int | None  # its points when its header verified, else None (unknowable)


@dataclass(slots=True)
class Scan:
    records: list[Record] = field(default_factory=list)
    damage: list[Damage] = field(default_factory=list)
    legacy: bool = False

    @property
    def points(self) -> int:
        return sum(r.count for r in self.records)

    @property
    def damaged_points(self) -> int:
        """Points of the damaged records whose count is known."""
        return sum(d.count or 0 for d in self.damage)

    @property
    def unknown(self) -> int:
        """Damaged stretches of unknowable count."""
        return sum(1 for d in self.damage if d.count is None)

    def data(self) -> bytes:
        return b"".join(r.payload for r in self.records)


def _header(data: bytes, pos: int) -> tuple[int, int] | None:
    """(length, count) when a whole header at `pos` verifies its own checksum and is possible."""
    if pos + HEADER_BYTES > len(data) or data[pos:pos + 4] != MAGIC:
        return None
    _, length, count, hcrc, _ = HEADER.unpack_from(data, pos)
    if crc32(data[pos:pos + 12]) != hcrc or not 0 < count <= length <= MAX_PAYLOAD:
        return None
    return length, count


def record_at(data: bytes, pos: int) -> Record | None:
    """The record at `pos` if it verifies entirely."""
    found = _header(data, pos)
    if found is None:
        return None
    length, count = found
    end = pos + HEADER_BYTES + length
    if end > len(data):
        return None
    crc = struct.unpack_from("<I", data, pos + 16)[0]
    payload = data[pos + HEADER_BYTES:end]
    if crc32(payload, crc32(data[pos:pos + 16])) != crc or not payload.endswith(b"\n"):
        return None
    return Record(pos, count, payload)


def _resync(data: bytes, start: int) -> int:
    """The next offset from `start` where a record verifies (len(data) when none does)."""
    pos = data.find(MAGIC, start)
    while pos >= 0:
        if record_at(data, pos) is not None:
            return pos
        pos = data.find(MAGIC, pos + 1)
    return len(data)


def _damaged(data: bytes, pos: int, end: int) -> list[Damage]:
    """The stretch [pos, end) holds no verified record: its damaged records, counted where a
    header verifies."""
    out: list[Damage] = []
    while pos < end:
        found = _header(data, pos)
        if found is not None:
            stop = min(end, pos + HEADER_BYTES + found[0])
            out.append(Damage(pos, stop - pos, found[1]))
            pos = stop
            continue
        nxt = pos + 1
        while True:  # the next header that verifies, within the stretch
            nxt = data.find(MAGIC, nxt, end)
            if nxt < 0 or _header(data, nxt) is not None:
                break
            nxt += 1
        stop = end if nxt < 0 else nxt
        out.append(Damage(pos, stop - pos, None))
        pos = stop
    return out


def is_legacy(data: bytes) -> bool:
    return bool(data) and MAGIC not in data and b"\0" not in data


def scan(data: bytes) -> Scan:
    """Every verified record of a file's bytes, and every damaged stretch (see the module)."""
    if is_legacy(data):
        end = complete_prefix(data)
        out = Scan(legacy=True)
        if end:
            out.records.append(Record(0, count_lines(data[:end]), data[:end]))
        if end < len(data):
            out.damage.append(Damage(end, len(data) - end, None))
        return out
    out = Scan()
    pos, size = 0, len(data)
    while pos < size:
        record = record_at(data, pos)
        if record is not None:
            out.records.append(record)
            pos = record.end
            continue
        nxt = _resync(data, pos + 1)
        out.damage += _damaged(data, pos, nxt)
        pos = nxt
    return out


def verify(data: bytes, offset: int, count: int) -> Record | None:
    """The record expected at `offset` with `count` lines, if it still verifies there."""
    if offset == 0 and is_legacy(data):
        end = complete_prefix(data)
        return Record(0, count, data[:end]) if end and count_lines(data[:end]) == count else None
    record = record_at(data, offset)
    return record if record is not None and record.count == count else None
