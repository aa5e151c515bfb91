"""The on-disk journal: segment files of line protocol, one directory per destination.

A batch that cannot be written now becomes one segment, written to a temporary name,
fsynced and renamed, so a crash (even `kill -9`) leaves whole segments or nothing.
Segments are replayed oldest first and deleted only after InfluxDB acknowledged them.
A size cap bounds the spool: a batch that does not fit is dropped, counted and logged.
Segments are plain line protocol (`*.lp`): `station-bridge replay` reads them too.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class Journal:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = 0
        for stale in self.dir.glob("*.tmp"):
            stale.unlink(missing_ok=True)  # never renamed: never acknowledged as journaled
        self._segments = sorted(self.dir.glob("*.lp"))
        self._bytes = sum(p.stat().st_size for p in self._segments)
        self._lines = sum(_count_lines(p) for p in self._segments)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def points(self) -> int:
        return self._lines

    def __len__(self) -> int:
        return len(self._segments)

    def append(self, lines: list[str]) -> bool:
        """Writes a batch as a new segment; False when the spool cap would be exceeded."""
        data = ("\n".join(lines) + "\n").encode("utf-8")
        with self._lock:
            if self._bytes + len(data) > self.max_bytes:
                return False
            self._seq += 1
            name = f"{time.time_ns():020d}-{self._seq:08d}.lp"
            tmp = self.dir / (name + ".tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            final = self.dir / name
            os.replace(tmp, final)
            self._segments.append(final)
            self._bytes += len(data)
            self._lines += len(lines)
        return True

    def oldest(self) -> tuple[Path, list[str]] | None:
        with self._lock:
            if not self._segments:
                return None
            path = self._segments[0]
        return path, path.read_text(encoding="utf-8").splitlines()

    def ack(self, path: Path) -> None:
        """InfluxDB acknowledged the segment: delete it."""
        with self._lock:
            size = path.stat().st_size
            lines = _count_lines(path)
            path.unlink()
            self._segments.remove(path)
            self._bytes -= size
            self._lines -= lines

    def replace_oldest(self, path: Path, lines: list[str]) -> None:
        """Rewrites a partly delivered segment with what is still to deliver."""
        with self._lock:
            old = path.stat().st_size
            data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
            tmp = path.with_suffix(".lp.tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            self._bytes += len(data) - old
            self._lines = sum(_count_lines(p) for p in self._segments)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


class DeadLetters:
    """Append-only JSONL of what was refused for good, with the reason, for an operator to inspect."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, **record: object) -> None:
        record.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
