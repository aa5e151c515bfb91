"""`station-bridge validate`: is a station's data path working? Safe on a production station.

Per bridge configuration (one per instance), with the bridge's own configuration loader,
metrics parser and clients:

observe (the default; writes nothing anywhere)
    Reads /metrics at the start and the end of a window and checks: the bridge answers
    (alive); every feed (subscription) received a message in the window or its last message
    is at most `max_age` old (flowing); no destination is failing (the bridge's own
    acknowledgements: points written during the window, or nothing pending); the bridge's
    self-metrics (measurement `station_bridge`, tagged with this instance) reach the
    instance's local InfluxDB. With a reader's credentials it also counts what each feed's
    measurement received in the window; with Redis credentials, the feed's newest cached time.

publish (lab and `make station` only)
    Additionally publishes `count` demo ticks to the instance's validation subscription: the
    endpoint the bridge binds for validation alone when its configuration sets `validation`
    (config.ValidationSpec defines it: subscription `validation`, measurement
    `station_validation`, tagged validation=demo, never cached). Never a feed's endpoint,
    never a production measurement, never Redis: an instance without `validation` is refused.
    Checks the bridge received every tick and every one landed.

The central database is not queried from the station (the station's central user may only
write): the bridge's acknowledgements from central are reported per destination, and the
playbook asks central itself for what the report's `self_metrics` and (publish) `validation`
name: the measurements, field and tags central must hold.

Output: a JSON report (`--json`) or a table; exit status 0 when every check passed, 1 otherwise,
2 for a configuration error.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, DestinationSpec, SubscriptionSpec, ValidationSpec, load
from .lineproto import escape_measurement
from .metrics import Sample, parse
from .sinks import InfluxWriter

# Credentials of a reader for InfluxDB and of a Redis user that may SCAN/HGET: from the
# environment or, with --secrets-stdin, as JSON on stdin (never argv, where `ps` shows them).
INFLUX_PASSWORD_ENV = "STATION_VALIDATE_INFLUX_PASSWORD"
REDIS_PASSWORD_ENV = "STATION_VALIDATE_REDIS_PASSWORD"


class ValidateError(Exception):
    """A check could not run at all (as opposed to a check that ran and failed)."""


@dataclass
class Options:
    mode: str = "observe"
    window: float = 10.0
    max_age: float = 60.0
    count: int = 100
    rate: float = 1000.0
    timeout: float = 30.0
    max_lag: float = 2.0  # observe: points stamped this long before the window count as the window's
    influx_user: str | None = None
    influx_password: str | None = None
    redis_user: str | None = None
    redis_password: str | None = None
    # Destinations the operator declared down (a central lost during a campaign): failing or old
    # points are reported, not failed, while their journal keeps the points (nothing dropped).
    declared_down: tuple[str, ...] = ()


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


# --- clients --------------------------------------------------------------------------------


def fetch_metrics(listen: str, timeout: float = 5.0) -> dict[Sample, float]:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=timeout) as response:
        return parse(response.read().decode("utf-8"))


def fetch_health(listen: str, timeout: float = 5.0) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://{listen}/healthz", timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503: not healthy, the body says why
        return json.loads(exc.read() or b"{}")


class InfluxReader:
    """InfluxQL over the destination's URL, with a reader's credentials, through the sink's own
    client (sinks.InfluxWriter.query): rows of the statement, tags merged in."""

    def __init__(self, spec: DestinationSpec, timeout: float = 10.0) -> None:
        self.spec = spec
        self._client = InfluxWriter(replace(spec, timeout=timeout))

    def query(self, q: str) -> list[dict[str, Any]]:
        """Raises ValidateError on any error (transport, HTTP, InfluxQL)."""
        rows = []
        try:
            for payload in self._client.query(q):
                results = payload.get("results") or []
                error = payload.get("error") or next((r["error"] for r in results if "error" in r), None)
                if error:
                    raise ValidateError(f"{self.spec.url}: {error}")
                for result in results:
                    for series in result.get("series") or []:
                        for values in series.get("values") or []:
                            row = dict(zip(series["columns"], values, strict=True))
                            row.update(series.get("tags") or {})
                            rows.append(row)
        except (OSError, http.client.HTTPException, RuntimeError, ValueError) as exc:
            raise ValidateError(f"{self.spec.url}: {type(exc).__name__}: {exc}") from exc
        return rows


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _source(destination: DestinationSpec, measurement: str) -> str:
    rp = _quote_ident(destination.retention_policy) + "." if destination.retention_policy else ""
    return rp + _quote_ident(measurement)


def _redis_match(value: str) -> str:
    """A literal for Redis' glob-style MATCH."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in value)


# --- what a configuration says ----------------------------------------------------------------


def feed_subscriptions(config: Config) -> list[SubscriptionSpec]:
    validation = config.validation.subscription if config.validation else None
    return [s for s in config.subscriptions if s.name != validation]


def validation_subscription(config: Config) -> SubscriptionSpec | None:
    """The subscription the bridge adds for `validation` (config.ValidationSpec), if set."""
    if config.validation is None:
        return None
    for sub in config.subscriptions:
        if sub.name == config.validation.subscription:
            return sub
    return None


def measurements(config: Config) -> dict[str, list[str]]:
    """What each subscription writes, as the bridge's effective configuration says (the one owner:
    `check-config --json` prints the same; binning's measurements included): {name: [measurement]},
    [] when they come from the data (a topic map lists its measurements)."""
    return {s["name"]: list(s["measurements"] or []) for s in config.effective()["subscriptions"]}


def local_destination(config: Config) -> DestinationSpec:
    """The destination the station reads back: the one named `local`, else the first."""
    for destination in config.destinations:
        if destination.name == "local":
            return destination
    return config.destinations[0]


def instance_name(config: Config, path: Path) -> str:
    return config.self_metrics.instance if config.self_metrics else path.stem


def _labels(samples: dict[Sample, float], name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    return samples.get((name, want))


def _sum(samples: dict[Sample, float], name: str, **labels: str) -> float:
    items = labels.items()
    return sum(v for (n, ls), v in samples.items() if n == name and all(item in ls for item in items))


def _delta(before: dict[Sample, float], after: dict[Sample, float], name: str, **labels: str) -> int:
    return int(_sum(after, name, **labels) - _sum(before, name, **labels))


def _load_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of the unit's EnvironmentFile (blank lines and # comments skipped)."""
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def load_instance(path: Path) -> Config:
    """The configuration as the unit reads it: with <name>.env beside it as its environment."""
    env_file = path.with_suffix(".env")
    environ = dict(os.environ)
    if env_file.is_file() and os.access(env_file, os.R_OK):
        environ.update(_load_env_file(env_file))
    return load(path, environ)


# --- the checks ---------------------------------------------------------------------------------


class InstanceValidation:
    def __init__(self, path: Path, config: Config, options: Options) -> None:
        self.path = path
        self.config = config
        self.options = options
        self.name = instance_name(config, path)
        self.checks: list[Check] = []
        self.feeds: list[dict[str, Any]] = []
        self.destinations: list[dict[str, Any]] = []
        self.before: dict[Sample, float] | None = None
        self.after: dict[Sample, float] | None = None
        self.published = 0
        self.local = local_destination(config)
        self.measurements = measurements(config)
        reader = replace(self.local, username=options.influx_user, password=options.influx_password) \
            if options.influx_user else self.local
        self.influx = InfluxReader(reader)

    def add(self, name: str, ok: bool, detail: str, **data: Any) -> None:
        self.checks.append(Check(name, ok, detail, data))

    # Before the window.
    def start(self) -> None:
        listen = self.config.http_listen
        if not listen:
            self.add("alive", False, "http.listen is off: the bridge exposes no metrics to observe")
            return
        try:
            self.before = fetch_metrics(listen)
        except (OSError, ValueError) as exc:
            self.add("alive", False, f"no answer from http://{listen}/metrics: {exc}")
            return
        if self.options.mode == "publish":
            self._publish()

    def _publish(self) -> None:
        from .demo import publish
        sub = validation_subscription(self.config)
        if sub is None or self.config.validation is None:
            raise ValidateError(
                f"{self.path}: no `validation` subscription (the configuration sets no `validation: {{endpoint}}`): "
                f"publish mode writes only to the instance's own validation endpoint (the bridge role sets it "
                f"with bridge_validation), never to a feed's")
        self.published = publish(sub.endpoints[0], self.config.validation.topic, self.options.count, self.options.rate,
                                 duration=max(30.0, self.options.count / max(self.options.rate, 1.0) * 2),
                                 bind=False, instruments=["VALIDATION"])

    # After the window.
    def finish(self, started_ns: int) -> None:
        if self.before is None:
            return
        listen = self.config.http_listen
        assert listen is not None
        try:
            if self.options.mode == "publish":
                self._validation_landed(started_ns)  # waits until the ticks are in: then the counters settle
            self.after = fetch_metrics(listen)
            health = fetch_health(listen)
        except (OSError, ValueError) as exc:
            self.add("alive", False, f"http://{listen} stopped answering during the window: {exc}")
            return
        started = _labels(self.after, "bridge_start_time_seconds")
        self.checks.insert(0, Check("alive", True, f"answers on {listen}"
                                    + (f", up since {int(started)}" if started else "")))
        self._feeds(started_ns, health)
        self._destinations(health)
        self._rest_of_health(health)
        self._self_metrics(started_ns)
        self._cache(started_ns)

    def _path_check(self, sub: Any, running: str | None) -> None:
        """No silent slow path: a feed whose mapping the compiled path covers, on a station whose
        wheel carries the extension, must run compiled. Python there means the extension or libzmq
        failed to load (a foreign platform, a broken install): about 4x the CPU per point, named here.
        A pure wheel (built with STATION_BRIDGE_PURE=1 on purpose) and a mapping form C does not
        cover are reported, not failed."""
        from .fastpath import PURE_ON_PURPOSE, extension_shipped, python_reason
        from .mapping import Mapper

        if running is None:
            return  # a bridge too old to say
        expected = python_reason(self.config.fast_path, sub, Mapper(sub, self.config.station), here=False)
        if running == "compiled" or expected or running.endswith(PURE_ON_PURPOSE) or not extension_shipped():
            detail = running if not expected else f"{running} (the configuration asks for it)"
            self.add(f"feed {sub.name} path", True, detail, path=running)
        else:
            self.add(f"feed {sub.name} path", False,
                     f"runs {running}, although its mapping is on the compiled path and this station's wheel "
                     "carries the extension: about 4x the CPU per point (see the bridge's start log)",
                     path=running)

    def _feeds(self, started_ns: int, health: dict[str, Any]) -> None:
        """Per feed: it flows (a message in the window, or a recent one), and the bridge's health
        model (the /healthz document) finds nothing wrong with it (connection, rejected share,
        overdue cadence): the same verdict /healthz gives, not a second computation."""
        assert self.before is not None and self.after is not None
        states = health.get("subscriptions") or {}
        unhealthy = {p["name"]: p["reason"] for p in health.get("problems") or [] if p.get("part") == "subscription"}
        for sub in feed_subscriptions(self.config):
            received = _delta(self.before, self.after, "bridge_received_messages_total", subscription=sub.name)
            rejected = _delta(self.before, self.after, "bridge_rejected_messages_total", subscription=sub.name)
            age = _labels(self.after, "bridge_last_message_age_seconds", subscription=sub.name)
            connected = _labels(self.after, "bridge_subscription_connected", subscription=sub.name)
            fresh = age is not None and 0 <= age <= self.options.max_age
            flowing = received > 0 or fresh
            # The health model judges a feed (connection, rejected share, a declared cadence that
            # is overdue); an idle feed is reported, not failed: many feeds publish only sometimes
            # (an observatory's instruments, outside a campaign). A feed that must flow declares
            # its cadence (`expected_interval`) and fails once it is overdue.
            problem = unhealthy.get(sub.name) if states.get(sub.name, {}).get("ok", True) is False else None
            ok = problem is None
            mapped = _delta(self.before, self.after, "bridge_mapped_points_total", subscription=sub.name)
            landed, landing = self._landed_check(sub, started_ns, mapped)
            ok = ok and landing[0]
            row = {"feed": sub.name, "received": received, "rejected": rejected,
                   "last_message_age_s": age, "connected": None if connected is None else bool(connected),
                   "measurements": self.measurements[sub.name], "mapped_points": mapped, "landed": landed,
                   "ok": ok, "expected_interval_s": sub.expected_interval, "idle": not flowing,
                   # the path the running bridge maps it on (/healthz): compiled, or python: why
                   "path": states.get(sub.name, {}).get("fast_path")}
            self.feeds.append(row)
            self.add(f"feed {sub.name} landed", landing[0], landing[1], mapped=mapped, landed=landed,
                     **({"skipped": True} if landed is None else {}))
            self._path_check(sub, row["path"])
            if problem is not None:
                self.add(f"feed {sub.name}", False, f"unhealthy: {problem}")
            elif flowing:
                self.add(f"feed {sub.name}", True, f"received {received} in the window"
                         + (f", last message {age:.1f} s ago" if age is not None and age >= 0 else ""))
            elif self.options.mode == "publish":
                self.add(f"feed {sub.name}", True, "idle (publish mode checks the validation path)", idle=True)
            else:
                self.add(f"feed {sub.name}", True,
                         f"idle: no message in the {self.options.window:g} s window"
                         + (f" nor in the last {self.options.max_age:g} s" if age is not None else "")
                         + (" (the SUB socket is not connected)" if connected == 0 else "")
                         + (f"; within its cadence (expected every {sub.expected_interval:g} s)"
                            if sub.expected_interval else
                            "; no cadence declared (expected_interval): idle is not a failure"), idle=True)

    def _landed(self, sub: SubscriptionSpec, since_ns: int) -> int:
        """Points of the feed's measurements in the local database stamped since `since_ns` (per
        measurement its most counted field: a lower bound where points carry different fields)."""
        total = 0
        for name in self.measurements[sub.name]:
            rows = self.influx.query(f"SELECT count(*) FROM {_source(self.local, name)} WHERE time >= {since_ns}")
            total += max((v for row in rows for k, v in row.items() if k != "time" and isinstance(v, int)), default=0)
        return total

    def _landed_check(self, sub: SubscriptionSpec, started_ns: int, mapped: int) -> tuple[int | None, tuple[bool, str]]:
        """What the feed's points came to in the local database against what the bridge mapped in
        the window (`bridge_mapped_points_total`: handed to every destination): the bridge's
        acknowledgements alone pass a proxy that answers 204 and stores nothing. Waits up to
        `--timeout` for points still pending. Points stamped up to `--max-lag` before the window
        count (a feed's source time lags its receive time), so the check is a lower bound: it fails
        when fewer points are queryable than were mapped. (None, ...): not checked, and why."""
        names = self.measurements[sub.name]
        if not self.options.influx_user:
            return None, (True, "not checked: no InfluxDB reader given (--influx-user), only the bridge's "
                                "acknowledgements are known")
        if not names:
            return None, (True, "not checked: the feed's measurements come from its data")
        if mapped <= 0:
            return None, (True, "not checked: no point mapped in the window")
        since = started_ns - round(self.options.max_lag * 1e9)
        deadline = time.monotonic() + self.options.timeout
        while True:
            landed = self._landed(sub, since)
            if landed >= mapped or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        where = f"{self.local.database}.{'/'.join(names)}"
        if landed >= mapped:
            return landed, (True, f"{mapped} points mapped in the window, {landed} queryable in {where}")
        return landed, (False, f"{mapped} points mapped in the window (acknowledged by the destinations), only "
                               f"{landed} queryable in {where} after {self.options.timeout:g} s: points were "
                               f"lost after the bridge handed them over (a proxy or server that acknowledges and "
                               f"does not store?), or the feed's times lag more than {self.options.max_lag:g} s "
                               f"(--max-lag)")

    def _destinations(self, health: dict[str, Any]) -> None:
        assert self.before is not None and self.after is not None
        states = health.get("destinations") or {}
        for destination in self.config.destinations:
            name = destination.name
            written = _delta(self.before, self.after, "bridge_written_points_total", destination=name)
            failing = _labels(self.after, "bridge_destination_failing_seconds", destination=name)
            pending = _labels(self.after, "bridge_pending_points", destination=name)
            if pending is None:
                pending = sum(_labels(self.after, metric, destination=name) or 0
                              for metric in ("bridge_queue_points", "bridge_journal_points"))
            state = states.get(name) or {}
            is_failing = bool(failing) if failing is not None else bool(state.get("failing"))
            # The health model's verdict (e.g. the oldest unacknowledged point too old while writes
            # still succeed), and stricter during a rollout: failing at all in the window.
            problem = next((p["reason"] for p in health.get("problems") or []
                            if p.get("part") in ("destination", "sink", "journal") and p.get("name") == name), None)
            ok = not is_failing and problem is None
            if name in self.options.declared_down and not ok:
                self._declared_down(destination, state, written, pending, failing, health)
                continue
            if ok and state.get("pending_by_schedule"):
                # A scheduled link outside its window: healthy, nothing sent, points journaled.
                self.destinations.append({"destination": name, "url": destination.url, "written": written,
                                          "pending": int(pending), "failing_s": failing, "last_error": None,
                                          "ok": True, "state": "pending_by_schedule",
                                          "next_window": state.get("next_window")})
                self.add(f"destination {name}", True, f"{name}: pending_by_schedule, next window at "
                         f"{state.get('next_window')}, {int(pending)} points pending")
                continue
            row = {"destination": name, "url": destination.url, "written": written, "pending": int(pending),
                   "failing_s": failing, "last_error": state.get("last_error"), "ok": ok}
            self.destinations.append(row)
            if ok:
                self.add(f"destination {name}", True,
                         f"{written} points acknowledged in the window, {int(pending)} pending")
            elif not is_failing:
                self.add(f"destination {name}", False, f"unhealthy: {problem}, {int(pending)} points pending")
            else:
                self.add(f"destination {name}", False,
                         f"failing{f' for {failing:.0f} s' if failing else ''}, {int(pending)} points pending"
                         + (f": {state.get('last_error')}" if state.get("last_error") else ""))

    def _declared_down(self, destination: DestinationSpec, state: dict[str, Any], written: float, pending: float,
                       failing: float | None, health: dict[str, Any]) -> None:
        """A destination the operator declared down (--declared-down) that is failing: reported as
        such while its journal keeps every point; a point dropped in the window, or a journal or
        writer problem, still fails."""
        name = destination.name
        assert self.after is not None and self.before is not None
        dropped = _delta(self.before, self.after, "bridge_dropped_points_total", destination=name)
        kept = next((f"{p['part']}: {p['reason']}" for p in health.get("problems") or []
                     if p.get("part") in ("sink", "journal") and p.get("name") == name), None)
        row = {"destination": name, "url": destination.url, "written": written, "pending": int(pending),
               "failing_s": failing, "last_error": state.get("last_error"), "ok": not dropped and kept is None,
               "state": "declared_down"}
        self.destinations.append(row)
        if kept is not None:
            self.add(f"destination {name}", False, f"declared down, and its points are not kept: {kept}")
        elif dropped:
            self.add(f"destination {name}", False, f"declared down, and {int(dropped)} points dropped in the window "
                     f"(the journal cannot keep them): {state.get('last_error') or ''}")
        else:
            self.add(f"destination {name}", True, f"declared down: {int(pending)} points kept in the journal until "
                     f"it is back" + (f" (failing for {failing:.0f} s)" if failing else ""))

    def _rest_of_health(self, health: dict[str, Any]) -> None:
        """Every other problem of the health document (dead letters, the ledger, the bridge
        stopping, anything a later part adds): validate fails where /healthz does."""
        names = {s.name for s in self.config.subscriptions} | {d.name for d in self.config.destinations}
        covered = {"subscription", "destination", "sink", "journal"}
        rest = [p for p in health.get("problems") or []
                if p.get("part") not in covered or p.get("name") not in names]
        if rest:
            self.add("bridge health", False, "; ".join(f"{p.get('part')} {p.get('name')}: {p.get('reason')}"
                                                         for p in rest))
        elif health.get("ok") is False and not health.get("problems"):
            self.add("bridge health", False, "/healthz says not ok without naming a problem")
        else:
            self.add("bridge health", True, "/healthz names no other problem")

    def _self_metrics(self, started_ns: int) -> None:
        spec = self.config.self_metrics
        if spec is None:
            self.add("self-metrics", True, "self_metrics is off: nothing to look for", skipped=True)
            return
        if not self.options.influx_user:
            self.add("self-metrics", True, "not checked (no InfluxDB reader given)", skipped=True)
            return
        interval = spec.interval_ns / 1e9
        deadline = time.monotonic() + interval + self.local.flush_interval + 5
        query = (f"SELECT last(*) FROM {_source(self.local, spec.measurement)} "
                 f"WHERE {_quote_ident('instance')} = {_quote_string(spec.instance)} AND time >= {started_ns}")
        while True:
            rows = self.influx.query(query)
            if rows or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if rows:
            self.add("self-metrics", True, f"{spec.measurement} points of instance {spec.instance} land in "
                     f"{self.local.database}", newest_ns=rows[0]["time"])
        else:
            self.add("self-metrics", False, f"no {spec.measurement} point of instance {spec.instance} reached "
                     f"{self.local.database} in {interval + self.local.flush_interval + 5:.0f} s")

    def _validation_landed(self, started_ns: int) -> None:
        assert self.before is not None
        sub = validation_subscription(self.config)
        spec = self.config.validation
        assert sub is not None and spec is not None
        # This instance's ticks only: every instance of a station writes the same measurement
        # (its validation subscription's static tags tell them apart, e.g. `instance`).
        tags = {**sub.mapping.static_tags, **dict(spec.tags)}
        where = " AND ".join(f"{_quote_ident(k)} = {_quote_string(v)}" for k, v in sorted(tags.items()))
        query = (f"SELECT count(*) FROM {_source(self.local, spec.measurement)} "
                 f"WHERE {where} AND time >= {started_ns}")
        deadline = time.monotonic() + self.options.timeout
        landed = received = 0
        while time.monotonic() < deadline:
            received = _delta(self.before, fetch_metrics(self.config.http_listen or ""),
                              "bridge_received_messages_total", subscription=sub.name)
            if self.options.influx_user:
                rows = self.influx.query(query)
                landed = max((v for row in rows for k, v in row.items() if k != "time" and isinstance(v, int)),
                             default=0)
            if received >= self.published and (landed >= self.published or not self.options.influx_user):
                break
            time.sleep(0.5)
        ok = self.published > 0 and received == self.published and \
            (landed == self.published or not self.options.influx_user)
        self.add("validation ticks", ok,
                 f"published {self.published} to {sub.endpoints[0]}, the bridge received {received}"
                 + (f", {landed} landed in {self.local.database}.{spec.measurement}"
                    if self.options.influx_user else ""),
                 published=self.published, received=received, landed=landed)

    def _cache(self, started_ns: int) -> None:
        if self.config.cache is None:
            return
        assert self.before is not None and self.after is not None
        errors = _delta(self.before, self.after, "bridge_cache_errors_total")
        updates = _delta(self.before, self.after, "bridge_cache_updates_total")
        data: dict[str, Any] = {"updates": updates, "errors": errors}
        problems = [f"{errors} failed updates"] if errors else []
        if self.options.redis_user:
            from .cache import LatestCache
            from .metrics import Metrics
            spec = replace(self.config.cache, username=self.options.redis_user, password=self.options.redis_password)
            client = LatestCache(spec, Metrics()).client
            prefix = self.config.cache.key_prefix
            try:
                for row in self.feeds:
                    newest, keys = 0, 0
                    for name in row["measurements"]:
                        match = f"{_redis_match(prefix)}:{_redis_match(escape_measurement(name))}*"
                        for key in client.scan_iter(match=match, count=1000):
                            keys += 1
                            stamp = client.hget(key, "time")
                            newest = max(newest, int(stamp or 0))
                    row["cached_series"], row["cached_newest_ns"] = keys, newest
                measurement = (self.config.validation or ValidationSpec("")).measurement
                leaked = list(client.scan_iter(match=f"{_redis_match(prefix)}:{_redis_match(measurement)}*",
                                               count=1000))
            except Exception as exc:  # redis.RedisError and connection errors alike: report, do not crash
                problems.append(f"cannot read Redis as {self.options.redis_user}: {exc}")
                leaked = []
            if leaked:
                problems.append(f"{len(leaked)} validation series in Redis (validation must never reach it)")
            data["validation_keys"] = len(leaked)
        self.add("cache", not problems, "; ".join(problems) or f"{updates} series updated in the window", **data)

    def report(self) -> dict[str, Any]:
        return {
            "instance": self.name, "config": str(self.path), "station": self.config.station,
            # where this instance's own metrics land (central is asked for this measurement)
            "self_measurement": self.config.self_metrics.measurement if self.config.self_metrics else None,
            # what its validation ticks are (config.ValidationSpec; publish mode writes them)
            "validation": self.config.validation.contract() if self.config.validation else None,
            "ok": all(c.ok for c in self.checks),
            "checks": [{"check": c.name, "ok": c.ok, "detail": c.detail, **c.data} for c in self.checks],
            "feeds": self.feeds, "destinations": self.destinations,
        }


def validate(paths: list[Path], options: Options) -> dict[str, Any]:
    """Validates every instance over one shared window; returns the report."""
    if options.mode not in ("observe", "publish"):
        raise ValidateError(f"mode must be observe or publish, got {options.mode!r}")
    instances = [InstanceValidation(p, load_instance(p), options) for p in paths]
    started_ns = time.time_ns()
    opened = time.monotonic()
    for instance in instances:
        instance.start()
    if options.mode == "observe":
        time.sleep(max(0.0, options.window - (time.monotonic() - opened)))
    for instance in instances:
        try:
            instance.finish(started_ns)
        except ValidateError as exc:
            instance.add("influxdb", False, str(exc))
    reports = [i.report() for i in instances]
    # What central must hold from this station: its own metrics, under each instance's configured
    # measurement (the playbook asks central for exactly these; it never re-derives them).
    at_central = sorted({(r["station"], r["self_measurement"]) for r in reports
                         if r["station"] and r["self_measurement"]})
    # In publish mode also the validation ticks: measurement, counted field and tags (one
    # definition, config.ValidationSpec; every instance's the same), per station.
    ticks = None
    if options.mode == "publish":
        contracts = [r["validation"] for r in reports if r["validation"]]
        if contracts:
            ticks = {k: contracts[0][k] for k in ("measurement", "field", "tags")}
    return {"mode": options.mode, "started_ns": started_ns, "window_s": round(time.monotonic() - opened, 3),
            "ok": all(r["ok"] for r in reports), "instances": reports,
            "self_metrics": [{"station": s, "measurement": m} for s, m in at_central],
            "validation": ticks}


def problems(report: dict[str, Any]) -> list[str]:
    return [f"{inst['instance']}: {c['check']}: {c['detail']}" for inst in report["instances"]
            for c in inst["checks"] if not c["ok"]]


def table(report: dict[str, Any]) -> list[str]:
    """One line per feed, validation path and destination: what an operator reads after a rollout."""
    lines = ["instance | what | counted in the window | landed | state | ok | path"]
    for inst in report["instances"]:
        checks = {c["check"]: c for c in inst["checks"]}
        if "alive" in checks and not checks["alive"]["ok"]:
            lines.append(f"{inst['instance']} | bridge | - | - | {checks['alive']['detail']} | False | -")
        for f in inst["feeds"]:
            age = f["last_message_age_s"]
            state = checks.get(f"feed {f['feed']}", {}).get("detail", "")
            lines.append(f"{inst['instance']} | feed {f['feed']} | received {f['received']} | "
                         f"{'-' if f['landed'] is None else f['landed']} | "
                         f"{state if age is None or age < 0 else f'last message {age:.1f} s ago'} | {f['ok']} | "
                         f"{f.get('path') or '-'}")
        if "validation ticks" in checks:
            v = checks["validation ticks"]
            lines.append(f"{inst['instance']} | validation | published {v['published']}, received {v['received']} | "
                         f"{v['landed']} | {(inst['validation'] or {}).get('measurement')} | {v['ok']} | -")
        for d in inst["destinations"]:
            lines.append(f"{inst['instance']} | destination {d['destination']} | written {d['written']} | - | "
                         f"{d['pending']} pending{', ' + d['state'] if d.get('state') else ''}"
                         f"{', next window at ' + str(d['next_window']) if d.get('next_window') else ''}"
                         f"{', failing' if not d['ok'] else ''} | {d['ok']} | -")
    return lines


def config_files(args: list[str]) -> list[Path]:
    """Files as given; a directory stands for every *.yml and *.toml in it (the bridge role's layout)."""
    paths: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml", ".toml") and p.is_file())
            if not found:
                raise ValidateError(f"{path}: no bridge configuration (*.yml, *.toml) in this directory")
            paths += found
        else:
            paths.append(path)
    return paths


def main(args: Any) -> int:
    """The `validate` subcommand (parser in cli.py)."""
    secrets = {"influx_password": os.environ.get(INFLUX_PASSWORD_ENV),
               "redis_password": os.environ.get(REDIS_PASSWORD_ENV)}
    if args.secrets_stdin:
        try:
            given = json.loads(sys.stdin.read() or "{}")
        except ValueError:
            given = None
        if not isinstance(given, dict) or set(given) - set(secrets):
            print(json.dumps({"ok": False, "error": "--secrets-stdin: expected a JSON object with "
                              "influx_password and/or redis_password"}))
            return 2
        secrets.update({k: v for k, v in given.items() if v is not None})
    options = Options(mode=args.mode, window=args.window, max_age=args.max_age, count=args.count, rate=args.rate,
                      timeout=args.timeout, max_lag=args.max_lag, influx_user=args.influx_user,
                      influx_password=secrets["influx_password"],
                      redis_user=args.redis_user, redis_password=secrets["redis_password"],
                      declared_down=tuple(args.declared_down or ()))
    try:
        report = validate(config_files(args.configs), options)
    except (ValidateError, ConfigError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}) if args.json else f"error: {exc}")
        return 2
    report["problems"] = problems(report)
    report["table"] = table(report)
    if args.json:
        print(json.dumps(report))
    else:
        print("\n".join(report["table"] + (["failed: " + p for p in report["problems"]] or ["every check passed"])))
    return 0 if report["ok"] else 1


def add_parser(sub: Any) -> None:
    """Registers `station-bridge validate` on the CLI's subparsers."""
    p = sub.add_parser("validate", help="check a running bridge's data path (observe: writes nothing)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="+", help="the instances' configuration files, or a directory of them")
    p.add_argument("--mode", choices=("observe", "publish"), default="observe")
    p.add_argument("--window", type=float, default=10.0, help="observe: seconds to watch (default 10)")
    p.add_argument("--max-age", type=float, default=60.0,
                   help="a feed whose last message is at most this old is flowing (default 60 s)")
    p.add_argument("--count", type=int, default=100, help="publish: demo ticks per instance (default 100)")
    p.add_argument("--rate", type=float, default=1000.0, help="publish: ticks per second (default 1000)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the ticks (publish) or a feed's mapped points (observe) to land")
    p.add_argument("--max-lag", type=float, default=2.0,
                   help="observe: a feed's points stamped up to this long before the window count (default 2 s)")
    p.add_argument("--influx-user", help=f"an InfluxDB reader (password in ${INFLUX_PASSWORD_ENV})")
    p.add_argument("--redis-user", help=f"a Redis user allowed to SCAN and HGET (password in ${REDIS_PASSWORD_ENV})")
    p.add_argument("--secrets-stdin", action="store_true",
                   help='read {"influx_password": ..., "redis_password": ...} as JSON from stdin (never argv)')
    p.add_argument("--declared-down", action="append", metavar="DESTINATION",
                   help="a destination the operator declared down (repeatable): failing is reported, not failed, "
                        "while its journal keeps every point")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=main)
