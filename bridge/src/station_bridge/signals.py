"""Every signal has a meaning (the README's "Signals").

- SIGTERM, SIGINT, SIGQUIT: graceful stop (drain the sockets, flush, journal the rest, save the
  ledger clean), exit 0.
- SIGHUP: reload. The configuration file is read and validated first; invalid: refused (logged,
  `bridge_reloads_total{result="refused"}`), the running one kept; unchanged: nothing to do
  (`result="unchanged"`); changed: the graceful stop, then `os.execv` of the same command line
  (`result="applied"`): the same PID, so systemd keeps supervising it (RELOADING=1, then READY=1).
- SIGUSR1: a state summary in the log (health, queues, journals, counters).
- SIGUSR2: every thread's stack to stderr (faulthandler), for a bridge that seems stuck.
- SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT and the real-time signals (whose default
  action would end the process undrained): ignored, logged.
Every one of these is counted in `bridge_signals_total{signal}`. The handlers only record the
signal (a stop also sets the stop event at once); the receive loop acts on it within a tick.
Left as they are: SIGPIPE and SIGXFSZ (Python ignores them: the write fails with an error the
caller counts), SIGKILL and SIGSTOP (cannot be caught), SIGABRT (systemd's watchdog, with a core),
SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGXCPU (a defect: die with a core, and
systemd restarts it: `Restart=always`), job control (SIGTSTP, SIGTTIN, SIGTTOU, SIGCONT) and those
ignored by default (SIGCHLD, SIGURG, SIGWINCH).
"""

from __future__ import annotations

import faulthandler
import signal
from collections import deque
from collections.abc import Callable

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
RELOAD = signal.SIGHUP
SUMMARY = signal.SIGUSR1
STACKS = signal.SIGUSR2
_IGNORED_NAMES = ("SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR", "SIGSTKFLT")


def ignored() -> list[int]:
    out = [getattr(signal, n) for n in _IGNORED_NAMES if hasattr(signal, n)]
    if hasattr(signal, "SIGRTMIN"):
        out += range(signal.SIGRTMIN, signal.SIGRTMAX + 1)
    return out


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        if hasattr(signal, "SIGRTMIN") and signal.SIGRTMIN <= signum <= signal.SIGRTMAX:
            return f"SIGRTMIN+{signum - signal.SIGRTMIN}"
        return f"signal {signum}"


class Signals:
    """Records the signals received; `on_stop` is called from the handler for a stop signal."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self._on_stop: Callable[[], None] | None = None
        self.stop_requested = False
        self._installed = False

    def install(self, on_stop: Callable[[], None] | None = None) -> Signals:
        """Installs the handlers (main thread only); may be called again to set `on_stop`."""
        self._on_stop = on_stop
        if self._installed:
            if self.stop_requested and on_stop is not None:
                on_stop()
            return self
        self._installed = True
        for signum in (*STOP, RELOAD, SUMMARY, STACKS, *ignored()):
            try:
                signal.signal(signum, self._handler)
            except (OSError, ValueError):  # a real-time signal the C library keeps for itself
                continue
        # SIGUSR2: the stacks are written by faulthandler in C (even while the main thread is
        # stuck in C code), then the Python handler above records and counts it.
        faulthandler.register(STACKS, all_threads=True, chain=True)
        if self.stop_requested and on_stop is not None:
            on_stop()
        return self

    def _handler(self, signum: int, _frame: object) -> None:
        self.pending.append(signum)
        if signum in STOP:
            self.stop_requested = True
            if self._on_stop is not None:
                self._on_stop()

    def take(self) -> list[int]:
        out = []
        while self.pending:
            out.append(self.pending.popleft())
        return out
