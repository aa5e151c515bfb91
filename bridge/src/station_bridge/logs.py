"""Structured logs: one JSON object per line on stdout, which journald stores as is."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


SUMMARY_S = 10.0  # a reason's suppressed lines are summarized at most this often (and at the stop)


class RateLimitedLog:
    """At most `per_second` log lines per reason; the rest are counted (`suppressed`) and summed
    up in one line per reason every SUMMARY_S (`summarize`, from housekeeping and at the stop):
    the first occurrence is always logged, a flood never (one dropped batch a line was 50,000
    lines in one run with the journal full). Thread-safe: the writer threads log through it too."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self._windows: dict[str, tuple[float, int]] = {}
        self.suppressed: dict[str, int] = {}  # per reason, since the last summary
        self._last_summary = time.monotonic()
        self._lock = threading.Lock()

    def allow(self, reason: str) -> bool:
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(reason, (now, 0))
            if now - start >= 1.0:
                start, count = now, 0
            self._windows[reason] = (start, count + 1)
            if count < self.per_second:
                return True
            self.suppressed[reason] = self.suppressed.get(reason, 0) + 1
            return False

    def warn(self, reason: str, message: str, **extra: object) -> None:
        if self.allow(reason):
            logging.getLogger("station_bridge").warning(message, extra={"reason": reason, **extra})

    def error(self, reason: str, message: str, key: str | None = None, logger: logging.Logger | None = None,
              **extra: object) -> None:
        """`key`: the rate limit's own key when `reason` is shared (per destination); `logger`:
        the caller's (default station_bridge)."""
        if self.allow(key or reason):
            (logger or logging.getLogger("station_bridge")).error(message, extra={"reason": reason, **extra})

    def summarize(self, force: bool = False) -> None:
        """One line per reason with the lines suppressed since the last summary (every SUMMARY_S)."""
        now = time.monotonic()
        with self._lock:
            if not self.suppressed or (not force and now - self._last_summary < SUMMARY_S):
                return
            taken, self.suppressed = self.suppressed, {}
            since, self._last_summary = self._last_summary, now
        for reason, n in sorted(taken.items()):
            logging.getLogger("station_bridge").warning("log lines suppressed by the rate limit", extra={
                "reason": reason, "suppressed": n, "seconds": round(now - since, 1)})
