"""The bridge as a child process for end-to-end, fault, fuzz and chaos tests: its own
configuration, journal and metrics port; /metrics read with station_bridge.metrics.parse; the
ledger's equations checked from /metrics alone."""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
import zmq
from servers import Influxd, free_port

from station_bridge.journal.records import scan
from station_bridge.lineproto import split_lines
from station_bridge.metrics import parse, total, value

BRIDGE = str(Path(sys.executable).with_name("station-bridge"))

TICKS_MAPPING = {"measurement": "ticks", "tags": ["instrument"],
                 "fields": {"bid": "float", "ask": "float", "volume": "integer", "seq": "integer"},
                 "time": {"field": "timestamp", "format": "epoch_s"}}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
             detail: Callable[[], str] | None = None) -> Any:
    """Poll `predicate` until it is truthy; on timeout, fail naming `what` and, if given, `detail()`
    (the state that explains the timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f": {detail()}" if detail else ""))


def publisher(context: zmq.Context, endpoint: str, *, bind: bool = True) -> zmq.Socket:
    """Every test's publisher (tests/test_publishers.py holds every test to it): an XPUB, so the
    test sees each subscriber's subscription arrive (`subscribed`) instead of sleeping and hoping
    (under CI load a PUB's first frames went nowhere); SNDHWM 0, so a burst queues instead of
    being dropped before the bridge (a PUB's default 1000 dropped 232 of a 2,000-message burst);
    verbose, so a second subscriber of the same topic is seen too."""
    socket = context.socket(zmq.XPUB)
    socket.setsockopt(zmq.SNDHWM, 0)
    socket.setsockopt(zmq.XPUB_VERBOSE, 1)
    (socket.bind if bind else socket.connect)(endpoint)
    return socket


def subscribed(socket: zmq.Socket, topic: bytes | str | None = None, subscribers: int = 1,
               timeout: float = 15.0) -> None:
    """Waits until `subscribers` subscriptions (covering `topic`; None: any) reached the `publisher`
    socket: from then on libzmq delivers what is sent to them (or queues it, SNDHWM 0)."""
    topic = topic.encode() if isinstance(topic, str) else topic
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < subscribers:
        left = deadline - time.monotonic()
        if left <= 0 or not socket.poll(int(left * 1000) + 1, zmq.POLLIN):
            raise AssertionError(f"{seen} of {subscribers} subscriber(s) of {topic!r} after {timeout} s")
        message = socket.recv()
        if message[:1] == b"\x01" and (topic is None or topic.startswith(message[1:])):
            seen += 1


class BridgeProcess:
    """`station-bridge run` as a child process with its own config, journal and metrics port.

    Every process started is killed at the end of its test if the test did not stop it (the
    `no_leftover_bridges` fixture): a failed assertion must not leave a bridge running into the
    next tests (it held CPU and an endpoint through the rest of a CI stage)."""

    running: ClassVar[set[BridgeProcess]] = set()

    def __init__(self, tmp: Path, influx: Influxd | None, db: str, endpoint: str, **overrides: Any) -> None:
        self.tmp = tmp
        self.http_port = free_port()
        destination = {"name": "local", "url": influx.url if influx else "http://127.0.0.1:9",
                       "database": db, "batch_size": 500, "flush_interval": "200ms", "max_backoff": "2s",
                       **overrides.pop("destination", {})}
        subscription = {"name": "kraken", "endpoints": [endpoint], "topics": ["kraken_tick"], "framing": "msgpack",
                        "mapping": TICKS_MAPPING, **overrides.pop("subscription", {})}
        self.config = {
            "station": "test1",
            "subscriptions": [subscription, *overrides.pop("subscriptions_extra", [])],
            "destinations": [destination, *overrides.pop("destinations_extra", [])],
            "journal": {"dir": str(tmp / "journal"), "min_free_bytes": "1MiB", **overrides.pop("journal", {})},
            "dead_letter": {"dir": str(tmp / "dead"), **overrides.pop("dead_letter", {})},
            "http": {"listen": f"127.0.0.1:{self.http_port}"},
            "health": {"destination_grace": "3s", "subscription_grace": "60s", "probe_interval": "1s",
                       **overrides.pop("health", {})},
            "shutdown_timeout": 10,
            **overrides,
        }
        self.path = tmp / "bridge.yml"
        self.path.write_text(yaml.safe_dump(self.config))
        self.process: subprocess.Popen | None = None
        self.env = dict(os.environ)
        self.prefix: list[str] = []  # a wrapper the bridge is exec'd by (e.g. unshare with a private resolv.conf)

    def start(self, wait: bool = True, prefix: tuple[str, ...] = ()) -> BridgeProcess:
        """`prefix`: a command that ends by exec'ing its arguments (e.g. one that joins a cgroup)."""
        self.log = open(self.tmp / "bridge.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen([*self.prefix, *prefix, BRIDGE, "run", "--config", str(self.path)],
                                        stdout=self.log,
                                        stderr=subprocess.STDOUT, env=self.env)
        BridgeProcess.running.add(self)
        if wait:
            wait_for(self.answers, 15, "bridge /metrics")
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answers(self) -> bool:
        try:
            self.samples()
            return True
        except OSError:
            return False

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def healthy(self) -> bool:
        try:
            return self.health()[0] == 200
        except OSError:
            return False

    def samples(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=3) as r:
            return parse(r.read().decode())

    def value(self, name: str, **labels: str) -> float:
        return value(self.samples(), name, **labels)

    def journal_lines(self, destination: str = "local") -> list[bytes]:
        lines: list[bytes] = []
        for segment in sorted((self.tmp / "journal" / destination).glob("*.lp")):
            lines += split_lines(scan(segment.read_bytes()).data())  # verified records only
        return lines

    def log_records(self) -> list[dict]:
        out = []
        for line in (self.tmp / "bridge.log").read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.log.close()
        BridgeProcess.running.discard(self)
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self.log.close()
        BridgeProcess.running.discard(self)

    @classmethod
    def kill_leftovers(cls, keep: set[BridgeProcess]) -> list[str]:
        """Kills every bridge started (and not stopped) since `keep` was taken: a test's own, not
        those of a module's fixture; returns their configurations."""
        left = []
        for bridge in list(cls.running - keep):
            if bridge.alive:
                left.append(str(bridge.path))
                bridge.kill()
            cls.running.discard(bridge)
        return left


def ledger_problems(samples: dict, destinations: list[str], subscriptions: list[str]) -> list[str]:
    """The equations of the README, from /metrics alone (empty when they hold)."""
    problems = []
    for sub in subscriptions:
        received = value(samples, "bridge_received_messages_total", subscription=sub)
        mapped = value(samples, "bridge_mapped_messages_total", subscription=sub)
        rejected = total(samples, "bridge_rejected_messages_total", subscription=sub)
        ignored = total(samples, "bridge_ignored_messages_total", subscription=sub)
        if received != mapped + rejected + ignored:
            problems.append(f"{sub}: received {received} != mapped {mapped} + rejected {rejected} + ignored {ignored}")
    for dest in destinations:
        accepted = value(samples, "bridge_accepted_points_total", destination=dest)
        written = value(samples, "bridge_written_points_total", destination=dest)
        dropped = total(samples, "bridge_dropped_points_total", destination=dest)
        pending = value(samples, "bridge_pending_points", destination=dest)
        if accepted != written + dropped + pending:
            problems.append(f"{dest}: accepted {accepted} != written {written} + dropped {dropped} + pending {pending}")
    return problems


def quiet_ledger(bridge: BridgeProcess, destinations: tuple[str, ...] = ("local",),
                 subscriptions: tuple[str, ...] = ("kraken",), timeout: float = 30,
                 delivered: bool = True) -> dict:
    """Waits for a moment at which the equations hold and, unless `delivered=False` (a destination
    kept down on purpose), nothing is pending any more; returns those samples. The equations alone
    also hold while points are queued or in flight: a test that then compares `written` with what
    InfluxDB holds read a ledger mid-delivery (on a loaded CI machine: written 1908 of 4765)."""
    last: list[str] = []

    def check() -> dict | None:
        nonlocal last
        samples = bridge.samples()
        last = ledger_problems(samples, list(destinations), list(subscriptions))
        if delivered:
            last += [f"{dest}: {value(samples, 'bridge_pending_points', destination=dest):.0f} pending"
                     for dest in destinations if value(samples, "bridge_pending_points", destination=dest)]
        return None if last else samples

    try:
        return wait_for(check, timeout, "the ledger to close", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last}") from exc


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of `size` (we are root in CI), always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# Shared by tests/ and chaos/ (each conftest imports them).

def dump_stacks_on_sigterm() -> None:
    """A stage stopped for running too long (lab/timing.py) is sent SIGTERM: every thread's stack
    goes to stderr first, so the CI log shows where the run hung, then the signal acts as always."""
    faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)


@pytest.fixture(autouse=True)
def no_leftover_bridges() -> Iterator[None]:
    before = set(BridgeProcess.running)
    yield
    BridgeProcess.kill_leftovers(keep=before)


@pytest.fixture()
def own_influxd(tmp_path: Path) -> Iterator[Influxd]:
    """An influxd of the test's own (with database tick), for tests that stop or reconfigure it."""
    server = Influxd(tmp_path / "influxd").start()
    server.query('CREATE DATABASE "tick"')
    yield server
    server.stop()


@pytest.fixture()
def zmq_context() -> Iterator[zmq.Context]:
    """A test's own ZeroMQ context, destroyed with linger 0 whatever the test's outcome. A test
    that failed with a socket still open left its context to the garbage collector, whose
    `destroy()` waited forever in `term()`: pytest hung at exit and CI ran out of time."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


class RecordingDestination:
    """The destinations' side of Pipeline.commit for tests of what one hand-over carries: the
    point count of every chunk submitted (an InfluxDB destination: no backend adapter)."""

    adapter = None

    def __init__(self, name: str = "d") -> None:
        from station_bridge.metrics import Metrics

        self.key = Metrics.key(destination=name)
        self.chunks: list[int] = []

    def submit(self, chunk, counted: bool) -> None:
        self.chunks.append(chunk.count)
