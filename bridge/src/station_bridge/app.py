"""The running bridge: the wiring of its parts, the receive loop, health, signals and the stop.

The stages themselves live in their modules: sources (sockets) -> pipeline (decode, map, encode,
commit the burst's counters, hand to every destination and the cache; pipeline.py) -> sinks
(writer threads, journal) and cache. One receive loop (this thread) polls every subscription's
socket and hands each burst to the pipeline. A subscription whose shape the compiled path covers
(fastpath.py: the extension is built, the mapping is flat, no binning, `fast_path: auto`)
receives, decodes, maps and formats its bursts in C, committed by the same bookkeeping. Each
stage contains its own failures and turns them into counted, named outcomes:
- a message that cannot be decoded or mapped is rejected with a reason (per subscription:
  received == mapped + rejected), dead-lettered to `input.jsonl`, and never touches the others;
- a destination's writer, the journal, the dead letters and the cache never raise into this
  loop; a writer thread that dies anyway is restarted (`Sink.ensure_alive`);
- housekeeping every 200 ms: the systemd watchdog, dropped connections re-opened, writer
  threads supervised, self-metrics points; a ledger thread persists the counters.
Signals (signals.py): SIGTERM/SIGINT/SIGQUIT stop gracefully, SIGHUP reloads (validated; a changed
configuration: the graceful stop, then cli re-executes the same command line), SIGUSR1 logs a
state summary, SIGUSR2 dumps the threads' stacks, the rest whose default would kill: ignored.
Graceful stop (SIGTERM): receive until no socket delivered anything for DRAIN_QUIET_S (what libzmq
and the publisher held when the stop began; at most half of `shutdown_timeout` for a feed that
never pauses), flush every destination within the rest,
journal what is left, save the ledger.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import zmq

from .cache import LatestCache
from .config import Config, ConfigError, load
from .health import (
    BridgeState,
    DestinationState,
    SubscriptionState,
    SystemdNotifier,
    Thresholds,
    evaluate,
)
from .journal import DeadLetters, DiskGuard, Intake, Journal, JournalLock
from .ledger import Ledger
from .lineproto import format_line
from .mapping import Uniqueness
from .metrics import Metrics, serve
from .pipeline import Pipeline, RateLimitedLog, Subscription
from .receivers import Receivers, threads_wanted, usable_cpus
from .schedule import utc
from .signals import RELOAD, STACKS, STOP, SUMMARY, Signals
from .signals import name as signal_name
from .sinks import InfluxSink
from .sources import BURST, BURST_BYTES, close_all, receive
from .window import RESCAN_MAX_BYTES, WindowStore

log = logging.getLogger("station_bridge")

TICK_S = 0.2  # housekeeping period
DRAIN_QUIET_S = 0.2  # a drain ends when no socket delivered anything for this long (or at half the stop budget)


class Bridge:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.budget = config.budget()  # memory.py: what libzmq's and the destinations' queues may hold
        self.stopping = False
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
        self.stop_requested_at = 0.0  # monotonic; 0: no stop requested
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
        self.signals = Signals()  # installed by run (cli installs it before the start)
        self.reexec = False  # SIGHUP with a changed configuration: cli re-executes after the stop
        self._stop = threading.Event()
        self._ledger_stop = threading.Event()
        self.http = None
        self._health: tuple[float, dict] | None = None
        self._register_gauges()

    # --- gauges -------------------------------------------------------------------------------

    def _register_gauges(self) -> None:
        g = self.metrics.gauge

        def per_sink(read: Callable[[InfluxSink], float]) -> Callable[[], dict]:
            return lambda: {(("destination", s.name),): float(read(s)) for s in self.sinks}

        def per_sub(read: Callable[[Subscription], float]) -> Callable[[], dict]:
            return lambda: {(("subscription", s.name),): float(read(s)) for s in self.subscriptions}

        g("bridge_pending_points", per_sink(lambda s: s.pending))
        g("bridge_queue_points", per_sink(lambda s: s.queued))
        g("bridge_queue_bytes", per_sink(lambda s: s.queued_bytes))
        g("bridge_memory_budget_bytes", lambda: {(): float(self.budget.total)})
        g("bridge_journal_bytes", per_sink(lambda s: s.journal.bytes))
        g("bridge_journal_points", per_sink(lambda s: s.journal.points))
        g("bridge_intake_bytes", per_sink(lambda s: s.intake.bytes if s.intake is not None else 0))
        g("bridge_destination_failing_seconds", per_sink(lambda s: round(s.failing_seconds(), 3)))
        g("bridge_oldest_pending_seconds", per_sink(lambda s: round(s.oldest_pending_seconds(), 3)))
        g("bridge_sink_alive", per_sink(lambda s: s.alive))
        g("bridge_destination_pending_by_schedule", lambda: {(("destination", d),): float(v["pending_by_schedule"])
                                                             for d, v in self.health(0.1)["destinations"].items()})
        g("bridge_journal_writable", lambda: {(("destination", d),): float(v["journal_writable"])
                                              for d, v in self.health(0.1)["destinations"].items()})
        g("bridge_journal_free_bytes", lambda: {(): float(self.guard.free())})
        g("bridge_subscription_connected", per_sub(lambda s: s.source.connected))
        g("bridge_fast_path_compiled", per_sub(lambda s: s.accelerator is not None))
        g("bridge_fast_path_messages", per_sub(lambda s: s.accelerator.stats()["handled"] if s.accelerator else 0))
        g("bridge_fast_path_handed_back", per_sub(
            lambda s: s.accelerator.stats()["handed_back"] if s.accelerator else 0))
        g("bridge_last_message_age_seconds",
          per_sub(lambda s: round(time.monotonic() - s.last_message, 3) if s.last_message else -1))
        g("bridge_healthy", lambda: {(): float(self.health(0.1)["ok"])})
        g("bridge_destination_healthy", lambda: {(("destination", d),): float(v["ok"])
                                                  for d, v in self.health(0.1)["destinations"].items()})
        g("bridge_subscription_healthy", lambda: {(("subscription", n),): float(v["ok"])
                                                   for n, v in self.health(0.1)["subscriptions"].items()})
        g("bridge_subscription_rejected_share", lambda: {
            (("subscription", n),): float(v["rejected_share"] or 0.0)
            for n, v in self.health(0.1)["subscriptions"].items()})
        g("bridge_start_time_seconds", lambda: {(): float(int(self.metrics.started))})
        g("bridge_uniqueness_nudged_total", lambda: {(): float(self.unique.nudged)})
        g("bridge_uniqueness_unchecked_total", lambda: {(): float(self.unique.unchecked)})
        g("bridge_uniqueness_evicted_total", lambda: {(): float(self.unique.evicted)})
        g("bridge_uniqueness_restored_series", lambda: {(): float(self.window.restored_series)})
        if self.cache is not None:
            g("bridge_cache_queue", lambda: {(): float(self.cache.queued)})  # type: ignore[union-attr]

    def health(self, max_age: float = 0.0) -> dict:
        """/healthz's document (health.evaluate of the components' snapshot); `max_age` lets the
        gauges of one /metrics render share one."""
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        h = self.config.health
        state = evaluate(self.snapshot(), Thresholds(h.destination_grace, h.subscription_grace,
                                                     h.max_rejected_share, h.rejection_min_messages,
                                                     h.max_refused_share))
        self._health = (time.monotonic(), state)
        return state

    def snapshot(self) -> BridgeState:
        """What every component reports now, as plain data for the health model."""
        now = time.monotonic()
        free = self.guard.free()
        destinations = []
        for sink in self.sinks:
            journal, intake = sink.journal, sink.intake
            failed = max(journal.failed_at, intake.failed_at if intake is not None else 0.0)
            window_points, window_refused, window_examples = sink.recent.totals()
            destinations.append(DestinationState(
                name=sink.name, pending=sink.pending, queue=sink.queued, journal_points=journal.points,
                journal_bytes=journal.bytes, failing_s=sink.failing_seconds(), last_error=sink.last_error,
                alive=sink.alive, oldest_pending_s=sink.oldest_pending_seconds(),
                flush_interval=sink.spec.flush_interval, journal_failed_s=now - failed if failed else None,
                journal_error=journal.last_error or (intake.last_error if intake is not None else ""),
                free_bytes=free, reserve_bytes=self.guard.reserve, dead_letter_error=sink.dead.last_error,
                dead_letter_file=sink.dead.path.name, window_points=window_points,
                window_refused=window_refused, window_examples=window_examples, scheduled=sink.schedule is not None,
                live_first=sink.live_first, oldest_live_s=sink.oldest_live_seconds(), idle_s=sink.idle_seconds(),
                window_age_s=sink.window_age(), next_window=utc(opens) if (opens := sink.next_window()) else ""))
        subscriptions = []
        for sub in self.subscriptions:
            source = sub.source
            received, rejected, _ = sub.recent.totals(now)
            subscriptions.append(SubscriptionState(
                name=sub.name, endpoints=sub.spec.endpoints, require_connection=sub.spec.require_connection,
                connected=source.connected, disconnected_s=source.disconnected_for(), reconnects=source.reconnects,
                last_message_age_s=now - sub.last_message if sub.last_message else -1.0,
                running_s=now - self.started, fast_path=sub.fast_path, expected_interval=sub.spec.expected_interval,
                window_received=received, window_rejected=rejected,
                window_examples={r: sub.examples.get(r, "") for r in rejected},
                extra={"started": source.started, "start_errors": source.start_errors, "rcvhwm": sub.rcvhwm,
                       "message_bytes_seen": round(sub.message_size),
                       "handshake_failures": source.handshake_failures, "endpoints": source.describe()},
                problems=source.problems(now) + sub.memory_problems() + sub.receive_problems(now)
                + (self.receivers.problems(sub) if self.receivers is not None else []),
                last_events=source.last_events(),
                eaten_by_rules=sub.eaten_by_rules(now, self.config.health.rejection_window)))
        cache = ({"queue": self.cache.queued, "last_error": self.cache.last_error}
                 if self.cache is not None else None)
        state = BridgeState(destinations, subscriptions, stopping=self.stopping,
                           dead_letter_file=self.dead_input.path.name, dead_letter_error=self.dead_input.last_error,
                            ledger_file=str(self.ledger.path), ledger_error=self.ledger.last_error, cache=cache)
        state.orphans = [(name, why) for name, _, why in self.orphans
                         if (self.config.journal_dir / name).is_dir()
                         and any((self.config.journal_dir / name).glob("*.lp"))]
        return state

    def request_stop(self, *_: object) -> None:
        """A stop (from the signal handler too): its deadline starts now, and every receive-side
        stage consults it (`Pipeline.deadline`), including a drain already under way."""
        self._begin_stop()
        self._stop.set()

    def _begin_stop(self) -> float:
        """When the stop began (the first request); sets the receive side's deadline, half of
        shutdown_timeout from then (the rest is the destinations')."""
        if not self.stop_requested_at:
            self.stop_requested_at = time.monotonic()
        pipeline = getattr(self, "pipeline", None)
        if pipeline is not None:
            pipeline.deadline = min(pipeline.deadline, self.stop_requested_at + self.config.shutdown_timeout / 2)
        return self.stop_requested_at

    # --- signals (signals.py) -------------------------------------------------------------------

    def handle_signals(self) -> None:
        """Acts on the signals received since the last call (from the receive loop)."""
        for signum in self.signals.take():
            sig = signal_name(signum)
            self.metrics.inc("bridge_signals_total", 1, signal=sig)
            if signum in STOP:
                log.info("stop requested", extra={"signal": sig})
            elif signum == RELOAD:
                if self._stop.is_set():
                    log.info("reload ignored: the bridge is stopping", extra={"signal": sig})
                else:
                    self.reload()
            elif signum == SUMMARY:
                self.log_summary()
            elif signum == STACKS:
                log.info("every thread's stack written to stderr", extra={"signal": sig})
            else:
                log.warning("signal ignored", extra={"signal": sig})

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

    def reload(self) -> str:
        """SIGHUP: the configuration file validated (as check-config, and its directories
        created); invalid: refused, the running one kept; unchanged: nothing; changed: the
        graceful stop, then cli re-executes the same command line (`reexec`). The result."""
        try:
            new = load(self.config.source)
            for directory in (new.journal_dir, new.dead_letter_dir):
                directory.mkdir(parents=True, exist_ok=True)
            error = ""
        except ConfigError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"{exc.filename}: {exc.strerror}"
        except Exception as exc:  # a defect in validation must not stop the running bridge: refused, logged
            log.exception("reload: unexpected error validating the configuration")
            error = f"{type(exc).__name__}: {exc}"
        if not error:
            error = self._destructive(new)
        if error:
            result = "refused"
            log.error("reload refused: the configuration is invalid, the running one is kept",
                      extra={"config": self.config.source, "error": error[:1000]})
        elif new.raw == self.config.raw:
            result = "unchanged"
            log.info("reload: the configuration is unchanged, nothing to do", extra={"config": self.config.source})
        else:
            result = "applied"
            log.warning("reload: the configuration changed: draining and flushing, then re-executing",
                        extra={"config": self.config.source, "pid": os.getpid()})
            self.reexec = True
            self._stop.set()
        self.metrics.inc("bridge_reloads_total", 1, result=result)
        return result

    def _destructive(self, new: Config) -> str:
        """Why a new configuration would strand points this bridge holds ("" when it would not):
        a destination with pending points renamed or removed, or journal.dir moved while any
        destination has pending points. A restart with it is the operator's explicit choice."""
        if new.journal_dir != self.config.journal_dir:
            held = {s.name: s.pending for s in self.sinks if s.pending}
            if held:
                return (f"journal.dir changes from {self.config.journal_dir} to {new.journal_dir} while points are "
                        f"pending {held}: they would stay behind; let them deliver first, or restart to apply it")
        kept = {d.name for d in new.destinations}
        held = {s.name: s.pending for s in self.sinks if s.pending and s.name not in kept}
        if held:
            return (f"destinations {sorted(held)} would go while points are pending for them {held}: let them "
                    f"deliver first, or restart to apply it (their journals are then reported as orphaned)")
        return ""

    def log_summary(self) -> None:
        """SIGUSR1: one log line with the bridge's state."""
        state = self.health()
        m = self.metrics
        rss = 0
        try:
            with open("/proc/self/status") as status:
                rss = next((int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
        log.info("state summary", extra={
            "pid": os.getpid(), "ok": state["ok"], "problems": state["problems"],
            "destinations": {s.name: {**state["destinations"][s.name], "queue_bytes": s.queued_bytes,
                                      "queue_max_bytes": s.queue_max_bytes,
                                      "accepted": m.get("bridge_accepted_points_total", destination=s.name),
                                      "written": m.get("bridge_written_points_total", destination=s.name),
                                      "dropped": m.total("bridge_dropped_points_total", destination=s.name)}
                             for s in self.sinks},
            "subscriptions": {s.name: {**state["subscriptions"][s.name], "rcvhwm": s.rcvhwm,
                                       "received": m.get("bridge_received_messages_total", subscription=s.name)}
                              for s in self.subscriptions},
            "memory": {"rss_bytes": rss, "budget_bytes": self.budget.total, "budget_source": self.budget.source}})

    def self_report(self, now_ns: int) -> list[str]:
        """station_bridge (one point per destination) and station_bridge_feed (per subscription)."""
        spec = self.config.self_metrics
        assert spec is not None
        m = self.metrics
        received = int(m.total("bridge_received_messages_total"))
        rejected = int(m.total("bridge_rejected_messages_total"))
        health = self.health()
        healthy = "true" if health["ok"] else "false"
        base = [("instance", spec.instance)] + ([("station", self.config.station)] if self.config.station else [])
        lines = []
        for sink in self.sinks:
            d = {"destination": sink.name}
            fields = [("received", f"{received}i"), ("rejected", f"{rejected}i"),
                      ("accepted", f"{int(m.get('bridge_accepted_points_total', **d))}i"),
                      ("written", f"{int(m.get('bridge_written_points_total', **d))}i"),
                      ("dropped", f"{int(m.total('bridge_dropped_points_total', **d))}i"),
                      ("pending", f"{sink.pending}i"), ("journal_points", f"{sink.journal.points}i"),
                      ("journal_bytes", f"{sink.journal.bytes}i"),
                      ("oldest_pending_s", repr(float(round(sink.oldest_pending_seconds(), 3)))),
                      ("failing_s", repr(float(round(sink.failing_seconds(), 3)))),
                      ("started", f"{int(m.started)}i"), ("healthy", healthy),
                      ("pending_by_schedule",
                       "true" if health["destinations"][sink.name]["pending_by_schedule"] else "false")]
            lines.append(format_line(spec.measurement, [*base, ("destination", sink.name)], fields, now_ns))
        now = time.monotonic()
        for sub in self.subscriptions:
            s = sub.labels
            age = round(now - sub.last_message, 3) if sub.last_message else -1.0
            fields = [("received", f"{int(m.get('bridge_received_messages_total', **s))}i"),
                      ("rejected", f"{int(m.total('bridge_rejected_messages_total', **s))}i"),
                      ("ignored", f"{int(m.total('bridge_ignored_messages_total', **s))}i"),
                      ("points", f"{int(m.get('bridge_mapped_points_total', **s))}i"),
                      ("last_message_age_s", repr(float(age))),
                      ("connected", "true" if sub.source.connected else "false"),
                      ("healthy", "true" if health["subscriptions"][sub.name]["ok"] else "false"),
                      ("rejected_share", repr(float(health["subscriptions"][sub.name]["rejected_share"] or 0.0)))]
            lines.append(format_line(spec.feed_measurement, [*base, ("subscription", sub.name)], fields, now_ns))
        return lines

    # --- the loop -----------------------------------------------------------------------------

    def _save_ledger_now(self) -> None:
        self.ledger.save()

    def _ledger_loop(self) -> None:
        while not self._ledger_stop.wait(self.config.ledger_interval):
            self.ledger.save(sync=True)

    def housekeeping(self, now: float) -> None:
        self.notifier.watchdog()
        for sub in self.subscriptions:
            if self.receivers is None or not self.receivers.owns(sub):  # else its thread repairs it
                sub.source.repair(self.metrics.inc)
        for sink in self.sinks:
            sink.ensure_alive()
            self.pipeline.count_discarded(sink.dead)
        self.rate_log.summarize()

    def _poll(self, poller: zmq.Poller, by_socket: dict, timeout_ms: int) -> int:
        """One poll round: every socket that has messages hands over up to a burst; the count."""
        ready = poller.poll(timeout_ms)
        with self.lock:
            return self._received(ready, by_socket)

    def _received(self, ready: list, by_socket: dict) -> int:
        got = 0
        for socket, _ in ready:
            if self.pipeline.expired():  # the stop's deadline: what is still queued stays unread
                break
            sub = by_socket[socket]
            if socket is sub.source.monitor:
                sub.source.on_monitor()
                continue
            if sub.accelerator is not None:
                try:
                    n = self.pipeline.receive_compiled(sub)
                except Exception as exc:  # a defect, contained: the loop goes on
                    self._receive_error(sub, exc)
                    continue
                sub.receive_failed(None)
                got += n
                continue
            messages = receive(socket, BURST, BURST_BYTES)
            if messages:
                got += len(messages)
                sizes = [sum(map(len, m)) for m in messages]
                sub.observe_size(len(messages), sum(sizes), max(sizes))
                try:
                    self.pipeline.receive(sub, messages)
                except Exception as exc:  # a defect, contained: the loop goes on
                    self._receive_error(sub, exc)
                    continue
                sub.receive_failed(None)
        return got

    def _receive_error(self, sub: Subscription, exc: Exception) -> None:
        """A defect in a receive, contained: counted, logged (a repeating one at poll rate) and
        named in /healthz through its subscription."""
        self.metrics.inc("bridge_stage_errors_total", 1, stage="receive")
        if self.rate_log.allow("receive_error"):
            log.exception("receive error (contained)", extra={"subscription": sub.name, "error": repr(exc)})
        sub.receive_failed(exc)

    def _register(self, poller: zmq.Poller, by_socket: dict) -> None:
        """Polls each subscription's socket and monitor once they exist: a subscription whose
        set-up failed gets them later (sources.Source.repair, from housekeeping)."""
        for sub in self.subscriptions:
            owned = self.receivers is not None and self.receivers.owns(sub)  # its data socket: its thread's
            for socket in (sub.source.monitor,) if owned else (sub.source.socket, sub.source.monitor):
                if socket is not None and socket not in by_socket:
                    poller.register(socket, zmq.POLLIN)
                    by_socket[socket] = sub

    def run(self, ready: Callable[[], None] | None = None, signals: Signals | None = None) -> int:
        for sink in self.sinks:
            sink.start()
        if self.cache is not None:
            self.cache.start()
        self.signals = (signals or Signals()).install(self.request_stop)
        poller = zmq.Poller()
        by_socket: dict = {}
        if self.receivers is not None:
            self.receivers.start()
            log.info("receive threads", extra={"subscriptions": [s.name for s in self.receivers.subs],
                                               "receive_threads": self.config.receive_threads, "cpus": self.cpus})
        else:
            log.info("one receive loop", extra={"receive_threads": self.config.receive_threads, "cpus": self.cpus,
                                                "compiled": sum(s.accelerator is not None for s in self.subscriptions)})
        self._register(poller, by_socket)
        ledger_thread = threading.Thread(target=self._ledger_loop, name="ledger", daemon=True)
        ledger_thread.start()
        # /metrics and /healthz answer once the receive side is set up and has said how (a test or
        # an operator that sees /metrics answer finds `receive threads` or `one receive loop` logged).
        if self.config.http_listen:
            self.http = serve(self.metrics, self.config.http_listen, self.health,
                              self.config.http_max_connections, self.config.http_timeout)
        log.info("bridge running", extra={"subscriptions": [s.name for s in self.subscriptions],
                                          "destinations": [s.name for s in self.sinks]})
        self.notifier.ready()
        if ready:
            ready()
        report_every = self.config.self_metrics.interval_ns / 1e9 if self.config.self_metrics else None
        next_report = time.monotonic() + (report_every or 0)
        next_tick = time.monotonic() + TICK_S
        while not self._stop.is_set():
            if self.signals.pending:
                with self.lock:
                    self.handle_signals()
                if self._stop.is_set():
                    break
            self._poll(poller, by_socket, int(TICK_S * 1000))
            now = time.monotonic()
            if now >= next_tick:
                self.lock.acquire()
                next_tick = now + TICK_S
                try:
                    self.housekeeping(now)
                    self._register(poller, by_socket)
                    if report_every and now >= next_report:
                        next_report = now + report_every
                        self.pipeline.hand_over(None, self.self_report(time.time_ns()))
                except Exception as exc:  # contained
                    self.metrics.inc("bridge_stage_errors_total", 1, stage="housekeeping")
                    log.exception("housekeeping error (contained)", extra={"error": repr(exc)})
                finally:
                    self.lock.release()
        return self.shutdown(poller, by_socket)

    def shutdown(self, poller: zmq.Poller | None = None, by_socket: dict | None = None) -> int:
        self.stopping = True
        if self.signals.pending:
            self.handle_signals()  # counted and logged; a SIGHUP now is ignored
        if self.reexec:
            self.notifier.reloading()
        else:
            self.notifier.stopping()
        started = self._begin_stop()  # a reload's stop begins here; a signal's when it came
        budget = self.config.shutdown_timeout
        log.info("stopping: draining subscriptions, then flushing destinations", extra={"timeout_s": budget})
        drained = 0
        if self.receivers is not None:  # their sockets are the main loop's again: the drain polls them
            self.receivers.stop()
        if poller is not None and by_socket is not None:
            self._register(poller, by_socket)
            # Receive until quiet: a poll of DRAIN_QUIET_S in which no socket delivered anything.
            # Not "a round took less than a burst": a consumer faster than the link empties its
            # socket every round while the publisher still holds a backlog (the chaos test lost
            # 115,000 of 150,000 that way on a loaded machine). A feed that never pauses is
            # drained for at most half of the budget; the rest is for the destinations.
            last = time.monotonic()
            while not self.pipeline.expired() and time.monotonic() - last < DRAIN_QUIET_S:
                got = self._poll(poller, by_socket, int(DRAIN_QUIET_S * 1000))
                self.notifier.watchdog()
                drained += got
                if got:
                    last = time.monotonic()
        close_all([sub.source for sub in self.subscriptions])
        self.housekeeping(time.monotonic())
        remaining = max(1.0, budget - (time.monotonic() - started))
        threads = [threading.Thread(target=s.stop, args=(remaining,)) for s in self.sinks]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            self.notifier.watchdog()
            for t in threads:
                t.join(0.5)
        if self.cache is not None:
            self.cache.stop(min(2.0, remaining))
        for sink in self.sinks:  # rotations during the final flush
            self.pipeline.count_discarded(sink.dead)
        self._ledger_stop.set()
        self.ledger.save(clean=True, sync=True)
        if self.http is not None:
            self.http.shutdown()
        self.dead_input.close()
        for sink in self.sinks:
            sink.dead.close()
        self.context.term()
        self.rate_log.summarize(force=True)
        log.info("stopped", extra={"drained_messages": drained,
                                   **{s.name: {"journal_points": s.journal.points} for s in self.sinks}})
        return 0
