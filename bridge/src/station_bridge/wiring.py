"""The wiring: every component of a running bridge, built from one Config.

`Parts(config)` takes journal.dir (its lock), reads the ledger back and reconciles it with each
destination's journal, names the journals of destinations no longer configured (orphaned), and
builds the destinations (sinks.py), the uniqueness window (window.py), the cache, the
subscriptions (sources.py, pipeline.Subscription), the receive path (pipeline.Pipeline) and the
receive threads (receivers.py). Nothing here runs until `start`. A changed configuration is never
rewired in place: SIGHUP (reload.py) stops this bridge and cli re-executes it, which builds new
Parts from the new file.
"""

from __future__ import annotations

import logging
import threading
import time

import zmq

from .cache import LatestCache
from .config import Config
from .health import SystemdNotifier
from .journal import DeadLetters, DiskGuard, Intake, Journal, JournalLock
from .ledger import Ledger
from .mapping import Uniqueness
from .metrics import Metrics
from .pipeline import Pipeline, RateLimitedLog, Subscription
from .receivers import Receivers, threads_wanted, usable_cpus
from .sinks import InfluxSink
from .window import RESCAN_MAX_BYTES, WindowStore

log = logging.getLogger("station_bridge")


class Parts:
    """The components of one configuration, and the ledger's saving thread."""

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.budget = config.budget()  # memory.py: what libzmq's and the destinations' queues may hold
        self.started = time.monotonic()
        # Ownership of journal.dir before anything in it is read, adopted or removed (JournalLocked).
        self.journal_lock = JournalLock(config.journal_dir)
        config.dead_letter_dir.mkdir(parents=True, exist_ok=True)
        self.guard = DiskGuard(config.journal_dir, config.journal_min_free_bytes)
        dead_guard = DiskGuard(config.dead_letter_dir, config.journal_min_free_bytes)
        self.ledger = Ledger(config.journal_dir / "ledger.json", self.metrics)
        had_ledger = self.ledger.load()
        self.dead_input = DeadLetters(config.dead_letter_dir / "input.jsonl", config.dead_letter_max_bytes, dead_guard)
        self.dead_record_max = min(config.dead_letter_max_record_bytes, config.dead_letter_max_bytes)
        self.rate_log = RateLimitedLog(config.log_rate_per_s)  # shared by the pipeline and the destinations
        self.sinks: list[InfluxSink] = []
        for d in config.destinations:
            journal = Journal(config.journal_dir / d.name, config.journal_max_bytes, self.guard)
            intake = Intake(config.journal_dir / d.name, guard=self.guard) if config.journal_write_ahead else None
            dead = DeadLetters(config.dead_letter_dir / f"{d.name}.jsonl", config.dead_letter_max_bytes, dead_guard)
            self.sinks.append(InfluxSink(d, journal, dead, self.metrics, intake, config.health,
                                         before_delete=self._save_ledger_now, rate_log=self.rate_log,
                                         queue_max_bytes=config.queue_max_bytes(d, self.budget)))
            recovered, lost = self.ledger.reconcile(d.name, journal.points, journal.damage)
            if recovered or lost or journal.points:
                log.warning("ledger reconciled with the journal", extra={
                    "destination": d.name, "journal_points": journal.points, "adopted": journal.adopted,
                    "damaged_records": journal.damage.records,
                    "recovered": recovered, "lost_in_crash": lost, "ledger": had_ledger})
        self.orphans = self._orphaned_journals(config)
        # The reconciled counters at once (a crash now must not reconcile them a second time),
        # and the ledger's spare allocated while the disk may still have room.
        self.ledger.save(sync=True)
        self.unique = Uniqueness(config.uniqueness.window, config.uniqueness.max_series)
        # The window survives restarts (window.py): saved with the ledger, read back with the disk's points.
        self.window = WindowStore(config.journal_dir / "uniqueness.bin", self.unique, self.metrics)
        self.window.load(p for sink in self.sinks for p in sink.journal.newest_payloads(RESCAN_MAX_BYTES))
        self.ledger.before_save = self.window.save
        self.cache = LatestCache(config.cache, self.metrics) if config.cache else None
        self.context = zmq.Context()
        self.subscriptions = [Subscription(s, config, self.context, self.unique) for s in config.subscriptions]
        for sub in self.subscriptions:
            sub.accelerate(config.fast_path)
        log.info("fast path", extra={"fast_path": config.fast_path,
                                     "subscriptions": {s.name: s.fast_path for s in self.subscriptions}})
        # The receive path (pipeline.py): decode, map, encode, commit, hand to every destination.
        self.pipeline = Pipeline(self.sinks, self.metrics, self.cache, self.dead_input, self.dead_record_max,
                                 self.rate_log)
        # receivers.py: with two or more compiled subscriptions (and `auto`: more than two CPUs), a
        # receive thread each (C's part of a batch without the GIL); `lock` serialises the rest,
        # the main loop holds it but in its poll.
        self.lock = threading.RLock()
        threaded = [s for s in self.subscriptions if s.accelerator is not None]
        self.cpus = usable_cpus()
        self.receivers = Receivers(threaded, self.pipeline, self.lock, self.metrics.inc) \
            if threads_wanted(config.receive_threads, len(threaded), self.cpus) else None
        self.notifier = SystemdNotifier()
        self._ledger_stop = threading.Event()

    def start(self) -> None:
        """The destinations' writers, the cache, the receive threads and the ledger's saving thread."""
        for sink in self.sinks:
            sink.start()
        if self.cache is not None:
            self.cache.start()
        if self.receivers is not None:
            self.receivers.start()
            log.info("receive threads", extra={"subscriptions": [s.name for s in self.receivers.subs],
                                               "receive_threads": self.config.receive_threads, "cpus": self.cpus})
        else:
            log.info("one receive loop", extra={"receive_threads": self.config.receive_threads, "cpus": self.cpus,
                                                "compiled": sum(s.accelerator is not None for s in self.subscriptions)})
        threading.Thread(target=self._ledger_loop, name="ledger", daemon=True).start()

    def save_ledger_finally(self) -> None:
        """The stop's last save (clean: the next start reconciles nothing); the saving thread ends."""
        self._ledger_stop.set()
        self.ledger.save(clean=True, sync=True)

    def _save_ledger_now(self) -> None:
        self.ledger.save()

    def _ledger_loop(self) -> None:
        while not self._ledger_stop.wait(self.config.ledger_interval):
            self.ledger.save(sync=True)

    def _orphaned_journals(self, config: Config) -> list[tuple[str, int, str]]:
        """Journal directories of destinations no longer configured (renamed or removed): their
        points are never delivered by this configuration. What the ledger still had pending for
        such a destination is counted dropped (`orphaned`), so its equation closes, and /healthz
        names the directory until it is emptied (`station-bridge replay`) or removed."""
        names = {d.name for d in config.destinations}
        found = []
        for directory in sorted(p for p in config.journal_dir.iterdir() if p.is_dir() and p.name not in names):
            try:
                files = [*directory.glob("*.lp"), *directory.glob(f"*{Intake.SUFFIX}")]
            except OSError:
                continue
            pending = round(self.ledger.pending(directory.name))
            if not files and pending <= 0:
                continue
            on_disk = sum(f.stat().st_size for f in files if f.exists())
            if pending > 0:
                self.metrics.inc("bridge_dropped_points_total", pending, destination=directory.name, reason="orphaned")
            why = (f"destination {directory.name!r} is not in the configuration: {len(files)} journal files "
                   f"({on_disk} bytes) in {directory} are never delivered; deliver them with `station-bridge "
                   f"replay --config <a configuration naming it> {directory}/*.lp`, or remove the directory")
            log.error("journal of a destination no longer configured", extra={
                "destination": directory.name, "dir": str(directory), "files": len(files), "bytes": on_disk,
                "pending_counted_orphaned": max(0, pending)})
            found.append((directory.name, pending, why))
        return found
