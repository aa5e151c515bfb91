"""The running bridge: a facade that owns its parts and composes them.

The stages themselves live in their modules: sources (sockets) -> pipeline (decode, map, encode,
commit the burst's counters, hand to every destination and the cache; pipeline.py) -> sinks
(writer threads, journal) and cache. Around them, one owner per concern:
- wiring.py (`Parts`): every component built from the Config, the ledger reconciled with the
  journals, orphaned journals named, the ledger's saving thread;
- loop.py (`ReceiveLoop`): the one receive loop (this thread) polls every subscription's socket and
  hands each burst to the pipeline, contains a receive's defect, and runs the housekeeping every
  200 ms (the systemd watchdog, dropped connections re-opened, writer threads supervised);
- stop.py (`Stop`): a stop's request and deadline, the drain, the flush, the final ledger save;
- reload.py: SIGHUP's verdict on the configuration file read again;
- selfreport.py (`SelfReport`): the snapshot /healthz evaluates (health.py), the gauges, the
  SIGUSR1 summary, the self-metrics points.
A subscription whose shape the compiled path covers (fastpath.py: the extension is built, the
mapping is flat, no binning, `fast_path: auto`) receives, decodes, maps and formats its bursts in
C, committed by the same bookkeeping. Each stage contains its own failures and turns them into
counted, named outcomes:
- a message that cannot be decoded or mapped is rejected with a reason (per subscription:
  received == mapped + rejected), dead-lettered to `input.jsonl`, and never touches the others;
- a destination's writer, the journal, the dead letters and the cache never raise into the
  receive loop; a writer thread that dies anyway is restarted (`Sink.ensure_alive`).
Signals (signals.py), acted on here between two poll rounds: SIGTERM/SIGINT/SIGQUIT stop
gracefully, SIGHUP reloads (validated; a changed configuration: the graceful stop, then cli
re-executes the same command line), SIGUSR1 logs a state summary, SIGUSR2 dumps the threads'
stacks, the rest whose default would kill: ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .config import Config
from .loop import ReceiveLoop
from .metrics import Metrics, serve
from .reload import reload
from .selfreport import SelfReport
from .signals import RELOAD, STACKS, STOP, SUMMARY, Signals
from .signals import name as signal_name
from .stop import Stop
from .wiring import Parts

log = logging.getLogger("station_bridge")


class Bridge:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.parts = Parts(config, metrics)  # wiring.py: every component, nothing running yet
        self.metrics = self.parts.metrics
        self.loop = ReceiveLoop(self.parts)
        self.stop = Stop(self.parts)
        self.report = SelfReport(self.parts, lambda: self.stop.stopping)
        self.signals = Signals()  # installed by run (cli installs it before the start)
        self.reexec = False  # SIGHUP with a changed configuration: cli re-executes after the stop
        self.http = None

    def health(self, max_age: float = 0.0) -> dict:
        """/healthz's document (selfreport.py); `max_age` lets the gauges of one /metrics render share one."""
        return self.report.health(max_age)

    def run(self, ready: Callable[[], None] | None = None, signals: Signals | None = None) -> int:
        self.signals = (signals or Signals()).install(self.stop.request)
        self.parts.start()
        self.loop.register()
        # /metrics and /healthz answer once the receive side is set up and has said how (a test or
        # an operator that sees /metrics answer finds `receive threads` or `one receive loop` logged).
        if self.config.http_listen:
            self.http = serve(self.metrics, self.config.http_listen, self.health,
                              self.config.http_max_connections, self.config.http_timeout)
        log.info("bridge running", extra={"subscriptions": [s.name for s in self.parts.subscriptions],
                                          "destinations": [s.name for s in self.parts.sinks]})
        self.parts.notifier.ready()
        if ready:
            ready()
        self.report.start()
        self.loop.run(self.stop.event, self.signals, self.handle_signals, self.report.tick)
        return self.shutdown()

    def handle_signals(self) -> None:
        """Acts on the signals received since the last call (from the receive loop)."""
        for signum in self.signals.take():
            sig = signal_name(signum)
            self.metrics.inc("bridge_signals_total", 1, signal=sig)
            if signum in STOP:
                log.info("stop requested", extra={"signal": sig})
            elif signum == RELOAD:
                if self.stop.event.is_set():
                    log.info("reload ignored: the bridge is stopping", extra={"signal": sig})
                else:
                    self.reload()
            elif signum == SUMMARY:
                self.report.log_summary()
            elif signum == STACKS:
                log.info("every thread's stack written to stderr", extra={"signal": sig})
            else:
                log.warning("signal ignored", extra={"signal": sig})

    def reload(self) -> str:
        """SIGHUP (reload.py); `applied`: the graceful stop, then cli re-executes (`reexec`)."""
        result = reload(self.config, self.parts.sinks, self.metrics)
        if result == "applied":
            self.reexec = True
            self.stop.event.set()
        return result

    def shutdown(self) -> int:
        """The graceful stop (stop.py); the exit code."""
        self.stop.stopping = True
        if self.signals.pending:
            self.handle_signals()  # counted and logged; a SIGHUP now is ignored
        if self.reexec:
            self.parts.notifier.reloading()
        else:
            self.parts.notifier.stopping()
        return self.stop.shutdown(self.loop, self.http)
