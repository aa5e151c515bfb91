from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).parent))

from harness import dump_stacks_on_sigterm, no_leftover_bridges, own_influxd, zmq_context  # noqa: F401 - fixtures
from servers import Influxd, RedisServer, free_port

dump_stacks_on_sigterm()

# Generated inputs: `make test` runs the same examples every time (a red CI run is reproducible
# and never depends on the draw); HYPOTHESIS_PROFILE=explore draws new ones on every run, which is
# how counter-examples are hunted (each found is then pinned with @example next to its test).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    try:
        server = Influxd(tmp_path_factory.mktemp("influxd")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


_counter = [0]


@pytest.fixture()
def database(influxd: Influxd) -> str:
    _counter[0] += 1
    name = f"t{_counter[0]}"
    influxd.query(f'CREATE DATABASE "{name}"')
    return name


@pytest.fixture()
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"
