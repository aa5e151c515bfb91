"""Dead letters: append-only JSONL of what was refused for good, capped in size."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from pathlib import Path

from .files import DiskGuard


class DeadLetters:
    """Append-only JSONL of what was refused for good, for an operator to inspect; capped."""

    def __init__(self, path: Path, max_bytes: int = 64 << 20, guard: DiskGuard | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.guard = guard
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._handle = None
        self._size = self._records = 0
        self._torn = False  # a short write left a partial record: end it before the next one
        self.errors = 0  # records that could not be written
        self.discarded = 0  # records deleted by rotation
        self.rotations = 0
        self.last_error = ""

    def _open(self) -> None:
        self._handle = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
        self._size = self.path.stat().st_size
        if self._size and not self._records:
            with open(self.path, "rb") as handle:
                self._records = sum(b.count(b"\n") for b in iter(lambda: handle.read(1 << 20), b""))

    def _rotate(self) -> None:
        old = self.path.with_name(self.path.name + ".1")
        if old.exists():
            with open(old, "rb") as handle:
                self.discarded += sum(b.count(b"\n") for b in iter(lambda: handle.read(1 << 20), b""))
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        os.replace(self.path, old)
        self.rotations += 1
        self._records = 0
        self._open()

    def write(self, **record: object) -> bool:
        record.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            try:
                if self.guard is not None and not self.guard.room(len(data)):
                    raise OSError(errno.ENOSPC, f"free space below the reserve of {self.guard.reserve} bytes")
                if self._handle is None:
                    self._open()
                if self._size + len(data) > self.max_bytes and self._size:
                    self._rotate()
                if self._torn:
                    data = b"\n" + data
                written = self._handle.write(data) or 0
                self._size += written
                if written < len(data):
                    self._torn = True
                    raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
                self._torn = False
                self._records += 1
                self.last_error = ""
                return True
            except OSError as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._handle is not None:
                    with contextlib.suppress(OSError):
                        self._handle.close()
                    self._handle = None
                return False

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
