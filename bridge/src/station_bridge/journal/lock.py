"""Exclusive ownership of a journal directory (see `JournalLock`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("station_bridge.journal")


class JournalLocked(RuntimeError):
    """Another process holds the journal directory."""


class JournalLock:
    """Exclusive ownership of a journal directory: a non-blocking flock on the directory itself
    (fd close-on-exec), the owner's pid and command line written in `<dir>/.lock`. Held until the
    process exits (or `release`)."""

    NAME = ".lock"

    def __init__(self, directory: Path) -> None:
        self.path = directory / self.NAME
        directory.mkdir(parents=True, exist_ok=True)
        # The lock is taken on the directory itself (a file inside can be deleted by hand, and a
        # second bridge would then lock a new file: the tester's case); `.lock` names the owner.
        self.dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self.dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.dir_fd)
            try:
                owner = os.pread(self.fd, 4096, 0).decode("utf-8", "replace").strip()
            except OSError:
                owner = ""
            os.close(self.fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            pid, _, command = owner.partition("\n")
            raise JournalLocked(
                f"journal.dir {directory} is in use by another process (pid {pid or 'unknown'}: "
                f"{command or 'command line unknown'}); refusing to start: stop it first, or give this "
                f"bridge its own journal.dir") from None
        command = " ".join(sys.argv) or "?"
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()
            command = cmdline.replace(b"\0", b" ").decode("utf-8", "replace").strip() or command
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n{command}\n".encode(), 0)
        except OSError as exc:  # the lock holds all the same; only the message naming us is missing
            log.error("cannot write the journal lock's owner", extra={"file": str(self.path), "error": str(exc)})

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            os.close(self.dir_fd)  # closing the descriptor releases the flock
            self.fd = self.dir_fd = -1
