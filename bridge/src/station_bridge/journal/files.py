"""Durable writes (temp file, fsync, rename, fsync the directory), disk-error reasons, and the
free-space guard shared by the journal, the intake log and the dead letters."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, data: bytes, sync: bool = True) -> None:
    """Temp file, (fsync), rename, (fsync the directory). Leaves no temp file behind on failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_dir(path.parent)


def disk_reason(exc: OSError) -> str:
    return "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "journal_error"


class DiskGuard:
    """Free space on the journal's filesystem against a reserve, without a statvfs per write."""

    def __init__(self, path: Path, reserve: int, refresh_s: float = 0.5) -> None:
        self.path = path
        self.reserve = reserve
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._free = 0
        self._at = -1e9

    def free(self) -> int:
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self.refresh_s:
                try:
                    st = os.statvfs(self.path)
                    self._free = st.f_bavail * st.f_frsize
                except OSError:
                    self._free = 0
                self._at = now
            return self._free

    def room(self, nbytes: int) -> bool:
        """True when `nbytes` can be written and the reserve still left free."""
        if self.free() - nbytes < self.reserve:
            return False
        with self._lock:
            self._free -= nbytes
        return True
