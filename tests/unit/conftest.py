"""Real influxd servers for the influxdb1_* module tests, and an in-process module runner.

Run by `ansible-test units` (tests/ansible-test.sh units, from a copy of the collection under
.cache/ansible-test) and also importable by plain pytest from the checkout.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import importlib
import importlib.util
import io
import json
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest


def _checkout() -> Path:
    """The repository: the first parent with galaxy.yml and the bridge (a copy has no bridge)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "galaxy.yml").is_file() and (parent / "bridge").is_dir():
            return parent
    raise RuntimeError("cannot find the station-stack checkout above %s" % __file__)


ROOT = _checkout()
ADMIN = ("admin", "admin-pw")

if importlib.util.find_spec("ansible_collections.station_stack") is None:
    # Plain pytest from the checkout (ansible-test's collection loader is not there): its
    # collections/ directory links the collection back to the checkout.
    sys.path.insert(0, str(ROOT / "collections"))

from ansible.module_utils import _internal  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402

sys.path.insert(0, str(ROOT / "bridge" / "tests"))
from servers import Influxd  # noqa: E402  (one influxd launcher for every suite)

MODULES = "ansible_collections.station_stack.station.plugins.modules."


@dataclass
class Server:
    port: int
    auth: bool
    influxd: Influxd
    admin: tuple[str, str] = ADMIN

    def http(self, path: str, params: dict[str, str], auth: tuple[str, str] | None = ADMIN,
             body: bytes | None = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, data=body or b"", method="POST")
        if auth and self.auth:
            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        return status, json.loads(text) if text else None

    def query(self, q: str, auth: tuple[str, str] | None = ADMIN) -> list[dict[str, Any]]:
        """Rows of a statement, each with its series name under `_series`."""
        _status, payload = self.http("/query", {"q": q}, auth)
        result = payload["results"][0]
        assert "error" not in result, result
        rows = []
        for series in result.get("series", []):
            for values in series.get("values") or []:
                rows.append(dict(zip(series["columns"], values, strict=True), _series=series.get("name")))
        return rows

    def login(self, **extra: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"login_host": "127.0.0.1", "login_port": self.port}
        if self.auth:
            args.update(login_username=ADMIN[0], login_password=ADMIN[1])
        args.update(extra)
        return args


def _start(tmp: Path, auth: bool, create_admin: bool = True) -> Server:
    try:
        influxd = Influxd(tmp, auth=auth, create_admin=create_admin)
        influxd.admin = ADMIN
        influxd.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return Server(influxd.port, auth, influxd)


# The long-lived servers start once per pytest process, in the process that collects the tests,
# before any test runs: ansible-test units runs every test in a fork of its own, where a
# session fixture would start (and leak) one influxd per test.
_SHARED: dict[str, Server] = {}
_SHARED_DIRS: list[Path] = []
_SHARED_KINDS = {"server": True, "open_server": False}  # fixture name -> auth


def pytest_collection_finish(session: pytest.Session) -> None:
    wanted = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    base = Path(tempfile.mkdtemp(prefix="station-stack-influxd-"))
    _SHARED_DIRS.append(base)
    for name, auth in _SHARED_KINDS.items():
        if name in wanted and name not in _SHARED:
            _SHARED[name] = _start(base / name, auth=auth)


@atexit.register
def _stop_shared() -> None:
    while _SHARED:
        _SHARED.popitem()[1].influxd.stop()
    while _SHARED_DIRS:
        shutil.rmtree(_SHARED_DIRS.pop(), ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _stop_shared()


@pytest.fixture(scope="session")
def server() -> Server:
    """Auth on, admin already created: the steady state of a station (shared by the session's tests)."""
    return _SHARED["server"]


@pytest.fixture(scope="session")
def open_server() -> Server:
    """Auth off (shared by the session's tests)."""
    return _SHARED["open_server"]


@pytest.fixture()
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """Auth on and no user at all: a station right after install (one per test)."""
    srv = _start(tmp_path, auth=True, create_admin=False)
    yield srv
    srv.influxd.stop()


def run_module(name: str, args: dict[str, Any], check: bool = False, diff: bool = True) -> dict[str, Any]:
    """Runs a module in-process as Ansible would; returns its JSON result (failed ones too)."""
    module = importlib.import_module(MODULES + name)
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    out = io.StringIO()
    # A module runs in its own process, never beside controller code: when controller code was
    # imported by another test in this process, module warnings would go to the controller's display.
    controller, _internal.is_controller = _internal.is_controller, False
    try:
        with patch_module_args(args), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            module.main()
    finally:
        _internal.is_controller = controller
    return json.loads(out.getvalue())


@pytest.fixture(scope="session")
def collections_path() -> Path:
    """A collections path that holds the collection under test (the copy ansible-test runs, or the checkout)."""
    collection = Path(__file__).resolve().parents[1]
    if collection.parents[1].name == "ansible_collections":
        return collection.parents[2]
    return ROOT / "collections"


@pytest.fixture(scope="session")
def run() -> Callable[..., dict[str, Any]]:
    """run(module_name, args, check=False, diff=True) -> the module's result."""
    return run_module
