"""What the bridge says about itself: the snapshot /healthz evaluates, the gauges, the SIGUSR1
summary and the self-metrics points.

`snapshot` reads every component (destinations, journals, subscriptions, sources, the cache, the
ledger, the orphaned journals) into health.py's plain data (`BridgeState`); `health` is
`health.evaluate` of it, the one health document that /healthz, the `bridge_*_healthy` gauges, the
summary and the self-metrics all read. health.py imports nothing of the components.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from .health import BridgeState, DestinationState, SubscriptionState, Thresholds, evaluate
from .lineproto import format_line
from .pipeline import Subscription
from .schedule import utc
from .sinks import InfluxSink
from .wiring import Parts

log = logging.getLogger("station_bridge")


class SelfReport:
    def __init__(self, parts: Parts, stopping: Callable[[], bool]) -> None:
        self.parts = parts
        self.stopping = stopping  # the stop under way (stop.Stop.stopping)
        self._health: tuple[float, dict] | None = None
        spec = parts.config.self_metrics
        self.every = spec.interval_ns / 1e9 if spec else None  # the self-metrics' period (s)
        self.next = 0.0
        self._register_gauges()

    def start(self) -> None:
        """The self-metrics' first period begins (the bridge runs)."""
        self.next = time.monotonic() + (self.every or 0)

    def tick(self, now: float) -> None:
        """From the receive loop's housekeeping: the self-metrics points when they are due."""
        if self.every and now >= self.next:
            self.next = now + self.every
            self.parts.pipeline.hand_over(None, self.self_report(time.time_ns()))

    def _register_gauges(self) -> None:
        p = self.parts
        g = p.metrics.gauge

        def per_sink(read: Callable[[InfluxSink], float]) -> Callable[[], dict]:
            return lambda: {(("destination", s.name),): float(read(s)) for s in p.sinks}

        def per_sub(read: Callable[[Subscription], float]) -> Callable[[], dict]:
            return lambda: {(("subscription", s.name),): float(read(s)) for s in p.subscriptions}

        g("bridge_pending_points", per_sink(lambda s: s.pending))
        g("bridge_queue_points", per_sink(lambda s: s.queued))
        g("bridge_queue_bytes", per_sink(lambda s: s.queued_bytes))
        g("bridge_memory_budget_bytes", lambda: {(): float(p.budget.total)})
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
        g("bridge_journal_free_bytes", lambda: {(): float(p.guard.free())})
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
        g("bridge_start_time_seconds", lambda: {(): float(int(p.metrics.started))})
        g("bridge_uniqueness_nudged_total", lambda: {(): float(p.unique.nudged)})
        g("bridge_uniqueness_unchecked_total", lambda: {(): float(p.unique.unchecked)})
        g("bridge_uniqueness_evicted_total", lambda: {(): float(p.unique.evicted)})
        g("bridge_uniqueness_restored_series", lambda: {(): float(p.window.restored_series)})
        if p.cache is not None:
            g("bridge_cache_queue", lambda: {(): float(p.cache.queued)})  # type: ignore[union-attr]

    def health(self, max_age: float = 0.0) -> dict:
        """/healthz's document (health.evaluate of the components' snapshot); `max_age` lets the
        gauges of one /metrics render share one."""
        p = self.parts
        cached = self._health
        if cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        h = p.config.health
        state = evaluate(self.snapshot(), Thresholds(h.destination_grace, h.subscription_grace,
                                                     h.max_rejected_share, h.rejection_min_messages,
                                                     h.max_refused_share))
        self._health = (time.monotonic(), state)
        return state

    def snapshot(self) -> BridgeState:
        """What every component reports now, as plain data for the health model."""
        p = self.parts
        now = time.monotonic()
        free = p.guard.free()
        destinations = []
        for sink in p.sinks:
            journal, intake = sink.journal, sink.intake
            failed = max(journal.failed_at, intake.failed_at if intake is not None else 0.0)
            window_points, window_refused, window_examples = sink.recent.totals()
            destinations.append(DestinationState(
                name=sink.name, pending=sink.pending, queue=sink.queued, journal_points=journal.points,
                journal_bytes=journal.bytes, failing_s=sink.failing_seconds(), last_error=sink.last_error,
                alive=sink.alive, oldest_pending_s=sink.oldest_pending_seconds(),
                flush_interval=sink.spec.flush_interval, journal_failed_s=now - failed if failed else None,
                journal_error=journal.last_error or (intake.last_error if intake is not None else ""),
                free_bytes=free, reserve_bytes=p.guard.reserve, dead_letter_error=sink.dead.last_error,
                dead_letter_file=sink.dead.path.name, window_points=window_points,
                window_refused=window_refused, window_examples=window_examples, scheduled=sink.schedule is not None,
                live_first=sink.live_first, oldest_live_s=sink.oldest_live_seconds(), idle_s=sink.idle_seconds(),
                window_age_s=sink.window_age(), next_window=utc(opens) if (opens := sink.next_window()) else ""))
        subscriptions = []
        for sub in p.subscriptions:
            source = sub.source
            received, rejected, _ = sub.recent.totals(now)
            subscriptions.append(SubscriptionState(
                name=sub.name, endpoints=sub.spec.endpoints, require_connection=sub.spec.require_connection,
                connected=source.connected, disconnected_s=source.disconnected_for(), reconnects=source.reconnects,
                last_message_age_s=now - sub.last_message if sub.last_message else -1.0,
                running_s=now - p.started, fast_path=sub.fast_path, expected_interval=sub.spec.expected_interval,
                window_received=received, window_rejected=rejected,
                window_examples={r: sub.examples.get(r, "") for r in rejected},
                extra={"started": source.started, "start_errors": source.start_errors, "rcvhwm": sub.rcvhwm,
                       "message_bytes_seen": round(sub.message_size),
                       "handshake_failures": source.handshake_failures, "endpoints": source.describe()},
                problems=source.problems(now) + sub.memory_problems() + sub.receive_problems(now)
                + (p.receivers.problems(sub) if p.receivers is not None else []),
                last_events=source.last_events(),
                eaten_by_rules=sub.eaten_by_rules(now, p.config.health.rejection_window)))
        cache = ({"queue": p.cache.queued, "last_error": p.cache.last_error}
                 if p.cache is not None else None)
        state = BridgeState(destinations, subscriptions, stopping=self.stopping(),
                           dead_letter_file=p.dead_input.path.name, dead_letter_error=p.dead_input.last_error,
                            ledger_file=str(p.ledger.path), ledger_error=p.ledger.last_error, cache=cache)
        state.orphans = [(name, why) for name, _, why in p.orphans
                         if (p.config.journal_dir / name).is_dir()
                         and any((p.config.journal_dir / name).glob("*.lp"))]
        return state

    def log_summary(self) -> None:
        """SIGUSR1: one log line with the bridge's state."""
        p = self.parts
        state = self.health()
        m = p.metrics
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
                             for s in p.sinks},
            "subscriptions": {s.name: {**state["subscriptions"][s.name], "rcvhwm": s.rcvhwm,
                                       "received": m.get("bridge_received_messages_total", subscription=s.name)}
                              for s in p.subscriptions},
            "memory": {"rss_bytes": rss, "budget_bytes": p.budget.total, "budget_source": p.budget.source}})

    def self_report(self, now_ns: int) -> list[str]:
        """station_bridge (one point per destination) and station_bridge_feed (per subscription)."""
        p = self.parts
        spec = p.config.self_metrics
        assert spec is not None
        m = p.metrics
        received = int(m.total("bridge_received_messages_total"))
        rejected = int(m.total("bridge_rejected_messages_total"))
        health = self.health()
        healthy = "true" if health["ok"] else "false"
        base = [("instance", spec.instance)] + ([("station", p.config.station)] if p.config.station else [])
        lines = []
        for sink in p.sinks:
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
        for sub in p.subscriptions:
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
