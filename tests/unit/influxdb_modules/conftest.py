"""Real influxd servers for the influxdb1_* module tests, and an in-process module runner."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLUGINS = ROOT / "plugins"
ADMIN = ("admin", "admin-pw")

sys.path.insert(0, str(ROOT / "bridge" / "tests"))
# Modules import `ansible_collections.station_stack.station.plugins.module_utils`: the
# checkout's collections/ directory links the collection back to this repository.
sys.path.insert(0, str(ROOT / "collections"))
from ansible.module_utils.testing import patch_module_args  # noqa: E402
from servers import Influxd  # noqa: E402


@dataclass
class Server:
    port: int
    auth: bool
    influxd: Influxd

    def http(self, path: str, params: dict[str, str], auth: tuple[str, str] | None = ADMIN,
             body: bytes | None = None) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, data=body or b"", method="POST")
        if auth and self.auth:
            import base64
            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        return status, json.loads(text) if text else None

    def query(self, q: str, auth: tuple[str, str] | None = ADMIN) -> list[dict[str, Any]]:
        """Rows of a statement, each with its series name under `_series`."""
        status, payload = self.http("/query", {"q": q}, auth)
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
    """influxd from the bridge's test helpers: one launcher for every test suite here."""
    try:
        influxd = Influxd(tmp, auth=auth, create_admin=create_admin)
        influxd.admin = ADMIN
        influxd.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    return Server(influxd.port, auth, influxd)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Auth on, admin already created: the steady state of a station."""
    srv = _start(tmp_path_factory.mktemp("influxd-auth"), auth=True)
    yield srv
    srv.influxd.stop()


@pytest.fixture()
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """Auth on and no user at all: a station right after install."""
    srv = _start(tmp_path, auth=True, create_admin=False)
    yield srv
    srv.influxd.stop()


@pytest.fixture(scope="session")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Auth off."""
    srv = _start(tmp_path_factory.mktemp("influxd-open"), auth=False)
    yield srv
    srv.influxd.stop()


_LOADED: dict[str, Any] = {}


def _module(name: str) -> Any:
    if name not in _LOADED:
        spec = importlib.util.spec_from_file_location(f"station_stack_{name}", PLUGINS / "modules" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[name] = module
    return _LOADED[name]


def run(name: str, args: dict[str, Any], check: bool = False, diff: bool = True) -> dict[str, Any]:
    """Runs a module in-process as Ansible would; returns its JSON result (failed ones too)."""
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        _module(name).main()
    return json.loads(out.getvalue())
