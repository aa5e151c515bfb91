"""`make chaos`: faults at the scale an operator cares about, against real influxd, redis-server
and bridge processes (tests/harness.py). Each case reports what it did and counted; the session
ends with one table of every fault and its counts."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import dump_stacks_on_sigterm, no_leftover_bridges, own_influxd, zmq_context  # noqa: F401 - fixtures
from servers import Influxd, free_port

dump_stacks_on_sigterm()

ROWS: list[tuple[str, dict[str, object]]] = []


def report(title: str, **counts: object) -> None:
    """One fault and its counts: printed now and in the table at the end."""
    ROWS.append((title, counts))
    print(f"\n[chaos] {title}")
    for key, count in counts.items():
        print(f"[chaos]   {key:<34} {count}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    write = terminalreporter.write_line
    width = max(len(t) for t, _ in ROWS)
    write("")
    write("chaos: every fault and what it counted")
    write(f"| {'fault':<{width}} | counts")
    write(f"|{'-' * (width + 2)}|{'-' * 60}")
    for title, counts in ROWS:
        write(f"| {title:<{width}} | " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = Influxd(tmp_path_factory.mktemp("influxd")).start()
    yield server
    server.stop()


_counter = [0]


@pytest.fixture()
def database(influxd: Influxd) -> str:
    _counter[0] += 1
    name = f"chaos{_counter[0]}"
    influxd.query(f'CREATE DATABASE "{name}"')
    return name


@pytest.fixture()
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"
