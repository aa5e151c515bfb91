"""`make chaos`: faults at the scale an operator cares about, against real influxd and bridge
processes. Reuses the integration tests' harness (tests/servers.py, tests/test_integration.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import Influxd


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = Influxd(tmp_path_factory.mktemp("influxd")).start()
    yield server
    server.stop()


@pytest.fixture()
def database(influxd: Influxd) -> str:
    influxd.query('CREATE DATABASE "chaos"')
    return "chaos"
